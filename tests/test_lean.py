"""The lean sequential data path gives RecBole's samples, splits, batches and metrics."""

from __future__ import annotations

import os

import numpy as np
import pytest
import recbole
import torch
from recbole.data import create_dataset, data_preparation

from recbole_moe.config import Config
from recbole_moe.data.lean import (
    LeanTrainDataLoader,
    create_lean_dataset,
    data_path_mode,
    lean_data_preparation,
)
from recbole_moe.quick_start import get_trainer, run
from recbole_moe.testing import build, make_synthetic_dataset, tiny_config

RECBOLE_EXAMPLES = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")


def both_paths(model: str, dataset: str, config_dict: dict):
    """``(recbole loaders, lean loaders)`` for the same config."""
    config = Config(model, dataset, config_dict=dict(config_dict, state="ERROR"))
    reference = data_preparation(config, create_dataset(config))
    lean = lean_data_preparation(config, create_lean_dataset(config))
    return config, reference, lean


def all_rows(loader):
    dataset = loader._dataset
    return dataset[torch.arange(len(dataset))]


def assert_same_interaction(a, b, what: str) -> None:
    assert set(a.interaction) == set(b.interaction), what
    for field in a.interaction:
        assert a[field].dtype == b[field].dtype, (what, field)
        assert torch.equal(a[field], b[field]), (what, field)


def assert_same_splits(reference, lean) -> None:
    for name, ref, new in zip(("train", "valid", "test"), reference, lean):
        a, b = all_rows(ref), all_rows(new)
        assert len(a) == len(b), name
        assert_same_interaction(a, b, name)


@pytest.fixture(scope="module")
def short_histories(tmp_path_factory) -> str:
    """Users with 1 to 6 interactions: every leave-one-out corner case (no valid, no test)."""
    root = str(tmp_path_factory.mktemp("short"))
    make_synthetic_dataset(root, name="short", n_users=120, n_items=30, min_len=1, max_len=6)
    return root


@pytest.fixture(scope="module")
def ml100k():
    return both_paths("SASRec", "ml-100k", tiny_config(RECBOLE_EXAMPLES))


def test_samples_and_splits_match_recbole_on_synthetic(synth):
    config, reference, lean = both_paths("SASRec", synth.dataset, tiny_config(synth.data_path))
    assert isinstance(lean[0], LeanTrainDataLoader)
    assert_same_splits(reference, lean)
    # Histories longer than MAX_ITEM_LIST_LENGTH are truncated to the most recent items.
    assert int(all_rows(lean[0])["item_length"].max()) == config["MAX_ITEM_LIST_LENGTH"]
    assert lean[0]._dataset.item_num == reference[0]._dataset.item_num


@pytest.mark.parametrize("mode", ["valid_and_test", "valid_only", "test_only"])
def test_leave_one_out_corner_cases_match_recbole(short_histories, mode):
    eval_args = dict(tiny_config("")["eval_args"], split={"LS": mode})
    _, reference, lean = both_paths(
        "SASRec", "short", tiny_config(short_histories, MAX_ITEM_LIST_LENGTH=3,
                                       eval_args=eval_args)
    )
    for name, ref, new in zip(("train", "valid", "test"), reference, lean):
        assert len(ref._dataset) == len(new._dataset), name
        if len(ref._dataset):
            assert_same_interaction(all_rows(ref), all_rows(new), name)


def test_shuffled_batches_match_recbole_over_epochs(synth):
    _, reference, lean = both_paths("SASRec", synth.dataset, tiny_config(synth.data_path))
    for _ in range(2):  # the second epoch checks the generator is used the same way
        ref_batches, lean_batches = list(reference[0]), list(lean[0])
        assert len(ref_batches) == len(lean_batches) == len(lean[0])
        for a, b in zip(ref_batches, lean_batches):
            assert_same_interaction(a, b, "batch")


def test_samples_and_splits_match_recbole_on_ml100k(ml100k):
    config, reference, lean = ml100k
    assert_same_splits(reference, lean)
    assert len(lean[1]._dataset) == len(lean[2]._dataset) == 943
    # 100,000 interactions, 943 first items, 2 x 943 held out.
    assert len(lean[0]._dataset) == 100_000 - 3 * 943


def test_same_trained_metrics_as_recbole(synth, tmp_path):
    results = {}
    for mode in ("recbole", "lean"):
        config_dict = tiny_config(
            synth.data_path, data_path_mode=mode, shuffle=False,
            checkpoint_dir=str(tmp_path / mode),
        )
        result = run("SASRec", synth.dataset, config_dict=config_dict, saved=False)
        results[mode] = (result["best_valid_result"], result["test_result"])
    assert results["lean"] == results["recbole"]
    assert results["lean"][1]["hit@10"] > 0


def test_data_path_mode_selection(synth, tmp_path):
    def mode(**overrides):
        config = Config("SASRec", synth.dataset,
                        config_dict=dict(tiny_config(synth.data_path), **overrides))
        return data_path_mode(config)

    assert mode() == "recbole"  # a tiny dataset is far below the default threshold
    assert mode(lean_memory_threshold_gb=0) == "lean"
    assert mode(data_path_mode="lean") == "lean"
    assert mode(data_path_mode="recbole", lean_memory_threshold_gb=0) == "recbole"
    random_split = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user",
                    "mode": "full"}
    assert mode(lean_memory_threshold_gb=0, eval_args=random_split) == "recbole"
    with pytest.raises(ValueError, match="leave-one-out"):
        mode(data_path_mode="lean", eval_args=random_split)
    # prepare_run takes the lean path when asked.
    *_, train_data, _, _, _ = build("SASRec", synth.data_path, synth.dataset,
                                    {"data_path_mode": "lean"})
    assert isinstance(train_data, LeanTrainDataLoader)


def test_eval_memory_budget_keeps_metrics(synth, tmp_path):
    config, _, train_data, valid_data, _, model = build(
        "SASRec", synth.data_path, synth.dataset,
        {"checkpoint_dir": str(tmp_path), "eval_memory_budget_mb": None},
    )
    trainer = get_trainer(config, model)
    trainer._train_epoch(train_data, 0)
    calls = {"n": 0}
    predict = model.full_sort_predict

    def counted(interaction):
        calls["n"] += 1
        return predict(interaction)

    model.full_sort_predict = counted
    unbounded = trainer.evaluate(valid_data, load_best_model=False)
    batches = calls["n"]
    # 81 items * 8 bytes = 648 bytes a row: a budget of 0.01 MiB scores 16 rows at a time.
    config["eval_memory_budget_mb"] = 0.01
    bounded = trainer.evaluate(valid_data, load_best_model=False)
    assert calls["n"] - batches == int(np.ceil(len(valid_data._dataset) / 16))
    assert bounded == unbounded

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
    is_padding_invariant,
    lean_data_preparation,
    padding_invariant_models,
    scores_padding_invariant,
)
from recbole_moe.quick_start import get_trainer, run
from recbole_moe.testing import (
    build,
    make_synthetic_dataset,
    tiny_config,
    train_twice_and_untrained,
)

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
    for name, ref, new in zip(("train", "valid", "test"), reference, lean, strict=False):
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
        "SASRec", "short", tiny_config(short_histories, MAX_ITEM_LIST_LENGTH=3, eval_args=eval_args)
    )
    for name, ref, new in zip(("train", "valid", "test"), reference, lean, strict=False):
        assert len(ref._dataset) == len(new._dataset), name
        if len(ref._dataset):
            assert_same_interaction(all_rows(ref), all_rows(new), name)


def test_shuffled_batches_match_recbole_over_epochs(synth):
    _, reference, lean = both_paths("SASRec", synth.dataset, tiny_config(synth.data_path))
    for _ in range(2):  # the second epoch checks the generator is used the same way
        ref_batches, lean_batches = list(reference[0]), list(lean[0])
        assert len(ref_batches) == len(lean_batches) == len(lean[0])
        for a, b in zip(ref_batches, lean_batches, strict=False):
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
            synth.data_path,
            data_path_mode=mode,
            shuffle=False,
            checkpoint_dir=str(tmp_path / mode),
        )
        result = run("SASRec", synth.dataset, config_dict=config_dict, saved=False)
        results[mode] = (result["best_valid_result"], result["test_result"])
    assert results["lean"] == results["recbole"]
    assert results["lean"][1]["hit@10"] > 0


def test_data_path_mode_selection(synth, tmp_path):
    def mode(**overrides):
        config = Config(
            "SASRec", synth.dataset, config_dict=dict(tiny_config(synth.data_path), **overrides)
        )
        return data_path_mode(config)

    assert mode() == "recbole"  # a tiny dataset is far below the default threshold
    assert mode(lean_memory_threshold_gb=0) == "lean"
    assert mode(data_path_mode="lean") == "lean"
    assert mode(data_path_mode="recbole", lean_memory_threshold_gb=0) == "recbole"
    assert mode(train_batch_order="length_grouped") == "lean"  # grouped batches need lean
    random_split = {
        "split": {"RS": [0.8, 0.1, 0.1]},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    }
    assert mode(lean_memory_threshold_gb=0, eval_args=random_split) == "recbole"
    with pytest.raises(ValueError, match="leave-one-out"):
        mode(data_path_mode="lean", eval_args=random_split)
    # prepare_run takes the lean path when asked.
    train_data = build(
        "SASRec", synth.data_path, synth.dataset, {"data_path_mode": "lean"}
    ).train_data
    assert isinstance(train_data, LeanTrainDataLoader)


def test_eval_memory_budget_keeps_metrics(synth, tmp_path):
    parts = build(
        "SASRec",
        synth.data_path,
        synth.dataset,
        {"checkpoint_dir": str(tmp_path), "eval_memory_budget_mb": None},
    )
    config, model, valid_data = parts.config, parts.model, parts.valid_data
    trainer = get_trainer(config, model)
    trainer._train_epoch(parts.train_data, 0)
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


# -- length-sorted evaluation ------------------------------------------------------------------
def eval_batches(loader) -> list:
    return [batch[0] for batch in loader]


def test_length_sorted_evaluation_visits_every_user_once_by_length_trimmed(synth):
    parts = build(
        "SASRec",
        synth.data_path,
        synth.dataset,
        {"data_path_mode": "lean", "eval_batch_size": 16},
    )
    dataset, valid_data, test_data = parts.train_data._dataset, parts.valid_data, parts.test_data
    max_len = dataset.config["MAX_ITEM_LIST_LENGTH"]
    for loader in (valid_data, test_data):
        batches = eval_batches(loader)
        lengths = torch.cat([b["item_length"] for b in batches])
        assert torch.equal(lengths, torch.sort(lengths).values)  # users by history length
        widths = [b["item_id_list"].shape[1] for b in batches]
        assert widths == [int(b["item_length"].max()) for b in batches]  # trimmed
        assert min(widths) < max_len
        users = torch.cat([b["user_id"] for b in batches])
        assert len(users) == len(loader._dataset) == len(torch.unique(users))


def test_length_sorted_evaluation_keeps_recbole_order_for_other_models(synth):
    for model_name, overrides in (("Caser", {}), ("SASRec", {"eval_batch_order": "dataset"})):
        parts = build(
            model_name,
            synth.data_path,
            synth.dataset,
            dict(overrides, data_path_mode="lean", eval_batch_size=16),
        )
        dataset, valid_data = parts.train_data._dataset, parts.valid_data
        batches = eval_batches(valid_data)
        assert {b["item_id_list"].shape[1] for b in batches} == {
            dataset.config["MAX_ITEM_LIST_LENGTH"]
        }
        users = torch.cat([b["user_id"] for b in batches])
        assert torch.equal(users, torch.sort(users).values)  # RecBole's order (by user)


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec"])
def test_evaluation_groups_are_trimmed_and_keep_metrics(synth, tmp_path, model_name):
    """Under length-sorted evaluation a batch is scored in groups of ``eval_group_rows``
    users, each trimmed to its own longest history; the metrics are those of whole batches."""
    parts = build(
        model_name,
        synth.data_path,
        synth.dataset,
        {
            "data_path_mode": "lean",
            "eval_batch_size": 32,
            "eval_group_rows": 0,
            "checkpoint_dir": str(tmp_path),
        },
    )
    config, model, valid_data = parts.config, parts.model, parts.valid_data
    trainer = get_trainer(config, model)
    trainer._train_epoch(parts.train_data, 0)
    seen = []
    predict = model.full_sort_predict

    def recorded(interaction):
        seen.append((len(interaction), interaction["item_id_list"].shape[1]))
        seen.append(int(interaction["item_length"].max()))
        return predict(interaction)

    model.full_sort_predict = recorded
    whole = trainer.evaluate(valid_data, load_best_model=False)
    whole_calls = seen[::2]
    seen.clear()
    config["eval_group_rows"] = 5
    grouped = trainer.evaluate(valid_data, load_best_model=False)
    assert grouped == whole
    calls, longest = seen[::2], seen[1::2]
    batch_rows = [rows for rows, _ in whole_calls]
    assert [rows for rows, _ in calls] == [
        min(5, rows - start) for rows in batch_rows for start in range(0, rows, 5)
    ]
    assert [width for _, width in calls] == longest  # each group at its own longest history
    assert max(width for _, width in calls) == max(width for _, width in whole_calls)
    assert sum(w * r for r, w in calls) < sum(w * r for r, w in whole_calls)

    # RecBole's data path keeps its order: no groups there
    parts = build(
        model_name,
        synth.data_path,
        synth.dataset,
        {"data_path_mode": "recbole", "eval_batch_size": 32, "eval_group_rows": 5},
    )
    trainer = get_trainer(parts.config, parts.model)
    seen.clear()
    predict = parts.model.full_sort_predict
    parts.model.full_sort_predict = recorded
    trainer.evaluate(parts.valid_data, load_best_model=False)
    assert len(seen) // 2 == len(list(parts.valid_data)) == len(whole_calls)


@pytest.mark.parametrize("model_name", ["SASRec", "HyMoERec", "FAME", "GRU4Rec", "BERT4Rec"])
def test_length_sorted_evaluation_gives_the_same_metrics(synth, tmp_path, model_name):
    results = {}
    for order in ("dataset", "length_sorted"):
        parts = build(
            model_name,
            synth.data_path,
            synth.dataset,
            {
                "data_path_mode": "lean",
                "eval_batch_order": order,
                "eval_batch_size": 32,
                "checkpoint_dir": str(tmp_path / order),
            },
        )
        config, model = parts.config, parts.model
        train_data, valid_data, test_data = parts.train_data, parts.valid_data, parts.test_data
        trainer = get_trainer(config, model)
        trainer._train_epoch(train_data, 0)
        results[order] = [
            trainer.evaluate(data, load_best_model=False) for data in (valid_data, test_data)
        ]
    for sorted_result, reference in zip(results["length_sorted"], results["dataset"], strict=False):
        assert sorted_result.keys() == reference.keys()
        for key, value in reference.items():
            assert sorted_result[key] == pytest.approx(value, abs=1e-4), key
    assert results["dataset"][1]["hit@10"] > 0


def test_unknown_eval_batch_order_is_refused(synth):
    from recbole_moe.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_batch_order='by_user'.*length_sorted, dataset"):
        build("SASRec", synth.data_path, synth.dataset, {"eval_batch_order": "by_user"})


# -- length-grouped batches --------------------------------------------------------------------
def grouped_loader(synth, **overrides):
    config_dict = dict(
        tiny_config(synth.data_path),
        train_batch_order="length_grouped",
        length_group_size=3,
        **overrides,
    )
    train_data = build("SASRec", synth.data_path, synth.dataset, config_dict).train_data
    return train_data


def sample_keys(batch) -> list[tuple]:
    """One hashable row per sample: user, target, length and the unpadded history."""
    rows = zip(
        batch["user_id"].tolist(),
        batch["item_id"].tolist(),
        batch["item_length"].tolist(),
        batch["item_id_list"].tolist(),
        strict=False,
    )
    return [(u, i, n, tuple(h[:n])) for u, i, n, h in rows]


def test_length_grouped_batches_cover_every_sample_once_with_less_padding(synth):
    train_data = grouped_loader(synth)
    assert isinstance(train_data, LeanTrainDataLoader)
    dataset = train_data._dataset
    full = dataset[torch.arange(len(dataset))]
    expected = sorted(sample_keys(full))
    max_len = dataset.config["MAX_ITEM_LIST_LENGTH"]
    epochs = []
    for _ in range(2):
        state = train_data.generator.get_state()
        batches = list(train_data)
        # The indices behind the batches: the loader's draws, replayed.
        train_data.generator.set_state(state)
        torch.empty((), dtype=torch.int64).random_(generator=train_data.generator)
        order = torch.randperm(len(dataset), generator=train_data.generator)
        indices = train_data.grouped_order(order)
        train_data.generator.set_state(state)
        assert list(train_data)[0]["item_id_list"].tolist() == batches[0]["item_id_list"].tolist()
        assert len(batches) == len(indices) == len(train_data)
        epochs.append([b["item_id_list"].tolist() for b in batches])
        assert sorted(k for b in batches for k in sample_keys(b)) == expected
        padded = 0
        for batch, index in zip(batches, indices, strict=False):
            width = batch["item_id_list"].shape[1]
            assert width == int(batch["item_length"].max())  # trimmed to the longest history
            padded += width * len(batch)
            # RecBole's rows for the same samples: the trimmed columns were all padding.
            rows = dataset.rows(index, trim=False)
            assert torch.equal(rows["item_id_list"][:, :width], batch["item_id_list"])
            assert torch.equal(rows["item_length"], batch["item_length"])
            assert not rows["item_id_list"][:, width:].any()
        assert padded < 0.8 * len(dataset) * max_len
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    # Same seed, same batches.
    again = [b["item_id_list"].tolist() for b in grouped_loader(synth)]
    assert again == epochs[0]


def test_length_grouped_windows_are_sorted_by_length(synth):
    train_data = grouped_loader(synth, shuffle=False)
    lengths = train_data._dataset.inter_feat["item_length"]
    batches = train_data.grouped_order(None)
    window = train_data.step * train_data.length_group_size
    order = torch.cat(batches)
    assert torch.equal(torch.sort(order).values, torch.arange(len(lengths)))
    for start in range(0, len(order), window):
        part = lengths[order[start : start + window]]
        assert torch.equal(part, torch.sort(part).values)
        assert torch.equal(
            torch.sort(order[start : start + window]).values,
            torch.arange(start, min(start + window, len(order))),
        )


@pytest.mark.parametrize("model_name", padding_invariant_models())
def test_trimmed_batches_give_the_same_loss_and_scores(synth, model_name):
    parts = build(model_name, synth.data_path, synth.dataset, {"data_path_mode": "lean"})
    dataset, model = parts.train_data._dataset, parts.model
    model.eval()
    index = torch.arange(0, len(dataset), 7)[:64]
    trimmed, full = dataset.rows(index, trim=True), dataset.rows(index, trim=False)
    assert trimmed["item_id_list"].shape[1] < full["item_id_list"].shape[1]
    with torch.no_grad():
        losses = [model.calculate_loss(b) for b in (trimmed, full)]
        scores = [model.full_sort_predict(b) for b in (trimmed, full)]
    losses = [loss[0] if isinstance(loss, tuple) else loss for loss in losses]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-5)


def test_bert4rec_full_sort_scores_are_the_same_in_trimmed_batches(synth):
    """BERT4Rec's training batches stay full width, but its full-sort scores (mask token after
    each history, bidirectional attention over non-padding keys) do not depend on the trailing
    padding, so evaluation trims it."""
    parts = build("BERT4Rec", synth.data_path, synth.dataset, {"data_path_mode": "lean"})
    dataset, model = parts.train_data._dataset, parts.model
    assert not is_padding_invariant("BERT4Rec") and scores_padding_invariant("BERT4Rec")
    model.eval()
    full = dataset.rows(torch.arange(len(dataset)), trim=False)
    width = full["item_id_list"].shape[1]
    index = torch.nonzero(full["item_length"] <= width // 2).flatten()[::3][:64]
    assert len(index) > 8
    trimmed, full = dataset.rows(index, trim=True), dataset.rows(index, trim=False)
    assert trimmed["item_id_list"].shape[1] <= width // 2
    with torch.no_grad():
        scores = [model.full_sort_predict(b) for b in (trimmed, full)]
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scores[0][0], scores[0][1])  # users are scored differently
    # so its full-sort evaluation is length-sorted and trimmed by default
    parts = build(
        "BERT4Rec",
        synth.data_path,
        synth.dataset,
        {"data_path_mode": "lean", "eval_batch_size": 16},
    )
    widths = [b["item_id_list"].shape[1] for b in eval_batches(parts.valid_data)]
    assert widths == sorted(widths) and widths[0] < width


def test_length_grouped_training_learns_and_is_reproducible(synth, tmp_path):
    config_dict = tiny_config(
        synth.data_path, train_batch_order="length_grouped", epochs=3, checkpoint_dir=str(tmp_path)
    )
    first, second, untrained = train_twice_and_untrained(
        "SASRec", synth.data_path, synth.dataset, config_dict
    )
    assert first["test_result"] == second["test_result"]
    assert first["test_result"]["hit@10"] > untrained["hit@10"] + 0.1


@pytest.mark.parametrize("world", [2, 3])
def test_length_grouped_ranks_split_every_global_batch(synth, world):
    train_data = grouped_loader(synth)
    n = len(train_data._dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    state = train_data.generator.get_state()
    per_rank = []
    for rank in range(world):
        train_data.generator.set_state(state)  # every rank draws the same batch shuffle
        per_rank.append(train_data.grouped_order(order, rank, world))
    counts = {len(batches) for batches in per_rank}
    assert counts == {int(np.ceil(np.ceil(n / world) / train_data.step))}
    for batches in zip(*per_rank, strict=False):
        assert len({len(b) for b in batches}) == 1  # equal shard sizes: DDP steps in lockstep
    served = torch.cat([b for batches in per_rank for b in batches])
    padding = (-n) % world
    assert len(served) == n + padding
    assert torch.equal(torch.unique(served), torch.arange(n))  # every sample, pads repeated

"""Seen-item removal (``eval_filter_seen``) against an independent computation."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import recbole
import torch
from recbole.data.interaction import Interaction

import recbole_moe
from recbole_moe.errors import ConfigError
from recbole_moe.quick_start import check_run, get_trainer
from recbole_moe.testing import build, make_synthetic_dataset, tiny_config, user_histories

DATASET = "repeats"
#: Histories up to 40 items over 30 items (the planted walk wraps around: repeats), read
#: through a window of 8, so the whole history is most often longer than the window; and
#: MovieLens-100K's first 150 users (20 to 400 ratings each, ties in time, no repeats).
MOVIELENS = "ml-100k-150u"
WINDOW = 8
SETTINGS = {"MAX_ITEM_LIST_LENGTH": WINDOW, "eval_batch_size": 64, "topk": [5, 10]}
PATHS = {
    "recbole": {"data_path_mode": "recbole"},
    "lean": {"data_path_mode": "lean", "eval_batch_order": "dataset"},
    "lean-length-sorted": {
        "data_path_mode": "lean",
        "eval_batch_order": "length_sorted",
        "eval_group_rows": 16,
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SASRec trained 3 epochs on the repeats data (RecBole's protocol): its checkpoint."""
    root = tmp_path_factory.mktemp("seen")
    make_synthetic_dataset(
        str(root), name=DATASET, n_users=200, n_items=30, min_len=12, max_len=40, noise=0.3
    )
    settings = tiny_config(str(root), epochs=3, checkpoint_dir=str(root / "saved"), **SETTINGS)
    result = recbole_moe.run("SASRec", DATASET, config_dict=settings)
    return str(root), result


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    """A SASRec trained 1 epoch on MovieLens-100K's users 1-150: its checkpoint."""
    root = tmp_path_factory.mktemp("movielens")
    source = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")
    os.makedirs(root / MOVIELENS)
    with open(os.path.join(source, "ml-100k.inter"), encoding="utf-8") as f:
        next(f)
        rows = [line.split("\t") for line in f]
    with open(root / MOVIELENS / f"{MOVIELENS}.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}" for u, i, _, t in rows if int(u) <= 150)
    settings = tiny_config(
        str(root), epochs=1, train_batch_size=256, checkpoint_dir=str(root / "saved"), **SETTINGS
    )
    result = recbole_moe.run("SASRec", MOVIELENS, config_dict=settings)
    return str(root), result


def _histories(data_path: str, dataset: str = DATASET) -> dict[str, list[str]]:
    return user_histories(f"{data_path}/{dataset}/{dataset}.inter")


def expected_metrics(
    parts, data_path: str, split: str, remove_seen: bool, dataset_name: str = DATASET
) -> tuple[dict, int]:
    """HR@K and NDCG@K computed by hand: the model reads the last ``WINDOW`` items before the
    target (``valid``: the second-to-last item, ``test``: the last); every earlier item but
    the target itself is masked with plain torch; the rank is the number of better items.
    Also returns the number of targets that occur earlier in their history."""
    dataset, model = parts.dataset, parts.model
    users, inputs, lengths, targets, masks = [], [], [], [], []
    n_items = dataset.item_num
    histories = _histories(data_path, dataset_name)
    for user, items in histories.items():
        ids = [int(i) for i in dataset.token2id(dataset.iid_field, items)]
        end = len(ids) - (2 if split == "valid" else 1)
        before, target = ids[:end], ids[end]
        window = before[-WINDOW:]
        users.append(int(dataset.token2id(dataset.uid_field, user)))
        inputs.append(window + [0] * (WINDOW - len(window)))
        lengths.append(len(window))
        targets.append(target)
        mask = torch.zeros(n_items, dtype=torch.bool)
        if remove_seen:
            mask[before] = True
            mask[target] = False  # a repeat target stays ranked
        masks.append(mask)
    interaction = Interaction(
        {
            dataset.uid_field: torch.tensor(users),
            model.ITEM_SEQ: torch.tensor(inputs),
            model.ITEM_SEQ_LEN: torch.tensor(lengths),
        }
    )
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(len(users), -1)  # [U, n_items]
    scores[:, 0] = -torch.inf
    scores = scores.masked_fill(torch.stack(masks), -torch.inf)
    target = torch.tensor(targets)
    rank = (scores > scores.gather(1, target.unsqueeze(1))).sum(1).numpy()  # [U], 0 = best
    result = {}
    for k in SETTINGS["topk"]:
        hit = rank < k
        result[f"hit@{k}"] = float(hit.mean())
        result[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1 / np.log2(rank + 2), 0.0)))
    offset = 2 if split == "valid" else 1
    repeats = sum(h[-offset] in h[: len(h) - offset] for h in histories.values())
    return result, repeats


def _parts(data_path: str, model_file: str, dataset: str = DATASET, **settings):
    """The checkpoint's weights in a model built on the data path ``settings`` choose."""
    parts = build("SASRec", data_path, dataset, {**SETTINGS, **settings})
    state = torch.load(model_file, map_location="cpu", weights_only=False)["state_dict"]
    parts.model.load_state_dict(state)
    parts.model.eval()
    return parts


@pytest.mark.parametrize("dataset", [DATASET, MOVIELENS])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_removal_equals_masking_the_whole_history_by_hand(request, dataset, path, caplog):
    data_path, result = request.getfixturevalue("trained" if dataset == DATASET else "movielens")
    parts = _parts(data_path, result["model_file"], dataset, eval_filter_seen=True, **PATHS[path])
    trainer = get_trainer(parts.config, parts.model)
    users = len(_histories(data_path, dataset))
    for split, data in (("valid", parts.valid_data), ("test", parts.test_data)):
        with caplog.at_level(logging.INFO):
            got = trainer.evaluate(data, load_best_model=False)
        expected, repeats = expected_metrics(parts, data_path, split, True, dataset)
        # the synthetic data has repeat targets: they are ranked, not masked
        assert repeats > 0 if dataset == DATASET else repeats == 0
        assert data.seen_items.repeats == (repeats, users)
        assert f"eval_filter_seen: {repeats} of {users} {split} targets" in caplog.text
        for key, value in expected.items():
            assert float(got[key]) == pytest.approx(value, abs=1e-4), (split, key)
        # RecBole's protocol (every item ranked) is the other computation, and differs
        kept = trainer.evaluate(data, load_best_model=False, filter_seen=False)
        kept_expected, _ = expected_metrics(parts, data_path, split, False, dataset)
        for key, value in kept_expected.items():
            assert float(kept[key]) == pytest.approx(value, abs=1e-4), (split, key)
        assert kept_expected != expected


def test_the_whole_history_is_removed_not_only_the_window(trained):
    """Masking only the model's input window gives other numbers on this data."""
    data_path, result = trained
    parts = _parts(data_path, result["model_file"], eval_filter_seen=True)
    users = parts.test_data._dataset.inter_feat[parts.dataset.uid_field]
    rows, items = parts.test_data.seen_items.pairs(users)
    sizes = torch.bincount(rows, minlength=len(users))
    histories = _histories(data_path)
    tokens = parts.dataset.id2token(parts.dataset.uid_field, users.numpy())
    # the training items and the validation item of every user, however long the history
    assert sizes.tolist() == [len(set(histories[str(t)][:-1])) for t in tokens]
    assert int(sizes.max()) > WINDOW


def test_run_reports_both_protocols(trained, tmp_path):
    data_path, result = trained
    again = recbole_moe.run(
        "SASRec",
        DATASET,
        config_dict=tiny_config(
            data_path,
            epochs=1,
            checkpoint_dir=str(tmp_path),
            extra_valid_metrics=["Hit@10"],
            **SETTINGS,
        ),
        both_protocols=True,
    )
    assert set(again["test_result_seen_removed"]) == set(again["test_result"])
    assert again["test_result_seen_removed"] != again["test_result"]
    # a selection's own checkpoint (here the same epoch) is tested both ways too
    selection = again["selections"]["Hit@10"]
    assert selection["test_result"] == again["test_result"]
    assert selection["test_result_seen_removed"] == again["test_result_seen_removed"]
    assert "test_result_seen_removed" not in result  # only when asked for
    # configured with removal, both results are the one evaluation
    removed = recbole_moe.run(
        "SASRec",
        DATASET,
        config_dict=tiny_config(data_path, epochs=1, eval_filter_seen=True, **SETTINGS),
        saved=False,
        both_protocols=True,
    )
    assert removed["test_result_seen_removed"] == removed["test_result"]
    assert removed["test_result"] == again["test_result_seen_removed"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"eval_filter_seen": "yes"}, "eval_filter_seen='yes'.*must be True or False"),
        (
            {"eval_filter_seen": True, "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}}},
            "eval_filter_seen=True.*needs the leave-one-out split",
        ),
        (
            {
                "eval_filter_seen": True,
                "eval_args": {"split": {"LS": "valid_and_test"}, "mode": "uni100"},
            },
            "eval_filter_seen=True.*needs full-sort evaluation",
        ),
    ],
)
def test_bad_settings_fail_before_data_loads(trained, settings, message):
    data_path, _ = trained
    with pytest.raises(ConfigError, match=message):
        check_run("SASRec", DATASET, config_dict=tiny_config(data_path, **settings))


def test_general_model_is_refused(trained):
    data_path, _ = trained
    with pytest.raises(ConfigError, match="BPR is not sequential"):
        check_run("BPR", DATASET, config_dict=tiny_config(data_path, eval_filter_seen=True))

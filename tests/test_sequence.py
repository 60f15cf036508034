"""train_objective: sequence — samples, batches, refusals, losses, resume and learning."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.model.sequential_recommender.sasrec import SASRec

import recbole_moe
from recbole_moe.data.sequence import SequenceTrainDataLoader
from recbole_moe.errors import ConfigError
from recbole_moe.layers.sequence_loss import position_cross_entropy
from recbole_moe.objective import TARGET_LIST_FIELD, training_samples
from recbole_moe.testing import build, train_twice_and_untrained


def _histories(synth) -> dict[int, list[int]]:
    """Raw item tokens of every user in time order, read from the .inter file."""
    df = pd.read_csv(f"{synth.data_path}/synth/synth.inter", sep="\t")
    df.columns = ["user", "item", "time"]
    df = df.sort_values(["user", "time"], kind="stable")
    return {int(u): g["item"].tolist() for u, g in df.groupby("user")}


def _sequence_build(synth, **overrides):
    config = {"train_objective": "sequence", "MAX_ITEM_LIST_LENGTH": 10, **overrides}
    return build("SASRec", synth.data_path, synth.dataset, config)


def test_one_sample_per_user_with_the_most_recent_training_window(synth):
    parts = _sequence_build(synth, shuffle=False)
    config, dataset, train_data = parts.config, parts.train_data._dataset, parts.train_data
    assert isinstance(train_data, SequenceTrainDataLoader)
    histories = _histories(synth)
    L = config["MAX_ITEM_LIST_LENGTH"]
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    seen = set()
    for batch in train_data:
        users = dataset.id2token(uid_field, batch[uid_field].numpy())
        inputs, targets = batch["item_id_list"], batch[TARGET_LIST_FIELD]
        lengths = batch["item_length"]
        assert inputs.shape == targets.shape
        assert inputs.shape[1] == int(lengths.max())  # trimmed to the longest sequence
        for row, user in enumerate(users):
            seen.add(int(user))
            n = int(lengths[row])
            train_items = histories[int(user)][:-2]  # validation and test items held out
            window = train_items[-(L + 1) :]
            got_in = dataset.id2token(iid_field, inputs[row, :n].numpy()).astype(int).tolist()
            got_out = dataset.id2token(iid_field, targets[row, :n].numpy()).astype(int).tolist()
            assert got_in == window[:-1]
            assert got_out == window[1:]
            assert not inputs[row, n:].any() and not targets[row, n:].any()  # padding
    assert seen == set(histories)  # every user exactly once (a set of all, one batch row each)
    assert sum(len(b) for b in train_data) == len(histories)


def _windows_of_an_epoch(train_data) -> dict[int, tuple[list[int], list[int]]]:
    """Each user's (inputs, targets) of one epoch, as raw item tokens."""
    dataset = train_data._dataset
    out = {}
    for batch in train_data:
        users = dataset.id2token(dataset.uid_field, batch[dataset.uid_field].numpy())
        for row, user in enumerate(users):
            n = int(batch["item_length"][row])
            got = [
                dataset.id2token(dataset.iid_field, batch[f][row, :n].numpy()).astype(int).tolist()
                for f in ("item_id_list", TARGET_LIST_FIELD)
            ]
            out[int(user)] = (got[0], got[1])
    return out


def test_random_windows_cover_every_full_window_of_the_training_history(synth):
    L = 10
    parts = _sequence_build(synth, MAX_ITEM_LIST_LENGTH=L, train_window="random", seed=3)
    histories = _histories(synth)
    # every window of L + 1 consecutive training items (or the whole, shorter, history)
    expected = {}
    for user, items in histories.items():
        train_items = items[:-2]  # validation and test items held out
        starts = range(max(len(train_items) - L, 0) + (len(train_items) <= L))
        expected[user] = {tuple(train_items[s : s + L + 1]) for s in starts}
    assert any(len(w) > 3 for w in expected.values())  # the data has long histories
    drawn = {user: set() for user in histories}
    epochs = [_windows_of_an_epoch(parts.train_data) for _ in range(40)]
    for epoch in epochs:
        assert set(epoch) == set(histories)  # one sample per user per epoch
        for user, (inputs, targets) in epoch.items():
            assert inputs[1:] == targets[:-1]  # targets are the next items
            window = tuple(inputs + targets[-1:])
            assert window in expected[user]
            drawn[user].add(window)
    # over 40 epochs every window of a user with at most 6 of them was drawn
    for user, windows in expected.items():
        if len(windows) <= 6:
            assert drawn[user] == windows, user
    # the same seed draws the same windows
    again = _sequence_build(synth, MAX_ITEM_LIST_LENGTH=L, train_window="random", seed=3)
    assert [_windows_of_an_epoch(again.train_data) for _ in range(3)] == epochs[:3]
    # train_window: last is the most recent window, every epoch
    last = _windows_of_an_epoch(_sequence_build(synth, MAX_ITEM_LIST_LENGTH=L).train_data)
    for user, (inputs, targets) in last.items():
        assert tuple(inputs + targets[-1:]) == tuple(histories[user][:-2][-(L + 1) :])


def _samples_of_an_epoch(train_data) -> list[tuple[int, tuple[int, ...]]]:
    """Every sample of one epoch as (user, window of raw item tokens), sorted."""
    dataset = train_data._dataset
    out = []
    for batch in train_data:
        users = dataset.id2token(dataset.uid_field, batch[dataset.uid_field].numpy())
        for row, user in enumerate(users):
            n = int(batch["item_length"][row])
            inputs, targets = (
                dataset.id2token(dataset.iid_field, batch[f][row, :n].numpy()).astype(int).tolist()
                for f in ("item_id_list", TARGET_LIST_FIELD)
            )
            assert inputs[1:] == targets[:-1]  # targets are the next items
            out.append((int(user), tuple(inputs + targets[-1:])))
    return sorted(out)


def _expected_all_windows(histories, L: int, stride: int) -> list[tuple[int, tuple[int, ...]]]:
    """The windows of ``train_window: all``, written out per user: ends at the last training
    item and every ``stride`` items before it, until a window starts at the first item."""
    expected = []
    for user, items in histories.items():
        train_items = items[:-2]  # validation and test items held out
        end = len(train_items)  # one past the window's last item
        while True:
            expected.append((user, tuple(train_items[max(0, end - L - 1) : end])))
            if end - L - 1 <= 0:
                break
            end -= stride
    return sorted(expected)


@pytest.mark.parametrize("worker", [0, 1])
@pytest.mark.parametrize("stride", [None, 4])
def test_all_windows_train_every_target_every_epoch(synth, worker, stride):
    L = 10
    overrides = dict(MAX_ITEM_LIST_LENGTH=L, train_window="all", worker=worker, seed=5)
    if stride is not None:
        overrides["train_window_stride"] = stride
    parts = _sequence_build(synth, **overrides)
    histories = _histories(synth)
    expected = _expected_all_windows(histories, L, stride or L)
    assert len(expected) > 1.5 * len(histories)  # the data has histories longer than L + 1
    epochs = [_samples_of_an_epoch(parts.train_data) for _ in range(2)]
    assert epochs[0] == epochs[1] == expected
    assert training_samples(parts.config, parts.train_data._dataset) == len(expected)
    # every training target (positions 1.. of a history; position 0 is only an input) is a
    # target of some window; with windows side by side, of exactly one
    for user, items in histories.items():
        n = len(items) - 2
        covered = collections.Counter()
        end = n
        while True:
            covered.update(range(max(1, end - L), end))
            if end - L - 1 <= 0:
                break
            end -= stride or L
        assert set(covered) == set(range(1, n)), user
        if stride is None:
            assert set(covered.values()) == {1}, user


@pytest.mark.parametrize("worker", [0, 1])
def test_random_windows_are_drawn_anew_with_worker_processes(synth, worker):
    L = 10
    parts = _sequence_build(synth, MAX_ITEM_LIST_LENGTH=L, train_window="random", worker=worker)
    histories = _histories(synth)
    epochs = [dict(_samples_of_an_epoch(parts.train_data)) for _ in range(4)]
    long_users = [u for u, items in histories.items() if len(items) - 2 > L + 3]
    assert long_users
    for epoch in epochs:
        assert set(epoch) == set(histories)  # one sample per user
        for user, window in epoch.items():
            train_items = histories[user][:-2]
            starts = range(max(len(train_items) - L, 0) + (len(train_items) <= L))
            assert window in {tuple(train_items[s : s + L + 1]) for s in starts}
    # the windows change from epoch to epoch (not the most recent one every time)
    assert any(len({epoch[u] for epoch in epochs}) > 1 for u in long_users)
    again = _sequence_build(synth, MAX_ITEM_LIST_LENGTH=L, train_window="random", worker=worker)
    assert [dict(_samples_of_an_epoch(again.train_data)) for _ in range(2)] == epochs[:2]


def test_windows_in_a_data_parallel_loader(synth, tmp_path):
    """The data-parallel path (a DistributedSampler over the samples): ``random`` draws new
    windows each epoch, ``all`` serves every window."""
    import torch.distributed as dist

    L = 10
    histories = _histories(synth)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        for window in ("random", "all"):
            parts = _sequence_build(synth, MAX_ITEM_LIST_LENGTH=L, train_window=window)
            config = parts.config
            config["single_spec"], config["world_size"] = False, 1
            loader = SequenceTrainDataLoader(config, parts.train_data._dataset, None, shuffle=True)
            epochs = [_samples_of_an_epoch(loader) for _ in range(3)]
            if window == "all":
                assert epochs[0] == epochs[2] == _expected_all_windows(histories, L, L)
            else:
                assert all(len(epoch) == len(histories) for epoch in epochs)
                assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("window", ["last", "random", "all"])
def test_validation_and_test_items_never_reach_training(synth, window):
    """Mark each user's last two interactions with unique item ids: none may appear."""
    import os
    import tempfile

    df = pd.read_csv(f"{synth.data_path}/synth/synth.inter", sep="\t")
    df.columns = ["user_id:token", "item_id:token", "timestamp:float"]
    df = df.sort_values(["user_id:token", "timestamp:float"], kind="stable")
    last_two = df.groupby("user_id:token").cumcount(ascending=False) < 2
    df.loc[last_two, "item_id:token"] = np.arange(int(last_two.sum())) + 10_000
    root = tempfile.mkdtemp()
    os.makedirs(f"{root}/held")
    df.to_csv(f"{root}/held/held.inter", sep="\t", index=False)
    settings = {"train_objective": "sequence", "MAX_ITEM_LIST_LENGTH": 8, "train_window": window}
    parts = build("SASRec", root, "held", settings)
    dataset, train_data, valid_data = parts.train_data._dataset, parts.train_data, parts.valid_data
    held = {
        dataset.token2id(dataset.iid_field, str(t))
        for t in df.loc[last_two, "item_id:token"].tolist()
    }
    for batch in train_data:
        used = set(batch["item_id_list"].unique().tolist()) | set(
            batch[TARGET_LIST_FIELD].unique().tolist()
        )
        assert not used & held
    # ... while the validation targets are exactly such items
    valid_targets = set(valid_data._dataset.inter_feat[dataset.iid_field].tolist())
    assert valid_targets and valid_targets <= held


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"train_objective": "sequences"},
            "train_objective='sequences': allowed values are prefix, sequence",
        ),
        ({"train_objective": "sequence", "train_negatives": -3}, "train_negatives=-3"),
        (
            {"train_objective": "sequence", "train_batch_chunks": 0},
            "train_batch_chunks=0: must be an integer >= 1",
        ),
        (
            {"train_objective": "sequence", "loss_type": "BPR"},
            "loss_type='BPR' with train_objective='sequence'",
        ),
        (
            {"train_objective": "sequence", "data_path_mode": "recbole"},
            "data_path_mode is 'recbole'",
        ),
        (
            {"train_objective": "sequence", "train_window": "latest"},
            "train_window='latest': allowed values are last, random, all",
        ),
        (
            {"train_objective": "sequence", "train_window": "all", "train_window_stride": 0},
            "train_window_stride=0: must be an integer from 1 to MAX_ITEM_LIST_LENGTH",
        ),
        (
            {"train_objective": "sequence", "train_window": "all", "train_window_stride": 500},
            "train_window_stride=500: must be an integer from 1 to MAX_ITEM_LIST_LENGTH",
        ),
        (
            {"train_objective": "sequence", "train_window_stride": 5},
            "train_window_stride=5 applies to train_window='all'",
        ),
        (
            {"train_window": "random"},
            "train_window='random' applies to train_objective='sequence'",
        ),
        (
            {"train_objective": "sequence", "train_batch_order": "length_grouped"},
            "train_batch_order='length_grouped' applies to train_objective='prefix'",
        ),
    ],
)
def test_bad_settings_are_refused_before_training(synth, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recbole_moe.run(
            "SASRec",
            "synth",
            config_dict=dict(data_path=synth.data_path, state="WARNING", **overrides),
        )


def test_a_model_without_per_position_outputs_is_refused_before_any_data_is_loaded(tmp_path):
    # the data path does not even exist: the objective is checked first
    with pytest.raises(ConfigError, match="not available for model NARM.*train_objective='prefix'"):
        recbole_moe.run(
            "NARM",
            "nowhere",
            config_dict={"data_path": str(tmp_path / "missing"), "train_objective": "sequence"},
        )


def test_sampled_softmax_never_counts_the_positive_as_a_negative():
    torch.manual_seed(0)
    states = torch.randn(2, 3, 4)
    weight = torch.randn(9, 4)
    targets = torch.tensor([[3, 5, 0], [7, 0, 0]])
    negatives = torch.tensor([3, 2, 7, 8])
    loss = position_cross_entropy(states, targets, weight, negatives)
    expected = []
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        h, target = states[b, t], int(targets[b, t])
        others = [int(n) for n in negatives if int(n) != target]
        logits = torch.stack([h @ weight[target]] + [h @ weight[n] for n in others])
        expected.append(-torch.log_softmax(logits, 0)[0])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-6)
    full = position_cross_entropy(states, targets, weight)
    manual = torch.stack(
        [
            -torch.log_softmax(states[b, t] @ weight.t(), 0)[targets[b, t]]
            for b, t in [(0, 0), (0, 1), (1, 0)]
        ]
    ).mean()
    assert torch.allclose(full, manual, atol=1e-6)


@pytest.mark.parametrize("model", ["SASRec", "HyMoERec"])
def test_sequence_training_learns_and_is_reproducible(model, tiny_config, synth):
    config = dict(tiny_config, train_objective="sequence", epochs=4)
    first, second, untrained = train_twice_and_untrained(model, synth.data_path, "synth", config)
    assert first["test_result"] == second["test_result"]
    random_hit = 10 / synth.n_items
    assert first["test_result"]["hit@10"] > max(3 * random_hit, untrained["hit@10"] + 0.2)


def test_sampled_softmax_trains_too(tiny_config, synth):
    result = recbole_moe.run(
        "SASRec",
        "synth",
        config_dict=dict(tiny_config, train_objective="sequence", train_negatives=16, epochs=4),
    )
    assert result["test_result"]["hit@10"] > 3 * 10 / synth.n_items


def test_recbole_sasrec_trained_on_sequences_stays_recboles_class(tiny_config):
    result = recbole_moe.run(
        "SASRec", "synth", config_dict=dict(tiny_config, train_objective="sequence", epochs=1)
    )
    model = recbole_moe.quick_start.load_model(result["model_file"]).model
    assert type(model) is SASRec
    checkpoint = torch.load(result["model_file"], map_location="cpu", weights_only=False)
    assert set(checkpoint["state_dict"]) == set(model.state_dict())


def test_bert4rec_cloze_training_on_whole_sequences(tiny_config, synth):
    # one sample per user: 300 users need small batches to get enough steps in few epochs
    result = recbole_moe.run(
        "BERT4Rec",
        "synth",
        config_dict=dict(
            tiny_config, train_objective="sequence", epochs=10, mask_ratio=0.3, train_batch_size=16
        ),
    )
    assert result["test_result"]["hit@10"] > 2 * 10 / synth.n_items

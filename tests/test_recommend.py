"""Recommendations from a saved checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

import recbole_moe
from recbole_moe import cli
from recbole_moe.errors import CheckpointMismatchError
from recbole_moe.recommend import Recommender, UnknownIdError
from recbole_moe.testing import user_histories

DATA_PATHS = {
    "recbole": {"data_path_mode": "recbole"},
    "lean-grouped": {"data_path_mode": "lean", "train_batch_order": "length_grouped"},
}


@pytest.fixture(scope="module", params=sorted(DATA_PATHS))
def checkpoint(request, synth, tmp_path_factory):
    from recbole_moe.testing import tiny_config

    out = tmp_path_factory.mktemp("rec")
    result = recbole_moe.run(
        "SASRec",
        "synth",
        config_dict=tiny_config(
            synth.data_path, epochs=2, checkpoint_dir=str(out), **DATA_PATHS[request.param]
        ),
    )
    return result["model_file"]


def test_histories_are_each_users_latest_items_in_time_order(checkpoint, synth):
    rec = Recommender.load(checkpoint)
    rows = user_histories(f"{synth.data_path}/synth/synth.inter")
    assert len(rec.histories) == len(rows)
    for user in ("1", "7", "42", "300"):
        uid = rec.dataset.field2token_id[rec.uid_field][user]
        items = [str(i) for i in rec.dataset.id2token(rec.iid_field, rec.histories[uid])]
        expected = rows[user]
        # the test input (the latest MAX_ITEM_LIST_LENGTH items before it) + the test item
        assert items == expected[-(rec.max_len + 1) :]


def test_recommendations_are_the_top_k_of_full_sort_predict(checkpoint, synth):
    rec = Recommender.load(checkpoint)
    everything = user_histories(f"{synth.data_path}/synth/synth.inter")
    users = ["1", "7", "42", "15"]
    # user 15's whole history is longer than the model's input and the test item together
    assert len(everything["15"]) > rec.max_len + 1
    results = rec.recommend(users, topk=5)
    for user, result in zip(users, results, strict=False):
        uid = rec.dataset.field2token_id[rec.uid_field][user]
        history = rec.histories[uid]
        known = rec.dataset.token2id(rec.iid_field, everything[user])
        _, excluded = rec.seen.pairs(torch.tensor([uid]))
        assert sorted(excluded.tolist()) == sorted(set(known.tolist()))
        seq = torch.zeros(1, rec.max_len, dtype=torch.long)
        recent = torch.as_tensor(history[-rec.max_len :])
        seq[0, : len(recent)] = recent
        from recbole.data.interaction import Interaction

        inter = Interaction(
            {
                rec.uid_field: torch.tensor([uid]),
                rec.item_seq_field: seq,
                rec.item_len_field: torch.tensor([len(recent)]),
            }
        )
        with torch.no_grad():
            scores = rec.model.full_sort_predict(inter).view(-1)
        scores[0] = -torch.inf
        scores[torch.as_tensor(known)] = -torch.inf  # the whole history, not only the input
        expected = rec.dataset.id2token(rec.iid_field, torch.topk(scores, 5).indices.numpy())
        assert result.items == [str(t) for t in expected]
        assert result.scores == sorted(result.scores, reverse=True)
        assert not set(result.items) & set(everything[user])


def test_history_variant_follows_the_planted_pattern(checkpoint):
    rec = Recommender.load(checkpoint)
    # The synthetic data mostly steps item -> item + 1 (original ids 1..80).
    result = rec.recommend_for_history(["10", "11", "12", "13"], topk=10)
    assert "14" in result.items
    assert not {"10", "11", "12", "13"} & set(result.items)
    with_history = rec.recommend_for_history(
        ["10", "11", "12", "13"], topk=10, exclude_history=False
    )
    assert len(with_history.items) == 10


def test_unknown_ids_give_clear_errors(checkpoint):
    rec = Recommender.load(checkpoint)
    with pytest.raises(UnknownIdError, match="unknown user id '99999' for dataset synth"):
        rec.recommend(["99999"])
    with pytest.raises(UnknownIdError, match=r"unknown item id\(s\) \['nope'\]"):
        rec.recommend_for_history(["10", "nope"])


def test_refuses_a_checkpoint_of_another_model(checkpoint):
    with pytest.raises(CheckpointMismatchError, match="made by model SASRec"):
        Recommender.load(checkpoint, model="HyMoERec")


def test_cli_recommend(checkpoint, capsys):
    assert (
        cli.main(["recommend", "--checkpoint", checkpoint, "--user", "3", "--topk", "4", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["3"]["items"]) == 4
    assert cli.main(["recommend", "--checkpoint", checkpoint, "--user", "nobody"]) == 2
    assert "unknown user id 'nobody'" in capsys.readouterr().err


# -- checkpoints bound to their data ---------------------------------------------------------


@pytest.fixture
def own_data(tmp_path):
    """A small synthetic dataset of this test's own (the tests edit its ``.inter`` file) and a
    2-epoch SASRec checkpoint trained on it: ``(data_path, inter_file, checkpoint)``."""
    from recbole_moe.testing import make_synthetic_dataset, tiny_config

    root = tmp_path / "data"
    make_synthetic_dataset(str(root), name="synth", n_users=60, n_items=30)
    result = recbole_moe.run(
        "SASRec",
        "synth",
        config_dict=tiny_config(str(root), epochs=2, checkpoint_dir=str(tmp_path / "saved")),
    )
    return str(root), root / "synth" / "synth.inter", result["model_file"]


def _cli_recommend(checkpoint: str, capsys) -> tuple[int, dict | None, str]:
    """``recommend --checkpoint ... --user 7 --topk 5``: exit code, JSON output, stderr."""
    argv = ["recommend", "--checkpoint", checkpoint, "--user", "7", "--topk", "5", "--json"]
    code = cli.main(argv)
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1]) if code == 0 else None
    return code, out, captured.err


def test_recommend_refuses_reordered_rows_and_gives_the_same_items_once_restored(own_data, capsys):
    _, inter, checkpoint = own_data
    code, before, _ = _cli_recommend(checkpoint, capsys)
    assert code == 0 and len(before["7"]["items"]) == 5
    original = inter.read_text(encoding="utf-8")
    header, *rows = original.splitlines(keepends=True)
    inter.write_text(header + "".join(reversed(rows)), encoding="utf-8")
    code, _, err = _cli_recommend(checkpoint, capsys)
    assert code == 2
    assert "the same 60 users and 30 items in another order" in err and "rows reordered" in err
    assert "Traceback" not in err and "hidden_size" not in err

    inter.write_text(original, encoding="utf-8")
    code, after, _ = _cli_recommend(checkpoint, capsys)
    assert code == 0
    assert after["7"]["items"] == before["7"]["items"]


def test_recommend_refuses_added_items_naming_them(own_data, capsys):
    _, inter, checkpoint = own_data
    with open(inter, "a", encoding="utf-8") as f:
        f.write("7\t31\t100\n7\t32\t101\n")  # two items the data did not have
    code, _, err = _cli_recommend(checkpoint, capsys)
    assert code == 2
    assert "2 items added ('31', '32')" in err
    assert "hidden_size" not in err and "users" not in err


def test_recommend_warns_when_the_file_changed_but_ids_map_the_same(own_data):
    from recbole_moe.fingerprint import DataChangedWarning

    _, inter, checkpoint = own_data
    header, *rows = inter.read_text(encoding="utf-8").splitlines(keepends=True)
    user, item, time = rows[-1].rstrip("\n").split("\t")
    rows[-1] = f"{user}\t{item}\t{float(time) + 0.5}\n"  # a later time: same order, same ids
    inter.write_text(header + "".join(rows), encoding="utf-8")
    with pytest.warns(DataChangedWarning, match="same users and items at the same indices"):
        Recommender.load(checkpoint)


def test_a_checkpoint_without_a_fingerprint_loads_with_a_warning(own_data, tmp_path):
    from recbole_moe.fingerprint import UncheckedCheckpointWarning

    _, _, checkpoint = own_data
    expected = Recommender.load(checkpoint).recommend(["7"], topk=5)[0].items
    made = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert made.pop("fingerprint")["items"]["tokens"].split("\n")[0] == "[PAD]"
    old = tmp_path / "old.pth"
    torch.save(made, old)
    with pytest.warns(UncheckedCheckpointWarning, match="cannot be checked"):
        rec = Recommender.load(str(old))
    assert rec.recommend(["7"], topk=5)[0].items == expected

"""Pre-split sequential data (``benchmark_filename``): RecBole's loading, on today's pandas."""

from __future__ import annotations

import os

import pytest

from recbole_moe.config import Config
from recbole_moe.data.lean import data_path_mode
from recbole_moe.testing import build, make_synthetic_dataset

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
PRESPLIT = {
    "benchmark_filename": ["train", "valid", "test"],
    "alias_of_item_id": ["item_id_list"],
    "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
    "data_path_mode": "recbole",
}


def write_presplit(directory: str, name: str, splits: dict[str, list[tuple]]) -> None:
    """``<name>.<split>.inter`` files of ``(user, [history items], target)`` rows."""
    os.makedirs(directory, exist_ok=True)
    for split, rows in splits.items():
        with open(os.path.join(directory, f"{name}.{split}.inter"), "w", encoding="utf-8") as f:
            f.write(HEADER)
            f.writelines(f"{u}\t{' '.join(map(str, h))}\t{t}\n" for u, h, t in rows)


def split_rows(loader) -> list[tuple]:
    """``(user, [history items], length, target)`` per row of a loader's dataset, as tokens."""
    dataset = loader._dataset
    feat = dataset.inter_feat
    rows = []
    for user, items, length, target in zip(
        feat["user_id"].tolist(),
        feat["item_id_list"].tolist(),
        feat["item_length"].tolist(),
        feat["item_id"].tolist(),
        strict=True,
    ):
        history = [dataset.id2token("item_id", i) for i in items[:length]]
        rows.append(
            (
                dataset.id2token("user_id", user),
                history,
                length,
                dataset.id2token("item_id", target),
                items[length:] == [0] * (len(items) - length),  # padding after the history
            )
        )
    return rows


def test_presplit_lengths_are_the_history_lengths(tmp_path):
    """7 rows whose histories have 1, 2, 3, 1 | 1, 2 | 1 items (pandas 3 gave all of them 7)."""
    splits = {
        "train": [("u1", ["a"], "b"), ("u1", ["a", "b"], "c"), ("u1", ["a", "b", "c"], "d")]
        + [("u2", ["x"], "y")],
        "valid": [("u3", ["b"], "c"), ("u3", ["b", "c"], "d")],
        "test": [("u2", ["y"], "z")],
    }
    write_presplit(str(tmp_path / "ps"), "ps", splits)
    parts = build("SASRec", str(tmp_path), "ps", PRESPLIT)
    loaders = (parts.train_data, parts.valid_data, parts.test_data)
    for (split, rows), loader in zip(splits.items(), loaders, strict=True):
        got = split_rows(loader)
        assert [row[2] for row in got] == [len(h) for _, h, _ in rows], split
        assert [row[:2] + row[3:4] for row in got] == [(u, h, t) for u, h, t in rows], split
        assert all(row[4] for row in got), split


def test_presplit_copy_equals_recbole_split(tmp_path):
    """Writing RecBole's own leave-one-out split of a dataset as pre-split files and loading
    them gives the same histories, lengths and targets, row by row."""
    root = tmp_path / "data"
    make_synthetic_dataset(str(root), name="whole", n_users=30, n_items=20, min_len=3, max_len=9)
    settings = {"MAX_ITEM_LIST_LENGTH": 6, "data_path_mode": "recbole"}
    parts = build("SASRec", str(root), "whole", settings)
    loaders = (parts.train_data, parts.valid_data, parts.test_data)
    expected = {
        name: split_rows(loader)
        for name, loader in zip(PRESPLIT["benchmark_filename"], loaders, strict=True)
    }
    assert max(row[2] for row in expected["test"]) == 6  # histories cut to the window

    write_presplit(
        str(root / "copy"),
        "copy",
        {k: [(u, h, t) for u, h, _, t, _ in v] for k, v in expected.items()},
    )
    copy = build("SASRec", str(root), "copy", {**PRESPLIT, "MAX_ITEM_LIST_LENGTH": 6})
    copies = (copy.train_data, copy.valid_data, copy.test_data)
    for name, loader in zip(PRESPLIT["benchmark_filename"], copies, strict=True):
        assert split_rows(loader) == expected[name], name


def test_lean_path_refuses_presplit_data(tmp_path):
    write_presplit(
        str(tmp_path / "ps"), "ps", {s: [("u1", ["a"], "b")] for s in ("train", "valid", "test")}
    )
    settings = {**PRESPLIT, "data_path": str(tmp_path)}
    auto = Config("SASRec", "ps", config_dict={**settings, "data_path_mode": "auto"})
    assert data_path_mode(auto) == "recbole"
    for extra in (
        {"data_path_mode": "lean"},
        {"data_path_mode": "auto", "train_objective": "sequence"},
    ):
        config = Config("SASRec", "ps", config_dict={**settings, **extra})
        with pytest.raises(ValueError, match="benchmark_filename"):
            data_path_mode(config)


def test_a_presplit_run_reloads_from_its_checkpoint(tmp_path):
    """``load_model`` (and so ``recommend``) finds a pre-split run's data in its part files."""
    import recbole_moe
    from recbole_moe.testing import tiny_config

    rows = [(f"u{u}", [f"i{(u + k) % 9}" for k in range(3)], f"i{(u + 3) % 9}") for u in range(12)]
    write_presplit(str(tmp_path / "ps"), "ps", {s: rows for s in ("train", "valid", "test")})
    settings = {**tiny_config(str(tmp_path), epochs=1), **PRESPLIT}
    settings["checkpoint_dir"] = str(tmp_path / "saved")
    result = recbole_moe.run("SASRec", "ps", config_dict=settings)
    loaded = recbole_moe.load_model(result["model_file"])
    assert loaded.config["benchmark_filename"] == ["train", "valid", "test"]
    assert len(loaded.test_data._dataset) == len(rows)

"""Dataset preparation: raw formats -> RecBole atomic files, property files, staged datasets."""

from __future__ import annotations

import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import recbole_moe  # noqa: F401  (applies the RecBole compatibility patches)
from recbole_moe.config import Config
from recbole_moe.data import prepare as prep
from recbole_moe.data.prepare import (
    DataPreparationError,
    DatasetStatsWarning,
    ensure_dataset,
    prepare_dataset,
)
from recbole_moe.errors import DatasetNotFoundError

# The small ratings files below tie timestamps on purpose; one test checks the warning.
pytestmark = pytest.mark.filterwarnings("ignore::recbole_moe.data.prepare.TieOrderWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STAGED = SHARED / "datasets"
needs_staged = pytest.mark.skipif(
    not STAGED.is_dir(), reason=f"staged raw datasets not found at ../shared/datasets ({STAGED})"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rows(inter: Path) -> tuple[str, list[list[str]]]:
    lines = inter.read_text().splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def recbole_config(dataset: str, data_path: Path, **overrides) -> Config:
    config_dict = {
        "data_path": str(data_path),
        "show_progress": False,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "state": "ERROR",
    }
    config_dict.update(overrides)
    return Config("SASRec", dataset, config_dict=config_dict)


# ---------------------------------------------------------------------------------------------
# Input formats
# ---------------------------------------------------------------------------------------------


def test_sequences_format_positions_and_stats(tmp_path):
    source = write(tmp_path / "raw.txt", "1 10 20 30\n2 20 40\n\n7 30 10 50 60\n")
    stats = prepare_dataset("tiny", source, tmp_path / "data", verbose=False)
    header, body = rows(tmp_path / "data" / "tiny" / "tiny.inter")
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert body == [
        ["1", "10", "0"],
        ["1", "20", "1"],
        ["1", "30", "2"],
        ["2", "20", "0"],
        ["2", "40", "1"],
        ["7", "30", "0"],
        ["7", "10", "1"],
        ["7", "50", "2"],
        ["7", "60", "3"],
    ]
    assert stats["format"] == "sequences"
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 6, 9)
    assert stats["avg_length"] == pytest.approx(3.0)
    assert (stats["min_length"], stats["max_length"]) == (2, 4)
    assert stats["sparsity"] == pytest.approx(1 - 9 / 18)


RATINGS_DAT = (
    "2::30::4::200\n"
    "1::10::5::300\n"
    "1::11::3::100\n"
    "1::12::4::300\n"  # same timestamp as 1::10, later in the file
    "2::31::1::100\n"
    "1::13::2::300\n"
)
EXPECTED_ORDER = [
    ["1", "11", "3", "100"],
    ["1", "10", "5", "300"],
    ["1", "12", "4", "300"],
    ["1", "13", "2", "300"],
    ["2", "31", "1", "100"],
    ["2", "30", "4", "200"],
]


def test_movielens_dat_sorted_by_time_with_stable_ties(tmp_path):
    source = write(tmp_path / "ratings.dat", RATINGS_DAT)
    stats = prepare_dataset("ml", source, tmp_path / "data", verbose=False)
    header, body = rows(tmp_path / "data" / "ml" / "ml.inter")
    assert header == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert [[u, i, str(int(float(r))), t] for u, i, r, t in body] == EXPECTED_ORDER
    assert stats["format"] == "movielens-dat"
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 6, 6)
    assert stats["sparsity"] == pytest.approx(1 - 6 / 12)


def test_equal_timestamps_reported_and_warned(tmp_path, capsys):
    source = write(tmp_path / "ratings.dat", RATINGS_DAT)
    # user 1 rated at 100, 300, 300, 300: three of its four ratings tied, its test and validation
    # items among them; user 2 at 100, 200: no tie
    with pytest.warns(prep.TieOrderWarning, match=r"50\.0% of the interactions.* 1 of 2 users"):
        stats = prepare_dataset("ml", source, tmp_path / "data", force=True)
    assert stats["ties"] == {"tied": 0.5, "held_out_users": 1, "users": 2}
    assert "equal times" in capsys.readouterr().out
    untied = RATINGS_DAT.replace("1::12::4::300", "1::12::4::400").replace(
        "1::13::2::300", "1::13::2::500"
    )
    source = write(tmp_path / "untied.dat", untied)
    with warnings.catch_warnings():
        warnings.simplefilter("error", prep.TieOrderWarning)
        stats = prepare_dataset("ml2", source, tmp_path / "data", fmt="movielens-dat")
    assert stats["ties"] == {"tied": 0.0, "held_out_users": 0, "users": 2}
    # only the tie of a user's validation item with the item before it
    ties = prep.tie_stats([7, 7, 7, 8], [1, 1, 2, 5])
    assert ties == {"tied": 0.5, "held_out_users": 1, "users": 2}
    # RecBole keeps timestamps as float32, 64 seconds apart at a 2000s Unix time: 978300710
    # and 978300760 are the same float32 number (a tie), 978300600 and 978300700 are not
    assert np.float32(978300710) == np.float32(978300760) != np.float32(978300700)
    ties = prep.tie_stats([1, 1, 1], [978300600, 978300710, 978300760])
    assert ties == {"tied": 2 / 3, "held_out_users": 1, "users": 1}
    ties = prep.tie_stats([1, 1, 1], [978300600, 978300700, 978300860])
    assert ties == {"tied": 0.0, "held_out_users": 0, "users": 1}


def test_movielens_csv_and_zip_archive(tmp_path):
    csv_text = "userId,movieId,rating,timestamp\n" + RATINGS_DAT.replace("::", ",").replace(
        "2,30,4,", "2,30,3.5,"
    )
    source = write(tmp_path / "ml-20m" / "ratings.csv", csv_text)
    stats = prepare_dataset("csv", source, tmp_path / "data", verbose=False)
    _, body = rows(tmp_path / "data" / "csv" / "csv.inter")
    assert [[u, i, t] for u, i, _, t in body] == [[u, i, t] for u, i, _, t in EXPECTED_ORDER]
    assert float(body[-1][2]) == 3.5
    assert stats["format"] == "movielens-csv"

    archive = tmp_path / "ml-20m.zip"  # the official release layout: ml-20m/ratings.csv
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(source, "ml-20m/ratings.csv")
        handle.writestr("ml-20m/movies.csv", "movieId,title,genres\n")
    prepare_dataset("zipped", archive, tmp_path / "data", verbose=False)
    assert rows(tmp_path / "data" / "zipped" / "zipped.inter") == rows(
        tmp_path / "data" / "csv" / "csv.inter"
    )


def test_atomic_file_validated_and_copied(tmp_path):
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\ti1\t3\t5\nu1\ti2\t4\t6\nu2\ti1\t1\t2\n"
    )
    source = write(tmp_path / "old" / "x.inter", text)
    stats = prepare_dataset("copy", source, tmp_path / "data", verbose=False)
    assert (tmp_path / "data" / "copy" / "copy.inter").read_text() == text
    assert stats["format"] == "atomic"
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 2, 3)


@pytest.mark.parametrize(
    "text, fmt",
    [
        ("1 2 3\n", "sequences"),
        ("1::2::3::4\n", "movielens-dat"),
        ("userId,movieId,rating,timestamp\n1,2,3,4\n", "movielens-csv"),
        ("user_id:token\titem_id:token\n1\t2\n", "atomic"),
    ],
)
def test_format_detection(text, fmt):
    assert prep.detect_format(text.encode()) == fmt


def test_explicit_format_overrides_detection(tmp_path):
    source = write(tmp_path / "raw.txt", "1 10 20\n")
    with pytest.raises(DataPreparationError, match="raw.txt"):
        prepare_dataset("x", source, tmp_path / "data", fmt="movielens-dat", verbose=False)


# ---------------------------------------------------------------------------------------------
# Up to date, atomic writes, errors
# ---------------------------------------------------------------------------------------------


def test_prepare_twice_does_not_rewrite(tmp_path, capsys):
    source = write(tmp_path / "raw.txt", "1 10 20\n2 10\n")
    data = tmp_path / "data"
    first = prepare_dataset("d", source, data)
    inter = data / "d" / "d.inter"
    sidecar = data / "d" / "d.inter.source.json"
    before = (inter.stat().st_mtime_ns, inter.stat().st_ino)
    assert json.loads(sidecar.read_text())["source_md5"] == prep._md5(source)

    second = prepare_dataset("d", source, data)
    assert second["skipped"] and not first["skipped"]
    assert (inter.stat().st_mtime_ns, inter.stat().st_ino) == before
    assert "up to date" in capsys.readouterr().out
    assert second["interactions"] == first["interactions"] == 3

    assert not prepare_dataset("d", source, data, force=True, verbose=False)["skipped"]
    write(source, "1 10 20 30\n2 10\n")  # a changed source is prepared again
    again = prepare_dataset("d", source, data, verbose=False)
    assert not again["skipped"] and again["interactions"] == 4
    inter.write_text(inter.read_text() + "9\t9\t9\n")  # an edited output is rewritten too
    assert not prepare_dataset("d", source, data, verbose=False)["skipped"]
    assert [p.name for p in (data / "d").iterdir()] != [] and not list((data / "d").glob("*.tmp"))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("raw.txt", "1 10 20\n2 10 x3\n", r"raw\.txt, line 2: non-integer id 'x3'"),
        ("raw.txt", "1 10 20\n\n2 -4\n", r"raw\.txt, line 3: non-integer id '-4'"),
        ("raw.txt", "1 10 20\n5\n", r"raw\.txt, line 2: expected a user id followed by"),
        (
            "raw.txt",
            "1 10\n2 11\n1 12\n",
            r"raw\.txt, line 3: user 1 already has a line \(line 1\)",
        ),
        ("empty.txt", "", r"empty\.txt: the file is empty"),
        ("blank.dat", "\n\n", r"blank\.dat: the file is empty"),
        ("ratings.dat", "1::2::3::4\n1::2::3\n", r"ratings\.dat, line 2: expected 4 fields"),
        ("ratings.dat", "1::2::3::4\nu::2::3::4\n", r"ratings\.dat, line 2: non-integer user id"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n1,2,3,4\n1,2.5,3,4\n",
            r"ratings\.csv, line 3: non-integer item id '2\.5'",
        ),
        (
            "ratings.csv",
            "user,item,rating,timestamp\n1,2,3,4\n",
            r"ratings\.csv, line 1: expected the header",
        ),
        ("bad.inter", "user_id:token\titem_id:token\n1\t2\n3\n", r"bad\.inter, line 3: expected 2"),
        (
            "bad.inter",
            "user_id:token\ttime:float\n1\t2\n",
            r"bad\.inter, line 1: the header has no 'item_id:token'",
        ),
    ],
)
def test_malformed_source_names_file_and_line(tmp_path, name, text, message):
    source = write(tmp_path / name, text)
    with pytest.raises(DataPreparationError, match=message):
        prepare_dataset("bad", source, tmp_path / "data", verbose=False)
    assert not (tmp_path / "data" / "bad").exists() or not any(
        (tmp_path / "data" / "bad").iterdir()
    )


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    source = write(tmp_path / "raw.txt", "1 2\nfoo 3\n")
    code = prep.main(["--dataset", "x", "--source", str(source), "--data_path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "raw.txt, line 2" in err and "Traceback" not in err
    good = write(tmp_path / "ok.txt", "1 2 3\n")
    from recbole_moe.cli import main as cli_main  # the `recbole-moe prepare` subcommand

    argv = ["prepare", "--dataset", "x", "--source", str(good), "--data_path", str(tmp_path)]
    assert cli_main(argv) == 0
    assert "users" in capsys.readouterr().out
    assert (tmp_path / "x" / "x.inter").read_text().splitlines()[1:] == ["1\t2\t0", "1\t3\t1"]


def test_statistics_printed_next_to_expected_and_warn_on_mismatch(tmp_path, capsys):
    source = write(tmp_path / "Beauty.txt", "1 10 20\n2 10\n")
    with pytest.warns(DatasetStatsWarning, match="users 2 != expected 22,363"):
        prepare_dataset("beauty", source, tmp_path / "data")
    out = capsys.readouterr().out
    assert "expected       22,363  <-- differs" in out and "sparsity" in out


# ---------------------------------------------------------------------------------------------
# ensure_dataset: existing files, raw root, clear message when missing
# ---------------------------------------------------------------------------------------------


def test_ensure_dataset_prepares_from_raw_root(tmp_path, monkeypatch):
    root = tmp_path / "raw"
    write(root / "toys" / "Toys_and_Games.txt", "1 5 6 7\n2 5 8\n")
    monkeypatch.setenv(prep.RAW_ROOT_ENV, str(root))
    with pytest.warns(DatasetStatsWarning):
        path = ensure_dataset("toys", tmp_path / "data", verbose=False)
    assert path == tmp_path / "data" / "toys" / "toys.inter" and path.is_file()
    assert ensure_dataset("toys", tmp_path / "data") == path  # already there: returned as is


def test_ensure_dataset_missing_gives_prepare_command(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.RAW_ROOT_ENV, raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        ensure_dataset("beauty", tmp_path / "data")
    message = str(info.value)
    assert "'beauty'" in message and str(tmp_path / "data" / "beauty" / "beauty.inter") in message
    assert (
        f"recbole-moe prepare --dataset beauty --source PATH/TO/Beauty.txt "
        f"--data_path {tmp_path / 'data'}"
    ) in message
    assert prep.RAW_ROOT_ENV in message

    monkeypatch.setenv(prep.RAW_ROOT_ENV, str(tmp_path / "raw"))
    with pytest.raises(DatasetNotFoundError, match=r"raw.beauty.Beauty\.txt"):
        ensure_dataset("beauty", tmp_path / "data")


def test_variant_derived_from_prepared_base_and_ml100k_embedded(tmp_path, monkeypatch):
    monkeypatch.delenv(prep.RAW_ROOT_ENV, raising=False)
    source = write(tmp_path / "ml-1m.txt", "1 10 20\n2 10\n")
    with pytest.warns(DatasetStatsWarning):
        prepare_dataset("ml-1m", source, tmp_path / "data", verbose=False)
    with pytest.warns(DatasetStatsWarning):
        variant = ensure_dataset("ml-1m-5core", tmp_path / "data", verbose=False)
    assert variant.read_text() == (tmp_path / "data" / "ml-1m" / "ml-1m.inter").read_text()
    assert ensure_dataset("ml-100k", tmp_path / "data").is_file()


# ---------------------------------------------------------------------------------------------
# Property files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, max_len, item_filter",
    [
        ("ml-1m", 200, "[0,inf)"),
        ("ml-1m-5core", 200, "[5,inf)"),
        ("ml-20m", 200, "[0,inf)"),
        ("ml-100k", 200, "[0,inf)"),
        ("beauty", 50, "[0,inf)"),
        ("sports", 50, "[0,inf)"),
        ("toys", 50, "[0,inf)"),
    ],
)
def test_property_files_encode_protocol(tmp_path, dataset, max_len, item_filter):
    config = recbole_config(dataset, tmp_path)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["group_by"] == "user"
    assert config["eval_args"]["mode"] in ("full", {"valid": "full", "test": "full"})
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert config["topk"] == [5, 10, 20] and config["valid_metric"] == "NDCG@10"
    assert {"Hit", "NDCG"} <= set(config["metrics"])
    assert config["MAX_ITEM_LIST_LENGTH"] == max_len
    assert config["item_inter_num_interval"] == item_filter
    assert recbole_config(dataset, tmp_path, MAX_ITEM_LIST_LENGTH=7)["MAX_ITEM_LIST_LENGTH"] == 7


def test_ml100k_loads_as_plain_sequential_dataset(tmp_path):
    from recbole.data import create_dataset

    dataset = create_dataset(recbole_config("ml-100k", tmp_path))
    assert set(dataset.field2type) == {"user_id", "item_id", "timestamp"}  # no rating, no features
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (943, 1682, 100000)


# ---------------------------------------------------------------------------------------------
# Staged datasets (../shared/datasets)
# ---------------------------------------------------------------------------------------------


@needs_staged
def test_staged_beauty_exact_and_leave_one_out(tmp_path):
    from recbole.data import create_dataset, data_preparation

    raw = STAGED / "beauty" / "Beauty.txt"
    stats = prepare_dataset("beauty", raw, tmp_path, verbose=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)

    config = recbole_config("beauty", tmp_path)
    dataset = create_dataset(config)
    _, valid_data, test_data = data_preparation(config, dataset)
    last, second_last = {}, {}
    for line in raw.read_text().splitlines():
        user, *items = line.split()
        last[user], second_last[user] = items[-1], items[-2]
    for data, truth in ((test_data, last), (valid_data, second_last)):
        feat = data.dataset.inter_feat
        users = dataset.id2token("user_id", feat["user_id"].numpy())
        items = dataset.id2token("item_id", feat["item_id"].numpy())
        assert len(users) == len(set(users)) == 22363  # exactly one held-out item per user
        assert all(truth[u] == i for u, i in zip(users, items, strict=False))


@needs_staged
def test_staged_ml1m_full_and_5core(tmp_path, monkeypatch):
    from recbole.data import create_dataset

    monkeypatch.delenv(prep.RAW_ROOT_ENV, raising=False)
    stats = prepare_dataset("ml-1m", STAGED / "ml-1m" / "ml-1m.txt", tmp_path, verbose=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == (6040, 3706, 1000209)
    ensure_dataset("ml-1m-5core", tmp_path, verbose=False)  # derived from the prepared ml-1m

    dataset = create_dataset(recbole_config("ml-1m-5core", tmp_path))
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (6040, 3416, 999611)


@needs_staged
@pytest.mark.parametrize(
    "name, file, expected",
    [
        ("sports", "sports/Sports_and_Outdoors.txt", (35598, 18357, 296337)),
        ("toys", "toys/Toys_and_Games.txt", (19412, 11924, 167597)),
    ],
)
def test_staged_amazon_statistics(tmp_path, name, file, expected):
    stats = prepare_dataset(name, STAGED / file, tmp_path, verbose=False)
    assert (stats["users"], stats["items"], stats["interactions"]) == expected


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Prepared files and tables written atomically get 0666 less the umask, as ``open`` would
    give them (the temporary file they are renamed from is created 0600)."""
    from recbole_moe.files import atomic_write_text

    source = write(tmp_path / "seq.txt", "1 5 6 7\n2 6 7 8\n")
    previous = os.umask(umask)
    try:
        prepare_dataset("mine", source, tmp_path / "data", verbose=False)
        atomic_write_text(tmp_path / "trials.md", "| trial |\n")
    finally:
        os.umask(previous)
    inter = prep.inter_path("mine", tmp_path / "data")
    for path in (inter, prep._sidecar(inter), tmp_path / "trials.md"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path

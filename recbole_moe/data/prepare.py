"""Offline preparation of raw interaction files into RecBole atomic ``.inter`` files.

RecBole reads ``<data_path>/<dataset>/<dataset>.inter`` and would otherwise try to download
missing datasets. ``prepare_dataset`` converts the raw formats the benchmark datasets come in
into that file (``user_id:token  item_id:token  timestamp:float``, tab-separated), and
``ensure_dataset`` is what the runner calls before building a RecBole dataset: it prepares a
missing dataset from the raw-data root (``$RECBOLE_MOE_RAW_DATA``) or stops with a message that
names the exact ``recbole-moe prepare`` command.

Input formats (``fmt``):

* ``sequences`` -- one user per line, ``user item1 item2 ...``, oldest first (the S3-Rec style
  files of Beauty / Sports / Toys and the staged ML-1M). The timestamp is the 0-based position
  in the line, so RecBole's time ordering (``order: TO``) keeps the exact sequence.
* ``movielens-dat`` -- MovieLens ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, ML-1M).
* ``movielens-csv`` -- MovieLens ``ratings.csv`` (header ``userId,movieId,rating,timestamp``,
  ML-20m and later releases).
* ``atomic`` -- an existing RecBole ``.inter`` file: validated and copied byte for byte.

For the MovieLens formats every rating is an interaction with its real timestamp; rows are
written sorted by (user, timestamp) with a stable sort, so equal timestamps keep the file
order (RecBole's own sorts are stable too). Ratings are kept as a ``rating:float`` column;
our dataset property files do not load it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

import numpy as np
import pandas as pd
import recbole

from recbole_moe.errors import DatasetNotFoundError, RecBoleMoeError
from recbole_moe.files import atomic_write, atomic_write_json

PathLike = Union[str, "os.PathLike[str]"]

RAW_ROOT_ENV = "RECBOLE_MOE_RAW_DATA"
FORMATS = ("auto", "sequences", "movielens-dat", "movielens-csv", "atomic")
PREPARE_VERSION = 1  # bump when the written file would change for the same source


class DataPreparationError(RecBoleMoeError, ValueError):
    """Raw input that cannot be converted (malformed line, empty file, unknown format)."""


class DatasetStatsWarning(UserWarning):
    """The prepared dataset's statistics differ from the published ones."""


class TieOrderWarning(UserWarning):
    """Interactions of a user share a timestamp, so their order decides held-out items."""


@dataclass(frozen=True)
class KnownDataset:
    """A dataset recbole-moe knows: where its raw file usually lives and what it must give.

    ``expected`` holds users / items / interactions of the prepared ``.inter`` file;
    ``expected_filtered`` those after the filtering in the dataset's property file
    (``item_min``: RecBole ``item_inter_num_interval: "[item_min,inf)"``).
    """

    raw_dir: str  # folder under the raw-data root
    raw_files: tuple[str, ...]  # candidate raw files inside raw_dir, first found wins
    obtain: str  # where users get the raw data
    expected: tuple[int, int, int] | None = None
    item_min: int = 0
    expected_filtered: tuple[int, int, int] | None = None
    base: str | None = None  # a variant reads the same raw data as this dataset
    embedded: bool = False  # RecBole ships the atomic files (ml-100k)


_MOVIELENS = "https://grouplens.org/datasets/movielens/"
_S3REC = (
    "the S3-Rec preprocessed Amazon 2014 5-core files (RUCAIBox/CIKM2020-S3Rec `data/`, "
    "also in salesforce/ICLRec `data/`)"
)

KNOWN_DATASETS: dict[str, KnownDataset] = {
    "ml-1m": KnownDataset(
        "ml-1m",
        ("ml-1m.txt", "ratings.dat"),
        f"MovieLens 1M `ratings.dat` from {_MOVIELENS} (ml-1m.zip)",
        expected=(6040, 3706, 1000209),
    ),
    "ml-1m-5core": KnownDataset(
        "ml-1m",
        ("ml-1m.txt", "ratings.dat"),
        f"MovieLens 1M `ratings.dat` from {_MOVIELENS} (ml-1m.zip)",
        expected=(6040, 3706, 1000209),
        item_min=5,
        expected_filtered=(6040, 3416, 999611),
        base="ml-1m",
    ),
    "beauty": KnownDataset(
        "beauty",
        ("Beauty.txt",),
        f"`Beauty.txt` from {_S3REC}",
        expected=(22363, 12101, 198502),
    ),
    "sports": KnownDataset(
        "sports",
        ("Sports_and_Outdoors.txt",),
        f"`Sports_and_Outdoors.txt` from {_S3REC}",
        expected=(35598, 18357, 296337),
    ),
    "toys": KnownDataset(
        "toys",
        ("Toys_and_Games.txt",),
        f"`Toys_and_Games.txt` from {_S3REC}",
        expected=(19412, 11924, 167597),
    ),
    "ml-20m": KnownDataset(
        "ml-20m",
        ("ratings.csv", "ml-20m.zip"),
        f"MovieLens 20M `ratings.csv` from {_MOVIELENS} (ml-20m.zip)",
        expected=(138493, 26744, 20000263),
    ),
    "ml-100k": KnownDataset(
        "ml-100k",
        (),
        "shipped with RecBole (recbole/dataset_example/ml-100k)",
        expected=(943, 1682, 100000),
        embedded=True,
    ),
}


# --------------------------------------------------------------------------------------------
# Reading each format into (user, item, timestamp[, rating]) arrays
# --------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """Interactions in the order they are written. ``columns``: header name -> values."""

    user: np.ndarray
    item: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)


def _error(source: str, line: int | None, message: str) -> DataPreparationError:
    where = f"{source}, line {line}" if line is not None else source
    return DataPreparationError(f"{where}: {message}")


_INT = re.compile(rb"\d+")
_NUM = re.compile(rb"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _first_bad_line(
    data: bytes,
    source: str,
    check: Callable[[list[bytes]], str | None],
    split: Callable[[bytes], list[bytes]],
    skip_header: bool = False,
) -> DataPreparationError:
    """Slow path after a vectorised parse failed: find the first bad line and describe it."""
    for number, line in enumerate(data.splitlines(), start=1):
        if skip_header and number == 1 or not line.strip():
            continue
        problem = check(split(line.strip()))
        if problem:
            return _error(source, number, f"{problem}: {line.strip()[:80]!r}")
    return _error(source, None, "could not be parsed (no single malformed line found)")


def _check_sequence_line(fields: list[bytes]) -> str | None:
    if len(fields) < 2:
        return "expected a user id followed by at least one item id"
    for value in fields:
        if not _INT.fullmatch(value):
            return f"non-integer id {value.decode(errors='replace')!r}"
    return None


def _read_sequences(data: bytes, source: str) -> _Table:
    """``user item1 item2 ...`` per line; timestamp = 0-based position in the line."""
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        raise _error(source, None, "the file is empty")
    if not re.fullmatch(rb"[0-9\s]*", data):
        raise _first_bad_line(data, source, _check_sequence_line, bytes.split)
    lengths = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
    if (lengths < 2).any():
        raise _first_bad_line(data, source, _check_sequence_line, bytes.split)
    tokens = np.array(data.split(), dtype=np.int64)  # [total tokens]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))  # index of each line's user token
    users = tokens[starts]
    unique_users, first = np.unique(users, return_index=True)
    if len(unique_users) != len(users):
        dup = np.setdiff1d(np.arange(len(users)), first)[0]
        earlier = int(np.flatnonzero(users == users[dup])[0])
        raise _error(
            source,
            _line_number(data, dup),
            f"user {users[dup]} already has a line (line {_line_number(data, earlier)}); "
            "each user must appear on exactly one line",
        )
    is_item = np.ones(len(tokens), dtype=bool)
    is_item[starts] = False
    n_items = lengths - 1
    user = np.repeat(users, n_items)
    item = tokens[is_item]
    position = np.arange(len(item)) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    return _Table(user, item, {"timestamp": position.astype(np.int64)})


def _line_number(data: bytes, nonempty_index: int) -> int:
    """1-based file line number of the ``nonempty_index``-th non-blank line."""
    seen = -1
    for number, line in enumerate(data.splitlines(), start=1):
        if line.strip():
            seen += 1
            if seen == nonempty_index:
                return number
    return -1


def _check_rating_fields(fields: list[bytes]) -> str | None:
    if len(fields) != 4:
        return f"expected 4 fields (user, item, rating, timestamp), found {len(fields)}"
    for name, value in zip(("user", "item"), fields[:2], strict=False):
        if not _INT.fullmatch(value.strip()):
            return f"non-integer {name} id {value.decode(errors='replace')!r}"
    for name, value in zip(("rating", "timestamp"), fields[2:], strict=False):
        if not _NUM.fullmatch(value.strip()):
            return f"non-numeric {name} {value.decode(errors='replace')!r}"
    return None


def _ratings_frame(
    data: bytes,
    source: str,
    sep: bytes,
    header: bool,
) -> _Table:
    """Shared reader of ``ratings.dat`` (after ``::`` -> tab) and ``ratings.csv``."""
    body = data.split(b"\n", 1)[1] if header and b"\n" in data else (b"" if header else data)
    if not body or body.isspace():
        raise _error(source, None, "no rating rows")

    def split(line):
        return line.split(sep)

    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            sep=sep.decode(),
            header=None,
            engine="c",
            names=["user", "item", "rating", "timestamp"],
            dtype={
                "user": np.int64,
                "item": np.int64,
                "rating": np.float64,
                "timestamp": np.float64,
            },
            skip_blank_lines=True,
        )
        bad = (
            frame.isna().any(axis=1).to_numpy()
            | (frame["user"].to_numpy() < 0)
            | (frame["item"].to_numpy() < 0)
        )
    except (ValueError, pd.errors.ParserError, OverflowError):
        bad = None
    if bad is None or bad.any():
        raise _first_bad_line(data, source, _check_rating_fields, split, skip_header=header)
    timestamp = frame["timestamp"].to_numpy()
    if np.all(timestamp == np.floor(timestamp)):
        timestamp = timestamp.astype(np.int64)
    user = frame["user"].to_numpy()
    order = np.lexsort((timestamp, user))  # stable: equal timestamps keep the file order
    return _Table(
        user[order],
        frame["item"].to_numpy()[order],
        {"rating": frame["rating"].to_numpy()[order], "timestamp": timestamp[order]},
    )


def _read_movielens_dat(data: bytes, source: str) -> _Table:
    """MovieLens ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``."""
    return _ratings_frame(data.replace(b"::", b"\t"), source, b"\t", header=False)


_CSV_HEADER = [b"userId", b"movieId", b"rating", b"timestamp"]


def _read_movielens_csv(data: bytes, source: str) -> _Table:
    """MovieLens ``ratings.csv`` with header ``userId,movieId,rating,timestamp``."""
    header = [h.strip() for h in data.split(b"\n", 1)[0].strip().split(b",")]
    if header != _CSV_HEADER:
        raise _error(
            source,
            1,
            f"expected the header 'userId,movieId,rating,timestamp', found "
            f"{b','.join(header).decode(errors='replace')!r}",
        )
    return _ratings_frame(data, source, b",", header=True)


_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic(data: bytes, source: str) -> tuple[_Table, list[str]]:
    """Validate a RecBole ``.inter`` file; returns its user/item columns and header names."""
    if not data.strip():
        raise _error(source, None, "the file is empty")
    first, _, rest = data.partition(b"\n")
    header = first.decode(errors="replace").rstrip("\r").split("\t")
    names = []
    for column in header:
        name, _, ftype = column.partition(":")
        if ftype not in _ATOMIC_TYPES:
            raise _error(
                source,
                1,
                f"header column {column!r} is not 'name:type' with type in {_ATOMIC_TYPES}",
            )
        names.append(name)
    for required in ("user_id:token", "item_id:token"):
        if required not in header:
            raise _error(source, 1, f"the header has no {required!r} column: {header}")
    if not rest or rest.isspace():
        raise _error(source, None, "no interaction rows after the header")
    float_columns = [n for n, c in zip(names, header, strict=False) if c.endswith(":float")]
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            sep="\t",
            header=0,
            names=names,
            engine="c",
            quoting=3,
            dtype={n: (np.float64 if n in float_columns else str) for n in names},
            keep_default_na=False,
            na_values={n: [""] for n in float_columns},
        )
        bad = (frame["user_id"] == "").to_numpy() | (frame["item_id"] == "").to_numpy()
    except (ValueError, pd.errors.ParserError):
        bad = None
    if bad is None or bad.any():

        def check(fields: list[bytes]) -> str | None:
            if len(fields) != len(names):
                return f"expected {len(names)} tab-separated fields, found {len(fields)}"
            for name, value in zip(names, fields, strict=False):
                if name in ("user_id", "item_id") and not value.strip():
                    return f"empty {name}"
                if name in float_columns and value.strip() and not _NUM.fullmatch(value.strip()):
                    return f"non-numeric {name} {value.decode(errors='replace')!r}"
            return None

        raise _first_bad_line(data, source, check, lambda line: line.split(b"\t"), skip_header=True)
    return _Table(frame["user_id"].to_numpy(), frame["item_id"].to_numpy()), names


# --------------------------------------------------------------------------------------------
# Sources, formats, statistics
# --------------------------------------------------------------------------------------------


def _resolve_source(source: Path, dataset: str) -> Path:
    """A directory source is searched for the usual raw file names."""
    if not source.exists():
        raise DataPreparationError(f"{source}: no such file or directory")
    if not source.is_dir():
        return source
    known = KNOWN_DATASETS.get(dataset)
    names = list(known.raw_files if known else ()) + [
        "ratings.csv",
        "ratings.dat",
        f"{dataset}.inter",
        f"{dataset}.txt",
    ]
    for name in names:
        if (source / name).is_file():
            return source / name
    raise DataPreparationError(
        f"{source}: a directory without any of the expected raw files ({', '.join(names)})"
    )


def _read_bytes(source: Path) -> tuple[bytes, str]:
    """Bytes of the source, and its display name (``archive.zip:member`` for a zip member)."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            members = [
                m
                for m in archive.namelist()
                if m.rsplit("/", 1)[-1] in ("ratings.csv", "ratings.dat")
            ]
            if not members:
                raise DataPreparationError(
                    f"{source}: the archive has no ratings.csv or ratings.dat"
                )
            return archive.read(members[0]), f"{source}:{members[0]}"
    return source.read_bytes(), str(source)


def detect_format(data: bytes, name: str = "") -> str:
    """Guess the format from the file name and its first non-blank line."""
    first = next((line for line in data[: 1 << 16].splitlines() if line.strip()), b"").strip()
    if name.endswith(".inter") or re.match(rb"[^\t:]+:(token|float)", first):
        return "atomic"
    if b"::" in first or name.endswith(".dat"):
        return "movielens-dat"
    if name.endswith(".csv") or b"," in first:
        return "movielens-csv"
    if re.fullmatch(rb"\d+([ \t]+\d+)+", first):
        return "sequences"
    raise DataPreparationError(
        f"{name or 'source'}: cannot detect the format from the first line "
        f"{first[:80]!r}; pass --format ({', '.join(FORMATS[1:])})"
    )


def compute_stats(user: np.ndarray, item: np.ndarray) -> dict[str, Any]:
    """users, items, interactions, average / min / max sequence length, sparsity."""
    _, user_index = np.unique(user, return_inverse=True)
    lengths = np.bincount(user_index)
    n_users, n_items, n = len(lengths), len(np.unique(item)), len(user)
    return {
        "users": int(n_users),
        "items": int(n_items),
        "interactions": int(n),
        "avg_length": float(n / n_users) if n_users else 0.0,
        "min_length": int(lengths.min()) if n_users else 0,
        "max_length": int(lengths.max()) if n_users else 0,
        "sparsity": float(1.0 - n / (n_users * n_items)) if n_users and n_items else 0.0,
    }


def tie_stats(user: np.ndarray, timestamp: np.ndarray) -> dict[str, Any]:
    """How much of the order of ``user``'s interactions is decided by ties in ``timestamp``.

    Ties are counted as RecBole sees them: it stores a float field as float32, which holds a
    Unix time of today to 64 seconds, and sorts each history stably, so interactions within
    the same 64 seconds keep the file's order. ``tied``: the share of interactions tied with
    another of the same user. ``held_out_users``: users whose test item (last interaction) or
    validation item (second last) is tied with the interaction before it, so the file's order
    decides which item is held out.
    """
    user = np.asarray(user)
    timestamp = np.asarray(timestamp).astype(np.float32)  # RecBole's storage of float fields
    order = np.lexsort((timestamp, user))
    user, timestamp = user[order], timestamp[order]
    same = (user[1:] == user[:-1]) & (timestamp[1:] == timestamp[:-1])  # [n - 1]: i+1 ties i
    tied = np.zeros(len(user), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    ties_previous = np.append(False, same)  # [n]: row i ties row i - 1 of the same user
    last = np.flatnonzero(np.append(user[1:] != user[:-1], True))  # [U]: each user's last row
    before = np.maximum(last - 1, 0)
    decided = ties_previous[last] | (ties_previous[before] & (user[before] == user[last]))
    return {
        "tied": float(tied.mean()) if len(user) else 0.0,
        "held_out_users": int(decided.sum()),
        "users": int(len(last)),
    }


def _filter_items(user: np.ndarray, item: np.ndarray, item_min: int) -> tuple[np.ndarray, ...]:
    """Drop items with fewer than ``item_min`` interactions (``item_inter_num_interval``)."""
    _, inverse, counts = np.unique(item, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= item_min
    return user[keep], item[keep]


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one character inserted, deleted, replaced or two adjacent
    characters swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def custom_dataset_note(dataset: str) -> str | None:
    """What ``prepare`` says about a name that is not a known dataset (None: it is known)."""
    if dataset in KNOWN_DATASETS:
        return None
    close = [
        name
        for name in KNOWN_DATASETS
        if dataset.lower() == name or _one_edit_apart(dataset.lower(), name)
    ]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (
        f"'{dataset}' is not a known dataset ({', '.join(KNOWN_DATASETS)}): prepared as a "
        f"custom dataset, with no published statistics to compare{hint}"
    )


def _stats_lines(dataset: str, stats: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Printable table of the statistics next to the expected values, and mismatches."""
    known = KNOWN_DATASETS.get(dataset)
    if known is None:
        lines = [f"{dataset} (prepared file, custom dataset):"]
        lines += [f"  {key:<14}{stats[key]:>12,}" for key in ("users", "items", "interactions")]
        return lines + _shape_lines(stats) + [custom_dataset_note(dataset)], []
    rows = [("prepared file", stats, known.expected if known else None)]
    if "filtered" in stats:
        rows.append(
            (f"after item filter >= {known.item_min}", stats["filtered"], known.expected_filtered)
        )
    lines, mismatches = [], []
    for label, values, expected in rows:
        lines.append(f"{dataset} ({label}):")
        for index, key in enumerate(("users", "items", "interactions")):
            want = f"{expected[index]:>12,}" if expected else f"{'-':>12}"
            mark = ""
            if expected and values[key] != expected[index]:
                mark = "  <-- differs"
                mismatches.append(f"{label}: {key} {values[key]:,} != expected {expected[index]:,}")
            lines.append(f"  {key:<14}{values[key]:>12,}  expected {want}{mark}")
        lines += _shape_lines(values)
    return lines, mismatches


def _shape_lines(values: dict[str, Any]) -> list[str]:
    """Average length, sparsity and (with timestamps) the share of tied interactions."""
    lines = [
        f"  {'avg length':<14}{values['avg_length']:>12.2f}"
        f"  (min {values['min_length']}, max {values['max_length']})",
        f"  {'sparsity':<14}{100 * values['sparsity']:>11.2f}%",
    ]
    if "ties" in values:
        ties = values["ties"]
        lines.append(
            f"  {'equal times':<14}{100 * ties['tied']:>11.2f}%  of interactions (as float32); "
            f"held-out items of {ties['held_out_users']:,} users decided by file order"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _compact_floats(values: np.ndarray) -> np.ndarray:
    """Integral floats as ints, few distinct values (ratings) as strings: pandas formats
    floats slowly, and ``4`` reads back like ``4.0``."""
    if values.dtype.kind != "f":
        return values
    if np.all(values == np.floor(values)):
        return values.astype(np.int64)
    labels, inverse = np.unique(values, return_inverse=True)
    if len(labels) > 1000:
        return values
    return np.array([repr(float(v)) for v in labels], dtype=object)[inverse]


def _write_inter(handle: IO[bytes], table: _Table) -> None:
    header = ["user_id:token", "item_id:token"]
    frame = pd.DataFrame({"user_id": table.user, "item_id": table.item})
    for name, values in table.columns.items():
        header.append(f"{name}:float")
        frame[name] = _compact_floats(values)
    handle.write(("\t".join(header) + "\n").encode())
    chunk = 1 << 20  # rows formatted in memory at a time (pandas writes slowly to file objects)
    for begin in range(0, len(frame), chunk):
        text = frame.iloc[begin : begin + chunk].to_csv(
            sep="\t", header=False, index=False, lineterminator="\n"
        )
        handle.write(text.encode())


def inter_path(dataset: str, data_path: PathLike = "dataset") -> Path:
    """``<data_path>/<dataset>/<dataset>.inter``, where RecBole reads interactions."""
    return Path(data_path) / dataset / f"{dataset}.inter"


def _sidecar(inter: Path) -> Path:
    return inter.with_name(inter.name + ".source.json")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def prepare_dataset(
    dataset: str,
    source: PathLike,
    data_path: PathLike = "dataset",
    fmt: str = "auto",
    force: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Convert ``source`` into ``<data_path>/<dataset>/<dataset>.inter``.

    Skips the work when the output exists and its sidecar ``<dataset>.inter.source.json``
    records the same source checksum and format (``force`` rewrites anyway). Prints the
    statistics next to the expected ones for known datasets and warns
    (``DatasetStatsWarning``) when they differ.

    Returns:
        the statistics (users, items, interactions, avg_length, min_length, max_length,
        sparsity; ``filtered`` for a variant with an item filter) plus ``path``, ``format``,
        ``source``, ``skipped`` (True when up to date) and ``seconds``.
    Raises:
        DataPreparationError: unreadable or malformed source (message names file and line).
    """
    start = time.perf_counter()
    if fmt not in FORMATS:
        raise DataPreparationError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = _resolve_source(Path(source).expanduser(), dataset)
    output = inter_path(dataset, data_path)
    sidecar = _sidecar(output)
    source_md5 = _md5(source)

    record = None if force else _up_to_date(output, sidecar, source_md5, fmt)
    if record is not None:  # the output is that of this source: nothing to do
        if verbose:
            again = "use --force to rewrite"
            print(f"{output} is up to date (source {source}, md5 {source_md5}); {again}.")
        return dict(
            record["stats"],
            path=str(output),
            format=record["format"],
            source=str(source),
            skipped=True,
            seconds=time.perf_counter() - start,
        )

    data, display = _read_bytes(source)
    table, fmt, write = _read_table(data, display, fmt)
    stats = compute_stats(table.user, table.item)
    if "timestamp" in table.columns:
        stats["ties"] = tie_stats(table.user, table.columns["timestamp"])
    known = KNOWN_DATASETS.get(dataset)
    if known and known.item_min:
        stats["filtered"] = compute_stats(*_filter_items(table.user, table.item, known.item_min))
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, write)
    record = {
        "dataset": dataset,
        "source": str(source.resolve()),
        "source_md5": source_md5,
        "format": fmt,
        "version": PREPARE_VERSION,
        "output_md5": _md5(output),
        "stats": stats,
    }
    atomic_write_json(sidecar, record, indent=2)

    lines, mismatches = _stats_lines(dataset, stats)
    stats = dict(
        stats,
        path=str(output),
        format=fmt,
        source=str(source),
        skipped=False,
        seconds=time.perf_counter() - start,
    )
    if verbose:
        print(f"Prepared {output} from {display} ({fmt}) in {stats['seconds']:.1f} s")
        print("\n".join(lines))
    _warn(dataset, stats.get("ties"), mismatches)
    return stats


def _up_to_date(output: Path, sidecar: Path, source_md5: str, fmt: str) -> dict | None:
    """The sidecar record when ``output`` was prepared from this source (same checksum,
    format and preparation version) and is unchanged since; None otherwise."""
    if not (output.is_file() and sidecar.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except ValueError:
        return None
    if (
        record.get("source_md5") == source_md5
        and record.get("version") == PREPARE_VERSION
        and (fmt == "auto" or record.get("format") == fmt)
        and record.get("output_md5") == _md5(output)
    ):
        return record
    return None


def _read_table(
    data: bytes, display: str, fmt: str
) -> tuple[_Table, str, Callable[[IO[bytes]], Any]]:
    """The interactions of ``data`` in format ``fmt`` (detected for ``auto``), the format,
    and the function that writes the ``.inter`` file (an atomic file is copied as it is)."""
    if not data or data.isspace():
        raise _error(display, None, "the file is empty")
    if fmt == "auto":
        fmt = detect_format(data, display)
    if fmt == "atomic":
        table, _ = _read_atomic(data, display)
        return table, fmt, lambda handle: handle.write(data)
    reader = {
        "sequences": _read_sequences,
        "movielens-dat": _read_movielens_dat,
        "movielens-csv": _read_movielens_csv,
    }[fmt]
    table = reader(data, display)
    return table, fmt, lambda handle: _write_inter(handle, table)


def _warn(dataset: str, ties: dict | None, mismatches: list[str]) -> None:
    """Warn about held-out items decided by tie order, and statistics unlike the published
    ones (both pointing at the caller of :func:`prepare_dataset`)."""
    if ties and ties["held_out_users"]:
        warnings.warn(
            f"{dataset}: {100 * ties['tied']:.1f}% of the interactions share their timestamp "
            f"with another of the same user, as RecBole stores it (float32: 64 seconds at "
            f"today's Unix times); for {ties['held_out_users']:,} of {ties['users']:,} users "
            "the test or validation item is one of such a tie, so the order of the source "
            "file decides which item is held out",
            TieOrderWarning,
            stacklevel=3,
        )
    if mismatches:
        warnings.warn(
            f"{dataset}: statistics differ from the published ones ({'; '.join(mismatches)}); "
            "check that the source is the expected release",
            DatasetStatsWarning,
            stacklevel=3,
        )


def raw_root() -> Path | None:
    """The raw-data root from ``$RECBOLE_MOE_RAW_DATA`` (None when unset)."""
    value = os.environ.get(RAW_ROOT_ENV)
    return Path(value).expanduser() if value else None


def find_raw_source(dataset: str, root: PathLike | None = None) -> tuple[Path | None, list[Path]]:
    """The first raw file for ``dataset`` under the raw root, and every path looked at."""
    root = Path(root).expanduser() if root is not None else raw_root()
    if root is None:
        return None, []
    known = KNOWN_DATASETS.get(dataset)
    folder = root / (known.raw_dir if known else dataset)
    names = (
        list(known.raw_files)
        if known
        else [f"{dataset}.inter", "ratings.csv", "ratings.dat", f"{dataset}.txt"]
    )
    candidates = [folder / name for name in names]
    if known and not known.embedded:
        candidates.append(root / f"{known.raw_dir}.zip")
    for path in candidates:
        if path.is_file():
            return path, candidates
    return None, candidates


def ensure_dataset(
    dataset: str,
    data_path: PathLike = "dataset",
    raw: PathLike | None = None,
    verbose: bool = True,
    prepare_missing: bool = True,
) -> Path:
    """Make sure RecBole can read ``dataset``; returns the ``.inter`` path.

    Order: existing atomic file; for ml-100k RecBole's embedded copy; for a variant
    (ml-1m-5core) the base dataset's prepared file; the raw file under the raw root
    (``raw`` or ``$RECBOLE_MOE_RAW_DATA``), which is prepared now (``prepare_missing``; else
    only found: a check that writes nothing).

    Raises:
        DatasetNotFoundError: nothing found; the message names the dataset, the places
            searched and the ``recbole-moe prepare`` command to run. Never downloads.
    """
    output = inter_path(dataset, data_path)
    if output.is_file():
        return output
    known = KNOWN_DATASETS.get(dataset)
    if known and known.embedded:
        embedded = Path(recbole.__file__).parent / "dataset_example" / dataset / f"{dataset}.inter"
        if embedded.is_file():
            return embedded
    source, searched = find_raw_source(dataset, raw)
    if source is None and known and known.base:
        base = inter_path(known.base, data_path)
        searched.append(base)
        if base.is_file():
            source = base
    if source is not None and not prepare_missing:
        return output
    if source is not None:
        if verbose:
            print(f"Dataset {dataset!r} is not prepared yet; preparing it from {source}")
        prepare_dataset(dataset, source, data_path, verbose=verbose)
        return output

    root = raw if raw is not None else os.environ.get(RAW_ROOT_ENV)
    looked = "\n".join(f"  {p}" for p in [output] + searched)
    hint = known.raw_files[0] if known and known.raw_files else "RAW_FILE"
    message = (
        f"Dataset {dataset!r} was not found. Looked for:\n{looked}\n"
        + ("" if root else f"(${RAW_ROOT_ENV} is not set, so no raw-data root was searched.)\n")
        + "Prepare it with:\n"
        f"  recbole-moe prepare --dataset {dataset} --source PATH/TO/{hint} "
        f"--data_path {data_path}\n"
        + (f"Raw data: {known.obtain}.\n" if known else "")
        + f"Or put the raw file under ${RAW_ROOT_ENV}/"
        f"{known.raw_dir if known else dataset}/ to prepare it on first use."
    )
    raise DatasetNotFoundError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """``recbole-moe prepare --dataset NAME --source PATH [--data_path DIR] [--format F]
    [--force]``."""
    parser = argparse.ArgumentParser(
        prog="recbole-moe prepare",
        description="Convert a raw interaction file into RecBole atomic files "
        "<data_path>/<dataset>/<dataset>.inter.",
    )
    parser.add_argument(
        "--dataset", required=True, help=f"dataset name (known: {', '.join(KNOWN_DATASETS)})"
    )
    parser.add_argument(
        "--source",
        default=None,
        help=f"raw file, directory or MovieLens zip (default: the file under ${RAW_ROOT_ENV})",
    )
    parser.add_argument(
        "--data_path", default="dataset", help="RecBole data_path (default: dataset)"
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        default="auto",
        choices=FORMATS,
        help="input format (default: detected)",
    )
    parser.add_argument("--force", action="store_true", help="rewrite even when up to date")
    args = parser.parse_args(argv)
    try:
        source = args.source
        if source is None:
            source, searched = find_raw_source(args.dataset)
            if source is None:
                where = ", ".join(map(str, searched)) or f"${RAW_ROOT_ENV} is not set"
                raise DataPreparationError(f"--source is required (no raw file found: {where})")
        prepare_dataset(args.dataset, source, args.data_path, args.fmt, args.force)
    except (DataPreparationError, DatasetNotFoundError) as error:
        print(f"recbole-moe prepare: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

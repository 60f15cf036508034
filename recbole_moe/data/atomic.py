"""Checks of RecBole atomic files (``.inter``, ``.user``, ``.item``) before RecBole reads them.

RecBole reads an atomic file with pandas' Python parser and reports a bad value, if at all, as a
traceback without a line number; some bad values are accepted silently (an id ``NA`` becomes
the padding id). :func:`check_atomic_file` checks the header and every value of the columns
RecBole will load against the declared type, in one vectorised pass with pandas' C parser
(seconds for tens of millions of rows), and names the file, line, column, value and type of the
first bad one:

* header: every column ``name:type`` with type ``token``, ``token_seq``, ``float`` or
  ``float_seq``, no name twice, no Windows line ends (RecBole would read the last type as
  ``float\\r``);
* rows: no more fields than the header (RecBole's parser fails on such a row);
* ``float``: a number, or empty / ``NA``-style for a missing value (RecBole fills in the mean);
* ``float_seq``: numbers separated by ``seq_separator``;
* ``token`` / ``token_seq``: any text; id columns (``user_id``, ``item_id``) must not be empty
  or a value pandas reads as missing (``NA``, ``null``, ``nan``, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from recbole_moe.data.prepare import DataPreparationError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
#: What pandas (so RecBole) reads as a missing value: '', NA, null, nan, None, ...
_NA_VALUES = frozenset(
    getattr(pd.io.parsers.readers, "STR_NA_VALUES", None)
    or [
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)

# Passed files, so a process that runs several times on one dataset checks it once:
# (path, size, mtime, settings) -> header.
_PASSED: dict[tuple, list[tuple[str, str]]] = {}


def _error(path: str, line: int | None, message: str) -> DataPreparationError:
    where = f"{path}, line {line}" if line is not None else path
    return DataPreparationError(f"{where}: {message}")


def _shown(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def read_header(
    path: str, field_separator: str = "\t", encoding: str | None = None
) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` of an atomic file's header.

    Raises:
        DataPreparationError: empty file, a column not ``name:type`` with a RecBole type, a name
            given twice, Windows line ends, or no rows after the header.
    """
    with open(path, "rb") as f:
        first = f.readline()
        rows = f.read(1 << 16).strip()
    if not first.strip() and not rows:
        raise _error(path, None, "the file is empty")
    if first.endswith(b"\r\n"):
        raise _error(
            path,
            1,
            "the file has Windows line ends (\\r\\n), which RecBole reads as "
            "part of the last column's type; convert it, e.g. sed -i 's/\\r$//' FILE",
        )
    header = first.rstrip(b"\n").decode(encoding or "utf-8", errors="replace")
    columns, seen = [], set()
    for column in header.split(field_separator):
        name, _, ftype = column.partition(":")
        if not name or ftype not in ATOMIC_TYPES:
            hint = ""
            if len(header.split(field_separator)) == 1 and any(
                s in header for s in ("\t", ",", " ", ";") if s != field_separator
            ):
                hint = f" (the columns are not separated by field_separator={field_separator!r})"
            raise _error(
                path,
                1,
                f"header column {column!r} is not 'name:type' with type in {ATOMIC_TYPES}{hint}",
            )
        if name in seen:
            raise _error(path, 1, f"column '{name}' appears twice in the header")
        seen.add(name)
        columns.append((name, ftype))
    if not rows:
        raise _error(path, None, "no rows after the header")
    return columns


def _line(path: str, number: int, encoding: str | None) -> str:
    """Text of line ``number`` (1-based) of ``path``, for messages."""
    with open(path, "rb") as f:
        for index, raw in enumerate(f, start=1):
            if index == number:
                return raw.rstrip(b"\r\n").decode(encoding or "utf-8", errors="replace")
    return ""


def _decodes(raw: bytes, encoding: str | None) -> bool:
    try:
        raw.decode(encoding or "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _first_line_matching(path: str, predicate) -> int | None:
    """1-based number of the first line for which ``predicate(bytes)`` holds (slow; errors
    only)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if predicate(raw):
                return number
    return None


def _not_floats(values: pd.Series) -> np.ndarray:
    """Mask of the entries of ``values`` (strings) that are neither numbers nor missing.

    ``pd.to_numeric`` decides for most values at C speed; the few it rejects are looked at again
    with Python's ``float``, which RecBole's parser accepts (``nan``, ``inf``, ``1_000``)."""
    numbers = pd.to_numeric(values, errors="coerce")
    missing = values.isin(_NA_VALUES).to_numpy()
    candidates = np.flatnonzero(numbers.isna().to_numpy() & ~missing)
    bad = np.zeros(len(values), dtype=bool)
    for index in candidates:
        try:
            float(values.iloc[index])
        except ValueError:
            bad[index] = True
    return bad


def _float_seq_problem(column: pd.Series, separator: str) -> tuple[int, str] | None:
    """``(row, piece)`` of the first non-number in a ``float_seq`` column (None: all fine)."""
    filled = column[column != ""]
    if filled.empty:
        return None
    pieces = filled.str.split(separator, regex=False).explode()
    pieces = pieces[pieces.notna() & (pieces != "")]
    bad = _not_floats(pieces.astype(str))
    if not bad.any():
        return None
    first = int(np.flatnonzero(bad)[0])
    return int(pieces.index[first]), str(pieces.iloc[first])


def check_atomic_file(
    path: str,
    field_separator: str = "\t",
    seq_separator: str = " ",
    columns: Iterable[str] | None = None,
    id_columns: Sequence[str] = ("user_id", "item_id"),
    encoding: str | None = None,
) -> list[tuple[str, str]]:
    """Check ``path``'s header and the values of ``columns`` (None: every column).

    Returns:
        the header as ``[(name, type), ...]``.
    Raises:
        DataPreparationError: naming the file, line, column, value and declared type.
    """
    path = str(path)
    stat = os.stat(path)
    wanted = None if columns is None else tuple(sorted(set(columns)))
    key = (
        os.path.abspath(path),
        stat.st_size,
        stat.st_mtime_ns,
        field_separator,
        seq_separator,
        wanted,
        tuple(id_columns),
        encoding,
    )
    if key in _PASSED:
        return _PASSED[key]
    header = read_header(path, field_separator, encoding)
    names = [name for name, _ in header]
    types = dict(header)
    checked = [n for n in names if wanted is None or n in wanted]
    ids = [n for n in checked if n in id_columns]
    floats = [n for n in checked if types[n] == "float"]
    float_seqs = [n for n in checked if types[n] == "float_seq"]
    _check_field_counts(path, len(header), field_separator, encoding)
    if ids or floats or float_seqs:
        _check_values(
            path, header, ids, floats, float_seqs, field_separator, seq_separator, encoding
        )
    _PASSED[key] = header
    return header


def _check_field_counts(path: str, n_fields: int, separator: str, encoding: str | None) -> None:
    """No row has more fields than the header (RecBole's parser fails on one).

    Counts the separators of every line with numpy, 64 MiB at a time."""
    sep = separator.encode(encoding or "utf-8")
    if len(sep) != 1:  # a multi-character separator: pandas' own check is the only one
        return
    sep_byte = sep[0]
    line_offset = 0  # lines before the current chunk
    carry = b""
    with open(path, "rb") as f:
        f.readline()  # the header
        line_offset = 1
        while True:
            block = f.read(1 << 26)
            data = carry + block
            if not block:
                if not data:
                    return
                data += b"\n"
            end = data.rfind(b"\n") + 1
            chunk, carry = data[:end], data[end:]
            arr = np.frombuffer(chunk, dtype=np.uint8)
            newlines = np.flatnonzero(arr == 10)
            starts = np.concatenate(([0], newlines[:-1] + 1))
            seps = np.flatnonzero(arr == sep_byte)
            counts = np.bincount(
                np.searchsorted(starts, seps, side="right") - 1, minlength=len(starts)
            )
            over = np.flatnonzero(counts > n_fields - 1)
            if len(over):
                index = int(over[0])
                text = chunk[starts[index] : newlines[index]].decode(
                    encoding or "utf-8", errors="replace"
                )
                raise _error(
                    path,
                    line_offset + index + 1,
                    f"{int(counts[index]) + 1} fields separated by {separator!r}, but "
                    f"the header has {n_fields}: {_shown(text, 80)}",
                )
            line_offset += len(starts)
            if not block:
                return


def _read(
    path: str,
    names: list[str],
    usecols: list[str],
    dtype,
    separator: str,
    encoding: str | None,
    skip_blank_lines: bool = False,
    **options,
) -> pd.DataFrame:
    """``pd.read_csv`` of ``usecols``; a malformed row is reported with its line."""
    try:
        return pd.read_csv(
            path,
            sep=separator,
            header=0,
            names=names,
            usecols=usecols,
            dtype=dtype,
            engine="c" if len(separator) == 1 else "python",
            skip_blank_lines=skip_blank_lines,
            encoding=encoding or "utf-8",
            **options,
        )
    except UnicodeDecodeError as exc:
        line = _first_line_matching(path, lambda raw: not _decodes(raw, encoding))
        raise _error(
            path,
            line,
            f"is not valid {encoding or 'utf-8'} text; set encoding to "
            "the file's encoding (e.g. --encoding=latin-1)",
        ) from exc
    except pd.errors.ParserError as exc:
        text = str(exc)
        if "EOF inside string" in text:
            line = _first_line_matching(path, lambda raw: b'"' in raw)
            raise _error(
                path,
                line,
                'a field starts with a quote (") that is never closed; '
                "RecBole's parser would read the rest of the file as one value: "
                f"{_shown(_line(path, line, encoding), 80) if line else ''}",
            ) from exc
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if match:
            expected, line, saw = (int(g) for g in match.groups())
            raise _error(
                path,
                line,
                f"{saw} fields separated by {separator!r}, but the header "
                f"has {expected}: {_shown(_line(path, line, encoding), 80)}",
            ) from exc
        raise _error(path, None, f"cannot be parsed: {text.splitlines()[-1]}") from exc


def _check_values(
    path, header, ids, floats, float_seqs, separator, seq_separator, encoding
) -> None:
    """The value checks; fast path: ids as integers and floats as numbers in one C parse.

    Only when that fails (non-integer ids, a non-number, a blank line) are the columns read
    again as text to find the first bad value and its line."""
    names = [name for name, _ in header]
    types = dict(header)
    dtype = {n: np.int64 for n in ids}
    dtype.update({n: np.float64 for n in floats})
    dtype.update({n: str for n in float_seqs})
    frame = None
    try:
        frame = _read(
            path,
            names,
            ids + floats + float_seqs,
            dtype,
            separator,
            encoding,
            skip_blank_lines=True,
        )
    except DataPreparationError:
        raise
    except (ValueError, OverflowError):
        pass
    problems: list[tuple[int, str, str | None, str]] = []  # (row, column, value, why)
    if frame is not None:
        seq_frame = frame
    else:
        if floats:
            text = _read(path, names, floats, str, separator, encoding, na_filter=False)
            for name in floats:
                bad = _not_floats(text[name])
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    problems.append((row, name, text[name].iloc[row], "non-numeric"))
            del text
        seq_frame = None
        if ids or float_seqs:
            id_frame = _read(
                path, names, ids + float_seqs, str, separator, encoding, keep_default_na=True
            )
            blank = id_frame.isna().all(axis=1).to_numpy()
            for name in ids:
                missing = id_frame[name].isna().to_numpy() & ~blank
                if missing.any():
                    row = int(np.flatnonzero(missing)[0])
                    problems.append((row, name, None, "missing"))
            seq_frame = id_frame
    if seq_frame is not None:
        for name in float_seqs:
            found = _float_seq_problem(seq_frame[name].fillna(""), seq_separator)
            if found:
                problems.append((found[0], name, found[1], "non-numeric-seq"))
    if not problems:
        return
    row, name, value, why = min(problems, key=lambda p: p[0])
    line = row + 2
    if frame is not None:  # fast path (blank lines skipped): find the row's line
        line = _line_of_row(path, row)
    position = names.index(name) + 1
    where = f"in column {position} '{name}:{types[name]}'"
    if why == "missing":
        raw = _line(path, line, encoding).split(separator)
        value = raw[position - 1] if position - 1 < len(raw) else ""
        reason = "is empty" if value == "" else f"{value!r} is read as a missing value"
        raise _error(
            path,
            line,
            f"{name} {reason} {where}: every row needs one "
            "(pandas reads '', NA, null, nan, None, ... as missing)",
        )
    if why == "non-numeric-seq":
        raise _error(
            path,
            line,
            f"non-numeric {name} element {_shown(value)} {where} "
            f"(declared type float_seq: numbers separated by {seq_separator!r})",
        )
    raise _error(
        path,
        line,
        f"non-numeric {name} {_shown(value)} {where} (declared type float: "
        "a number, or empty for a missing value)",
    )


def _line_of_row(path: str, row: int) -> int:
    """File line of data row ``row`` (0-based) when blank lines are not rows."""
    with open(path, "rb") as f:
        f.readline()
        seen = -1
        for number, raw in enumerate(f, start=2):
            if raw.strip(b"\r\n"):
                seen += 1
                if seen == row:
                    return number
    return row + 2


def check_interaction_file(path: str) -> None:
    """Check a tab-separated ``.inter`` file without a config: the header must hold
    ``user_id:token`` and ``item_id:token``, and every value of every column must fit its
    declared type (:func:`check_atomic_file`).

    Raises:
        DataPreparationError: naming file, line, column, value and declared type.
    """
    header = read_header(path)
    for required in ("user_id", "item_id"):
        if (required, "token") not in header:
            raise DataPreparationError(
                f"{path}, line 1: the header has no '{required}:token' column: "
                f"{[f'{n}:{t}' for n, t in header]}"
            )
    check_atomic_file(path)


__all__ = ["ATOMIC_TYPES", "check_atomic_file", "check_interaction_file", "read_header"]

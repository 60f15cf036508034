"""Atomic file writes: a reader never sees a half-written file.

Every result file of recbole-moe (prepared atomic files, benchmark records and reports, tuning
tables, benchmark JSON) is written to a temporary file in the target's directory and then
renamed over the target with ``os.replace``; a crash leaves the old file (or none) and no
temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any, Union

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a binary temporary file next to ``path``, then rename it to ``path``.

    The temporary file is removed when ``write`` (or the rename) fails.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(
        "wb", dir=directory, prefix=f".{name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    data = text.encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """Write ``json.dumps(obj, **dump_kwargs)`` to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, **dump_kwargs))


__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text"]

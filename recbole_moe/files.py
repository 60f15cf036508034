"""Atomic file writes (a reader never sees a half-written file) and plain, JSON-ready values.

Every result file of recbole-moe (prepared atomic files, benchmark records and reports, tuning
tables, benchmark JSON) is written to a temporary file in the target's directory and then
renamed over the target with ``os.replace``; a crash leaves the old file (or none) and no
temporary file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from enum import Enum
from typing import IO, Any, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]


def current_umask() -> int:
    """The process's file mode creation mask (read without changing it where Linux shows it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, rarely reached)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a binary temporary file next to ``path``, then rename it to ``path``.

    The file gets the mode ``open`` would give it (0666 less the umask): the temporary file is
    created 0600. The temporary file is removed when ``write`` (or the rename) fails.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(
        "wb", dir=directory, prefix=f".{name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
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


def to_plain(value: Any, json_safe: bool = False) -> Any:
    """``value`` in plain Python: a tensor or numpy array becomes a (nested) list, a numpy or
    torch scalar a number, a tuple a list, and a dict gets string keys, recursively.

    With ``json_safe`` (run records), what JSON cannot hold becomes a string as well: a
    non-finite float (``"nan"``), an enum (its name), any other object (``str``); a set becomes
    a sorted list. Without it, those are returned as they are (a model's statistics dict).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if not json_safe or math.isfinite(value) else str(value)
    if json_safe and isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_plain(v, json_safe) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, json_safe) for v in value]
    if json_safe and isinstance(value, (set, frozenset)):
        return sorted((to_plain(v, json_safe) for v in value), key=str)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
    if callable(getattr(value, "tolist", None)):  # torch / numpy arrays and scalars
        return to_plain(value.tolist(), json_safe)
    return str(value) if json_safe else value


__all__ = ["atomic_write", "current_umask", "atomic_write_json", "atomic_write_text", "to_plain"]

"""Checkpoint files: read one refusing anything that is not an intact RecBole checkpoint,
write one atomically, and name a run's resume checkpoint.

The trainer (:mod:`recbole_moe.trainer`) writes and resumes from these files; ``recommend`` and
``load_model`` read them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import Any

import torch

from recbole_moe.compat import load_recbole_checkpoint
from recbole_moe.errors import CheckpointMismatchError, RecBoleMoeError


class CheckpointError(RecBoleMoeError, ValueError):
    """A checkpoint file that is missing, truncated, foreign or incomplete."""


#: Entries of every checkpoint RecBole's trainer and ours write, and those a resume reads.
CHECKPOINT_KEYS = ("config", "state_dict")
RESUME_KEYS = ("config", "epoch", "cur_step", "best_valid_score", "state_dict", "optimizer")


def _file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file, from its bytes alone (None: it may be)."""
    if not os.path.exists(path):
        return "does not exist"
    if os.path.isdir(path):
        return "is a directory, not a checkpoint file (.pth)"
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # torch's zip format since 1.6
        if not zipfile.is_zipfile(path):
            return (
                f"is truncated ({size:,} bytes, the end of its zip archive is missing): "
                "the write or copy was cut off; use an intact copy, or the run's other "
                "checkpoint (<name>.pth or <name>-last.pth)"
            )
        return None
    if head[:1] == b"\x80":  # a pickle: torch's legacy format
        return None
    return (
        "is not a PyTorch checkpoint (torch.save writes a zip archive; this file starts "
        f"with {head!r})"
    )


def read_checkpoint(
    path: Any, map_location: Any = None, required: Sequence[str] = CHECKPOINT_KEYS
) -> dict:
    """Load a checkpoint RecBole's trainer (or ours) wrote, refusing anything else.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it (missing,
            truncated, not a torch file, not a RecBole checkpoint, lacking ``required`` keys).
    """
    path = str(path)
    problem = _file_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint {path} {problem}")
    try:
        checkpoint = load_recbole_checkpoint(path, map_location=map_location)
    except Exception as exc:  # torch reports damage in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read by torch.load ({type(exc).__name__}: {reason}); "
            "the file is damaged or was not written by torch.save"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, not the dict of a "
            "RecBole checkpoint (config, state_dict, ...)"
        )
    missing = [key for key in required if key not in checkpoint]
    if missing:
        held = ", ".join(map(str, list(checkpoint)[:6])) + (", ..." if len(checkpoint) > 6 else "")
        raise CheckpointError(
            f"checkpoint {path} is not a RecBole training checkpoint: it has no "
            f"{', '.join(missing)} (it holds {held or 'nothing'})"
        )
    config = checkpoint.get("config")
    if config is not None:
        try:
            config["model"], config["dataset"]
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {path}: its 'config' entry is a {type(config).__name__}, not a "
                "RecBole Config"
            ) from exc
    return checkpoint


def load_state(target: Any, state: Any, path: str, what: str) -> None:
    """``target.load_state_dict(state)``; a mismatch is one line naming the checkpoint."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)[:300]
        raise CheckpointError(
            f"checkpoint {path} does not fit this {what}: {detail} (was it made with other "
            "settings, e.g. hidden_size or n_layers, or on other data, e.g. with items added?)"
        ) from exc


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp, pickle_protocol=4)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def last_checkpoint_path(best_model_file: str) -> str:
    """``saved/SASRec-<time>.pth`` -> ``saved/SASRec-<time>-last.pth``."""
    root, ext = os.path.splitext(best_model_file)
    return f"{root}-last{ext or '.pth'}"


def check_checkpoint_matches(checkpoint: dict, model: str, dataset: str, path: str) -> None:
    """Refuse a checkpoint that another model or dataset produced."""
    config = checkpoint.get("config")
    if config is None:
        raise CheckpointMismatchError(f"{path} is not a RecBole checkpoint (no 'config' entry)")
    made = (config["model"], config["dataset"])
    if made != (model, dataset):
        raise CheckpointMismatchError(
            f"checkpoint {path} was made by model {made[0]} on dataset {made[1]}, "
            f"but this run is model {model} on dataset {dataset}"
        )


__all__ = [
    "CHECKPOINT_KEYS",
    "RESUME_KEYS",
    "CheckpointError",
    "atomic_torch_save",
    "check_checkpoint_matches",
    "last_checkpoint_path",
    "load_state",
    "read_checkpoint",
]

"""What a checkpoint was trained on, so that it is never used with other data or settings.

Every checkpoint our trainer writes has a ``fingerprint`` entry (:func:`run_fingerprint`):

* the dataset's ``.inter`` file and its SHA-256;
* the original user and item ids in the order of their internal index. RecBole numbers ids by
  their first appearance in the file, so the same file with its rows in another order gives
  each id another index, and a model's rows then belong to other items;
* the values of :data:`RUN_SETTINGS`, the settings a resumed run must keep.

``recommend`` and :func:`recbole_moe.quick_start.load_model` compare the data
(:func:`check_data`) and ``--resume`` compares the settings before loading any data
(:func:`check_settings`) and the data before training (:func:`check_data`). A checkpoint
written before fingerprints were recorded loads with an :class:`UncheckedCheckpointWarning`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

from recbole_moe.errors import CheckpointMismatchError

#: The settings that define a run: ``--resume`` with another value of any is refused. The
#: model and dataset, the training regime, what is optimised and how (loss, optimiser, learning
#: rate, seed) and the model's size. Settings a model does not read are recorded as ``None``.
#: Settings that only say how long or how to evaluate (``epochs``, ``stopping_step``,
#: ``eval_batch_size``, ``topk``, ...) may change on a resume.
RUN_SETTINGS: tuple[str, ...] = (
    "model",
    "dataset",
    # the training regime
    "train_objective",
    "train_window",
    # what is optimised, and how
    "loss_type",
    "learner",
    "learning_rate",
    "weight_decay",
    "seed",
    # the model's size
    "MAX_ITEM_LIST_LENGTH",
    "hidden_size",
    "inner_size",
    "n_layers",
    "num_layers",
    "n_heads",
    "n_experts",
    "top_k",
    "expert_inner_size",
    "d_state",
    "d_conv",
    "expand",
)

#: How many added or removed ids an error names.
SHOWN_IDS = 5


class UncheckedCheckpointWarning(UserWarning):
    """A checkpoint without a fingerprint: its data and settings cannot be compared."""


class DataChangedWarning(UserWarning):
    """The ``.inter`` file changed since training, but every user and item keeps its index."""


def inter_files(config: Any) -> list[str]:
    """The dataset's interaction files (``config["data_path"]`` is the dataset's folder):
    ``<dataset>.inter``, or ``<dataset>.<part>.inter`` for each part of pre-split data
    (``benchmark_filename``)."""
    dataset = config["dataset"]
    parts = config["benchmark_filename"] if "benchmark_filename" in config else None
    names = [f"{dataset}.{part}.inter" for part in parts] if parts else [f"{dataset}.inter"]
    return [os.path.join(config["data_path"], name) for name in names]


def files_sha256(paths: list[str]) -> str:
    """One file's SHA-256, or for several the SHA-256 of their SHA-256s in order."""
    digests = [file_sha256(path) for path in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _ids(dataset: Any, field: str) -> dict[str, Any]:
    """``field``'s original ids in the order of their internal index, one per line."""
    tokens = "\n".join(str(token) for token in dataset.field2id_token[field])
    return {
        "field": field,
        "sha256": hashlib.sha256(tokens.encode("utf-8")).hexdigest(),
        "tokens": tokens,
    }


def run_settings(config: Any) -> dict[str, Any]:
    """The values of :data:`RUN_SETTINGS` in ``config`` (``None`` for those it lacks)."""
    return {key: config[key] if key in config else None for key in RUN_SETTINGS}


def run_fingerprint(config: Any, dataset: Any) -> dict[str, Any]:
    """The fingerprint of a run of ``config`` on ``dataset`` (a RecBole ``Dataset``)."""
    paths = inter_files(config)
    return {
        "inter_file": ", ".join(paths),
        "inter_sha256": files_sha256(paths),
        "users": _ids(dataset, dataset.uid_field),
        "items": _ids(dataset, dataset.iid_field),
        "settings": run_settings(config),
    }


def _warn_unchecked(path: str) -> None:
    warnings.warn(
        f"checkpoint {path} was written before checkpoints recorded their data and settings: "
        "it cannot be checked against the current data or settings",
        UncheckedCheckpointWarning,
        stacklevel=1,  # one location: shown once per checkpoint, however many checks find it
    )


def _shown(tokens: list[str]) -> str:
    more = f", ... ({len(tokens)} in all)" if len(tokens) > SHOWN_IDS else ""
    return ", ".join(repr(t) for t in tokens[:SHOWN_IDS]) + more


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _changes(saved: dict, current: dict) -> list[str]:
    """How the user and item ids changed: added, removed or reordered (``[]``: same ids at
    the same indices)."""
    changes, reordered = [], []
    for key, noun in (("users", "user"), ("items", "item")):
        if saved[key]["sha256"] == current[key]["sha256"]:
            continue
        old = saved[key]["tokens"].split("\n")[1:]  # [PAD] first
        new = current[key]["tokens"].split("\n")[1:]
        old_set, new_set = set(old), set(new)
        added = [t for t in new if t not in old_set]
        removed = [t for t in old if t not in new_set]
        if added:
            changes.append(f"{_counted(len(added), noun)} added ({_shown(added)})")
        if removed:
            changes.append(f"{_counted(len(removed), noun)} removed ({_shown(removed)})")
        if not added and not removed:
            reordered.append(_counted(len(new), noun))
    if reordered:
        changes.append(
            f"the same {' and '.join(reordered)} in another order of first appearance (rows "
            "reordered), so their ids map to other indices than at training time"
        )
    return changes


def check_data(checkpoint: dict, current: dict, path: str, resume: bool = False) -> None:
    """Refuse ``checkpoint`` when the data it was trained on differs from ``current``
    (:func:`run_fingerprint` of the data now loaded); warn when it has no fingerprint.

    A changed file whose users and items keep their indices is refused for a resume and a
    :class:`DataChangedWarning` otherwise (the model still fits; the histories are today's).

    Raises:
        CheckpointMismatchError: naming users or items added, removed or reordered.
    """
    saved = checkpoint.get("fingerprint")
    if saved is None:
        _warn_unchecked(path)
        return
    file = current["inter_file"]
    changes = _changes(saved, current)
    fix = (
        "to train on the current data, start a new run (without --resume)"
        if resume
        else "restore the file as it was at training time, or train a new model on it"
    )
    if changes:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on other data than {file} holds now: "
            f"{'; '.join(changes)}; {fix}"
        )
    if saved["inter_sha256"] != current["inter_sha256"]:
        message = (
            f"{file} changed since checkpoint {path} was trained on it (sha256 "
            f"{saved['inter_sha256'][:12]} -> {current['inter_sha256'][:12]}), with the same "
            "users and items at the same indices"
        )
        if resume:
            raise CheckpointMismatchError(f"cannot resume: {message}; {fix}")
        warnings.warn(message, DataChangedWarning, stacklevel=2)


def check_settings(checkpoint: dict, config: Any, path: str) -> None:
    """Refuse to resume ``checkpoint`` with ``config`` when a value of :data:`RUN_SETTINGS`
    changed; warn when it has no fingerprint.

    Raises:
        CheckpointMismatchError: naming each changed setting with its old and new value.
    """
    saved = checkpoint.get("fingerprint")
    if saved is None:
        _warn_unchecked(path)
        return
    now = run_settings(config)
    changed = [
        f"{key} {saved['settings'].get(key)!r} -> {now[key]!r}"
        for key in RUN_SETTINGS
        if saved["settings"].get(key) != now[key]
    ]
    if changed:
        raise CheckpointMismatchError(
            f"cannot resume from checkpoint {path}: settings changed since it was written "
            f"({', '.join(changed)}); a resume continues the same run, so to train with the new "
            "settings start a new run (without --resume)"
        )


__all__ = [
    "RUN_SETTINGS",
    "DataChangedWarning",
    "UncheckedCheckpointWarning",
    "check_data",
    "check_settings",
    "file_sha256",
    "files_sha256",
    "inter_files",
    "run_fingerprint",
    "run_settings",
]

"""The training regime: RecBole's prefixes (``prefix``) or one sequence per user (``sequence``).

``train_objective: prefix`` is RecBole's regime, unchanged: every prefix of every training
history is a sample and the loss is taken at its last position.

``train_objective: sequence`` trains on one sample per user per epoch: the most recent
``MAX_ITEM_LIST_LENGTH + 1`` items of the training part of the history (everything before the
validation and test items), input ``items[:-1]`` and targets ``items[1:]``, with a loss at every
non-padding position: full cross-entropy over all items, or a sampled softmax over
``train_negatives`` items shared by the batch. With ``train_window: random`` a user whose
training history is longer than ``MAX_ITEM_LIST_LENGTH + 1`` items gets a window drawn anew each
epoch, uniformly among all its full windows, instead of the most recent one; with
``train_window: all`` such a history is cut into consecutive windows (the most recent one as
under ``last``, earlier ones ``train_window_stride`` items apart) so that every training target
is trained every epoch. Evaluation is the same in both regimes.

This module holds the names and the checks every layer shares; the loss lives in
:mod:`recbole_moe.layers.sequence_loss` and :mod:`recbole_moe.model.sequence`, the samples in
:mod:`recbole_moe.data.sequence`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRAIN_OBJECTIVES = ("prefix", "sequence")
#: Which windows of a long training history are ``sequence`` samples: the most recent one, one
#: drawn uniformly each epoch among all full windows, or all windows ending every
#: ``train_window_stride`` items back from the most recent one (every target in at least one).
TRAIN_WINDOWS = ("last", "random", "all")
#: Training batches under ``sequence`` carry the next item of every input position here
#: (``[B, L]``, 0 at padding), beside RecBole's ``item_id_list`` / ``item_length`` fields.
TARGET_LIST_FIELD = "target_item_id_list"


def train_objective(config) -> str:
    """``config``'s ``train_objective`` (``prefix`` when unset)."""
    return config["train_objective"] or "prefix"


def is_sequence(config) -> bool:
    return train_objective(config) == "sequence"


def train_negatives(config) -> int:
    """Negatives of the sampled softmax under ``sequence`` (0: full cross-entropy)."""
    return int(config["train_negatives"] or 0)


def train_batch_chunks(config) -> int:
    """Length groups each ``sequence`` batch is computed in (1: the whole batch at once)."""
    return int(config["train_batch_chunks"] or 1)


def train_window(config) -> str:
    """``config``'s ``train_window`` (``last`` when unset)."""
    return config["train_window"] or "last"


def train_window_stride(config) -> int:
    """Items between the ends of consecutive ``train_window: all`` windows (default: the
    window's length ``MAX_ITEM_LIST_LENGTH``, so windows do not overlap)."""
    return int(config["train_window_stride"] or config["MAX_ITEM_LIST_LENGTH"])


def windows_per_user(targets: np.ndarray, max_len: int, stride: int) -> np.ndarray:
    """Samples of each user per epoch under ``train_window: all``, ``[U]``.

    A user with ``n`` training targets (positions ``1..n`` of the history; position 0 is only an
    input) has windows ending at ``n, n - stride, ...``; a window ending at ``p`` trains the
    targets ``max(1, p - max_len + 1)..p``, so windows are added until one reaches position 1:
    ``1 + ceil(max(0, n - max_len) / stride)``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    return 1 + -(-np.maximum(targets - max_len, 0) // stride)


def objective_problems(config, sequence_models: Sequence[str]) -> list[tuple[str, str]]:
    """Why ``config``'s training regime cannot be used: ``(setting, message)`` per problem,
    naming the setting whose value is refused (empty: fine). ``sequence_models``: the models
    that can train under ``sequence``, causal (or cloze-trained) encoders whose output at every
    position predicts the next item (what each model class declares,
    :func:`recbole_moe.model.sequence_models`).

    Checked before any data is loaded.
    """
    objective = train_objective(config)
    if objective not in TRAIN_OBJECTIVES:
        allowed = ", ".join(TRAIN_OBJECTIVES)
        return [("train_objective", f"train_objective={objective!r}: allowed values are {allowed}")]
    problem = _value_problem(config)
    if problem:
        return [problem]
    window = train_window(config)
    if objective == "prefix":
        if window != "last":
            message = (
                "applies to train_objective='sequence'; the prefix regime already trains on "
                "every prefix (use train_window='last')"
            )
            return [("train_window", f"train_window={window!r} {message}")]
        return []
    return _sequence_problems(config, sequence_models)


def _value_problem(config) -> tuple[str, str] | None:
    """The first of ``train_negatives``, ``train_batch_chunks``, ``train_window`` and
    ``train_window_stride`` out of its range (None: all fine)."""
    negatives = config["train_negatives"]
    if negatives is not None and (
        isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0
    ):
        message = "must be an integer >= 0 (0: cross-entropy over all items)"
        return ("train_negatives", f"train_negatives={negatives!r}: {message}")
    chunks = config["train_batch_chunks"]
    if chunks is not None and (
        isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1
    ):
        message = "must be an integer >= 1 (1: each batch computed at once)"
        return ("train_batch_chunks", f"train_batch_chunks={chunks!r}: {message}")
    window = train_window(config)
    if window not in TRAIN_WINDOWS:
        allowed = ", ".join(TRAIN_WINDOWS)
        return ("train_window", f"train_window={window!r}: allowed values are {allowed}")
    stride = config["train_window_stride"]
    if stride is not None:
        max_len = config["MAX_ITEM_LIST_LENGTH"]
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= max_len:
            message = f"must be an integer from 1 to MAX_ITEM_LIST_LENGTH ({max_len})"
            return ("train_window_stride", f"train_window_stride={stride!r}: {message}")
        if window != "all":
            message = "applies to train_window='all' (the distance between its windows' ends)"
            return ("train_window_stride", f"train_window_stride={stride!r} {message}")
    return None


def _sequence_problems(config, sequence_models: Sequence[str]) -> list[tuple[str, str]]:
    """Why ``train_objective: sequence`` cannot be used with ``config``'s model and settings."""
    model = config["model"]
    if model not in sequence_models:
        return [
            (
                "train_objective",
                f"train_objective='sequence' is not available for model {model}: it trains "
                f"with a loss at every position, which only {', '.join(sequence_models)} "
                "support; use train_objective='prefix' (RecBole's regime) for this model",
            )
        ]
    problems = []
    if config["loss_type"] not in (None, "CE"):
        problems.append(
            (
                "loss_type",
                f"loss_type={config['loss_type']!r} with train_objective='sequence': the "
                "sequence regime trains with cross-entropy (over all items, or sampled with "
                "train_negatives=N); set loss_type='CE'",
            )
        )
    if (config["data_path_mode"] or "auto") == "recbole":
        problems.append(
            (
                "data_path_mode",
                "train_objective='sequence' builds its samples on the lean data path; "
                "data_path_mode is 'recbole' (use 'auto' or 'lean')",
            )
        )
    if (config["train_batch_order"] or "random") != "random":
        problems.append(
            (
                "train_batch_order",
                f"train_batch_order={config['train_batch_order']!r} applies to "
                "train_objective='prefix'; sequence batches are always trimmed to their "
                "longest history (use train_batch_order='random')",
            )
        )
    if model == "FAME" and config["head_prediction"] and config["fusion"] == "probs":
        problems.append(
            (
                "fusion",
                "FAME with fusion='probs' under train_objective='sequence' would hold per-head "
                "distributions over all items at every position; use fusion='logits' "
                "(the default)",
            )
        )
    return problems


def user_count(dataset) -> int:
    """Distinct users of ``dataset``'s interactions: the training samples per epoch under
    ``sequence`` with ``train_window`` ``last`` or ``random`` (one per user with a training
    target)."""
    return int(np.unique(dataset.inter_feat[dataset.uid_field].numpy()).size)


def training_samples(config, dataset) -> int:
    """Training samples per epoch of ``dataset`` (the training split) under ``config``'s
    regime: every prefix (``prefix``), one per user (``sequence``), or every window of
    :func:`windows_per_user` (``sequence`` with ``train_window: all``)."""
    if not is_sequence(config):
        return int(dataset.inter_num)
    if train_window(config) != "all":
        return user_count(dataset)
    _, targets = np.unique(dataset.inter_feat[dataset.uid_field].numpy(), return_counts=True)
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    return int(windows_per_user(targets, max_len, train_window_stride(config)).sum())


__all__ = [
    "TARGET_LIST_FIELD",
    "TRAIN_OBJECTIVES",
    "TRAIN_WINDOWS",
    "is_sequence",
    "objective_problems",
    "train_batch_chunks",
    "train_negatives",
    "train_objective",
    "train_window",
    "train_window_stride",
    "training_samples",
    "user_count",
    "windows_per_user",
]

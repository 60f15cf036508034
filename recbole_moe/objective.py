"""The training regime: RecBole's prefixes (``prefix``) or one sequence per user (``sequence``).

``train_objective: prefix`` is RecBole's regime, unchanged: every prefix of every training
history is a sample and the loss is taken at its last position.

``train_objective: sequence`` trains on one sample per user per epoch: the most recent
``MAX_ITEM_LIST_LENGTH + 1`` items of the training part of the history (everything before the
validation and test items), input ``items[:-1]`` and targets ``items[1:]``, with a loss at every
non-padding position: full cross-entropy over all items, or a sampled softmax over
``train_negatives`` items shared by the batch. With ``train_window: random`` a user whose
training history is longer than ``MAX_ITEM_LIST_LENGTH + 1`` items gets a window drawn anew each
epoch, uniformly among all its full windows, instead of the most recent one. Evaluation is the
same in both regimes.

This module holds the names and the checks every layer shares; the loss lives in
:mod:`recbole_moe.layers.sequence_loss` and :mod:`recbole_moe.model.sequence`, the samples in
:mod:`recbole_moe.data.sequence`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRAIN_OBJECTIVES = ("prefix", "sequence")
#: Which window of a long training history a ``sequence`` sample is: the most recent one, or
#: one drawn uniformly each epoch among all full windows.
TRAIN_WINDOWS = ("last", "random")
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
    negatives = config["train_negatives"]
    if negatives is not None and (
        isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0
    ):
        message = "must be an integer >= 0 (0: cross-entropy over all items)"
        return [("train_negatives", f"train_negatives={negatives!r}: {message}")]
    chunks = config["train_batch_chunks"]
    if chunks is not None and (
        isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1
    ):
        message = "must be an integer >= 1 (1: each batch computed at once)"
        return [("train_batch_chunks", f"train_batch_chunks={chunks!r}: {message}")]
    window = train_window(config)
    if window not in TRAIN_WINDOWS:
        allowed = ", ".join(TRAIN_WINDOWS)
        return [("train_window", f"train_window={window!r}: allowed values are {allowed}")]
    if objective == "prefix":
        if window != "last":
            message = (
                "applies to train_objective='sequence'; the prefix regime already trains on "
                "every prefix (use train_window='last')"
            )
            return [("train_window", f"train_window={window!r} {message}")]
        return []
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
    ``sequence`` (one per user with a training target)."""
    return int(np.unique(dataset.inter_feat[dataset.uid_field].numpy()).size)


def training_samples(config, dataset) -> int:
    """Training samples per epoch of ``dataset`` (the training split) under ``config``'s
    regime: every prefix (``prefix``) or one per user (``sequence``)."""
    if is_sequence(config):
        return user_count(dataset)
    return int(dataset.inter_num)


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
    "training_samples",
    "user_count",
]

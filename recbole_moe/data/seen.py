"""Seen-item removal (``eval_filter_seen``): each user's items before an evaluated target.

RecBole's full-sort evaluation of sequential models ranks every item, the user's own history
included. Most published sequential results remove the items a user has already interacted
with. With ``eval_filter_seen: True`` each evaluated row ranks every item except those of the
user's whole history before the target: the training items at validation, the training items
and the validation item at test. That is the whole history, not the ``MAX_ITEM_LIST_LENGTH``
window the model reads. A target that is itself in that history (a repeat) keeps its score,
and the number of such targets is logged.

Under leave-one-out (``LS``) each split holds at most one row per user and a user's rows are
in time order across the splits, so a row's history is the user's items in the splits before
its own. They are read with ``inter_matrix`` (every target plus each history's first item),
which RecBole's sequential dataset and the lean one both implement.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import reduce
from logging import getLogger
from typing import Any

import numpy as np
import torch
from recbole.utils import ModelType


def full_sort_evaluation(config) -> bool:
    """Whether validation and test rank every item (``eval_args`` mode ``full``)."""
    modes = (config["eval_args"] or {}).get("mode") or "full"
    return set(modes.values() if isinstance(modes, dict) else [modes]) == {"full"}


def seen_problem(config) -> str | None:
    """Why ``eval_filter_seen: True`` cannot be used with ``config`` (``None``: it can)."""
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return (
            f"model {config['model']} is not sequential (RecBole already removes the "
            "history of general models from their ranking)"
        )
    eval_args = config["eval_args"] or {}
    if not full_sort_evaluation(config):
        return f"it needs full-sort evaluation (eval_args mode 'full'), not {eval_args['mode']!r}"
    if config["benchmark_filename"] is not None:
        return "it needs RecBole's leave-one-out split, not pre-split benchmark_filename files"
    split = eval_args.get("split") or {}
    if list(split) != ["LS"]:
        return f"it needs the leave-one-out split (eval_args split 'LS'), not {split}"
    return None


def ragged_pairs(
    indptr: torch.Tensor, items: torch.Tensor, users: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, items)`` ``[P]``: for each row ``b`` of ``users`` ``[B]``, every item of user
    ``users[b]`` in the CSR structure ``indptr`` / ``items``, rows in order."""
    start, end = indptr[users], indptr[users + 1]  # [B]
    counts = end - start
    rows = torch.repeat_interleave(torch.arange(len(users)), counts)  # [P]
    first = torch.cumsum(counts, 0) - counts  # [B] offset of each row's block in the output
    offsets = torch.arange(int(counts.sum())) - first[rows] + start[rows]  # [P]
    return rows, items[offsets]


def history_pairs(histories: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, items)`` ``[P]`` of given histories (one sequence of item ids per row)."""
    lengths = torch.tensor([len(h) for h in histories], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(histories)), lengths)
    items = torch.cat([torch.as_tensor(np.asarray(h), dtype=torch.long) for h in histories])
    return rows, items


class SeenItems:
    """The items of every user in the splits before an evaluated one, built on first use.

    Args:
        earlier: the splits before the evaluated one (train; train and valid), or every split
            (a user's whole known history, for ``recommend``).
        evaluated: the evaluated split (its targets are checked for repeats), or ``None``.
        name: the split's name in the log (``valid``, ``test``).
    """

    def __init__(self, earlier: Sequence[Any], evaluated: Any = None, name: str = "") -> None:
        self.earlier, self.evaluated, self.name = list(earlier), evaluated, name
        self._indptr: torch.Tensor | None = None
        self._items: torch.Tensor | None = None
        #: ``(repeat targets, evaluated rows)`` of the evaluated split, once built.
        self.repeats: tuple[int, int] | None = None

    def _build(self) -> None:
        # [n_users, n_items]: every target of the splits, plus each history's first item
        matrix = reduce(operator.add, (split.inter_matrix(form="csr") for split in self.earlier))
        matrix.sum_duplicates()
        self._indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        self._items = torch.from_numpy(matrix.indices.astype(np.int64))
        if self.evaluated is None:
            return
        feat = self.evaluated.inter_feat
        users, targets = feat[self.evaluated.uid_field], feat[self.evaluated.iid_field]
        rows, items = ragged_pairs(self._indptr, self._items, users)
        repeated = torch.zeros(len(users), dtype=torch.bool)
        repeated[rows[items == targets[rows]]] = True
        self.repeats = (int(repeated.sum()), len(users))
        getLogger().info(
            f"eval_filter_seen: {self.repeats[0]} of {self.repeats[1]} {self.name} targets are "
            "items the user has seen before (repeats); they stay in the ranking"
        )

    def pairs(
        self, users: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)`` ``[P]`` to remove from a ``[B, n_items]`` score matrix whose row
        ``b`` is user ``users[b]`` ``[B]``; with ``targets`` ``[B]`` each row's own target is
        left in (a repeat target is ranked)."""
        if self._indptr is None:
            self._build()
        rows, items = ragged_pairs(self._indptr, self._items, users.cpu().long())
        if targets is not None:
            keep = items != targets.cpu().long()[rows]
            rows, items = rows[keep], items[keep]
        return rows, items


def attach_seen_items(train_data, valid_data, test_data) -> None:
    """Give the evaluation loaders their seen items (``seen_items``; built only when an
    evaluation removes them): validation the training split's, test the training and
    validation splits'."""
    train, valid = train_data._dataset, valid_data._dataset
    valid_data.seen_items = SeenItems([train], valid, "valid")
    test_data.seen_items = SeenItems([train, valid], test_data._dataset, "test")


def remove_seen(scores: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``scores`` ``[B, n_items]`` with the ``(rows, items)`` pairs set to ``-inf`` (in place)."""
    rows, items = pairs
    scores[rows.to(scores.device), items.to(scores.device)] = -torch.inf
    return scores


__all__ = [
    "SeenItems",
    "attach_seen_items",
    "full_sort_evaluation",
    "history_pairs",
    "ragged_pairs",
    "remove_seen",
    "seen_problem",
]

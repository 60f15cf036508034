"""Training samples of ``train_objective: sequence``: one whole sequence per user per epoch.

Built on the lean path (:class:`~recbole_moe.data.lean.LeanSequentialDataset`), which keeps
each history once. A user's sample is their last training row (the last item before the
validation and test items): its history (the ``MAX_ITEM_LIST_LENGTH`` items before it) is the
input and the items one step later are the targets, so a model with a loss at every position
learns from every prefix of that window in one pass. Validation and test rows are never part
of the training split, so their items are neither inputs nor targets.

With ``train_window: random`` the sample of a user whose training history is longer than the
window is instead the window ending at a training row drawn anew each epoch, uniformly among the
rows with a full ``MAX_ITEM_LIST_LENGTH`` history (:func:`window_rows`). With ``train_window:
all`` it has several samples, the windows ending every ``train_window_stride`` rows back from its
last row until one starts at the beginning of its history (:func:`all_window_rows`), so every
training target is a target once per epoch (more than once where windows overlap).
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_moe.data.lean import TARGET_FIELD, LeanSequentialDataset, LeanTrainDataLoader
from recbole_moe.objective import (
    TARGET_LIST_FIELD,
    is_sequence,
    train_window,
    train_window_stride,
    windows_per_user,
)


def last_rows_per_user(dataset: LeanSequentialDataset) -> torch.Tensor:
    """Index of each user's last training row (largest target position), ``[n_users]``,
    ordered by user id."""
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    target = dataset.inter_feat[TARGET_FIELD].numpy()
    order = np.lexsort((target, uid))  # by user, then by position in the history
    sorted_uid = uid[order]
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = sorted_uid[1:] != sorted_uid[:-1]
    return torch.from_numpy(order[is_last].astype(np.int64))


def window_rows(
    dataset: LeanSequentialDataset, last_rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training rows a user's window may end at, for ``train_window: random``.

    A row whose history fills the window (``MAX_ITEM_LIST_LENGTH`` items) ends a full window of
    ``MAX_ITEM_LIST_LENGTH + 1`` training items; a user with no such row has only its last row
    (its whole, shorter training history). ``last_rows``: :func:`last_rows_per_user`.

    Returns:
        ``(rows [R], first [U], count [U])``: the rows grouped by user in user-id order (the
        order of :func:`last_rows_per_user`), and each user's first position and number of rows
        in ``rows``.
    """
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    target = dataset.inter_feat[TARGET_FIELD].numpy()
    length = dataset.inter_feat[dataset.item_list_length_field].numpy()
    is_last = np.zeros(len(uid), dtype=bool)
    is_last[last_rows.numpy()] = True
    eligible = np.flatnonzero((length >= dataset._lean_max_len) | is_last)
    order = eligible[np.lexsort((target[eligible], uid[eligible]))]  # by user, then position
    _, first, count = np.unique(uid[order], return_index=True, return_counts=True)
    return (
        torch.from_numpy(order.astype(np.int64)),
        torch.from_numpy(first.astype(np.int64)),
        torch.from_numpy(count.astype(np.int64)),
    )


def all_window_rows(dataset: LeanSequentialDataset, stride: int) -> torch.Tensor:
    """The rows ending the windows of ``train_window: all``, ``[S]``, by user then position.

    A user's ``n`` training rows hold the targets at positions ``1..n`` of its history; the
    windows end at positions ``n, n - stride, ...``, as many as :func:`windows_per_user` counts
    (the last window ends at position ``<= MAX_ITEM_LIST_LENGTH``, so it starts at the history's
    first item).
    """
    uid = dataset.inter_feat[dataset.uid_field].numpy()
    target = dataset.inter_feat[TARGET_FIELD].numpy()
    order = np.lexsort((target, uid))  # by user, then by position in the history
    _, first, count = np.unique(uid[order], return_index=True, return_counts=True)
    windows = windows_per_user(count, dataset._lean_max_len, stride)  # [U]
    user = np.repeat(np.arange(len(count)), count)  # [R]: each sorted row's user
    back = (first + count)[user] - 1 - np.arange(len(order))  # [R]: rows before the last
    keep = (back % stride == 0) & (back < windows[user] * stride)
    return torch.from_numpy(order[keep].astype(np.int64))


class SequenceTrainDataLoader(LeanTrainDataLoader):
    """Training loader of ``train_objective: sequence``.

    An epoch is one shuffled pass over the users (``train_batch_size`` users a batch, drawn
    from the loader's generator, so resuming restores the order). A batch holds ``item_id_list``
    ``[B, W]``, ``item_length`` ``[B]`` and :data:`TARGET_LIST_FIELD` ``[B, W]``, trimmed to its
    longest sequence ``W``. RecBole's per-batch transform (BERT4Rec's masking) is not applied:
    the sequence objective masks whole sequences itself.

    Under ``train_window: random`` each epoch first draws every user's window end from the same
    generator (:func:`window_rows`), so a resumed run draws the same windows; so do all ranks of
    a data-parallel run, and the draw is made in this process before worker processes start.
    Under ``train_window: all`` an epoch is one shuffled pass over every window
    (:func:`all_window_rows`).
    """

    def __init__(self, config, dataset, sampler, shuffle=False):
        window = train_window(config)
        self._rows = last_rows_per_user(dataset)  # [U]: the epoch's window end of each user
        self._windows = window_rows(dataset, self._rows) if window == "random" else None
        if window == "all":
            self._rows = all_window_rows(dataset, train_window_stride(config))  # [S]
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _count_samples(self, dataset) -> int:
        return len(self._rows)

    def _samples(self, index) -> Interaction:
        """Whole-sequence samples of the users at positions ``index`` of the user list."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return self._dataset.sequence_rows(self._rows[index], TARGET_LIST_FIELD)

    def collate_fn(self, index):
        return self._samples(index)

    def _draw_windows(self) -> None:
        """Under ``train_window: random``, draw this epoch's window end of every user."""
        if self._windows is not None:
            rows, first, count = self._windows
            pick = torch.rand(len(count), generator=self.generator, dtype=torch.float64) * count
            self._rows = rows[first + torch.minimum(pick.long(), count - 1)]  # [U]

    def __iter__(self):
        if not self.config["single_spec"] or self.config["worker"]:
            self._draw_windows()  # before torch's iterator copies this loader to its workers
            return super().__iter__()
        return self._batches()

    def _batches(self):
        n = self.sample_size
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self._draw_windows()
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.step):
            yield self._samples(order[start : start + self.step])
        if self.shuffle:
            torch.randperm(n, generator=self.generator)


def train_loader_class(config) -> type:
    """The lean path's training loader for ``config``'s ``train_objective``."""
    return SequenceTrainDataLoader if is_sequence(config) else LeanTrainDataLoader


__all__ = [
    "SequenceTrainDataLoader",
    "all_window_rows",
    "last_rows_per_user",
    "train_loader_class",
    "window_rows",
]

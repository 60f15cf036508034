"""Training samples of ``train_objective: sequence``: one whole sequence per user per epoch.

Built on the lean path (:class:`~recbole_moe.data.lean.LeanSequentialDataset`), which keeps
each history once. A user's sample is their last training row (the last item before the
validation and test items): its history (the ``MAX_ITEM_LIST_LENGTH`` items before it) is the
input and the items one step later are the targets, so a model with a loss at every position
learns from every prefix of that window in one pass. Validation and test rows are never part
of the training split, so their items are neither inputs nor targets.

With ``train_window: random`` the sample of a user whose training history is longer than the
window is instead the window ending at a training row drawn anew each epoch, uniformly among the
rows with a full ``MAX_ITEM_LIST_LENGTH`` history (:func:`window_rows`).
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_moe.data.lean import TARGET_FIELD, LeanSequentialDataset, LeanTrainDataLoader
from recbole_moe.objective import TARGET_LIST_FIELD, is_sequence, train_window


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


class SequenceTrainDataLoader(LeanTrainDataLoader):
    """Training loader of ``train_objective: sequence``.

    An epoch is one shuffled pass over the users (``train_batch_size`` users a batch, drawn
    from the loader's generator, so resuming restores the order). A batch holds ``item_id_list``
    ``[B, W]``, ``item_length`` ``[B]`` and :data:`TARGET_LIST_FIELD` ``[B, W]``, trimmed to its
    longest sequence ``W``. RecBole's per-batch transform (BERT4Rec's masking) is not applied:
    the sequence objective masks whole sequences itself.

    Under ``train_window: random`` each epoch first draws every user's window end from the same
    generator (:func:`window_rows`), so a resumed run draws the same windows.
    """

    def __init__(self, config, dataset, sampler, shuffle=False):
        self._rows = last_rows_per_user(dataset)  # [U]: the epoch's window end of each user
        random_window = train_window(config) == "random"
        self._windows = window_rows(dataset, self._rows) if random_window else None
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _count_samples(self, dataset) -> int:
        return len(self._rows)

    def _samples(self, index) -> Interaction:
        """Whole-sequence samples of the users at positions ``index`` of the user list."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return self._dataset.sequence_rows(self._rows[index], TARGET_LIST_FIELD)

    def collate_fn(self, index):
        return self._samples(index)

    def _batches(self):
        n = self.sample_size
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if self._windows is not None:
            rows, first, count = self._windows
            pick = (torch.rand(n, generator=self.generator, dtype=torch.float64) * count).long()
            self._rows = rows[first + torch.minimum(pick, count - 1)]  # [U]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.step):
            yield self._samples(order[start : start + self.step])
        if self.shuffle:
            torch.randperm(n, generator=self.generator)


def train_loader_class(config) -> type:
    """The lean path's training loader for ``config``'s ``train_objective``."""
    return SequenceTrainDataLoader if is_sequence(config) else LeanTrainDataLoader


__all__ = ["SequenceTrainDataLoader", "last_rows_per_user", "train_loader_class", "window_rows"]

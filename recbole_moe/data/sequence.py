"""Training samples of ``train_objective: sequence``: one whole sequence per user per epoch.

Built on the lean path (:class:`~recbole_moe.data.lean.LeanSequentialDataset`), which keeps
each history once. A user's sample is their last training row (the last item before the
validation and test items): its history (the ``MAX_ITEM_LIST_LENGTH`` items before it) is the
input and the items one step later are the targets, so a model with a loss at every position
learns from every prefix of that window in one pass. Validation and test rows are never part
of the training split, so their items are neither inputs nor targets.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_moe.data.lean import TARGET_FIELD, LeanSequentialDataset, LeanTrainDataLoader
from recbole_moe.objective import TARGET_LIST_FIELD, is_sequence


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


class SequenceTrainDataLoader(LeanTrainDataLoader):
    """Training loader of ``train_objective: sequence``.

    An epoch is one shuffled pass over the users (``train_batch_size`` users a batch, drawn
    from the loader's generator, so resuming restores the order). A batch holds ``item_id_list``
    ``[B, W]``, ``item_length`` ``[B]`` and :data:`TARGET_LIST_FIELD` ``[B, W]``, trimmed to its
    longest sequence ``W``. RecBole's per-batch transform (BERT4Rec's masking) is not applied:
    the sequence objective masks whole sequences itself.
    """

    def __init__(self, config, dataset, sampler, shuffle=False):
        self._rows = last_rows_per_user(dataset)
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
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.step):
            yield self._samples(order[start : start + self.step])
        if self.shuffle:
            torch.randperm(n, generator=self.generator)


def train_loader_class(config) -> type:
    """The lean path's training loader for ``config``'s ``train_objective``."""
    return SequenceTrainDataLoader if is_sequence(config) else LeanTrainDataLoader


__all__ = ["SequenceTrainDataLoader", "last_rows_per_user", "train_loader_class"]

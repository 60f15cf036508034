"""RecBole's evaluation ``Collector`` with the top-k hits found in ``O(users · k)``.

For the top-k metrics (HR, NDCG, MRR, Recall, Precision, ...) RecBole's
``Collector.eval_batch_collect`` builds a dense ``[users, n_items]`` int32 matrix of the
positive items (``zeros_like`` of the scores, a scatter, then a row sum that converts it to
int64) only to read it back at the ``k`` recommended items and to count each user's positives.
With a large catalogue building that matrix is a large part of a validation pass
(``benchmarks/eval_speed.py`` measures the pass with each collector).

:class:`TopkCollector` computes the same ``[users, k + 1]`` result (hits at each of the ``k``
ranks, then the number of positives) from the positive pairs themselves: each distinct
``(user, item)`` pair is compared with its user's ``k`` recommended items. The top-k ranking is
RecBole's own ``torch.topk``, computed once when both the recommended items and the hits are
needed, so ties are broken exactly as in RecBole and every metric is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from recbole.evaluator import Collector
from torch import Tensor


def topk_hits(topk_idx: Tensor, positive_u: Tensor, positive_i: Tensor) -> Tensor:
    """RecBole's ``rec.topk`` rows without the dense positive-item matrix.

    Args:
        topk_idx: ``[U, k]`` recommended items of each user (the batch's rows), best first.
        positive_u: ``[P]`` row of each positive item; positive_i: ``[P]`` its item id. A pair
            listed twice counts once, as in RecBole's matrix.

    Returns:
        ``[U, k + 1]`` int64: 1 where the item at rank ``j`` is a positive of the user, then
        the user's number of distinct positives.
    """
    users, k = topk_idx.shape
    pairs = torch.stack((positive_u.long(), positive_i.long()), dim=1)  # [P, 2]
    user, item = torch.unique(pairs, dim=0).unbind(1)  # [P'] distinct pairs
    counts = torch.bincount(user, minlength=users).unsqueeze(1)  # [U, 1]
    matches = (topk_idx[user] == item.unsqueeze(1)).long()  # [P', k]
    hits = torch.zeros(users, k, dtype=torch.long, device=topk_idx.device)
    hits.index_add_(0, user, matches)
    return torch.cat((hits, counts.to(hits.dtype)), dim=1)


class TopkCollector(Collector):
    """RecBole's ``Collector`` whose ``rec.topk`` rows come from :func:`topk_hits`."""

    def eval_batch_collect(
        self,
        scores_tensor: Tensor,
        interaction,
        positive_u: Tensor,
        positive_i: Tensor,
    ) -> None:
        """Collect a batch: ``scores_tensor`` ``[U, n_items]``, positives as ``[P]`` row and
        item indices. The top-k parts are computed here, the rest by RecBole."""
        need_items, need_topk = self.register.need("rec.items"), self.register.need("rec.topk")
        if not (need_items or need_topk):
            return super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        _, topk_idx = torch.topk(scores_tensor, max(self.topk), dim=-1)  # [U, k]
        if need_items:
            self.data_struct.update_tensor("rec.items", topk_idx)
        if need_topk:
            self.data_struct.update_tensor(
                "rec.topk",
                topk_hits(topk_idx, positive_u.to(topk_idx.device), positive_i.to(topk_idx.device)),
            )
        # everything else (mean rank, scores, labels) as RecBole collects it
        with _without(self.register, ("rec.items", "rec.topk")):
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)


@contextlib.contextmanager
def _without(register, keys: tuple[str, ...]) -> Iterator[None]:
    """RecBole's ``Register`` (one boolean attribute per needed resource) with ``keys`` off."""
    saved = {key: register.__dict__[key] for key in keys if key in register.__dict__}
    for key in keys:
        setattr(register, key, False)
    try:
        yield
    finally:
        for key in keys:
            delattr(register, key)
        register.__dict__.update(saved)


__all__ = ["TopkCollector", "topk_hits"]

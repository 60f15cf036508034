"""Next-item losses at every position of a sequence (the ``sequence`` training regime).

Both losses average over the non-padding positions of the whole batch (a position counts
when its target is not the padding item 0), so one user's loss is the mean of the per-position
losses, i.e. the mean of RecBole's prefix-mode losses over that user's prefixes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_negatives(
    n_items: int, n: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """``[n]`` item ids drawn uniformly from ``1 .. n_items - 1`` (never the padding item)."""
    return torch.randint(1, n_items, (n,), device=device, generator=generator)


def position_cross_entropy(
    states: Tensor,
    targets: Tensor,
    item_weight: Tensor,
    negatives: Tensor | None = None,
    item_bias: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of the next item at every non-padding position.

    Args:
        states: ``[B, L, D]`` representation at every position.
        targets: ``[B, L]`` next item of every position, 0 at padding (no loss there).
        item_weight: ``[V, D]`` output item embeddings (scores are dot products).
        negatives: ``None`` for the softmax over all ``V`` items, or ``[N]`` item ids shared by
            every position: a sampled softmax over the target and the ``N`` negatives, where a
            negative equal to the position's target is masked out (the positive is never its
            own negative). Uniform samples get no log-probability correction: it would shift
            every negative logit by the same constant ``log(V / N)``.
        item_bias: optional ``[V]`` per-item score bias (BERT4Rec's output bias).

    Returns:
        scalar mean loss over the non-padding positions.
    """
    keep = targets > 0  # [B, L]
    hidden = states[keep]  # [T, D]
    target = targets[keep]  # [T]
    if negatives is None:
        logits = hidden @ item_weight.t()  # [T, V]
        if item_bias is not None:
            logits = logits + item_bias
        return F.cross_entropy(logits, target)
    positive = (hidden * item_weight[target]).sum(-1, keepdim=True)  # [T, 1]
    negative = hidden @ item_weight[negatives].t()  # [T, N]
    if item_bias is not None:
        positive = positive + item_bias[target].unsqueeze(-1)
        negative = negative + item_bias[negatives]
    negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # [T, 1 + N]
    return F.cross_entropy(logits, torch.zeros_like(target))


__all__ = ["position_cross_entropy", "sample_negatives"]

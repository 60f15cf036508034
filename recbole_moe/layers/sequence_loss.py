"""Next-item losses at every position of a sequence (the ``sequence`` training regime).

Both losses average over the non-padding positions of the whole batch (a position counts
when its target is not the padding item 0), so one user's loss is the mean of the per-position
losses, i.e. the mean of RecBole's prefix-mode losses over that user's prefixes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recbole_moe.layers.shape_buckets import cpu_bf16_autocast, pad_rows, round_up


def sample_negatives(
    n_items: int, n: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """``[n]`` item ids drawn uniformly from ``1 .. n_items - 1`` (never the padding item)."""
    return torch.randint(1, n_items, (n,), device=device, generator=generator)


#: The chunked loss pads the item axis to a multiple of this many items (16 float32 values: one
#: 64-byte cache line, one AVX-512 register).
ITEM_STEP = 16

#: The item table's gradient accumulated as ``hidden.T @ grad`` (True) or ``grad.T @ hidden``
#: (False, the earlier layout; ``benchmarks/loss_layout.py`` switches it to compare).
WEIGHT_GRAD_HT_G = True
#: The chunks' ``[C, Vp]`` logits written into one buffer allocated per call (True) or a new
#: tensor per chunk (False, as before; ``benchmarks/loss_layout.py`` switches it to compare).
REUSE_LOGITS_BUFFER = True

_CHUNK_ELEMENTS = 1 << 22  # logits held at once by linear_cross_entropy: 16 MiB in float32


def _chunk_rows(n_items: int) -> int:
    return max(64, _CHUNK_ELEMENTS // max(n_items, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    r"""Mean cross-entropy of ``hidden @ weight.T (+ bias)`` with its gradient computed in the
    forward pass, a chunk of rows at a time.

    For one row, d loss / d logits = softmax(logits) - onehot(target), so each chunk's logits
    are turned into that gradient in place (one exp per logit) and multiplied straight back
    into the gradients of ``hidden``, ``weight`` and ``bias``. Neither the ``[T, V]`` logits
    nor a ``[T, V]`` gradient is kept for the backward pass, which only scales the stored
    gradients by the incoming one.

    The item axis is padded to ``Vp``, a multiple of ``item_step`` (zero item rows whose
    logits are set to ``-inf``, so their probability and gradient are exactly 0), the
    weight's gradient is accumulated in place as ``hidden.T @ grad`` (``[D, Vp]``, transposed
    once at the end), and without autocast every chunk's logits are written into one
    ``[C, Vp]`` buffer: with ``V`` not a multiple of 16 the rows of the ``[C, V]`` products are
    not aligned to a cache line, and a new 16 MiB tensor per chunk cost page faults
    (``benchmarks/loss_layout.py`` compares the layouts, with one loss call per batch:
    ``SequenceObjective.chunked``).
    """

    @staticmethod
    def forward(ctx, hidden, weight, target, bias, chunk_rows, item_step):
        need_h, need_w, _, need_b, _, _ = ctx.needs_input_grad
        n = hidden.shape[0]
        n_items = weight.shape[0]
        acc = torch.promote_types(weight.dtype, torch.float32)  # float32, or float64 inputs
        padded = round_up(n_items, item_step)
        weight_p = F.pad(weight, (0, 0, 0, padded - n_items))  # [Vp, D], zero rows
        bias_p = None if bias is None else F.pad(bias.to(acc), (0, padded - n_items))
        total = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_wt = torch.zeros((weight.shape[1], padded), dtype=acc, device=weight.device)
        grad_wt = grad_wt if need_w else None  # [D, Vp]
        grad_b = torch.zeros(padded, dtype=acc, device=hidden.device) if need_b else None
        weight_acc = weight_p.to(acc)
        buffer = None
        float_products = hidden.dtype == weight.dtype == acc and not cpu_bf16_autocast(
            hidden.device
        )  # no autocast: products may write into existing tensors
        if REUSE_LOGITS_BUFFER and float_products:
            buffer = hidden.new_empty((min(chunk_rows, n), padded), dtype=acc)
        for start in range(0, n, chunk_rows):  # chunks of rows, not tokens one by one
            h = hidden[start : start + chunk_rows]  # [C, D]
            y = target[start : start + chunk_rows]  # [C]
            if buffer is not None:  # [C, Vp]: one allocation per call, not one per chunk
                logits = torch.mm(h, weight_p.t(), out=buffer[: h.shape[0]])
            else:  # float32 also under bf16 autocast (rows padded there: one shape per chunk)
                logits = (pad_rows(h) @ weight_p.t())[: h.shape[0]].to(acc)
            if bias_p is not None:
                logits += bias_p
            logits[:, n_items:] = float("-inf")  # padded items: probability 0
            top = logits.amax(dim=-1, keepdim=True)  # [C, 1]
            total += (top.squeeze(1) - logits.gather(1, y.unsqueeze(1)).squeeze(1)).sum()
            probs = logits.sub_(top).exp_()  # unnormalised, in place
            norm = probs.sum(dim=-1, keepdim=True)  # [C, 1]
            total += norm.log().sum()  # loss = log Σ exp(z - top) + top - z_y
            if grad_h is None and grad_wt is None and grad_b is None:
                continue
            grad = probs.div_(norm)  # softmax, [C, Vp]
            grad[torch.arange(y.shape[0], device=y.device), y] -= 1.0  # softmax - onehot
            if grad_h is not None and float_products:
                torch.mm(grad, weight_acc, out=grad_h[start : start + chunk_rows])
            elif grad_h is not None:
                grad_h[start : start + chunk_rows] = grad @ weight_acc
            if grad_wt is not None and WEIGHT_GRAD_HT_G and float_products:
                grad_wt.addmm_(h.t(), grad)  # accumulated in place
            elif grad_wt is not None and WEIGHT_GRAD_HT_G:
                grad_wt += h.to(acc).t() @ grad
            elif grad_wt is not None:
                grad_wt += (grad.t() @ h.to(acc)).t()
            if grad_b is not None:
                grad_b += grad.sum(dim=0)
        grad_w = None if grad_wt is None else grad_wt[:, :n_items].t().contiguous()  # [V, D]
        grad_b = None if grad_b is None else grad_b[:n_items]
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.n = n
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        scale = grad_output / ctx.n
        grads = [next(saved) * scale if present else None for present in ctx.present]
        if grads[1] is not None:
            grads[1] = grads[1].to(ctx.dtypes[0])
        if grads[2] is not None:
            grads[2] = grads[2].to(ctx.dtypes[1])
        return grads[0], grads[1], None, grads[2], None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    chunk_rows: int | None = None,
    item_step: int = ITEM_STEP,
) -> Tensor:
    """Mean cross-entropy over all items of the scores ``hidden @ weight.T (+ bias)``.

    Equal to ``F.cross_entropy(hidden @ weight.t() + bias, target)`` up to float rounding,
    but computed in chunks of ``chunk_rows`` rows (default: about 4M logits per chunk) with
    the gradient formed in the forward pass, so no ``[T, V]`` tensor outlives its chunk.

    Args:
        hidden: ``[T, D]``; weight: ``[V, D]``; target: ``[T]`` item ids; bias: ``[V]``.
        item_step: the item axis of each chunk's logits is padded to a multiple of this
            (1: no padding); the result does not depend on it beyond float rounding.

    Returns:
        scalar mean loss (float32).
    """
    if hidden.shape[0] == 0:  # no position to score: F.cross_entropy's own result (nan)
        logits = hidden @ weight.t()
        return F.cross_entropy(logits if bias is None else logits + bias, target)
    rows = chunk_rows or _chunk_rows(weight.shape[0])
    if item_step < 1:
        raise ValueError(f"item_step must be a positive integer, got {item_step!r}")
    return _LinearCrossEntropy.apply(hidden, weight, target, bias, rows, item_step)


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
        return linear_cross_entropy(hidden, item_weight, target, item_bias)
    positive = (hidden * item_weight[target]).sum(-1, keepdim=True)  # [T, 1]
    negative = hidden @ item_weight[negatives].t()  # [T, N]
    if item_bias is not None:
        positive = positive + item_bias[target].unsqueeze(-1)
        negative = negative + item_bias[negatives]
    negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    logits = torch.cat([positive, negative], dim=1)  # [T, 1 + N]
    return F.cross_entropy(logits, torch.zeros_like(target))


__all__ = ["linear_cross_entropy", "position_cross_entropy", "sample_negatives"]

"""Dropout with a cheaper random mask on the CPU (``dropout_impl: fast``).

``torch.nn.Dropout`` draws its mask with ``bernoulli_``: one call of the random generator per
element, on a CPU a large part of a training step after the matrix products
(``benchmarks/step_speed.py`` lists the top operations). :class:`FastDropout` draws one
64-bit random word per four elements and compares each 16-bit lane with a threshold:

    keep = u < t,  u ~ Uniform{0, …, 65535},  t = round((1 - p) · 65536)
    y = x · keep · 65536 / t

so an element is kept with probability t / 65536 (within 7.7e-6 of 1 - p) and scaled by the
inverse of that probability: E[y] = x exactly, as for ``nn.Dropout``. The comparison writes
the mask as 0/1 in ``x``'s dtype, kept for the backward pass, and both passes multiply by it
(``nn.Dropout`` keeps booleans; on this CPU multiplying by them costs a conversion each time,
and ``torch.where`` is slower still). On CUDA, where torch's dropout is a fused kernel, and for
p = 0 or p = 1, :class:`FastDropout` is ``nn.Dropout``.

:func:`make_dropout` builds the dropout module ``dropout_impl`` names; our layers call it when
they are built (RecBole's own models get :class:`FastDropout` after construction,
:mod:`recbole_moe.layers.recbole_models`). A dropout module has no parameters or buffers, so
checkpoints are the same either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DROPOUT_IMPLS = ("torch", "fast")

#: Values of a 16-bit lane: the keep probability is a multiple of 1 / LEVELS.
LEVELS = 1 << 16


def keep_threshold(p: float) -> int:
    """t with keep probability t / 65536 closest to ``1 - p``."""
    return round((1.0 - p) * LEVELS)


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    device: torch.device,
    dtype: torch.dtype = torch.bool,
) -> Tensor:
    """Mask of ``shape``, each element kept (True, or 1 in a floating ``dtype``) with probability
    ``keep_threshold(p) / 65536``, independently, from one 64-bit draw of torch's default
    generator per four elements. A floating mask is written by the comparison itself: the same
    elements as the boolean one, without a boolean-to-float conversion."""
    numel = math.prod(shape)
    words = torch.randint(
        torch.iinfo(torch.int64).min,
        torch.iinfo(torch.int64).max,
        ((numel + 3) // 4,),
        dtype=torch.int64,
        device=device,
    )
    lanes = words.view(torch.int16)[:numel].view(shape)  # uniform on [-32768, 32767]
    threshold = keep_threshold(p) - LEVELS // 2
    if dtype == torch.bool:
        return lanes < threshold
    return torch.lt(lanes, threshold, out=torch.empty(shape, dtype=dtype, device=device))


def keep_scale(p: float) -> float:
    """65536 / t: the inverse of the keep probability of :func:`keep_mask`."""
    return LEVELS / keep_threshold(p)


class _Masked(torch.autograd.Function):
    """y = x · mask; the mask is kept for the backward pass.

    On the CPU a multiply is far cheaper than ``torch.where(mask, x, 0)`` on a boolean mask
    (``benchmarks/mask_apply.py`` compares them). A mask in ``x``'s floating
    dtype multiplies directly (the fast path's masks are made so by :func:`keep_mask`); a
    boolean one is read as ``uint8`` (a view), which the multiply converts. As in
    ``nn.Dropout``, which also multiplies by its mask, a dropped inf or NaN stays NaN.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(mask)
        return x * _factor(mask)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * _factor(mask), None


def _factor(mask: Tensor) -> Tensor:
    """``mask`` as a multiplier: a boolean mask's bytes as ``uint8``, any other unchanged."""
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` times ``mask`` (same shape; bool, or 0/1 in ``x``'s dtype): the elements where it
    is False (0) set to 0, unscaled."""
    return _Masked.apply(x, mask)


def uses_fast_mask(x: Tensor, p: float) -> bool:
    """Whether :func:`fast_dropout` of ``x`` with drop probability ``p`` draws :func:`keep_mask`
    (a CPU tensor, 0 < p, and a keep probability above 0), rather than being the identity or
    ``F.dropout``."""
    return x.device.type == "cpu" and 0.0 < p < 1.0 and keep_threshold(p) > 0


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Dropout of ``x`` (any shape) with drop probability ``p``: ``x · keep_mask · keep_scale``;
    ``F.dropout`` on CUDA and for p = 1."""
    if not training or p == 0.0:
        return x
    if not uses_fast_mask(x, p):
        return F.dropout(x, p, training)
    return masked(x, keep_mask(x.shape, p, x.device, x.dtype)).mul_(keep_scale(p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with the mask of :func:`keep_mask` (same arguments, no parameters).

    input ``[*]`` -> output ``[*]``; the identity in eval mode."""

    def forward(self, input: Tensor) -> Tensor:
        return fast_dropout(input, self.p, self.training)


def dropout_impl(config) -> str:
    """``config``'s ``dropout_impl`` (``torch`` when unset)."""
    return config["dropout_impl"] or "torch"


def check_dropout_impl(impl: str) -> None:
    """Raises ``ValueError`` unless ``impl`` is one of :data:`DROPOUT_IMPLS`."""
    if impl not in DROPOUT_IMPLS:
        raise ValueError(f"dropout_impl={impl!r}: allowed values are {', '.join(DROPOUT_IMPLS)}")


def make_dropout(p: float, impl: str = "torch") -> nn.Dropout:
    """A dropout of probability ``p`` as ``impl`` says: ``nn.Dropout`` (``torch``) or
    :class:`FastDropout` (``fast``)."""
    check_dropout_impl(impl)
    return FastDropout(p) if impl == "fast" else nn.Dropout(p)


__all__ = [
    "DROPOUT_IMPLS",
    "FastDropout",
    "dropout_impl",
    "fast_dropout",
    "keep_mask",
    "keep_scale",
    "keep_threshold",
    "make_dropout",
    "masked",
    "check_dropout_impl",
    "uses_fast_mask",
]

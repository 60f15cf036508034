"""GELU of the feed-forward layers as one fused operation (``gelu_impl: fused``).

RecBole's ``FeedForward.gelu`` computes the exact (erf) GELU as five tensor operations,
``x * 0.5 * (1 + erf(x / sqrt(2)))``, each a pass over the ``[B, L, inner]`` activations, and
autograd keeps their intermediates for a backward pass of as many more. ``F.gelu`` is the same
function in one fused kernel (and one for its gradient), one pass where RecBole's makes five
(``benchmarks/gelu_speed.py`` measures both); the values agree to float rounding
(``tests/test_activation.py``).

:func:`gelu_function` is the GELU ``gelu_impl`` names; our feed-forward layers take it when
they are built (:class:`recbole_moe.layers.transformer.FeedForward`, and through it HyMoERec's
routed experts); RecBole's own models get it after construction
(:mod:`recbole_moe.layers.recbole_models`). An activation is a plain attribute, not a parameter
or buffer: checkpoints are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from recbole.model.layers import FeedForward
from torch import Tensor

GELU_IMPLS = ("fused", "recbole")


def recbole_gelu(x: Tensor) -> Tensor:
    """RecBole's ``FeedForward.gelu``, as a function: ``x * 0.5 * (1 + erf(x / sqrt(2)))``."""
    return FeedForward.gelu(None, x)


def is_gelu(fn: Callable | None) -> bool:
    """Whether ``fn`` is one of the two exact GELUs: ``F.gelu`` or RecBole's (bound or not)."""
    return fn is F.gelu or fn is recbole_gelu or getattr(fn, "__func__", None) is FeedForward.gelu


def gelu_impl(config) -> str:
    """``config``'s ``gelu_impl`` (``recbole`` when unset)."""
    return config["gelu_impl"] or "recbole"


def check_gelu_impl(impl: str) -> None:
    """Raises ``ValueError`` unless ``impl`` is one of :data:`GELU_IMPLS`."""
    if impl not in GELU_IMPLS:
        raise ValueError(f"gelu_impl={impl!r}: allowed values are {', '.join(GELU_IMPLS)}")


def gelu_function(impl: str) -> Callable[[Tensor], Tensor]:
    """The exact GELU computed as ``impl`` says: ``F.gelu`` (``fused``) or RecBole's."""
    check_gelu_impl(impl)
    return F.gelu if impl == "fused" else recbole_gelu


__all__ = [
    "GELU_IMPLS",
    "check_gelu_impl",
    "gelu_function",
    "gelu_impl",
    "is_gelu",
    "recbole_gelu",
]

"""GELU of the feed-forward layers as one fused operation (``gelu_impl: fused``).

RecBole's ``FeedForward.gelu`` computes the exact (erf) GELU as five tensor operations,
``x * 0.5 * (1 + erf(x / sqrt(2)))``, each a pass over the ``[B, L, inner]`` activations, and
autograd keeps their intermediates for a backward pass of as many more. ``F.gelu`` is the same
function in one fused kernel (and one for its gradient), one pass where RecBole's makes five
(``benchmarks/gelu_speed.py`` measures both); the values agree to float rounding
(``tests/test_activation.py``).

:func:`use_gelu_impl` switches, in place, the GELU of every RecBole ``FeedForward`` of a built
model (SASRec, BERT4Rec, HyMoERec's shared expert, FAME's layers) and of HyMoERec's routed
experts. An activation is a plain attribute, not a parameter or buffer: checkpoints are
unchanged either way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from recbole.model.layers import FeedForward
from torch import Tensor, nn

GELU_IMPLS = ("fused", "recbole")

#: Module attributes holding a feed-forward activation: RecBole's ``FeedForward`` and our
#: ``ExpertBank``.
_ACTIVATION_ATTRIBUTES = ("intermediate_act_fn", "act")


def recbole_gelu(x: Tensor) -> Tensor:
    """RecBole's ``FeedForward.gelu``, as a function: ``x * 0.5 * (1 + erf(x / sqrt(2)))``."""
    return FeedForward.gelu(None, x)


def is_gelu(fn: Callable | None) -> bool:
    """Whether ``fn`` is one of the two exact GELUs: ``F.gelu`` or RecBole's (bound or not)."""
    return fn is F.gelu or fn is recbole_gelu or getattr(fn, "__func__", None) is FeedForward.gelu


def gelu_impl(config) -> str:
    """``config``'s ``gelu_impl`` (``recbole`` when unset)."""
    return config["gelu_impl"] or "recbole"


def use_gelu_impl(model: nn.Module, impl: str) -> int:
    """Compute every feed-forward GELU of ``model`` as ``impl`` says, in place, and return how
    many activations were switched. Other activations (relu, swish, ...) are left alone.

    Raises:
        ValueError: ``impl`` is not one of :data:`GELU_IMPLS`.
    """
    if impl not in GELU_IMPLS:
        raise ValueError(f"gelu_impl={impl!r}: allowed values are {', '.join(GELU_IMPLS)}")
    target = F.gelu if impl == "fused" else recbole_gelu
    switched = 0
    for module in model.modules():
        for name in _ACTIVATION_ATTRIBUTES:
            fn = module.__dict__.get(name)  # plain attributes only, never a submodule
            if is_gelu(fn) and fn is not target:
                setattr(module, name, target)
                switched += 1
    return switched


__all__ = ["GELU_IMPLS", "gelu_impl", "is_gelu", "recbole_gelu", "use_gelu_impl"]

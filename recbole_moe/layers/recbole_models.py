"""RecBole's own models (SASRec, BERT4Rec, ...): the one place where layers are switched after
construction.

Our models build each layer with the implementation its settings choose
(:mod:`recbole_moe.layers.transformer`). RecBole's model classes build RecBole's layers inside
their constructors, and they are not ours to edit; so, for them only, :func:`use_layer_impls`
switches a built model's layers in place: the class of each ``MultiHeadAttention`` (to
:class:`~recbole_moe.layers.attention.SelfAttention`) and of each ``nn.Dropout`` (to
:class:`~recbole_moe.layers.dropout.FastDropout`), and the GELU of each ``FeedForward``. Only
classes change, never parameters or buffers, so checkpoints are the same either way, and
RecBole's classes themselves are untouched. (The measurement scripts in ``benchmarks/`` also use
these functions on our models, to time two implementations on the same weights.)
"""

from __future__ import annotations

from recbole.model.layers import MultiHeadAttention
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_moe.layers.activation import check_gelu_impl, gelu_function, is_gelu
from recbole_moe.layers.attention import SelfAttention, check_attention_impl
from recbole_moe.layers.dropout import FastDropout, check_dropout_impl
from recbole_moe.layers.transformer import LayerImpls

#: Module attributes holding a feed-forward activation: RecBole's ``FeedForward`` and our
#: ``ExpertBank``.
_ACTIVATION_ATTRIBUTES = ("intermediate_act_fn", "act")


def is_recbole_model(model: nn.Module) -> bool:
    """Whether ``model`` is an instance of one of RecBole's own model classes."""
    return type(model).__module__.startswith("recbole.")


def is_causal_model(model: nn.Module) -> bool:
    """Whether every attention mask of the RecBole model ``model`` is RecBole's causal + padding
    mask of right-padded sequences, with no output at a padding position read: ``SASRec``."""
    return isinstance(model, SASRec)


def use_attention_impl(model: nn.Module, impl: str, causal: bool | None = None) -> int:
    """Compute every RecBole ``MultiHeadAttention`` of ``model`` as ``impl`` says, in place;
    ``causal`` (default: :func:`is_causal_model`) lets the ``sdpa`` path use ``is_causal=True``
    instead of the mask. Returns the number of layers switched.

    Raises:
        ValueError: ``impl`` is not one of ``ATTENTION_IMPLS``.
    """
    check_attention_impl(impl)
    switched = 0
    for module in model.modules():
        if type(module) is MultiHeadAttention and impl != "recbole":
            module.__class__ = SelfAttention
            module.causal = is_causal_model(model) if causal is None else causal
        elif type(module) is SelfAttention and module.impl != impl:
            module.causal = module.causal if causal is None else causal  # as it was built
        else:
            continue
        module.impl = impl
        switched += 1
    return switched


def use_dropout_impl(model: nn.Module, impl: str) -> int:
    """Draw every dropout mask of ``model`` as ``impl`` says (``nn.Dropout`` or
    :class:`FastDropout`), in place; returns how many modules were switched.

    Raises:
        ValueError: ``impl`` is not one of ``DROPOUT_IMPLS``.
    """
    check_dropout_impl(impl)
    target = FastDropout if impl == "fast" else nn.Dropout
    switched = 0
    for module in model.modules():
        if type(module) in (nn.Dropout, FastDropout) and type(module) is not target:
            module.__class__ = target
            switched += 1
    return switched


def use_gelu_impl(model: nn.Module, impl: str) -> int:
    """Compute every feed-forward GELU of ``model`` (RecBole's ``FeedForward``, our expert
    banks) as ``impl`` says, in place; returns how many were switched. Other activations are
    left alone.

    Raises:
        ValueError: ``impl`` is not one of ``GELU_IMPLS``.
    """
    check_gelu_impl(impl)
    target = gelu_function(impl)
    switched = 0
    for module in model.modules():
        for name in _ACTIVATION_ATTRIBUTES:
            fn = module.__dict__.get(name)  # plain attributes only, never a submodule
            if is_gelu(fn) and fn is not target:
                setattr(module, name, target)
                switched += 1
    return switched


def use_layer_impls(model: nn.Module, impls: LayerImpls) -> None:
    """Switch the layers of the RecBole model ``model`` to ``impls``, in place."""
    use_attention_impl(model, impls.attention)
    use_dropout_impl(model, impls.dropout)
    use_gelu_impl(model, impls.gelu)


__all__ = [
    "is_causal_model",
    "is_recbole_model",
    "use_attention_impl",
    "use_dropout_impl",
    "use_gelu_impl",
    "use_layer_impls",
]

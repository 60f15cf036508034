"""RecBole's Transformer layers, each built with the implementation its settings choose.

The same modules, parameter names and forward passes as RecBole's ``FeedForward``,
``TransformerLayer`` and ``TransformerEncoder`` (a checkpoint of one loads into the other), but
each layer picks when it is built how it computes (:class:`LayerImpls`, from
``attention_impl``, ``dropout_impl`` and ``gelu_impl``): nothing is replaced afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from recbole.model import layers as recbole_layers
from torch import nn

from recbole_moe.layers.activation import check_gelu_impl, gelu_function, gelu_impl
from recbole_moe.layers.attention import SelfAttention, attention_impl, check_attention_impl
from recbole_moe.layers.dropout import check_dropout_impl, dropout_impl, make_dropout


@dataclass(frozen=True)
class LayerImpls:
    """How layers compute; the same parameters either way.

    Attributes:
        attention: ``recbole`` (RecBole's operations) or ``sdpa`` (one fused
            ``scaled_dot_product_attention``), :class:`~recbole_moe.layers.attention.SelfAttention`.
        dropout: ``torch`` (``nn.Dropout``) or ``fast`` (the cheaper CPU mask,
            :class:`~recbole_moe.layers.dropout.FastDropout`).
        gelu: ``recbole`` (RecBole's five operations) or ``fused`` (``F.gelu``).
    """

    attention: str = "recbole"
    dropout: str = "torch"
    gelu: str = "recbole"

    def __post_init__(self) -> None:
        check_attention_impl(self.attention)
        check_dropout_impl(self.dropout)
        check_gelu_impl(self.gelu)


#: RecBole's own operations everywhere (every setting's default).
RECBOLE_IMPLS = LayerImpls()


def layer_impls(config) -> LayerImpls:
    """``config``'s ``attention_impl``, ``dropout_impl`` and ``gelu_impl``."""
    return LayerImpls(attention_impl(config), dropout_impl(config), gelu_impl(config))


def self_attention(
    n_heads: int,
    hidden_size: int,
    hidden_dropout_prob: float,
    attn_dropout_prob: float,
    layer_norm_eps: float,
    impls: LayerImpls = RECBOLE_IMPLS,
    causal: bool = False,
) -> SelfAttention:
    """RecBole's ``MultiHeadAttention`` (its arguments first) computed as ``impls`` says;
    ``causal``: every attention mask is RecBole's causal + padding mask."""
    return SelfAttention(
        n_heads,
        hidden_size,
        hidden_dropout_prob,
        attn_dropout_prob,
        layer_norm_eps,
        impl=impls.attention,
        causal=causal,
        dropout_impl=impls.dropout,
    )


class FeedForward(recbole_layers.FeedForward):
    """RecBole's ``FeedForward`` with its GELU (``impls.gelu``) and dropout (``impls.dropout``)
    chosen when built: ``LayerNorm(x + Dropout(dense_2(act(dense_1(x)))))``, ``[B, L, D]``."""

    def __init__(
        self,
        hidden_size: int,
        inner_size: int,
        hidden_dropout_prob: float,
        hidden_act: str,
        layer_norm_eps: float,
        impls: LayerImpls = RECBOLE_IMPLS,
    ) -> None:
        super().__init__(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
        if hidden_act == "gelu":
            self.intermediate_act_fn = gelu_function(impls.gelu)
        self.dropout = make_dropout(hidden_dropout_prob, impls.dropout)


class TransformerLayer(recbole_layers.TransformerLayer):
    """RecBole's ``TransformerLayer`` (``multi_head_attention`` then ``feed_forward``, its
    forward) with :class:`SelfAttention` and :class:`FeedForward` built as ``impls`` says;
    ``causal``: every attention mask is RecBole's causal + padding mask."""

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        intermediate_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        hidden_act: str,
        layer_norm_eps: float,
        impls: LayerImpls = RECBOLE_IMPLS,
        causal: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self.multi_head_attention = self_attention(
            n_heads,
            hidden_size,
            hidden_dropout_prob,
            attn_dropout_prob,
            layer_norm_eps,
            impls,
            causal,
        )
        self.feed_forward = FeedForward(
            hidden_size, intermediate_size, hidden_dropout_prob, hidden_act, layer_norm_eps, impls
        )


class TransformerEncoder(recbole_layers.TransformerEncoder):
    """RecBole's ``TransformerEncoder`` (``n_layers`` copies of one layer, its forward) of
    :class:`TransformerLayer` built as ``impls`` and ``causal`` say."""

    def __init__(
        self,
        n_layers: int = 2,
        n_heads: int = 2,
        hidden_size: int = 64,
        inner_size: int = 256,
        hidden_dropout_prob: float = 0.5,
        attn_dropout_prob: float = 0.5,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-12,
        impls: LayerImpls = RECBOLE_IMPLS,
        causal: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        layer = TransformerLayer(
            n_heads,
            hidden_size,
            inner_size,
            hidden_dropout_prob,
            attn_dropout_prob,
            hidden_act,
            layer_norm_eps,
            impls,
            causal,
        )
        self.layer = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])


__all__ = [
    "RECBOLE_IMPLS",
    "FeedForward",
    "LayerImpls",
    "TransformerEncoder",
    "TransformerLayer",
    "layer_impls",
    "self_attention",
]

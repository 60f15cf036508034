"""Fused self-attention with RecBole's parameters (``attention_impl: sdpa``).

RecBole's ``MultiHeadAttention`` computes the ``[B, heads, L, L]`` scores, adds the additive
mask (0 or -10000), applies softmax and dropout, and multiplies with the values as separate
operations. :class:`SdpaMultiHeadAttention` is the same layer, with the same parameters
(``query``, ``key``, ``value``, ``dense``, ``LayerNorm``), computed by
``torch.nn.functional.scaled_dot_product_attention``, which takes the same additive mask:
``softmax(Q Kᵀ / √d_h + mask) V``. Checkpoints are interchangeable in both directions.

:func:`use_attention_impl` switches the attention layers of a built model (ours or RecBole's
SASRec / BERT4Rec) to the fused path, in place, without touching RecBole's classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from recbole.model.layers import MultiHeadAttention
from torch import Tensor, nn

ATTENTION_IMPLS = ("recbole", "sdpa")


class SdpaMultiHeadAttention(MultiHeadAttention):
    """RecBole's ``MultiHeadAttention`` through ``scaled_dot_product_attention``.

    input_tensor ``[B, L, D]``, attention_mask ``[B, 1, L, L]`` (or broadcastable, additive)
    -> ``[B, L, D]``: ``LayerNorm(input + Dropout(dense(attention)))`` as in RecBole.
    """

    def _heads(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` -> ``[B, heads, L, d_h]``."""
        return self.transpose_for_scores(x).transpose(1, 2)

    def forward(self, input_tensor: Tensor, attention_mask: Tensor) -> Tensor:
        query = self._heads(self.query(input_tensor))
        key = self._heads(self.key(input_tensor))
        value = self._heads(self.value(input_tensor))
        dropout = self.attn_dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask.to(query.dtype), dropout_p=dropout
        )  # [B, heads, L, d_h]
        context = context.transpose(1, 2).reshape(*input_tensor.shape[:-1], self.all_head_size)
        hidden_states = self.out_dropout(self.dense(context))
        return self.LayerNorm(hidden_states + input_tensor)


def attention_impl(config) -> str:
    """``config``'s ``attention_impl`` (``recbole`` when unset)."""
    return config["attention_impl"] or "recbole"


def use_attention_impl(model: nn.Module, impl: str) -> int:
    """Switch every RecBole ``MultiHeadAttention`` of ``model`` to ``impl``, in place.

    The modules keep their parameters and buffers; only the class that computes them changes
    (RecBole's class itself is untouched). Returns the number of layers switched.

    Raises:
        ValueError: ``impl`` is not one of :data:`ATTENTION_IMPLS`.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"attention_impl={impl!r}: allowed values are {', '.join(ATTENTION_IMPLS)}"
        )
    target = SdpaMultiHeadAttention if impl == "sdpa" else MultiHeadAttention
    switched = 0
    for module in model.modules():
        if (
            type(module) in (MultiHeadAttention, SdpaMultiHeadAttention)
            and type(module) is not target
        ):
            module.__class__ = target
            switched += 1
    return switched


__all__ = ["ATTENTION_IMPLS", "SdpaMultiHeadAttention", "attention_impl", "use_attention_impl"]

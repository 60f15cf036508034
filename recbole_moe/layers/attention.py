"""Fused self-attention with RecBole's parameters (``attention_impl: sdpa``).

RecBole's ``MultiHeadAttention`` computes the ``[B, heads, L, L]`` scores, adds the additive
mask (0 or -10000), applies softmax and dropout, and multiplies with the values as separate
operations. :class:`SdpaMultiHeadAttention` is the same layer, with the same parameters
(``query``, ``key``, ``value``, ``dense``, ``LayerNorm``), computed by
``torch.nn.functional.scaled_dot_product_attention``, which takes the same additive mask:
``softmax(Q Kᵀ / √d_h + mask) V``. Checkpoints are interchangeable in both directions.

:func:`use_attention_impl` switches the attention layers of a built model (ours or RecBole's
SASRec / BERT4Rec) to the fused path, in place, without touching RecBole's classes.

**Causal models.** SASRec, HyMoERec and FAME attend with RecBole's causal + padding mask over
right-padded sequences (items first, padding after). There a query at a real position ``i``
may read keys ``0..i``, and all of those are real items, so the padding part of the mask
changes no real position's output. For these models (:func:`is_causal_model`) the fused layer
passes ``is_causal=True`` and no mask, which lets PyTorch use its fused (flash) kernel when
attention dropout is off, as in every evaluation (``benchmarks/eval_speed.py`` measures the
validation pass against RecBole's layers). Outputs at real positions are the same;
outputs at padding positions differ and are never read (the loss, the last-position gather,
HyMoERec's expert routing and FAME's facet layer all skip padding).

**Attention dropout.** In training with attention dropout, torch's CPU kernels compute
attention by the unfused math path and draw the dropout mask with ``bernoulli_``. With
``dropout_impl: fast`` (:class:`~recbole_moe.layers.dropout.FastDropout`) :func:`attend`
computes that same math path itself, with the cheaper mask; everywhere else it is
``scaled_dot_product_attention``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from recbole.model.layers import MultiHeadAttention
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import Tensor, nn

from recbole_moe.layers.dropout import (
    FastDropout,
    keep_mask,
    keep_scale,
    masked,
    uses_fast_mask,
)

ATTENTION_IMPLS = ("recbole", "sdpa")


@functools.lru_cache(maxsize=16)
def causal_bias(queries: int, keys: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[Q, L]`` additive mask of top-left aligned causal attention: 0 where key j <= query i,
    -inf above the diagonal (cached per size, dtype and device; never modified)."""
    future = torch.ones(queries, keys, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(queries, keys, dtype=dtype, device=device).masked_fill_(future, -math.inf)


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    dropout: nn.Dropout,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    enable_gqa: bool = False,
) -> Tensor:
    """``Dropout(softmax(Q Kᵀ / √d_h + mask)) V``, as ``scaled_dot_product_attention`` computes it.

    query ``[B, Hq, Q, d_h]``, key / value ``[B, Hk, L, d_h]`` (``Hk`` divides ``Hq`` with
    ``enable_gqa``: query head j reads key/value head j // (Hq / Hk)), attn_mask additive and
    broadcastable to ``[B, Hq, Q, L]`` -> ``[B, Hq, Q, d_h]``. The dropout is ``dropout``'s
    probability in its training mode. A :class:`FastDropout` in training on the CPU computes
    the math path here, with its mask; otherwise torch's fused function.
    """
    p = dropout.p if dropout.training else 0.0
    if not (isinstance(dropout, FastDropout) and uses_fast_mask(query, p)):
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=p,
            is_causal=is_causal, enable_gqa=enable_gqa,
        )  # fmt: skip
    if enable_gqa and key.size(-3) != query.size(-3):
        group = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    scores = torch.matmul(query / math.sqrt(query.size(-1)), key.transpose(-2, -1))
    if is_causal:  # top-left aligned, as scaled_dot_product_attention's is_causal
        # an added constant: its backward passes the gradient through unchanged (a masked fill
        # would copy and re-mask it; softmax already gives the future positions zero gradient)
        scores.add_(causal_bias(scores.shape[-2], scores.shape[-1], scores.dtype, scores.device))
    elif attn_mask is not None:
        scores = scores + attn_mask
    probs = torch.softmax(scores, dim=-1)  # [B, Hq, Q, L]
    # Dropout(probs) V = ((probs · keep) V) · scale: the scale on the small [B, Hq, Q, d_h] result
    keep = keep_mask(probs.shape, p, probs.device, probs.dtype)
    return torch.matmul(masked(probs, keep), value) * keep_scale(p)  # [B, Hq, Q, d_h]


class SdpaMultiHeadAttention(MultiHeadAttention):
    """RecBole's ``MultiHeadAttention`` through ``scaled_dot_product_attention``.

    input_tensor ``[B, L, D]``, attention_mask ``[B, 1, L, L]`` (or broadcastable, additive)
    -> ``[B, L, D]``: ``LayerNorm(input + Dropout(dense(attention)))`` as in RecBole.
    With :attr:`causal` the mask is taken to be RecBole's causal + padding mask of right-padded
    sequences and is replaced by ``is_causal=True`` (equal at every non-padding position).
    """

    #: Set by :func:`use_attention_impl` for a causal model (:func:`is_causal_model`).
    causal: bool = False

    def _heads(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` -> ``[B, heads, L, d_h]``."""
        return self.transpose_for_scores(x).transpose(1, 2)

    def forward(self, input_tensor: Tensor, attention_mask: Tensor) -> Tensor:
        query = self._heads(self.query(input_tensor))
        key = self._heads(self.key(input_tensor))
        value = self._heads(self.value(input_tensor))
        mask = None if self.causal else attention_mask.to(query.dtype)
        context = attend(
            query, key, value, self.attn_dropout, attn_mask=mask, is_causal=self.causal
        )  # [B, heads, L, d_h]
        context = context.transpose(1, 2).reshape(*input_tensor.shape[:-1], self.all_head_size)
        hidden_states = self.out_dropout(self.dense(context))
        return self.LayerNorm(hidden_states + input_tensor)


def attention_impl(config) -> str:
    """``config``'s ``attention_impl`` (``recbole`` when unset)."""
    return config["attention_impl"] or "recbole"


def is_causal_model(model: nn.Module) -> bool:
    """Whether every attention mask of ``model`` is RecBole's causal + padding mask of
    right-padded sequences, with no output at a padding position read: RecBole's ``SASRec``
    and the models that declare ``causal_attention = True`` (HyMoERec, FAME)."""
    return isinstance(model, SASRec) or bool(getattr(model, "causal_attention", False))


def use_attention_impl(model: nn.Module, impl: str, causal: bool | None = None) -> int:
    """Switch every RecBole ``MultiHeadAttention`` of ``model`` to ``impl``, in place.

    The modules keep their parameters and buffers; only the class that computes them changes
    (RecBole's class itself is untouched). ``causal`` (default: :func:`is_causal_model`) lets
    the fused layers use ``is_causal=True`` instead of the mask. Returns the number of layers
    switched.

    Raises:
        ValueError: ``impl`` is not one of :data:`ATTENTION_IMPLS`.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"attention_impl={impl!r}: allowed values are {', '.join(ATTENTION_IMPLS)}"
        )
    target = SdpaMultiHeadAttention if impl == "sdpa" else MultiHeadAttention
    causal = is_causal_model(model) if causal is None else causal
    switched = 0
    for module in model.modules():
        if type(module) not in (MultiHeadAttention, SdpaMultiHeadAttention):
            continue
        if type(module) is not target:
            module.__class__ = target
            switched += 1
        if target is SdpaMultiHeadAttention:
            module.causal = causal
    return switched


__all__ = [
    "ATTENTION_IMPLS",
    "SdpaMultiHeadAttention",
    "attend",
    "attention_impl",
    "is_causal_model",
    "use_attention_impl",
]

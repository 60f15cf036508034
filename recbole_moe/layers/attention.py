"""Self-attention with RecBole's parameters that picks its kernel when built (``attention_impl``).

RecBole's ``MultiHeadAttention`` computes the ``[B, heads, L, L]`` scores, adds the additive
mask (0 or -10000), applies softmax and dropout, and multiplies with the values as separate
operations. :class:`SelfAttention` is the same layer, with the same parameters (``query``,
``key``, ``value``, ``dense``, ``LayerNorm``), computed as its ``impl`` says: ``recbole``,
RecBole's operations, or ``sdpa``, ``torch.nn.functional.scaled_dot_product_attention``,
which takes the same additive mask: ``softmax(Q Kᵀ / √d_h + mask) V``. Checkpoints are
interchangeable in both directions.

Our models build it with ``attention_impl`` and ``causal`` (:mod:`recbole_moe.layers.transformer`);
RecBole's own models get it after construction (:mod:`recbole_moe.layers.recbole_models`).

**Causal models.** SASRec, HyMoERec and FAME attend with RecBole's causal + padding mask over
right-padded sequences (items first, padding after). There a query at a real position ``i``
may read keys ``0..i``, and all of those are real items, so the padding part of the mask
changes no real position's output. For these models (built with ``causal=True``) the fused
layer passes ``is_causal=True`` and no mask, which lets PyTorch use its fused (flash) kernel when
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
from torch import Tensor, nn

from recbole_moe.layers.dropout import (
    FastDropout,
    keep_mask,
    keep_scale,
    make_dropout,
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


class SelfAttention(MultiHeadAttention):
    """RecBole's ``MultiHeadAttention`` computed as ``impl`` says (chosen when built).

    input_tensor ``[B, L, D]``, attention_mask ``[B, 1, L, L]`` (or broadcastable, additive)
    -> ``[B, L, D]``: ``LayerNorm(input + Dropout(dense(attention)))`` as in RecBole.
    ``impl``: ``recbole`` (RecBole's operations) or ``sdpa`` (:func:`attend`). With ``causal``
    the mask is taken to be RecBole's causal + padding mask of right-padded sequences and the
    ``sdpa`` path replaces it by ``is_causal=True`` (equal at every non-padding position).
    ``dropout_impl``: how its dropout masks are drawn (:func:`make_dropout`).
    """

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        impl: str = "recbole",
        causal: bool = False,
        dropout_impl: str = "torch",
    ) -> None:
        check_attention_impl(impl)
        super().__init__(
            n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps
        )
        self.impl, self.causal = impl, causal
        self.attn_dropout = make_dropout(attn_dropout_prob, dropout_impl)
        self.out_dropout = make_dropout(hidden_dropout_prob, dropout_impl)

    def extra_repr(self) -> str:
        return f"impl={self.impl}, causal={self.causal}"

    def _heads(self, x: Tensor) -> Tensor:
        """``[B, L, D]`` -> ``[B, heads, L, d_h]``."""
        return self.transpose_for_scores(x).transpose(1, 2)

    def forward(self, input_tensor: Tensor, attention_mask: Tensor) -> Tensor:
        if self.impl == "recbole":
            return super().forward(input_tensor, attention_mask)
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


def check_attention_impl(impl: str) -> None:
    """Raises ``ValueError`` unless ``impl`` is one of :data:`ATTENTION_IMPLS`."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(
            f"attention_impl={impl!r}: allowed values are {', '.join(ATTENTION_IMPLS)}"
        )


__all__ = [
    "ATTENTION_IMPLS",
    "SelfAttention",
    "attend",
    "attention_impl",
    "check_attention_impl",
]

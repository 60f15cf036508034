"""HyMoERec's hybrid Mixture-of-Experts layer and the Transformer encoder built from it.

Reference:
    Kunrong Li, Zhu Sun, Kwan Hui Lim. "HyMoERec: Hybrid Mixture-of-Experts for Sequential
    Recommendation." AAAI 2026 Student Abstract, arXiv:2511.06388.

The HyMoE layer replaces the position-wise FFN of a SASRec block: a dense shared FFN plus top-K
routed expert FFNs (router, experts and statistics from :mod:`recbole_moe.layers.moe`), fused
as ``y = y_dense + α · y_moe`` (the paper's Adaptive Expert Fusion).
"""

from __future__ import annotations

import torch
from recbole.model.layers import MultiHeadAttention
from torch import Tensor, nn

from recbole_moe.layers.moe import ExpertBank, Router, RouterOutput, RoutingStats
from recbole_moe.layers.transformer import (
    RECBOLE_IMPLS,
    FeedForward,
    LayerImpls,
    self_attention,
)

FUSIONS = ("adaptive", "fixed", "sum")


class HyMoEFeedForward(FeedForward):
    """Hybrid MoE layer replacing RecBole's ``FeedForward`` (HyMoERec's HyMoE layer).

    Its GELU (dense and routed experts) and dropout are built as ``impls`` says.

    ``H_out = LayerNorm(x + Dropout(y))`` with ``y = y_dense + α · y_moe``. The shared expert keeps
    RecBole's parameter names (``dense_1``, ``dense_2``), so a SASRec ``FeedForward`` state loads
    into it unchanged. Switches:

    * ``use_shared=False``: ``y = y_moe`` (sparse-only ablation, no fusion weight);
    * ``use_routed=False``: ``y = y_dense`` — exactly RecBole's ``FeedForward``;
    * ``fusion``: ``adaptive`` α = σ(a)·w(t) (learnable scalar ``a`` per layer), ``fixed``
      α = ``fixed_alpha``·w(t), ``sum`` α = 1 (plain sum, warm-up ignored).
    """

    def __init__(
        self,
        hidden_size: int,
        inner_size: int,
        hidden_dropout_prob: float,
        hidden_act: str,
        layer_norm_eps: float,
        n_experts: int,
        top_k: int,
        expert_inner_size: int,
        use_shared: bool = True,
        use_routed: bool = True,
        fusion: str = "adaptive",
        fixed_alpha: float = 1.0,
        alpha_init: float = 0.0,
        moe_impl: str = "auto",
        impls: LayerImpls = RECBOLE_IMPLS,
    ):
        super().__init__(
            hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps, impls
        )
        if not (use_shared or use_routed):
            raise ValueError("HyMoERec needs the shared expert, the routed experts, or both")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.use_shared, self.use_routed, self.fusion = use_shared, use_routed, fusion
        self.fixed_alpha = float(fixed_alpha)
        if not use_shared:
            self.dense_1 = None  # drop the shared expert's parameters
            self.dense_2 = None
        if use_routed:
            self.router = Router(hidden_size, n_experts, top_k)
            self.experts = ExpertBank(
                n_experts, hidden_size, expert_inner_size, self.intermediate_act_fn, moe_impl
            )
            self.alpha_param = nn.Parameter(torch.full((), float(alpha_init)))
            self.stats = RoutingStats(n_experts)

    def alpha(self, warmup: Tensor) -> Tensor:
        """Adaptive Expert Fusion weight α (HyMoERec) for the warm-up factor ``warmup = w(t)``.
        Scalar."""
        if self.fusion == "adaptive":
            return torch.sigmoid(self.alpha_param) * warmup
        if self.fusion == "fixed":
            return self.fixed_alpha * warmup
        return torch.ones_like(warmup)  # "sum"

    def forward(
        self, x: Tensor, warmup: Tensor, token_mask: Tensor, rows: Tensor | None = None
    ) -> tuple[Tensor, RouterOutput | None]:
        """x ``[B, L, D]``, warmup = w(t) scalar, token_mask ``[B, L]`` (non-padding tokens).

        rows ``[B]``: if given, route every token (balance loss and statistics see all
        non-padding tokens) but compute the layer only at ``x[b, rows[b]]``; returns ``[B, 1, D]``.
        Returns (``[B, L, D]`` or ``[B, 1, D]``, router output or ``None``).
        """
        routing = None
        if self.use_routed:
            routing = self.router(x)  # probs [B, L, E], weights/indices [B, L, K]
            if self.training:
                self.stats.update(routing.probs, routing.indices, token_mask)
            weights, indices, mask = routing.weights, routing.indices, token_mask
        if rows is not None:
            pick = (torch.arange(x.size(0), device=x.device), rows)
            x = x[pick].unsqueeze(1)  # [B, 1, D]
            if self.use_routed:
                weights, indices, mask = (
                    weights[pick].unsqueeze(1),
                    indices[pick].unsqueeze(1),
                    None,
                )
        if self.use_routed:
            y_moe = self.experts(x, weights, indices, mask)  # Σ_k g_k f_k(x), [B, L, D]
        if self.use_shared:
            y = self.dense_2(self.intermediate_act_fn(self.dense_1(x)))  # y_dense [B, L, D]
            if self.use_routed:
                y = y + self.alpha(warmup) * y_moe  # Adaptive Expert Fusion
        else:
            y = y_moe
        return self.LayerNorm(self.dropout(y) + x), routing


def attention_at(
    mha: MultiHeadAttention, hidden: Tensor, attention_mask: Tensor, rows: Tensor
) -> Tensor:
    """RecBole ``MultiHeadAttention`` evaluated for one query position per sequence.

    Same parameters and operations as ``mha(hidden, attention_mask)[b, rows[b]]`` (keys and values
    from every position), without computing the other queries. hidden ``[B, L, D]``,
    attention_mask ``[B, 1, L, L]``, rows ``[B]`` -> ``[B, 1, D]``.
    """
    batch = torch.arange(hidden.size(0), device=hidden.device)
    query_in = hidden[batch, rows].unsqueeze(1)  # [B, 1, D]
    q = mha.transpose_for_scores(mha.query(query_in)).permute(0, 2, 1, 3)  # [B, h, 1, d_h]
    k = mha.transpose_for_scores(mha.key(hidden)).permute(0, 2, 3, 1)  # [B, h, d_h, L]
    v = mha.transpose_for_scores(mha.value(hidden)).permute(0, 2, 1, 3)  # [B, h, L, d_h]
    scores = torch.matmul(q, k) / mha.sqrt_attention_head_size
    scores = scores + attention_mask[batch, :, rows].unsqueeze(2)  # mask row [B, 1, 1, L]
    probs = mha.attn_dropout(mha.softmax(scores))
    context = (
        torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(hidden.size(0), 1, mha.all_head_size)
    )
    return mha.LayerNorm(mha.out_dropout(mha.dense(context)) + query_in)  # [B, 1, D]


class HyMoETransformerLayer(nn.Module):
    """RecBole ``TransformerLayer`` with :class:`HyMoEFeedForward` as its FFN (HyMoERec's
    SASRec-style block). Attention, dropout and GELU are computed as ``impls`` says
    (:class:`~recbole_moe.layers.attention.SelfAttention`: RecBole's operations or one
    ``scaled_dot_product_attention``, with ``is_causal`` when ``causal``)."""

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        impls: LayerImpls = RECBOLE_IMPLS,
        causal: bool = False,
        **ffn_kwargs,
    ):
        super().__init__()
        self.multi_head_attention = self_attention(
            n_heads,
            hidden_size,
            hidden_dropout_prob,
            attn_dropout_prob,
            layer_norm_eps,
            impls,
            causal,
        )
        self.feed_forward = HyMoEFeedForward(
            hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            layer_norm_eps=layer_norm_eps,
            impls=impls,
            **ffn_kwargs,
        )

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor,
        warmup: Tensor,
        token_mask: Tensor,
        rows: Tensor | None = None,
        prune_queries: bool = False,
    ) -> tuple[Tensor, RouterOutput | None]:
        """hidden ``[B, L, D]`` -> ``[B, L, D]``, or ``[B, 1, D]`` at ``rows`` when rows is given.

        prune_queries: with rows, also compute attention only for those queries; the router then
        sees only those tokens (used in evaluation, where no balance loss is computed).
        """
        if rows is not None and prune_queries:
            attention_output = attention_at(
                self.multi_head_attention, hidden, attention_mask, rows
            )  # [B, 1, D]
            return self.feed_forward(attention_output, warmup, torch.ones_like(token_mask[:, :1]))
        attention_output = self.multi_head_attention(hidden, attention_mask)  # [B, L, D]
        return self.feed_forward(attention_output, warmup, token_mask, rows)


class HyMoEEncoder(nn.Module):
    """Stack of :class:`HyMoETransformerLayer`, named as RecBole's ``TransformerEncoder``."""

    def __init__(self, n_layers: int, **layer_kwargs):
        super().__init__()
        self.layer = nn.ModuleList([HyMoETransformerLayer(**layer_kwargs) for _ in range(n_layers)])

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor,
        warmup: Tensor,
        token_mask: Tensor,
        **last_layer,
    ) -> tuple[Tensor, list[RouterOutput]]:
        """hidden ``[B, L, D]`` -> (last layer output, router outputs of the MoE layers).

        last_layer: ``rows`` and ``prune_queries`` of :meth:`HyMoETransformerLayer.forward`, for
        the last layer only. With rows ``[B]`` the last layer is computed only at ``rows[b]``
        (the position the caller reads) and the output is ``[B, 1, D]``; earlier layers need
        every position because later attention reads them.
        """
        routings = []
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden, routing = layer(
                hidden, attention_mask, warmup, token_mask, **(last_layer if i == last else {})
            )
            if routing is not None:
                routings.append(routing)
        return hidden, routings


__all__ = [
    "FUSIONS",
    "HyMoEEncoder",
    "HyMoEFeedForward",
    "HyMoETransformerLayer",
    "attention_at",
]

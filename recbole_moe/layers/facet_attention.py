"""FAME's last layer: multi-head self-attention whose heads are mixtures of query experts.

Reference:
    Mingrui Liu, Sixiao Zhang, Cheng Long. "Facet-Aware Multi-Head Mixture-of-Experts Model
    for Sequential Recommendation." in WSDM 2025 (arXiv 2411.01457).

Each head h has N query projections W_Q^(h,n) (the experts) sharing the head's key and value;
a router β^(h) = softmax([f^(h,1) ‖ … ‖ f^(h,N)] W_exp^(h)) mixes the expert read-outs into the
head's output f^(h) (the paper's MoE self-attention). The heads are then kept apart: a per-head
Add & Norm and a position-wise FFN' shared by the heads give F^(h), which scores the items
through the head's own item sub-embedding (facet-aware prediction, in the model).
"""

from __future__ import annotations

import torch
from torch import nn

from recbole_moe.layers.attention import attend
from recbole_moe.layers.dropout import make_dropout
from recbole_moe.layers.moe import log_softmax_fp32, softmax_fp32
from recbole_moe.layers.transformer import RECBOLE_IMPLS, FeedForward, LayerImpls


class MoEMultiHeadAttention(nn.Module):
    r"""Multi-head self-attention whose heads are mixtures of N query experts (FAME, MoE
    self-attention in each head).

    Evaluated for one query position per sequence (the last valid one) against all L keys.
    Parameter layout matches RecBole's ``MultiHeadAttention``: ``query`` maps d -> H·N·d' with
    output index ``(h, n, k)``, so for N = 1 its weight has exactly SASRec's layout; ``key`` and
    ``value`` map d -> H·d' and are shared by the N experts of a head (in the paper the
    experts differ only in their query projection).

    With ``head_output=True`` the Add & Norm is per head (LayerNorm' over d', residual = the
    h-th d'-slice of the input; the paper does not spell this step out) and the output is
    ``[B, H, d']``; otherwise the heads are concatenated and followed by ``dense`` (W_O) +
    LayerNorm over d, output ``[B, d]``.
    """

    def __init__(
        self,
        n_heads: int,
        n_experts: int,
        hidden_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        head_output: bool,
        dropout_impl: str = "torch",
    ):
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(
                f"The hidden size ({hidden_size}) is not a multiple of n_heads ({n_heads})"
            )
        self.n_heads = n_heads
        self.n_experts = n_experts
        self.head_size = hidden_size // n_heads
        self.head_output = head_output

        self.query = nn.Linear(hidden_size, n_heads * n_experts * self.head_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        if n_experts > 1:
            # W_exp^(h): (N·d') x N per head, no bias, on the concatenated expert outputs
            self.router = nn.Parameter(torch.empty(n_heads, n_experts * self.head_size, n_experts))
        else:
            self.register_parameter("router", None)
        self.attn_dropout = make_dropout(attn_dropout_prob, dropout_impl)
        self.out_dropout = make_dropout(hidden_dropout_prob, dropout_impl)
        if head_output:
            self.LayerNorm = nn.LayerNorm(self.head_size, eps=layer_norm_eps)
        else:
            self.dense = nn.Linear(hidden_size, hidden_size)
            self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def expert_outputs(
        self, x_q: torch.Tensor, hidden: torch.Tensor, key_mask: torch.Tensor
    ) -> torch.Tensor:
        r"""Attention read-out of every expert, f^(h,n) (FAME, MoE self-attention), at Q query
        positions.

        Args:
            x_q: layer input at the query positions, ``[B, Q, d]``.
            hidden: layer input at all positions, ``[B, L, d]``.
            key_mask: additive mask over keys for each query, ``[B, Q, L]`` (0 or -10000).

        Returns:
            expert outputs ``[B, Q, H, N, d']``.
        """
        B, L, _ = hidden.shape
        Q = x_q.shape[1]
        H, N, dh = self.n_heads, self.n_experts, self.head_size
        # the N experts of head h are query heads h*N .. h*N+N-1 sharing key/value head h
        q = self.query(x_q).view(B, Q, H * N, dh).transpose(1, 2)  # [B, H·N, Q, d']
        k = self.key(hidden).view(B, L, H, dh).transpose(1, 2)  # [B, H, L, d']
        v = self.value(hidden).view(B, L, H, dh).transpose(1, 2)  # [B, H, L, d']
        # softmax(q kᵀ / sqrt(d') + mask) v; fused (no [B, H·N, Q, L] tensor kept) without dropout
        out = attend(
            q, k, v, self.attn_dropout, attn_mask=key_mask.unsqueeze(1).to(q.dtype), enable_gqa=True
        )  # [B, H·N, Q, d']
        return out.view(B, H, N, Q, dh).permute(0, 3, 1, 2, 4)  # [B, Q, H, N, d']

    def route(self, expert_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Router β^(h) = softmax([f^(h,1) ‖ … ‖ f^(h,N)] W_exp^(h)) and dense mix
        (FAME, MoE self-attention).

        Args:
            expert_out: ``[B, Q, H, N, d']``.

        Returns:
            mixed head outputs f^(h) ``[B, Q, H, d']`` and router weights β ``[B, Q, H, N]``.
        """
        B, Q, H, N, dh = expert_out.shape
        if self.router is None:
            return expert_out[:, :, :, 0], expert_out.new_ones(B, Q, H, 1)
        logits = torch.einsum(
            "bqhm,hmn->bqhn", expert_out.reshape(B, Q, H, N * dh), self.router
        )  # [B, Q, H, N]
        beta = softmax_fp32(logits)  # float32 under bf16 autocast
        mixed = torch.einsum("bqhn,bqhnk->bqhk", beta, expert_out)  # [B, Q, H, d']
        return mixed, beta

    def forward(
        self, hidden: torch.Tensor, query_index: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Output of the attention sub-layer at the query positions.

        Args:
            hidden: ``[B, L, d]``; query_index: ``[B, Q]`` positions whose output is needed
                (the last valid one for scoring, every position for sequence training);
                key_mask: ``[B, Q, L]`` additive mask row of each query.

        Returns:
            ``[B, Q, H, d']`` (head_output) or ``[B, Q, d]``, and router weights ``[B, Q, H, N]``.
        """
        B, Q = query_index.shape
        d = hidden.shape[-1]
        x_q = hidden.gather(1, query_index.unsqueeze(-1).expand(-1, -1, d))  # [B, Q, d]
        mixed, beta = self.route(self.expert_outputs(x_q, hidden, key_mask))
        if self.head_output:
            # Z^(h) = LayerNorm'(X^(h) + Dropout(f^(h)))  (FAME, per-head Add & Norm)
            residual = x_q.view(B, Q, self.n_heads, self.head_size)
            out = self.LayerNorm(residual + self.out_dropout(mixed))  # [B, Q, H, d']
        else:
            out = self.dense(mixed.reshape(B, Q, d))  # concat heads + W_O, [B, Q, d]
            out = self.LayerNorm(self.out_dropout(out) + x_q)
        return out, beta


class FacetMoELayer(nn.Module):
    r"""Last FAME layer: MoE multi-head attention + position-wise FFN (FAME, last layer).

    Mirrors RecBole's ``TransformerLayer`` (``multi_head_attention`` then ``feed_forward``) so
    that a SASRec checkpoint maps onto it by renaming ``trm_encoder.layer.{n_layers-1}.`` to
    ``last_layer.``. With ``head_output`` the FFN' acts on d' and is shared across heads.
    Dropout and GELU are computed as ``impls`` says (the MoE attention is always :func:`attend`).
    """

    def __init__(
        self,
        n_heads: int,
        n_experts: int,
        hidden_size: int,
        inner_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        hidden_act: str,
        layer_norm_eps: float,
        head_output: bool,
        impls: LayerImpls = RECBOLE_IMPLS,
    ):
        super().__init__()
        self.multi_head_attention = MoEMultiHeadAttention(
            n_heads,
            n_experts,
            hidden_size,
            hidden_dropout_prob,
            attn_dropout_prob,
            layer_norm_eps,
            head_output,
            impls.dropout,
        )
        ffn_size = hidden_size // n_heads if head_output else hidden_size
        self.feed_forward = FeedForward(
            ffn_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps, impls
        )

    def forward(
        self, hidden: torch.Tensor, query_index: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, d]`` -> F ``[B, Q, H, d']`` (or ``[B, Q, d]``) at ``query_index`` ``[B, Q]``
        and router weights ``[B, Q, H, N]``; ``key_mask`` ``[B, Q, L]``."""
        attn_out, beta = self.multi_head_attention(hidden, query_index, key_mask)
        # F^(h) = LayerNorm''(Z^(h) + Dropout(FFN'(Z^(h))))  (FAME, per-head FFN')
        return self.feed_forward(attn_out), beta


def query_key_mask(item_seq: torch.Tensor, query_index: torch.Tensor, dtype) -> torch.Tensor:
    """Rows ``query_index`` ``[B, Q]`` of RecBole's causal + padding mask: ``[B, Q, L]``,
    0 where the query may read the key, -10000 elsewhere."""
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)
    key_ok = (item_seq != 0)[:, None, :] & (positions[None, None, :] <= query_index[:, :, None])
    return torch.where(key_ok, 0.0, -10000.0).to(dtype)


def facet_scores(
    head_repr: torch.Tensor, sub: torch.Tensor, items: torch.Tensor | None
) -> torch.Tensor:
    r"""Per-head scores P^(h)(v) = F_t^(h)·x_v^(h) (FAME, facet-aware prediction).

    Args:
        head_repr: F_t ``[B, H, d']``.
        sub: item sub-embeddings x_v^(h) of ``items``: ``[n_items, H, d']`` (items None),
            ``[B, H, d']`` (items ``[B]``) or ``[B, M, H, d']`` (items ``[B, M]``).

    Returns:
        ``[B, H, n_items]``, ``[B, H]`` or ``[B, H, M]``.
    """
    if items is None:
        return torch.einsum("bhk,vhk->bhv", head_repr, sub)
    if items.dim() == 1:
        return (head_repr * sub).sum(-1)
    return torch.einsum("bhk,bmhk->bhm", head_repr, sub)


def log_mixture(scores: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    r"""log Σ_h g_h softmax(P^(h)) (FAME, ``fusion=probs``): scores ``[B, H, V]``, gate
    ``[B, H]`` -> ``[B, V]``, differentiable; the softmax is at least float32 under autocast."""
    log_p = log_softmax_fp32(scores)
    return torch.logsumexp(log_p + torch.log(gate).unsqueeze(-1), dim=1)


def log_mixture_inplace(scores: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    r"""log Σ_h g_h softmax(P^(h)) without autograd, holding one ``[B, H, n_items]`` tensor.

    ``scores`` (overwritten) ``[B, H, V]``, gate ``[B, H]`` -> ``[B, V]``. Items whose
    probability underflows in every head get -inf (the bottom of the ranking either way).
    """
    scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()  # e = exp(P - max_v P), [B, H, V]
    weights = gate / scores.sum(dim=-1)  # g_h / Σ_v e, [B, H]
    mixture = torch.einsum("bhv,bh->bv", scores, weights)  # [B, V]
    return mixture.log_()


__all__ = [
    "FacetMoELayer",
    "MoEMultiHeadAttention",
    "facet_scores",
    "log_mixture",
    "log_mixture_inplace",
    "query_key_mask",
]

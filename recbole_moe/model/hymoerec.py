"""
HyMoERec
################################################

Reference:
    Kunrong Li, Zhu Sun, Kwan Hui Lim. "HyMoERec: Hybrid Mixture-of-Experts for Sequential
    Recommendation." AAAI 2026 Student Abstract, arXiv:2511.06388.

A SASRec-style Transformer whose position-wise FFN is replaced by a hybrid MoE layer: a dense
shared FFN plus top-K routed expert FFNs, fused as ``y = y_dense + α · y_moe`` with
``α = σ(a) · w(t)`` (Adaptive Expert Fusion, progressive warm-up). Section numbers in comments
refer to the implementation spec (``../shared/spec/HyMoERec.md``).
"""

from __future__ import annotations

import math

import torch
from recbole.model.layers import FeedForward, MultiHeadAttention
from torch import Tensor, nn

from recbole_moe.layers.moe import (
    LB_TYPES,
    ExpertBank,
    Router,
    RouterOutput,
    RoutingStats,
    load_balance_loss,
)
from recbole_moe.layers.sequence_loss import position_cross_entropy
from recbole_moe.model.base import DotProductSequentialRecommender
from recbole_moe.objective import TARGET_LIST_FIELD, training_samples

FUSIONS = ("adaptive", "fixed", "sum")
WARMUP_TYPES = ("linear", "cosine")


class HyMoEFeedForward(FeedForward):
    """Hybrid MoE layer replacing RecBole's ``FeedForward`` (spec §2.2).

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
    ):
        super().__init__(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
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
        """Adaptive Expert Fusion weight α (§2.2) for warm-up factor ``warmup = w(t)``. Scalar."""
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
    """RecBole ``TransformerLayer`` with the FFN swapped for :class:`HyMoEFeedForward` (§2.1)."""

    def __init__(
        self,
        n_heads: int,
        hidden_size: int,
        hidden_dropout_prob: float,
        attn_dropout_prob: float,
        layer_norm_eps: float,
        **ffn_kwargs,
    ):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(
            n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob, layer_norm_eps
        )
        self.feed_forward = HyMoEFeedForward(
            hidden_size,
            hidden_dropout_prob=hidden_dropout_prob,
            layer_norm_eps=layer_norm_eps,
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
        rows: Tensor | None = None,
        prune_queries: bool = False,
    ) -> tuple[Tensor, list[RouterOutput]]:
        """hidden ``[B, L, D]`` -> (last layer output, router outputs of the MoE layers).

        rows ``[B]``: if given, the last layer is computed only at ``rows[b]`` (the position the
        caller reads) and the output is ``[B, 1, D]``; earlier layers need every position because
        later attention reads them. See :meth:`HyMoETransformerLayer.forward` for prune_queries.
        """
        routings = []
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden, routing = layer(
                hidden,
                attention_mask,
                warmup,
                token_mask,
                rows if i == last else None,
                prune_queries,
            )
            if routing is not None:
                routings.append(routing)
        return hidden, routings


class HyMoERec(DotProductSequentialRecommender):
    r"""HyMoERec: SASRec backbone with Hybrid MoE feed-forward layers (Li, Sun & Lim, AAAI 2026).

    Loss (spec §3): RecBole ``loss_type`` (CE or BPR) + ``lb_weight`` · Σ_layers balance loss;
    ``calculate_loss`` returns ``(rec_loss, lb_weight * lb_loss)`` when the balance loss is on so
    RecBole's trainer logs both parts. The warm-up clock ``train_step`` is a buffer advanced once
    per training ``calculate_loss`` call (= one optimizer step) and saved with checkpoints.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.n_experts = config["n_experts"]
        self.top_k = config["top_k"]
        self.expert_inner_size = config["expert_inner_size"] or self.inner_size
        self.shared_expert = bool(config["shared_expert"])
        self.routed_experts = bool(config["routed_experts"])
        self.fusion = config["fusion"]
        self.fixed_alpha = config["fixed_alpha"]
        self.alpha_init = config["alpha_init"]
        self.warmup_type = config["warmup_type"]
        self.lb_weight = float(config["lb_weight"])
        self.lb_type = config["lb_type"]
        self.moe_impl = config["moe_impl"]
        self.last_position_only = bool(config["last_position_only"])
        if self.lb_type not in LB_TYPES:
            raise ValueError(f"lb_type must be one of {LB_TYPES}, got {self.lb_type!r}")
        if self.warmup_type not in WARMUP_TYPES:
            raise ValueError(f"warmup_type must be one of {WARMUP_TYPES}, got {self.warmup_type!r}")

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.trm_encoder = HyMoEEncoder(
            self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            layer_norm_eps=self.layer_norm_eps,
            inner_size=self.inner_size,
            hidden_act=self.hidden_act,
            n_experts=self.n_experts,
            top_k=self.top_k,
            expert_inner_size=self.expert_inner_size,
            use_shared=self.shared_expert,
            use_routed=self.routed_experts,
            fusion=self.fusion,
            fixed_alpha=self.fixed_alpha,
            alpha_init=self.alpha_init,
            moe_impl=self.moe_impl,
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)

        self.loss_fct = self.build_loss()

        # warm-up clock t (optimizer steps) and length T_warm, both saved in checkpoints (§2.2, A2)
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self.register_buffer(
            "warmup_length", torch.tensor(self._warmup_length(config, dataset), dtype=torch.long)
        )

        # parameters initialization
        self.apply(self._init_weights)

    @staticmethod
    def _warmup_length(config, dataset) -> int:
        """T_warm in optimizer steps: ``warmup_steps`` if set, else ``warmup_epochs`` ×
        steps per epoch.

        steps_per_epoch = ceil(#training samples / train_batch_size); ``dataset`` is the
        training split RecBole passes to the model: one sample per prefix under
        ``train_objective: prefix``, one per user under ``sequence``.
        """
        if config["warmup_steps"] is not None:
            return max(int(config["warmup_steps"]), 0)
        epochs = float(config["warmup_epochs"] or 0)
        steps_per_epoch = math.ceil(training_samples(config, dataset) / config["train_batch_size"])
        return max(int(round(epochs * steps_per_epoch)), 0)

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's SASRec initialisation; expert banks N(0, initializer_range)."""
        super()._init_weights(module)
        if isinstance(module, ExpertBank):
            module.reset_parameters(self.initializer_range)

    # ------------------------------------------------------------------ schedule (§2.2, A2)
    def warmup_factor(self) -> Tensor:
        """w(t) = min(1, t / T_warm) (linear) or its cosine ramp; 1 when warm-up is off. Scalar."""
        if int(self.warmup_length) <= 0:
            return torch.ones((), device=self.train_step.device)
        ratio = (self.train_step.float() / self.warmup_length.float()).clamp(max=1.0)
        if self.warmup_type == "cosine":
            ratio = 0.5 * (1.0 - torch.cos(math.pi * ratio))
        return ratio

    def alphas(self) -> list[float]:
        """Current fusion weight α of each HyMoE layer (empty when routed experts are off)."""
        if not self.routed_experts or not self.shared_expert:
            return []
        w = self.warmup_factor()
        return [float(layer.feed_forward.alpha(w).detach()) for layer in self.trm_encoder.layer]

    # ------------------------------------------------------------------ model
    def _encode(
        self, item_seq: Tensor, item_seq_len: Tensor, full_routing: bool = True
    ) -> tuple[Tensor, list[RouterOutput], Tensor]:
        """Returns (seq_output ``[B, D]``, router outputs per MoE layer, token_mask ``[B, L]``).

        full_routing=False (scoring only) lets the last layer skip the queries nobody reads; its
        router output then covers one token per sequence instead of every token.
        """
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        position_ids = position_ids.unsqueeze(0).expand_as(item_seq)
        position_embedding = self.position_embedding(position_ids)

        item_emb = self.item_embedding(item_seq)
        input_emb = item_emb + position_embedding
        input_emb = self.LayerNorm(input_emb)
        input_emb = self.dropout(input_emb)  # [B, L, D]

        extended_attention_mask = self.get_attention_mask(item_seq)
        token_mask = item_seq != 0  # [B, L] non-padding tokens
        if self.last_position_only:
            # Only position len-1 of the last layer is read: compute that layer there alone. When
            # the loss is needed, attention still runs for every query so that the router
            # (balance loss, statistics) sees every non-padding token, as spec §3 defines it.
            output, routings = self.trm_encoder(
                input_emb,
                extended_attention_mask,
                self.warmup_factor(),
                token_mask,
                rows=item_seq_len - 1,
                prune_queries=not full_routing,
            )
            return output[:, 0], routings, token_mask  # [B, D]
        output, routings = self.trm_encoder(
            input_emb, extended_attention_mask, self.warmup_factor(), token_mask
        )
        output = self.gather_indexes(output, item_seq_len - 1)
        return output, routings, token_mask  # [B, D]

    def forward(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """Sequence representation at the last valid position. ``[B, D]``."""
        return self._encode(item_seq, item_seq_len, full_routing=False)[0]

    def _encode_positions(self, item_seq: Tensor) -> tuple[Tensor, list[RouterOutput], Tensor]:
        """Every position of the last layer: (``[B, L, D]``, router outputs, mask ``[B, L]``)."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        input_emb = self.item_embedding(item_seq) + self.position_embedding(position_ids)
        input_emb = self.dropout(self.LayerNorm(input_emb))  # [B, L, D]
        token_mask = item_seq != 0  # [B, L]
        output, routings = self.trm_encoder(
            input_emb, self.get_attention_mask(item_seq), self.warmup_factor(), token_mask
        )
        return output, routings, token_mask

    def forward_positions(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """Representation at every position, ``[B, L, D]`` (causal: position j sees items 0..j)."""
        return self._encode_positions(item_seq)[0]

    def balance_loss(self, routings: list[RouterOutput], token_mask: Tensor) -> Tensor:
        """Σ over layers of the per-layer load-balance loss (spec §3, ``lb_type``)."""
        return sum(
            load_balance_loss(self.lb_type, r.probs, r.indices, token_mask) for r in routings
        )

    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output, routings, token_mask = self._encode(item_seq, item_seq_len)
        loss = self.rec_loss(seq_output, interaction)
        if self.training:
            with torch.no_grad():
                self.train_step += 1  # t advances once per optimizer step, never in eval
        if self.lb_weight > 0 and routings:
            return loss, self.lb_weight * self.balance_loss(routings, token_mask)
        return loss

    def calculate_sequence_loss(self, interaction, negatives: Tensor | None = None):
        """``train_objective: sequence``: next-item cross-entropy at every non-padding position
        plus the balance loss over the same tokens (spec §3); the warm-up clock advances once
        per call, as in :meth:`calculate_loss`."""
        states, routings, token_mask = self._encode_positions(interaction[self.ITEM_SEQ])
        loss = position_cross_entropy(
            states, interaction[TARGET_LIST_FIELD], self.item_embedding.weight, negatives
        )
        if self.training:
            with torch.no_grad():
                self.train_step += 1
        if self.lb_weight > 0 and routings:
            return loss, self.lb_weight * self.balance_loss(routings, token_mask)
        return loss

    # ------------------------------------------------------------------ visibility
    def epoch_summary(self) -> dict[str, object]:
        """Routing statistics accumulated since the last reset, plus the current α and w(t)."""
        layers = []
        if self.routed_experts:
            layers = [layer.feed_forward.stats.summary() for layer in self.trm_encoder.layer]
        return {
            "train_step": int(self.train_step),
            "warmup": float(self.warmup_factor()),
            "alpha": self.alphas(),
            "layers": layers,
        }

    def reset_epoch_stats(self) -> None:
        if self.routed_experts:
            for layer in self.trm_encoder.layer:
                layer.feed_forward.stats.reset()

    def log_epoch_stats(self, logger, tensorboard, epoch_idx: int) -> dict[str, object]:
        """Log α, w(t) and expert load of the epoch just trained, then reset the statistics.

        Called by ``recbole_moe.trainer.MoETrainer`` after each training epoch. Writes one logger
        line per layer and tensorboard scalars under ``MoE/``; returns the summary.
        """
        summary = self.epoch_summary()
        if logger is not None:
            alphas = ", ".join(f"{a:.4f}" for a in summary["alpha"]) or "-"
            logger.info(
                f"epoch {epoch_idx} MoE: step={summary['train_step']} "
                f"warmup={summary['warmup']:.4f} alpha=[{alphas}]"
            )
            for i, s in enumerate(summary["layers"]):
                load = " ".join(f"{f:.3f}" for f in s["token_fraction"])
                prob = " ".join(f"{p:.3f}" for p in s["mean_prob"])
                logger.info(
                    f"epoch {epoch_idx} MoE layer {i}: load=[{load}] "
                    f"load_entropy={s['load_entropy']:.4f} mean_prob=[{prob}]"
                )
        if tensorboard is not None:
            tensorboard.add_scalar("MoE/warmup", summary["warmup"], epoch_idx)
            for i, a in enumerate(summary["alpha"]):
                tensorboard.add_scalar(f"MoE/alpha_layer{i}", a, epoch_idx)
            for i, s in enumerate(summary["layers"]):
                tensorboard.add_scalar(f"MoE/load_entropy_layer{i}", s["load_entropy"], epoch_idx)
                for e, f in enumerate(s["token_fraction"]):
                    tensorboard.add_scalar(f"MoE/load_layer{i}/expert{e}", f, epoch_idx)
        self.reset_epoch_stats()
        return summary

"""
HyMoERec
################################################

Reference:
    Kunrong Li, Zhu Sun, Kwan Hui Lim. "HyMoERec: Hybrid Mixture-of-Experts for Sequential
    Recommendation." AAAI 2026 Student Abstract, arXiv:2511.06388.

A SASRec-style Transformer whose position-wise FFN is replaced by a hybrid MoE layer: a dense
shared FFN plus top-K routed expert FFNs, fused as ``y = y_dense + α · y_moe`` with
``α = σ(a) · w(t)`` (the paper's Adaptive Expert Fusion with a progressive warm-up). The layers
are in :mod:`recbole_moe.layers.hymoe`; router, experts and balance losses in
:mod:`recbole_moe.layers.moe`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recbole_moe.layers.dropout import make_dropout
from recbole_moe.layers.hymoe import FUSIONS, HyMoEEncoder
from recbole_moe.layers.moe import (
    LB_TYPES,
    MOE_IMPLS,
    ExpertBank,
    RouterOutput,
    load_balance_loss,
)
from recbole_moe.layers.transformer import layer_impls
from recbole_moe.model.base import DotProductSequentialRecommender
from recbole_moe.model.declaration import Insight, Number, OneOf, Panel, Switch, fmt_list
from recbole_moe.objective import training_samples

WARMUP_TYPES = ("linear", "cosine")


class HyMoERec(DotProductSequentialRecommender):
    r"""HyMoERec: SASRec backbone with Hybrid MoE feed-forward layers (Li, Sun & Lim, AAAI 2026).

    Loss (HyMoERec's objective): RecBole ``loss_type`` (CE or BPR) + ``lb_weight`` · Σ_layers
    balance loss;
    ``calculate_loss`` returns ``(rec_loss, lb_weight * lb_loss)`` when the balance loss is on so
    RecBole's trainer logs both parts. The warm-up clock ``train_step`` is a buffer advanced once
    per training ``calculate_loss`` call (= one optimizer step) and saved with checkpoints.
    """

    # ------------------------------------------------------------------ declarations
    #: Each setting's allowed values or range, checked before any data is loaded.
    accepts = {
        "n_experts": Number(low=1, integer=True),
        "top_k": Number(low=1, integer=True),
        "expert_inner_size": Number(low=1, integer=True, optional=True),
        "shared_expert": Switch(),
        "routed_experts": Switch(),
        "fusion": OneOf(FUSIONS),
        "fixed_alpha": Number(),
        "alpha_init": Number(),
        "moe_impl": OneOf(MOE_IMPLS),
        "last_position_only": Switch(),
        "warmup_epochs": Number(low=0),
        "warmup_steps": Number(low=0, integer=True, optional=True),
        "warmup_type": OneOf(WARMUP_TYPES),
        "lb_weight": Number(low=0),
        "lb_type": OneOf(LB_TYPES),
    }

    @staticmethod
    def setting_rules(config) -> list[tuple[str, str]]:
        """Rules between settings: ``(setting, problem)`` for each one ``config`` breaks."""
        if not (config["shared_expert"] or config["routed_experts"]):
            return [
                ("routed_experts", "HyMoERec needs the routed experts when shared_expert is off")
            ]
        return []

    #: Trains under ``train_objective: sequence`` (:meth:`sequence_states`).
    sequence_trainable = True
    #: Causal, with no padding position read: batches may be trimmed to their longest history.
    padding_invariant = True
    #: Compared against the strongest baseline in benchmark reports.
    proposed = True
    #: Benchmark ``cpu-smoke`` scale: experts as small as the reduced FFN, warm-up within 2 epochs.
    smoke_settings = {"expert_inner_size": 64, "warmup_epochs": 1}
    #: What a benchmark report shows of :meth:`epoch_statistics`.
    insight = Insight(
        description="HyMoERec: α = σ(a)·w(t) per layer (the weight of the routed experts "
        "beside the dense branch), and per layer the share of routed tokens per expert with "
        "its normalised entropy (1: balanced, 0: collapsed onto one expert).",
        columns=(
            ("α per layer", lambda s: fmt_list(s["alpha"])),
            (
                "expert load per layer",
                lambda s: (
                    "; ".join(fmt_list(layer["token_fraction"], 2) for layer in s["layers"]) or "–"
                ),
            ),
            (
                "load entropy per layer",
                lambda s: fmt_list([layer["load_entropy"] for layer in s["layers"]]),
            ),
        ),
        panels=(
            Panel("α per layer", lambda s: s["alpha"]),
            Panel(
                "expert-load entropy per layer",
                lambda s: [layer["load_entropy"] for layer in s["layers"]],
            ),
        ),
        series="layer",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.read_settings(config)
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
        # How the layers compute, chosen here (same parameters either way): self-attention by
        # RecBole's operations or one scaled_dot_product_attention call (attention_impl; causal:
        # is_causal=True instead of the mask), dropout masks (dropout_impl), GELU (gelu_impl).
        self.impls = layer_impls(config)

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
            impls=self.impls,
            causal=True,  # RecBole's causal + padding mask; no padding position is read
        )
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = make_dropout(self.hidden_dropout_prob, self.impls.dropout)

        self.loss_fct = self.build_loss()

        # warm-up clock t (optimizer steps) and length T_warm, both saved in checkpoints (the
        # paper's progressive warm-up; t counts optimizer steps)
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

    # ------------------------------------------------------------------ warm-up schedule
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
        input_emb = self.embed_sequence(item_seq)  # [B, L, D]

        extended_attention_mask = self.get_attention_mask(item_seq)
        token_mask = item_seq != 0  # [B, L] non-padding tokens
        if self.last_position_only:
            # Only position len-1 of the last layer is read: compute that layer there alone. When
            # the loss is needed, attention still runs for every query so that the router
            # (balance loss, statistics) sees every non-padding token, as the paper's loss does.
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
        input_emb = self.embed_sequence(item_seq)  # [B, L, D]
        token_mask = item_seq != 0  # [B, L]
        output, routings = self.trm_encoder(
            input_emb, self.get_attention_mask(item_seq), self.warmup_factor(), token_mask
        )
        return output, routings, token_mask

    def forward_positions(self, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
        """Representation at every position, ``[B, L, D]`` (causal: position j sees items 0..j)."""
        return self._encode_positions(item_seq)[0]

    def balance_loss(self, routings: list[RouterOutput], token_mask: Tensor) -> Tensor:
        """Σ over layers of the per-layer load-balance loss (``lb_type``)."""
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

    def sequence_states(self, interaction) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``train_objective: sequence``: states ``[B, L, D]`` at every position and the balance
        loss over the same tokens (when ``lb_weight > 0``); the warm-up clock advances once per
        call, as in :meth:`calculate_loss`. The base class scores the states
        (:meth:`calculate_sequence_loss`)."""
        states, routings, token_mask = self._encode_positions(interaction[self.ITEM_SEQ])
        if self.training:
            with torch.no_grad():
                self.train_step += 1
        if self.lb_weight > 0 and routings:
            return states, (self.lb_weight * self.balance_loss(routings, token_mask),)
        return states, ()

    # ------------------------------------------------------------------ statistics
    def epoch_statistics(self) -> dict[str, object]:
        """Routing statistics of each HyMoE layer since the last reset, plus the current α and
        w(t); the trainer logs them after each training epoch."""
        layers = []
        if self.routed_experts:
            layers = [layer.feed_forward.stats.summary() for layer in self.trm_encoder.layer]
        return {
            "train_step": int(self.train_step),
            "warmup": float(self.warmup_factor()),
            "alpha": self.alphas(),
            "layers": layers,
        }

    def reset_statistics(self) -> None:
        if self.routed_experts:
            for layer in self.trm_encoder.layer:
                layer.feed_forward.stats.reset()

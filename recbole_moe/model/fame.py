"""
FAME
################################################

Reference:
    Mingrui Liu, Sixiao Zhang, Cheng Long. "Facet-Aware Multi-Head Mixture-of-Experts Model
    for Sequential Recommendation." in WSDM 2025 (arXiv 2411.01457).

The backbone is SASRec: the first ``n_layers - 1`` layers are RecBole's ``TransformerEncoder``
layers (:mod:`recbole_moe.layers.transformer`, built with the chosen attention kernel); the
last layer is :class:`~recbole_moe.layers.facet_attention.FacetMoELayer` (the paper's MoE
self-attention inside each head, then a per-head Add & Norm and FFN'), and every head scores
the items through its own item sub-embedding; a gate fuses the per-head scores (the paper's
facet-aware multi-head prediction).

For scoring, only the last valid position of the last layer reaches the output (every operation
after the attention is position-wise), so that layer evaluates its queries at that position only.
This is mathematically identical to computing all L positions and gathering afterwards, and it
keeps the extra N-fold query work of the experts off the ``[B, H, N, L, L]`` attention tensor.
Under ``train_objective: sequence`` the last layer is evaluated at every position
(:meth:`FAME.forward_positions`).

The ablation switches ``moe_attention``, ``head_prediction``, ``gate``, ``fusion`` and
``item_subemb`` are described in the property file ``properties/model/FAME.yaml``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_moe.layers.dropout import make_dropout
from recbole_moe.layers.facet_attention import (
    FacetMoELayer,
    MoEMultiHeadAttention,
    facet_scores,
    log_mixture,
    log_mixture_inplace,
    query_key_mask,
)
from recbole_moe.layers.moe import MeanWeights, softmax_fp32
from recbole_moe.layers.transformer import TransformerEncoder, layer_impls
from recbole_moe.model.base import DotProductSequentialRecommender
from recbole_moe.model.declaration import (
    Insight,
    Number,
    OneOf,
    Panel,
    Switch,
    entropy,
    fmt_list,
)


class FAME(DotProductSequentialRecommender):
    r"""FAME: facet-aware multi-head mixture-of-experts sequential recommender (WSDM 2025).

    ``forward`` returns the sequence representation that scores items by a single dot product
    with the item embedding: for ``fusion=logits`` the gate-weighted per-head scores are linear
    in the item embedding, ŷ(v) = Σ_h g_h F_t^(h)·(W_f^(h) x_v) = (Σ_h g_h W_f^(h)ᵀ F_t^(h))·x_v,
    so full-sort scoring costs the same as SASRec and builds nothing larger than ``[B, |I|]``.
    """

    # ------------------------------------------------------------------ declarations
    #: Each setting's allowed values or range, checked before any data is loaded.
    accepts = {
        "head_inner_size": Number(low=0, integer=True, optional=True),
        "n_experts": Number(low=1, integer=True),
        "moe_attention": Switch(),
        "head_prediction": Switch(),
        "gate": OneOf(("learned", "uniform")),
        "fusion": OneOf(("logits", "probs")),
        "item_subemb": OneOf(("proj", "split")),
    }
    #: Trains under ``train_objective: sequence`` (:meth:`forward_positions`).
    sequence_trainable = True
    #: Causal, with no padding position read: batches may be trimmed to their longest history.
    padding_invariant = True
    #: Compared against the strongest baseline in benchmark reports.
    proposed = True
    #: Benchmark ``cpu-smoke`` scale: per-head size 16 at the reduced hidden size 32.
    smoke_settings = {"n_heads": 2}
    #: What a benchmark report shows of :meth:`epoch_statistics`.
    insight = Insight(
        description="FAME: mean gate weight per head (facet) and the normalised entropy of "
        "each head's mean router distribution over its query experts (1: the experts are "
        "mixed evenly, 0: one expert per head).",
        columns=(
            ("gate per head", lambda s: fmt_list(s["gate"])),
            ("gate entropy", lambda s: f"{entropy(s['gate']):.3f}"),
            ("router entropy per head", lambda s: fmt_list([entropy(h) for h in s["router"]])),
        ),
        panels=(
            Panel("gate weight per head", lambda s: s["gate"]),
            Panel("router entropy per head", lambda s: [entropy(h) for h in s["router"]]),
        ),
        series="head",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.read_settings(config)
        self.head_inner_size = config["head_inner_size"]
        self.n_experts = config["n_experts"]
        self.moe_attention = bool(config["moe_attention"])
        self.head_prediction = bool(config["head_prediction"])
        self.gate_type = config["gate"]
        self.fusion = config["fusion"]
        self.item_subemb = config["item_subemb"]
        if self.n_layers < 1 or self.hidden_size % self.n_heads != 0:
            raise ValueError("FAME needs n_layers >= 1 and hidden_size a multiple of n_heads")
        self.head_size = self.hidden_size // self.n_heads
        n_experts = self.n_experts if self.moe_attention else 1
        if not self.head_inner_size:
            self.head_inner_size = 4 * self.head_size
        # How the layers compute, chosen here (same parameters either way): the lower layers'
        # self-attention by RecBole's operations or one scaled_dot_product_attention call
        # (attention_impl; causal: is_causal=True instead of the mask), dropout masks
        # (dropout_impl), GELU (gelu_impl).
        self.impls = layer_impls(config)

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = make_dropout(self.hidden_dropout_prob, self.impls.dropout)
        self.trm_encoder = TransformerEncoder(
            n_layers=self.n_layers - 1,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            impls=self.impls,
            causal=True,  # RecBole's causal + padding mask; no padding position is read
        )
        self.last_layer = FacetMoELayer(
            n_heads=self.n_heads,
            n_experts=n_experts,
            hidden_size=self.hidden_size,
            inner_size=self.head_inner_size if self.head_prediction else self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            head_output=self.head_prediction,
            impls=self.impls,
        )
        # W_f: row block h of the weight is W_f^(h)ᵀ (d' x d), the item sub-embeddings
        self.item_proj = (
            nn.Linear(self.hidden_size, self.hidden_size, bias=False)
            if self.head_prediction and self.item_subemb == "proj"
            else None
        )
        # W_g, b_g of the gate over heads
        self.gate = (
            nn.Linear(self.hidden_size, self.n_heads)
            if self.head_prediction and self.gate_type == "learned"
            else None
        )

        self.loss_fct = self.build_loss()

        # per-epoch means of the gate [H] and router weights [H, N] over training sequences
        self.gate_stats = MeanWeights(self.n_heads)
        self.router_stats = MeanWeights(self.n_heads, n_experts)

        # parameters initialization
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's SASRec initialisation; the router parameter gets the same normal init."""
        super()._init_weights(module)
        if isinstance(module, MoEMultiHeadAttention) and module.router is not None:
            module.router.data.normal_(mean=0.0, std=self.initializer_range)

    # ------------------------------------------------------------------ encoder
    def _lower_layers(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Embedding + the first ``n_layers - 1`` SASRec layers (FAME's backbone):
        X ``[B, L, d]``."""
        hidden = self.embed_sequence(item_seq)  # X0, [B, L, d]
        if self.n_layers > 1:
            attention_mask = self.get_attention_mask(item_seq)  # [B, 1, L, L]
            layers = self.trm_encoder(hidden, attention_mask, output_all_encoded_layers=False)
            hidden = layers[-1]  # X, [B, L, d]
        return hidden

    def _facet_layer(
        self, hidden: torch.Tensor, item_seq: torch.Tensor, query_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Last layer and gate at ``query_index`` ``[B, Q]``: F ``[B, Q, H, d']`` (``[B, Q, d]``
        without head_prediction), g ``[B, Q, H]``, β ``[B, Q, H, N]``."""
        key_mask = query_key_mask(item_seq, query_index, hidden.dtype)  # [B, Q, L]
        head_repr, beta = self.last_layer(hidden, query_index, key_mask)
        return head_repr, self.gate_weights(head_repr), beta

    def encode(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""FAME at the last valid position (backbone, last layer, gate): sequence -> head
        outputs, gate and router.

        Returns:
            F_t ``[B, H, d']`` (``[B, d]`` when ``head_prediction`` is off),
            gate g ``[B, H]`` (uniform when off) and router weights β ``[B, H, N]``.
        """
        hidden = self._lower_layers(item_seq)
        head_repr, gate, beta = self._facet_layer(hidden, item_seq, (item_seq_len - 1)[:, None])
        head_repr, gate, beta = head_repr[:, 0], gate[:, 0], beta[:, 0]
        if self.training:
            self.gate_stats.update(gate)
            self.router_stats.update(beta)
        return head_repr, gate, beta

    def encode_positions(
        self, item_seq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""FAME at every position (``train_objective: sequence``).

        Returns:
            F ``[B, L, H, d']`` (``[B, L, d]`` without head_prediction), g ``[B, L, H]`` and
            β ``[B, L, H, N]``; statistics count the non-padding positions.
        """
        B, L = item_seq.shape
        hidden = self._lower_layers(item_seq)
        query_index = torch.arange(L, device=item_seq.device).expand(B, L)
        head_repr, gate, beta = self._facet_layer(hidden, item_seq, query_index)
        if self.training:
            keep = item_seq != 0
            self.gate_stats.update(gate[keep])
            self.router_stats.update(beta[keep])
        return head_repr, gate, beta

    def gate_weights(self, head_repr: torch.Tensor) -> torch.Tensor:
        r"""g = softmax(W_g [F_t^(1) ‖ … ‖ F_t^(H)] + b_g): ``[..., H, d']`` -> ``[..., H]``
        (FAME, gate of the facet-aware prediction)."""
        lead = head_repr.shape[:-2] if self.head_prediction else head_repr.shape[:-1]
        if self.gate is None:
            return head_repr.new_full((*lead, self.n_heads), 1.0 / self.n_heads)
        return softmax_fp32(self.gate(head_repr.reshape(*lead, self.hidden_size)))

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        r"""Fused query vector u ``[B, d]`` with ŷ(v) = u·x_v (exact for ``fusion=logits``).

        u = Σ_h g_h W_f^(h) F_t^(h) (proj), ⊕_h g_h F_t^(h) (split), or the concatenated
        representation when ``head_prediction`` is off.
        """
        return self._fold(*self.encode(item_seq, item_seq_len)[:2])

    def forward_positions(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        r"""Fused query vector at every position, ``[B, L, d]``: the gate-scaled, concatenated
        head outputs times the concatenated item sub-embeddings in one matmul, so the loss
        never holds a ``[B, L, H, n_items]`` tensor (``fusion=logits``)."""
        return self._fold(*self.encode_positions(item_seq)[:2])

    def _fold(self, head_repr: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Gate-scaled ``[..., H, d']`` head outputs -> ``[..., d]`` vector in item-embedding
        space (``head_repr`` itself without head_prediction)."""
        if not self.head_prediction:
            return head_repr
        weighted = head_repr * gate.unsqueeze(-1)
        flat = weighted.reshape(*weighted.shape[:-2], self.hidden_size)
        if self.item_proj is None:
            return flat
        return flat @ self.item_proj.weight  # Σ_h W_f^(h) (weighted)_h

    # ------------------------------------------------------------------ scoring
    def item_subembeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        r"""x_v^(h) for the given items (all items when None): ``[..., H, d']`` (FAME, item
        sub-embeddings)."""
        emb = self.item_embedding.weight if items is None else self.item_embedding(items)
        if self.item_proj is not None:
            emb = self.item_proj(emb)
        return emb.view(*emb.shape[:-1], self.n_heads, self.head_size)

    def head_scores(
        self, head_repr: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-head scores of ``items`` (None: all, ``[B]`` or ``[B, M]`` ids) for F_t
        ``[B, H, d']``, see :func:`~recbole_moe.layers.facet_attention.facet_scores`."""
        return facet_scores(head_repr, self.item_subembeddings(items), items)

    def _scores_all(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        r"""Fused scores for all items ``[B, n_items]``: logits, or log-probabilities for
        ``fusion=probs`` (log Σ_h g_h softmax(P^(h)))."""
        if not self.head_prediction or self.fusion == "logits":
            seq_output = self.forward(item_seq, item_seq_len)  # [B, d]
            return seq_output @ self.item_embedding.weight.t()
        head_repr, gate, _ = self.encode(item_seq, item_seq_len)
        scores = self.head_scores(head_repr)  # [B, H, n_items]
        if torch.is_grad_enabled():
            return log_mixture(scores, gate)
        return log_mixture_inplace(scores, gate)

    def _scores_items(self, interaction, *items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Fused scores of each ``[B]`` item tensor in ``items`` (1 encoder pass): ``[B]`` each."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        if not self.head_prediction or self.fusion == "logits":
            seq_output = self.forward(item_seq, item_seq_len)  # [B, d]
            return tuple((seq_output * self.item_embedding(i)).sum(-1) for i in items)
        scores = self._scores_all(item_seq, item_seq_len)  # [B, n_items]
        return tuple(scores.gather(1, i.view(-1, 1)).squeeze(1) for i in items)

    def calculate_loss(self, interaction) -> torch.Tensor:
        """CE over all items on the fused scores, or BPR with one sampled negative."""
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            pos_score, neg_score = self._scores_items(
                interaction, pos_items, interaction[self.NEG_ITEM_ID]
            )
            return self.loss_fct(pos_score, neg_score)
        logits = self._scores_all(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        if self.head_prediction and self.fusion == "probs":
            return F.nll_loss(logits, pos_items)  # logits are log mixture probabilities
        return self.loss_fct(logits, pos_items)

    def predict(self, interaction) -> torch.Tensor:
        """Fused score of ``interaction[ITEM_ID]``, ``[B]``."""
        return self._scores_items(interaction, interaction[self.ITEM_ID])[0]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Fused scores of all items, ``[B, n_items]``."""
        return self._scores_all(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    # ------------------------------------------------------------------ inspection
    @torch.no_grad()
    def explain(self, interaction, items: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Which facet drove a recommendation.

        Args:
            interaction: batch with the item sequence and its length.
            items: optional ``[B]`` or ``[B, M]`` item ids; all items when None.

        Returns:
            dict with ``per_head_scores`` ``[B, H, n_items]`` (or ``[B, H]`` / ``[B, H, M]``),
            ``gate`` ``[B, H]``, ``router`` ``[B, H, N]`` (router weights at the last position)
            and ``scores`` (fused, same trailing shape as the items). Requires
            ``head_prediction``.
        """
        if not self.head_prediction:
            raise ValueError("explain() needs head_prediction=True")
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        head_repr, gate, beta = self.encode(item_seq, item_seq_len)
        per_head = self.head_scores(head_repr, items)
        g = gate if per_head.dim() == 2 else gate.unsqueeze(-1)
        if self.fusion == "logits":
            fused = (g * per_head).sum(1)
        else:
            fused = log_mixture_inplace(self.head_scores(head_repr), gate)  # [B, n_items]
            if items is not None:
                fused = fused.gather(1, items.view(items.shape[0], -1)).view(items.shape)
        return {"per_head_scores": per_head, "gate": gate, "router": beta, "scores": fused}

    # ------------------------------------------------------------------ statistics
    def epoch_statistics(self) -> dict[str, torch.Tensor] | None:
        """Mean gate per head ``[H]`` and mean router distribution per head ``[H, N]`` over the
        training sequences since the last reset (None if none); the trainer logs them."""
        gate = self.gate_stats.mean()
        if gate is None:
            return None
        return {"gate": gate, "router": self.router_stats.mean()}

    def reset_statistics(self) -> None:
        self.gate_stats.reset()
        self.router_stats.reset()

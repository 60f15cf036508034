"""What our sequential recommenders share with RecBole's SASRec: initialisation, the
recommendation loss and dot-product scoring against the item embedding table."""

from __future__ import annotations

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import nn

from recbole_moe.layers.sequence_loss import position_cross_entropy
from recbole_moe.objective import TARGET_LIST_FIELD

#: Settings of RecBole's SASRec Transformer, read by the Transformer-based models.
TRANSFORMER_SETTINGS = (
    "n_layers",
    "n_heads",
    "hidden_size",
    "inner_size",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "loss_type",
)


class DotProductSequentialRecommender(SequentialRecommender):
    """A ``SequentialRecommender`` whose ``forward(item_seq, item_seq_len)`` returns a ``[B, D]``
    sequence representation scored against ``self.item_embedding`` by a dot product.

    Subclasses set ``self.initializer_range``, ``self.loss_type`` and ``self.item_embedding``,
    call :meth:`build_loss` in ``__init__``, and may override any method. To train under
    ``train_objective: sequence`` they implement :meth:`forward_positions` and declare
    ``sequence_trainable = True``; what else a model declares on its class (the settings it
    accepts, the statistics it reports) is in :mod:`recbole_moe.model.declaration`.
    """

    def read_settings(self, config, names=TRANSFORMER_SETTINGS) -> None:
        """Sets ``self.<name> = config[<name>]`` for each setting name."""
        for name in names:
            setattr(self, name, config[name])

    def embed_sequence(self, item_seq: torch.Tensor) -> torch.Tensor:
        """SASRec's input layer: dropout(LayerNorm(item + position embedding)),
        ``[B, L]`` -> ``[B, L, D]``; uses ``self.position_embedding``, ``self.LayerNorm`` and
        ``self.dropout``."""
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
        input_emb = self.item_embedding(item_seq) + self.position_embedding(position_ids)
        return self.dropout(self.LayerNorm(input_emb))

    def build_loss(self) -> nn.Module:
        """RecBole's loss for ``loss_type``: ``BPRLoss`` or full-softmax ``CrossEntropyLoss``."""
        if self.loss_type == "BPR":
            return BPRLoss()
        if self.loss_type == "CE":
            return nn.CrossEntropyLoss()
        raise NotImplementedError("Make sure 'loss_type' in ['BPR', 'CE']!")

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's SASRec initialisation: normal(0, initializer_range) for Linear/Embedding,
        identity LayerNorm, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def rec_loss(self, seq_output: torch.Tensor, interaction) -> torch.Tensor:
        """``loss_type`` loss of ``[B, D]`` representations against the target items."""
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = torch.sum(seq_output * self.item_embedding(pos_items), dim=-1)  # [B]
            neg_score = torch.sum(seq_output * self.item_embedding(neg_items), dim=-1)  # [B]
            return self.loss_fct(pos_score, neg_score)
        logits = torch.matmul(
            seq_output, self.item_embedding.weight.transpose(0, 1)
        )  # [B, n_items]
        return self.loss_fct(logits, pos_items)

    def calculate_loss(self, interaction) -> torch.Tensor:
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.rec_loss(seq_output, interaction)

    def predict(self, interaction) -> torch.Tensor:
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        test_item_emb = self.item_embedding(interaction[self.ITEM_ID])
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction) -> torch.Tensor:
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B, n_items]

    # -- train_objective: sequence ---------------------------------------------------------
    def forward_positions(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` items -> ``[B, L, D]`` next-item representation at every position, where
        position ``j`` equals :meth:`forward` on the prefix of length ``j + 1``."""
        raise NotImplementedError(f"{type(self).__name__} does not train at every position")

    def sequence_states(self, interaction) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``[B, L, D]`` states at every position and the model's extra loss terms (none
        here): what :meth:`calculate_sequence_loss` scores, and what the ``sequence`` objective
        collects over a batch's length groups to score them in one loss call."""
        states = self.forward_positions(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return states, ()

    def calculate_sequence_loss(self, interaction, negatives: torch.Tensor | None = None):
        """Cross-entropy of the next item at every non-padding position (full softmax, or
        sampled over ``negatives`` ``[N]``), see :func:`position_cross_entropy`, plus the
        extra terms of :meth:`sequence_states` (a tuple when there are any)."""
        states, terms = self.sequence_states(interaction)
        loss = position_cross_entropy(
            states, interaction[TARGET_LIST_FIELD], self.item_embedding.weight, negatives
        )
        return (loss, *terms) if terms else loss

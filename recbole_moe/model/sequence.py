"""Training at every position (``train_objective: sequence``) for our models and RecBole's.

:class:`SequenceObjective` is the loss function the trainer uses under ``sequence``. It reads a
batch of whole training sequences (``item_id_list`` ``[B, L]`` inputs, ``item_length`` ``[B]``
and :data:`~recbole_moe.objective.TARGET_LIST_FIELD` ``[B, L]`` next items) and returns the
model's loss at every non-padding position:

* our models implement ``calculate_sequence_loss(interaction, negatives)`` themselves
  (:class:`~recbole_moe.model.base.DotProductSequentialRecommender`);
* RecBole's ``SASRec`` and ``GRU4Rec`` are trained through :func:`position_states`, which runs
  their own modules without the final gather, so their parameters (and checkpoints) stay
  RecBole's;
* RecBole's ``BERT4Rec`` keeps its cloze objective on one masked sequence per user
  (:func:`bert4rec_cloze_loss`).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import Tensor, nn

from recbole_moe.errors import ConfigError
from recbole_moe.layers.sequence_loss import position_cross_entropy, sample_negatives
from recbole_moe.objective import SEQUENCE_MODELS, TARGET_LIST_FIELD

Loss = Union[Tensor, tuple[Tensor, ...]]


def sasrec_positions(model: SASRec, item_seq: Tensor) -> Tensor:
    """RecBole ``SASRec.forward`` without the final gather: ``[B, L]`` -> ``[B, L, D]``."""
    position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
    input_emb = model.item_embedding(item_seq) + model.position_embedding(position_ids)
    input_emb = model.dropout(model.LayerNorm(input_emb))
    attention_mask = model.get_attention_mask(item_seq)  # causal + padding, [B, 1, L, L]
    return model.trm_encoder(input_emb, attention_mask, output_all_encoded_layers=False)[-1]


def gru4rec_positions(model: GRU4Rec, item_seq: Tensor) -> Tensor:
    """RecBole ``GRU4Rec.forward`` without the final gather: ``[B, L]`` -> ``[B, L, D]``."""
    hidden, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))
    return model.dense(hidden)


def position_states(model: nn.Module, item_seq: Tensor, item_seq_len: Tensor) -> Tensor:
    """The model's next-item representation at every position, ``[B, L, D]``.

    Position ``j`` sees items ``0..j`` only (causal), so it equals ``model.forward`` on the
    prefix of length ``j + 1``.
    """
    if hasattr(model, "forward_positions"):
        return model.forward_positions(item_seq, item_seq_len)
    if isinstance(model, SASRec):
        return sasrec_positions(model, item_seq)
    if isinstance(model, GRU4Rec):
        return gru4rec_positions(model, item_seq)
    raise ConfigError(
        f"model {type(model).__name__} cannot train with train_objective='sequence' "
        f"(supported: {', '.join(SEQUENCE_MODELS)})"
    )


def whole_sequences(item_seq: Tensor, item_seq_len: Tensor, targets: Tensor,
                    max_length: int) -> tuple[Tensor, Tensor]:
    """Inputs + targets -> the training history itself, its most recent ``max_length`` items.

    Args:
        item_seq: ``[B, W]`` inputs ``items[:-1]``; item_seq_len ``[B]``.
        targets: ``[B, W]`` ``items[1:]`` (0 at padding).
        max_length: the longest sequence kept.

    Returns:
        ``[B, min(W + 1, max_length)]`` left-aligned items and ``[B]`` lengths.
    """
    full = torch.cat([item_seq[:, :1], targets], dim=1)  # [B, W + 1]
    length = item_seq_len + 1
    width = min(full.size(1), max_length)
    shift = (length > max_length).long()  # drop the oldest item where the window is full
    index = torch.arange(width, device=full.device).unsqueeze(0) + shift.unsqueeze(1)
    return full.gather(1, index), length - shift


def bert4rec_cloze_loss(model: BERT4Rec, interaction, negatives: Optional[Tensor]) -> Tensor:
    """BERT4Rec's cloze objective on each user's whole training sequence (vectorised).

    Every item is replaced by the mask token with probability ``mask_ratio``, as in RecBole's
    ``MaskItemSequence``; a sequence with no masked item gets its last item masked, so every
    user contributes. The loss is the cross-entropy (with BERT4Rec's output bias) of the
    masked items.
    """
    full, _ = whole_sequences(
        interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN],
        interaction[TARGET_LIST_FIELD], model.max_seq_length,
    )  # [B, W]
    present = full > 0
    masked = (torch.rand(full.shape, device=full.device) < model.mask_ratio) & present
    last = present.sum(1) - 1  # [B]
    none = ~masked.any(1)
    masked[none, last[none]] = True
    states = model.forward(full.masked_fill(masked, model.mask_token))  # [B, W, H]
    cloze_targets = full.masked_fill(~masked, 0)  # [B, W]
    weight = model.item_embedding.weight[: model.n_items]  # without the mask token
    return position_cross_entropy(states, cloze_targets, weight, negatives, model.output_bias)


class SequenceObjective:
    """The ``sequence`` regime's loss function for ``model`` (callable on a training batch).

    Args:
        model: one of :data:`~recbole_moe.objective.SEQUENCE_MODELS`.
        n_negatives: 0 for cross-entropy over all items, else the size of the sampled softmax
            (negatives drawn uniformly per batch, shared by every position).
    """

    def __init__(self, model: nn.Module, n_negatives: int = 0) -> None:
        self.model = model
        self.n_negatives = int(n_negatives)

    def negatives(self, device: torch.device) -> Optional[Tensor]:
        if not self.n_negatives:
            return None
        return sample_negatives(self.model.n_items, self.n_negatives, device)

    def __call__(self, interaction) -> Loss:
        model = self.model
        negatives = self.negatives(interaction[model.ITEM_SEQ].device)
        if hasattr(model, "calculate_sequence_loss"):
            return model.calculate_sequence_loss(interaction, negatives)
        if isinstance(model, BERT4Rec):
            return bert4rec_cloze_loss(model, interaction, negatives)
        states = position_states(model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
        return position_cross_entropy(
            states, interaction[TARGET_LIST_FIELD], model.item_embedding.weight, negatives
        )


__all__ = [
    "SequenceObjective",
    "bert4rec_cloze_loss",
    "gru4rec_positions",
    "position_states",
    "sasrec_positions",
    "whole_sequences",
]

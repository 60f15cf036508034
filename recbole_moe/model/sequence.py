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
  (:func:`bert4rec_cloze_loss`, chunked the same way).

With ``train_batch_chunks: C > 1`` a batch is computed as ``C`` groups of users of similar
history length, each trimmed to its own longest history (:meth:`SequenceObjective.chunked`):
the batch and its loss are the same, but a short history no longer pays for the padding up to
the longest one in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.bert4rec import BERT4Rec
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import Tensor, nn

from recbole_moe.errors import ConfigError
from recbole_moe.layers.sequence_loss import position_cross_entropy, sample_negatives
from recbole_moe.layers.shape_buckets import bucket_width
from recbole_moe.objective import TARGET_LIST_FIELD

Loss = Tensor | tuple[Tensor, ...]

#: RecBole's models that train under ``train_objective: sequence`` (through
#: :func:`position_states` or :func:`bert4rec_cloze_loss`): RecBole's classes cannot declare it
#: themselves, as our models do (``sequence_trainable``, :mod:`recbole_moe.model.declaration`).
RECBOLE_SEQUENCE_MODELS = (SASRec, GRU4Rec, BERT4Rec)


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
        "(it declares no sequence_trainable, see recbole_moe.model.declaration)"
    )


def whole_sequences(
    item_seq: Tensor, item_seq_len: Tensor, targets: Tensor, max_length: int
) -> tuple[Tensor, Tensor]:
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


def cloze_mask(full: Tensor, mask_ratio: float) -> Tensor:
    """``[B, W]`` positions BERT4Rec masks in ``[B, W]`` left-aligned sequences.

    Every item is masked with probability ``mask_ratio``, as in RecBole's ``MaskItemSequence``;
    a sequence with no masked item gets its last item masked, so every user contributes.
    """
    present = full > 0
    masked = (torch.rand(full.shape, device=full.device) < mask_ratio) & present
    last = present.sum(1) - 1  # [B]
    none = ~masked.any(1)
    masked[none, last[none]] = True
    return masked


def bert4rec_cloze_loss(
    model: BERT4Rec, interaction, negatives: Tensor | None, chunks: int = 1
) -> Tensor:
    """BERT4Rec's cloze objective on each user's whole training sequence (vectorised).

    The masked items (:func:`cloze_mask`) are replaced by the mask token; the loss is the mean
    cross-entropy (with BERT4Rec's output bias) of the masked items over the batch. With
    ``chunks > 1`` the masks are drawn for the whole batch first, then the users are run in
    ``chunks`` groups of similar history length, each trimmed to its longest history: BERT4Rec
    attends to non-padding keys only and its positions are left-aligned, so trailing padding
    changes no item's state. The masked states of every group are scored in one loss call: the
    same loss as at once (up to float rounding, with dropout off), with less padding computed.
    """
    full, length = whole_sequences(
        interaction[model.ITEM_SEQ],
        interaction[model.ITEM_SEQ_LEN],
        interaction[TARGET_LIST_FIELD],
        model.max_seq_length,
    )  # [B, W], [B]
    masked = cloze_mask(full, model.mask_ratio)  # [B, W]
    inputs = full.masked_fill(masked, model.mask_token)
    cloze_targets = full.masked_fill(~masked, 0)  # [B, W]
    weight = model.item_embedding.weight[: model.n_items]  # without the mask token
    if chunks <= 1 or len(full) <= 1:
        states = model.forward(inputs)  # [B, W, H]
        return position_cross_entropy(states, cloze_targets, weight, negatives, model.output_bias)
    states, targets = [], []
    for index in length_chunks(length, chunks):
        width = bucket_width(max(int(length[index].max()), 1), full.device, model.max_seq_length)
        group_targets = fit_columns(cloze_targets[index], width)  # [b, w]
        keep = group_targets > 0
        states.append(model.forward(fit_columns(inputs[index], width))[keep])  # [t, H]
        targets.append(group_targets[keep])  # [t]
    return position_cross_entropy(
        torch.cat(states).unsqueeze(0),
        torch.cat(targets).unsqueeze(0),
        weight,
        negatives,
        model.output_bias,
    )


def length_chunks(item_seq_len: Tensor, chunks: int) -> list[Tensor]:
    """Row indices of ``chunks`` groups of (nearly) equal size, ``[B]`` lengths sorted
    ascending (stable), so each group holds histories of similar length."""
    order = torch.sort(item_seq_len, stable=True).indices  # [B]
    return [part for part in torch.tensor_split(order, chunks) if len(part)]


def fit_columns(value: Tensor, width: int) -> Tensor:
    """``[B, W, ...]`` cut, or padded with 0, to ``[B, width, ...]``."""
    if width <= value.size(1):
        return value[:, :width]
    return F.pad(value, (0, 0) * (value.dim() - 2) + (0, width - value.size(1)))


def fit_width(interaction, width: int, field: str = TARGET_LIST_FIELD) -> Interaction:
    """A copy of ``interaction`` with every ``[B, W, ...]`` list field (``W`` the width of
    ``field``) cut, or padded with 0 (padding, no target), to ``width`` columns."""
    full = interaction[field].size(1)
    fields = {}
    for field, value in interaction.interaction.items():
        if value.dim() >= 2 and value.size(1) == full:
            value = fit_columns(value, width)
        fields[field] = value
    return Interaction(fields)


def trim_rows(interaction, index: Tensor, width: int):
    """Rows ``index`` of a batch with every ``[B, W, ...]`` list field cut (or padded) to
    ``width``."""
    return fit_width(interaction[index], width)


def combine(total: Loss | None, part: Loss, weight: float) -> Loss:
    """``total + weight * part`` for a loss or a tuple of loss terms."""
    if isinstance(part, tuple):
        scaled = tuple(weight * term for term in part)
        return (
            scaled if total is None else tuple(a + b for a, b in zip(total, scaled, strict=False))
        )
    return weight * part if total is None else total + weight * part


class SequenceObjective:
    """The ``sequence`` regime's loss function for ``model`` (callable on a training batch).

    Args:
        model: a model declared ``sequence_trainable`` or one of
            :data:`RECBOLE_SEQUENCE_MODELS`.
        n_negatives: 0 for cross-entropy over all items, else the size of the sampled softmax
            (negatives drawn uniformly per batch, shared by every position).
        chunks: compute each batch as this many groups of users of similar history length
            (:meth:`chunked`); 1 computes it at once, at the width of its longest history.
    """

    def __init__(self, model: nn.Module, n_negatives: int = 0, chunks: int = 1) -> None:
        self.model = model
        self.n_negatives = int(n_negatives)
        self.chunks = max(int(chunks), 1)

    def negatives(self, device: torch.device) -> Tensor | None:
        if not self.n_negatives:
            return None
        return sample_negatives(self.model.n_items, self.n_negatives, device)

    def __call__(self, interaction) -> Loss:
        device = interaction[self.model.ITEM_SEQ].device
        negatives = self.negatives(device)
        if self.chunks > 1 and len(interaction) > 1:
            if isinstance(self.model, BERT4Rec):
                return bert4rec_cloze_loss(self.model, interaction, negatives, self.chunks)
            return self.chunked(interaction, negatives)
        width = interaction[TARGET_LIST_FIELD].size(1)
        bucket = bucket_width(width, device, self.model.max_seq_length)
        if bucket != width:  # under CPU bf16 autocast only
            interaction = fit_width(interaction, bucket)
        return self.loss(interaction, negatives)

    def chunked(self, interaction, negatives: Tensor | None) -> Loss:
        """The batch's loss, computed in :attr:`chunks` length groups.

        The users are sorted by history length and split into groups; each group is trimmed to
        its longest history (the models are causal, so trailing padding changes no position's
        output; under CPU bf16 autocast the width is rounded up, see
        :mod:`~recbole_moe.layers.shape_buckets`) and run through the model. The states of
        every group's non-padding positions are then scored in one loss call, the mean over
        all the batch's positions (exactly the batch's cross-entropy, up to float rounding,
        when dropout is off); one backward pass gives the batch's gradient. A model's extra
        terms (HyMoERec's balance loss) are weighted by each group's share of the batch's
        positions (close to, not equal to, the term of the batch's mean router distribution),
        and a model's optimizer-step clock (``train_step``) advances once per batch, with every
        group seeing the same warm-up value. Without :meth:`scores_states` (a model with only
        its own ``calculate_sequence_loss``; ``benchmarks/loss_layout.py`` switches it off to
        time the earlier layout) the loss is the share-weighted sum of the groups' losses.
        """
        model = self.model
        lengths = interaction[model.ITEM_SEQ_LEN]
        targets = interaction[TARGET_LIST_FIELD]
        positions = float((targets > 0).sum().clamp(min=1))
        clock = getattr(model, "train_step", None)
        start = clock.clone() if isinstance(clock, Tensor) else None
        per_group = not self.scores_states()
        total: Loss | None = None
        extra: Loss | None = None
        states, next_items = [], []
        for index in length_chunks(lengths, self.chunks):
            share = float((targets[index] > 0).sum()) / positions
            if share == 0:
                continue
            if start is not None:
                clock.copy_(start)  # every group sees the batch's step; the last advances it
            width = max(int(lengths[index].max()), 1)
            width = bucket_width(width, lengths.device, model.max_seq_length)
            rows = trim_rows(interaction, index, width)
            if per_group:
                total = combine(total, self.loss(rows, negatives), share)
                continue
            group_states, terms = self.states(rows)
            keep = rows[TARGET_LIST_FIELD] > 0  # [b, w]
            states.append(group_states[keep])  # [t, D]
            next_items.append(rows[TARGET_LIST_FIELD][keep])  # [t]
            if terms:
                extra = combine(extra, tuple(terms), share)
        if per_group:
            return total
        if not states:  # no position to score in the whole batch: the unchunked loss (nan)
            return self.loss(interaction, negatives)
        loss = position_cross_entropy(
            torch.cat(states).unsqueeze(0),
            torch.cat(next_items).unsqueeze(0),
            model.item_embedding.weight,
            negatives,
        )
        return (loss, *extra) if extra else loss

    def scores_states(self) -> bool:
        """Whether the model's sequence loss is the cross-entropy of :meth:`states` against the
        item table: every ``sequence_trainable`` model (BERT4Rec's
        cloze loss chunks itself, :func:`bert4rec_cloze_loss`), not a model with only its own
        ``calculate_sequence_loss``."""
        model = self.model
        return hasattr(model, "sequence_states") or not hasattr(model, "calculate_sequence_loss")

    def states(self, interaction) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``[B, L, D]`` states at every position of ``interaction`` and the model's extra loss
        terms."""
        model = self.model
        if hasattr(model, "sequence_states"):
            return model.sequence_states(interaction)
        return position_states(
            model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        ), ()

    def loss(self, interaction, negatives: Tensor | None) -> Loss:
        """The model's loss at every non-padding position of ``interaction``."""
        model = self.model
        if hasattr(model, "calculate_sequence_loss"):
            return model.calculate_sequence_loss(interaction, negatives)
        if isinstance(model, BERT4Rec):
            return bert4rec_cloze_loss(model, interaction, negatives)
        states, _ = self.states(interaction)
        return position_cross_entropy(
            states, interaction[TARGET_LIST_FIELD], model.item_embedding.weight, negatives
        )


__all__ = [
    "RECBOLE_SEQUENCE_MODELS",
    "SequenceObjective",
    "bert4rec_cloze_loss",
    "cloze_mask",
    "fit_width",
    "gru4rec_positions",
    "position_states",
    "sasrec_positions",
    "whole_sequences",
]

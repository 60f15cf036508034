"""RecBole's ``Trainer`` made safe to interrupt and to trust.

:class:`RecBoleMoeTrainer` keeps RecBole's training loop (``fit``, ``evaluate``) and adds:

* per-epoch statistics of models that report them (``model.epoch_statistics()`` then
  ``model.reset_statistics()``: HyMoERec's α and expert load, FAME's gate and router weights),
  logged once per epoch, written to tensorboard and kept in ``epoch_stats``;
* data-parallel runs (``single_spec`` false): exact evaluation from all ranks' rows gathered in
  dataset order (RecBole averages per-rank metrics weighted by ``len(batched_data)``, always 4),
  the best checkpoint read by rank 0 and broadcast, the training loss averaged and the MoE
  statistics summed over ranks, tensorboard on rank 0 only;
* the wall-clock time of every training epoch and validation pass (``train_epoch_times``,
  ``valid_epoch_times``);
* a "last" checkpoint written at the start of every epoch with everything needed to continue
  exactly (model, optimizer, early-stopping state, best result, the RNG states and the training
  dataloader's shuffling generator), so ``resume_checkpoint`` / ``--resume=PATH`` after a crash
  reaches the same final metrics as an uninterrupted run with the same seed;
* atomic checkpoint writes (temporary file + rename), so a crash never leaves a truncated file
  where a good one was;
* a non-finite loss stops training with the epoch, the batch and the model named;
* ``time_budget_minutes``: training stops at the first epoch boundary after that many minutes
  of this process, once that epoch's resume checkpoint is written (:class:`TimeBudgetReached`);
  a resume continues exactly, so a long run can be split into bounded parts;
* under ``train_objective: sequence``, the loss at every position of whole training sequences
  (:class:`~recbole_moe.model.sequence.SequenceObjective`);
* ``extra_valid_metrics``: model selection on more validation metrics in the same run, each
  frozen where its own run would have stopped and kept in its own checkpoint
  (:mod:`recbole_moe.selection`);
* ``eval_filter_seen`` (or ``evaluate(..., filter_seen=True)``): a sequential model's full
  ranking without the items each user has seen before the target (:mod:`recbole_moe.data.seen`).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import recbole.trainer.trainer as recbole_trainer
import torch
import torch.distributed as dist
from recbole.trainer import Trainer
from recbole.utils import ModelType, set_color
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter

from recbole_moe import console
from recbole_moe.checkpoint import (
    RESUME_KEYS,
    atomic_torch_save,
    check_checkpoint_matches,
    last_checkpoint_path,
    load_state,
    read_checkpoint,
)
from recbole_moe.collector import TopkCollector
from recbole_moe.compat import load_recbole_checkpoint
from recbole_moe.data.seen import SeenItems, seen_problem
from recbole_moe.errors import RecBoleMoeError
from recbole_moe.files import to_plain
from recbole_moe.fingerprint import check_data, run_fingerprint
from recbole_moe.layers.moe import all_reduce_statistics, statistics_buffer_names
from recbole_moe.model.sequence import SequenceObjective, fit_width
from recbole_moe.objective import is_sequence, train_batch_chunks, train_negatives
from recbole_moe.selection import Selection, build_selections, selection_file


class NonFiniteLossError(RecBoleMoeError, FloatingPointError):
    """The training loss became NaN or infinite."""


class TimeBudgetReached(RecBoleMoeError):
    """Training stopped at an epoch boundary because ``time_budget_minutes`` ran out; the
    resume checkpoint of that epoch was written first, so the run continues exactly.

    Attributes:
        epoch: the next epoch to train (where a resume starts).
        minutes: minutes this process had trained when it stopped.
        resume_file: the ``-last.pth`` checkpoint to resume from.
    """

    def __init__(self, epoch: int, minutes: float, budget: float, resume_file: str) -> None:
        self.epoch, self.minutes, self.resume_file = epoch, minutes, resume_file
        super().__init__(
            f"time_budget_minutes={budget:g} reached after {minutes:.1f} minutes: training "
            f"stopped before epoch {epoch}; continue it with --resume={resume_file}"
        )


#: Per-sample rows a RecBole ``Collector`` fills during evaluation (one row per sampler index).
SAMPLE_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def statistics_lines(model_name: str, epoch_idx: int, stats: dict) -> list[str]:
    """Log lines of a model's epoch statistics (plain values): the top-level entries on one
    line, each entry of a list of dicts (HyMoERec's ``layers``) on a line of its own."""
    head = [f"{k}={_format(v)}" for k, v in stats.items() if not _is_dict_list(v)]
    lines = [f"epoch {epoch_idx} {model_name} statistics: " + " ".join(head)]
    for key, value in stats.items():
        if _is_dict_list(value):
            for i, entry in enumerate(value):
                items = " ".join(f"{k}={_format(v)}" for k, v in entry.items())
                lines.append(f"epoch {epoch_idx} {model_name} {key}[{i}]: {items}")
    return lines


def statistics_scalars(stats: Any, tag: str) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for every number in ``stats`` (plain values), tags like
    ``HyMoERec/layers/0/token_fraction/1``."""
    if isinstance(stats, dict):
        for key, value in stats.items():
            yield from statistics_scalars(value, f"{tag}/{key}")
    elif isinstance(stats, list):
        for i, value in enumerate(stats):
            yield from statistics_scalars(value, f"{tag}/{i}")
    elif isinstance(stats, (int, float)) and not isinstance(stats, bool):
        yield tag, float(stats)


def _is_dict_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def gather_eval_rows(struct, eval_data, device: torch.device):
    """Replace each rank's per-sample rows in ``struct`` by all ranks' rows in dataset order.

    With ``shuffle=False`` a ``DistributedSampler`` gives rank ``r`` the indices
    ``r, r + W, r + 2W, ...`` of the sample list padded (by repeating its head) to
    ``W * num_samples``. Gathering the ``[num_samples, ...]`` blocks and interleaving them
    restores that order; cutting at the true length drops the padding. ``struct`` is a
    RecBole ``DataStruct``; returns it, or ``None`` when the rows do not match the sampler.
    """
    sampler = getattr(eval_data, "sampler", None)
    if not isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        return None
    world, n_local, n_total = dist.get_world_size(), sampler.num_samples, len(sampler.dataset)
    keys = [key for key in SAMPLE_KEYS if key in struct]
    if any(struct[key].shape[0] != n_local for key in keys):
        return None
    for key in keys:
        local = struct[key].to(device).contiguous()
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        rows = torch.stack(parts, dim=1).reshape(world * n_local, *local.shape[1:])  # [N_pad, ...]
        struct[key] = rows[:n_total].cpu()
    return struct


class RankGatheringCollector(TopkCollector):
    """RecBole's ``Collector`` whose per-sample rows hold every rank's rows, in dataset order,
    while :attr:`eval_data` is set (a data-parallel evaluation); ``gathered`` says whether the
    last :meth:`get_data_struct` did so (metrics from it are already global)."""

    def __init__(self, config, device: torch.device) -> None:
        super().__init__(config)
        self.device = device
        self.eval_data = None
        self.gathered = False

    def get_data_struct(self):
        struct = super().get_data_struct()
        self.gathered = False
        if self.eval_data is not None:
            self.gathered = gather_eval_rows(struct, self.eval_data, self.device) is not None
        return struct


def make_ddp(module: torch.nn.Module, device_ids: Sequence[int] | None = None, **kwargs):
    """``DistributedDataParallel`` for RecBole's trainer: no ``device_ids`` on CPU, MoE
    statistics excluded from the buffer broadcast (they are rank-local until the epoch's
    all-reduce). Other buffers, e.g. HyMoERec's ``train_step``, are broadcast from rank 0."""
    first = next(module.parameters(), None)
    if first is None or first.device.type != "cuda":
        device_ids = None
    ignore = statistics_buffer_names(module)
    if ignore:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


class _NullWriter:
    """A tensorboard ``SummaryWriter`` stand-in that writes nothing (ranks other than 0)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def _data_parallel_construction(config) -> Iterator[None]:
    """While RecBole's ``Trainer.__init__`` runs in a data-parallel worker: its
    ``DistributedDataParallel`` is :func:`make_ddp` and, off rank 0, ``get_tensorboard`` a
    writer that writes nothing; both are restored afterwards.

    The only RecBole patch of the trainer, and why: ``AbstractTrainer.__init__`` wraps the model
    in ``DistributedDataParallel(model, device_ids=[local_rank])``, which DDP refuses for a CPU
    model, and ``Trainer.__init__`` builds a ``SummaryWriter``, which creates its event file at
    once, on every rank. Both happen inside the constructor, before any method a subclass could
    override runs, so the module names they call are swapped for the constructor's duration.
    """
    if config["single_spec"]:
        yield
        return
    saved = recbole_trainer.DistributedDataParallel, recbole_trainer.get_tensorboard
    recbole_trainer.DistributedDataParallel = make_ddp
    if dist.get_rank() != 0:
        recbole_trainer.get_tensorboard = lambda logger: _NullWriter()
    try:
        yield
    finally:
        recbole_trainer.DistributedDataParallel, recbole_trainer.get_tensorboard = saved


def _broadcast_model_state(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters, buffers and ``other_parameter`` to every rank."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
    other = [model.other_parameter() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(other, src=0)
    model.load_other_parameter(other[0])


class RecBoleMoeTrainer(Trainer):
    """RecBole's ``Trainer`` with resumable, atomic checkpoints, a non-finite loss check,
    per-epoch model statistics, epoch timing and exact data-parallel evaluation. Training and
    evaluation are RecBole's otherwise."""

    def __init__(self, config, model) -> None:
        with _data_parallel_construction(config):
            super().__init__(config, model)
        # RecBole names the tensorboard folder relative to the working directory, and the
        # writer's thread reopens the event file by that name on every write: pin the folder
        # to an absolute path, so that writes still land there if the directory changes.
        log_dir = getattr(self.tensorboard, "log_dir", None)
        if isinstance(log_dir, str) and not os.path.isabs(log_dir):
            self.tensorboard.close()
            self.tensorboard = SummaryWriter(os.path.abspath(log_dir))
        #: Whether the batches being evaluated come in order of history length, trimmed
        self.eval_sorted = False
        #: The seen items removed from the rankings being evaluated (None: none removed)
        self.eval_seen: SeenItems | None = None
        # RecBole's collector, with the top-k hits found without a dense [users, items] matrix
        self.eval_collector = (
            TopkCollector(config)
            if config["single_spec"]
            else RankGatheringCollector(config, self.device)
        )
        #: Seconds of each training epoch and of each validation pass, in order.
        self.train_epoch_times: list[float] = []
        self.valid_epoch_times: list[float] = []
        self.best_valid_result = None
        self.last_model_file = last_checkpoint_path(self.saved_model_file)
        self._train_data = None
        self._pending_generator_state: torch.Tensor | None = None
        #: The model's per-epoch statistics (``epoch_statistics()``, as plain lists and
        #: numbers), one entry per training epoch, kept across a resume.
        self.epoch_stats: list[dict[str, Any]] = []
        #: The epoch of the best model on ``valid_metric`` (the last one RecBole saved as its
        #: best-model file; ``None`` until then, or when the run saves no model), kept across
        #: a resume.
        self.best_epoch: int | None = None
        #: Seconds spent training and validating before this process, by the processes a
        #: resumed run continues (0 for a fresh run; ``None`` after resuming from a checkpoint
        #: written before this was recorded).
        self.elapsed_before_s: float | None = 0.0
        #: ``valid_metric``'s and ``extra_valid_metrics``' selections (``None`` / ``[]`` when
        #: the run selects on ``valid_metric`` only).
        self.primary_selection, self.selections = build_selections(config, self.saved_model_file)
        self._epoch_idx = -1
        self._started = time.perf_counter()
        #: The data and settings of this run (:func:`recbole_moe.fingerprint.run_fingerprint`),
        #: recorded in every checkpoint and compared on a resume; set from the training data
        #: by ``fit`` unless given before.
        self.fingerprint: dict[str, Any] | None = None

    # -- training ------------------------------------------------------------------------------
    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        self._train_data = train_data
        if self.fingerprint is None:
            self.fingerprint = run_fingerprint(self.config, train_data._dataset)
        if self._pending_generator_state is not None:
            train_data.generator.set_state(self._pending_generator_state)
            self._pending_generator_state = None
        self._saved = saved
        self._validates = valid_data is not None and self.eval_step > 0

        def validated(epoch_idx: int, valid_score: float) -> None:
            self._show_epoch(epoch_idx, valid_score)
            if callback_fn is not None:
                callback_fn(epoch_idx, valid_score)

        try:
            result = super().fit(
                train_data,
                valid_data,
                verbose=verbose,
                saved=saved,
                show_progress=show_progress,
                callback_fn=validated,
            )
            if saved and self._epoch_idx >= self.start_epoch:
                self._save_last_checkpoint(self._epoch_idx + 1)  # a finished run's last epoch
        finally:
            self.stopping_step = self.config["stopping_step"]
            # Flush and end tensorboard's writer thread now, not when the process exits (by
            # then the run's working directory may be gone); a later write reopens it.
            self.tensorboard.close()
        for selection in self._all_selections():
            self.logger.info(
                f"Selection on {selection.metric}: best valid {selection.best_score} in epoch "
                f"{selection.best_epoch}, stopped after epoch {selection.stopped_at}"
            )
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = time.perf_counter()
        self._epoch_idx = epoch_idx
        try:
            if getattr(self, "_saved", False) and epoch_idx > 0:
                self._save_last_checkpoint(epoch_idx)
                self._check_time_budget(epoch_idx)
            checked = self._finite_loss(loss_func or self.training_loss(), epoch_idx)
            total_loss = super()._train_epoch(
                train_data, epoch_idx, loss_func=checked, show_progress=show_progress
            )
            if not self.config["single_spec"]:
                all_reduce_statistics(self.model)  # every rank logs the whole epoch's
                total_loss = self._average_over_ranks(total_loss)
            self._record_statistics(epoch_idx)
            self._last_loss = total_loss
            return total_loss
        finally:
            self.train_epoch_times.append(time.perf_counter() - start)
            if not getattr(self, "_validates", False) or (epoch_idx + 1) % self.eval_step:
                self._show_epoch(epoch_idx)  # no validation after this epoch

    def _show_epoch(self, epoch_idx: int, valid_score: float | None = None) -> None:
        """The epoch's terminal line: loss, validation score, best so far and its epoch,
        validations without gain against the number that stops the run, seconds of this epoch
        and in all (:mod:`recbole_moe.console`)."""
        loss = getattr(self, "_last_loss", None)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        parts = [f"epoch {epoch_idx} (of {self.epochs})"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        seconds = self.train_epoch_times[-1] if self.train_epoch_times else 0.0
        if valid_score is not None:
            if self.cur_step == 0:  # RecBole's early stopping just took this epoch as best
                self._best_shown = epoch_idx
            best_epoch = getattr(self, "_best_shown", self.best_epoch)
            best = f"best {float(self.best_valid_score):.4f}"
            if best_epoch is not None:
                best += f" (epoch {best_epoch})"
            # RecBole stops once stopping_step + 1 validations in a row bring no gain
            stopping = self.config["stopping_step"] + 1
            parts += [
                f"valid {self.valid_metric.lower()} {float(valid_score):.4f}",
                best,
                f"no gain {min(self.cur_step, stopping)}/{stopping}",
            ]
            seconds += self.valid_epoch_times[-1] if self.valid_epoch_times else 0.0
        parts.append(f"{seconds:.1f} s")
        elapsed = self.elapsed_s()
        if elapsed is not None:
            parts.append(f"elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))}")
        console.show(self.logger, ", ".join(parts))

    def _check_time_budget(self, epoch_idx: int) -> None:
        """Stop before ``epoch_idx`` once this process has run ``time_budget_minutes``
        (called right after that epoch's resume checkpoint is written; at least one epoch
        runs per process; minutes counted from the trainer's start, data loading excluded).
        One training process only: validation refuses it for data-parallel runs.

        Raises:
            TimeBudgetReached: the budget is spent.
        """
        budget = self.config["time_budget_minutes"]
        if budget is None or not self.train_epoch_times:  # this process trains one epoch first
            return
        minutes = (time.perf_counter() - self._started) / 60
        if minutes >= float(budget):
            raise TimeBudgetReached(epoch_idx, minutes, float(budget), self.last_model_file)

    def _valid_epoch(self, valid_data, show_progress=False):
        start = time.perf_counter()
        try:
            valid_score, valid_result = super()._valid_epoch(valid_data, show_progress)
        finally:
            self.valid_epoch_times.append(time.perf_counter() - start)
        if self.selections:
            valid_score = self._select(valid_score, valid_result)
        return valid_score, valid_result

    def _select(self, valid_score: float, valid_result: dict) -> float:
        """Update every selection with this validation; returns the score RecBole's ``fit``
        should see.

        RecBole's early stopping keeps tracking ``valid_metric`` while it is selecting. Once it
        has stopped, ``fit`` sees the worst possible score (its best model and result stay
        frozen) and, while another metric still selects, a patience it cannot exhaust; when
        every metric has stopped, a patience of -1 ends the run after this epoch.
        """
        epoch_idx = self._epoch_idx
        primary = self.primary_selection
        was_selecting = primary.active
        primary.update(epoch_idx, valid_result)
        for selection in self.selections:
            if selection.update(epoch_idx, valid_result) and getattr(self, "_saved", False):
                # its best checkpoint, written as RecBole's best model is (rank 0, atomically)
                self._save_checkpoint(
                    epoch_idx, verbose=False, saved_model_file=selection.model_file
                )
        still_selecting = any(s.active for s in self.selections)
        if primary.active:
            self.stopping_step = self.epochs if still_selecting else self.config["stopping_step"]
            return valid_score
        self.stopping_step = self.epochs if still_selecting else -1
        if was_selecting:
            return valid_score  # this validation is its last one: RecBole accounts for it
        return float("-inf") if primary.bigger else float("inf")

    def _all_selections(self) -> list[Selection]:
        """``valid_metric``'s selection, then the extra ones (empty without extra metrics)."""
        return [self.primary_selection, *self.selections] if self.selections else []

    def _average_over_ranks(self, total: Any) -> Any:
        """The epoch's loss (each part of a tuple) averaged over the ranks."""
        if total is None:
            return total
        parts = list(total) if isinstance(total, tuple) else [total]
        summed = torch.tensor(parts, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        averaged = (summed / dist.get_world_size()).tolist()
        return tuple(averaged) if isinstance(total, tuple) else averaged[0]

    def _record_statistics(self, epoch_idx: int) -> None:
        """Log the model's epoch statistics, write them to tensorboard, keep them in
        ``epoch_stats`` and reset them for the next epoch (models without any: nothing)."""
        collect = getattr(self.model, "epoch_statistics", None)
        if not callable(collect):
            return
        stats = collect()
        self.model.reset_statistics()
        if stats is None:
            return
        stats = to_plain(stats)
        name = self.config["model"]
        for line in statistics_lines(name, epoch_idx, stats):
            self.logger.info(line)
        for tag, value in statistics_scalars(stats, name):
            self.tensorboard.add_scalar(tag, value, epoch_idx)
        self.epoch_stats.append({"epoch": epoch_idx, **stats})

    # -- data-parallel evaluation --------------------------------------------------------------
    def evaluate(
        self,
        eval_data,
        load_best_model=True,
        model_file=None,
        show_progress=False,
        filter_seen: bool | None = None,
    ):
        """RecBole's ``evaluate``; in a data-parallel run rank 0 reads the best checkpoint (the
        only rank that wrote it, after a barrier) and broadcasts it, and the metrics are
        computed from every rank's rows (:class:`RankGatheringCollector`).

        ``filter_seen``: rank without the items each user has seen before the target
        (``None``: as ``eval_filter_seen`` says; :mod:`recbole_moe.data.seen`).
        """
        self.eval_sorted = bool(getattr(eval_data, "sort_by_length", False))
        self.eval_seen = self._seen_items(eval_data, filter_seen)
        if self.config["single_spec"] or not eval_data:
            return super().evaluate(eval_data, load_best_model, model_file, show_progress)
        if load_best_model:
            dist.barrier()  # rank 0 has finished writing the checkpoint
            if dist.get_rank() == 0:
                checkpoint_file = model_file or self.saved_model_file
                checkpoint = load_recbole_checkpoint(checkpoint_file, map_location=self.device)
                self.model.load_state_dict(checkpoint["state_dict"])
                self.model.load_other_parameter(checkpoint.get("other_parameter"))
                self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
            _broadcast_model_state(self.model)
        self.eval_collector.eval_data = eval_data
        try:
            return super().evaluate(eval_data, False, None, show_progress)
        finally:
            self.eval_collector.eval_data = None

    def _seen_items(self, eval_data, filter_seen: bool | None) -> SeenItems | None:
        """The seen items to remove from ``eval_data``'s rankings (``None``: keep them; a
        general model's history is removed by RecBole's own loader)."""
        if filter_seen is None:
            filter_seen = bool(self.config["eval_filter_seen"])
        if not filter_seen or self.config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            return None
        seen = getattr(eval_data, "seen_items", None)
        if seen is None:
            raise RecBoleMoeError(
                "seen-item removal (eval_filter_seen) needs an evaluation loader of "
                f"recbole_moe's data loading; {type(eval_data).__name__} has no seen items "
                f"({seen_problem(self.config) or 'built elsewhere'})"
            )
        return seen

    def _map_reduce(self, result, num_sample):
        # metrics computed from the gathered rows are already global: skip RecBole's average
        if getattr(self.eval_collector, "gathered", False):
            return result
        return super()._map_reduce(result, num_sample)

    def training_loss(self) -> Callable:
        """The loss of a training batch: the model's ``calculate_loss`` (``train_objective:
        prefix``), or :class:`SequenceObjective` at every position (``sequence``)."""
        if is_sequence(self.config):
            return SequenceObjective(
                self.model, train_negatives(self.config), train_batch_chunks(self.config)
            )
        return self.model.calculate_loss

    def _finite_loss(self, loss_func: Callable, epoch_idx: int) -> Callable:
        """Wrap ``loss_func`` so a NaN/inf loss raises before the backward pass."""
        counter = {"batch": 0}
        model_name = self.config["model"]

        def checked(interaction):
            losses = loss_func(interaction)
            parts = losses if isinstance(losses, tuple) else (losses,)
            for index, part in enumerate(parts):
                if not torch.isfinite(part).all():
                    which = f" (loss part {index})" if len(parts) > 1 else ""
                    raise NonFiniteLossError(
                        f"non-finite training loss {part.detach().float().cpu().tolist()}{which} "
                        f"in epoch {epoch_idx}, batch {counter['batch']} of model {model_name}; "
                        "training stopped. Lower learning_rate, or set clip_grad_norm "
                        "(e.g. --clip_grad_norm=\"{'max_norm': 5}\")."
                    )
            counter["batch"] += 1
            return losses

        return checked

    # -- evaluation memory ---------------------------------------------------------------------
    #: Bytes per (row, item) of full-sort evaluation: the float32 scores, and as much again as
    #: headroom for temporaries (:class:`~recbole_moe.collector.TopkCollector` holds no dense
    #: positive-item matrix, so the bound is conservative).
    EVAL_BYTES_PER_SCORE = 8

    def _eval_chunk_rows(self) -> int | None:
        """Rows scored at once so ``rows * n_items * 8`` bytes stay within
        ``eval_memory_budget_mb`` (``None``: no bound)."""
        budget = self.config["eval_memory_budget_mb"]
        if not budget:
            return None
        per_row = max(int(self.tot_item_num), 1) * self.EVAL_BYTES_PER_SCORE
        return max(1, int(float(budget) * 2**20) // per_row)

    def _eval_group_rows(self) -> int | None:
        """Rows scored together when the evaluated loader sorts its users by history length
        (the lean path's ``eval_batch_order: length_sorted``), each group trimmed to its
        longest history (``eval_group_rows``; ``None``: whole batches)."""
        rows = self.config["eval_group_rows"]
        return int(rows) if rows and self.eval_sorted else None

    def _eval_rows(self, batched_data, start: int, end: int, trim: bool = False):
        """Rows ``start:end`` of a full-sort batch ``(interaction, history, pos_u, pos_i)``;
        with ``trim`` its ``[b, L]`` list fields are cut to the rows' longest history."""
        interaction, history_index, positive_u, positive_i = batched_data

        def rows(u, *values):
            keep = (u >= start) & (u < end)
            return (u[keep] - start, *(v[keep] for v in values))

        if history_index is not None:
            history_index = rows(*history_index)
        positive_u, positive_i = rows(positive_u, positive_i)
        part = interaction[start:end]
        if trim:
            part = self._trim_lists(part)
        return part, history_index, positive_u, positive_i

    def _trim_lists(self, interaction):
        """``interaction`` with every ``[b, L]`` list field cut to ``[b, max(item_length)]``."""
        item_seq = self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]
        width = max(int(interaction[self.config["ITEM_LIST_LENGTH_FIELD"]].max()), 1)
        if width >= interaction[item_seq].size(1):
            return interaction
        return fit_width(interaction, width, item_seq)

    def _full_sort_batch_eval(self, batched_data):
        """RecBole's full-sort batch evaluation in row groups.

        Under seen-item removal (:attr:`eval_seen`) each row's seen items go with the batch
        as RecBole's history index, which its evaluation sets to ``-inf``.

        A batch is scored in groups of at most :meth:`_eval_chunk_rows` rows (the score
        buffer's memory bound) and, under length-sorted evaluation, :meth:`_eval_group_rows`
        rows, each trimmed to its own longest history (the users are in order of history
        length, so most groups are much narrower than the batch; evaluation is sorted only for
        models whose scores do not depend on trailing padding). Every group but the last goes to the
        collector here, the last is returned for ``evaluate`` to collect. The collector keeps
        per-row results, so the metrics equal the ungrouped ones.
        """
        if self.eval_seen is not None and batched_data[1] is None:
            # the user's seen items, as RecBole passes a general model's history (row, item)
            interaction, _, positive_u, positive_i = batched_data
            users = interaction[self.config["USER_ID_FIELD"]]
            seen = self.eval_seen.pairs(users, positive_i)  # each row's target stays ranked
            batched_data = (interaction, seen, positive_u, positive_i)
        rows = len(batched_data[0])
        group = self._eval_group_rows()
        sizes = [size for size in (self._eval_chunk_rows(), group) if size]
        if not sizes or rows <= min(sizes):
            return super()._full_sort_batch_eval(batched_data)
        size = min(sizes)
        for start in range(0, rows, size):
            end = min(start + size, rows)
            interaction, scores, positive_u, positive_i = super()._full_sort_batch_eval(
                self._eval_rows(batched_data, start, end, trim=group is not None)
            )
            if end == rows:
                return interaction, scores, positive_u, positive_i
            self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
            del scores

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_state(self, epoch: int) -> dict:
        return {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "best_model_file": self.saved_model_file,
            "epoch_stats": list(self.epoch_stats),
            "best_epoch": self.best_epoch,
            "elapsed_s": self.elapsed_s(),
            "selections": [selection.state() for selection in self._all_selections()],
            "fingerprint": self.fingerprint,
        }

    def elapsed_s(self) -> float | None:
        """Seconds of training and validation so far, earlier processes of a resumed run
        included (``None`` when an earlier process did not record its own)."""
        if self.elapsed_before_s is None:
            return None
        return self.elapsed_before_s + sum(self.train_epoch_times) + sum(self.valid_epoch_times)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best-model checkpoint, written atomically."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if saved_model_file == self.saved_model_file:
            self.best_epoch = epoch
        atomic_torch_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _save_last_checkpoint(self, next_epoch: int) -> None:
        """Everything needed to continue at ``next_epoch`` exactly as if never interrupted."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        state = self._checkpoint_state(next_epoch - 1)
        state["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_generator": self._train_data.generator.get_state()
            if self._train_data is not None
            else None,
        }
        atomic_torch_save(state, self.last_model_file)

    def resume_checkpoint(self, resume_file):
        """Continue from a checkpoint (the ``-last.pth`` one, or RecBole's best-model file).

        Raises:
            CheckpointMismatchError: the checkpoint belongs to another model or dataset, or
                was trained on other data than ``fingerprint``'s (when set).
        """
        resume_file = str(resume_file)
        checkpoint = read_checkpoint(resume_file, map_location=self.device, required=RESUME_KEYS)
        check_checkpoint_matches(
            checkpoint, self.config["model"], self.config["dataset"], resume_file
        )
        if self.fingerprint is not None:
            check_data(checkpoint, self.fingerprint, resume_file, resume=True)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.best_epoch = checkpoint.get("best_epoch")
        self.elapsed_before_s = checkpoint.get("elapsed_s")
        self.epoch_stats = [
            s for s in checkpoint.get("epoch_stats") or [] if s["epoch"] < self.start_epoch
        ]
        states = {state["metric"]: state for state in checkpoint.get("selections") or []}
        for selection in self._all_selections():
            state = states.get(selection.metric)
            if state is not None:
                vars(selection).update({k: v for k, v in state.items() if k != "model_file"})
        load_state(
            self.model, checkpoint["state_dict"], resume_file, f"model {self.config['model']}"
        )
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        load_state(
            self.optimizer,
            checkpoint["optimizer"],
            resume_file,
            f"optimizer ({self.config['learner']})",
        )
        self.saved_model_file = checkpoint.get("best_model_file") or resume_file
        self.last_model_file = last_checkpoint_path(self.saved_model_file)
        for selection in self.selections:
            selection.model_file = selection_file(self.saved_model_file, selection.metric)
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._pending_generator_state = rng.get("train_generator")
        self.logger.info(
            f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}"
        )

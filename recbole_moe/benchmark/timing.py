"""Timing a training epoch without training all of it, and writing results (for the speed
benchmarks under ``benchmarks/``)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recbole_moe.environment import describe_machine
from recbole_moe.files import atomic_write_json


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch,
    loss_fn: Callable | None = None,
) -> torch.Tensor:
    """One training step on ``batch``: ``zero_grad``, the loss, ``backward``, ``step``.

    ``loss_fn(batch)`` gives the loss (default ``model.calculate_loss``); a tuple of losses
    (HyMoERec's balance loss) is summed, as RecBole's trainer does. Returns the loss (a scalar
    tensor, detached).
    """
    model.train()
    optimizer.zero_grad()
    losses = (loss_fn or model.calculate_loss)(batch)
    loss = sum(losses) if isinstance(losses, tuple) else losses
    loss.backward()
    optimizer.step()
    return loss.detach()


def timed_steps(n_batches: int, max_steps: int) -> set[int]:
    """Batches that get a timed training step: all of them when ``max_steps >= n_batches``,
    else ``max_steps`` spread evenly over the epoch after batch 0 (the warm-up step)."""
    if max_steps >= n_batches:
        return set(range(n_batches))
    return {1 + round(k * (n_batches - 2) / max(max_steps - 1, 1)) for k in range(max_steps)}


def time_epoch(trainer, train_data, max_steps: int) -> dict:
    """One pass over ``train_data`` (every batch built) with a training step (the trainer's
    :meth:`~recbole_moe.trainer.RecBoleMoeTrainer.training_loss`, backward, optimizer step) on
    :func:`timed_steps` batches.

    Returns:
        ``batches``, ``timed_steps``, ``seconds_per_step``, ``loader_seconds`` (building the
        batches), ``mean_width`` (of the timed batches), ``epoch_seconds`` and ``epoch``:
        ``measured`` when every batch was trained, else ``EXTRAPOLATED`` (loader time +
        batches x mean step).
    """
    n_batches = len(train_data)
    timed = timed_steps(n_batches, max_steps)
    measured = len(timed) == n_batches
    loss_fn = trainer.training_loss()
    list_field = trainer.config["ITEM_ID_FIELD"] + trainer.config["LIST_SUFFIX"]
    trainer.model.train()
    steps, widths, step_total = [], [], 0.0
    start = time.perf_counter()
    for i, batch in enumerate(train_data):
        if i not in timed and i != 0:  # batch 0 always gets a step: untimed warm-up
            continue
        t = time.perf_counter()
        trainer.optimizer.zero_grad()
        losses = loss_fn(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        loss.backward()
        trainer.optimizer.step()
        elapsed = time.perf_counter() - t
        step_total += elapsed
        if i in timed:
            steps.append(elapsed)
            widths.append(batch[list_field].shape[1])
    loader = time.perf_counter() - start - step_total
    step = float(np.mean(steps))
    epoch = loader + (sum(steps) if measured else step * n_batches)
    return {
        "batches": n_batches,
        "timed_steps": len(steps),
        "seconds_per_step": round(step, 4),
        "loader_seconds": round(loader, 2),
        "mean_width": round(float(np.mean(widths)), 1),
        "epoch_seconds": round(epoch, 1),
        "epoch": "measured" if measured else "EXTRAPOLATED",
    }


def time_alternatives(
    alternatives: dict[str, Callable[[], Any]],
    work: Callable[[], Any],
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds of ``work()`` under each alternative, interleaved: every round calls each
    alternative's switch (``alternatives[name]()``) and then times ``work()``, so all
    alternatives see the same machine state. Returns ``{name: [seconds per round]}``; the
    caller restores its own default afterwards."""
    seconds: dict[str, list[float]] = {name: [] for name in alternatives}
    for _ in range(rounds):
        for name, switch in alternatives.items():
            switch()
            start = time.perf_counter()
            work()
            seconds[name].append(time.perf_counter() - start)
    return seconds


__all__ = [
    "grid_parser",
    "measure_grid",
    "report_grid",
    "time_alternatives",
    "time_epoch",
    "timed_steps",
    "write_results",
]


def measure_grid(
    args: argparse.Namespace, measure: Callable[[str, str, argparse.Namespace], dict], hide=()
) -> tuple[str, list[dict]]:
    """A benchmark script's loop: prints the machine line, then ``measure(model, dataset,
    args)`` for every dataset and model of ``args`` (each row printed as JSON without the keys
    in ``hide``); returns ``(machine, rows)``."""
    machine = describe_machine()
    print(f"# {machine}", flush=True)
    rows = []
    for dataset in args.datasets:
        for model in args.models:
            row = measure(model, dataset, args)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in hide}), flush=True)
    return machine, rows


def grid_parser(
    doc: str, datasets: list[str], models: list[str], batch: int = 256
) -> argparse.ArgumentParser:
    """The command line every dataset x model benchmark script shares: ``--datasets``,
    ``--models``, ``--data_path``, ``--batch`` (train_batch_size), ``--seed`` and ``--output``
    (JSON of the rows); ``doc``'s first line describes the script. Add the script's own
    arguments to it."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=datasets)
    parser.add_argument("--models", nargs="+", default=models)
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--batch", type=int, default=batch, help="train_batch_size")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--output", help="write the rows and the machine as JSON here")
    return parser


def report_grid(
    args: argparse.Namespace,
    machine: str,
    rows: list[dict],
    header: str,
    cells: Callable[[dict], str],
) -> None:
    """Print the rows of :func:`measure_grid` as a Markdown table (``header``: its title and
    separator lines; ``cells(row)``: one line) and write them to ``args.output`` when set."""
    print("\n" + header)
    for row in rows:
        print(cells(row))
    if args.output:
        write_results(args.output, machine, args, rows)


def write_results(
    path: str, machine: str, args: argparse.Namespace, rows: list, summary: Any = None
) -> None:
    """A benchmark script's results as one JSON file, written atomically: the machine it ran
    on, its arguments, its rows and, when given, their summary."""
    results = {"machine": machine, "args": vars(args), "rows": rows}
    if summary is not None:
        results["summary"] = summary
    atomic_write_json(path, results, indent=1)

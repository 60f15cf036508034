"""The harness of the speed scripts under ``benchmarks/``: the trainer they build, the
interleaved side-by-side timing loop, an epoch timed without training all of it, the shared
command line and the results file. Each script is a thin layer over this module."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from recbole_moe.environment import describe_machine
from recbole_moe.files import atomic_write_json
from recbole_moe.quick_start import get_trainer, prepare_run

__all__ = [
    "benchmark_settings",
    "build_trainer",
    "grid_parser",
    "measure_grid",
    "measure_switched",
    "medians",
    "report_grid",
    "report_switched",
    "speedups",
    "step_parser",
    "time_alternatives",
    "time_epoch",
    "time_interleaved",
    "timed_steps",
    "top_operations",
    "train_step",
    "train_steps",
    "write_results",
]


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


def train_steps(trainer, batches: list, loss_fn: Callable | None = None) -> None:
    """A :func:`train_step` of ``trainer``'s model and optimizer on each of ``batches``."""
    for batch in batches:
        train_step(trainer.model, trainer.optimizer, batch, loss_fn)


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
        train_step(trainer.model, trainer.optimizer, batch, loss_fn)
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


def time_interleaved(
    work: Mapping[str, Callable[[], Any]],
    rounds: int,
    before: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each ``work[name]()`` per round, interleaved: every round calls each of them
    once, in order, so all see the same machine state (load, thermal state, caches).
    ``before[name]()``, when given, runs untimed just before ``work[name]()``.

    Returns:
        ``{name: [seconds of round 0, round 1, ...]}``.
    """
    seconds: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(rounds):
        for name, fn in work.items():
            if before and name in before:
                before[name]()
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def time_alternatives(
    alternatives: Mapping[str, Callable[[], Any]],
    work: Callable[[str], Any],
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds of ``work(name)`` under each alternative, interleaved (:func:`time_interleaved`):
    every round calls each alternative's switch (``alternatives[name]()``, untimed) and then
    times ``work(name)`` (the name: for work that keeps something per alternative). Returns
    ``{name: [seconds per round]}``; the caller restores its own default afterwards."""
    timed = {name: functools.partial(work, name) for name in alternatives}
    return time_interleaved(timed, rounds, before=alternatives)


def medians(seconds: Mapping[str, list[float]], skip: int = 0) -> dict[str, float]:
    """The median of each list of :func:`time_interleaved` after its first ``skip`` rounds
    (warm-up, compilation); of all rounds when no more are left."""
    return {name: statistics.median(values[skip:] or values) for name, values in seconds.items()}


def speedups(median: Mapping[str, float], reference: str | None = None) -> dict[str, float]:
    """``median[reference] / median[name]`` for every name (> 1: faster than the reference;
    default reference: the first name), from the same run's :func:`medians`."""
    reference = next(iter(median)) if reference is None else reference
    return {name: median[reference] / value for name, value in median.items()}


def top_operations(step: Callable[[], Any], n: int) -> list[dict]:
    """The ``n`` operations with the most self CPU time in one profiled call of ``step``:
    ``op``, ``self_ms``, ``share`` (of all self CPU time) and ``calls``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [
        {
            "op": e.key,
            "self_ms": round(e.self_cpu_time_total / 1000, 2),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in events[:n]
    ]


def benchmark_settings(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The settings the real-data speed scripts share: ``args.data_path``, ``args.batch``
    (``train_batch_size``) and ``args.seed`` of :func:`grid_parser`, hidden 64, 2 layers, the
    dataset's own length and dropout, quiet, checkpoints in the temporary folder; then
    ``overrides``."""
    return {
        "data_path": args.data_path,
        "hidden_size": 64,
        "n_layers": 2,
        "train_batch_size": args.batch,
        "state": "ERROR",
        "show_progress": False,
        "log_wandb": False,
        "seed": args.seed,
        "checkpoint_dir": os.path.join(tempfile.gettempdir(), "recbole_moe_benchmarks"),
        **overrides,
    }


def build_trainer(model_name: str, dataset: str, args: argparse.Namespace, **overrides: Any):
    """A trainer of ``model_name`` on ``dataset`` under ``train_objective: sequence`` and
    :func:`benchmark_settings` (``overrides`` on top), without log files.

    Returns:
        ``(trainer, train_data, valid_data)``.
    """
    settings = benchmark_settings(args, **{"train_objective": "sequence", **overrides})
    parts = prepare_run(model_name, dataset, settings, log=False)
    return get_trainer(parts.config, parts.model), parts.train_data, parts.valid_data


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


def step_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The command line of a switched-steps script (:func:`measure_switched`): the
    :func:`grid_parser` arguments plus ``--dropout`` (hidden and attention), ``--steps``
    (batches per round) and ``--rounds``."""
    parser = grid_parser(doc, ["beauty"], ["SASRec", "HyMoERec", "FAME"])
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention")
    parser.add_argument("--steps", type=int, default=steps, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the alternatives")
    return parser


def measure_switched(
    model_name: str,
    dataset: str,
    args: argparse.Namespace,
    switches: dict[str, Callable[[], None]],
    restore: Callable[[], None],
) -> dict:
    """Training-step times of ``model_name`` on ``dataset`` under each of ``switches`` (the
    first is the reference): one trainer (:func:`build_trainer`, ``args.dropout``) trains on
    the same ``args.steps`` batches under each switch in turn for ``args.rounds`` rounds
    (:func:`time_alternatives`); ``restore()`` puts the current implementation back.

    Returns:
        A row: ``step_ms`` (median of the rounds after the first, per alternative) and
        ``speedup_vs_<reference>`` (> 1: faster).
    """
    overrides = {"hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout}
    trainer, train_data, _ = build_trainer(model_name, dataset, args, **overrides)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))

    def steps(_name: str) -> None:
        train_steps(trainer, batches, loss_fn)

    try:
        seconds = time_alternatives(switches, steps, args.rounds)
    finally:
        restore()
    step = {name: value / len(batches) for name, value in medians(seconds, skip=1).items()}
    reference = next(iter(switches))
    return {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        f"speedup_vs_{reference}": {
            name: round(value, 3) for name, value in speedups(step, reference).items()
        },
    }


def report_switched(args: argparse.Namespace, measure: Callable, names: list[str]) -> None:
    """Measure every dataset x model with ``measure`` (:func:`measure_grid`) and print the
    table: the reference's step time, then each other alternative's with its speed-up."""
    reference, others = names[0], names[1:]

    def cells(row: dict) -> str:
        ms, up = row["step_ms"], row[f"speedup_vs_{reference}"]
        parts = [f"{ms[name]:.0f} ms ({up[name]:.2f}x)" for name in others]
        return (
            f"| {row['dataset']} | {row['model']} | {row['dropout']} | {ms[reference]:.0f} ms | "
            + " | ".join(parts)
            + " |"
        )

    header = f"| dataset | model | dropout | `{reference}` step | "
    header += " | ".join(f"`{name}`" for name in others) + " |\n"
    header += "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in others) + " |"
    report_grid(args, *measure_grid(args, measure), header, cells)

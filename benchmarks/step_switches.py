"""Training steps on real data under switched implementations, side by side (shared by
``mask_apply.py`` and ``loss_layout.py``).

One trainer (``train_objective: sequence``, hidden 64, 2 layers, ``--dropout`` for hidden and
attention dropout) trains on the same ``--steps`` batches under each alternative in turn, for
``--rounds`` rounds in one process; a row holds the median step time of the rounds after the
first and the speed-up against the reference alternative (> 1: faster).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable

from sequence_padding import build


def step_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """The command line of a switched-steps script: the shared dataset x model arguments plus
    ``--dropout``, ``--steps`` (batches per round) and ``--rounds``."""
    from recbole_moe.benchmark.timing import grid_parser

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
    """Step times of ``model_name`` on ``dataset`` under each of ``switches`` (the first is the
    reference); ``restore()`` puts the current implementation back afterwards."""
    from recbole_moe.benchmark.timing import time_alternatives, train_step

    overrides = {"hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout}
    trainer, train_data, _ = build(model_name, dataset, args, **overrides)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))

    def steps():
        for batch in batches:
            train_step(trainer.model, trainer.optimizer, batch, loss_fn)

    try:
        seconds = time_alternatives(switches, steps, args.rounds)
    finally:
        restore()
    step = {name: statistics.median(v[1:] or v) / len(batches) for name, v in seconds.items()}
    reference = next(iter(switches))
    return {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        f"speedup_vs_{reference}": {
            name: round(step[reference] / v, 3) for name, v in step.items()
        },
    }


def report_switched(args: argparse.Namespace, measure, names: list[str]) -> None:
    """Measure every dataset x model with ``measure`` and print the table: the reference's
    step time, then each other alternative's with its speed-up."""
    from recbole_moe.benchmark.timing import measure_grid, report_grid

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

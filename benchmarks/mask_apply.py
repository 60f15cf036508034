"""Training steps with the fast dropout mask applied by ``torch.where`` and by a multiply.

``dropout_impl: fast`` keeps a boolean mask. It used to be applied as ``torch.where(mask, x,
0)`` (forward and backward), which on the CPU costs about 8x a multiply by the mask's bytes
read as ``uint8`` (:class:`recbole_moe.layers.dropout._Masked` now). Both give the same
values. For every dataset and model, one trainer (``train_objective: sequence``, hidden 64,
2 layers, ``--dropout`` for hidden and attention dropout) trains on the same ``--steps``
batches with each application in turn, for ``--rounds`` rounds in one process; the ratio uses
the median of the rounds after the first (> 1: the multiply is faster).

    OMP_NUM_THREADS=1 python benchmarks/mask_apply.py --datasets beauty \\
        --models SASRec HyMoERec FAME --output benchmarks/results/mask_apply_beauty.json
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch
from sequence_padding import build


def _where_forward(ctx, x, mask):
    ctx.save_for_backward(mask)
    return torch.where(mask, x, 0.0)


def _where_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return torch.where(mask, grad, 0.0), None


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import time_alternatives, train_step
    from recbole_moe.layers import dropout

    overrides = {"hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout}
    trainer, train_data, _ = build(model_name, dataset, args, **overrides)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))
    multiply = (dropout._Masked.forward, dropout._Masked.backward)

    def application(forward, backward):
        def switch():
            dropout._Masked.forward = staticmethod(forward)
            dropout._Masked.backward = staticmethod(backward)

        return switch

    def steps():
        for batch in batches:
            train_step(trainer.model, trainer.optimizer, batch, loss_fn)

    try:
        seconds = time_alternatives(
            {
                "where": application(_where_forward, _where_backward),
                "multiply": application(*multiply),
            },
            steps,
            args.rounds,
        )
    finally:
        dropout._Masked.forward, dropout._Masked.backward = map(staticmethod, multiply)
    step = {name: statistics.median(v[1:] or v) / len(batches) for name, v in seconds.items()}
    row = {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        "speedup": round(step["where"] / step["multiply"], 3),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["beauty"])
    parser.add_argument("--models", nargs="+", default=["SASRec", "HyMoERec", "FAME"])
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--batch", type=int, default=256, help="train_batch_size")
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention")
    parser.add_argument("--steps", type=int, default=10, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of both applications")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--output", help="write the rows and the machine as JSON here")
    args = parser.parse_args()

    from recbole_moe.benchmark.timing import measure_grid, write_results

    machine, rows = measure_grid(args, measure)
    print("\n| dataset | model | dropout | `where` step | multiply step | speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        ms = row["step_ms"]
        print(
            f"| {row['dataset']} | {row['model']} | {row['dropout']} | {ms['where']:.0f} ms "
            f"| {ms['multiply']:.0f} ms | {row['speedup']:.2f}x |"
        )
    if args.output:
        write_results(args.output, machine, args, rows)


if __name__ == "__main__":
    main()

"""Training steps with the fast dropout mask applied three ways, side by side.

``dropout_impl: fast`` draws its keep mask from 16-bit random lanes. How the mask is applied
(forward and backward) has changed twice; all three give the same values:

* ``where``: a boolean mask and ``torch.where(mask, x, 0)``, which on the CPU costs about 8x a
  multiply;
* ``uint8``: a boolean mask multiplied as its bytes read as ``uint8`` (the multiply converts
  them to float, forward and backward);
* ``float``: the mask written as 0/1 in ``x``'s dtype by the comparison itself, multiplied
  directly (:func:`recbole_moe.layers.dropout.keep_mask`, :class:`~recbole_moe.layers.
  dropout._Masked`; the current code). The causal attention's future mask is the same in all
  three (an added bias).

For every dataset and model, one trainer (``train_objective: sequence``, hidden 64, 2 layers,
``--dropout`` for hidden and attention dropout) trains on the same ``--steps`` batches with each
in turn, for ``--rounds`` rounds in one process; the ratios to ``where`` use the median of the
rounds after the first (> 1: faster).

    OMP_NUM_THREADS=1 python benchmarks/mask_apply.py --datasets beauty \\
        --models SASRec HyMoERec FAME --output benchmarks/results/mask_apply_beauty.json
"""

from __future__ import annotations

import itertools
import statistics

import torch
from sequence_padding import build

APPLICATIONS = ("where", "uint8", "float")


def _where_forward(ctx, x, mask):
    ctx.save_for_backward(mask)
    return torch.where(mask, x, 0.0)


def _where_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return torch.where(mask, grad, 0.0), None


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import time_alternatives, train_step
    from recbole_moe.layers import attention, dropout

    overrides = {"hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout}
    trainer, train_data, _ = build(model_name, dataset, args, **overrides)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))
    current = (dropout._Masked.forward, dropout._Masked.backward, dropout.keep_mask)

    def boolean_mask(shape, p, device, dtype=torch.bool):
        return current[2](shape, p, device)

    def use(forward, backward, mask_fn):
        def switch():
            dropout._Masked.forward = staticmethod(forward)
            dropout._Masked.backward = staticmethod(backward)
            dropout.keep_mask = attention.keep_mask = mask_fn

        return switch

    def steps():
        for batch in batches:
            train_step(trainer.model, trainer.optimizer, batch, loss_fn)

    switches = {
        "where": use(_where_forward, _where_backward, boolean_mask),
        "uint8": use(current[0], current[1], boolean_mask),
        "float": use(*current),
    }
    try:
        seconds = time_alternatives(switches, steps, args.rounds)
    finally:
        use(*current)()
    step = {name: statistics.median(v[1:] or v) / len(batches) for name, v in seconds.items()}
    return {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        "speedup_vs_where": {name: round(step["where"] / v, 3) for name, v in step.items()},
    }


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid

    parser = grid_parser(__doc__, ["beauty"], ["SASRec", "HyMoERec", "FAME"])
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention")
    parser.add_argument("--steps", type=int, default=10, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the applications")
    args = parser.parse_args()

    def cells(row: dict) -> str:
        ms, up = row["step_ms"], row["speedup_vs_where"]
        return (
            f"| {row['dataset']} | {row['model']} | {row['dropout']} | {ms['where']:.0f} ms "
            f"| {ms['uint8']:.0f} ms ({up['uint8']:.2f}x) | {ms['float']:.0f} ms "
            f"({up['float']:.2f}x) |"
        )

    header = "| dataset | model | dropout | `where` step | `uint8` | `float` |\n"
    header += "| --- | --- | ---: | ---: | ---: | ---: |"
    report_grid(args, *measure_grid(args, measure), header, cells)


if __name__ == "__main__":
    main()

"""Training steps with the chunked sequence loss laid out three ways, side by side.

``linear_cross_entropy`` (the ``sequence`` regime's full softmax over all items) multiplies each
chunk of ``C`` positions by the ``[V, D]`` item table three times: the logits
``[C, D] @ [D, V]``, the states' gradient ``[C, V] @ [V, D]`` and the table's gradient. On the
Amazon datasets it is most of a training step (61% of a SASRec step on Beauty in a profile).
The dataset's item count ``V`` (3,417 on ML-1M 5-core, 12,102 on Beauty) is not a multiple of
16, so the rows of the ``[C, V]`` matrices do not start on a cache line. The layouts, all with
the same loss and gradients (``tests/test_linear_cross_entropy.py``):

* ``previous``: no padding, the table's gradient as ``grad.T @ hidden``, a new ``[C, V]``
  logits tensor for every chunk (the layout before);
* ``padded``: the item axis padded to a multiple of 16 (zero item rows, logits ``-inf``) and
  the table's gradient accumulated as ``hidden.T @ grad``;
* ``padded+buffer``: the same, with every chunk's logits written into one ``[C, Vp]`` buffer
  allocated once per call and both gradient products written in place (the current code).

For every dataset and model, one trainer (``train_objective: sequence``, hidden 64, 2 layers,
``--dropout`` for hidden and attention dropout) trains on the same ``--steps`` batches with each
layout in turn, for ``--rounds`` rounds in one process; the ratios to ``previous`` use the
median of the rounds after the first (> 1: faster).

    OMP_NUM_THREADS=1 python benchmarks/loss_layout.py --datasets beauty toys ml-1m-5core \\
        --models SASRec FAME --output benchmarks/results/loss_layout.json
"""

from __future__ import annotations

import functools
import itertools
import statistics

from sequence_padding import build

LAYOUTS = {  # item_step, WEIGHT_GRAD_HT_G, REUSE_LOGITS_BUFFER
    "previous": (1, False, False),
    "padded": (16, True, False),
    "padded+buffer": (16, True, True),
}


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import time_alternatives, train_step
    from recbole_moe.layers import sequence_loss

    overrides = {"hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout}
    trainer, train_data, _ = build(model_name, dataset, args, **overrides)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))
    current = (
        sequence_loss.linear_cross_entropy,
        sequence_loss.WEIGHT_GRAD_HT_G,
        sequence_loss.REUSE_LOGITS_BUFFER,
    )

    def use(item_step: int, transposed: bool, reuse: bool):
        def switch():
            sequence_loss.linear_cross_entropy = functools.partial(current[0], item_step=item_step)
            sequence_loss.WEIGHT_GRAD_HT_G = transposed
            sequence_loss.REUSE_LOGITS_BUFFER = reuse

        return switch

    def steps():
        for batch in batches:
            train_step(trainer.model, trainer.optimizer, batch, loss_fn)

    try:
        switches = {name: use(*layout) for name, layout in LAYOUTS.items()}
        seconds = time_alternatives(switches, steps, args.rounds)
    finally:
        (
            sequence_loss.linear_cross_entropy,
            sequence_loss.WEIGHT_GRAD_HT_G,
            sequence_loss.REUSE_LOGITS_BUFFER,
        ) = current
    step = {name: statistics.median(v[1:] or v) / len(batches) for name, v in seconds.items()}
    return {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        "speedup_vs_previous": {name: round(step["previous"] / v, 3) for name, v in step.items()},
    }


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid

    parser = grid_parser(__doc__, ["beauty"], ["SASRec", "HyMoERec", "FAME"])
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention")
    parser.add_argument("--steps", type=int, default=8, help="batches per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the layouts")
    args = parser.parse_args()

    def cells(row: dict) -> str:
        ms, up = row["step_ms"], row["speedup_vs_previous"]
        return (
            f"| {row['dataset']} | {row['model']} | {ms['previous']:.0f} ms "
            f"| {ms['padded']:.0f} ms ({up['padded']:.2f}x) | {ms['padded+buffer']:.0f} ms "
            f"({up['padded+buffer']:.2f}x) |"
        )

    header = "| dataset | model | `previous` step | `padded` | `padded+buffer` |\n"
    header += "| --- | --- | ---: | ---: | ---: |"
    report_grid(args, *measure_grid(args, measure), header, cells)


if __name__ == "__main__":
    main()

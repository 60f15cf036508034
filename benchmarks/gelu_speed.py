"""Training steps and validation passes with RecBole's GELU and the fused one (``gelu_impl``).

For every dataset and model, one trainer (``train_objective: sequence``, hidden 64, 2 layers,
``--dropout`` for hidden and attention dropout, the defaults otherwise) is switched between
``gelu_impl: recbole`` and ``fused`` (:func:`recbole_moe.layers.recbole_models.use_gelu_impl`, the
same parameters) and, interleaved for ``--rounds`` rounds in one process:

* trains on the same ``--steps`` batches (forward, backward, Adam);
* runs a full-sort validation pass over the first ``--eval_batches`` validation batches, with
  the largest difference between the two GELUs' scores is recorded (float rounding only).

Ratios use the median of the rounds after the first (> 1: fused is faster).

    OMP_NUM_THREADS=1 python benchmarks/gelu_speed.py --datasets beauty \\
        --models SASRec HyMoERec FAME BERT4Rec --output benchmarks/results/gelu_speed_beauty.json
"""

from __future__ import annotations

import functools
import itertools

import torch

IMPLS = ("recbole", "fused")


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import (
        build_trainer,
        medians,
        time_alternatives,
        train_steps,
    )
    from recbole_moe.layers.recbole_models import use_gelu_impl

    overrides = {
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "eval_batch_size": args.eval_batch,
    }
    trainer, train_data, valid_data = build_trainer(model_name, dataset, args, **overrides)
    model = trainer.model
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))
    eval_batches = list(itertools.islice(iter(valid_data), args.eval_batches))
    scores_of = {}  # each GELU's validation scores
    switches = {impl: functools.partial(use_gelu_impl, model, impl) for impl in IMPLS}

    def steps(_impl: str) -> None:
        train_steps(trainer, batches, loss_fn)

    def validation(impl: str) -> None:
        model.eval()
        with torch.no_grad():
            scores_of[impl] = [model.full_sort_predict(batch[0]) for batch in eval_batches]

    try:
        train = time_alternatives(switches, steps, args.rounds)
        evaluate = time_alternatives(switches, validation, args.rounds)
    finally:
        use_gelu_impl(model, "fused")
    pairs = zip(scores_of["recbole"], scores_of["fused"], strict=True)
    score_diff = max((a - b).abs().max().item() for a, b in pairs)
    score_scale = max(a.abs().max().item() for a in scores_of["recbole"])

    step = {impl: v / len(batches) for impl, v in medians(train, skip=1).items()}
    valid = medians(evaluate, skip=1)
    return {
        "dataset": dataset,
        "model": model_name,
        "dropout": args.dropout,
        "step_ms": {impl: round(v * 1000, 1) for impl, v in step.items()},
        "step_speedup": round(step["recbole"] / step["fused"], 3),
        "validation_users": sum(len(batch[0]) for batch in eval_batches),
        "validation_s": {impl: round(v, 2) for impl, v in valid.items()},
        "validation_speedup": round(valid["recbole"] / valid["fused"], 3),
        "max_score_difference": score_diff,
        "max_abs_score": round(score_scale, 3),
    }


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid

    parser = grid_parser(__doc__, ["beauty"], ["SASRec", "HyMoERec", "FAME", "BERT4Rec"])
    parser.add_argument("--eval_batch", type=int, default=4096, help="eval_batch_size")
    parser.add_argument("--dropout", type=float, default=0.5, help="hidden and attention")
    parser.add_argument("--steps", type=int, default=8, help="training batches per round")
    parser.add_argument("--eval_batches", type=int, default=2, help="validation batches")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both GELUs")
    args = parser.parse_args()

    def cells(row: dict) -> str:
        ms, s = row["step_ms"], row["validation_s"]
        return (
            f"| {row['dataset']} | {row['model']} | {ms['recbole']:.0f} / {ms['fused']:.0f} ms "
            f"({row['step_speedup']:.2f}x) | {s['recbole']:.1f} / {s['fused']:.1f} s "
            f"({row['validation_speedup']:.2f}x) |"
        )

    header = "| dataset | model | training step: recbole / fused | validation: recbole / fused |\n"
    header += "| --- | --- | ---: | ---: |"
    report_grid(args, *measure_grid(args, measure), header, cells)


if __name__ == "__main__":
    main()

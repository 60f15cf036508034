"""Less padding under ``train_objective: sequence``: length-group chunks and sorted evaluation.

Side by side in one process, for every dataset and model (lean data path, hidden 64, 2 layers,
the dataset's own MAX_ITEM_LIST_LENGTH, ``--batch`` users a batch):

* **training epoch**, ``train_batch_chunks`` 1 (each batch at the width of its longest
  history) against each of ``--chunks``: the same batches and loss, computed as that many
  groups of users of similar length, each trimmed to its own longest history;
* **full-sort validation pass**, ``eval_batch_order`` ``dataset`` (RecBole's order, every batch
  ``MAX_ITEM_LIST_LENGTH`` wide) against ``length_sorted`` (users by history length, batches
  trimmed) scored whole (``eval_group_rows: 0``) and in groups of ``--group_rows`` users, each
  trimmed to its own longest history; the metrics of each are printed so their equality can
  be seen.

Training epochs are timed with :func:`recbole_moe.benchmark.timing.time_epoch` (``--steps``
steps spread over the epoch after a warm-up step; EXTRAPOLATED when the epoch has more
batches). Ratios are printed last (baseline time / new time).

    OMP_NUM_THREADS=2 python benchmarks/sequence_padding.py --datasets beauty ml-1m \\
        --models SASRec HyMoERec FAME Mamba4Rec --output benchmarks/results/sequence/padding.json
"""

from __future__ import annotations

import gc
import json
import time


def train_row(model_name: str, dataset: str, chunks: int, args) -> dict:
    from recbole_moe.benchmark.timing import build_trainer, time_epoch

    trainer, train_data, _ = build_trainer(model_name, dataset, args, train_batch_chunks=chunks)
    row = {
        "dataset": dataset,
        "model": model_name,
        "part": "train",
        "chunks": chunks,
        **time_epoch(trainer, train_data, args.steps),
    }
    del trainer, train_data
    gc.collect()
    return row


def eval_row(model_name: str, dataset: str, order: str, group_rows: int, args) -> dict:
    from recbole_moe.benchmark.timing import build_trainer

    trainer, _, valid_data = build_trainer(
        model_name,
        dataset,
        args,
        eval_batch_order=order,
        eval_group_rows=group_rows,
        eval_batch_size=args.eval_batch,
    )
    start = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False)
    seconds = time.perf_counter() - start
    row = {
        "dataset": dataset,
        "model": model_name,
        "part": "eval",
        "order": order,
        "group_rows": group_rows,
        "seconds": round(seconds, 2),
        "metrics": {k: round(float(v), 6) for k, v in result.items()},
    }
    del trainer, valid_data
    gc.collect()
    return row


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, write_results
    from recbole_moe.environment import describe_machine

    parser = grid_parser(__doc__, ["beauty"], ["SASRec", "HyMoERec", "FAME", "Mamba4Rec"])
    parser.add_argument(
        "--chunks",
        nargs="+",
        type=int,
        default=[4, 8],
        help="train_batch_chunks values compared with 1",
    )
    parser.add_argument("--steps", type=int, default=12, help="timed steps per epoch")
    parser.add_argument("--eval_batch", type=int, default=4096, help="eval_batch_size")
    parser.add_argument(
        "--group_rows", type=int, default=512, help="eval_group_rows compared with 0"
    )
    parser.add_argument("--eval_only", action="store_true", help="only the validation passes")
    args = parser.parse_args()

    machine = describe_machine()
    print(f"# {machine}", flush=True)
    rows, summary = [], []
    for dataset in args.datasets:
        for model in args.models:
            base = None if args.eval_only else train_row(model, dataset, 1, args)
            if base:
                print(json.dumps(base), flush=True)
                rows.append(base)
            for chunks in [] if args.eval_only else args.chunks:
                row = train_row(model, dataset, chunks, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
                summary.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "part": "train epoch",
                        "baseline": "chunks 1",
                        "new": f"chunks {chunks}",
                        "ratio": round(base["epoch_seconds"] / row["epoch_seconds"], 2),
                    }
                )
            variants = {
                "dataset": ("dataset", 0),
                "length_sorted": ("length_sorted", 0),
                f"sorted+groups{args.group_rows}": ("length_sorted", args.group_rows),
            }
            passes = {}
            for name, (order, group_rows) in variants.items():
                passes[name] = eval_row(model, dataset, order, group_rows, args)
                print(json.dumps(passes[name]), flush=True)
                rows.append(passes[name])
            for baseline, new in zip(list(passes), list(passes)[1:], strict=False):
                summary.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "part": "validation",
                        "baseline": baseline,
                        "new": new,
                        "ratio": round(passes[baseline]["seconds"] / passes[new]["seconds"], 2),
                        "same_metrics": passes[baseline]["metrics"] == passes[new]["metrics"],
                    }
                )
    print(f"\n{'dataset':8} {'model':10} {'part':12} {'baseline':>10} {'new':>14} {'ratio':>7}")
    for s in summary:
        same = "" if "same_metrics" not in s else f"  same metrics: {s['same_metrics']}"
        print(
            f"{s['dataset']:8} {s['model']:10} {s['part']:12} {s['baseline']:>10} "
            f"{s['new']:>14} {s['ratio']:>6.2f}x{same}"
        )
    if args.output:
        write_results(args.output, machine, args, rows, summary)


if __name__ == "__main__":
    main()

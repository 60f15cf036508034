"""Full-sort validation pass: RecBole's collector and attention against ours.

For every dataset and model one trainer is built (lean data path, ``train_objective:
sequence``, hidden 64, 2 layers, one training epoch so the scores are not random), and its
validation pass is timed ``--repeats`` times in each variant, interleaved, in one process:

* ``recbole``: RecBole's ``Collector`` (a dense ``[users, items]`` positive-item matrix) and
  RecBole's attention layers;
* ``topk``: :class:`~recbole_moe.collector.TopkCollector` (what the trainer uses);
* ``topk+sdpa``: the same with ``attention_impl: sdpa`` (for a causal model, ``is_causal=True``
  without a mask, PyTorch's fused kernel in evaluation).

The metrics of each are printed so their equality can be seen, then each variant's ratio of
median times against ``recbole`` (> 1: faster) and the top operations of one profiled pass.

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --datasets beauty ml-1m-5core \\
        --models SASRec --output benchmarks/results/eval_speed.json
"""

from __future__ import annotations

import functools
import gc


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole.evaluator import Collector

    from recbole_moe.benchmark.timing import (
        build_trainer,
        medians,
        speedups,
        time_alternatives,
        top_operations,
    )
    from recbole_moe.collector import TopkCollector
    from recbole_moe.layers.recbole_models import use_attention_impl

    trainer, train_data, valid_data = build_trainer(model_name, dataset, args)
    trainer._train_epoch(train_data, 0)
    variants = {
        "recbole": (Collector(trainer.config), "recbole"),
        "topk": (TopkCollector(trainer.config), "recbole"),
        "topk+sdpa": (TopkCollector(trainer.config), "sdpa"),
    }

    def use(name: str, trainer=trainer) -> None:
        trainer.eval_collector, impl = variants[name]
        use_attention_impl(trainer.model, impl)

    results = {}  # each variant's metrics of its last pass

    def validation(name: str, trainer=trainer, valid_data=valid_data) -> None:
        results[name] = trainer.evaluate(valid_data, load_best_model=False)

    switches = {name: functools.partial(use, name) for name in variants}
    seconds = time_alternatives(switches, validation, args.repeats)
    metrics = {
        name: {k: round(float(v), 6) for k, v in result.items()} for name, result in results.items()
    }
    top = {}
    for name in variants:
        use(name)
        top[name] = top_operations(
            functools.partial(trainer.evaluate, valid_data, load_best_model=False), args.top
        )
    median = medians(seconds)
    row = {
        "dataset": dataset,
        "model": model_name,
        "users": len(valid_data._dataset),
        "items": int(trainer.tot_item_num),
        "seconds": {name: [round(v, 3) for v in values] for name, values in seconds.items()},
        "median_s": {name: round(v, 3) for name, v in median.items()},
        "speedup": {name: round(v, 3) for name, v in speedups(median, "recbole").items()},
        # equal to 4 decimals: the fused attention may round differently in the last digits
        "same_metrics": {
            name: all(abs(m[k] - metrics["recbole"][k]) < 5e-5 for k in m)
            for name, m in metrics.items()
        },
        "metrics": metrics["topk"],
        "top_operations": top,
    }
    del trainer, train_data, valid_data
    gc.collect()
    return row


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid

    parser = grid_parser(__doc__, ["beauty"], ["SASRec"])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per collector")
    parser.add_argument("--top", type=int, default=6, help="profiled operations kept")
    args = parser.parse_args()

    def cells(row: dict) -> str:
        median, speedup = row["median_s"], row["speedup"]
        timed = " | ".join(
            f"{median[name]:.2f} s" + (f" ({speedup[name]:.2f}x)" if name != "recbole" else "")
            for name in ("recbole", "topk", "topk+sdpa")
        )
        same = "yes" if all(row["same_metrics"].values()) else "NO"
        return (
            f"| {row['dataset']} | {row['model']} | {row['users']} x {row['items']} "
            f"| {timed} | {same} |"
        )

    machine, rows = measure_grid(args, measure, hide=("top_operations",))
    header = "| dataset | model | users x items | recbole | topk | topk+sdpa | same metrics |\n"
    header += "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    report_grid(args, machine, rows, header, cells)
    for row in rows:
        for name, ops in row["top_operations"].items():
            listed = ", ".join(f"{op['op']} {op['share']:.0%}" for op in ops)
            print(f"- {row['dataset']} {row['model']} {name}: {listed}")


if __name__ == "__main__":
    main()

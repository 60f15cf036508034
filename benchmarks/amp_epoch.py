"""Training epochs in float32 and under bf16 autocast, with and without shape buckets.

For every dataset and model three trainers are built from the same seed (``train_objective:
sequence``, the dataset's own length and dropout, hidden 64, 2 layers) and their training
epochs are timed interleaved in one process, so all see the same machine state:

* ``fp32``: ``enable_amp: False`` (the default);
* ``bf16-plain``: ``enable_amp: True`` with every size as it comes (no shape buckets);
* ``bf16``: ``enable_amp: True`` as it runs now, with the shape buckets of
  :mod:`recbole_moe.layers.shape_buckets` (widths to a multiple of 8, data-dependent row counts
  to a multiple of 64).

The first epoch of each variant builds oneDNN's bf16 kernels for the shapes it meets; the
ratios against ``fp32`` (> 1: faster) use the median of the later epochs.

    OMP_NUM_THREADS=1 python benchmarks/amp_epoch.py --datasets ml-100k --batch 64 \\
        --models SASRec HyMoERec --epochs 3 --output benchmarks/results/amp_epoch_ml-100k.json
"""

from __future__ import annotations

import functools
import gc

VARIANTS = {"fp32": (False, True), "bf16-plain": (True, False), "bf16": (True, True)}


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import build_trainer, medians, speedups, time_alternatives
    from recbole_moe.layers import shape_buckets

    steps = (args.width_step, args.row_step)
    defaults = (shape_buckets.WIDTH_STEP, shape_buckets.ROW_STEP)
    trainers = {
        name: build_trainer(
            model_name, dataset, args, enable_amp=amp, train_batch_chunks=args.chunks
        )
        for name, (amp, _) in VARIANTS.items()
    }
    epochs = dict.fromkeys(VARIANTS, 0)

    def use(name: str) -> None:
        bucketed = VARIANTS[name][1]
        shape_buckets.WIDTH_STEP, shape_buckets.ROW_STEP = steps if bucketed else (1, 1)

    def epoch(name: str, trainers: dict = trainers) -> None:
        trainer, train_data, _ = trainers[name]
        trainer._train_epoch(train_data, epochs[name])
        epochs[name] += 1

    switches = {name: functools.partial(use, name) for name in VARIANTS}
    try:
        seconds = time_alternatives(switches, epoch, args.epochs)
    finally:
        shape_buckets.WIDTH_STEP, shape_buckets.ROW_STEP = defaults
    later = medians(seconds, skip=1)
    row = {
        "dataset": dataset,
        "model": model_name,
        "train_batch_size": args.batch,
        "train_batch_chunks": args.chunks,
        "seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()},
        "median_later_s": {name: round(v, 2) for name, v in later.items()},
        "speedup_vs_fp32": {name: round(v, 3) for name, v in speedups(later, "fp32").items()},
    }
    del trainers
    gc.collect()
    return row


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid
    from recbole_moe.layers import shape_buckets

    parser = grid_parser(__doc__, ["ml-100k", "beauty"], ["SASRec", "HyMoERec"])
    parser.add_argument("--chunks", type=int, default=4, help="train_batch_chunks")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--width_step", type=int, help="bf16 variant's width bucket")
    parser.add_argument("--row_step", type=int, help="bf16 variant's row bucket")
    args = parser.parse_args()
    args.width_step = args.width_step or shape_buckets.WIDTH_STEP
    args.row_step = args.row_step or shape_buckets.ROW_STEP

    def cells(row: dict) -> str:
        median, speedup = row["median_later_s"], row["speedup_vs_fp32"]
        return (
            f"| {row['dataset']} | {row['model']} | {median['fp32']:.1f} s "
            f"| {median['bf16-plain']:.1f} s ({speedup['bf16-plain']:.2f}x) "
            f"| {median['bf16']:.1f} s ({speedup['bf16']:.2f}x) |"
        )

    header = "| dataset | model | fp32 epoch | bf16 without buckets | bf16 with buckets |\n"
    header += "| --- | --- | ---: | ---: | ---: |"
    report_grid(args, *measure_grid(args, measure), header, cells)


if __name__ == "__main__":
    main()

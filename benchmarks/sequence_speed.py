"""Training epoch time, RecBole's prefix regime vs whole sequences, side by side in one process.

For every dataset and model, both regimes are built with the same settings (lean data path,
hidden 64, 2 layers, the dataset's own MAX_ITEM_LIST_LENGTH, ``--batch`` samples a batch):

* ``prefix`` (``train_objective: prefix``): RecBole's samples, every prefix of every training
  history, loss at the last position;
* ``sequence`` (``train_objective: sequence``): one sample per user, loss at every position
  (cross-entropy over all items unless ``--train_negatives``).

Each epoch's loader is run in full (every batch built); ``--steps`` training steps (forward,
backward, Adam) spread evenly over the epoch are timed after one warm-up step, and the epoch
time is ``loader time + batches x mean step``: EXTRAPOLATED unless the epoch has at most
``--steps`` batches, in which case every batch is trained and the epoch is measured. The ratio
printed last is prefix epoch / sequence epoch.

    OMP_NUM_THREADS=2 python benchmarks/sequence_speed.py --datasets ml-1m beauty \\
        --models SASRec HyMoERec FAME Mamba4Rec --output benchmarks/results/sequence_speed.json
"""

from __future__ import annotations

import gc
import json
import time


def epoch_time(model_name: str, dataset: str, objective: str, args) -> dict:
    """Time one training epoch of ``model_name`` on ``dataset`` under ``objective``."""
    from recbole_moe.benchmark.timing import benchmark_settings, time_epoch
    from recbole_moe.quick_start import get_trainer, prepare_run

    config_dict = benchmark_settings(
        args,
        data_path_mode="lean",
        train_objective=objective,
        train_negatives=args.train_negatives,
    )
    start = time.perf_counter()
    parts = prepare_run(model_name, dataset, config_dict, log=False)
    config, train_data, model = parts.config, parts.train_data, parts.model
    prepare = time.perf_counter() - start
    timing = time_epoch(get_trainer(config, model), train_data, args.steps)
    row = {
        "dataset": dataset,
        "model": model_name,
        "objective": objective,
        "max_len": config["MAX_ITEM_LIST_LENGTH"],
        "samples": train_data.sample_size,
        "prepare_seconds": round(prepare, 1),
        **timing,
    }
    del train_data, model
    gc.collect()
    return row


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, write_results
    from recbole_moe.environment import describe_machine

    parser = grid_parser(__doc__, ["ml-1m", "beauty"], ["SASRec", "HyMoERec", "FAME", "Mamba4Rec"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per epoch")
    parser.add_argument("--train_negatives", type=int, default=0)
    args = parser.parse_args()

    machine = describe_machine()
    print(f"# {machine}", flush=True)
    rows = []
    for dataset in args.datasets:
        for model in args.models:
            for objective in ("prefix", "sequence"):
                row = epoch_time(model, dataset, objective, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\n{'dataset':8} {'model':10} {'prefix epoch':>14} {'sequence epoch':>16} {'ratio':>7}")
    summary = []
    for dataset in args.datasets:
        for model in args.models:
            pre, seq = (
                next(
                    r
                    for r in rows
                    if (r["dataset"], r["model"], r["objective"]) == (dataset, model, o)
                )
                for o in ("prefix", "sequence")
            )
            ratio = pre["epoch_seconds"] / seq["epoch_seconds"]
            summary.append({"dataset": dataset, "model": model, "ratio": round(ratio, 1)})
            print(
                f"{dataset:8} {model:10} {pre['epoch_seconds']:>12.0f} s "
                f"{seq['epoch_seconds']:>14.1f} s {ratio:>6.1f}x"
            )
    if args.output:
        write_results(args.output, machine, args, rows, summary)


if __name__ == "__main__":
    main()

"""Training step with RecBole's attention layers vs the fused path (``attention_impl``).

For each model, length and attention dropout, both implementations are built from the same
seed on the same synthetic data (``train_objective: sequence``, full-width batches of
``--batch`` sequences, hidden 64, 2 layers, 2 heads) and their training steps (forward,
backward, Adam) are timed interleaved in one process, so both see the same machine state.
The peak memory a step adds is sampled for each. Prints recbole / sdpa ratios (> 1: sdpa is
faster or smaller).

    OMP_NUM_THREADS=2 python benchmarks/attention_speed.py --models SASRec HyMoERec \\
        --lengths 50 200 --attn_dropout 0.2 0 --output benchmarks/results/attention_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "HyMoERec"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--attn_dropout", nargs="+", type=float, default=[0.2, 0.0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--n_items", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args()

    import recbole_moe  # noqa: F401  (compatibility patches)
    from recbole_moe.benchmark.timing import train_step, write_results
    from recbole_moe.environment import PeakRSS, code_version, describe_hardware, hardware
    from recbole_moe.model.sequence import SequenceObjective
    from recbole_moe.testing import build, full_width_dataset

    machine = f"{describe_hardware(hardware())}; commit {code_version()}"
    print(f"# {machine}", flush=True)
    rows = []
    for length in args.lengths:
        root = full_width_dataset("attn", args.batch, args.n_items, length)
        for model_name in args.models:
            for dropout in args.attn_dropout:
                setups = {}
                for impl in ("recbole", "sdpa"):
                    parts = build(
                        model_name,
                        root,
                        "attn",
                        {
                            "attention_impl": impl,
                            "train_objective": "sequence",
                            "hidden_size": 64,
                            "inner_size": 256,
                            "n_layers": 2,
                            "n_heads": 2,
                            "MAX_ITEM_LIST_LENGTH": length,
                            "train_batch_size": args.batch,
                            "attn_dropout_prob": dropout,
                            "hidden_dropout_prob": 0.2,
                            "train_batch_chunks": 1,
                            "checkpoint_dir": os.path.join(root, "saved"),
                        },
                    )
                    train_data, model = parts.train_data, parts.model
                    batch = next(iter(train_data))
                    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                    setups[impl] = (model, optimizer, SequenceObjective(model), batch)

                def step(impl: str, setups: dict = setups) -> None:
                    model, optimizer, objective, batch = setups[impl]
                    train_step(model, optimizer, batch, objective)

                times = {impl: [] for impl in setups}
                for rep in range(args.repeats + 1):
                    for impl in setups:  # interleaved
                        start = time.perf_counter()
                        step(impl)
                        if rep:  # the first round warms up
                            times[impl].append(time.perf_counter() - start)
                memory = {}
                for impl in setups:
                    with PeakRSS(interval=0.0005) as peak:
                        step(impl)
                    memory[impl] = (peak.peak - peak.start) / 2**20
                row = {
                    "model": model_name,
                    "length": length,
                    "attn_dropout": dropout,
                    "width": int(setups["recbole"][3]["item_id_list"].shape[1]),
                }
                for impl in setups:
                    row[f"{impl}_ms"] = round(1000 * statistics.median(times[impl]), 1)
                    row[f"{impl}_step_mib"] = round(memory[impl], 1)
                row["speedup"] = round(row["recbole_ms"] / row["sdpa_ms"], 2)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(
        f"\n{'model':10} {'length':>6} {'attn drop':>9} {'recbole ms':>11} {'sdpa ms':>8} "
        f"{'speed-up':>9} {'step MiB recbole/sdpa':>22}"
    )
    for r in rows:
        print(
            f"{r['model']:10} {r['length']:>6} {r['attn_dropout']:>9} {r['recbole_ms']:>11} "
            f"{r['sdpa_ms']:>8} {r['speedup']:>8}x "
            f"{r['recbole_step_mib']:>10} / {r['sdpa_step_mib']}"
        )
    if args.output:
        write_results(args.output, machine, args, rows)


if __name__ == "__main__":
    main()

"""Lean vs RecBole data path at equal settings: data preparation, loader and epoch time.

Three configurations per dataset, each in a fresh subprocess (so peak RSS is its own):
``recbole`` (RecBole's path), ``lean`` (lean path, RecBole's batches) and ``lean+grouped``
(lean path, ``train_batch_order: length_grouped``: same samples per epoch, batches of similar
history length trimmed to their longest history). For each:
  * ``prepare``: dataset loading + augmentation + split + loaders (``prepare_run`` data part);
  * ``loader epoch``: one full pass over the training loader, data only (every batch built);
  * ``step``: mean time of a training step (forward + backward + Adam) over ``--max_batches``
    batches spread evenly over the epoch (with grouped batches the step time depends on the
    batch's width, so the sample covers the whole epoch);
  * ``epoch``: ``loader epoch + batches x step`` (EXTRAPOLATED from ``--max_batches`` steps
    unless ``--max_batches 0``, which trains the full epoch through RecBole's trainer and
    measures it).

    python benchmarks/lean_speed.py --datasets ml-100k ml-1m --data_path dataset
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("recbole", "lean", "lean+grouped")


def child(args) -> dict:
    import psutil
    import recbole
    import torch

    from recbole_moe.benchmark.timing import benchmark_settings, timed_steps, train_step
    from recbole_moe.quick_start import get_trainer, prepare_run

    data_path = args.data_path
    if args.dataset == "ml-100k" and not os.path.isdir(os.path.join(data_path, "ml-100k")):
        data_path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    config_dict = benchmark_settings(
        args,
        data_path=data_path,
        data_path_mode=args.mode.split("+")[0],
        MAX_ITEM_LIST_LENGTH=args.max_len,
        inner_size=256,
        n_heads=2,
        train_batch_order="length_grouped" if args.mode == "lean+grouped" else "random",
    )
    start = time.perf_counter()
    parts = prepare_run(args.model, args.dataset, config_dict=config_dict, log=False)
    config, train_data, model = parts.config, parts.train_data, parts.model
    prepare = time.perf_counter() - start
    start = time.perf_counter()
    n_batches = sum(1 for _ in train_data)
    loader_epoch = time.perf_counter() - start
    trainer = get_trainer(config, model)
    result = {
        "dataset": args.dataset,
        "mode": args.mode,
        "loader": type(train_data).__name__,
        "samples": len(train_data._dataset),
        "batches": n_batches,
        "prepare_s": round(prepare, 2),
        "loader_epoch_s": round(loader_epoch, 2),
    }
    if args.max_batches:
        model.train()
        # One warm-up step, then --max_batches steps spread evenly over the epoch.
        timed = {0} | timed_steps(n_batches, args.max_batches)
        times, widths = [], []
        for i, batch in enumerate(train_data):
            if i not in timed:
                continue
            t = time.perf_counter()
            train_step(model, trainer.optimizer, batch)
            if i:
                times.append(time.perf_counter() - t)
                widths.append(batch["item_id_list"].shape[1])
        step = sum(times) / len(times)
        result["step_s"] = round(step, 4)
        result["timed_steps"] = len(times)
        result["mean_width"] = round(sum(widths) / len(widths), 1)
        result["EXTRAPOLATED_epoch_s"] = round(loader_epoch + n_batches * step, 1)
    else:
        t = time.perf_counter()
        trainer._train_epoch(train_data, 0)
        result["epoch_s"] = round(time.perf_counter() - t, 1)
    hwm = [
        int(line.split()[1]) * 1024
        for line in open("/proc/self/status")
        if line.startswith("VmHWM")
    ]
    result["peak_rss_gib"] = round(
        (hwm[0] if hwm else psutil.Process().memory_info().rss) / 2**30, 2
    )
    result["torch_threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--max_len", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--max_batches", type=int, default=10, help="training steps timed (0: train the full epoch)"
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for dataset in args.datasets:
        for mode in args.modes:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                "--dataset",
                dataset,
                "--mode",
                mode,
                "--data_path",
                args.data_path,
                "--model",
                args.model,
                "--max_len",
                str(args.max_len),
                "--batch",
                str(args.batch),
                "--max_batches",
                str(args.max_batches),
                "--seed",
                str(args.seed),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(out.returncode)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    epoch_key = "epoch_s" if args.max_batches == 0 else "EXTRAPOLATED_epoch_s"
    for dataset in args.datasets:
        done = {r["mode"]: r for r in rows if r["dataset"] == dataset}
        ref = done.get("recbole") or next(iter(done.values()))
        for mode, row in done.items():
            with_prepare = (ref[epoch_key] + ref["prepare_s"]) / (row[epoch_key] + row["prepare_s"])
            print(
                f"{dataset} {mode:>13}: prepare {row['prepare_s']:7.2f} s "
                f"({ref['prepare_s'] / row['prepare_s']:4.1f}x)  loader epoch "
                f"{row['loader_epoch_s']:6.2f} s "
                f"({ref['loader_epoch_s'] / row['loader_epoch_s']:4.1f}x)  "
                f"{epoch_key} {row[epoch_key]:8.1f} s ({ref[epoch_key] / row[epoch_key]:5.2f}x)  "
                f"with prepare {ref[epoch_key] + ref['prepare_s']:.0f} -> "
                f"{row[epoch_key] + row['prepare_s']:.0f} s "
                f"({with_prepare:5.2f}x)  "
                f"peak RSS {row['peak_rss_gib']} GiB"
            )


if __name__ == "__main__":
    main()

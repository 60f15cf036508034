"""Lean vs RecBole data path at equal settings: data preparation, loader and epoch time.

For each dataset and path (each in a fresh subprocess, so peak RSS is the path's own):
  * ``prepare``: dataset loading + augmentation + split + loaders (``prepare_run`` data part);
  * ``loader epoch``: one full pass over the training loader, data only (every batch built);
  * ``step``: mean time of a training step (forward + backward + Adam) over ``--max_batches``
    batches (the batches are identical on both paths: same samples, same shuffling);
  * ``epoch``: ``loader epoch + batches x step`` (EXTRAPOLATED from ``--max_batches`` steps
    unless ``--max_batches 0``, which trains the full epoch through RecBole's trainer).

    python benchmarks/lean_speed.py --datasets ml-100k ml-1m --data_path dataset
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(args) -> dict:
    import psutil
    import recbole
    import torch

    import recbole_moe  # noqa: F401
    from recbole_moe.quick_start import get_trainer, prepare_run

    data_path = args.data_path
    if args.dataset == "ml-100k" and not os.path.isdir(os.path.join(data_path, "ml-100k")):
        data_path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    config_dict = {
        "data_path": data_path, "data_path_mode": args.mode,
        "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": 64, "inner_size": 256,
        "n_layers": 2, "n_heads": 2, "train_batch_size": args.batch, "state": "ERROR",
        "show_progress": False, "checkpoint_dir": os.path.join(tempfile.gettempdir(), "lean_speed_saved"), "log_wandb": False,
    }
    start = time.perf_counter()
    config, train_data, _, _, model, _ = prepare_run(
        args.model, args.dataset, config_dict=config_dict, log=False
    )
    prepare = time.perf_counter() - start
    start = time.perf_counter()
    n_batches = sum(1 for _ in train_data)
    loader_epoch = time.perf_counter() - start
    trainer = get_trainer(config, model)
    result = {"dataset": args.dataset, "mode": args.mode, "loader": type(train_data).__name__,
              "samples": len(train_data._dataset), "batches": n_batches,
              "prepare_s": round(prepare, 2), "loader_epoch_s": round(loader_epoch, 2)}
    if args.max_batches:
        model.train()
        times = []
        for i, batch in enumerate(train_data):
            if i >= args.max_batches:
                break
            t = time.perf_counter()
            trainer.optimizer.zero_grad()
            loss = model.calculate_loss(batch)
            loss.backward()
            trainer.optimizer.step()
            times.append(time.perf_counter() - t)
        step = sum(times[1:]) / max(len(times) - 1, 1)
        result["step_s"] = round(step, 4)
        result["EXTRAPOLATED_epoch_s"] = round(loader_epoch + n_batches * step, 1)
    else:
        t = time.perf_counter()
        trainer._train_epoch(train_data, 0)
        result["epoch_s"] = round(time.perf_counter() - t, 1)
    hwm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status")
           if line.startswith("VmHWM")]
    result["peak_rss_gib"] = round((hwm[0] if hwm else psutil.Process().memory_info().rss)
                                   / 2**30, 2)
    result["torch_threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    parser.add_argument("--data_path", default="dataset")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--max_len", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--max_batches", type=int, default=10,
                        help="training steps timed (0: train the full epoch)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for dataset in args.datasets:
        for mode in ("recbole", "lean"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--dataset", dataset,
                   "--mode", mode, "--data_path", args.data_path, "--model", args.model,
                   "--max_len", str(args.max_len), "--batch", str(args.batch),
                   "--max_batches", str(args.max_batches)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(out.returncode)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    for dataset in args.datasets:
        ref, lean = [next(r for r in rows if r["dataset"] == dataset and r["mode"] == m)
                     for m in ("recbole", "lean")]
        line = (f"{dataset}: prepare {ref['prepare_s']} s -> {lean['prepare_s']} s "
                f"({ref['prepare_s'] / lean['prepare_s']:.1f}x), loader epoch "
                f"{ref['loader_epoch_s']} s -> {lean['loader_epoch_s']} s "
                f"({ref['loader_epoch_s'] / lean['loader_epoch_s']:.1f}x), peak RSS "
                f"{ref['peak_rss_gib']} -> {lean['peak_rss_gib']} GiB")
        if args.max_batches == 0:
            line += (f", epoch {ref['epoch_s']} s -> {lean['epoch_s']} s "
                     f"({ref['epoch_s'] / lean['epoch_s']:.2f}x)")
        else:
            # The model sees identical batches on both paths, so its step time does not depend
            # on the path: use the mean of both measurements for both epoch estimates.
            step = (ref["step_s"] + lean["step_s"]) / 2
            epochs = [r["loader_epoch_s"] + r["batches"] * step for r in (ref, lean)]
            firsts = [e + r["prepare_s"] for e, r in zip(epochs, (ref, lean))]
            line += (f", EXTRAPOLATED epoch (step {step:.3f} s) {epochs[0]:.0f} s -> "
                     f"{epochs[1]:.0f} s ({epochs[0] / epochs[1]:.3f}x), with data preparation "
                     f"{firsts[0]:.0f} s -> {firsts[1]:.0f} s ({firsts[0] / firsts[1]:.3f}x)")
        print(line)

if __name__ == "__main__":
    main()

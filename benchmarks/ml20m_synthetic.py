"""Scale check: an ML-20m-shaped synthetic dataset trained through the lean data path on CPU.

Phases (each timed, with the process's peak RSS during the phase and overall):
  1. generate  ``ratings.csv`` with ML-20m's shape: 138,493 users, 26,744 items, 20,000,263
     ratings; Zipf-like item popularity; per-user lengths log-normal with minimum 20 (like
     MovieLens); increasing timestamps per user;
  2. prepare   it with ``recbole_moe.data.prepare.prepare_dataset`` (``ratings.csv`` -> ``.inter``);
  3. load      the lean dataset and its loaders (``data_path_mode: lean``);
  4. train     SASRec and FAME (hidden 64, length 200): one full pass over the training loader
     (every batch of the epoch built) in which ``--max_batches`` batches, spread evenly over
     the epoch, get a training step; the epoch time is EXTRAPOLATED from the mean step time (a
     full epoch of training steps is days on 2 cores). ``--orders`` repeats this for RecBole's
     batch order (``random``) and/or ``length_grouped``;
  5. evaluate  ``--eval_batches`` full-sort validation batches (extrapolated likewise), or with
     ``--eval_batches -1`` the whole validation set through RecBole's evaluator (every user
     ranked against every item, metrics computed).
RecBole's default path is estimated (``estimate_recbole_bytes``) and measured on a fraction of
the users (``--fraction``) in a subprocess, then scaled up linearly.

    OMP_NUM_THREADS=2 python benchmarks/ml20m_synthetic.py --max_batches 20 --eval_batches 2 \
        --orders random length_grouped
    python benchmarks/ml20m_synthetic.py --users 13849 --items 2674 --interactions 2000026  # 1/10
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from recbole_moe.environment import PeakRSS
from recbole_moe.files import atomic_write_json

GIB = 2**30


class Phase(PeakRSS):
    """Wall time and peak RSS (sampled every 50 ms) of a block, printed and kept in ``results``."""

    results: list = []

    def __init__(self, name: str) -> None:
        super().__init__(interval=0.05)
        self.name = name

    def __enter__(self) -> Phase:
        super().__enter__()
        self.start_time = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start_time
        super().__exit__(*exc)
        row = {
            "phase": self.name,
            "seconds": round(self.seconds, 1),
            "peak_rss_gib": round(self.peak / GIB, 2),
            "end_rss_gib": round(self.process.memory_info().rss / GIB, 2),
        }
        row.update(getattr(self, "extra", {}))
        Phase.results.append(row)
        print(json.dumps(row), flush=True)


def user_lengths(rng, n_users: int, n_inter: int, min_len: int = 20) -> np.ndarray:
    """Per-user lengths >= ``min_len`` summing to ``n_inter`` (log-normal tail like MovieLens:
    median ~70, mean ~144 for ML-20m)."""
    raw = rng.lognormal(mean=0.0, sigma=1.25, size=n_users)
    extra = raw / raw.sum() * (n_inter - min_len * n_users)
    lengths = min_len + np.floor(extra).astype(np.int64)
    short = n_inter - lengths.sum()  # distribute the rounding remainder
    lengths[rng.choice(n_users, size=int(short), replace=False)] += 1
    return lengths


def generate(path: str, n_users: int, n_items: int, n_inter: int, seed: int = 0) -> dict:
    """Write a MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp``) in chunks."""
    rng = np.random.default_rng(seed)
    lengths = user_lengths(rng, n_users, n_inter)
    # Zipf-like popularity over items (exponent 1.1, like MovieLens' head-heavy catalogue);
    # movie ids are a shuffled range so popularity is unrelated to the id.
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    cdf = np.cumsum(weights / weights.sum())
    movie_ids = rng.permutation(n_items) + 1
    starts = rng.integers(789_652_009, 1_427_784_002, size=n_users)  # ML-20m's time range
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("userId,movieId,rating,timestamp\n")
        chunk_users = 10_000
        for first in range(0, n_users, chunk_users):
            users = np.arange(first, min(first + chunk_users, n_users))
            counts = lengths[users]
            n = int(counts.sum())
            user_col = np.repeat(users + 1, counts)
            ranks = np.searchsorted(cdf, rng.random(n), side="right").clip(max=n_items - 1)
            gaps = rng.exponential(3600.0, size=n).astype(np.int64) + 1
            offsets = np.cumsum(counts) - counts
            seconds = np.cumsum(gaps)
            seconds -= np.repeat(seconds[offsets] - gaps[offsets], counts)
            times = np.repeat(starts[users], counts) + seconds
            ratings = rng.integers(1, 11, size=n) / 2.0
            lines = np.char.add(
                np.char.add(
                    np.char.add(user_col.astype("U7"), ","),
                    np.char.add(movie_ids[ranks].astype("U6"), ","),
                ),
                np.char.add(np.char.add(np.char.mod("%.1f", ratings), ","), times.astype("U10")),
            )
            f.write("\n".join(lines.tolist()))
            f.write("\n")
    os.replace(tmp, path)
    return {
        "users": n_users,
        "items": n_items,
        "interactions": int(lengths.sum()),
        "min_length": int(lengths.min()),
        "median_length": float(np.median(lengths)),
        "max_length": int(lengths.max()),
    }


def measure_recbole_fraction(
    data_path: str, dataset: str, fraction: float, max_len: int, out: str
) -> dict:
    """Peak RSS of RecBole's default path on the first ``fraction`` of users (subprocess)."""
    inter = os.path.join(data_path, dataset, f"{dataset}.inter")
    sub = f"{dataset}-frac"
    os.makedirs(os.path.join(out, sub), exist_ok=True)
    sub_inter = os.path.join(out, sub, f"{sub}.inter")
    import pandas as pd

    frame = pd.read_csv(inter, sep="\t", dtype=str)
    users = frame.iloc[:, 0].unique()
    keep = set(users[: max(1, int(len(users) * fraction))])
    frame = frame[frame.iloc[:, 0].isin(keep)]
    frame.to_csv(sub_inter, sep="\t", index=False)
    rows = len(frame)
    del frame
    code = f"""
import json, os, time, psutil, recbole_moe
from recbole.data import create_dataset, data_preparation
from recbole_moe.config import Config
cfg = {{"data_path": {out!r}, "MAX_ITEM_LIST_LENGTH": {max_len}, "state": "ERROR",
       "data_path_mode": "recbole", "load_col": {{"inter": ["user_id", "item_id", "timestamp"]}},
       "eval_args": {{"split": {{"LS": "valid_and_test"}}, "order": "TO", "group_by": "user",
                      "mode": "full"}}, "train_neg_sample_args": None}}
p = psutil.Process(); base = p.memory_info().rss; t = time.perf_counter()
config = Config("SASRec", {sub!r}, config_dict=cfg)
data = create_dataset(config); parts = data_preparation(config, data)
# VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork).
peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_rss": peak, "base_rss": base}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["rows"] = rows
    return measured


def train_batches(
    model_name: str, config_dict: dict, dataset: str, max_batches: int, eval_batches: int
) -> None:
    """Build ``model_name`` on the lean data, build every training batch of one epoch and time
    a training step on ``max_batches`` of them, spread evenly over the epoch."""
    import torch

    from recbole_moe.benchmark.timing import time_epoch, timed_steps
    from recbole_moe.quick_start import get_trainer, prepare_run

    order = config_dict.get("train_batch_order", "random")
    if config_dict.get("train_objective") == "sequence":
        order = "whole-sequence"
    with Phase(f"load lean dataset + build {model_name}") as phase:
        parts = prepare_run(model_name, dataset, config_dict=config_dict, log=False)
        config, train_data, valid_data, model = (
            parts.config,
            parts.train_data,
            parts.valid_data,
            parts.model,
        )
        phase.extra = {
            "train_samples": train_data.sample_size,
            "batches_per_epoch": len(train_data),
            "data_path": type(train_data).__name__,
        }
    trainer = get_trainer(config, model)
    with Phase(
        f"{model_name}, {order} batches: full loader epoch, "
        f"{len(timed_steps(len(train_data), max_batches))} steps"
    ) as phase:
        timing = time_epoch(trainer, train_data, max_batches)
        hours = round(timing["epoch_seconds"] / 3600, 3)
        phase.extra = {**timing, f"{timing['epoch']}_epoch_hours": hours}
    if eval_batches < 0:
        with Phase(
            f"evaluate {model_name}: full validation pass ({len(valid_data)} "
            "full-sort batches, RecBole's evaluator)"
        ) as phase:
            result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
            phase.extra = {
                "users": len(valid_data._dataset),
                "metrics": {k: round(float(v), 4) for k, v in result.items()},
            }
    elif eval_batches:
        model.eval()
        trainer.tot_item_num = valid_data._dataset.item_num
        with (
            Phase(f"evaluate {model_name} ({eval_batches} full-sort batches)") as phase,
            torch.no_grad(),
        ):
            times = []
            for i, batch in enumerate(valid_data):
                if i >= eval_batches:
                    break
                start = time.perf_counter()
                trainer._full_sort_batch_eval(batch)
                times.append(time.perf_counter() - start)
            mean = float(np.mean(times))
            phase.extra = {
                "seconds_per_batch": round(mean, 3),
                "EXTRAPOLATED_valid_hours": round(mean * len(valid_data) / 3600, 2),
            }
    del train_data, valid_data, model, trainer
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "ml20m-synth"))
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--interactions", type=int, default=20_000_263)
    parser.add_argument("--max_len", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256, help="train_batch_size")
    parser.add_argument("--eval_batch", type=int, default=256, help="eval_batch_size")
    parser.add_argument(
        "--max_batches",
        type=int,
        default=20,
        help="training steps per model, spread over the epoch (the epoch time is extrapolated)",
    )
    parser.add_argument(
        "--orders",
        nargs="+",
        default=["random"],
        choices=["random", "length_grouped"],
        help="train_batch_order values",
    )
    parser.add_argument(
        "--eval_batches",
        type=int,
        default=2,
        help="full-sort validation batches timed (-1: the whole validation set)",
    )
    parser.add_argument("--models", nargs="+", default=["SASRec", "FAME"])
    parser.add_argument(
        "--objective",
        default="prefix",
        choices=["prefix", "sequence"],
        help="train_objective (sequence: one sample per user, loss at every "
        "position; --max_batches >= batches trains the whole epoch)",
    )
    parser.add_argument(
        "--train_negatives",
        type=int,
        default=0,
        help="sampled-softmax negatives under --objective sequence (0: all items)",
    )
    parser.add_argument(
        "--fraction",
        type=float,
        default=0.01,
        help="share of users for measuring RecBole's path (0: skip)",
    )
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import recbole_moe  # noqa: F401
    from recbole_moe.data.lean import estimate_recbole_bytes
    from recbole_moe.data.prepare import prepare_dataset

    os.makedirs(args.workdir, exist_ok=True)
    raw = os.path.join(args.workdir, "ratings.csv")
    data_path = os.path.join(args.workdir, "dataset")
    dataset = "ml-20m"  # uses recbole-moe's ML-20m property file (length 200, leave-one-out)
    info = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{psutil.cpu_count()} CPU cores, "
        f"{psutil.virtual_memory().total / GIB:.0f} GiB",
        "torch_threads": __import__("torch").get_num_threads(),
        "args": vars(args),
    }
    if not os.path.isfile(raw):
        with Phase("generate ratings.csv") as phase:
            phase.extra = generate(raw, args.users, args.items, args.interactions)
    with Phase("prepare (ratings.csv -> .inter)"):
        prepare_dataset(dataset, raw, data_path, verbose=False)

    config_dict = {
        "data_path": data_path,
        "data_path_mode": "lean",
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "hidden_size": 64,
        "train_batch_size": args.batch,
        "eval_batch_size": args.eval_batch,
        "state": "WARNING",
        "show_progress": False,
        "checkpoint_dir": args.workdir,
        "log_wandb": False,
        "train_objective": args.objective,
        "train_negatives": args.train_negatives,
    }
    for model in args.models:
        for order in args.orders:
            train_batches(
                model,
                dict(config_dict, train_batch_order=order),
                dataset,
                args.max_batches,
                args.eval_batches,
            )

    n_rows = args.interactions
    info["recbole_estimate_gib"] = round(
        estimate_recbole_bytes(n_rows, args.max_len, 8 + 4) / GIB, 1
    )
    if args.fraction:
        measured = measure_recbole_fraction(
            data_path, dataset, args.fraction, args.max_len, args.workdir
        )
        scale = n_rows / measured["rows"]
        info["recbole_fraction"] = {
            "rows": measured["rows"],
            "seconds": round(measured["seconds"], 1),
            "peak_rss_gib": round(measured["peak_rss"] / GIB, 2),
            "EXTRAPOLATED_peak_gib_full": round(
                ((measured["peak_rss"] - measured["base_rss"]) * scale + measured["base_rss"])
                / GIB,
                1,
            ),
            "estimate_gib_same_rows": round(
                estimate_recbole_bytes(measured["rows"], args.max_len, 12) / GIB, 2
            ),
        }
    import resource

    info["process_peak_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 2
    )
    info["phases"] = Phase.results
    print(json.dumps(info, indent=1))
    if args.output:
        atomic_write_json(args.output, info, indent=1)


if __name__ == "__main__":
    main()

"""Side-by-side speed and memory of models at equal sizes, with ratios to a reference model.

Builds every model on the same synthetic dataset with the same hidden size, layers, heads,
maximum length and batch size, then times, interleaved across models in one process:
  * a training step (forward + backward + Adam step) on a fixed training batch,
  * a full-sort evaluation batch (``full_sort_predict`` under ``torch.no_grad``),
and samples the process RSS during evaluation to report the peak memory it adds.

    python benchmarks/speed.py --models SASRec HyMoERec FAME Mamba4Rec
    python benchmarks/speed.py --models SASRec Mamba4Rec --max_len 200 --batch 256 --n_items 3706

Prints one row per model and the ratio of each time to the reference (the first model).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile

import psutil
import torch

from recbole_moe.benchmark.timing import medians, time_interleaved, train_step
from recbole_moe.environment import PeakRSS
from recbole_moe.testing import build, make_synthetic_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "HyMoERec"])
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--n_layers", type=int, default=2)
    parser.add_argument("--n_heads", type=int, default=2)
    parser.add_argument("--inner_size", type=int, default=256)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n_users", type=int, default=2000)
    parser.add_argument("--n_items", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions per model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="MODEL:key=value",
        help="per-model overrides, e.g. FAME:n_heads=4 FAME:n_experts=4",
    )
    return parser.parse_args(argv)


def per_model_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        model, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        if not model or not key or not value:
            raise SystemExit(f"--set expects MODEL:key=value, got '{item}'")
        overrides.setdefault(model, {})[key] = value
    return overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = per_model_overrides(args.set)
    tmp = tempfile.mkdtemp(prefix="speed-")
    make_synthetic_dataset(
        tmp,
        name="speed",
        n_users=args.n_users,
        n_items=args.n_items,
        min_len=args.max_len // 2,
        max_len=args.max_len + 10,
    )
    common = {
        "hidden_size": args.hidden_size,
        "n_layers": args.n_layers,
        "num_layers": args.n_layers,
        "n_heads": args.n_heads,
        "inner_size": args.inner_size,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "train_batch_size": args.batch,
        "eval_batch_size": args.batch * (args.n_items + 1),
        "checkpoint_dir": os.path.join(tmp, "saved"),
    }
    setups = {}
    for name in args.models:
        config_dict = dict(common)
        config_dict.update(extra.get(name, {}))
        parts = build(name, tmp, "speed", config_dict)
        train_data, valid_data, model = parts.train_data, parts.valid_data, parts.model
        train_batch = next(iter(train_data))
        eval_batch = next(iter(valid_data))[0]
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        n_params = sum(p.numel() for p in model.parameters())
        setups[name] = (model, optimizer, train_batch, eval_batch, n_params)

    def train(name: str) -> None:
        model, optimizer, batch, _, _ = setups[name]
        train_step(model, optimizer, batch)

    def eval_step(name: str) -> None:
        model, _, _, batch, _ = setups[name]
        model.eval()
        with torch.no_grad():
            model.full_sort_predict(batch)

    med = {name: {} for name in args.models}
    for phase, step in (("train", train), ("eval", eval_step)):
        work = {name: functools.partial(step, name) for name in args.models}
        seconds = time_interleaved(work, args.warmup + args.repeats)
        for name, value in medians(seconds, skip=args.warmup).items():
            med[name][phase] = value

    memory = {}
    for name in args.models:
        with PeakRSS(interval=0.0005) as peak:
            eval_step(name)
        memory[name] = (peak.peak - peak.start) / 2**20

    ref = args.models[0]
    print(
        f"# speed.py  {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"# hidden {args.hidden_size}, layers {args.n_layers}, heads {args.n_heads}, "
        f"max_len {args.max_len}, batch {args.batch}, items {args.n_items}, "
        f"median of {args.repeats} (after {args.warmup} warm-up)"
    )
    if extra:
        print(f"# per-model overrides: {extra}")
    header = (
        f"{'model':<12} {'params':>10} {'train ms':>9} {'x' + ref:>12} "
        f"{'eval ms':>9} {'x' + ref:>12} {'eval +MiB':>10} {'x' + ref:>12}"
    )
    print(header)
    for name in args.models:
        mem_ratio = memory[name] / memory[ref] if memory[ref] > 0 else float("nan")
        print(
            f"{name:<12} {setups[name][4]:>10,} {med[name]['train'] * 1e3:>9.1f} "
            f"{med[name]['train'] / med[ref]['train']:>12.2f} {med[name]['eval'] * 1e3:>9.1f} "
            f"{med[name]['eval'] / med[ref]['eval']:>12.2f} "
            f"{memory[name]:>10.1f} {mem_ratio:>12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

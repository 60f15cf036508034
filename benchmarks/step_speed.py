"""Training-step speed of the attention, loss, precision and compilation choices.

For each model, length and attention dropout, the variants are built from the same seed on
the same synthetic data (``train_objective: sequence``, full-width batches of ``--batch``
sequences, hidden 64, inner 256, 2 layers, 2 heads, hidden dropout 0.5 as in the Beauty
protocol) and their training steps (forward, backward, Adam) are timed interleaved in one
process, so all see the same machine state:

* ``recbole``: RecBole's attention layers and the cross-entropy of the full ``[T, n_items]``
  logits (``F.cross_entropy``, as RecBole's own ``CrossEntropyLoss``), float32 (the reference);
* ``sdpa``: ``attention_impl: sdpa`` (fused attention), full-logits cross-entropy, float32;
* ``sdpa+lce``: fused attention and the chunked cross-entropy with its gradient formed in the
  forward pass (``linear_cross_entropy``, the sequence loss's own), float32;
* ``sdpa+lce+bf16``: the same under ``torch.autocast(bfloat16)``, as ``enable_amp: True`` runs
  the loss in RecBole's trainer on CPU (the backward pass and the optimizer outside it);
* ``sdpa+lce+fast``: ``sdpa+lce`` with ``dropout_impl: fast`` (dropout masks from one 64-bit
  random word per four elements instead of ``bernoulli_``; every other variant uses torch's
  dropout), float32;
* ``sdpa+lce+fast+bf16``: the same under bf16 autocast;
* ``sdpa+lce+fast+gelu``: with ``gelu_impl: fused`` as well (``F.gelu`` in the feed-forward
  layers instead of RecBole's five-operation GELU; every other variant uses RecBole's): the
  defaults;
* ``sdpa+lce+fast+gelu+bf16``: the same under bf16 autocast;
* ``sdpa+compile``: ``sdpa`` with the loss function through ``torch.compile`` (inductor);
  its first step (compilation) is timed separately (``compile_s``), the steady state as the
  others. A compilation error is reported in the row and the variant dropped.

Each row has the median ms per step, the ratio to ``recbole`` (> 1: faster), the peak memory a
step adds (process RSS, sampled) and the top operations by self CPU time of one profiled step
(``torch.profiler``) of the reference and of the fastest variant.

    OMP_NUM_THREADS=1 python benchmarks/step_speed.py --threads 1 \\
        --output benchmarks/results/step_speed.json
    # RecBole's attention against the fused path only, at 2 threads
    python benchmarks/step_speed.py --threads 2 --variants recbole sdpa --attn_dropout 0.2 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
import traceback

import torch

VARIANTS = (
    "recbole",
    "sdpa",
    "sdpa+lce",
    "sdpa+lce+bf16",
    "sdpa+lce+fast",
    "sdpa+lce+fast+bf16",
    "sdpa+lce+fast+gelu",
    "sdpa+lce+fast+gelu+bf16",
    "sdpa+compile",
)
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v != "sdpa+compile")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "HyMoERec"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--attn_dropout", nargs="+", type=float, default=[0.5, 0.0])
    parser.add_argument("--hidden_dropout", type=float, default=0.5)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--compile_attn_dropout",
        nargs="*",
        type=float,
        help="attention dropouts at which sdpa+compile is measured (default: all; each "
        "compilation takes about a minute on one CPU thread)",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--n_items", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--top", type=int, default=8, help="profiled operations kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    args.variants = list(dict.fromkeys(["recbole", *args.variants]))  # the reference first
    return args


def compiles(args, dropout: float) -> bool:
    """Whether ``sdpa+compile`` is measured at this attention dropout."""
    return args.compile_attn_dropout is None or dropout in args.compile_attn_dropout


def with_autocast(loss_fn):
    """``loss_fn`` under CPU bf16 autocast: RecBole's trainer with ``enable_amp: True``."""

    def loss(batch):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return loss_fn(batch)

    return loss


def with_logits_cross_entropy(loss_fn):
    """``loss_fn`` with the sequence loss's full softmax taken as ``F.cross_entropy`` of the
    whole ``[T, n_items]`` logits (the implementation before ``linear_cross_entropy``)."""
    from unittest import mock

    import torch.nn.functional as F

    from recbole_moe.layers import sequence_loss

    def logits_cross_entropy(hidden, weight, target, bias=None, chunk_rows=None):
        logits = hidden @ weight.t()
        return F.cross_entropy(logits if bias is None else logits + bias, target)

    def loss(batch):
        with mock.patch.object(sequence_loss, "linear_cross_entropy", logits_cross_entropy):
            return loss_fn(batch)

    return loss


def build_variant(model_name: str, root: str, variant: str, length: int, dropout: float, args):
    """(model, optimizer, loss function, batch) of one variant, built from the same seed."""
    from recbole_moe.model.sequence import SequenceObjective
    from recbole_moe.testing import build

    parts = build(
        model_name,
        root,
        "step",
        {
            "attention_impl": "recbole" if variant == "recbole" else "sdpa",
            "dropout_impl": "fast" if "+fast" in variant else "torch",
            "gelu_impl": "fused" if "+gelu" in variant else "recbole",
            "train_objective": "sequence",
            "hidden_size": 64,
            "inner_size": 256,
            "n_layers": 2,
            "n_heads": 2,
            "MAX_ITEM_LIST_LENGTH": length,
            "train_batch_size": args.batch,
            "attn_dropout_prob": dropout,
            "hidden_dropout_prob": args.hidden_dropout,
            "train_batch_chunks": 1,
            "checkpoint_dir": os.path.join(root, "saved"),
        },
    )
    model = parts.model
    objective = SequenceObjective(model)
    loss_fn = objective
    if variant == "sdpa+compile":
        objective.loss = torch.compile(objective.loss)
    if "+lce" not in variant:
        loss_fn = with_logits_cross_entropy(loss_fn)
    if variant.endswith("+bf16"):
        loss_fn = with_autocast(loss_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, optimizer, loss_fn, next(iter(parts.train_data))


def measure(args) -> tuple[list[dict], str]:
    from recbole_moe.benchmark.timing import (
        medians,
        speedups,
        time_interleaved,
        top_operations,
        train_step,
    )
    from recbole_moe.environment import PeakRSS, describe_machine
    from recbole_moe.testing import full_width_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe_machine()
    print(f"# {machine}", flush=True)
    rows = []
    for length in args.lengths:
        root = full_width_dataset("step", args.batch, args.n_items, length)
        for model_name in args.models:
            for dropout in args.attn_dropout:
                row = {"model": model_name, "length": length, "attn_dropout": dropout}
                setups, errors = {}, {}
                for variant in args.variants:
                    if variant == "sdpa+compile" and not compiles(args, dropout):
                        continue
                    setups[variant] = build_variant(
                        model_name, root, variant, length, dropout, args
                    )

                def step(variant: str, setups: dict = setups) -> None:
                    model, optimizer, loss_fn, batch = setups[variant]
                    train_step(model, optimizer, batch, loss_fn)

                for variant in list(setups):  # warm-up; compilation happens here
                    start = time.perf_counter()
                    try:
                        step(variant)
                    except Exception as exc:  # report, drop the variant, go on
                        errors[variant] = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
                        traceback.print_exc(limit=2)
                        del setups[variant]
                        continue
                    if variant == "sdpa+compile":
                        row["compile_s"] = round(time.perf_counter() - start, 1)
                        step(variant)  # a second untimed step: any recompilation
                work = {variant: functools.partial(step, variant) for variant in setups}
                median = medians(time_interleaved(work, args.repeats))
                for variant in setups:
                    with PeakRSS(interval=0.0005) as peak:
                        step(variant)
                    row[f"{variant}_ms"] = round(1000 * median[variant], 1)
                    row[f"{variant}_step_mib"] = round((peak.peak - peak.start) / 2**20, 1)
                ms = {variant: row[f"{variant}_ms"] for variant in setups}
                for variant, speedup in speedups(ms, "recbole").items():
                    row[f"{variant}_speedup"] = round(speedup, 2)
                fastest = min(setups, key=lambda v: row[f"{v}_ms"])
                row["fastest"] = fastest
                row["profile"] = {
                    v: top_operations(lambda v=v: step(v), args.top)
                    for v in dict.fromkeys(["recbole", fastest])
                }
                if errors:
                    row["errors"] = errors
                print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)
                rows.append(row)
    return rows, machine


def print_tables(rows: list[dict], variants: list[str]) -> None:
    header = f"{'model':9} {'len':>4} {'attn':>4} " + " ".join(f"{v:>19}" for v in variants)
    print("\nms/step (speed-up vs recbole) [peak MiB added by a step]")
    print(header)
    for r in rows:
        cells = []
        for v in variants:
            if f"{v}_ms" in r:
                cells.append(
                    f"{r[f'{v}_ms']:>7} ({r[f'{v}_speedup']:.2f}x) [{r[f'{v}_step_mib']:>4}]"
                )
            else:
                failed = v in r.get("errors", {})
                cells.append(f"{'failed' if failed else 'not run':>19}")
        print(f"{r['model']:9} {r['length']:>4} {r['attn_dropout']:>4} " + " ".join(cells))
    for r in rows:
        if "compile_s" in r:
            print(
                f"compile {r['model']} length {r['length']} attn {r['attn_dropout']}: "
                f"{r['compile_s']} s (first step)"
            )
        for v, err in r.get("errors", {}).items():
            print(f"{v} failed for {r['model']} length {r['length']}: {err}")
    for r in rows:
        for variant, ops in r["profile"].items():
            print(
                f"\ntop {len(ops)} ops by self CPU time: {r['model']} length {r['length']} "
                f"attn dropout {r['attn_dropout']}, {variant}"
            )
            for op in ops:
                print(
                    f"  {op['op'][:44]:44} {op['self_ms']:>9} ms {op['share']:>6.1%} "
                    f"{op['calls']:>6} calls"
                )


def main(argv=None) -> None:
    args = parse_args(argv)
    rows, machine = measure(args)
    print_tables(rows, args.variants)
    if args.output:
        from recbole_moe.benchmark.timing import write_results

        write_results(args.output, machine, args, rows)


if __name__ == "__main__":
    main()

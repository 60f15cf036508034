"""Compare the test metrics of the same models in two benchmark folders (e.g. fp32 and bf16).

For every model with finished runs in both folders it prints mean ± std over seeds, the
relative difference of the means, Welch's t-test (the runs are independent: a switch such as
``enable_amp`` changes every step, so equal seeds do not make the runs paired) and the paired
t-test over the seeds both folders have, for reference. It also prints the mean training
seconds per epoch and the epoch of the best model.

    python benchmarks/compare_runs.py benchmarks/results/hymoerec-sequence \\
        benchmarks/results/bf16-beauty --metrics hit@10 ndcg@10 mrr@10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from scipy import stats


def load(folder: str) -> dict[str, dict[int, dict]]:
    """Finished runs of ``folder``'s ``runs.jsonl``: model -> seed -> latest record."""
    runs: dict[str, dict[int, dict]] = {}
    with open(os.path.join(folder, "runs.jsonl"), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("status") == "ok" and record.get("test_result"):
                runs.setdefault(record["model"], {})[int(record["seed"])] = record
    return runs


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def compare(a: str, b: str, metrics: list[str], models: list[str] | None) -> list[str]:
    runs_a, runs_b = load(a), load(b)
    names = [m for m in (models or sorted(runs_a)) if m in runs_a and m in runs_b]
    if not names:
        raise SystemExit(f"no model has finished runs in both {a} and {b}")
    label_a, label_b = os.path.basename(a.rstrip("/")), os.path.basename(b.rstrip("/"))
    lines = [
        f"| model | metric | {label_a} | {label_b} | difference | p (Welch) | p (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in names:
        ra, rb = runs_a[model], runs_b[model]
        common = sorted(set(ra) & set(rb))
        for metric in metrics:
            va = [r["test_result"][metric] for r in ra.values()]
            vb = [r["test_result"][metric] for r in rb.values()]
            diff = statistics.fmean(vb) / statistics.fmean(va) - 1
            welch = (
                stats.ttest_ind(vb, va, equal_var=False).pvalue
                if min(len(va), len(vb)) > 1
                else float("nan")
            )
            paired = (
                stats.ttest_rel(
                    [rb[s]["test_result"][metric] for s in common],
                    [ra[s]["test_result"][metric] for s in common],
                ).pvalue
                if len(common) > 1
                else float("nan")
            )
            lines.append(
                f"| {model} (n={len(va)}, {len(vb)}) | {metric} | {_mean_std(va)} | "
                f"{_mean_std(vb)} | {diff:+.1%} | {welch:.2f} | {paired:.2f} |"
            )
        for field in ("train_time_per_epoch", "epochs_run"):
            va = [r[field] for r in ra.values() if r.get(field) is not None]
            vb = [r[field] for r in rb.values() if r.get(field) is not None]
            if va and vb:
                mean_a, mean_b = statistics.fmean(va), statistics.fmean(vb)
                lines.append(
                    f"| {model} | {field} | {mean_a:.1f} | {mean_b:.1f} | "
                    f"{mean_b / mean_a - 1:+.1%} | | |"
                )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", help="benchmark folder (holds runs.jsonl), the reference")
    parser.add_argument("second", help="benchmark folder compared against the first")
    parser.add_argument("--metrics", nargs="+", default=["hit@10", "ndcg@10", "mrr@10"])
    parser.add_argument("--models", nargs="+", help="default: every model in both folders")
    args = parser.parse_args(argv)
    print("\n".join(compare(args.first, args.second, args.metrics, args.models)))


if __name__ == "__main__":
    main()

"""Benchmarks: run models × datasets × seeds through ``recbole_moe.run`` and report them.

    python -m recbole_moe.benchmark --protocol hymoerec --scale cpu-smoke --datasets ml-100k
    python -m recbole_moe.benchmark run --models HyMoERec SASRec --datasets beauty \\
        --seeds 0 1 2 --config_files common.yaml --epochs=50 --out results/beauty
    python -m recbole_moe.benchmark report results/beauty
    python -m recbole_moe.benchmark merge results/beauty ../clone/results/beauty

(also ``recbole-moe benchmark ...``). ``run`` is the default subcommand; it writes
``<out>/runs.jsonl`` (one JSON line per run, resumable) and then the report (``report.md``,
one CSV per dataset, ``efficiency.csv``, PNG plots) into ``<out>``. ``merge`` brings the
records of results folders written elsewhere (a campaign's separate clones) into ``<out>``
and rewrites its report.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from recbole_moe.benchmark.checks import check_plan
from recbole_moe.benchmark.plans import PROTOCOLS, SCALES, Plan, build_plan
from recbole_moe.benchmark.report import write_report
from recbole_moe.benchmark.runner import (
    RUNS_FILE,
    SharedPlan,
    append_record,
    execute,
    merge_runs,
    read_runs,
    shared_selection,
)
from recbole_moe.overrides import parse_overrides, split_config_files

__all__ = ["Plan", "append_record", "build_plan", "execute", "main", "read_runs", "write_report"]


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-moe benchmark [run]",
        description="Train every (model, dataset, seed) of a plan with recbole_moe.run, append "
        "one JSON line per run to <out>/runs.jsonl (finished runs are skipped on "
        "rerun) and write the report. Any --key=value is a RecBole config override "
        "applied to every run.",
    )
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        help="paper preset: datasets, models, metrics and settings",
    )
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        help="shrink the plan (cpu-smoke: few epochs, small models; labelled)",
    )
    parser.add_argument("--plan", dest="plan_file", help="YAML plan file")
    parser.add_argument("--models", nargs="+", help="models (replace the preset's)")
    parser.add_argument("--datasets", nargs="+", help="datasets (replace the preset's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (replace the preset's)")
    parser.add_argument("--config_files", nargs="+", help="YAML config files for every run")
    parser.add_argument("--name", help="plan name (default: protocol-scale)")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/<name>)")
    parser.add_argument(
        "--share-with",
        nargs="+",
        default=[],
        metavar="PROTOCOL[:OUT]",
        help="paper presets whose runs (same --models/--datasets/--seeds/overrides) train "
        "exactly as this plan's except for valid_metric and a smaller or equal epoch budget: "
        "each run also selects on that metric (extra_valid_metrics) and writes that plan's "
        "record to OUT/runs.jsonl (default benchmarks/results/PROTOCOL)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep each run's best checkpoint under <out>/saved (default), so that another "
        "evaluation protocol needs no retraining",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop after M minutes: the run under way stops at its next epoch boundary with its "
        "resume checkpoint written, and the same command continues it exactly (exit code 3)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write the report")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the runs and their overrides, run nothing"
    )
    return parser


def _shared_plan(spec: str, args: argparse.Namespace, overrides, config_files) -> SharedPlan:
    """``PROTOCOL[:OUT]`` of ``--share-with``: that preset with this command's models, datasets,
    seeds, config files and overrides."""
    protocol, _, out = spec.partition(":")
    plan = build_plan(
        protocol=protocol,
        scale=args.scale,
        models=args.models,
        datasets=args.datasets,
        seeds=args.seeds,
        config_files=config_files,
        overrides=overrides,
    )
    return SharedPlan(plan, out or f"benchmarks/results/{plan.name}")


def run_main(argv: Sequence[str]) -> int:
    """``benchmark run``: returns 3 when ``--max-minutes`` paused the call before the end (the
    same command continues, and retries failed runs), else 1 when a run failed, 0 when every
    run of the plan is finished."""
    parser = _run_parser()
    args, extra = parser.parse_known_args(list(argv))
    try:
        overrides = parse_overrides(extra)
        plan = build_plan(
            protocol=args.protocol,
            scale=args.scale,
            plan_file=args.plan_file,
            models=args.models,
            datasets=args.datasets,
            seeds=args.seeds,
            config_files=split_config_files(args.config_files),
            overrides=overrides,
            name=args.name,
        )
        share_with = [
            _shared_plan(spec, args, overrides, split_config_files(args.config_files))
            for spec in args.share_with
        ]
    except ValueError as exc:
        print(f"recbole-moe benchmark: error: {exc}", file=sys.stderr)
        return 2
    if args.max_minutes is not None and not args.max_minutes >= 0:
        parser.error(f"--max-minutes must be a number of minutes >= 0, got {args.max_minutes:g}")
    try:
        check_plan(plan)  # every run, before the first one starts (and in --dry-run)
    except ValueError as exc:
        print(f"recbole-moe benchmark: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"benchmarks/results/{plan.name}"
    if args.dry_run:
        print(f"plan {plan.name}: {plan.description}")
        for model, dataset, seed in plan.runs():
            note = (
                " (prefix: cannot train with sequence)"
                if plan.falls_back_to_prefix(model, dataset)
                else ""
            )
            for shared in share_with:
                selection = shared_selection(plan, shared.plan, model, dataset)
                if selection:
                    note += f" (also selects on {next(iter(selection))} for {shared.out})"
            print(
                f"  {model:<10} {dataset:<12} seed {seed}: "
                f"{plan.config_dict(model, dataset, seed)}{note}"
            )
        return 0
    try:
        command = " ".join(["python -m recbole_moe.benchmark"] + list(argv))
        counts = execute(
            plan,
            out,
            keep_checkpoints=args.keep_checkpoints,
            command=command,
            share_with=share_with,
            max_minutes=args.max_minutes,
        )
    except ValueError as exc:
        print(f"recbole-moe benchmark: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"[benchmark] done: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['skipped']} skipped of {counts['total']}"
        + (f", {counts['paused']} paused (run again to continue)" if counts["paused"] else "")
        + (f"; {counts['shared']} records written to shared plans" if share_with else "")
    )
    if not args.no_report:
        for folder in [out] + [shared.out for shared in share_with]:
            if not os.path.isfile(os.path.join(folder, RUNS_FILE)):  # paused before any record
                print(f"[benchmark] no run of {folder} has finished yet: no report")
                continue
            for path in write_report(folder):
                print(f"[benchmark] wrote {path}")
    if counts["paused"]:  # the failed runs are retried by the same next call too
        return 3
    return 1 if counts["failed"] else 0


def _folder_parser(command: str, description: str, out_help: str) -> argparse.ArgumentParser:
    """The parser of a subcommand that works on one results folder ``out``."""
    parser = argparse.ArgumentParser(
        prog=f"recbole-moe benchmark {command}", description=description
    )
    parser.add_argument("out", help=out_help)
    return parser


def _merge_source_problem(source: str) -> str | None:
    """Why ``source`` cannot be merged (None: it holds run records)."""
    if not os.path.isdir(source):
        return f"source {source} is not a folder (no such results folder)"
    records = os.path.join(source, RUNS_FILE)
    if not os.path.isfile(records):
        return f"source {source} holds no {RUNS_FILE}: it is not a benchmark results folder"
    if not read_runs(records):
        return f"source {source} has no run records ({records} is empty)"
    return None


def merge_main(argv: Sequence[str]) -> int:
    """``benchmark merge OUT SOURCE...``: the records ``OUT`` lacks, then ``OUT``'s report."""
    parser = _folder_parser(
        "merge",
        "Append to <out>/runs.jsonl the run records of each <source>/runs.jsonl that <out> "
        "lacks (same run and start time), then rewrite <out>'s report.",
        "results folder that receives the records",
    )
    parser.add_argument("sources", nargs="+", help="results folders to take records from")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    args = parser.parse_args(list(argv))
    for source in args.sources:
        problem = _merge_source_problem(source)
        if problem:
            print(f"recbole-moe benchmark merge: error: {problem}", file=sys.stderr)
            return 2
    added, conflicts = merge_runs(args.sources, args.out)
    for record in added:
        print(f"[benchmark] merged {record['key']} ({record.get('status')})")
    for conflict in conflicts:
        print(
            f"recbole-moe benchmark merge: not merged, {conflict} was run with other settings "
            f"than the finished run in {args.out}",
            file=sys.stderr,
        )
    print(f"[benchmark] {len(added)} record(s) merged into {args.out}")
    if added and not args.no_report:
        for path in write_report(args.out):
            print(f"[benchmark] wrote {path}")
    return 1 if conflicts else 0


def report_main(argv: Sequence[str]) -> int:
    """``benchmark report OUT``: tables, CSVs and plots from ``OUT/runs.jsonl``."""
    parser = _folder_parser(
        "report",
        "Write report.md, <dataset>.csv, efficiency.csv and PNG plots from <out>/runs.jsonl.",
        "benchmark output folder (holds runs.jsonl)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(list(argv))
    try:
        paths = write_report(args.out, plots=not args.no_plots)
    except FileNotFoundError as exc:
        print(f"recbole-moe benchmark report: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m recbole_moe.benchmark`` and ``recbole-moe benchmark``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        return report_main(argv[1:])
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_main(argv)

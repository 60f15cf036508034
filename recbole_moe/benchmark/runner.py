"""Run a benchmark plan: one ``recbole_moe.run`` per (model, dataset, seed), one JSON line each.

Every finished run appends exactly one JSON line to ``<out>/runs.jsonl`` with a single
``os.write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so a run killed midway leaves at
most one partial last line, which :func:`read_runs` ignores (and the next append starts on a
fresh line). Rerunning the same plan skips every (model, dataset, seed) already recorded as
``ok``; failed runs are retried. A run that raises is recorded with ``status: failed`` and its
error, and the plan goes on.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import recbole
import torch

from recbole_moe.benchmark.plans import Plan
from recbole_moe.environment import PeakRSS, code_version, hardware, package_versions
from recbole_moe.files import atomic_write_json, to_plain
from recbole_moe.quick_start import run
from recbole_moe.trainer import TimeBudgetReached

RUNS_FILE = "runs.jsonl"
PLAN_FILE = "plan.json"
#: Version of the JSON line layout; bump when a field changes meaning.
RECORD_VERSION = 1


# --------------------------------------------------------------------------------------------
# runs.jsonl: atomic append, tolerant read
# --------------------------------------------------------------------------------------------


def run_key(model: str, dataset: str, seed: int) -> str:
    """The identity of a run inside one output folder."""
    return f"{model}|{dataset}|{int(seed)}"


def append_record(path: str, record: dict) -> None:
    """Append ``record`` as one JSON line, atomically (one ``os.write`` + ``fsync``).

    When the file does not end with a newline (a previous writer was killed mid-line), the line
    starts with one, so the partial line stays isolated and the new record stays readable.
    """
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        data = line.encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):  # pragma: no cover - regular files write fully
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_runs(path: str, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Every valid record of ``runs.jsonl`` in file order; partial or invalid lines are skipped.

    A missing file reads as no records. ``warn`` is called for invalid lines other than a
    partial last line (the expected trace of a killed writer).
    """
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict) or "key" not in record:
                raise ValueError("not a run record")
        except (ValueError, UnicodeDecodeError):
            if warn is not None and index != len(lines) - 1:
                warn(f"{path}: ignoring invalid line {index + 1}")
            continue
        records.append(record)
    return records


def latest_records(records: Iterable[dict]) -> dict[str, dict]:
    """key -> its last record; an ``ok`` record is never replaced by a later failure."""
    latest: dict[str, dict] = {}
    for record in records:
        previous = latest.get(record["key"])
        if previous is not None and previous.get("status") == "ok" and record.get("status") != "ok":
            continue
        latest[record["key"]] = record
    return latest


def merge_runs(sources: Iterable[str], out: str) -> tuple[list[dict], list[str]]:
    """Append to ``<out>/runs.jsonl`` the records of each ``<source>/runs.jsonl`` it lacks.

    For a campaign run from separate clones: each clone writes its own results folder, and
    this brings their records (and ``plan.json``, when ``out`` has none) into one folder. A
    record is new when no record of ``out`` has its key and start time; records are appended
    in each source's file order, sources in the order given. A finished (``ok``) record whose
    settings fingerprint differs from a finished record of the same run in ``out`` is not
    merged: one folder holds one setting per run (as :func:`execute` keeps it).

    Returns:
        ``(added, conflicts)``: the records appended, and ``"<source>: <key>"`` for each
        record refused for its fingerprint.
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, RUNS_FILE)
    existing = read_runs(path)
    seen = {(r["key"], r.get("started_at")) for r in existing}
    done = {k: r for k, r in latest_records(existing).items() if r.get("status") == "ok"}
    added: list[dict] = []
    conflicts: list[str] = []
    for source in sources:
        for record in read_runs(os.path.join(source, RUNS_FILE)):
            ident = (record["key"], record.get("started_at"))
            if ident in seen:
                continue
            previous = done.get(record["key"])
            if record.get("status") == "ok" and previous is not None:
                if previous.get("fingerprint") != record.get("fingerprint"):
                    conflicts.append(f"{source}: {record['key']}")
                    continue
            append_record(path, record)
            seen.add(ident)
            added.append(record)
            if record.get("status") == "ok":
                done.setdefault(record["key"], record)
        plan = os.path.join(source, PLAN_FILE)
        if os.path.isfile(plan) and not os.path.isfile(os.path.join(out, PLAN_FILE)):
            with open(plan, encoding="utf-8") as f:
                atomic_write_json(os.path.join(out, PLAN_FILE), json.load(f))
    return added, conflicts


# --------------------------------------------------------------------------------------------
# Environment and measurements
# --------------------------------------------------------------------------------------------


def _relative_paths(value: Any) -> Any:
    """Paths under the working directory written relative to it (records are committed)."""
    cwd = os.getcwd()
    if isinstance(value, str) and os.path.isabs(value) and value.startswith(cwd + os.sep):
        return os.path.relpath(value, cwd)
    if isinstance(value, dict):
        return {k: _relative_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v) for v in value]
    return value


def portable_data_path(path: str, out: str) -> str:
    """``data_path`` as committed records keep it: ``recbole/<folder>`` for data inside the
    installed RecBole package (ml-100k), else the path relative to the results folder ``out``."""
    package = os.path.dirname(os.path.abspath(recbole.__file__))
    absolute = os.path.abspath(path)
    if absolute.startswith(package + os.sep):
        return "recbole/" + os.path.relpath(absolute, package)
    return os.path.relpath(absolute, os.path.abspath(out))


def resolved_config(config, out: str | None = None) -> dict:
    """The full resolved RecBole config of a run as plain JSON values, with no absolute path of
    this machine's data (``data_path`` relative to the results folder ``out``)."""
    resolved = _relative_paths(to_plain(dict(config.final_config_dict), json_safe=True))
    resolved.pop("time_budget_minutes", None)  # how one call was bounded, not the run's setting
    if out is not None and resolved.get("data_path"):
        resolved["data_path"] = portable_data_path(config["data_path"], out)
    return resolved


# --------------------------------------------------------------------------------------------
# The plan loop
# --------------------------------------------------------------------------------------------


def _write_plan(path: str, plan: Plan, cells: list) -> None:
    """``plan.json``: the plan's cells, so the report can list runs that are still missing."""
    atomic_write_json(path, {**plan.describe(), "cells": [list(c) for c in cells]}, indent=1)


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def interrupted_checkpoint(run_dir: str) -> str | None:
    """The newest ``*-last.pth`` resume checkpoint in ``run_dir`` (``None`` when there is none)."""
    if not os.path.isdir(run_dir):
        return None
    found = [
        os.path.join(run_dir, name) for name in os.listdir(run_dir) if name.endswith("-last.pth")
    ]
    return max(found, key=os.path.getmtime) if found else None


def run_one(
    plan: Plan,
    model: str,
    dataset: str,
    seed: int,
    keep_checkpoints: bool = True,
    checkpoint_dir: str | None = None,
    command: str | None = None,
    extra_valid_metrics: dict[str, int] | None = None,
    time_budget_minutes: float | None = None,
) -> dict:
    """Train and evaluate one cell through :func:`recbole_moe.run`; returns its record.

    The selected checkpoint is tested in both ranking protocols: ``test_result`` as the run is
    configured (``eval_filter_seen``) and ``test_result_seen_removed`` with each user's seen
    items removed (``None`` where removal does not apply). With ``keep_checkpoints`` (the
    default) the best checkpoints stay (under ``checkpoint_dir``), so a further protocol
    never needs a retrain; the resume point is removed either way.

    With ``time_budget_minutes`` the run stops at the first epoch boundary after that many
    minutes, its resume checkpoint written: the record then has ``status: paused`` and
    ``next_epoch``, and the next call continues it (``checkpoint_dir`` needed).

    ``extra_valid_metrics`` (metric -> epoch budget) are selected on in the same run (the
    record's ``selections``, see :func:`shared_record`); they do not change the run's
    fingerprint, since training does not depend on them.

    Never raises for a failing run: the record then has ``status: failed`` and the error.
    """

    config_dict, resumed_from = _run_settings(
        plan, model, dataset, seed, checkpoint_dir, extra_valid_metrics
    )
    record = _new_record(plan, model, dataset, seed, config_dict, command, resumed_from)
    if time_budget_minutes is not None:
        config_dict["time_budget_minutes"] = max(float(time_budget_minutes), 0.0)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    memory = PeakRSS()
    try:
        with memory:
            result = run(
                model,
                dataset,
                config_dict=config_dict,
                config_file_list=plan.config_files or None,
                saved=True,
                both_protocols=True,
            )
    except TimeBudgetReached as exc:
        record.update(
            status="paused",
            next_epoch=exc.epoch,
            resume_file=_relative_paths(exc.resume_file),
            duration_s=time.perf_counter() - start,
            finished_at=_timestamp(),
            hardware=hardware(),
        )
        return record
    except BaseException as exc:  # noqa: BLE001 - a failing run must not stop the plan
        if isinstance(exc, KeyboardInterrupt):
            raise
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc()[-4000:],
            duration_s=time.perf_counter() - start,
            finished_at=_timestamp(),
            hardware=hardware(),
        )
        return record
    duration_s = time.perf_counter() - start
    elapsed_before = result.get("elapsed_before_s", 0.0)
    _remove_finished_checkpoints(result, keep_checkpoints, checkpoint_dir)
    record.update(
        status="ok",
        **_result_fields(result, keep_checkpoints, checkpoint_dir),
        peak_rss_mib=memory.peak / 2**20,
        rss_added_mib=(memory.peak - memory.start) / 2**20,
        cuda_max_allocated_mib=(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        duration_s=duration_s,
        # a resumed run's earlier processes' training and validation time added (None when
        # its checkpoint did not record them)
        wall_total_s=None if elapsed_before is None else duration_s + elapsed_before,
        finished_at=_timestamp(),
        hardware=hardware(str(result["config"]["device"])),
    )
    return record


def _run_settings(
    plan: Plan,
    model: str,
    dataset: str,
    seed: int,
    checkpoint_dir: str | None,
    extra_valid_metrics: dict[str, int] | None,
) -> tuple[dict, str | None]:
    """The run's config overrides, and the resume checkpoint an interrupted run left in its
    folder (``None``: a fresh run)."""
    config_dict = plan.config_dict(model, dataset, seed)
    if extra_valid_metrics:
        config_dict["extra_valid_metrics"] = dict(extra_valid_metrics)
    resumed_from = None
    if checkpoint_dir is not None:
        # One folder per run: an interrupted run leaves its "-last" checkpoint there and the
        # next invocation continues from that epoch.
        run_dir = os.path.join(checkpoint_dir, f"{model}-{dataset}-seed{seed}")
        config_dict.setdefault("checkpoint_dir", run_dir)
        resumed_from = interrupted_checkpoint(config_dict["checkpoint_dir"])
        if resumed_from and not config_dict.get("resume"):
            config_dict["resume"] = resumed_from
    return config_dict, resumed_from


def _new_record(
    plan: Plan,
    model: str,
    dataset: str,
    seed: int,
    config_dict: dict,
    command: str | None,
    resumed_from: str | None,
) -> dict[str, Any]:
    """What a record holds before the run starts: the cell, its plan and settings, the
    command, the code and package versions."""
    return {
        "record_version": RECORD_VERSION,
        "key": run_key(model, dataset, seed),
        "model": model,
        "dataset": dataset,
        "seed": int(seed),
        "fingerprint": plan.fingerprint(model, dataset),
        # The plan asked for sequence training, which this model cannot do: it runs with prefix.
        "prefix_fallback": plan.falls_back_to_prefix(model, dataset),
        "plan": plan.describe(),
        "overrides": to_plain(config_dict, json_safe=True),
        "command": command or " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "started_at": _timestamp(),
        "resumed_from": _relative_paths(resumed_from) if resumed_from else None,
        "versions": package_versions(),
        "commit": code_version(),
    }


def _remove_finished_checkpoints(
    result: dict, keep_checkpoints: bool, checkpoint_dir: str | None
) -> None:
    """A finished run's resume point goes; its best models too unless they are kept (and its
    folder, once empty)."""
    model_file = result.get("model_file")
    if not model_file:
        return
    selections = result.get("selections") or {}
    last = model_file[: -len(".pth")] + "-last.pth"
    best = [model_file] + [s["model_file"] for s in selections.values() if s["model_file"]]
    for path in [last] + ([] if keep_checkpoints else best):
        if os.path.isfile(path):
            os.remove(path)
    run_dir = os.path.dirname(model_file)
    if checkpoint_dir is not None and os.path.isdir(run_dir) and not os.listdir(run_dir):
        os.rmdir(run_dir)


def _result_fields(result: dict, keep_checkpoints: bool, checkpoint_dir: str | None) -> dict:
    """The record's fields from :func:`recbole_moe.run`'s result: resolved config, validation
    and test results in both protocols, epochs, selections, timings, statistics and files."""
    selections = result.get("selections") or {}
    return dict(
        config=resolved_config(
            result["config"], os.path.dirname(checkpoint_dir) if checkpoint_dir else os.getcwd()
        ),
        best_valid_score=result["best_valid_score"],
        best_valid_result=result["best_valid_result"],
        test_result=result["test_result"],
        test_result_seen_removed=result.get("test_result_seen_removed"),
        epochs_run=result.get("epochs_run"),
        epochs_trained=result.get("epochs_trained"),
        best_epoch=result.get("best_epoch"),
        epochs_total=result.get("epochs_total"),
        selections={
            metric: {
                **{k: v for k, v in selection.items() if k != "model_file"},
                "model_file": _relative_paths(selection["model_file"])
                if keep_checkpoints
                else None,
            }
            for metric, selection in selections.items()
        }
        or None,
        train_time_per_epoch=result.get("train_time_per_epoch"),
        valid_time_per_epoch=result.get("valid_time_per_epoch"),
        eval_time=result.get("test_time"),
        n_params=result.get("n_params"),
        # valid_metric's own epochs when the run went on for extra_valid_metrics (its
        # epochs_run then counts from epoch 0); otherwise every epoch, a resumed run's too
        epoch_stats=_epochs_below(
            result.get("epoch_stats"), result.get("epochs_run") if selections else None
        ),
        # every trained epoch's, for the shared plans' records; not written (execute drops it)
        _all_epoch_stats=result.get("epoch_stats") if selections else None,
        log_file=_relative_paths(result.get("log_file")),
        model_file=_relative_paths(result.get("model_file")) if keep_checkpoints else None,
    )


def _epochs_below(stats: list | None, epochs: int | None) -> list | None:
    """The per-epoch statistics of the first ``epochs`` epochs (``None`` when there are none)."""
    kept = [s for s in stats or [] if epochs is None or s["epoch"] < epochs]
    return kept or None


# --------------------------------------------------------------------------------------------
# Runs shared between plans (extra_valid_metrics)
# --------------------------------------------------------------------------------------------


@dataclass
class SharedPlan:
    """Another plan whose runs differ from this plan's only in ``valid_metric`` and in a smaller
    or equal ``epochs``: this plan's runs also select on its metric and record its runs in
    ``out`` (see :func:`shared_selection`)."""

    plan: Plan
    out: str


def shared_selection(plan: Plan, other: Plan, model: str, dataset: str) -> dict[str, int] | None:
    """``{valid_metric: epochs}`` of ``other``'s run of (model, dataset) when it trains exactly
    as ``plan``'s does: same config files and settings except ``valid_metric`` and a budget
    ``epochs`` no larger than ``plan``'s. ``None`` otherwise."""
    if (model, dataset) not in {(m, d) for m, d, _ in other.runs()}:
        return None
    if plan.config_files != other.config_files:
        return None
    mine, theirs = plan.config_dict(model, dataset, 0), other.config_dict(model, dataset, 0)
    differing = {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
    metric, epochs = theirs.get("valid_metric"), theirs.get("epochs")
    if differing != {"valid_metric"} and differing != {"valid_metric", "epochs"}:
        return None
    if not isinstance(epochs, int) or not isinstance(mine.get("epochs"), int):
        return None
    return {metric: epochs} if epochs <= mine["epochs"] else None


def shared_record(record: dict, other: Plan, metric: str, source: str) -> dict:
    """``other``'s record of a run made by ``record``'s plan selecting also on ``metric``: the
    selection's validation and test results, its epochs, and ``shared_run`` naming the run
    (``source``: that plan's results folder, relative to ``other``'s)."""
    model, dataset, seed = record["model"], record["dataset"], record["seed"]
    selection = record["selections"][metric]
    shared = {
        k: copy.deepcopy(v)
        for k, v in record.items()
        if k not in ("selections", "_all_epoch_stats")
    }
    overrides = other.config_dict(model, dataset, seed)
    shared.update(
        fingerprint=other.fingerprint(model, dataset),
        plan=other.describe(),
        overrides=to_plain(overrides, json_safe=True),
        best_valid_score=selection["best_valid_score"],
        best_valid_result=selection["best_valid_result"],
        test_result=selection["test_result"],
        test_result_seen_removed=selection.get("test_result_seen_removed"),
        epochs_run=selection["epochs_run"],
        best_epoch=selection.get("best_epoch"),
        epochs_total=selection["epochs_run"],
        epoch_stats=_epochs_below(record.get("_all_epoch_stats"), selection["epochs_run"]),
        model_file=selection.get("model_file"),
        shared_run={
            "results": source,
            "key": record["key"],
            "valid_metric": record["config"].get("valid_metric"),
            "epochs_trained": record.get("epochs_trained"),
        },
    )
    shared["config"] = dict(
        shared["config"],
        valid_metric=metric,
        epochs=overrides.get("epochs", shared["config"].get("epochs")),
        extra_valid_metrics=None,
    )
    return shared


def _done_records(path: str, log: Callable[[str], None]) -> dict[str, dict]:
    return {
        key: rec
        for key, rec in latest_records(read_runs(path, warn=log)).items()
        if rec.get("status") == "ok"
    }


def _unfinished_cells(plan: Plan, out: str, done: dict) -> list[tuple[str, str, int]]:
    """The plan's cells without a finished record in ``done``, in order.

    Raises:
        ValueError: a finished record of a cell was made with other settings.
    """
    todo, conflicts = [], []
    for model, dataset, seed in plan.runs():
        previous = done.get(run_key(model, dataset, seed))
        if previous is None:
            todo.append((model, dataset, seed))
        elif previous.get("fingerprint") != plan.fingerprint(model, dataset):
            conflicts.append(run_key(model, dataset, seed))
    if conflicts:
        raise ValueError(
            f"{out} already holds finished runs with different settings for "
            f"{', '.join(conflicts[:5])}{' ...' if len(conflicts) > 5 else ''}; "
            "write to another --out folder (or delete those lines) to rerun them."
        )
    return todo


def _shared_targets(
    plan: Plan,
    share_with: list[SharedPlan],
    model: str,
    dataset: str,
    seed: int,
    log: Callable[[str], None],
) -> tuple[dict[str, int], list[tuple[SharedPlan, str, str]]]:
    """The extra selection metrics of one run for the shared plans whose same cell is
    unfinished, and for each such plan (plan, metric, its ``runs.jsonl``)."""
    extra: dict[str, int] = {}
    targets = []
    for shared in share_with:
        selection = shared_selection(plan, shared.plan, model, dataset)
        shared_path = os.path.join(shared.out, RUNS_FILE)
        if selection and run_key(model, dataset, seed) not in _done_records(shared_path, log):
            extra.update(selection)
            targets.append((shared, next(iter(selection)), shared_path))
    return extra, targets


def _write_shared(record: dict, targets: list[tuple[SharedPlan, str, str]], out: str) -> int:
    """Append a finished run's record to each shared plan it selected for; returns how many."""
    for shared, metric, shared_path in targets:
        source = os.path.relpath(os.path.abspath(out), os.path.abspath(shared.out))
        append_record(shared_path, shared_record(record, shared.plan, metric, source))
    return len(targets)


def _run_summary(record: dict) -> str:
    """One line's worth about a finished or failed run."""
    if record["status"] != "ok":
        return f"FAILED: {record['error']}"
    test = record["test_result"]
    metric = next(iter(test), None)
    per_epoch = record["train_time_per_epoch"]  # None from RecBole's own trainers
    return (
        f"ok in {record['duration_s']:.1f}s ({record['epochs_run']} epochs"
        + (f", {per_epoch:.1f} s/epoch" if per_epoch is not None else "")
        + ")"
        + (f", test {metric} {test[metric]:.4f}" if metric else "")
    )


def execute(
    plan: Plan,
    out: str,
    keep_checkpoints: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
    share_with: list[SharedPlan] | None = None,
    max_minutes: float | None = None,
) -> dict[str, int]:
    """Run every unfinished cell of ``plan``, appending one line per run to ``<out>/runs.jsonl``.

    With ``max_minutes`` the call stops once that many minutes have passed: a run under way
    stops at its next epoch boundary with its resume checkpoint written (no record: it is not
    finished), runs not started wait; calling again with the same arguments continues
    exactly where it stopped.

    With ``share_with``, a run whose cell is also unfinished in a shared plan, and trains
    exactly as that plan's would, selects on that plan's ``valid_metric`` too
    (``extra_valid_metrics``) and appends that plan's record to its ``runs.jsonl``.

    Returns:
        counts: ``total``, ``skipped`` (already ok), ``ok``, ``failed`` and ``paused`` (stopped
        by ``max_minutes``, to be continued) in this call, and with ``share_with``, ``shared``
        (records written to the shared plans).

    Raises:
        ValueError: ``out`` already holds finished runs of the same cells made with different
            settings (use another output folder).
    """
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, RUNS_FILE)
    cells = plan.runs()
    todo = _unfinished_cells(plan, out, _done_records(path, log))
    _write_plan(os.path.join(out, PLAN_FILE), plan, cells)
    for shared in share_with or []:
        os.makedirs(shared.out, exist_ok=True)
        if not os.path.isfile(os.path.join(shared.out, PLAN_FILE)):
            _write_plan(os.path.join(shared.out, PLAN_FILE), shared.plan, shared.plan.runs())
    counts = {"total": len(cells), "skipped": len(cells) - len(todo), "ok": 0}
    counts.update(failed=0, paused=0, **({"shared": 0} if share_with else {}))
    log(
        f"[benchmark] {plan.name}: {len(cells)} runs, {counts['skipped']} already done, "
        f"{len(todo)} to run -> {path}"
    )
    checkpoint_dir = os.path.join(out, "saved")
    started = time.perf_counter()
    for index, (model, dataset, seed) in enumerate(todo, start=1):
        budget = None
        if max_minutes is not None:
            budget = max_minutes - (time.perf_counter() - started) / 60
            if budget <= 0 and index > 1:  # the call's first run always starts (one epoch)
                log(
                    f"[benchmark] --max-minutes {max_minutes:g} spent: {len(todo) - index + 1} "
                    "run(s) not started; run the same command again to continue"
                )
                break
        note = (
            " (train_objective prefix: the model cannot train with sequence)"
            if plan.falls_back_to_prefix(model, dataset)
            else ""
        )
        extra, targets = _shared_targets(plan, share_with or [], model, dataset, seed, log)
        also = f"; also selecting on {', '.join(extra)} for {len(targets)} plan(s)" if extra else ""
        log(f"[benchmark] run {index}/{len(todo)}: {model} on {dataset}, seed {seed}{note}{also}")
        record = run_one(
            plan, model, dataset, seed, keep_checkpoints, checkpoint_dir, command, extra, budget
        )
        if record["status"] == "paused":
            counts["paused"] += 1
            log(
                f"[benchmark] run {index}/{len(todo)} paused before epoch {record['next_epoch']} "
                f"(--max-minutes {max_minutes:g} spent, {record['duration_s'] / 60:.1f} min in "
                f"this run; resume point {record['resume_file']}); run the same command again "
                "to continue"
            )
            break
        if record["status"] == "ok" and targets:
            counts["shared"] += _write_shared(record, targets, out)
        record.pop("_all_epoch_stats", None)
        append_record(path, record)
        counts[record["status"]] += 1
        elapsed = time.perf_counter() - started
        eta = elapsed / index * (len(todo) - index)
        log(
            f"[benchmark] run {index}/{len(todo)} {_run_summary(record)}; elapsed "
            f"{_format_duration(elapsed)}, ETA {_format_duration(eta)}"
        )
    if os.path.isdir(checkpoint_dir) and not os.listdir(checkpoint_dir):
        os.rmdir(checkpoint_dir)
    return counts

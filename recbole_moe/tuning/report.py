"""What a study leaves in its results folder, each file written atomically (a temporary file
renamed over the old one, so a reader or a crash never sees half a file, and workers may rewrite
the same files concurrently):

* ``trials.md``: the best trial (parameters, validation and test metrics, the command that
  reruns it, the command that continues the study), then one row per trial, then the plots;
* ``trials.csv``: one row per trial, every parameter and every metric;
* ``best.json``: the best trial, machine-readable;
* ``history.png``, ``importance.png``, ``intermediate.png``: optimisation history, parameter
  importances and per-epoch validation curves (``optuna.visualization.matplotlib``, when
  matplotlib is installed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from typing import Any

from recbole_moe.files import atomic_write_text
from recbole_moe.tuning.study import TuneSpec, display_url, slot  # noqa: F401

TABLE_MD = "trials.md"
TABLE_CSV = "trials.csv"
BEST_JSON = "best.json"
PLOTS = {
    "history.png": "optimisation history",
    "importance.png": "parameter importances",
    "intermediate.png": "validation score per epoch",
}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _param_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_params(trial) -> dict:
    """The values the trial's config received (decoded choices), else Optuna's."""
    return dict(trial.user_attrs.get("params") or trial.params)


def note(trial, retries: dict | None = None) -> str:
    """What the table says about a trial; ``retries``: slot -> numbers of its retries."""
    attrs = trial.user_attrs
    parts = []
    retried = [n for n in (retries or {}).get(trial.number, []) if n > trial.number]
    if attrs.get("worker_gone") or (
        trial.state.name == "FAIL" and retried and not attrs.get("interrupted")
    ):
        parts.append("its worker died")
    if slot(trial) != trial.number:
        parts.append(f"retry of #{slot(trial)}")
    if attrs.get("resumed_from"):
        parts.append("resumed from its checkpoint")
    if "duplicate_of" in attrs:
        parts.append(f"same settings as #{attrs['duplicate_of']}, not trained again")
    if attrs.get("pruned_at_epoch") is not None:
        parts.append(f"pruned at epoch {attrs['pruned_at_epoch']}")
    if attrs.get("interrupted"):
        parts.append("interrupted, queued again")
    elif attrs.get("error"):
        parts.append(attrs["error"][:160])
    if retried and trial.state.name == "FAIL":
        parts.append(f"retried as #{retried[0]}")
    return "; ".join(parts)


def retries_of(trials) -> dict:
    """slot -> trial numbers that retry it."""
    found: dict = {}
    for trial in trials:
        if slot(trial) != trial.number:
            found.setdefault(slot(trial), []).append(trial.number)
    return found


def _metric_names(trials, key: str) -> list[str]:
    names: list[str] = []
    for trial in trials:
        for name in trial.user_attrs.get(key) or {}:
            if name not in names:
                names.append(name)
    return names


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def summary(spec: TuneSpec, study) -> dict:
    """The study in numbers: trial counts per state and the best trial."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    best = best_trial(study)
    result: dict[str, Any] = {
        "study": spec.study_name,
        "storage": spec.storage_label(),
        "model": spec.model,
        "dataset": spec.dataset,
        "metric": spec.metric,
        "direction": spec.direction,
        "sampler": spec.sampler,
        "pruner": spec.pruner,
        "n_trials": len(trials),
        "target_trials": spec.n_trials,
        "states": states,
        "best": None,
        "tune_command": spec.tune_command(),
        "out": spec.out,
    }
    if best is not None:
        params = trial_params(best)
        result["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": params,
            "valid": best.user_attrs.get("valid"),
            "test": best.user_attrs.get("test"),
            "epochs": best.user_attrs.get("epochs"),
            "command": spec.rerun_command(params),
            "log_file": best.user_attrs.get("log_file"),
            "model_file": best.user_attrs.get("model_file"),
        }
    return result


def rows(spec: TuneSpec, study) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows: one per trial."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    valid_names = _metric_names(trials, "valid")
    test_names = _metric_names(trials, "test")
    header = (
        ["trial", "state", spec.metric]
        + spec.space.names
        + [f"valid_{m}" for m in valid_names]
        + [f"test_{m}" for m in test_names]
        + ["epochs", "seconds", "worker", "started", "finished", "log_file", "note"]
    )
    table = []
    retries = retries_of(trials)
    for trial in trials:
        params = trial_params(trial)
        attrs = trial.user_attrs
        valid, test = attrs.get("valid") or {}, attrs.get("test") or {}
        worker = (
            f"{attrs.get('machine', '').split('/')[0]}:{attrs['pid']}" if "pid" in attrs else ""
        )
        table.append(
            [trial.number, trial.state.name.lower(), trial.value]
            + [params.get(name) for name in spec.space.names]
            + [valid.get(m) for m in valid_names]
            + [test.get(m) for m in test_names]
            + [
                attrs.get("epochs"),
                attrs.get("seconds"),
                worker,
                trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else "",
                trial.datetime_complete.isoformat(timespec="seconds")
                if trial.datetime_complete
                else "",
                attrs.get("log_file") or "",
                note(trial, retries),
            ]
        )
    return header, table


def _csv_text(header: list[str], table: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in table:
        writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(spec: TuneSpec, study, info: dict, plots: list[str]) -> str:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    states = info["states"]
    counts = ", ".join(
        f"{states.get(s, 0)} {s}"
        for s in ("complete", "pruned", "fail", "running", "waiting")
        if states.get(s)
    )
    target = f" of {spec.n_trials}" if spec.n_trials is not None else ""
    lines = [
        f"# Tuning {spec.model} on {spec.dataset}",
        "",
        f"Study `{spec.study_name}` in `{spec.storage_label()}`: {spec.direction} "
        f"validation {spec.metric}; sampler {spec.sampler}, pruner {spec.pruner}. "
        f"{len(trials)}{target} trials ({counts or 'none yet'}).",
        "",
    ]
    best = info["best"]
    if best is not None:
        lines += [
            f"## Best trial: #{best['trial']}, {spec.metric} {_fmt(best['value'])}",
            "",
            "| parameter | value |",
            "| --- | --- |",
        ]
        lines += [
            f"| {name} | {_md_cell(_param_text(value))} |" for name, value in best["params"].items()
        ]
        lines.append("")
        for label, key in (("validation", "valid"), ("test", "test")):
            metrics = best.get(key) or {}
            if metrics:
                lines.append(
                    f"- {label}: " + ", ".join(f"{m} {_fmt(v)}" for m, v in metrics.items())
                )
        lines += ["", "Rerun it:", "", "```bash", best["command"], "```", ""]
    lines += [
        "Continue the study, or add a worker (on any machine that reaches the storage):",
        "",
        "```bash",
        spec.tune_command(),
        "```",
        "",
        "## All trials",
        "",
    ]
    test_metric = spec.metric.lower()
    header = (
        ["trial", "state", f"valid {spec.metric}"]
        + spec.space.names
        + [f"test {spec.metric}", "epochs", "seconds", "note"]
    )
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    best_number = best["trial"] if best else None
    retries = retries_of(trials)
    for trial in trials:
        params = trial_params(trial)
        test = trial.user_attrs.get("test") or {}
        test_value = next((v for k, v in test.items() if k.lower() == test_metric), None)
        seconds = trial.user_attrs.get("seconds")
        number = f"**{trial.number}**" if trial.number == best_number else str(trial.number)
        cells = (
            [number, trial.state.name.lower(), _fmt(trial.value)]
            + [_param_text(params[n]) if n in params else "" for n in spec.space.names]
            + [
                _fmt(test_value),
                _fmt(trial.user_attrs.get("epochs")),
                f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "",
                note(trial, retries),
            ]
        )
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines.append("")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{PLOTS[os.path.basename(p)]}]({os.path.basename(p)})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def write_tables(spec: TuneSpec, study, plots: list[str] | None = None) -> list[str]:
    """``trials.md``, ``trials.csv`` and ``best.json``; returns their paths."""
    os.makedirs(spec.out, exist_ok=True)
    info = summary(spec, study)
    if plots is None:  # keep the plots a previous full report made
        plots = [
            os.path.join(spec.out, name)
            for name in PLOTS
            if os.path.isfile(os.path.join(spec.out, name))
        ]
    header, table = rows(spec, study)
    paths = [os.path.join(spec.out, name) for name in (TABLE_MD, TABLE_CSV, BEST_JSON)]
    atomic_write_text(paths[0], markdown(spec, study, info, plots))
    atomic_write_text(paths[1], _csv_text(header, table))
    atomic_write_text(paths[2], json.dumps(info, indent=1, sort_keys=False, default=str) + "\n")
    return paths


def write_plots(spec: TuneSpec, study, log=print) -> list[str]:
    """The PNG plots that can be drawn (none without matplotlib, or without a complete
    trial); returns their paths."""
    try:  # optional dependencies (matplotlib; optuna, the tune extra), imported when plotting
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as visualization
    except ImportError:
        log("[tune] matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    from optuna.trial import TrialState  # optional (the tune extra): imported on first use

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    written = []
    target = f"validation {spec.metric}"
    drawings = [
        ("history.png", lambda s: visualization.plot_optimization_history(s, target_name=target))
    ]
    if len(complete) >= 2 and len(spec.space) >= 1:
        drawings.append(
            (
                "importance.png",
                lambda s: visualization.plot_param_importances(s, target_name=target),
            )
        )
    if any(len(t.intermediate_values) >= 2 for t in study.get_trials(deepcopy=False)):
        drawings.append(("intermediate.png", visualization.plot_intermediate_values))
    for name, draw in drawings:
        path = os.path.join(spec.out, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = draw(study)
            except Exception as exc:  # noqa: BLE001 - e.g. importances of a constant space
                log(f"[tune] no {PLOTS[name]} plot: {type(exc).__name__}: {exc}")
                plt.close("all")
                continue
        if name == "intermediate.png":
            axes.set_xlabel("epoch")
            axes.set_ylabel(target)
        figure = getattr(axes, "figure", None) or plt.gcf()
        figure.set_size_inches(max(figure.get_size_inches()[0], 7), 4.5)
        figure.tight_layout()
        tmp = f"{path}.tmp-{os.getpid()}"
        figure.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
        plt.close(figure)
        written.append(path)
    return written


def write_report(spec: TuneSpec, study, plots: bool = True, log=print) -> list[str]:
    """Tables and, when ``plots``, the plots; returns every path written."""
    os.makedirs(spec.out, exist_ok=True)
    pngs = write_plots(spec, study, log) if plots else []
    return write_tables(spec, study, pngs if plots else None) + pngs

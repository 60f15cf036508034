"""Tables, CSVs, plots and the paper comparison from a benchmark's ``runs.jsonl``.

``write_report(out)`` writes into ``out``:

* ``report.md``: per dataset and ranking protocol (the test result as configured, then with
  each user's seen items removed, ``test_result_seen_removed``; older records without it show
  as missing), mean ± std over seeds of every test metric with the best value per column in
  bold; each of our models against the strongest baseline per metric (relative improvement
  and Welch's t-test over the seeds: seeds of two models are independent runs, not pairs)
  and a win / tie / lose summary; an efficiency table; the comparison with published numbers
  (``recbole_moe/reference/published.yaml``); failed and missing runs.
* ``<dataset>.csv`` and ``<dataset>_seen_removed.csv`` (one per dataset) and
  ``efficiency.csv``.
* ``<dataset>_metrics.png`` and ``time_vs_quality.png`` when matplotlib is installed.

Standard deviations are sample standard deviations (``ddof=1``); with one seed there is none.
All metrics are treated as higher-is-better (HR, NDCG, MRR, Recall, Precision).

Every title, table and CSV names the training regime (``train_objective``, ``prefix`` when a
record does not set it): the report title and each dataset heading give the regime of most runs,
and a model trained otherwise (NARM with ``prefix`` in a ``sequence`` benchmark) is labelled
``Model (prefix)`` in every table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from scipy.stats import ttest_ind

from recbole_moe.benchmark.insight import insight_files, insight_plots, insight_section
from recbole_moe.benchmark.runner import (
    PLAN_FILE,
    RUNS_FILE,
    latest_records,
    read_runs,
    run_key,
)
from recbole_moe.environment import describe_hardware
from recbole_moe.files import atomic_write_text
from recbole_moe.model import proposed_models

PUBLISHED_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference", "published.yaml"
)

_METRIC_NAMES = {
    "hit": "HR",
    "ndcg": "NDCG",
    "mrr": "MRR",
    "recall": "Recall",
    "precision": "Precision",
    "map": "MAP",
}
_METRIC_ORDER = ["hit", "ndcg", "mrr", "recall", "precision", "map"]
#: p-value below which a difference counts as a win or a loss.
SIGNIFICANCE = 0.05


def metric_label(key: str) -> str:
    """``"hit@10"`` -> ``"HR@10"``."""
    name, _, k = key.partition("@")
    return f"{_METRIC_NAMES.get(name, name)}@{k}" if k else _METRIC_NAMES.get(name, name)


#: The ranking protocols of the test results, as the report names them.
PROTOCOLS = {
    "all": "every item ranked (RecBole's protocol)",
    "seen": "each user's seen items removed",
}


def protocol_label(records: list[dict]) -> str:
    """The ranking protocol the runs were configured with (``eval_filter_seen``; both names
    when they differ)."""
    kinds = {"seen" if (r.get("config") or {}).get("eval_filter_seen") else "all" for r in records}
    return " / ".join(PROTOCOLS[k] for k in PROTOCOLS if k in kinds)


def record_regime(record: dict) -> str:
    """The training regime of a run: its resolved ``train_objective``, else the one in its
    overrides, else RecBole's ``prefix``."""
    return (
        (record.get("config") or {}).get("train_objective")
        or (record.get("overrides") or {}).get("train_objective")
        or "prefix"
    )


def model_regimes(records: list[dict]) -> dict[str, str]:
    """model -> its regime (``a/b`` when its runs differ), in first-seen order."""
    regimes: dict[str, set] = {}
    for record in records:
        regimes.setdefault(record["model"], set()).add(record_regime(record))
    return {model: "/".join(sorted(values)) for model, values in regimes.items()}


def main_regime(records: list[dict]) -> str:
    """The regime of most runs (``prefix`` when there are none; ties: alphabetical)."""
    counts = Counter(record_regime(r) for r in records)
    return max(sorted(counts), key=counts.get) if counts else "prefix"


def _regime_text(main: str, regimes: dict[str, str]) -> str:
    """``main``, then the models of ``regimes`` (model -> regime) trained otherwise."""
    others: dict[str, list[str]] = {}
    for model, regime in regimes.items():
        if regime != main:
            others.setdefault(regime, []).append(model)
    return "; ".join(
        [main] + [f"{', '.join(models)}: {regime}" for regime, models in others.items()]
    )


def regime_label(records: list[dict]) -> str:
    """``"sequence"``, or ``"sequence; NARM: prefix"`` when some models ran otherwise."""
    return _regime_text(main_regime(records), model_regimes(records))


def _metric_sort_key(key: str) -> tuple:
    name, _, k = key.partition("@")
    rank = _METRIC_ORDER.index(name) if name in _METRIC_ORDER else len(_METRIC_ORDER)
    return (int(k) if k.isdigit() else 0, rank, name)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One model on one dataset: per-seed values of each metric and their summary."""

    model: str
    seeds: list[int]
    values: dict[str, list[float]]  # metric -> value per seed (same order as seeds)
    regime: str = "prefix"  # train_objective of its runs ("a/b" when they differ)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values[metric]))

    def std(self, metric: str) -> float:
        """Sample standard deviation over seeds; NaN with a single seed."""
        vals = self.values[metric]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


@dataclass
class Comparison:
    """One of our models against the strongest baseline on one metric."""

    model: str
    metric: str
    baseline: str
    ours: float
    base: float
    improvement: float  # percent
    p_value: float  # Welch's t-test over the seeds; NaN when it cannot be computed
    n_ours: int  # seeds of ours
    n_base: int  # seeds of the baseline
    # True for the second row of a metric whose strongest baseline has fewer than 2 seeds:
    # the strongest baseline that has, so that the metric still has a test.
    tested_fallback: bool = False

    @property
    def outcome(self) -> str:
        """``win`` / ``lose`` (p < 0.05, by the sign of the difference), ``tie``, or
        ``untested`` (no p-value)."""
        if math.isnan(self.p_value):
            return "untested"
        if self.p_value >= SIGNIFICANCE:
            return "tie"
        return "win" if self.ours > self.base else "lose"


@dataclass
class DatasetSummary:
    dataset: str
    metrics: list[str]
    cells: list[Cell]
    ours: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    regime: str = "prefix"  # train_objective of most runs; cells trained otherwise are labelled
    missing: list[str] = field(default_factory=list)  # models whose runs lack these results

    @property
    def regime_label(self) -> str:
        """The main regime, then the models trained otherwise (``"sequence; NARM: prefix"``)."""
        return _regime_text(self.regime, {cell.model: cell.regime for cell in self.cells})

    def label(self, model: str) -> str:
        """``model``, with its regime when it differs from the dataset's (``NARM (prefix)``)."""
        cell = self.cell(model)
        return model if cell is None or cell.regime == self.regime else f"{model} ({cell.regime})"

    def cell(self, model: str) -> Cell | None:
        return next((c for c in self.cells if c.model == model), None)

    def best(self, metric: str) -> str | None:
        """The model with the highest mean on ``metric``."""
        cells = [c for c in self.cells if metric in c.values]
        return max(cells, key=lambda c: c.mean(metric)).model if cells else None


def _choose_metrics(records: list[dict], result: str = "test_result") -> list[str]:
    """The plan's report metrics when every run has them, else every test metric."""
    available = set.intersection(*(set(r[result]) for r in records))
    wanted = [m.lower() for m in records[0].get("plan", {}).get("report_metrics", [])]
    chosen = [m for m in wanted if m in available]
    return chosen or sorted(available, key=_metric_sort_key)


def welch_test(ours: Cell, base: Cell, metric: str) -> float:
    """Welch's t-test (``scipy.stats.ttest_ind``, ``equal_var=False``) of the two cells' seeds.

    Seeds of two models are independent runs, so they are not paired: any pairing of them
    is arbitrary, and its p-value depends on it.

    Returns:
        the two-sided p-value; NaN with fewer than 2 seeds on a side, or no variance on
        either.
    """
    a, b = ours.values[metric], base.values[metric]
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarize(records: list[dict], result: str = "test_result") -> list[DatasetSummary]:
    """Group ``ok`` records by dataset and model (in first-seen order) and compare, on the
    test results in each record's field ``result`` (``test_result``, or
    ``test_result_seen_removed``: records without it are left out, their models listed in
    ``missing``).

    ``records`` are the latest records per key (see :func:`runner.latest_records`).
    """
    done = [r for r in records if r.get("status") == "ok"]
    ok = [r for r in done if r.get(result)]
    summaries = []
    for dataset in dict.fromkeys(r["dataset"] for r in done):
        rows = [r for r in ok if r["dataset"] == dataset]
        lacking = [r["model"] for r in done if r["dataset"] == dataset and not r.get(result)]
        if not rows:
            summaries.append(DatasetSummary(dataset, [], [], [], missing=lacking))
            continue
        metrics = _choose_metrics(rows, result)
        models = list(dict.fromkeys(r["model"] for r in rows))
        ours = rows[0].get("plan", {}).get("ours") or proposed_models(models)
        cells = []
        regimes = model_regimes(rows)
        for model in dict.fromkeys(r["model"] for r in rows):
            runs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["seed"])
            cells.append(
                Cell(
                    model,
                    [r["seed"] for r in runs],
                    {m: [float(r[result][m]) for r in runs] for m in metrics},
                    regimes[model],
                )
            )
        summary = DatasetSummary(
            dataset, metrics, cells, ours, regime=main_regime(rows), missing=lacking
        )
        baselines = [c for c in cells if c.model not in ours]
        for cell in cells:
            if cell.model not in ours or not baselines:
                continue
            for metric in metrics:
                summary.comparisons += compare(cell, baselines, metric)
        summaries.append(summary)
    return summaries


def _comparison(ours: Cell, base: Cell, metric: str, tested_fallback: bool) -> Comparison:
    p_value = welch_test(ours, base, metric)
    improvement = (
        (ours.mean(metric) - base.mean(metric)) / base.mean(metric) * 100
        if base.mean(metric)
        else math.nan
    )
    return Comparison(
        ours.model,
        metric,
        base.model,
        ours.mean(metric),
        base.mean(metric),
        improvement,
        p_value,
        len(ours.seeds),
        len(base.seeds),
        tested_fallback,
    )


def compare(ours: Cell, baselines: list[Cell], metric: str) -> list[Comparison]:
    """``ours`` against the baseline with the highest mean on ``metric``.

    When that baseline has fewer than 2 seeds (one seed of Mamba4Rec beside three of SASRec),
    a second row compares against the strongest baseline that has at least 2, so that every
    metric keeps a test where the runs allow one.
    """
    base = max(baselines, key=lambda c: c.mean(metric))
    rows = [_comparison(ours, base, metric, tested_fallback=False)]
    if len(base.seeds) < 2 and len(ours.seeds) >= 2:
        testable = [c for c in baselines if len(c.seeds) >= 2 and c is not base]
        if testable:
            fallback = max(testable, key=lambda c: c.mean(metric))
            rows.append(_comparison(ours, fallback, metric, tested_fallback=True))
    return rows


def efficiency_rows(records: list[dict]) -> list[dict]:
    """Mean over seeds of params, epochs, s/epoch, eval time and memory per (dataset, model)."""
    ok = [r for r in records if r.get("status") == "ok"]
    rows = []
    pairs = dict.fromkeys((r["dataset"], r["model"]) for r in ok)
    for dataset, model in pairs:
        runs = [r for r in ok if r["dataset"] == dataset and r["model"] == model]

        def mean(field_name: str, runs: list = runs) -> float | None:
            vals = [r.get(field_name) for r in runs if r.get(field_name) is not None]
            return float(np.mean(vals)) if vals else None

        # wall time of the run's every process; older records have only their last one's
        walls = [r.get("wall_total_s", r.get("duration_s")) for r in runs]
        walls = [w for w in walls if w is not None]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "train_objective": model_regimes(runs)[model],
                "n_runs": len(runs),
                "n_params": runs[0].get("n_params"),
                "epochs_run": mean("epochs_run"),
                "epochs_total": mean("epochs_total"),
                "best_epoch": mean("best_epoch"),
                "wall_min": float(np.mean(walls)) / 60 if walls else None,
                "train_s_per_epoch": mean("train_time_per_epoch"),
                "valid_s_per_epoch": mean("valid_time_per_epoch"),
                "eval_s": mean("eval_time"),
                "peak_rss_mib": mean("peak_rss_mib"),
                "cuda_max_allocated_mib": mean("cuda_max_allocated_mib"),
                "device": (runs[0].get("hardware") or {}).get("device"),
            }
        )
    return rows


def load_published(path: str = PUBLISHED_FILE) -> list[dict]:
    """The published reference entries (one per source, model and dataset group)."""
    with open(path, encoding="utf-8") as f:
        entries = (yaml.safe_load(f) or {}).get("entries", [])
    for entry in entries:
        if isinstance(entry["dataset"], str):
            entry["dataset"] = [entry["dataset"]]
    return entries


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _mean_std(cell: Cell, metric: str) -> str:
    std = cell.std(metric)
    return _fmt(cell.mean(metric)) + ("" if math.isnan(std) else f" ± {_fmt(std)}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _p_text(p_value: float, n_ours: int, n_base: int) -> str:
    seeds = f"n={n_ours} vs {n_base}"
    if math.isnan(p_value):
        return f"n/a ({seeds})"
    return f"{p_value:.3g}{' *' if p_value < SIGNIFICANCE else ''} ({seeds})"


def _config_summary(record: dict) -> str:
    overrides = {
        k: v for k, v in record.get("overrides", {}).items() if k not in ("seed", "checkpoint_dir")
    }
    return json.dumps(overrides, sort_keys=True)


def _shared_lines(records: list[dict]) -> list[str]:
    """Which runs were one training run for two plans (``extra_valid_metrics``)."""
    lines = []
    for r in records:
        shared = r.get("shared_run")
        if shared:
            lines.append(
                f"- {r['model']} seed {r['seed']}: the run of `{shared['results']}` "
                f"(selecting on {shared['valid_metric']}, {shared['epochs_trained']} epochs "
                f"trained), selecting also on {r['config'].get('valid_metric')}; its wall time "
                "is that run's."
            )
        elif r.get("selections"):
            lines.append(
                f"- {r['model']} seed {r['seed']}: also selected on "
                f"{', '.join(r['selections'])} for another plan "
                f"({r.get('epochs_trained')} epochs trained, {r.get('epochs_run')} of them this "
                "plan's own run)."
            )
    if lines:
        lines.insert(
            0,
            "- Shared runs: training does not depend on the selection metric, so one run "
            "selected on both plans' metrics, each frozen where its own run would have stopped "
            "(`extra_valid_metrics`); each plan's numbers equal those of its own run.",
        )
    return lines


def _hardware_lines(records: list[dict]) -> list[str]:
    """The machines and library versions the runs used; with more than one, the runs of each."""
    machines: dict[str, list[str]] = {}
    for r in records:
        versions = r.get("versions", {})
        text = (
            f"{describe_hardware(r.get('hardware') or {})}; torch {versions.get('torch')}, "
            f"recbole {versions.get('recbole')}"
        )
        machines.setdefault(text, []).append(f"{r['model']} seed {r['seed']}")
    if len(machines) == 1:
        return [f"- Hardware: {next(iter(machines))}."]
    return ["- Hardware:"] + [f"  - {text}: {', '.join(runs)}." for text, runs in machines.items()]


def dataset_section(
    summary: DatasetSummary, records: list[dict], seen: DatasetSummary | None = None
) -> list[str]:
    """Markdown for one dataset: setup, then per ranking protocol (``summary``: the test
    results as configured, ``seen``: with seen items removed) the metric table, the comparison
    with the strongest baseline and the win / tie / lose summary."""
    rows_ok = [r for r in records if r.get("status") == "ok" and r["dataset"] == summary.dataset]
    first = rows_ok[0]
    plan = first.get("plan", {})
    seeds = sorted({r["seed"] for r in rows_ok})
    lines = [f"## {summary.dataset} (train_objective: {summary.regime_label})", ""]
    if plan.get("scale"):
        lines += [
            f"**Reduced run (`--scale {plan['scale']}`): not comparable with converged or "
            "published numbers.**",
            "",
        ]
    if plan.get("description"):
        lines += [plan["description"], ""]
    commands = sorted({r.get("command", "") for r in rows_ok})
    lines += [f"- Command: `{c}`" for c in commands]
    per_model = {}
    for r in rows_ok:
        per_model.setdefault(_config_summary(r), []).append(r["model"])
    for config, models in per_model.items():
        names = ", ".join(dict.fromkeys(models))
        lines.append(
            f"- Config overrides ({names}): `{config}`"
            if len(per_model) > 1
            else f"- Config overrides: `{config}`"
        )
    if plan.get("config_files"):
        lines.append(f"- Config files: {', '.join(plan['config_files'])}")
    lines.append(f"- Training regime (`train_objective`): {summary.regime_label}")
    fallback = list(dict.fromkeys(r["model"] for r in rows_ok if r.get("prefix_fallback")))
    if fallback:
        lines.append(
            f"- {', '.join(fallback)}: `prefix` because the plan asked for `sequence`, "
            "which these models cannot train with."
        )
    commits = sorted({r.get("commit") or "not recorded" for r in rows_ok})
    lines.append(f"- Code commit: {', '.join(commits)}")
    lines += _shared_lines(rows_ok)
    valid_metric = first.get("config", {}).get("valid_metric", "?")
    configured = protocol_label(rows_ok)
    lines += [
        f"- Seeds: {', '.join(map(str, seeds))}; test metrics of the best-validation checkpoint "
        f"(valid metric {valid_metric}), mean ± sample std over seeds, best mean per column in "
        "bold.",
        f"- Ranking protocols: model selection on validation {valid_metric} with {configured}; "
        f"the selected checkpoint is tested with {configured} and with {PROTOCOLS['seen']} "
        "(`test_result_seen_removed`).",
        *_hardware_lines(rows_ok),
        "- Full resolved config of every run: `runs.jsonl` (field `config`).",
        "",
    ]
    lines += results_lines(summary, f"Test, {configured}")
    if configured == PROTOCOLS["seen"]:
        lines += [f"(Test with {PROTOCOLS['seen']}: the table above.)", ""]
    elif seen is not None:
        lines += results_lines(seen, f"Test, {PROTOCOLS['seen']}")
    return lines


def results_lines(summary: DatasetSummary, heading: str) -> list[str]:
    """One protocol's results: the metric table, the comparison with the strongest baseline
    and the win / tie / lose summary."""
    lines = [f"### {heading}", ""]
    if summary.missing:
        counts = Counter(summary.missing)
        listed = ", ".join(f"{model} ({n} run{'s' * (n > 1)})" for model, n in counts.items())
        lines += [f"Missing (recorded without these results): {listed}.", ""]
    if not summary.cells:
        return lines
    header = ["Model", "seeds"] + [metric_label(m) for m in summary.metrics]
    best = {m: summary.best(m) for m in summary.metrics}
    rows = []
    for cell in summary.cells:
        name = summary.label(cell.model)
        name = f"{name} (ours)" if cell.model in summary.ours else name
        row = [name, str(len(cell.seeds))]
        for metric in summary.metrics:
            text = _mean_std(cell, metric)
            row.append(f"**{text}**" if best[metric] == cell.model else text)
        rows.append(row)
    lines += _table(header, rows) + [""]
    if not summary.comparisons:
        return lines
    lines += [
        "Our models against the strongest baseline of each column (relative improvement of "
        "the means; Welch's t-test over the seeds, since seeds of two models are independent "
        "runs, not pairs; * p < 0.05; n/a: fewer than 2 seeds on a side, or no variance; "
        "where the strongest baseline has fewer than 2 seeds, a second row gives the strongest "
        "one that has, marked (tested)):",
        "",
    ]
    rows = [
        [
            summary.label(c.model),
            metric_label(c.metric),
            summary.label(c.baseline) + (" (tested)" if c.tested_fallback else ""),
            _fmt(c.ours),
            _fmt(c.base),
            f"{c.improvement:+.1f}%" if not math.isnan(c.improvement) else "–",
            _p_text(c.p_value, c.n_ours, c.n_base),
        ]
        for c in summary.comparisons
    ]
    header = ["Ours", "Metric", "Strongest baseline", "Ours mean", "Baseline mean", "Improv."]
    lines += _table(header + ["p (Welch t)"], rows) + [""]
    return lines + outcome_lines(summary)


#: Outcomes of a comparison, in the columns of the win / tie / lose summary.
OUTCOMES = ("win", "tie", "lose", "untested")


def outcome_lines(summary: DatasetSummary) -> list[str]:
    """Win / tie / lose summary: per model and baseline, the metrics where ours is better or
    worse at p < 0.05, those where the difference is not significant, and those without a
    test."""
    groups: dict[tuple[str, str], dict[str, list[str]]] = {}
    for c in summary.comparisons:
        baseline = summary.label(c.baseline)  # a (tested) row counts for its baseline
        text = f"{metric_label(c.metric)} {c.improvement:+.1f}%"
        if not math.isnan(c.p_value):
            text += f" (p {c.p_value:.2g})"
        outcomes = groups.setdefault((summary.label(c.model), baseline), {o: [] for o in OUTCOMES})
        outcomes[c.outcome].append(text)
    rows = [
        [model, baseline] + [", ".join(outcomes[o]) or "–" for o in OUTCOMES]
        for (model, baseline), outcomes in groups.items()
    ]
    return [
        f"Wins, ties and losses (Welch's t-test, p < {SIGNIFICANCE}):",
        "",
        *_table(["Ours", "Baseline", "wins", "ties", "loses", "untested"], rows),
        "",
    ]


def efficiency_section(rows: list[dict]) -> list[str]:
    lines = [
        "## Efficiency",
        "",
        "Means over seeds. Train s/epoch: one training epoch; eval s: the full-sort test "
        "evaluation (all users × all items, best checkpoint reload included); "
        "valid s/epoch: one full-sort validation pass; peak RSS: the process's peak "
        "resident memory during the run (includes Python, torch and the dataset). Epochs: "
        "trained in all, resumed parts included where the record has it (else those of the "
        "last process); best epoch: of the selected model, counted from 0 (records made before "
        "it was stored: –); wall: from start to the test result, with a resumed run's earlier "
        "processes' training and validation time where the record has it (else its last "
        "process only).",
        "",
    ]
    table = [
        [
            r["dataset"],
            r["model"],
            r["train_objective"],
            f"{r['n_params']:,}" if r["n_params"] else "–",
            _fmt(r["epochs_total"] if r["epochs_total"] is not None else r["epochs_run"], 1),
            _fmt(r["best_epoch"], 1),
            _fmt(r["wall_min"], 1),
            _fmt(r["train_s_per_epoch"], 2),
            _fmt(r["valid_s_per_epoch"], 2),
            _fmt(r["eval_s"], 2),
            _fmt(r["peak_rss_mib"], 0),
            _fmt(r["cuda_max_allocated_mib"], 0),
        ]
        for r in rows
    ]
    return (
        lines
        + _table(
            [
                "Dataset",
                "Model",
                "train_objective",
                "Params",
                "Epochs",
                "Best epoch",
                "Wall min",
                "Train s/epoch",
                "Valid s/epoch",
                "Eval s",
                "Peak RSS MiB",
                "CUDA max MiB",
            ],
            table,
        )
        + [""]
    )


def paper_section(
    summaries: list[DatasetSummary], published: list[dict], reduced: bool
) -> list[str]:
    """Our means next to the published numbers for every dataset a reference reports."""
    lines = ["## Comparison with published numbers", ""]
    if reduced:
        lines += [
            "**These runs are reduced (few epochs, small models): the differences below "
            "show how far a smoke run is from converged numbers, not a reproduction "
            "result.**",
            "",
        ]
    lines += [
        "Published values from `recbole_moe/reference/published.yaml` (copied from the "
        "sources it names). Check the protocol column: sampled-negative or BCE-trained "
        "numbers are not directly comparable with our full-ranking CE runs.",
        "",
    ]
    rows = []
    for summary in summaries:
        for entry in published:
            if summary.dataset not in entry["dataset"]:
                continue
            cell = summary.cell(entry["model"])
            for metric, value in entry["metrics"].items():
                ours = cell.mean(metric) if cell is not None and metric in cell.values else None
                diff = ours - value if ours is not None else None
                rel = f"{diff / value * 100:+.1f}%" if diff is not None and value else "–"
                rows.append(
                    [
                        summary.dataset,
                        entry["model"],
                        cell.regime if cell is not None else "–",
                        metric_label(metric),
                        _mean_std(cell, metric) if ours is not None else "not run",
                        _fmt(value),
                        f"{diff:+.4f}" if diff is not None else "–",
                        rel,
                        entry["source"],
                        entry.get("protocol", ""),
                    ]
                )
    if not rows:
        return lines + ["No published numbers for these datasets.", ""]
    return (
        lines
        + _table(
            [
                "Dataset",
                "Model",
                "Ours: train_objective",
                "Metric",
                "Ours",
                "Published",
                "Diff",
                "Rel.",
                "Source",
                "Protocol",
            ],
            rows,
        )
        + [""]
    )


def status_section(latest: dict[str, dict], plan_cells: list | None) -> list[str]:
    failed = [r for r in latest.values() if r.get("status") != "ok"]
    missing = []
    if plan_cells:
        missing = [run_key(*cell) for cell in plan_cells if run_key(*cell) not in latest]
    if not failed and not missing:
        return []
    lines = ["## Failed and missing runs", ""]
    for r in failed:
        error = str(r.get("error", "")).splitlines()[0][:300] if r.get("error") else ""
        lines.append(
            f"- failed: {r['model']} on {r['dataset']}, seed {r['seed']} "
            f"(train_objective {record_regime(r)}): {error}"
        )
    lines += [f"- not run yet: {key.replace('|', ' / ')}" for key in missing]
    return lines + [""]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_csv(path: str, header: list[str], rows: list[list[Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def dataset_csv(path: str, summary: DatasetSummary) -> None:
    """One row per model: seeds, mean and std of every metric, best marked."""
    header = ["model", "ours", "train_objective", "n_seeds", "seeds"]
    for metric in summary.metrics:
        header += [f"{metric}_mean", f"{metric}_std", f"{metric}_best"]
    rows = []
    for cell in summary.cells:
        row: list[Any] = [
            cell.model,
            cell.model in summary.ours,
            cell.regime,
            len(cell.seeds),
            " ".join(map(str, cell.seeds)),
        ]
        for metric in summary.metrics:
            std = cell.std(metric)
            row += [
                repr(cell.mean(metric)),
                "" if math.isnan(std) else repr(std),
                summary.best(metric) == cell.model,
            ]
        rows.append(row)
    _write_csv(path, header, rows)


def make_plots(out: str, summaries: list[DatasetSummary], efficiency: list[dict]) -> list[str]:
    """PNG plots (matplotlib); returns the files written, or [] with a message without it."""
    try:  # optional dependency (the plots extra), imported only when plotting
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "[benchmark] matplotlib is not installed: skipping the PNG plots "
            "(pip install matplotlib, or pip install recbole-moe[plots])."
        )
        return []
    written = []
    for summary in summaries:
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(summary.metrics) + 2), 4))
        n = len(summary.cells)
        width = 0.8 / max(n, 1)
        x = np.arange(len(summary.metrics))
        for i, cell in enumerate(summary.cells):
            means = [cell.mean(m) for m in summary.metrics]
            stds = [0.0 if math.isnan(cell.std(m)) else cell.std(m) for m in summary.metrics]
            ax.bar(
                x + (i - (n - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=summary.label(cell.model),
                hatch="//" if cell.model in summary.ours else None,
            )
        ax.set_xticks(x, [metric_label(m) for m in summary.metrics])
        ax.set_ylabel("test metric (mean ± std over seeds)")
        ax.set_title(f"{summary.dataset} (train_objective: {summary.regime_label})")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = os.path.join(out, f"{summary.dataset}_metrics.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if summaries and efficiency:
        fig, axes = plt.subplots(1, len(summaries), figsize=(5 * len(summaries), 4), squeeze=False)
        for ax, summary in zip(axes[0], summaries, strict=False):
            metric = summary.metrics[min(1, len(summary.metrics) - 1)]
            for cell in summary.cells:
                eff = next(
                    (
                        r
                        for r in efficiency
                        if r["dataset"] == summary.dataset and r["model"] == cell.model
                    ),
                    None,
                )
                if not eff or eff["train_s_per_epoch"] is None:
                    continue
                ax.scatter(
                    eff["train_s_per_epoch"],
                    cell.mean(metric),
                    marker="*" if cell.model in summary.ours else "o",
                    s=80,
                )
                ax.annotate(
                    summary.label(cell.model),
                    (eff["train_s_per_epoch"], cell.mean(metric)),
                    fontsize=8,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
            ax.set_xlabel("train seconds per epoch")
            ax.set_ylabel(f"test {metric_label(metric)}")
            ax.set_title(f"{summary.dataset} (train_objective: {summary.regime})")
        fig.tight_layout()
        path = os.path.join(out, "time_vs_quality.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_report(out: str, plots: bool = True, published_file: str = PUBLISHED_FILE) -> list[str]:
    """Write ``report.md``, the CSVs and the plots for ``out/runs.jsonl``; returns the paths.

    Raises:
        FileNotFoundError: ``out`` has no ``runs.jsonl``.
    """
    runs_path = os.path.join(out, RUNS_FILE)
    if not os.path.isfile(runs_path):
        raise FileNotFoundError(f"No {RUNS_FILE} in {out}: run the benchmark first.")
    latest = latest_records(read_runs(runs_path, warn=print))
    records = list(latest.values())
    plan_cells = None
    plan_path = os.path.join(out, PLAN_FILE)
    if os.path.isfile(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            plan_cells = [tuple(c) for c in json.load(f).get("cells", [])]
    summaries = summarize(records)
    seen_removed = {s.dataset: s for s in summarize(records, "test_result_seen_removed")}
    efficiency = efficiency_rows(records)
    written = []

    name = next((r.get("plan", {}).get("name") for r in records), None) or os.path.basename(
        os.path.normpath(out)
    )
    reduced = any(r.get("plan", {}).get("scale") for r in records)
    lines = [
        f"# Benchmark report: {name} (train_objective: {regime_label(records)})",
        "",
        f"Generated by `python -m recbole_moe.benchmark report {out}` from `{RUNS_FILE}` "
        f"({sum(r.get('status') == 'ok' for r in records)} finished runs).",
        "",
    ]
    for summary in summaries:
        seen = seen_removed.get(summary.dataset)
        lines += dataset_section(summary, records, seen)
        if plots:
            lines += [f"![{summary.dataset}]({summary.dataset}_metrics.png)", ""]
        path = os.path.join(out, f"{summary.dataset}.csv")
        dataset_csv(path, summary)
        written.append(path)
        if seen is not None and seen.cells:
            path = os.path.join(out, f"{summary.dataset}_seen_removed.csv")
            dataset_csv(path, seen)
            written.append(path)
    if efficiency:
        lines += efficiency_section(efficiency)
        if plots and summaries:
            lines += ["![time vs quality](time_vs_quality.png)", ""]
        path = os.path.join(out, "efficiency.csv")
        keys = list(efficiency[0])
        _write_csv(path, keys, [[row[k] for k in keys] for row in efficiency])
        written.append(path)
    ok_records = [r for r in records if r.get("status") == "ok"]
    insight = insight_section(ok_records)
    if insight:
        lines += insight + [""]
        if plots:
            lines += [f"![{name}]({name})" for name in insight_files(ok_records)] + [""]
    lines += paper_section(summaries, load_published(published_file), reduced)
    lines += status_section(latest, plan_cells)
    if plots:
        pngs = make_plots(out, summaries, efficiency) + insight_plots(out, ok_records)
        if not pngs:
            lines = [line for line in lines if not line.startswith("![")]
        written += pngs
    path = os.path.join(out, "report.md")
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return [path] + written

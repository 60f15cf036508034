"""Model insight from benchmark runs: do the experts specialise or collapse?

Every run record holds the model's per-epoch statistics (``epoch_stats``, see
:class:`recbole_moe.trainer.RecBoleMoeTrainer`). What the report shows of them is declared by
each model class (``insight``, :class:`recbole_moe.model.declaration.Insight`): HyMoERec its
fusion weight α and expert load per layer, FAME its gate and router per head.

This module turns them into a Markdown section (last trained epoch, per run) and PNG plots
over training (one figure per dataset and model).
"""

from __future__ import annotations

import os

import numpy as np

from recbole_moe.errors import UnknownModelError
from recbole_moe.model import declared
from recbole_moe.model.declaration import Insight


def _insight(model: str) -> Insight | None:
    """What ``model`` declares it reports (None: nothing, or a model no longer available)."""
    try:
        return declared(model).insight
    except UnknownModelError:
        return None


def insight_runs(records: list[dict]) -> dict[str, tuple[Insight, list[dict]]]:
    """Per model that declares an insight, in first-seen order: the insight and its runs with
    statistics, sorted by dataset and seed."""
    found = {}
    for model in dict.fromkeys(r.get("model") for r in records if r.get("epoch_stats")):
        insight = _insight(model)
        if insight is None:
            continue
        runs = [r for r in records if r.get("model") == model and r.get("epoch_stats")]
        found[model] = (insight, sorted(runs, key=lambda r: (r["dataset"], r["seed"])))
    return found


def insight_files(records: list[dict]) -> list[str]:
    """Names of the PNG files :func:`insight_plots` writes for ``records``."""
    return [
        f"{dataset}_{model}_insight.png"
        for model, (insight, runs) in insight_runs(records).items()
        if insight.panels
        for dataset in sorted({r["dataset"] for r in runs})
    ]


def insight_section(records: list[dict]) -> list[str]:
    """Markdown: per run of a model that declares an insight, the statistics of its last
    trained epoch."""
    found = insight_runs(records)
    if not found:
        return []
    lines = [
        "## Model insight",
        "",
        "Statistics of the last trained epoch of each run (plots over training: "
        "`<dataset>_<model>_insight.png`).",
    ]
    for insight, runs in found.values():
        headers = ["dataset", "seed", "epochs", *(header for header, _ in insight.columns)]
        lines += [
            "",
            insight.description,
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
        ]
        for r in runs:
            last = r["epoch_stats"][-1]
            cells = [r["dataset"], str(r["seed"]), str(len(r["epoch_stats"]))]
            cells += [cell(last) for _, cell in insight.columns]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _series(stats: list[dict], get) -> tuple[list[int], np.ndarray]:
    """Epochs and ``[epochs, k]`` values of ``get(epoch_stats_entry) -> list``."""
    return [s["epoch"] for s in stats], np.asarray([get(s) for s in stats], dtype=float)


def insight_plots(out: str, records: list[dict]) -> list[str]:
    """PNG plots over training per (dataset, model): ``<dataset>_<model>_insight.png``.

    Returns the files written ([] without matplotlib, an optional dependency)."""
    try:  # optional dependency (the plots extra), imported only when plotting
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for model, (insight, runs) in insight_runs(records).items():
        if not insight.panels:
            continue
        for dataset in sorted({r["dataset"] for r in runs}):
            subset = [r for r in runs if r["dataset"] == dataset]
            panels = insight.panels
            fig, axes = plt.subplots(
                1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False
            )
            for ax, panel in zip(axes[0], panels, strict=False):
                for run in subset:
                    epochs, values = _series(run["epoch_stats"], panel.values)
                    if values.ndim != 2 or not values.size:
                        continue
                    for k in range(values.shape[1]):
                        ax.plot(
                            epochs,
                            values[:, k],
                            linewidth=1,
                            label=f"{insight.series} {k}, seed {run['seed']}",
                        )
                ax.set_xlabel("epoch")
                ax.set_title(f"{dataset} {model}: {panel.title}")
                ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = os.path.join(out, f"{dataset}_{model}_insight.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


__all__ = ["insight_files", "insight_plots", "insight_runs", "insight_section"]

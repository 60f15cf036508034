"""Model insight from benchmark runs: do the experts specialise or collapse?

Every run record of HyMoERec and FAME holds the model's per-epoch statistics
(``epoch_stats``, see :class:`recbole_moe.trainer.RecBoleMoeTrainer`):

* HyMoERec: ``alpha`` (the fusion weight σ(a)·w(t) per layer), ``warmup`` (w(t)) and, per
  layer, ``token_fraction`` (share of routed tokens per expert) and ``load_entropy`` (entropy of
  that share / log E: 1 balanced, 0 collapsed onto one expert);
* FAME: ``gate`` (mean gate weight per head, i.e. per facet) and ``router`` (mean router weight
  per head and query expert).

This module turns them into a Markdown section (last trained epoch, per run) and PNG plots
over training (one figure per dataset and model).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from recbole_moe.layers.moe import normalized_entropy

#: Models whose records carry per-epoch statistics, and what the report shows of them.
INSIGHT_MODELS = ("HyMoERec", "FAME")


def _entropy(weights: list[float]) -> float:
    """Normalised entropy of a distribution (1: uniform, 0: one-hot), as the models log it."""
    return max(0.0, float(normalized_entropy(torch.tensor(weights, dtype=torch.float64))))


def _runs(records: list[dict], model: str) -> list[dict]:
    return sorted(
        (r for r in records if r.get("model") == model and r.get("epoch_stats")),
        key=lambda r: (r["dataset"], r["seed"]),
    )


def _fmt_list(values: list[float], digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def insight_files(records: list[dict]) -> list[str]:
    """Names of the PNG files :func:`insight_plots` writes for ``records``."""
    return [
        f"{dataset}_{model}_insight.png"
        for model in INSIGHT_MODELS
        for dataset in sorted({r["dataset"] for r in _runs(records, model)})
    ]


def insight_section(records: list[dict]) -> list[str]:
    """Markdown: per HyMoERec / FAME run, the statistics of its last trained epoch."""
    lines: list[str] = []
    hymoe, fame = _runs(records, "HyMoERec"), _runs(records, "FAME")
    if not hymoe and not fame:
        return lines
    lines += [
        "## Model insight",
        "",
        "Statistics of the last trained epoch of each run (plots over training: "
        "`<dataset>_<model>_insight.png`).",
    ]
    if hymoe:
        lines += [
            "",
            "HyMoERec: α = σ(a)·w(t) per layer (the weight of the routed experts "
            "beside the dense branch), and per layer the share of routed tokens per "
            "expert with its normalised entropy (1: balanced, 0: collapsed onto one "
            "expert).",
            "",
            "| dataset | seed | epochs | α per layer | expert load per layer | "
            "load entropy per layer |",
            "|---|---|---|---|---|---|",
        ]
        for r in hymoe:
            last = r["epoch_stats"][-1]
            loads = "; ".join(_fmt_list(layer["token_fraction"], 2) for layer in last["layers"])
            entropy = _fmt_list([layer["load_entropy"] for layer in last["layers"]])
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {len(r['epoch_stats'])} | "
                f"{_fmt_list(last['alpha'])} | {loads or '–'} | {entropy} |"
            )
    if fame:
        lines += [
            "",
            "FAME: mean gate weight per head (facet) and the normalised entropy of "
            "each head's mean router distribution over its query experts (1: the "
            "experts are mixed evenly, 0: one expert per head).",
            "",
            "| dataset | seed | epochs | gate per head | gate entropy | router entropy per head |",
            "|---|---|---|---|---|---|",
        ]
        for r in fame:
            last = r["epoch_stats"][-1]
            router = _fmt_list([_entropy(head) for head in last["router"]])
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {len(r['epoch_stats'])} | "
                f"{_fmt_list(last['gate'])} | {_entropy(last['gate']):.3f} | "
                f"{router} |"
            )
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
    for model in INSIGHT_MODELS:
        runs = _runs(records, model)
        for dataset in sorted({r["dataset"] for r in runs}):
            subset = [r for r in runs if r["dataset"] == dataset]
            if model == "HyMoERec":
                panels = [
                    ("α per layer", lambda s: s["alpha"]),
                    (
                        "expert-load entropy per layer",
                        lambda s: [layer["load_entropy"] for layer in s["layers"]],
                    ),
                ]
                series_name = "layer"
            else:
                panels = [
                    ("gate weight per head", lambda s: s["gate"]),
                    ("router entropy per head", lambda s: [_entropy(head) for head in s["router"]]),
                ]
                series_name = "head"
            fig, axes = plt.subplots(
                1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False
            )
            for ax, (title, get) in zip(axes[0], panels, strict=False):
                for run in subset:
                    epochs, values = _series(run["epoch_stats"], get)
                    if values.ndim != 2 or not values.size:
                        continue
                    for k in range(values.shape[1]):
                        ax.plot(
                            epochs,
                            values[:, k],
                            linewidth=1,
                            label=f"{series_name} {k}, seed {run['seed']}",
                        )
                ax.set_xlabel("epoch")
                ax.set_title(f"{dataset} {model}: {title}")
                ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = os.path.join(out, f"{dataset}_{model}_insight.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


__all__ = ["INSIGHT_MODELS", "insight_files", "insight_plots", "insight_section"]

"""Model selection on several validation metrics in one training run (``extra_valid_metrics``).

Training never depends on the selection metric: the same seed gives the same weights after every
epoch whichever metric picks the best one. Two runs that differ only in ``valid_metric`` (and in
``epochs``) therefore train identically, and one run can stand for both. Each extra metric is
tracked exactly as RecBole's ``early_stopping`` tracks ``valid_metric`` (same tie rule, patience
``stopping_step``, its own epoch budget), is frozen when it would have stopped its own run, and
keeps its own best checkpoint; the run trains until every metric has stopped. The test result
of each metric's best checkpoint is the one its own run would report.

Settings::

    extra_valid_metrics: [NDCG@20]          # epoch budget: the run's `epochs`
    extra_valid_metrics: {NDCG@10: 200}     # selection as in a run with epochs=200
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from recbole.evaluator.register import smaller_metrics
from recbole.utils import calculate_valid_score, early_stopping


def parse_extra_valid_metrics(value: Any, epochs: int) -> dict[str, int]:
    """``extra_valid_metrics`` as ``{metric: epoch budget}`` (``None`` / empty: ``{}``).

    Raises:
        ValueError: not a list of metric names or a mapping of names to epoch budgets, or a
            budget outside ``1..epochs``.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        value = {metric: epochs for metric in value}
    if not isinstance(value, dict):
        raise ValueError(
            f"must be a list of metric names (e.g. [NDCG@20]) or a mapping of metric names to "
            f"epoch budgets (e.g. {{NDCG@10: 200}}), not {value!r}"
        )
    parsed = {}
    for metric, budget in value.items():
        if not isinstance(metric, str):
            raise ValueError(f"metric names must be strings, not {metric!r}")
        budget = epochs if budget is None else budget
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= epochs:
            raise ValueError(
                f"the epoch budget of {metric} must be an integer between 1 and epochs={epochs}, "
                f"not {budget!r}"
            )
        parsed[metric] = budget
    return parsed


def metric_bigger(metric: str) -> bool:
    """Whether a larger value of ``metric`` (``"NDCG@10"``, ``"RMSE"``) is better."""
    return metric.split("@")[0].lower() not in smaller_metrics


@dataclass
class Selection:
    """The early-stopping state of one validation metric, as RecBole keeps it for
    ``valid_metric`` (``best_valid_score``, ``cur_step``), plus its best epoch and checkpoint."""

    metric: str
    epochs: int
    patience: int
    bigger: bool
    model_file: str | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    best_result: dict | None = None
    cur_step: int = 0
    #: The epoch after whose validation the metric stopped (``None``: still selecting).
    stopped_at: int | None = None

    @property
    def active(self) -> bool:
        return self.stopped_at is None

    def update(self, epoch_idx: int, valid_result: dict) -> bool:
        """Account for the validation after epoch ``epoch_idx``; True when it is the new best.

        Does nothing once the metric has stopped (its own run would have ended).
        """
        if not self.active:
            return False
        if epoch_idx >= self.epochs:  # its own run ended after epoch epochs - 1, unvalidated
            self.stopped_at = self.epochs - 1
            return False
        score = calculate_valid_score(valid_result, self.metric.lower())
        worst = float("-inf") if self.bigger else float("inf")
        best = worst if self.best_score is None else self.best_score
        best, self.cur_step, stop, improved = early_stopping(
            score, best, self.cur_step, max_step=self.patience, bigger=self.bigger
        )
        if improved:
            self.best_score, self.best_epoch = float(best), epoch_idx
            self.best_result = dict(valid_result)
        if stop or epoch_idx + 1 >= self.epochs:
            self.stopped_at = epoch_idx
        return improved

    @property
    def epochs_run(self) -> int | None:
        """Training epochs of this metric's own run (``None`` while it is still selecting)."""
        return None if self.stopped_at is None else self.stopped_at + 1

    def state(self) -> dict[str, Any]:
        return asdict(self)


def selection_file(best_model_file: str, metric: str) -> str:
    """``<best model>-<metric>.pth`` beside RecBole's best-model file (``@`` kept readable)."""
    stem, ext = os.path.splitext(best_model_file)
    safe = "".join(c if c.isalnum() or c in "@_-" else "_" for c in metric.lower())
    return f"{stem}-{safe}{ext or '.pth'}"


def build_selections(config, best_model_file: str) -> tuple[Selection | None, list[Selection]]:
    """The primary (``valid_metric``) and extra selections of a run; ``(None, [])`` when the run
    selects on ``valid_metric`` only."""
    extra = parse_extra_valid_metrics(config["extra_valid_metrics"], config["epochs"])
    if not extra:
        return None, []
    patience = config["stopping_step"]
    primary = Selection(
        config["valid_metric"], config["epochs"], patience, bool(config["valid_metric_bigger"])
    )
    extras = [
        Selection(
            metric, budget, patience, metric_bigger(metric), selection_file(best_model_file, metric)
        )
        for metric, budget in extra.items()
    ]
    return primary, extras

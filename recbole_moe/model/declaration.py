"""What a model declares on its class: what it can do and what it accepts.

A model class may set these class attributes (RecBole's own classes set none; defaults below):

* ``accepts``: ``{setting: OneOf(...) | Number(...) | Switch()}``, each model setting's allowed
  values or range, checked with the rest of the configuration before any data is loaded;
* ``setting_rules(config)``: a static method giving ``(setting, problem)`` for each rule
  between its settings that ``config`` breaks (checked once every declared value is allowed);
* ``sequence_trainable``: it can train under ``train_objective: sequence`` (it implements
  ``calculate_sequence_loss``, see :class:`~recbole_moe.model.base.DotProductSequentialRecommender`
  and :mod:`recbole_moe.model.sequence`);
* ``padding_invariant``: its loss and scores at the read position do not depend on the
  padding after it (causal, or masked over right padding), so the lean data path may trim a
  batch to its longest history;
* ``proposed``: a model under study, compared in benchmark reports against the strongest
  baseline (every other model is a baseline);
* ``smoke_settings``: its overrides under the benchmark's reduced ``cpu-smoke`` scale;
* ``insight``: the per-epoch statistics (``epoch_statistics``) a benchmark report shows, as
  table columns and plot panels (:class:`Insight`).

Objective, validation, benchmark plans and report read these through
:func:`recbole_moe.model.declared`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from recbole_moe.layers.moe import normalized_entropy


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class OneOf:
    """A setting whose value is one of ``values``."""

    values: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (None: allowed)."""
        if value in self.values:
            return None
        return f"allowed values are {', '.join(map(str, self.values))}"


@dataclass(frozen=True)
class Number:
    """A number in ``[low, high]`` (either bound may be open-ended: None); ``integer``: an
    int; ``optional``: ``~`` (None) is allowed too."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    optional: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            bounds = f" in [{self.low}, {self.high}]"
        elif self.low is not None:
            bounds = f" >= {self.low}"
        elif self.high is not None:
            bounds = f" <= {self.high}"
        else:
            bounds = ""
        return f"must be {kind}{bounds}" + (" or ~" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        ok = (isinstance(value, int) and not isinstance(value, bool)) if self.integer else None
        ok = _is_number(value) if ok is None else ok
        if ok and self.low is not None and value < self.low:
            ok = False
        if ok and self.high is not None and value > self.high:
            ok = False
        return None if ok else self.describe()


@dataclass(frozen=True)
class Switch:
    """An on/off setting: True or False (1 or 0)."""

    def problem(self, value: Any) -> str | None:
        return None if value in (True, False) else "must be True or False"


Allowed = OneOf | Number | Switch


@dataclass(frozen=True)
class Panel:
    """One plot over training epochs: ``values(stats)`` gives one line per layer / head from one
    epoch's ``epoch_statistics`` entry."""

    title: str
    values: Callable[[dict], Sequence[float]]


@dataclass(frozen=True)
class Insight:
    """What a benchmark report shows of a model's per-epoch statistics.

    Attributes:
        description: a paragraph above the model's table.
        columns: ``(header, cell(stats))`` per column after dataset, seed and epochs; ``stats``
            is the last trained epoch's ``epoch_statistics`` entry.
        panels: the plots over training, one figure per dataset.
        series: what one line of a panel is ("layer", "head").
    """

    description: str
    columns: tuple[tuple[str, Callable[[dict], str]], ...]
    panels: tuple[Panel, ...] = ()
    series: str = "layer"


def entropy(weights: Sequence[float]) -> float:
    """Normalised entropy of a distribution (1: uniform, 0: one-hot)."""
    return max(0.0, float(normalized_entropy(torch.tensor(weights, dtype=torch.float64))))


def fmt_list(values: Sequence[float], digits: int = 3) -> str:
    """``[0.123, 0.456]``."""
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def no_rules(config: Any) -> list[tuple[str, str]]:
    """The ``setting_rules`` of a model that declares none."""
    return []


@dataclass(frozen=True)
class Declaration:
    """A model class's declarations, with the defaults of a class that declares nothing."""

    accepts: dict[str, Allowed] = field(default_factory=dict)
    setting_rules: Callable[[Any], list[tuple[str, str]]] = no_rules
    sequence_trainable: bool = False
    padding_invariant: bool = False
    proposed: bool = False
    smoke_settings: dict[str, Any] = field(default_factory=dict)
    insight: Insight | None = None

    @classmethod
    def of(cls, model_class: type, sequence_trainable: bool = False) -> Declaration:
        """The declarations on ``model_class``; ``sequence_trainable`` for a class that
        cannot declare it itself (RecBole's)."""
        return cls(
            accepts=dict(getattr(model_class, "accepts", {}) or {}),
            setting_rules=getattr(model_class, "setting_rules", no_rules),
            sequence_trainable=bool(getattr(model_class, "sequence_trainable", sequence_trainable)),
            padding_invariant=bool(getattr(model_class, "padding_invariant", False)),
            proposed=bool(getattr(model_class, "proposed", False)),
            smoke_settings=dict(getattr(model_class, "smoke_settings", {}) or {}),
            insight=getattr(model_class, "insight", None),
        )


__all__ = [
    "Allowed",
    "Declaration",
    "Insight",
    "Number",
    "OneOf",
    "Panel",
    "Switch",
    "entropy",
    "fmt_list",
]

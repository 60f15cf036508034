"""Checks of a whole benchmark call before its first run (and in ``--dry-run``): every run's
model, dataset, overrides and config files resolved and checked as the run itself will be, so
a misspelt model does not fail run 2 after run 1 trained for hours."""

from __future__ import annotations

import json
import os

from recbole_moe.benchmark.plans import Plan
from recbole_moe.config import Config
from recbole_moe.data.prepare import ensure_dataset
from recbole_moe.errors import DatasetNotFoundError, RecBoleMoeError
from recbole_moe.validation import validate_config

#: How many bad runs the error lists before "and N more".
LISTED = 3


class PlanError(RecBoleMoeError, ValueError):
    """A run of a benchmark plan that cannot start."""


def _one_line(text: str) -> str:
    return "; ".join(part.strip(" -") for part in str(text).splitlines() if part.strip(" -"))


def run_problem(plan: Plan, model: str, dataset: str, seed: int) -> str | None:
    """Why the run ``(model, dataset, seed)`` of ``plan`` cannot start (None: it can). Reads
    the dataset's folder, writes nothing (a dataset that would be prepared from the raw-data
    root on first use counts as present)."""
    try:
        config = Config(
            model,
            dataset,
            config_file_list=plan.config_files or None,
            config_dict=plan.config_dict(model, dataset, seed),
            override_source="the benchmark command line or plan",
        )
        validate_config(config)
        data_dir = os.path.normpath(config["data_path"])
        if not os.path.isfile(os.path.join(data_dir, f"{dataset}.inter")):
            ensure_dataset(dataset, os.path.dirname(data_dir), prepare_missing=False)
    except DatasetNotFoundError as exc:  # its first line, and the command that prepares it
        lines = [line.strip() for line in str(exc).splitlines()]
        command = next((line for line in lines if line.startswith("recbole-moe prepare")), "")
        first = lines[0].removesuffix(" Looked for:")
        return f"{first} (prepare it with: {command})" if command else first
    except RecBoleMoeError as exc:
        return _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - RecBole's own checks raise plain errors
        return f"{type(exc).__name__}: {_one_line(exc)}"
    return None


def check_plan(plan: Plan) -> None:
    """Refuse ``plan`` when any of its runs cannot start, before the first one does.

    Runs that differ only by seed are checked once.

    Raises:
        PlanError: one line naming each bad run (model, dataset) and why.
    """
    models_of: dict[tuple[str, str], list[str]] = {}  # (dataset, problem) -> its models
    checked: set[str] = set()
    bad = 0
    for model, dataset, seed in plan.runs():
        settings = {k: v for k, v in plan.config_dict(model, dataset, seed).items() if k != "seed"}
        key = json.dumps([model, dataset, settings], sort_keys=True, default=str)
        if key in checked:
            continue
        checked.add(key)
        problem = run_problem(plan, model, dataset, seed)
        if problem:
            bad += 1
            models = models_of.setdefault((dataset, problem), [])
            if model not in models:
                models.append(model)
    if models_of:
        problems = [
            f"{', '.join(models)} on {dataset}: {problem}"
            for (dataset, problem), models in models_of.items()
        ]
        more = len(problems) - LISTED
        raise PlanError(
            f"{bad} run(s) of plan {plan.name} cannot start, nothing was run: "
            + " | ".join(problems[:LISTED])
            + (f" | and {more} more" if more > 0 else "")
        )

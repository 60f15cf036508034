"""Benchmark plans: which (model, dataset, seed) runs, with which settings.

A plan comes from command-line flags, from a YAML plan file, or from a paper preset
(``--protocol hymoerec|fame``), optionally shrunk by ``--scale cpu-smoke``. Settings are layered,
lowest priority first:

1. the model's and the dataset's property files (``recbole_moe/properties``) and RecBole's;
2. ``config_files`` (YAML, in order);
3. the protocol preset, 4. the scale preset, 5. the YAML plan file: each a *layer* with
   ``overrides`` for every run, then per-dataset, per-model and per-(model, dataset) ones, so a
   later layer's global value beats an earlier layer's per-dataset value;
6. the command line's ``--key=value`` overrides;
7. ``seed`` of the run.

Under a paper preset (or a plan file with ``prefix_fallback: true``), a model that cannot train
with ``train_objective: sequence`` (it declares no ``sequence_trainable``, see
:mod:`recbole_moe.model.declaration`; e.g. NARM, Caser) runs its cells with
``train_objective: prefix`` when the plan asks for ``sequence``; its overrides, record and
report rows say so.

A YAML plan file looks like::

    name: my-benchmark
    models: [HyMoERec, SASRec]          # or a mapping: {HyMoERec: {n_experts: 8}, SASRec: {}}
    datasets: [ml-100k]                 # or a mapping: {beauty: {hidden_dropout_prob: 0.5}}
    seeds: [0, 1, 2]
    config_files: [common.yaml]
    overrides: {epochs: 50}
    model_dataset_overrides: {Mamba4Rec: {beauty: {dropout_prob: 0.4}}}
    ours: [HyMoERec]                    # compared against the strongest baseline (default:
                                        # the models that declare ``proposed``)
    report_metrics: [hit@5, ndcg@5, hit@10, ndcg@10]
    protocol: hymoerec                  # optional: start from a preset
    scale: cpu-smoke                    # optional
    prefix_fallback: true               # optional (presets: true); see above
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from recbole_moe.errors import UnknownModelError
from recbole_moe.model import declared, proposed_models, sequence_models

Overrides = dict[str, Any]


@dataclass
class Plan:
    """Everything a benchmark run needs; ``runs()`` lists its (model, dataset, seed) cells."""

    models: list[str]
    datasets: list[str]
    seeds: list[int]
    name: str = "benchmark"
    description: str = ""
    protocol: str | None = None
    scale: str | None = None
    config_files: list[str] = field(default_factory=list)
    #: Preset / plan-file layers, lowest priority first; each may hold the keys
    #: ``overrides``, ``dataset_overrides``, ``model_overrides``, ``model_dataset_overrides``.
    layers: list[dict[str, Any]] = field(default_factory=list)
    #: Command-line overrides, above every layer.
    overrides: Overrides = field(default_factory=dict)
    #: Models compared against the strongest baseline (None: those declaring ``proposed``).
    ours: list[str] | None = None
    report_metrics: list[str] = field(default_factory=list)
    #: Run models that cannot train with ``train_objective: sequence`` with ``prefix`` when the
    #: plan asks for ``sequence`` (instead of recording a failed run).
    prefix_fallback: bool = False

    def runs(self) -> list[tuple[str, str, int]]:
        """The cells in execution order: dataset, then seed, then model (models side by side)."""
        return [(m, d, s) for d in self.datasets for s in self.seeds for m in self.models]

    def config_dict(self, model: str, dataset: str, seed: int) -> Overrides:
        """The config overrides of one run (levels 3-7 of the module docstring)."""
        config = self._layered(model, dataset)
        if self.falls_back_to_prefix(model, dataset):
            config["train_objective"] = "prefix"
            if "train_window" in config:  # sequence-only settings
                config["train_window"] = "last"
            config.pop("train_window_stride", None)
        config["seed"] = int(seed)
        return config

    def falls_back_to_prefix(self, model: str, dataset: str) -> bool:
        """Whether the plan asks ``model`` for ``sequence`` training, which it cannot do, and
        runs it with ``prefix`` instead (``prefix_fallback``)."""
        requested = self._layered(model, dataset).get("train_objective")
        return self.prefix_fallback and requested == "sequence" and model not in sequence_models()

    def _layered(self, model: str, dataset: str) -> Overrides:
        """Every layer's overrides, then the command line's, for one (model, dataset)."""
        config: Overrides = {}
        for layer in self.layers:
            config.update(copy.deepcopy(layer.get("overrides") or {}))
            config.update(copy.deepcopy((layer.get("dataset_overrides") or {}).get(dataset, {})))
            config.update(copy.deepcopy((layer.get("model_overrides") or {}).get(model, {})))
            per_model = (layer.get("model_dataset_overrides") or {}).get(model, {})
            config.update(copy.deepcopy(per_model.get(dataset, {})))
        config.update(copy.deepcopy(self.overrides))
        return config

    def fingerprint(self, model: str, dataset: str) -> str:
        """Hash of everything that defines a run's settings except the seed.

        Two runs with the same key but different fingerprints come from different settings;
        the runner refuses to mix them in one output folder.
        """
        files = []
        for path in self.config_files:
            with open(path, "rb") as f:
                files.append(hashlib.sha256(f.read()).hexdigest())
        settings = self.config_dict(model, dataset, 0)
        settings.pop("seed")
        blob = json.dumps({"files": files, "config": settings}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The plan as stored with every run (what the report needs to label tables)."""
        return {
            "name": self.name,
            "description": self.description,
            "protocol": self.protocol,
            "scale": self.scale,
            "ours": list(self.ours) if self.ours is not None else proposed_models(self.models),
            "report_metrics": list(self.report_metrics),
            "config_files": list(self.config_files),
            "prefix_fallback": self.prefix_fallback,
        }


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

_COMMON_PROTOCOL: Overrides = {
    # Leave-one-out, full ranking (both papers' evaluation protocol); the dataset property files
    # set the split too, repeated here so a preset is self-contained.
    "eval_args": {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    },
    "metrics": ["Hit", "NDCG", "MRR"],
    "learning_rate": 0.001,
    "stopping_step": 10,
    "eval_batch_size": 4096,
    "show_progress": False,
}

#: Mamba4Rec's own published settings (its public RecBole configuration), kept inside every
#: protocol: the protocols' batch size and epoch budget are the other models' settings.
_MAMBA4REC: Overrides = {"train_batch_size": 2048, "epochs": 300}
#: Mamba4Rec's dropout: 0.2 on MovieLens, 0.4 on the Amazon datasets.
_MAMBA4REC_DROPOUT: dict[str, Overrides] = {
    **{d: {"dropout_prob": 0.2} for d in ("ml-1m", "ml-1m-5core", "ml-100k", "ml-20m")},
    **{d: {"dropout_prob": 0.4} for d in ("beauty", "sports", "toys")},
}

#: Paper presets: each paper's hyper-parameters, datasets and evaluation protocol. Where a
#: paper's value was not retrieved, our proposed default is used. Under
#: ``--train_objective=sequence`` the models that cannot train that way (NARM) run with
#: ``prefix`` (``prefix_fallback``).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "hymoerec": {
        "description": "HyMoERec paper protocol: ML-1M (ml-1m-5core, "
        "3,416 items, as Mamba4Rec's official configuration) and Beauty, "
        "leave-one-out full ranking, HR/NDCG@5 headline (also @10, MRR@10), "
        "NARM/GRU4Rec/BERT4Rec/Mamba4Rec (+SASRec) baselines, model selection "
        "on validation NDCG@10, up to 200 epochs with early stopping (10); "
        "Mamba4Rec with its own settings (batch 2048, up to 300 epochs).",
        "models": ["HyMoERec", "SASRec", "NARM", "GRU4Rec", "BERT4Rec", "Mamba4Rec"],
        "datasets": ["ml-1m-5core", "beauty"],
        "seeds": [0, 1, 2],
        "prefix_fallback": True,
        "overrides": {
            **_COMMON_PROTOCOL,
            "topk": [5, 10, 20],
            "valid_metric": "NDCG@10",
            "epochs": 200,
            "train_batch_size": 256,
        },
        "dataset_overrides": {
            # MovieLens settings for ML-1M, also used for the small ml-100k.
            **{
                d: {
                    "hidden_dropout_prob": 0.2,
                    "attn_dropout_prob": 0.2,
                    "MAX_ITEM_LIST_LENGTH": 200,
                }
                for d in ("ml-1m", "ml-1m-5core", "ml-100k")
            },
            "beauty": {
                "hidden_dropout_prob": 0.5,
                "attn_dropout_prob": 0.5,
                "MAX_ITEM_LIST_LENGTH": 50,
            },
        },
        "model_overrides": {"Mamba4Rec": dict(_MAMBA4REC)},
        "model_dataset_overrides": {"Mamba4Rec": copy.deepcopy(_MAMBA4REC_DROPOUT)},
        "report_metrics": ["hit@5", "ndcg@5", "hit@10", "ndcg@10", "mrr@10"],
    },
    "fame": {
        "description": "FAME paper protocol: Beauty, Sports, Toys and "
        "ML-20M, leave-one-out full ranking, HR/NDCG@{5,10,20}, model selection "
        "on validation NDCG@20, up to 300 epochs with early stopping (10); "
        "Mamba4Rec with its own batch size (2048) and dropout. Caser is not in "
        "the tables (add it with --models; it trains with prefix only). "
        "ML-20M raw data is not available here; its runs fail with a "
        "dataset-not-found record until it is prepared.",
        "models": ["FAME", "SASRec", "HyMoERec", "Mamba4Rec", "GRU4Rec", "BERT4Rec"],
        "datasets": ["beauty", "sports", "toys", "ml-20m"],
        "seeds": [0, 1, 2],
        "prefix_fallback": True,
        "overrides": {
            **_COMMON_PROTOCOL,
            "topk": [5, 10, 20],
            "valid_metric": "NDCG@20",
            "epochs": 300,
            "train_batch_size": 256,
        },
        "dataset_overrides": {
            **{
                d: {
                    "hidden_dropout_prob": 0.5,
                    "attn_dropout_prob": 0.5,
                    "MAX_ITEM_LIST_LENGTH": 50,
                }
                for d in ("beauty", "sports", "toys")
            },
            "ml-20m": {
                "hidden_dropout_prob": 0.2,
                "attn_dropout_prob": 0.2,
                "MAX_ITEM_LIST_LENGTH": 200,
                "train_batch_size": 1024,
            },
        },
        "model_overrides": {"Mamba4Rec": dict(_MAMBA4REC)},
        "model_dataset_overrides": {"Mamba4Rec": copy.deepcopy(_MAMBA4REC_DROPOUT)},
        "report_metrics": ["hit@5", "ndcg@5", "hit@10", "ndcg@10", "hit@20", "ndcg@20"],
    },
}

#: Size presets. ``cpu-smoke``: a quick, clearly reduced run (few epochs, small models) that
#: checks the whole pipeline and gives rough numbers on a laptop CPU. Never compare its numbers
#: with a paper's.
SCALES: dict[str, dict[str, Any]] = {
    "cpu-smoke": {
        "description": "REDUCED (cpu-smoke): 2 epochs, hidden/embedding size 32, inner size 64, "
        "MAX_ITEM_LIST_LENGTH 20, 2 seeds; numbers are far below converged "
        "values and only show relative trends.",
        "seeds": [0, 1],
        "overrides": {
            "epochs": 2,
            "hidden_size": 32,
            "embedding_size": 32,
            "inner_size": 64,
            "MAX_ITEM_LIST_LENGTH": 20,
            "train_batch_size": 512,
            "stopping_step": 2,
        },
        "dataset_overrides": {},
        # and each model's own ``smoke_settings`` (its declaration), added by build_plan
        "smoke_settings": True,
    },
}


def _as_mapping(value: Any, what: str) -> dict[str, Overrides]:
    """``[a, b]`` -> ``{a: {}, b: {}}``; a mapping is kept (``None`` values become ``{}``)."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: {}}
    if isinstance(value, (list, tuple)):
        return {str(v): {} for v in value}
    if isinstance(value, dict):
        return {str(k): dict(v or {}) for k, v in value.items()}
    raise ValueError(f"Plan '{what}' must be a list or a mapping, not {type(value).__name__}.")


def _smoke_settings(models: list[str]) -> dict[str, Overrides]:
    """The ``smoke_settings`` each of ``models`` declares (unknown models: none here; the run
    reports them)."""
    settings = {}
    for model in models:
        try:
            own = declared(model).smoke_settings
        except UnknownModelError:
            continue
        if own:
            settings[model] = copy.deepcopy(own)
    return settings


def _layer(source: dict[str, Any]) -> dict[str, Any]:
    """The four override levels of a preset or plan file, copied."""
    keys = ("overrides", "dataset_overrides", "model_overrides", "model_dataset_overrides")
    return {key: copy.deepcopy(source.get(key) or {}) for key in keys}


def _read_plan_file(plan_file: str) -> dict[str, Any]:
    """The YAML mapping of a plan file.

    Raises:
        ValueError: the file cannot be read, is not YAML or holds no mapping.
    """
    try:
        with open(plan_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ValueError(f"Plan file {plan_file} cannot be read: {exc.strerror}.") from exc
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"Plan file {plan_file} is not valid YAML: {first}.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"Plan file {plan_file} must hold a YAML mapping.")
    return data


def _apply_plan_file(plan: Plan, data: dict[str, Any], descriptions: list[str]) -> None:
    """Apply a plan file's lists and overrides (above the presets) to ``plan``."""
    model_map = _as_mapping(data.get("models"), "models")
    dataset_map = _as_mapping(data.get("datasets"), "datasets")
    if model_map:
        plan.models = list(model_map)
    if dataset_map:
        plan.datasets = list(dataset_map)
    plan.layers.append(
        _layer(
            {
                "overrides": data.get("overrides") or {},
                "model_overrides": {k: v for k, v in model_map.items() if v},
                "dataset_overrides": {k: v for k, v in dataset_map.items() if v},
                "model_dataset_overrides": data.get("model_dataset_overrides") or {},
            }
        )
    )
    if data.get("seeds") is not None:
        plan.seeds = [int(s) for s in data["seeds"]]
    plan.config_files = list(data.get("config_files") or [])
    if data.get("ours") is not None:
        plan.ours = list(data["ours"])
    if data.get("report_metrics") is not None:
        plan.report_metrics = [m.lower() for m in data["report_metrics"]]
    if data.get("description"):
        descriptions.append(str(data["description"]))
    if data.get("prefix_fallback") is not None:
        plan.prefix_fallback = bool(data["prefix_fallback"])


def build_plan(
    protocol: str | None = None,
    scale: str | None = None,
    plan_file: str | None = None,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    seeds: list[int] | None = None,
    config_files: list[str] | None = None,
    overrides: Overrides | None = None,
    name: str | None = None,
) -> Plan:
    """Combine a preset, a YAML plan file and flags into one :class:`Plan`.

    Flags win over the plan file, which wins over the presets. ``models`` / ``datasets`` /
    ``seeds`` replace the preset's lists.

    Raises:
        ValueError: unknown protocol or scale, or a plan without models / datasets.
    """
    data = _read_plan_file(plan_file) if plan_file else {}
    protocol = protocol or data.get("protocol")
    scale = scale or data.get("scale")

    plan = Plan(models=[], datasets=[], seeds=[0], protocol=protocol, scale=scale)
    descriptions = []
    if protocol:
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}.")
        preset = PROTOCOLS[protocol]
        plan.models, plan.datasets = list(preset["models"]), list(preset["datasets"])
        plan.seeds = list(preset["seeds"])
        plan.report_metrics = list(preset.get("report_metrics", []))
        plan.prefix_fallback = bool(preset.get("prefix_fallback", False))
        plan.layers.append(_layer(preset))
        descriptions.append(preset["description"])
    if scale:
        if scale not in SCALES:
            raise ValueError(f"Unknown scale '{scale}'; known: {', '.join(SCALES)}.")
        preset = SCALES[scale]
        plan.seeds = list(preset.get("seeds", plan.seeds))
        scale_layer = _layer(preset)
        plan.layers.append(scale_layer)
        descriptions.append(preset["description"])

    _apply_plan_file(plan, data, descriptions)
    if models:
        plan.models = list(models)
    if datasets:
        plan.datasets = list(datasets)
    if seeds:
        plan.seeds = [int(s) for s in seeds]
    if config_files:
        plan.config_files = list(config_files)
    plan.overrides.update(overrides or {})
    plan.name = (
        name or data.get("name") or "-".join(p for p in (protocol, scale) if p) or "benchmark"
    )
    plan.description = " ".join(descriptions)

    if scale and SCALES[scale].get("smoke_settings"):
        scale_layer["model_overrides"] = _smoke_settings(plan.models)
    if not plan.models or not plan.datasets:
        raise ValueError(
            "The plan needs models and datasets: pass --models and --datasets, "
            "a plan file, or --protocol."
        )
    missing = [f for f in plan.config_files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"Config file(s) not found: {', '.join(missing)}.")
    return plan

"""Checks of the settings RecBole's own ``Config``, dataset and trainer read.

RecBole turns most bad values into a traceback from deep inside its code (a misspelt metric:
``NotImplementedError``; a non-numeric ``seed``: ``TypeError`` in numpy), fails only at the
first evaluation (an unknown ``valid_metric``), or silently does something else (an unknown
``learner`` becomes Adam, an illegal filter interval is ignored). :func:`check_recbole_settings`
runs on the merged settings right before RecBole's ``Config`` applies its defaults, so every such
value is refused before any data is loaded, one line per value: the key, the value, where it
came from and what is allowed (or the closest allowed value).

Allowed values are read from RecBole itself where it has them: metric names from its metric
registry, optimizer names from ``Trainer._build_optimizer``, transform names from
``construct_transform``.
"""

from __future__ import annotations

import codecs
import difflib
import importlib.util
import inspect
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import torch
from recbole.data.transform import construct_transform
from recbole.evaluator.register import metric_types, metrics_dict
from recbole.trainer import Trainer
from recbole.utils import EvaluatorType, ModelType

from recbole_moe.data.lean import MODES
from recbole_moe.errors import ConfigError

#: Settings that are switches (``True``/``False``; 0 and 1 are accepted like Python does).
BOOL_KEYS = (
    "use_gpu",
    "reproducibility",
    "show_progress",
    "save_dataset",
    "save_dataloaders",
    "log_wandb",
    "shuffle",
    "repeatable",
    "enable_scaler",
    "require_pow",
    "filter_inter_by_user_or_item",
    "kg_reverse_r",
)
#: ``enable_amp: auto``: bf16 autocast on a CPU with native bf16, off elsewhere.
AMP_AUTO = "auto"


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), so that bf16
    autocast speeds matrix products up instead of emulating them."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_amp(value, device_type: str) -> bool:
    """``enable_amp`` as RecBole reads it: ``auto`` is True on a CPU with native bf16 (RecBole's
    trainer then autocasts the loss to bf16) and False on CUDA, where RecBole's AMP is float16
    with a grad scaler, not measured here; True/False (or 1/0) stay as given."""
    if value == AMP_AUTO:
        return device_type == "cpu" and cpu_supports_bf16()
    return bool(value)


#: Integer settings and their smallest allowed value.
INT_KEYS = {
    "epochs": 1,
    "train_batch_size": 1,
    "eval_batch_size": 1,
    "eval_step": 1,
    "stopping_step": 1,
    "worker": 0,
    "loss_decimal_place": 0,
    "metric_decimal_place": 0,
}
#: Settings that hold a path (a non-empty string).
PATH_KEYS = ("data_path", "checkpoint_dir")
#: Settings that hold a field name of the atomic files.
FIELD_KEYS = ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "RATING_FIELD")
#: ``state``: RecBole's logging levels (``recbole/utils/logger.py``).
LOG_LEVELS = ("info", "debug", "warning", "error", "critical")
#: ``eval_args`` keys and values (``recbole/data/dataset/dataset.py::Dataset.build``).
EVAL_ARGS_KEYS = ("split", "order", "group_by", "mode")
SPLIT_MODES = {
    "RS": "ratios [train, valid, test]",
    "LS": "leave-one-out",
    "TS": "time ratios [train, valid, test]",
}
LEAVE_ONE_MODES = ("valid_and_test", "valid_only", "test_only")
ORDERS = ("RO", "TO")
GROUP_BY = ("user", "none")
EVAL_MODE = re.compile(r"full|labeled|(uni|pop)[1-9][0-9]*")
NEG_DISTRIBUTIONS = ("uniform", "popularity", "none")
RM_DUP = ("first", "last")
_INTERVAL = re.compile(
    r"\s*[\[(]\s*([-+]?(?:inf|\d+(?:\.\d*)?|\.\d+))\s*,\s*([-+]?(?:inf|\d+(?:\.\d*)?|\.\d+))"
    r"\s*[\])]\s*"
)
#: Fallbacks, should RecBole's source not be readable (e.g. a bytecode-only install).
_LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")
_TRANSFORMS = ("mask_itemseq", "inverse_itemseq", "crop_itemseq", "reorder_itemseq", "user_defined")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_switch(value: Any) -> bool:
    """A valid on/off setting: ``True`` / ``False``, or the integers 1 / 0."""
    return isinstance(value, bool) or (_is_int(value) and value in (0, 1))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _closest(value: Any, allowed: Iterable[str], cutoff: float = 0.5) -> str:
    """``"; did you mean 'x'?"`` for the allowed value closest to ``value`` (or '')."""
    allowed = list(allowed)
    lowered = {a.lower(): a for a in allowed}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=cutoff)
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""


@lru_cache(maxsize=1)
def recbole_metrics() -> dict[str, Any]:
    """RecBole's metric registry: lower-case name -> metric class."""
    return dict(metrics_dict)


def metric_display_names() -> list[str]:
    """Metric names as RecBole spells its classes (``NDCG``, ``ItemCoverage``, ...)."""
    return sorted((cls.__name__ for cls in recbole_metrics().values()), key=str.lower)


def metric_uses_topk(name: str) -> bool:
    """Whether RecBole reports metric ``name`` per cut-off (``ndcg@10``) or once (``auc``)."""
    need = getattr(recbole_metrics()[name.lower()], "metric_need", [])
    return "rec.topk" in need or "rec.items" in need


def computed_metrics(metrics: Any, topk: Any) -> list[str]:
    """The validation metric names a run computes: ``NDCG@10`` per cut-off, ``AUC`` once."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    ks = [topk] if _is_int(topk) else list(topk or [])
    computed = []
    for metric in metrics:
        computed += [f"{metric}@{k}" for k in ks] if metric_uses_topk(metric) else [metric]
    return computed


@lru_cache(maxsize=1)
def recbole_learners() -> tuple[str, ...]:
    """The optimizer names ``recbole.trainer.Trainer._build_optimizer`` knows."""
    try:
        source = inspect.getsource(Trainer._build_optimizer)
    except (OSError, TypeError):
        return _LEARNERS
    return tuple(re.findall(r"learner\.lower\(\)\s*==\s*[\"'](\w+)[\"']", source)) or _LEARNERS


@lru_cache(maxsize=1)
def recbole_transforms() -> tuple[str, ...]:
    """The ``transform`` names ``recbole.data.transform.construct_transform`` knows."""
    try:
        source = inspect.getsource(construct_transform)
    except (OSError, TypeError):
        return _TRANSFORMS
    return tuple(re.findall(r"[\"'](\w+)[\"']\s*:\s*\w+", source)) or _TRANSFORMS


def _interval_problem(text: Any, single: bool) -> str | None:
    """Why ``text`` is not a RecBole interval string such as ``"[5,inf)"`` (None: fine)."""
    if text is None:
        return None
    if not isinstance(text, str):
        return 'must be an interval string such as "[5,inf)" or "(0,100]"'
    parts = [p for p in text.split(";")]
    if single and len(parts) > 1:
        return 'must be one interval such as "[5,inf)" (RecBole refuses several here)'
    for part in parts:
        match = _INTERVAL.fullmatch(part)
        if not match:
            return (
                f"'{part.strip()}' is not an interval: write [a,b], [a,b), (a,b] or (a,b) "
                'with numbers or inf, e.g. "[5,inf)" (RecBole would ignore it)'
            )
        if float(match.group(1)) > float(match.group(2)):
            return f"'{part.strip()}' is empty: its lower end is above its upper end"
    return None


class _Checker:
    """Collects one message per bad setting of ``config`` (pre-default, merged values)."""

    def __init__(self, config) -> None:
        self.config = config
        self.values = config.final_config_dict
        self.problems: list[str] = []
        #: Whether a problem would make RecBole's ``Config`` itself raise.
        self.fatal = False

    # -- helpers -------------------------------------------------------------------------------
    def given(self, key: str) -> bool:
        return self.values.get(key) is not None

    def add(self, key: str, allowed: str, fatal: bool = False) -> None:
        self.fatal = self.fatal or fatal
        self.problems.append(
            f"{key}={self.values.get(key)!r} (from {self.config.source_of(key)}): {allowed}"
        )

    def check(self, key: str, ok: Callable[[Any], bool], allowed: str) -> bool:
        if self.given(key) and not ok(self.values[key]):
            self.add(key, allowed)
            return False
        return True

    # -- groups of settings --------------------------------------------------------------------
    def general(self) -> None:
        for key in BOOL_KEYS:
            self.check(key, is_switch, "must be true or false")
        self.check(
            "enable_amp",
            lambda v: is_switch(v) or v == AMP_AUTO,
            f"must be true, false or {AMP_AUTO!r}",
        )
        # RecBole reads these unconditionally: ~ (None) is refused too.
        for key, low in INT_KEYS.items():
            if key in self.values and not (_is_int(self.values[key]) and self.values[key] >= low):
                self.add(key, f"must be an integer >= {low}")
        seed = self.values.get("seed")
        if "seed" in self.values and not (_is_int(seed) and 0 <= seed < 2**32):
            self.add("seed", "must be an integer between 0 and 4294967295 (numpy's seed range)")
        for key in PATH_KEYS:
            self.check(
                key,
                lambda v: isinstance(v, str) and v.strip() != "",
                "must be a path (a non-empty string)",
            )
        self.check(
            "state",
            lambda v: isinstance(v, str) and v.lower() in LOG_LEVELS,
            f"allowed logging levels are {', '.join(LOG_LEVELS)}"
            + _closest(self.values.get("state"), LOG_LEVELS),
        )
        self.check(
            "gpu_id",
            lambda v: (
                (_is_int(v) and v >= 0)
                or (
                    isinstance(v, str) and re.fullmatch(r"\s*(\d+\s*(,\s*\d+\s*)*)?", v) is not None
                )
                or (isinstance(v, tuple) and all(_is_int(i) and i >= 0 for i in v))
            ),
            "must be a GPU index or comma-separated indices, e.g. 0 or '0,1' ('' for the CPU)",
        )
        self.check(
            "encoding",
            lambda v: isinstance(v, str) and _known_codec(v),
            "is not a text encoding Python knows (e.g. utf-8, latin-1)",
        )
        if self.values.get("log_wandb") is True and importlib.util.find_spec("wandb") is None:
            self.add(
                "log_wandb",
                "Weights & Biases logging needs the wandb package, which is "
                "not installed (pip install wandb, or set log_wandb=false)",
            )
        checkpoint_dir = self.values.get("checkpoint_dir")
        if isinstance(checkpoint_dir, str) and checkpoint_dir.strip():
            problem = _directory_problem(checkpoint_dir)
            if problem:
                self.add("checkpoint_dir", problem)

    def hardware(self) -> None:
        """What names hardware or folders that are not there: never replaced silently."""
        user = self.config.external_config_dict
        data_path = self.values.get("data_path")
        if isinstance(data_path, str) and os.path.isfile(data_path):
            self.add(
                "data_path",
                "is a file; data_path is the folder that holds <dataset>/<dataset>.inter",
            )
        if "nproc" in user:
            self.check("nproc", lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
        if "device" in user:
            problem = _device_problem(self.values["device"])
            if problem:
                self.add("device", problem)
        if "gpu_id" in user and "local_rank" not in self.values:
            problem = _gpu_id_problem(self.values["gpu_id"])
            if problem:
                self.add("gpu_id", problem)

    def training(self) -> None:
        learners = recbole_learners()
        self.check(
            "learner",
            lambda v: isinstance(v, str) and v.lower() in learners,
            f"RecBole's optimizers are {', '.join(learners)}"
            + _closest(self.values.get("learner"), learners)
            + " (RecBole would silently train with Adam instead)",
        )
        transforms = recbole_transforms()
        self.check(
            "transform",
            lambda v: isinstance(v, str) and v in transforms,
            f"RecBole's transforms are {', '.join(transforms)}"
            + _closest(self.values.get("transform"), transforms),
        )
        self.clip_grad_norm()
        self.train_neg_sample_args()

    def clip_grad_norm(self) -> None:
        value = self.values.get("clip_grad_norm")
        if value is None:
            return
        example = " (e.g. {'max_norm': 5, 'norm_type': 2})"
        if not isinstance(value, dict):
            self.add(
                "clip_grad_norm", "must be a mapping of torch's clip_grad_norm_ arguments" + example
            )
            return

        accepted = [
            p
            for p in inspect.signature(torch.nn.utils.clip_grad_norm_).parameters
            if p != "parameters"
        ]
        unknown = [k for k in value if k not in accepted]
        if unknown:
            self.add(
                "clip_grad_norm",
                f"unknown argument '{unknown[0]}'; torch's "
                f"clip_grad_norm_ takes {', '.join(accepted)}" + _closest(unknown[0], accepted),
            )
        elif "max_norm" not in value or not _is_number(value["max_norm"]) or value["max_norm"] <= 0:
            self.add("clip_grad_norm", "needs max_norm, a number > 0" + example)
        elif "norm_type" in value and not (
            _is_number(value["norm_type"]) or str(value["norm_type"]).lower() == "inf"
        ):
            self.add("clip_grad_norm", "norm_type must be a number or 'inf'")

    def train_neg_sample_args(self) -> None:
        value = self.values.get("train_neg_sample_args")
        if value is None or value == "None":
            return
        if not isinstance(value, dict):
            self.add(
                "train_neg_sample_args",
                "must be a mapping such as {'distribution': "
                "'uniform', 'sample_num': 1}, or ~ (None) for no training negatives",
                fatal=True,
            )
            return
        distribution = value.get("distribution", "uniform")
        if distribution is not None and str(distribution).lower() not in NEG_DISTRIBUTIONS:
            self.add(
                "train_neg_sample_args",
                f"distribution {distribution!r} is not one of "
                "uniform, popularity" + _closest(distribution, ("uniform", "popularity")),
                fatal=True,
            )
            return
        sample_num = value.get("sample_num", 1)
        if str(distribution).lower() in ("uniform", "popularity") and not (
            _is_int(sample_num) and sample_num >= 1
        ):
            self.add("train_neg_sample_args", f"sample_num {sample_num!r} must be an integer >= 1")
            return
        if "alpha" in value and not _is_number(value["alpha"]) and value["alpha"] != "none":
            self.add("train_neg_sample_args", f"alpha {value['alpha']!r} must be a number")
            return
        if "candidate_num" in value and not (
            _is_int(value["candidate_num"]) and value["candidate_num"] >= 0
        ):
            self.add(
                "train_neg_sample_args",
                f"candidate_num {value['candidate_num']!r} must be an integer >= 0",
            )
            return

        if (
            self.values.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and self.values.get("loss_type") == "CE"
            and not hasattr(self.config.model_class, "input_type")
            and distribution not in (None, "None", "none")
        ):
            self.add(
                "train_neg_sample_args",
                "a sequential model with loss_type='CE' scores "
                "every item and samples no training negatives; set "
                "train_neg_sample_args to ~ (None), or use loss_type='BPR'",
                fatal=True,
            )

    def evaluation(self) -> None:
        metrics_ok = self.metrics()
        topk_ok = self.topk()
        self.eval_args(metrics_ok)
        if metrics_ok and topk_ok:
            self.valid_metric()

        if (
            self.values.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and self.values.get("repeatable") is False
        ):
            self.add(
                "repeatable",
                "RecBole's sequential models only support repeatable "
                "recommendation; set repeatable=true",
                fatal=True,
            )

    def metric_list(self) -> list:
        metrics = self.values.get("metrics")
        return [metrics] if isinstance(metrics, str) else list(metrics or [])

    def metrics(self) -> bool:
        metrics = self.values.get("metrics")
        registry = recbole_metrics()
        names = metric_display_names()
        if not isinstance(metrics, (str, list, tuple)) or not metrics:
            self.add(
                "metrics",
                f"must be a metric name or a list of them, from {', '.join(names)}",
                fatal=True,
            )
            return False
        for metric in self.metric_list():
            if not isinstance(metric, str) or metric.lower() not in registry:
                self.add(
                    "metrics",
                    f"'{metric}' is not a RecBole metric"
                    + _closest(metric, names)
                    + f" (allowed: {', '.join(names)})",
                    fatal=True,
                )
                return False

        kinds = {metric_types[m.lower()] for m in self.metric_list()}
        if len(kinds) > 1:
            value_metrics = [
                m for m in self.metric_list() if metric_types[m.lower()] == EvaluatorType.VALUE
            ]
            self.add(
                "metrics",
                "ranking metrics and value metrics (here "
                f"{', '.join(value_metrics)}) cannot be computed in the same run",
                fatal=True,
            )
            return False
        return True

    def topk(self) -> bool:
        topk = self.values.get("topk")
        ks = [topk] if not isinstance(topk, (list, tuple)) else list(topk)
        if not ks or not all(_is_int(k) and k >= 1 for k in ks):
            self.add(
                "topk",
                "must be a positive integer or a list of them, e.g. 10 or [5, 10, 20]",
                fatal=True,
            )
            return False
        return True

    def valid_metric(self) -> None:
        valid_metric = self.values.get("valid_metric")
        computed = computed_metrics(self.metric_list(), self.values.get("topk"))
        if not isinstance(valid_metric, str) or valid_metric.lower() not in {
            c.lower() for c in computed
        }:
            self.add(
                "valid_metric",
                "must be one of the metrics this run computes (metrics at "
                f"each topk): {', '.join(computed)}" + _closest(valid_metric, computed, 0.5),
                fatal=not isinstance(valid_metric, str),
            )

    def eval_args(self, metrics_ok: bool) -> None:
        value = self.values.get("eval_args")
        if not isinstance(value, dict):
            self.add(
                "eval_args",
                "must be a mapping with split, order, group_by and mode, e.g. "
                "{'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'group_by': 'user', "
                "'mode': 'full'}",
                fatal=True,
            )
            return

        def bad(message: str, fatal: bool = False) -> None:
            self.add("eval_args", message, fatal)

        unknown = [k for k in value if k not in EVAL_ARGS_KEYS]
        if unknown:
            return bad(
                f"unknown key '{unknown[0]}'; eval_args takes {', '.join(EVAL_ARGS_KEYS)}"
                + _closest(unknown[0], EVAL_ARGS_KEYS)
            )
        split = value.get("split", {"RS": [0.8, 0.1, 0.1]})
        if not isinstance(split, dict) or len(split) != 1:
            return bad(
                "split must be a mapping with one of RS, LS, TS, e.g. "
                "{'LS': 'valid_and_test'} or {'RS': [0.8, 0.1, 0.1]}"
            )
        ((mode, arg),) = split.items()
        if mode not in SPLIT_MODES:
            return bad(
                f"split mode '{mode}' is not one of "
                + ", ".join(f"{k} ({v})" for k, v in SPLIT_MODES.items())
                + _closest(mode, SPLIT_MODES)
            )
        if mode == "LS" and arg not in LEAVE_ONE_MODES:
            return bad(
                f"split LS takes one of {', '.join(LEAVE_ONE_MODES)}, not {arg!r}"
                + _closest(arg, LEAVE_ONE_MODES)
            )
        if mode in ("RS", "TS") and not (
            isinstance(arg, (list, tuple))
            and len(arg) == 3
            and all(_is_number(r) and r >= 0 for r in arg)
            and sum(arg) > 0
        ):
            return bad(
                f"split {mode} takes three ratios >= 0 for train, valid and test, e.g. "
                f"[0.8, 0.1, 0.1], not {arg!r}"
            )
        order = value.get("order", "RO")
        if order not in ORDERS:
            return bad(
                f"order {order!r} is not RO (random) or TO (by time)" + _closest(order, ORDERS)
            )
        group_by = value.get("group_by", "user")
        if group_by is not None and str(group_by).lower() not in GROUP_BY:
            return bad(
                f"group_by {group_by!r} is not 'user' or 'none'" + _closest(group_by, GROUP_BY)
            )
        modes = value.get("mode", "full")
        if isinstance(modes, str):
            modes = {"valid": modes, "test": modes}
        if not isinstance(modes, dict) or any(k not in ("valid", "test") for k in modes):
            return bad(
                "mode must be full, labeled, uniN or popN (e.g. uni100), or a mapping "
                "{'valid': ..., 'test': ...} of them",
                fatal=True,
            )
        for phase, phase_mode in modes.items():
            if not isinstance(phase_mode, str) or not EVAL_MODE.fullmatch(phase_mode):
                return bad(
                    f"mode {phase_mode!r} ({phase}) is not full, labeled, uniN or popN "
                    "with N >= 1 sampled negatives (e.g. uni100)",
                    fatal=True,
                )
        if metrics_ok and "full" in modes.values():
            value_metrics = [
                m for m in self.metric_list() if metric_types[m.lower()] == EvaluatorType.VALUE
            ]
            if value_metrics:
                bad(
                    f"mode 'full' ranks all items, which value metrics ({', '.join(value_metrics)}"
                    ") cannot score; use mode 'labeled' or uniN, or ranking metrics",
                    fatal=True,
                )

    def dataset(self) -> None:
        for key in ("field_separator", "seq_separator"):
            self.check(
                key,
                lambda v: isinstance(v, str) and v != "",
                "must be a non-empty string, e.g. '\\t'",
            )
        for key in FIELD_KEYS:
            self.check(
                key,
                lambda v: isinstance(v, str) and v.strip() != "",
                "must be a field name of the atomic files",
            )
        for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
            if key in self.values and self.values[key] is None:
                self.add(key, "must be a field name of the atomic files")
        for key in ("load_col", "unload_col", "unused_col"):
            self.check(
                key,
                lambda v: (
                    isinstance(v, dict)
                    and all(
                        isinstance(s, str)
                        and (
                            c == "*"
                            or (isinstance(c, (list, tuple)) and all(isinstance(f, str) for f in c))
                        )
                        for s, c in v.items()
                    )
                ),
                "must map atomic-file suffixes to lists of field names, e.g. "
                "{'inter': ['user_id', 'item_id', 'timestamp']}",
            )
        for key in ("user_inter_num_interval", "item_inter_num_interval"):
            problem = _interval_problem(self.values.get(key), single=True)
            if problem:
                self.add(key, problem)
        val_interval = self.values.get("val_interval")
        if val_interval is not None:
            if not isinstance(val_interval, dict):
                self.add(
                    "val_interval", "must map field names to intervals, e.g. {'rating': '[3,inf)'}"
                )
            else:
                for field, interval in val_interval.items():
                    problem = _interval_problem(interval, single=False)
                    if problem:
                        self.add("val_interval", f"{field}: {problem}")
                        break
        self.check(
            "rm_dup_inter",
            lambda v: v in RM_DUP,
            "allowed values are first, last, or ~ (keep duplicates)"
            + _closest(self.values.get("rm_dup_inter"), RM_DUP),
        )
        self.check(
            "seq_len",
            lambda v: isinstance(v, dict) and all(_is_int(n) and n >= 1 for n in v.values()),
            "must map sequence fields to maximum lengths (integers >= 1)",
        )
        self.check(
            "normalize_field",
            lambda v: isinstance(v, (list, tuple)) and all(isinstance(f, str) for f in v),
            "must be a list of field names",
        )
        self.check(
            "benchmark_filename",
            lambda v: (
                isinstance(v, (list, tuple)) and all(isinstance(f, str) for f in v) and len(v) == 3
            ),
            "must list the three suffixes of pre-split files, e.g. ['train', 'valid', 'test']",
        )
        self.check(
            "threshold",
            lambda v: isinstance(v, dict) and all(_is_number(t) for t in v.values()),
            "must map a field to a number, e.g. {'rating': 4}",
        )

    def recbole_moe(self) -> None:
        """Our settings that otherwise fail only once data loading starts."""
        self.check(
            "data_path_mode",
            lambda v: v in MODES,
            f"allowed values are {', '.join(MODES)}"
            + _closest(self.values.get("data_path_mode"), MODES),
        )
        for key in ("lean_memory_threshold_gb", "eval_memory_budget_mb"):
            self.check(
                key,
                lambda v: _is_number(v) and v >= 0 and not math.isnan(v),
                "must be a number >= 0"
                + (" (~ or 0: no bound)" if key == "eval_memory_budget_mb" else ""),
            )
        self.check(
            "resume",
            lambda v: v is False or isinstance(v, (str, os.PathLike)),
            "must be the path of a checkpoint (.pth) to continue from",
        )


def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _gpus() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"this machine has {count} CUDA GPU{'' if count == 1 else 's'}" + (
        "" if count else " (torch.cuda.is_available() is False)"
    )


def _device_problem(value: Any) -> str | None:
    """Why ``device`` cannot be used here (None: it can). RecBole would overwrite it with the
    device ``gpu_id`` gives, so a request for absent hardware would train elsewhere."""
    try:
        device = torch.device(str(value).strip())
    except (RuntimeError, ValueError):
        return "must be cpu, cuda or cuda:N"
    if device.type not in ("cpu", "cuda"):
        return "must be cpu, cuda or cuda:N"
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        return f"{_gpus()}; leave device unset (or cpu) to train on the CPU"
    return None


def _gpu_id_problem(value: Any) -> str | None:
    """Why ``gpu_id`` names GPUs this machine lacks (None: it names none, or only present ones).

    Checked only while ``CUDA_VISIBLE_DEVICES`` is unset: RecBole sets it to ``gpu_id``, after
    which the visible devices are renumbered."""
    if isinstance(value, (tuple, list)):
        value = ",".join(map(str, value))
    ids = [int(part) for part in re.findall(r"\d+", str(value))]
    if not ids or ("CUDA_VISIBLE_DEVICES" in os.environ and torch.cuda.is_available()):
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    absent = [i for i in ids if i >= count]
    if not absent:
        return None
    return (
        f"{_gpus()}, so GPU {', '.join(map(str, absent))} is not there; give gpu_id='' "
        "(or leave it unset) to train on the CPU"
    )


def _directory_problem(path: str) -> str | None:
    """Why checkpoints cannot be written under ``path`` (None: they can)."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "exists and is not a directory"
        if not os.access(path, os.W_OK):
            return "is a directory this user cannot write to"
        return _write_probe_problem(path, "cannot be written to")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK):
        return f"cannot be created: this user cannot write to {parent}"
    return _write_probe_problem(parent, "cannot be created")


def _write_probe_problem(folder: str, what: str) -> str | None:
    """Whether a folder can be made in ``folder`` (made and removed at once): ``os.access``
    says yes to root on a folder where writing fails (``/proc``, a read-only mount)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".recbole-moe-probe-", dir=folder))
    except OSError as exc:
        return f"{what}: writing in {folder} fails ({exc.strerror})"
    return None


def _check(config) -> _Checker:
    checker = _Checker(config)
    checker.general()
    checker.hardware()
    checker.training()
    checker.evaluation()
    checker.dataset()
    checker.recbole_moe()
    return checker


def recbole_setting_problems(config) -> list[str]:
    """Every bad RecBole setting of ``config`` as one line (empty list: all good).

    ``config`` is a :class:`recbole_moe.Config` whose ``final_config_dict`` holds the merged
    settings (before or after RecBole's defaults are applied).
    """
    return _check(config).problems


def check_recbole_settings(config) -> None:
    """Check ``config``'s RecBole settings before RecBole's ``Config`` applies its defaults.

    A value that would make RecBole's ``Config`` itself fail (an unknown metric, a bad
    ``topk`` or ``eval_args`` mode, ...) raises :class:`ConfigError` at once, listing every
    problem. Otherwise the problems are kept in ``config.recbole_problems``, and
    :func:`recbole_moe.validation.validate_config` reports them with recbole-moe's own checks,
    so a config can still be built and inspected.
    """
    checker = _check(config)
    config.recbole_problems = list(checker.problems)
    if checker.fatal:
        listing = "\n  - ".join(checker.problems)
        raise ConfigError(
            f"invalid configuration for {config.model} on {config.dataset}:\n  - {listing}"
        )


__all__ = [
    "AMP_AUTO",
    "check_recbole_settings",
    "cpu_supports_bf16",
    "is_switch",
    "metric_display_names",
    "metric_uses_topk",
    "recbole_learners",
    "recbole_metrics",
    "resolve_amp",
    "recbole_setting_problems",
    "recbole_transforms",
]

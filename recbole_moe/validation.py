"""Checks that reject bad settings before any data is loaded or any training starts.

Every message names the bad value, what is allowed, and where the value came from (the command
line or ``config_dict``, a config file, or a property file).
"""

from __future__ import annotations

import difflib
import glob
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import recbole
import yaml
from recbole.trainer import Trainer
from recbole.utils import ModelType, get_trainer
from recbole.utils.argument_list import (
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_moe.config import (
    DATASET_OVERRIDES_KEY,
    PROPERTIES_DIR,
    Config,
    model_property_file,
    read_yaml,
)
from recbole_moe.data.atomic import _read, check_atomic_file, check_interaction_file, read_header
from recbole_moe.data.lean import batch_order_problem, data_path_mode, eval_batch_order_problem
from recbole_moe.data.prepare import DataPreparationError
from recbole_moe.data.seen import seen_problem
from recbole_moe.errors import ConfigError
from recbole_moe.layers.activation import GELU_IMPLS
from recbole_moe.layers.attention import ATTENTION_IMPLS
from recbole_moe.layers.dropout import DROPOUT_IMPLS
from recbole_moe.model import declared, sequence_models
from recbole_moe.objective import is_sequence, objective_problems
from recbole_moe.process_group import wants_distributed
from recbole_moe.recbole_settings import computed_metrics, is_switch
from recbole_moe.selection import parse_extra_valid_metrics

#: Integer settings of RecBole's models and ours that must be >= 1 when present (RecBole's own
#: training settings, such as ``epochs``, are checked once, by
#: :data:`recbole_moe.recbole_settings.INT_KEYS`; a model's own settings by its declaration,
#: :func:`model_setting_problems`).
POSITIVE_INT_KEYS = (
    "hidden_size",
    "embedding_size",
    "inner_size",
    "n_layers",
    "num_layers",
    "n_heads",
    "length_group_size",
)
#: Integer or float settings that must be >= 0 when present.
NON_NEGATIVE_KEYS = ("weight_decay", "time_budget_minutes")
#: Float settings that must be > 0 when present.
POSITIVE_FLOAT_KEYS = ("learning_rate",)

#: Settings recbole-moe's own tools read that no property file lists.
EXTRA_KEYS = {
    "model",
    "dataset",
    "config_files",
    "local_rank",
    "nproc",
    "world_size",
    "ip",
    "port",
    "offset",
    "dist_backend",
    "dist_timeout",
    "dist_init_method",
    "resume",
    "resume_checkpoint",
    "MODEL_TYPE",
    "MODEL_INPUT_TYPE",
    "device",
    "single_spec",
    "eval_type",
    "valid_metric_bigger",
    "config_file",
    "benchmark_filename",
    "data_path_mode",
    "eval_memory_budget_mb",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(config: Config, key: str, allowed: str) -> str:
    return f"{key}={config[key]!r} (from {config.source_of(key)}): {allowed}"


#: ``loss_type`` values of the models that do not take RecBole's usual 'CE' and 'BPR'
#: (``recbole/properties/model/CDAE.yaml``).
LOSS_TYPES: dict[str, tuple[str, ...]] = {"CDAE": ("BCE", "MSE")}


def _present(config: Config, key: str) -> bool:
    return key in config and config[key] is not None


def config_problems(config: Config) -> list[str]:
    """Every out-of-range setting in ``config`` as a message (empty list: all good)."""
    problems = _range_problems(config) + _pair_problems(config)
    loss_types = LOSS_TYPES.get(config["model"], ("CE", "BPR"))
    if _present(config, "loss_type") and config["loss_type"] not in loss_types:
        allowed = " and ".join(f"'{t}'" for t in loss_types)
        problems.append(_problem(config, "loss_type", f"allowed values are {allowed}"))
    problems += model_setting_problems(config)
    for key, problem in objective_problems(config, sequence_models()):
        problems.append(f"{problem} (from {config.source_of(key)})")
    if _present(config, "train_batch_order") and not is_sequence(config):
        problem = batch_order_problem(config)
        if problem:
            problems.append(f"{problem} (from {config.source_of('train_batch_order')})")
    impls = (
        ("attention_impl", ATTENTION_IMPLS),
        ("dropout_impl", DROPOUT_IMPLS),
        ("gelu_impl", GELU_IMPLS),
    )
    for key, allowed in impls:
        if _present(config, key) and config[key] not in allowed:
            problems.append(_problem(config, key, f"allowed values are {', '.join(allowed)}"))
    return problems + _evaluation_problems(config) + selection_problems(config)


def _range_problems(config: Config) -> list[str]:
    """Counts, rates and probabilities outside their range."""
    problems = []
    for key in POSITIVE_INT_KEYS:
        if _present(config, key) and not (_is_int(config[key]) and config[key] >= 1):
            problems.append(_problem(config, key, "must be an integer >= 1"))
    for key in NON_NEGATIVE_KEYS:
        if _present(config, key) and not (
            isinstance(config[key], (int, float)) and config[key] >= 0
        ):
            problems.append(_problem(config, key, "must be a number >= 0"))
    for key in POSITIVE_FLOAT_KEYS:
        if _present(config, key) and not (
            isinstance(config[key], (int, float))
            and not isinstance(config[key], bool)
            and config[key] > 0
        ):
            problems.append(_problem(config, key, "must be a number > 0"))
    for key in sorted(config.final_config_dict):
        if key.endswith("dropout_prob") or key.endswith("dropout"):
            value = config[key]
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
            ):
                problems.append(_problem(config, key, "must be a probability in [0, 1)"))
    if _present(config, "MAX_ITEM_LIST_LENGTH"):
        value = config["MAX_ITEM_LIST_LENGTH"]
        if not (_is_int(value) and value >= 2):
            problems.append(
                _problem(
                    config,
                    "MAX_ITEM_LIST_LENGTH",
                    "must be an integer >= 2 (a history needs at least one item before the target)",
                )
            )
    return problems


def _pair_problems(config: Config) -> list[str]:
    """Settings that must agree: ``top_k`` within ``n_experts``, ``hidden_size`` divisible
    by ``n_heads``."""
    problems = []
    if (
        _present(config, "top_k")
        and _present(config, "n_experts")
        and _is_int(config["top_k"])
        and _is_int(config["n_experts"])
    ):
        if not 1 <= config["top_k"] <= config["n_experts"]:
            problems.append(
                f"top_k={config['top_k']} (from {config.source_of('top_k')}) must be between 1 "
                f"and n_experts={config['n_experts']} (from {config.source_of('n_experts')})"
            )
    if (
        _present(config, "hidden_size")
        and _present(config, "n_heads")
        and _is_int(config["hidden_size"])
        and _is_int(config["n_heads"])
        and config["n_heads"] >= 1
        and config["hidden_size"] % config["n_heads"]
    ):
        problems.append(
            f"hidden_size={config['hidden_size']} (from {config.source_of('hidden_size')}) is "
            f"not divisible by n_heads={config['n_heads']} (from {config.source_of('n_heads')}); "
            "pick n_heads among the divisors of hidden_size"
        )
    return problems


def _evaluation_problems(config: Config) -> list[str]:
    """Evaluation grouping, order and seen-item removal, and the time budget."""
    problems = []
    if _present(config, "eval_group_rows") and not (
        _is_int(config["eval_group_rows"]) and config["eval_group_rows"] >= 0
    ):
        problems.append(
            _problem(config, "eval_group_rows", "must be an integer >= 0 (~ or 0: whole batches)")
        )
    if _present(config, "time_budget_minutes") and (
        wants_distributed(config.final_config_dict) or config["single_spec"] is False
    ):
        problems.append(
            _problem(
                config,
                "time_budget_minutes",
                "works with one training process only (a data-parallel run stops as a failed "
                "worker); leave it unset or train with one process",
            )
        )
    if _present(config, "eval_batch_order"):
        problem = eval_batch_order_problem(config)
        if problem:
            problems.append(f"{problem} (from {config.source_of('eval_batch_order')})")
    if _present(config, "eval_filter_seen") and not is_switch(config["eval_filter_seen"]):
        problems.append(_problem(config, "eval_filter_seen", "must be True or False"))
    elif _present(config, "eval_filter_seen"):
        problem = filter_seen_problem(config)
        if problem:
            problems.append(_problem(config, "eval_filter_seen", problem))
    return problems


def filter_seen_problem(config: Config) -> str | None:
    """Why ``eval_filter_seen: True`` cannot be used (``None``: it can, or it is off)."""
    if not config["eval_filter_seen"]:
        return None
    problem = seen_problem(config)
    if problem is None and get_trainer(config["MODEL_TYPE"], config["model"]) is not Trainer:
        problem = f"model {config['model']} trains with a RecBole trainer of its own"
    return f"cannot be True: {problem}; leave it False" if problem else None


def model_setting_problems(config: Config) -> list[str]:
    """Each setting the model declares (``accepts``, :mod:`recbole_moe.model.declaration`)
    whose value is not among its allowed values or in its range, then (when all are) each of
    its rules between settings that ``config`` breaks (``setting_rules``)."""
    declaration = declared(config.model_class)
    problems = []
    for key, allowed in declaration.accepts.items():
        problem = allowed.problem(config[key])
        if problem:
            problems.append(_problem(config, key, problem))
    if not problems:
        problems = [_problem(config, key, p) for key, p in declaration.setting_rules(config)]
    return problems


def selection_problems(config: Config) -> list[str]:
    """``extra_valid_metrics``: metrics the run computes, other than ``valid_metric``, each
    with an epoch budget within ``epochs``."""
    if config["extra_valid_metrics"] is None or not _is_int(config["epochs"]):
        return []
    try:
        extra = parse_extra_valid_metrics(config["extra_valid_metrics"], config["epochs"])
    except ValueError as exc:
        return [_problem(config, "extra_valid_metrics", str(exc))]
    computed = computed_metrics(config["metrics"], config["topk"])
    known = {c.lower() for c in computed}
    problems = []
    for metric in extra:
        if metric.lower() not in known:
            allowed = f"the metrics this run computes: {', '.join(computed)}"
            problems.append(
                _problem(config, "extra_valid_metrics", f"{metric} is not one of {allowed}")
            )
        elif metric.lower() == str(config["valid_metric"]).lower():
            problems.append(
                _problem(config, "extra_valid_metrics", f"{metric} is already valid_metric")
            )
    return problems


def validate_config(config: Config) -> None:
    """Raise :class:`ConfigError` listing every out-of-range setting: RecBole's own (checked
    when the config was built, :mod:`recbole_moe.recbole_settings`) and recbole-moe's."""
    problems = list(getattr(config, "recbole_problems", None) or []) + config_problems(config)
    if problems:
        listing = "\n  - ".join(problems)
        raise ConfigError(
            f"invalid configuration for {config.model} on {config.dataset}:\n  - {listing}"
        )


@lru_cache(maxsize=1)
def known_keys() -> frozenset:
    """Every key a RecBole or recbole-moe property file defines, plus our tools' own keys."""
    keys = set(EXTRA_KEYS)
    recbole_props = os.path.join(os.path.dirname(recbole.__file__), "properties")
    for pattern in (
        os.path.join(recbole_props, "**", "*.yaml"),
        os.path.join(PROPERTIES_DIR, "**", "*.yaml"),
    ):
        for path in glob.glob(pattern, recursive=True):
            try:
                data = read_yaml(path)
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(data, dict):
                keys.update(data)
    keys.discard(DATASET_OVERRIDES_KEY)  # a section of our model files, not a setting

    keys.update(general_arguments + training_arguments + evaluation_arguments + dataset_arguments)
    return frozenset(keys)


def unknown_key_messages(config: Config, keys: Iterable[str] | None = None) -> list[str]:
    """Warnings for user-given keys that no model, dataset or RecBole setting knows."""
    keys = list(config.external_config_dict) if keys is None else list(keys)
    # and the settings of a model from a registered model package (its own property file)
    model_file = model_property_file(config.model)
    own = read_yaml(model_file) if os.path.isfile(model_file) else None
    known = known_keys() | (set(own) - {DATASET_OVERRIDES_KEY} if isinstance(own, dict) else set())
    known |= set(declared(config.model_class).accepts)
    messages = []
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        messages.append(
            f"Unknown setting '{key}' (from {config.source_of(key)}): no model, dataset or "
            f"RecBole setting uses it, so it has no effect.{hint}"
        )
    return messages


def validate_atomic_file(path: str, config: Config | None = None) -> None:
    """Check a RecBole atomic file's header and values; raise a ``DataPreparationError`` naming
    file, line, column, value and declared type (empty file, header column not ``name:type``,
    a row with too many fields, a non-numeric float, an empty or ``NA`` id, ...).

    With ``config``, only the columns RecBole will load are checked, with its separators and
    encoding; without, every column, tab-separated, and the header must hold
    ``user_id:token`` and ``item_id:token``.
    """
    if config is None:
        check_interaction_file(path)
    else:
        _validate_with_config(path, config)


#: Atomic files RecBole's ``Dataset`` reads besides ``.inter``, with their id field's setting.
ATOMIC_SOURCES = {"inter": None, "user": "USER_ID_FIELD", "item": "ITEM_ID_FIELD"}


def _loaded_columns(config: Config, source: str, names: list[str]) -> list[str] | None:
    """The columns of ``source``'s file RecBole loads (None: the file is not read at all)."""
    load_col, unload_col = config["load_col"], config["unload_col"]
    if load_col is None or (isinstance(load_col, dict) and load_col.get(source) == "*"):
        loaded = list(names)
    elif source not in load_col:
        return None
    else:
        loaded = [n for n in names if n in load_col[source]]
    if unload_col and source in unload_col:
        loaded = [n for n in loaded if n not in unload_col[source]]
    return loaded


def _validate_with_config(path: str, config: Config) -> None:
    source = path.rsplit(".", 1)[-1]
    source = source if source in ATOMIC_SOURCES else "inter"
    separator = config["field_separator"] or "\t"
    encoding = config["encoding"]
    header = read_header(path, separator, encoding)
    names = [name for name, _ in header]
    types = dict(header)
    loaded = _loaded_columns(config, source, names)
    if loaded is None:
        return
    needed = {}  # field -> (setting, why)
    if source == "inter":
        needed[config["USER_ID_FIELD"]] = ("USER_ID_FIELD", "every interaction needs its user")
        needed[config["ITEM_ID_FIELD"]] = ("ITEM_ID_FIELD", "every interaction needs its item")
        time_reason = _time_field_reason(config)
        if time_reason:
            needed.setdefault(config["TIME_FIELD"], ("TIME_FIELD", time_reason))
    else:
        setting = ATOMIC_SOURCES[source]
        needed[config[setting]] = (setting, f"it is the id of the .{source} file")
    for field, (setting, why) in needed.items():
        if field not in types:
            raise DataPreparationError(
                f"{path}, line 1: no '{field}' column ({setting}={field!r} from "
                f"{config.source_of(setting)}), but {why}; the header has "
                f"{', '.join(f'{n}:{t}' for n, t in header)}"
            )
        if field not in loaded:
            listed = (config["load_col"] or {}).get(source)
            key = (
                "load_col"
                if listed is not None and listed != "*" and field not in listed
                else "unload_col"
            )
            raise ConfigError(
                f"{key}={config[key]!r} (from {config.source_of(key)}) leaves column '{field}' "
                f"of {path} unloaded, but {why} ({setting})"
            )
        expected = "float" if setting == "TIME_FIELD" else "token"
        if types[field] != expected:
            raise DataPreparationError(
                f"{path}, line 1: column '{field}' is declared {field}:{types[field]}, but "
                f"{setting} must be a {expected} column ({field}:{expected})"
            )
    ids = [config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]]
    check_atomic_file(
        path,
        separator,
        config["seq_separator"] or " ",
        columns=loaded,
        id_columns=[i for i in ids if i],
        encoding=encoding,
    )


def _time_field_reason(config: Config) -> str | None:
    """Why ``config`` needs the time field (None: it does not)."""
    if config["benchmark_filename"]:
        return None  # pre-split files are used in file order, histories already built
    eval_args = config["eval_args"] or {}
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        return f"the sequential model {config['model']} orders each history by time"
    if eval_args.get("order") == "TO":
        return "eval_args order 'TO' sorts interactions by time"
    if "TS" in (eval_args.get("split") or {}):
        return "eval_args split 'TS' splits by time"
    return None


def atomic_files(config: Config) -> list[str]:
    """The atomic files RecBole will read for ``config`` that exist."""
    data_path, dataset = config["data_path"], config["dataset"]
    if config["benchmark_filename"]:
        inter = [
            os.path.join(data_path, f"{dataset}.{part}.inter")
            for part in config["benchmark_filename"]
        ]
    else:
        inter = [os.path.join(data_path, f"{dataset}.inter")]
    others = [os.path.join(data_path, f"{dataset}.{source}") for source in ("user", "item")]
    return [path for path in inter + others if os.path.isfile(path)]


def validate_dataset_files(config: Config) -> None:
    """Check every atomic file RecBole will read for ``config``, before it reads them, and the
    data path the settings resolve to (``data_path_mode``).

    Raises:
        DataPreparationError: a malformed file (file, line, column, value, type).
        ConfigError: a setting that does not fit the files (a needed column not loaded).
    """
    for path in atomic_files(config):
        validate_atomic_file(path, config)

    try:
        data_path_mode(config)
    except ValueError as exc:
        key = (
            "data_path_mode"
            if config["data_path_mode"] not in (None, "auto")
            else ("train_objective" if is_sequence(config) else "train_batch_order")
        )
        raise ConfigError(f"{exc} (from {config.source_of(key)})") from exc


#: Interactions a user needs under each leave-one-out split (``eval_args`` ``split: {LS: ...}``):
#: one training item, then one each for validation and test.
LEAVE_ONE_OUT_MINIMUM = {"valid_and_test": 3, "valid_only": 2, "test_only": 2}


def _interval_lower(text: Any) -> float:
    """The lowest count an interval string such as ``"[3,inf)"`` lets through (0 if unset)."""
    bounds = re.findall(r"([\[(])\s*([-+]?(?:inf|\d+(?:\.\d*)?))", str(text or ""))
    if not bounds:
        return 0.0
    lows = [float(v) + (1 if bracket == "(" else 0) for bracket, v in bounds]
    return min(lows)


def _leave_one_out_minimum(config: Config) -> tuple[int, str] | None:
    """Interactions each user needs under the leave-one-out split, with the split's mode (None:
    not leave-one-out, or ``user_inter_num_interval`` already drops shorter users)."""
    split = (config["eval_args"] or {}).get("split")
    mode = split.get("LS") if isinstance(split, dict) else None
    needed = LEAVE_ONE_OUT_MINIMUM.get(mode) if isinstance(mode, str) else None
    if needed is None or _interval_lower(config["user_inter_num_interval"]) >= needed:
        return None
    return needed, mode


def _largest_full_ranking_topk(config: Config) -> int | None:
    """The largest ``topk`` when validation or test ranks every item (None: neither does)."""
    mode = (config["eval_args"] or {}).get("mode")
    modes = mode.values() if isinstance(mode, dict) else [mode]
    topk = config["topk"]
    if "full" not in modes or not isinstance(topk, list) or not topk:
        return None
    return max(topk)


def interaction_count_problems(config: Config) -> tuple[list[str], list[str]]:
    """What only the counts of the ``.inter`` file show, found before it is loaded:
    ``(problems, warnings)``.

    Problems: every user has too few interactions for the leave-one-out split (RecBole then
    trained on nothing and reported empty metrics, or failed with a sampler error), or there
    are fewer items than the largest ``topk`` of a full ranking (``torch.topk`` failed in
    evaluation). Warning: some users are that short (they add no training sample, or are
    evaluated on fewer items than the others).
    """
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    if config["benchmark_filename"] or not os.path.isfile(path):
        return [], []
    separator = config["field_separator"] or "\t"
    names = [name for name, _ in read_header(path, separator, config["encoding"])]
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    minimum = _leave_one_out_minimum(config) if uid in names else None
    topk = _largest_full_ranking_topk(config) if iid in names else None
    columns = [field for field, wanted in ((uid, minimum), (iid, topk)) if wanted]
    if not columns:
        return [], []
    frame = _read(
        path,
        names,
        columns,
        {c: str for c in columns},
        separator,
        config["encoding"],
        keep_default_na=False,
    )
    problems, warnings = [], []
    if minimum:
        needed, mode = minimum
        counts = frame[uid].value_counts()
        short = int((counts < needed).sum())
        if short:
            (problems if short == len(counts) else warnings).append(
                f"{short} of {len(counts)} users in {path} have fewer than {needed} "
                f"interactions, too few for leave-one-out (eval_args split LS {mode!r}, from "
                f"{config.source_of('eval_args')}); drop them with "
                f'--user_inter_num_interval="[{needed},inf)" or add interactions'
            )
    if topk:
        items = int(frame[iid].nunique())
        if items < topk:
            problems.append(
                f"topk={config['topk']} (from {config.source_of('topk')}): {path} has "
                f"{items} items, fewer than the largest cut-off {topk} of a full ranking; "
                f"give topk values up to {items}"
            )
    return problems, warnings

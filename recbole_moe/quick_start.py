"""Train, evaluate and reload models: recbole-moe's equivalent of ``recbole.quick_start``.

RecBole's own ``quick_start`` imports ray at module level, so it is never imported here.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from logging import getLogger
from typing import Any

import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.trainer import Trainer
from recbole.utils import (
    ModelType,
    get_environment,
    get_flops,
    init_logger,
    init_seed,
    set_color,
)
from recbole.utils import (
    get_trainer as recbole_get_trainer,
)

from recbole_moe import console
from recbole_moe.checkpoint import (
    RESUME_KEYS,
    check_checkpoint_matches,
    load_state,
    read_checkpoint,
)
from recbole_moe.compat import thop_available
from recbole_moe.config import Config
from recbole_moe.data import lean
from recbole_moe.data.prepare import DataPreparationError, ensure_dataset
from recbole_moe.data.seen import full_sort_evaluation, seen_problem
from recbole_moe.data.sequence import train_loader_class
from recbole_moe.environment import package_versions
from recbole_moe.errors import DatasetNotFoundError
from recbole_moe.fingerprint import check_data, check_settings, run_fingerprint
from recbole_moe.layers.recbole_models import is_recbole_model, use_layer_impls
from recbole_moe.layers.transformer import layer_impls
from recbole_moe.model import get_model, sequence_models
from recbole_moe.objective import is_sequence, train_window, training_samples, user_count
from recbole_moe.process_group import as_single_process
from recbole_moe.trainer import RecBoleMoeTrainer
from recbole_moe.validation import (
    interaction_count_problems,
    unknown_key_messages,
    validate_config,
    validate_dataset_files,
)


@dataclass
class RunParts:
    """What a run is built from: the resolved config, the model and the data it trains and is
    evaluated on (:func:`prepare_run`, :func:`load_model`, ``recbole_moe.testing.build``).

    Attributes:
        config: the resolved :class:`~recbole_moe.config.Config`.
        model: the model, on ``config["device"]`` (untrained, or with a checkpoint's weights).
        dataset: the dataset the loaders split (RecBole's or the lean one).
        train_data: the training loader.
        valid_data: the validation loader.
        test_data: the test loader.
        log_file: the run's log file (None when nothing is logged to a file).
    """

    config: Config
    model: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    log_file: str | None = None


# Handlers ``init_logger`` attached to the root logger in an earlier run of this process.
_RUN_HANDLERS: list[logging.Handler] = []
# The resume checkpoint (``-last.pth``) of the run in progress in this process.
_RESUME_FILE: list[str] = []


def resume_file_of_current_run() -> str | None:
    """The ``-last.pth`` checkpoint of the run in progress or last run in this process, when it
    has been written (None otherwise): ``--resume`` continues from it."""
    path = _RESUME_FILE[0] if _RESUME_FILE else None
    return path if path and os.path.isfile(path) else None


def _init_run_logger(config: Config) -> str | None:
    """RecBole's ``init_logger`` for one run; returns the log file path.

    ``init_logger`` relies on ``logging.basicConfig``, which is a no-op once the root logger has
    handlers, so a second run in the same process would keep writing to the first run's file.
    Remove the handlers of the previous run first.
    """
    root = logging.getLogger()
    for handler in _RUN_HANDLERS:
        root.removeHandler(handler)
        handler.close()
    _RUN_HANDLERS.clear()
    before = set(root.handlers)
    saved_handlers = list(root.handlers)
    # basicConfig only configures a root logger without handlers.
    root.handlers = []
    init_logger(config)
    new = [h for h in root.handlers if h not in before]
    console.attach(root)
    _RUN_HANDLERS.extend(new)
    root.handlers = saved_handlers + new
    for handler in new:
        if hasattr(handler, "baseFilename"):
            return handler.baseFilename
    return None


def check_dataset_files(config: Config) -> None:
    """Fail before any work when the dataset's ``.inter`` file is missing (never download).

    Raises:
        DatasetNotFoundError: naming the dataset, the directory searched and how to provide it.
    """
    dataset = config["dataset"]
    data_dir = os.path.normpath(config["data_path"])
    if config["benchmark_filename"]:  # pre-split: <dataset>.<part>.inter for each part
        parts = [
            os.path.join(data_dir, f"{dataset}.{p}.inter") for p in config["benchmark_filename"]
        ]
        missing = [path for path in parts if not os.path.isfile(path)]
        if missing:
            raise DatasetNotFoundError(
                f"dataset '{dataset}': benchmark_filename {config['benchmark_filename']} names "
                f"files that do not exist: {', '.join(missing)}"
            )
    elif not os.path.isfile(os.path.join(data_dir, f"{dataset}.inter")):
        # Prepares from the raw-data root when it can; raises a specific error otherwise.
        ensure_dataset(dataset, os.path.dirname(data_dir))


def get_trainer(config: Config, model) -> Any:
    """The trainer for ``model``.

    RecBole's plain ``Trainer`` is replaced by :class:`~recbole_moe.trainer.RecBoleMoeTrainer`
    (same loop; resumable atomic checkpoints, non-finite loss check, statistics hook). Models
    with a trainer of their own in RecBole (e.g. S3Rec's pre-training) keep it.
    """
    trainer_class = recbole_get_trainer(config["MODEL_TYPE"], config["model"])
    if trainer_class is Trainer:
        trainer_class = RecBoleMoeTrainer
    return trainer_class(config, model)


def log_flops(model, dataset, config: Config, logger: logging.Logger) -> None:
    """Log the model's FLOPs like RecBole, or why they could not be counted."""
    ok, reason = thop_available()
    if not ok:
        logger.info(f"FLOPs not counted: thop is unavailable ({reason}).")
        return
    try:
        transform = construct_transform(config)
        flops = get_flops(model, dataset, config["device"], logger, transform)
        logger.info(set_color("FLOPs", "blue") + f": {flops}")
    except Exception as exc:  # FLOPs are informative only; never fail a run on them
        logger.info(f"FLOPs not counted: {type(exc).__name__}: {exc}")


def _discard_run_log(log_file: str | None) -> None:
    """Close and delete the log of a run that failed before training (no partial output)."""
    root = logging.getLogger()
    for handler in list(_RUN_HANDLERS):
        root.removeHandler(handler)
        handler.close()
    _RUN_HANDLERS.clear()
    if log_file and os.path.isfile(log_file):
        os.remove(log_file)


def load_dataset(config: Config):
    """RecBole's ``create_dataset``; a malformed atomic file is reported with file and line."""
    try:
        return create_dataset(config)
    except Exception as exc:
        validate_dataset_files(config)  # raises a DataPreparationError naming file and line
        raise exc


def check_resume_checkpoint(config: Config) -> None:
    """Refuse ``resume`` before any data is loaded: the file must be an intact checkpoint of
    this model on this dataset, with everything a resume reads, written with the same settings
    (:data:`recbole_moe.fingerprint.RUN_SETTINGS`)."""
    path = str(config["resume"])
    checkpoint = read_checkpoint(path, map_location="cpu", required=RESUME_KEYS)
    check_checkpoint_matches(checkpoint, config["model"], config["dataset"], path)
    check_settings(checkpoint, config, path)


def build_model(config: Config, dataset) -> Any:
    """``config``'s model on ``dataset``, on ``config``'s device. Our models build their layers
    as ``attention_impl``, ``dropout_impl`` and ``gelu_impl`` say; RecBole's own models, whose
    layers we cannot build, are switched to them afterwards
    (:mod:`recbole_moe.layers.recbole_models`). RecBole's LightGBM and XGBoost are boosters,
    not torch modules, and are returned as built."""
    net = get_model(config["model"])(config, dataset).to(config["device"])
    if not isinstance(net, torch.nn.Module):  # RecBole's LightGBM and XGBoost: boosters
        return net
    if is_recbole_model(net):
        use_layer_impls(net, layer_impls(config))
    return net


def check_run(
    model: Any,
    dataset: str,
    config_dict: dict | None = None,
    config_file_list: list[str] | None = None,
    override_source: str = "config_dict",
) -> Config:
    """Every check of a run that needs no loaded data: the settings (RecBole's and ours), the
    dataset's files (each value of each column RecBole will read) and a ``resume`` checkpoint.
    Writes nothing.

    Returns:
        the resolved :class:`~recbole_moe.config.Config`.

    Raises:
        RecBoleMoeError: a :class:`ConfigError`, ``DatasetNotFoundError``,
            ``DataPreparationError`` or ``CheckpointError`` naming the bad value.
    """
    config = Config(
        model=model,
        dataset=dataset,
        config_file_list=config_file_list,
        config_dict=config_dict,
        override_source=override_source,
    )
    validate_config(config)
    check_dataset_files(config)
    validate_dataset_files(config)  # every value of every file RecBole will read
    problems, config.count_warnings = interaction_count_problems(config)
    if problems:
        raise DataPreparationError("; ".join(problems))
    if config["resume"]:
        check_resume_checkpoint(config)
    return config


def prepare_run(
    model: Any,
    dataset: str,
    config_dict: dict | None = None,
    config_file_list: list[str] | None = None,
    log: bool = True,
    override_source: str = "config_dict",
) -> RunParts:
    """Resolve and check the config, load data and build the model (the first half of
    :func:`run`). Bad settings, missing or malformed data and a bad ``resume`` checkpoint fail
    here (:func:`check_run`), before any training, and leave no log file behind.

    Returns:
        :class:`RunParts` (``log_file`` set when ``log`` and this is the first process).
    """
    config = check_run(model, dataset, config_dict, config_file_list, override_source)
    init_seed(config["seed"], config["reproducibility"])
    # In a data-parallel run only the first process writes a log file.
    first_process = config["local_rank"] == 0 and not config["offset"]
    log_file = _init_run_logger(config) if log and first_process else None
    logger = getLogger()
    try:
        for message in unknown_key_messages(config) + getattr(config, "count_warnings", []):
            logger.warning(message)
        for note in getattr(config, "notes", []):
            logger.info(note)
        versions = ", ".join(f"{k} {v}" for k, v in package_versions().items() if v)
        logger.info(set_color("seed", "blue") + f": {config['seed']}   versions: {versions}")
        logger.info(config)
        # RecBole's path, or the lean one (data_path_mode, recbole_moe/data/lean.py), with
        # prefix or whole-sequence training samples (train_objective).
        data, train_data, valid_data, test_data = lean.load_data(
            config, load_dataset, data_preparation, train_loader_class(config)
        )

        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = build_model(config, train_data._dataset)
        logger.info(net)
        if log:
            warn_slow_prefix_epoch(config, net, train_data._dataset, logger)
            log_flops(net, data, config, logger)
    except BaseException:
        _discard_run_log(log_file)
        raise
    return RunParts(config, net, data, train_data, valid_data, test_data, log_file)


#: Floating-point operations per second per CPU thread assumed by :func:`prefix_epoch_seconds`:
#: set so that the estimate of HyMoERec on ml-100k at length 200 is near the epoch time
#: measured on a 2-core CPU (an estimate to within a factor of about two, not a measurement).
CPU_FLOPS_PER_THREAD = 20e9
#: Estimated seconds per epoch above which a prefix-regime CPU run is warned about.
SLOW_EPOCH_S = 3600.0


def prefix_epoch_seconds(config: Config, model: Any, samples: int) -> float:
    """A cheap estimate of one prefix-regime training epoch on the CPU, in seconds.

    Every training sample (each prefix of each history) is a sequence padded to
    ``MAX_ITEM_LIST_LENGTH`` = L positions, each passing every non-embedding weight w once
    forward and twice backward (2 FLOPs each: 6 w L), plus the softmax over the n items at its
    last position (6 d n, with the item embedding's width d). Every expert of an MoE layer is
    counted (not only the top-k a token uses), attention's L^2 terms and data loading are
    left out, and a thread is assumed to run :data:`CPU_FLOPS_PER_THREAD`.
    """
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    in_embeddings = sum(m.weight.numel() for m in embeddings)
    weights = sum(p.numel() for p in model.parameters() if p.requires_grad) - in_embeddings
    width = max((m.embedding_dim for m in embeddings), default=0)
    length = int(config["MAX_ITEM_LIST_LENGTH"] or 1)
    n_items = int(getattr(model, "n_items", 0))
    flops = samples * (6 * weights * length + 6 * width * n_items)
    return flops / (CPU_FLOPS_PER_THREAD * max(torch.get_num_threads(), 1))


def warn_slow_prefix_epoch(config: Config, model: Any, train_dataset, logger) -> None:
    """Warn when a prefix-regime run on the CPU is estimated at more than an hour an epoch
    (:func:`prefix_epoch_seconds`), naming ``--train_objective=sequence``."""
    if (
        config["MODEL_TYPE"] != ModelType.SEQUENTIAL
        or is_sequence(config)
        or torch.device(config["device"]).type != "cpu"
    ):
        return
    samples = training_samples(config, train_dataset)
    seconds = prefix_epoch_seconds(config, model, samples)
    if seconds <= SLOW_EPOCH_S:
        return
    trainable = sequence_models()
    fix = (
        f"--train_objective=sequence trains one sample per user ({user_count(train_dataset):,}) "
        "with a loss at every position"
        if config["model"] in trainable
        else "a GPU, a shorter MAX_ITEM_LIST_LENGTH or a smaller model is faster "
        f"(--train_objective=sequence is for {', '.join(trainable)})"
    )
    logger.warning(
        f"{config['model']} on {config['dataset']} with train_objective=prefix on the CPU: an "
        f"epoch is estimated at about {seconds / 3600:.1f} h or more ({samples:,} training "
        f"samples at length {config['MAX_ITEM_LIST_LENGTH']}); {fix}"
    )


def _plain(result) -> dict:
    """A metric dict with plain Python floats (RecBole returns numpy scalars)."""
    return {key: float(value) for key, value in (result or {}).items()}


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def seen_removed_result(trainer, test_data, test_result: dict) -> dict | None:
    """The loaded model's test result with each user's seen items removed from the ranking
    (:mod:`recbole_moe.data.seen`): ``test_result`` itself when it was evaluated so
    (``eval_filter_seen``) or the model is a general one (RecBole ranks without its history),
    ``None`` where removal does not apply (sampled or non leave-one-out evaluation, a trainer
    of RecBole's own)."""
    config = trainer.config
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return test_result if full_sort_evaluation(config) else None
    if seen_problem(config) or not isinstance(trainer, RecBoleMoeTrainer):
        return None
    if config["eval_filter_seen"]:
        return test_result
    return _plain(trainer.evaluate(test_data, load_best_model=False, filter_seen=True))


def _selection_result(
    trainer, selection, test_data, saved: bool, both_protocols: bool = False
) -> dict:
    """What a run selecting on ``selection.metric`` alone would report (``extra_valid_metrics``):
    its best validation, the test result of its best checkpoint (``None`` when not ``saved``)
    and, with ``both_protocols``, that checkpoint's result with seen items removed."""
    test_result = seen_removed = None
    if saved and selection.best_epoch is not None:
        test_result = _plain(
            trainer.evaluate(test_data, load_best_model=True, model_file=selection.model_file)
        )
        if both_protocols:
            seen_removed = seen_removed_result(trainer, test_data, test_result)
    result = {
        "best_valid_score": selection.best_score,
        "best_valid_result": _plain(selection.best_result),
        "best_epoch": selection.best_epoch,
        "epochs_run": selection.epochs_run,
        "test_result": test_result,
        "model_file": os.path.abspath(selection.model_file) if saved else None,
    }
    if both_protocols:
        result["test_result_seen_removed"] = seen_removed
    return result


def run_header(config: Config, n_params: int, log_file: str | None) -> str:
    """The run's first terminal line: model, dataset, regime, size, device and log file."""
    regime = "prefix training (RecBole's regime)"
    if is_sequence(config):
        regime = f"sequence training (train_window {train_window(config)})"
    where = f"; log {log_file}" if log_file else ""
    resumed = f", resumed from {config['resume']}" if config["resume"] else ""
    return (
        f"{config['model']} on {config['dataset']}: {regime}, {n_params:,} parameters, "
        f"{config['device']}, up to {config['epochs']} epochs{resumed}{where}"
    )


def run(
    model: Any,
    dataset: str,
    config_dict: dict | None = None,
    config_file_list: list[str] | None = None,
    saved: bool = True,
    override_source: str = "config_dict",
    callback_fn: Callable[[int, float], None] | None = None,
    both_protocols: bool = False,
) -> dict:
    """Train ``model`` on ``dataset`` and evaluate it, like RecBole's ``run_recbole``.

    Args:
        model: model name (recbole-moe's or RecBole's) or class.
        dataset: dataset name; atomic files are read from ``<data_path>/<dataset>/``.
        config_dict: overrides (highest priority).
        config_file_list: YAML config files.
        saved: keep the best checkpoint and evaluate the test set with it.
        override_source: how error messages name ``config_dict`` (the CLI passes
            "the command line").
        callback_fn: passed to RecBole's ``Trainer.fit``: called as
            ``callback_fn(epoch_idx, valid_score)`` after each validation (``recbole-moe tune``
            reports the score to its pruner there).
        both_protocols: test the selected model also with each user's seen items removed
            from the ranking (``test_result_seen_removed``, see :func:`seen_removed_result`;
            ``test_result`` stays as ``eval_filter_seen`` says).

    Returns:
        dict with ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``,
        ``test_result``, ``model_file``, ``log_file`` and ``config``, plus ``epochs_run``,
        timings, ``n_params`` and ``epoch_stats`` (the model's per-epoch statistics: HyMoERec's
        α and expert load, FAME's gate and router weights; empty for other models).
        ``epochs_run`` counts the epochs of ``valid_metric``'s own run, ``epochs_trained`` those
        trained by this call, ``epochs_total`` those trained in all (a resumed run's earlier
        epochs included), ``best_epoch`` the epoch of the best model, ``elapsed_before_s``
        the seconds of training and validation of a resumed run's earlier processes (0 when
        not resumed, ``None`` when they were not recorded); ``selections`` maps
        each of ``extra_valid_metrics`` to what a run selecting on it alone reports
        (``best_valid_score``, ``best_valid_result``, ``best_epoch``, ``epochs_run``,
        ``test_result``, ``model_file``). With ``both_protocols``, the run's and each
        selection's ``test_result_seen_removed`` too.
    """
    parts = prepare_run(
        model, dataset, config_dict, config_file_list, override_source=override_source
    )
    config = parts.config
    logger = getLogger()
    trainer, n_params = _start_trainer(parts, saved)
    console.show(logger, run_header(config, n_params, parts.log_file))
    show_progress = console.progress_bars(config["show_progress"])
    # RecBole's DecisionTreeTrainer (LightGBM, XGBoost) takes no callback_fn
    callback = {"callback_fn": callback_fn} if callback_fn is not None else {}
    best_valid_score, best_valid_result = trainer.fit(
        parts.train_data,
        parts.valid_data,
        saved=saved,
        show_progress=show_progress,
        **callback,
    )
    # seconds per training epoch and validation pass (RecBoleMoeTrainer; none for others)
    train_times = getattr(trainer, "train_epoch_times", [])
    primary = getattr(trainer, "primary_selection", None)
    test_start = time.perf_counter()
    test_result = trainer.evaluate(
        parts.test_data, load_best_model=saved, show_progress=show_progress
    )
    test_time = time.perf_counter() - test_start
    protocols = {}
    if both_protocols:
        protocols["test_result_seen_removed"] = seen_removed_result(
            trainer, parts.test_data, _plain(test_result)
        )
        logger.info(
            set_color("test result, seen items removed", "yellow")
            + f": {protocols['test_result_seen_removed']}"
        )
    selections = {
        selection.metric: _selection_result(
            trainer, selection, parts.test_data, saved, both_protocols
        )
        for selection in getattr(trainer, "selections", [])
    }
    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": float(best_valid_score),
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        **protocols,
        **_run_facts(parts, trainer, saved, train_times, primary),
        "selections": selections,
        "test_time": test_time,
        "n_params": int(n_params),
    }


def _start_trainer(parts: RunParts, saved: bool) -> tuple[Any, int]:
    """The run's trainer (its data fingerprint set, resumed when ``resume`` says so) and the
    model's number of trainable parameters; notes the resume file of the run in progress."""
    config = parts.config
    trainer = get_trainer(config, parts.model)
    trainer.fingerprint = run_fingerprint(config, parts.dataset)  # saved, compared on a resume
    # RecBole's LightGBM and XGBoost are boosters: no torch parameters
    weights = parts.model.parameters() if isinstance(parts.model, torch.nn.Module) else []
    n_params = sum(p.numel() for p in weights if p.requires_grad)
    if config["resume"]:
        trainer.resume_checkpoint(config["resume"])
    last = getattr(trainer, "last_model_file", None)  # RecBole's own trainers write none
    _RESUME_FILE[:] = [os.path.abspath(last)] if saved and last else []
    return trainer, n_params


def _run_facts(parts: RunParts, trainer: Any, saved: bool, train_times: list, primary) -> dict:
    """The files, config, epochs, timings and statistics part of :func:`run`'s result."""
    config = parts.config
    return {
        "model_file": os.path.abspath(trainer.saved_model_file) if saved else None,
        "log_file": parts.log_file,
        "config": config,
        # the epochs of valid_metric's own run (training may go on for extra_valid_metrics)
        "epochs_run": primary.epochs_run if primary else len(train_times),
        "epochs_trained": len(train_times),
        # the epoch of the best model and the epochs trained in all, resumed parts included
        # (RecBoleMoeTrainer; None for other trainers)
        "best_epoch": getattr(trainer, "best_epoch", None),
        "epochs_total": trainer.start_epoch + len(train_times) if train_times else None,
        # seconds of training and validation by the earlier processes of a resumed run
        # (other trainers record none: unknown when they resumed)
        "elapsed_before_s": getattr(trainer, "elapsed_before_s", None if config["resume"] else 0.0),
        "train_time_per_epoch": _mean(train_times),
        "valid_time_per_epoch": _mean(getattr(trainer, "valid_epoch_times", [])),
        "epoch_stats": list(getattr(trainer, "epoch_stats", [])),
    }


def load_model(
    model_file: str,
    device: str | None = None,
    checkpoint: dict | None = None,
    data_path: str | None = None,
) -> RunParts:
    """Reload a checkpoint written by :func:`run` (works on torch >= 2.6).

    Rebuilds the dataset from the checkpoint's config, so the dataset files must still be where
    they were at training time (the absolute ``data_path`` it keeps), or in ``data_path``: the
    folder that holds ``<dataset>/<dataset>.inter``, as training's ``data_path``.
    ``checkpoint``: the file's content, when already read with
    :func:`recbole_moe.checkpoint.read_checkpoint`.

    Returns:
        :class:`RunParts` with the checkpoint's weights in ``model`` (in eval mode) and no
        ``log_file``.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file or not a RecBole
            checkpoint, or its weights do not fit the model its config builds.
        CheckpointMismatchError: the dataset's users or items differ from those the
            checkpoint was trained on (:func:`recbole_moe.fingerprint.check_data`).
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(model_file, map_location="cpu")
    config = checkpoint["config"]
    if config["single_spec"] is False:  # saved by a data-parallel run: reload in one process
        as_single_process(config)
    if device is not None:
        config["device"] = torch.device(device)
    elif config["device"].type == "cuda" and not torch.cuda.is_available():
        config["device"] = torch.device("cpu")
    init_seed(config["seed"], config["reproducibility"])
    dataset = config["dataset"]
    if data_path is not None:
        config["data_path"] = os.path.join(os.path.abspath(data_path), dataset)
    parts = config["benchmark_filename"] or [None]  # pre-split: <dataset>.<part>.inter each
    names = [f"{dataset}.{part}.inter" if part else f"{dataset}.inter" for part in parts]
    missing = [n for n in names if not os.path.isfile(os.path.join(config["data_path"], n))]
    if missing:
        where = "the given data_path" if data_path is not None else "where it was trained"
        raise DatasetNotFoundError(
            f"the data of checkpoint {model_file} is not {where}: "
            f"{os.path.join(config['data_path'], missing[0])} does not exist; give "
            f"--data_path (data_path=) the folder that holds {dataset}/{missing[0]}"
        )
    check_dataset_files(config)
    validate_dataset_files(config)
    data, train_data, valid_data, test_data = lean.load_data(
        config, load_dataset, data_preparation, train_loader_class(config)
    )
    check_data(checkpoint, run_fingerprint(config, data), model_file)
    init_seed(config["seed"], config["reproducibility"])
    model = build_model(config, train_data._dataset)
    load_state(model, checkpoint["state_dict"], model_file, f"model {config['model']}")
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return RunParts(config, model, data, train_data, valid_data, test_data)

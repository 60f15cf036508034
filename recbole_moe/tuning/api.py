"""``recbole_moe.tune``: check everything, then run the study and write its report."""

from __future__ import annotations

import difflib
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from recbole_moe.config import Config
from recbole_moe.console import quiet_console
from recbole_moe.errors import RecBoleMoeError
from recbole_moe.files import atomic_write_text
from recbole_moe.quick_start import check_dataset_files
from recbole_moe.tuning.report import summary, write_report, write_tables
from recbole_moe.tuning.space import Space, TuneError, load_space
from recbole_moe.tuning.study import (
    DEFAULT_TRIALS,
    PRUNERS,
    RESERVED,
    SAMPLERS,
    TuneSpec,
    default_out,
    open_storage,
    open_study,
    relative,
    require_optuna,
    work,
)
from recbole_moe.validation import validate_config

SpaceLike = str | os.PathLike | Mapping | Space


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TuneError(f"{name} must be an integer >= {minimum}, found {value!r}")
    return value


def _resolve(
    model: Any, dataset: str, overrides: dict, config_files: list | None, override_source: str
):
    """The resolved config of the fixed settings (no data loaded), checked like a run's."""
    try:
        config = Config(
            model=model,
            dataset=dataset,
            config_file_list=config_files,
            config_dict=dict(overrides),
            override_source=override_source,
        )
    except RecBoleMoeError:
        raise
    except Exception as exc:  # noqa: BLE001 - RecBole's own checks raise plain errors
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise TuneError(f"the settings cannot be resolved: {type(exc).__name__}: {first}") from exc
    validate_config(config)
    check_dataset_files(config)
    return config


def _check_names(space: Space, overrides: dict, known: set, model: str) -> None:
    for param in space:
        if param.name in RESERVED:
            raise TuneError(
                f"{param.where}: '{param.name}' cannot be searched: tune sets it for every trial"
            )
        if param.name in overrides:
            raise TuneError(
                f"{param.where}: '{param.name}' is searched and also fixed by "
                f"--{param.name}={overrides[param.name]}; drop one of them"
            )
        if param.name not in known:
            close = difflib.get_close_matches(param.name, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TuneError(
                f"{param.where}: unknown parameter '{param.name}': {model}'s "
                f"resolved config has no such setting{hint}"
            )


def _trial_count(space: Space, sampler: str, trials: int | None, timeout: float | None):
    """Trials of the whole study: all combinations (at most ``trials``) for ``grid``, else
    ``trials``, or :data:`DEFAULT_TRIALS` when neither a count nor a timeout bounds it."""
    if sampler == "grid":
        size = space.grid_size()  # raises for a continuous parameter
        return size if trials is None else min(trials, size)
    if trials is None and timeout is None:
        return DEFAULT_TRIALS
    return trials


def _check_search_settings(
    trials: int | None,
    timeout: float | None,
    n_jobs: int,
    sampler: str,
    sampler_seed: int | None,
    pruner: str,
) -> None:
    """Refuse a bad setting of the search itself (counts, sampler, pruner), naming it.

    Raises:
        TuneError: the first bad setting.
    """
    if trials is not None:
        _positive_int("--trials", trials)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise TuneError(f"--timeout must be a number of seconds > 0, found {timeout!r}")
    _positive_int("--n_jobs", n_jobs)
    if sampler not in SAMPLERS:
        raise TuneError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise TuneError(f"--pruner {pruner!r}: choose one of {', '.join(PRUNERS)}")
    if sampler_seed is not None and (
        isinstance(sampler_seed, bool) or not isinstance(sampler_seed, int)
    ):
        raise TuneError(f"--sampler_seed must be an integer, found {sampler_seed!r}")


def prepare(
    model: Any,
    dataset: str,
    params: SpaceLike,
    trials: int | None = None,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    n_jobs: int = 1,
    config_dict: dict | None = None,
    config_file_list: list | None = None,
    sampler: str = "tpe",
    sampler_seed: int | None = None,
    pruner: str = "median",
    pruner_startup_trials: int = 5,
    pruner_warmup_epochs: int = 0,
    out: str | None = None,
    keep_checkpoints: bool = False,
    plots: bool = True,
    override_source: str = "config_dict",
) -> TuneSpec:
    """Check every input of :func:`tune` and return the study's :class:`TuneSpec`. Writes
    nothing.

    Args:
        model: model name or class.
        dataset: dataset name.
        params: the search space: a file in RecBole's hyper-parameter format (or YAML for
            ``.yaml``/``.yml``), or a mapping in either YAML form.
        trials: trials of the whole study (default 20; all combinations for ``grid``); an
            existing study runs only the missing ones.
        timeout: seconds after which this call starts no new trial.
        study: study name (default ``<model>-<dataset>``).
        storage: SQLAlchemy URL (``postgresql://user:password@host/db``, ...).
        n_jobs: worker processes on this machine.
        config_dict, config_file_list: fixed settings, as for :func:`recbole_moe.run`.
        sampler: ``tpe`` (default), ``random`` or ``grid``.
        sampler_seed: seed of the sampler; each trial's draw uses it with the worker index
            and the study's trial count (give each machine its own seed, or none).
        pruner: ``median`` (default) or ``none``.
        pruner_startup_trials: trials completed before the median pruner prunes.
        pruner_warmup_epochs: epochs of a trial before it may be pruned.
        out: results folder (default ``tuning/<study>``).
        keep_checkpoints: keep every trial's best-model checkpoint (default: deleted).
        plots: write the PNG plots (needs matplotlib).
        override_source: how error messages name ``config_dict``.

    Raises:
        TuneError: (or another ``RecBoleMoeError``) naming the first bad input.
    """
    require_optuna()
    _check_search_settings(trials, timeout, n_jobs, sampler, sampler_seed, pruner)
    _positive_int("--pruner_startup_trials", pruner_startup_trials, 0)
    _positive_int("--pruner_warmup_epochs", pruner_warmup_epochs, 0)
    space = load_space(params)
    overrides = dict(config_dict or {})
    config_files = list(config_file_list) if config_file_list else None
    config = _resolve(model, dataset, overrides, config_files, override_source)
    model_name = config["model"]
    _check_names(space, overrides, set(config.final_config_dict), model_name)
    n_trials = _trial_count(space, sampler, trials, timeout)
    study_name = study or f"{model_name}-{dataset}"
    out = os.path.normpath(out) if out else default_out(study_name)
    storage_given = storage is not None
    if not storage_given:
        storage = "sqlite:///" + os.path.abspath(os.path.join(out, "study.db"))
    user_dir = overrides.get("checkpoint_dir")
    checkpoint_root = str(user_dir) if user_dir else os.path.join(out, "saved")
    space_file = None
    if isinstance(params, (str, os.PathLike)):
        space_file = os.fspath(params)
    return TuneSpec(
        model=model_name,
        dataset=dataset,
        space=space,
        overrides=overrides,
        config_files=config_files,
        n_trials=n_trials,
        deadline=None if timeout is None else time.time() + float(timeout),
        timeout=None if timeout is None else float(timeout),
        study_name=study_name,
        storage=storage,
        storage_given=storage_given,
        out=out,
        n_jobs=n_jobs,
        sampler=sampler,
        sampler_seed=sampler_seed,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        pruner_warmup_epochs=pruner_warmup_epochs,
        keep_checkpoints=keep_checkpoints,
        metric=str(config["valid_metric"]),
        direction="maximize" if config["valid_metric_bigger"] else "minimize",
        override_source=override_source,
        space_file=space_file,
        plots=plots,
        checkpoint_root=checkpoint_root,
    )


def tune(
    model: Any,
    dataset: str = "ml-100k",
    params: SpaceLike | None = None,
    *,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> dict:
    """Search hyper-parameters of ``model`` on ``dataset`` with Optuna; ``recbole-moe tune``.

    Every trial is a :func:`recbole_moe.run` with ``config_dict`` plus the trial's parameters;
    its objective is the best validation ``valid_metric``, reported to the pruner after each
    validation. The study lives in ``storage`` (default: ``<out>/study.db``, SQLite), so a
    second call with the same arguments continues it, and calls in other processes or on other
    machines with the same ``study`` and ``storage`` share it.

    Args:
        model, dataset, params: as for :func:`prepare`.
        log: where progress lines go.
        **settings: the keyword arguments of :func:`prepare` (``trials``, ``timeout``,
            ``study``, ``storage``, ``n_jobs``, ``config_dict``, ``sampler``, ...).

    Returns:
        the study's summary: ``study``, ``storage``, ``metric``, ``direction``, ``n_trials``,
        ``states`` (trials per state), ``best`` (``trial``, ``value``, ``params``, ``valid``,
        ``test``, ``command``), ``tune_command``, ``files`` and ``worker_exit_codes``.

    Raises:
        TuneError: (or another ``RecBoleMoeError``) for bad input, before anything is written.
    """
    if params is None:
        raise TuneError("no search space: pass params (a file such as space.hyper, or a mapping)")
    return execute(prepare(model, dataset, params, **settings), log)


def execute(spec: TuneSpec, log: Callable[[str], None] = print) -> dict:
    """Open (or create) the study of a checked :class:`TuneSpec`, run its workers and write the
    report; returns the study's summary."""
    for message in spec.space.warnings():
        log(f"[tune] warning: {message}")
    if spec.storage_given:  # an unreachable database fails before any file is written
        storage = open_storage(spec.storage)
        study = open_study(spec, storage)
        os.makedirs(spec.out, exist_ok=True)
    else:
        os.makedirs(spec.out, exist_ok=True)
        storage = open_storage(spec.storage)
        study = open_study(spec, storage)
    if spec.space_file is None:
        atomic_write_text(
            os.path.join(spec.out, "space.hyper"), "\n".join(spec.space.describe()) + "\n"
        )
    done = len(study.get_trials(deepcopy=False))
    target = f"{spec.n_trials}" if spec.n_trials is not None else "no limit"
    log(
        f"[tune] study {spec.study_name} in {spec.storage_label()}: {done} trials so far, "
        f"target {target}; {spec.n_jobs} worker{'s' if spec.n_jobs > 1 else ''}, sampler "
        f"{spec.sampler}, pruner {spec.pruner}, {spec.direction} {spec.metric}"
    )
    codes = run_workers(spec, log, after_trial=lambda s: write_tables(spec, s))
    if os.path.isdir(spec.checkpoint_root) and not os.listdir(spec.checkpoint_root):
        os.rmdir(spec.checkpoint_root)  # every trial of this call cleaned up after itself
    files = write_report(spec, study, plots=spec.plots, log=log)
    info = summary(spec, study)
    info["files"] = [relative(p) for p in files]
    info["worker_exit_codes"] = codes
    return info


def format_summary(info: dict) -> str:
    """The lines ``recbole-moe tune`` prints at the end."""
    states = info["states"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    lines = [f"[tune] study {info['study']}: {info['n_trials']} trials ({counts or 'none'})"]
    best = info.get("best")
    if best is None:
        lines.append("[tune] no trial completed yet")
    else:
        lines.append(f"best trial #{best['trial']}: {info['metric']} {best['value']:.4f}")
        lines.append(
            "  params    : "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best["params"].items()
            )
        )
        for label, key in (("best valid", "valid"), ("test      ", "test")):
            if best.get(key):
                lines.append(
                    f"  {label}: " + "  ".join(f"{m}: {v:.4f}" for m, v in best[key].items())
                )
        lines.append(f"  rerun     : {best['command']}")
    lines.append(f"continue   : {info['tune_command']}")
    if info.get("files"):
        lines.append("wrote      : " + ", ".join(info["files"]))
    return "\n".join(lines)


def _worker_main(spec: TuneSpec, worker: int) -> None:  # pragma: no cover - in a child
    """Entry point of a worker process started by ``n_jobs``."""

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(spec.n_jobs, 1)))

    def log(line: str) -> None:
        print(line.replace("[tune]", f"[tune worker {worker}]", 1), flush=True)

    try:
        with quiet_console(run_lines=False):  # a line per trial, as in the first process
            work(spec, worker, log, after_trial=lambda study: write_tables(spec, study))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except RecBoleMoeError as exc:
        print(f"recbole-moe tune: worker {worker}: error: {exc}", flush=True)
        raise SystemExit(2) from exc


def run_workers(
    spec: TuneSpec,
    log: Callable[[str], None] = print,
    after_trial: Callable[[Any], None] | None = None,
) -> list[int]:
    """``spec.n_jobs`` workers: this process alone, or that many processes; returns their exit
    codes (0 each when all went well)."""
    if spec.n_jobs <= 1:
        work(spec, 0, log, after_trial)
        return [0]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(spec, index), name=f"recbole-moe-tune-{index}")
        for index in range(spec.n_jobs)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    return [process.exitcode for process in processes]

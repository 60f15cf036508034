"""The search: an Optuna study whose trials are ordinary :func:`recbole_moe.run` runs.

* **Storage.** Any SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``);
  by default an SQLite file ``study.db`` in the results folder. Every worker, in this process,
  in other processes or on other machines, reads and writes the same study there.
* **Trials.** A trial draws its parameters from the search space and trains with
  :func:`recbole_moe.run`: the same config resolution, log file, checkpoints and training as
  ``recbole-moe train`` with those settings. Its objective is the best validation score
  (``valid_metric``); after each validation the score goes to the pruner, which may stop the
  trial (median pruner by default).
* **Target.** ``n_trials`` counts the trials of the whole study, across invocations and
  workers: a rerun of the same command continues where the study stands, and a finished trial
  is never trained again. Trials whose parameters equal those of a complete trial take its
  result (same settings and seed, same run) instead of training again.
* **Crashes.** A trial whose worker died (killed, out of memory, machine lost) stays
  ``RUNNING`` in the storage. A worker on the same machine sees at once that the process is
  gone; on another machine the trial's heartbeat stops and it is failed after
  :data:`GRACE_PERIOD_S`. Either way the trial is failed and its parameters are queued again
  (at most :data:`MAX_RETRIES` times); the retry continues from the dead trial's last
  checkpoint when it can read it. An interrupted trial (Ctrl-C) is queued again the same way.
"""

from __future__ import annotations

import glob
import importlib.util
import inspect
import json
import math
import os
import shlex
import shutil
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

from recbole_moe.errors import RecBoleMoeError
from recbole_moe.quick_start import run
from recbole_moe.tuning.space import Space, TuneError

#: Seconds between a running trial's heartbeats in the storage.
HEARTBEAT_INTERVAL_S = 60
#: A running trial without a heartbeat for this long is failed (and queued again).
GRACE_PERIOD_S = 300
#: How many times the parameters of a trial whose worker died are queued again.
MAX_RETRIES = 2
#: Attempts to open a new database again after another process created its tables first.
SCHEMA_RACE_RETRIES = 3
#: Default number of trials when neither ``n_trials`` nor ``timeout`` is given.
DEFAULT_TRIALS = 20
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
#: Settings ``tune`` sets itself for each trial, or that name the study; never searched.
RESERVED = ("model", "dataset", "resume", "checkpoint_dir")
#: Study user attribute holding what the study searches (checked on every resume).
STUDY_ATTR = "recbole_moe"


@dataclass
class TuneSpec:
    """Everything a worker needs; checked by :func:`recbole_moe.tuning.prepare`."""

    model: str
    dataset: str
    space: Space
    overrides: dict
    config_files: list | None
    n_trials: int | None
    deadline: float | None
    timeout: float | None
    study_name: str
    storage: str
    storage_given: bool
    out: str
    n_jobs: int
    sampler: str
    sampler_seed: int | None
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    keep_checkpoints: bool
    metric: str
    direction: str
    override_source: str
    space_file: str | None
    plots: bool = True
    checkpoint_root: str = ""
    extra: dict = field(default_factory=dict)

    def storage_label(self) -> str:
        """The storage URL as shown: password hidden, the default SQLite file relative."""
        if not self.storage_given:
            return "sqlite:///" + relative(self.storage[len("sqlite:///") :])
        return display_url(self.storage)

    def fingerprint(self) -> dict:
        """What the study searches; a resumed study must match it."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "space": self.space.describe(),
            "fixed": {k: cli_value(v) for k, v in sorted(self.overrides.items())},
            "config_files": list(self.config_files or []),
            "metric": self.metric,
        }

    def rerun_command(self, params: dict) -> str:
        """The ``recbole-moe`` command that trains one trial's settings on their own."""
        words = ["recbole-moe", "--model", self.model, "--dataset", self.dataset]
        if self.config_files:
            words += ["--config_files", *self.config_files]
        settings = dict(self.overrides)
        settings.update(params)
        words += [f"--{k}={cli_value(v)}" for k, v in settings.items()]
        return " ".join(shlex.quote(w) for w in words)

    def tune_command(self) -> str:
        """The ``recbole-moe tune`` command that continues this study (here, or as one more
        worker on any machine that reaches the storage)."""
        words = [
            "recbole-moe",
            "tune",
            "--model",
            self.model,
            "--dataset",
            self.dataset,
            "--params",
            self.space_file or os.path.join(self.out, "space.hyper"),
        ]
        if self.n_trials is not None:
            words += ["--trials", str(self.n_trials)]
        if self.timeout is not None:
            words += ["--timeout", f"{self.timeout:g}"]
        words += ["--study", self.study_name]
        if self.storage_given:
            words += ["--storage", display_url(self.storage)]
        if self.out != default_out(self.study_name):
            words += ["--out", self.out]
        if self.n_jobs != 1:
            words += ["--n_jobs", str(self.n_jobs)]
        if self.sampler != "tpe":
            words += ["--sampler", self.sampler]
        if self.sampler_seed is not None:
            words += ["--sampler_seed", str(self.sampler_seed)]
        if self.pruner != "median":
            words += ["--pruner", self.pruner]
        if self.pruner_startup_trials != 5:
            words += ["--pruner_startup_trials", str(self.pruner_startup_trials)]
        if self.pruner_warmup_epochs != 0:
            words += ["--pruner_warmup_epochs", str(self.pruner_warmup_epochs)]
        if self.keep_checkpoints:
            words.append("--keep_checkpoints")
        if self.config_files:
            words += ["--config_files", *self.config_files]
        words += [f"--{k}={cli_value(v)}" for k, v in self.overrides.items()]
        return " ".join(shlex.quote(w) for w in words)


def default_out(study_name: str) -> str:
    return os.path.join("tuning", study_name)


def _literal(value: Any) -> str:
    """A Python literal of ``value`` with double-quoted strings (easier to quote in a shell)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def cli_value(value: Any) -> str:
    """A setting as RecBole's command line reads it back (``eval`` of the text, or the text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return _literal(value)
    return repr(value) if isinstance(value, float) else str(value)


def display_url(url: str) -> str:
    """A storage URL with its password hidden."""
    try:  # optional (installed with optuna): imported on first use
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return url


def relative(path: str | None) -> str | None:
    """``path`` relative to the working directory when it lies below it."""
    if not path:
        return path
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(absolute, cwd) if absolute.startswith(cwd + os.sep) else absolute


def require_optuna():
    """The ``optuna`` module, or a :class:`TuneError` saying how to install it."""
    try:  # optional dependency (the tune extra): imported on first use
        import optuna
    except ImportError:
        raise TuneError(
            "recbole-moe tune needs Optuna: pip install optuna (or pip install recbole-moe[tune])"
        ) from None
    return optuna


@contextmanager
def quiet_optuna():
    """Optuna's own log lines (and its experimental-feature warnings) off; tune prints one
    line per trial instead. Restored afterwards."""
    optuna = require_optuna()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
        try:
            yield optuna
        finally:
            optuna.logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


#: For a URL without a driver (``postgresql://``): the drivers to try, SQLAlchemy's default
#: first, as ``(module, drivername)``.
_DRIVERS = {
    "postgresql": (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")),
    "mysql": (("MySQLdb", "mysql+mysqldb"), ("pymysql", "mysql+pymysql")),
    "mariadb": (("MySQLdb", "mariadb+mysqldb"), ("pymysql", "mariadb+pymysql")),
}


def _installed_driver(parsed) -> str:
    """The URL with an installed driver when it names none (``postgresql://`` works with
    psycopg2-binary as well as with SQLAlchemy's default, psycopg 3)."""
    if "+" not in parsed.drivername:
        for module, drivername in _DRIVERS.get(parsed.drivername, ()):
            if importlib.util.find_spec(module) is not None:
                parsed = parsed.set(drivername=drivername)
                break
    return parsed.render_as_string(hide_password=False)


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is what a process sees when another one created the same new tables
    or version row first."""
    text = str(exc).lower()
    return "unique constraint" in text or "already exists" in text or "duplicate" in text


def open_storage(url: str):
    """An Optuna ``RDBStorage`` on ``url``, with heartbeats, connected and its tables made.

    Raises:
        TuneError: a URL that is not a database URL, a missing database driver, or a database
            that cannot be reached.
    """
    optuna = require_optuna()
    # Optional (installed with optuna), imported on first use like optuna.
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = display_url(url)
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
    except Exception:  # noqa: BLE001 - sqlalchemy raises ArgumentError or ValueError
        raise TuneError(
            f"storage '{url}' is not a database URL (e.g. sqlite:///study.db or "
            "postgresql://user:password@host:5432/db)"
        ) from None
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise TuneError(
                f"storage {shown}: an SQLite study needs a file, e.g. sqlite:///study.db"
            )
        folder = os.path.dirname(os.path.abspath(database))
        if not os.path.isdir(folder):
            raise TuneError(f"storage {shown} is unreachable: folder {folder} does not exist")
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif backend in ("postgresql", "mysql", "mariadb"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        url = _installed_driver(parsed)
    callback_key = "heartbeat_stale_trial_callback"

    if callback_key not in inspect.signature(optuna.storages.RDBStorage).parameters:
        callback_key = "failed_trial_callback"  # Optuna < 4.9
    try:
        # Two processes opening a new database at once both create its tables and both insert
        # its version row; the slower one fails with a duplicate row (or an existing table)
        # although the database is then ready: open it again (the other process's reader of a
        # study that is being created made a worker exit with status 2).
        for attempt in range(SCHEMA_RACE_RETRIES + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    storage = optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_INTERVAL_S,
                        grace_period=GRACE_PERIOD_S,
                        **{callback_key: queue_again},
                    )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
                if attempt == SCHEMA_RACE_RETRIES or not _schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        cause = exc.__cause__ or exc
        raise TuneError(
            f"storage {shown}: its database driver is not installed ({cause}); "
            "PostgreSQL needs pip install psycopg2-binary (or psycopg[binary]), "
            "MySQL pip install PyMySQL"
        ) from exc
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise TuneError(f"storage {shown} is unreachable: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. a schema Optuna cannot use
        raise TuneError(
            f"storage {shown} cannot be used: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return storage


def open_study(spec: TuneSpec, storage, log: Callable[[str], None] = print):
    """Create ``spec``'s study, or load it and check that it searches the same thing.

    Raises:
        TuneError: the stored study was made for another model, dataset, space, fixed settings
            or metric.
    """
    with quiet_optuna() as optuna:
        study = optuna.create_study(
            study_name=spec.study_name,
            storage=storage,
            direction=spec.direction,
            load_if_exists=True,
        )
        expected = json.loads(json.dumps(spec.fingerprint()))
        stored = study.user_attrs.get(STUDY_ATTR)
        if stored is None:
            study.set_user_attr(STUDY_ATTR, expected)
        elif stored != expected:
            changed = [key for key in expected if stored.get(key) != expected[key]]
            raise TuneError(
                f"study '{spec.study_name}' in {spec.storage_label()} searches other "
                f"settings ({', '.join(changed)} differ from this command); give another "
                "--study name to start a new study"
            )
        direction = study.direction.name.lower()
        if direction != spec.direction:
            raise TuneError(
                f"study '{spec.study_name}' was created to {direction} "
                f"{spec.metric}, this command would {spec.direction} it"
            )
    return study


# --------------------------------------------------------------------------------------------
# Trials: slots, dead workers, retries
# --------------------------------------------------------------------------------------------


def slot(trial) -> int:
    """The trial a retry stands in for (its own number for a first attempt)."""
    return int(trial.user_attrs.get("retry_of", trial.number))


def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _worker_is_gone(trial) -> bool:
    """A running trial started by a process of this machine that no longer exists (or, in this
    process, that is not running any more: this worker runs one trial at a time)."""
    attrs = trial.user_attrs
    # A worker writes its attributes one at a time: until all three are stored, its trial has
    # only just started and is not judged (reading "pid" without "pid_started" once failed a
    # live worker's trial).
    if attrs.get("machine") != _machine() or not {"pid", "pid_started"} <= attrs.keys():
        return False
    pid = int(attrs["pid"])
    if pid == os.getpid():
        return True
    started = _process_started(pid)
    return started is None or abs(started - float(attrs["pid_started"])) > 1.0


def queue_again(study, trial) -> None:
    """Queue the parameters of a trial whose worker died or was interrupted (at most
    :data:`MAX_RETRIES` times per trial)."""
    origin = slot(trial)
    attempts = sum(1 for t in study.get_trials(deepcopy=False) if slot(t) == origin)
    if attempts > MAX_RETRIES or not trial.params:
        return
    study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": origin})


def reap_dead_trials(study, log: Callable[[str], None]) -> None:
    """Fail the running trials whose worker on this machine is gone, and queue them again."""
    optuna = require_optuna()
    from optuna.trial import TrialState  # optional (the tune extra): imported on first use

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _worker_is_gone(trial):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "worker_gone", True)
            changed = study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if changed:
            log(
                f"[tune] trial {trial.number}: its worker ({trial.user_attrs.get('pid')}) is "
                "gone; failed and queued again"
            )
            queue_again(study, study._storage.get_trial(trial._trial_id))


def finished_slots(study) -> tuple[int, bool]:
    """``(number of trial slots, whether some trial waits in the queue)``."""
    from optuna.trial import TrialState  # optional (the tune extra): imported on first use

    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    return len({slot(t) for t in trials}), waiting


# --------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def format_params(params: dict) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


def _last_checkpoint(folder: str) -> str | None:
    found = glob.glob(os.path.join(folder, "*-last.pth"))
    return max(found, key=os.path.getmtime) if found else None


def _clean_checkpoints(folder: str, keep_best: bool) -> None:
    """A finished trial's resume point goes; its best model too unless it is kept."""
    if not os.path.isdir(folder):
        return
    for path in glob.glob(os.path.join(folder, "*.pth")):
        if path.endswith("-last.pth") or not keep_best:
            os.remove(path)
    if not os.listdir(folder):
        os.rmdir(folder)


class Objective:
    """The objective of one worker: one :func:`recbole_moe.run` per trial."""

    def __init__(self, spec: TuneSpec, study, log: Callable[[str], None]) -> None:
        self.spec = spec
        self.study = study
        self.log = log

    def _continue_from(self, trial, origin: int, resume: str) -> None:
        """A retried trial resumes its slot's checkpoint: note it, and report the validation
        scores of the slot's last attempt again (the pruner sees the whole curve)."""
        trial.set_user_attr("resumed_from", relative(resume))
        earlier = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if slot(t) == origin and t.number < trial.number and t.intermediate_values
        ]
        if earlier:
            for step, value in sorted(earlier[-1].intermediate_values.items()):
                trial.report(value, step)

    def _duplicate(self, trial):
        from optuna.trial import TrialState  # optional (the tune extra): imported on first use

        for other in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.number != trial.number and other.params == trial.params:
                return other
        return None

    def __call__(self, trial):
        optuna = require_optuna()
        spec = self.spec
        trial.set_user_attr("machine", _machine())
        trial.set_user_attr("pid_started", _process_started(os.getpid()) or 0.0)
        trial.set_user_attr("pid", os.getpid())
        params = spec.space.suggest(trial)
        trial.set_user_attr("params", _plain(params))
        number, origin = trial.number, slot(trial)
        duplicate = self._duplicate(trial)
        if duplicate is not None:
            for key in ("valid", "test", "epochs", "n_params", "log_file"):
                if key in duplicate.user_attrs:
                    trial.set_user_attr(key, duplicate.user_attrs[key])
            trial.set_user_attr("duplicate_of", duplicate.number)
            trial.set_user_attr("seconds", 0.0)
            return duplicate.value

        folder = os.path.join(spec.checkpoint_root, f"trial-{origin}")
        config_dict = {**spec.overrides, **params, "checkpoint_dir": folder}
        resume = _last_checkpoint(folder) if origin != number else None
        if resume:
            config_dict["resume"] = resume
            self._continue_from(trial, origin, resume)
        note = (
            f" (retry of trial {origin}{', resumed' if resume else ''})" if origin != number else ""
        )
        self.log(f"[tune] trial {number}{note}: {format_params(params)}")

        epochs: list[int] = []
        report = self._reporter(trial, epochs)
        start = time.perf_counter()
        try:
            result = run(
                spec.model,
                spec.dataset,
                config_dict=config_dict,
                config_file_list=spec.config_files,
                saved=True,
                override_source=spec.override_source,
                callback_fn=report,
            )
        except optuna.TrialPruned:
            trial.set_user_attr("seconds", time.perf_counter() - start)
            trial.set_user_attr("epochs", len(epochs))
            self._discard(folder)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            queue_again(self.study, self.study._storage.get_trial(trial._trial_id))
            raise
        except Exception as exc:
            text = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, RecBoleMoeError) else str(exc)
            )
            trial.set_user_attr("error", " ".join(text.split())[:2000])
            if not isinstance(exc, RecBoleMoeError):
                trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            trial.set_user_attr("seconds", time.perf_counter() - start)
            self._discard(folder)
            raise
        trial.set_user_attr("seconds", time.perf_counter() - start)
        self._record(trial, result, folder)
        return float(result["best_valid_score"])

    def _reporter(self, trial, epochs: list[int]) -> Callable[[int, float], None]:
        """The run's callback after each validation: the score goes to the pruner (each
        epoch noted in ``epochs``); a non-finite or pruned score ends the trial."""
        optuna = require_optuna()
        metric = self.spec.metric

        def report(epoch_idx: int, valid_score: float) -> None:
            value = float(valid_score)
            epochs.append(int(epoch_idx))
            if not math.isfinite(value):
                trial.set_user_attr("pruned_at_epoch", int(epoch_idx))
                raise optuna.TrialPruned(f"validation {metric} is {value} at epoch {epoch_idx}")
            trial.report(value, int(epoch_idx))
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", int(epoch_idx))
                raise optuna.TrialPruned(
                    f"validation {metric} {value:.4f} at epoch "
                    f"{epoch_idx} is worse than the median of earlier trials"
                )

        return report

    def _record(self, trial, result: dict, folder: str) -> None:
        """A finished trial's results on the trial; its checkpoints removed or kept."""
        trial.set_user_attr("valid", _plain(result["best_valid_result"]))
        trial.set_user_attr("test", _plain(result["test_result"]))
        trial.set_user_attr("epochs", int(result.get("epochs_run") or 0))
        trial.set_user_attr("n_params", int(result.get("n_params") or 0))
        trial.set_user_attr("log_file", relative(result.get("log_file")))
        _clean_checkpoints(folder, keep_best=self.spec.keep_checkpoints)
        if self.spec.keep_checkpoints and result.get("model_file"):
            trial.set_user_attr("model_file", relative(result["model_file"]))

    def _discard(self, folder: str) -> None:
        if self.spec.keep_checkpoints:
            _clean_checkpoints(folder, keep_best=True)
        elif os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)


def trial_line(spec: TuneSpec, trial) -> str:
    """One line about a finished trial."""
    state = trial.state.name.lower()
    attrs = trial.user_attrs
    seconds = attrs.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if state == "complete":
        extra = (
            f" (same settings as trial {attrs['duplicate_of']})"
            if "duplicate_of" in attrs
            else f", {attrs.get('epochs', '?')} epochs"
        )
        what = f"complete, {spec.metric} {trial.value:.4f}{took}{extra}"
    elif state == "pruned":
        at = attrs.get("pruned_at_epoch")
        what = f"pruned at epoch {at}{took}" if at is not None else f"pruned{took}"
    else:
        what = (
            "interrupted"
            if attrs.get("interrupted")
            else f"failed: {attrs.get('error', 'no value')}"
        )
    return f"[tune] trial {trial.number} {what}"


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------


def make_sampler(spec: TuneSpec, worker: int, trials_so_far: int = 0):
    """The sampler of one trial. With ``sampler_seed`` its seed depends on the worker and on
    how many trials the study has, so a resumed study or a second worker does not replay the
    draws of the first."""
    optuna = require_optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + 1000 * trials_so_far + worker
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(spec.space.grid(), seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(spec: TuneSpec):
    optuna = require_optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
    )


def work(
    spec: TuneSpec,
    worker: int = 0,
    log: Callable[[str], None] = print,
    after_trial: Callable[[Any], None] | None = None,
) -> int:
    """Run trials of ``spec``'s study until it has ``n_trials`` of them, the deadline passes
    or the grid is exhausted; returns the number of trials this worker ran."""
    with quiet_optuna() as optuna:
        storage = open_storage(spec.storage)
        study = optuna.load_study(
            study_name=spec.study_name,
            storage=storage,
            sampler=make_sampler(spec, worker),
            pruner=make_pruner(spec),
        )
        objective = Objective(spec, study, log)

        def finished(study_, trial) -> None:
            log(trial_line(spec, trial))
            if after_trial is not None:
                after_trial(study_)

        ran = 0
        while True:
            optuna.storages.fail_stale_trials(study)  # other machines' dead workers
            reap_dead_trials(study, log)  # this machine's
            slots, waiting = finished_slots(study)
            if not waiting and spec.n_trials is not None and slots >= spec.n_trials:
                break
            exhausted = getattr(study.sampler, "is_exhausted", None)
            if spec.sampler == "grid" and not waiting and exhausted and exhausted(study):
                break
            if spec.deadline is not None and time.time() >= spec.deadline:
                log("[tune] --timeout reached: this worker starts no new trial")
                break
            study.sampler = make_sampler(spec, worker, len(study.get_trials(deepcopy=False)))
            try:
                study.optimize(
                    objective,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[finished],
                    gc_after_trial=True,
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                log(
                    "[tune] a trial of this worker was failed by another worker (no heartbeat "
                    "seen); its result is dropped"
                )
            ran += 1
    return ran

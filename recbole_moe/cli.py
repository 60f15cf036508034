"""The ``recbole-moe`` command (also ``python run_recbole_moe.py``).

    recbole-moe --model HyMoERec --dataset ml-100k --epochs=5 --n_experts 8
    recbole-moe train --model SASRec --dataset beauty --config_files a.yaml b.yaml
    recbole-moe prepare --dataset beauty --source path/to/Beauty.txt

Options follow RecBole's ``run_recbole.py``: ``--model``, ``--dataset``, ``--config_files``
and any setting as ``--key=value`` (RecBole's form) or ``--key value``, parsed the way RecBole
parses its command line. ``--debug`` (any subcommand) prints the full traceback of an
unexpected error; without it the error is one line and the traceback goes to a log file.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence

from recbole_moe import distributed
from recbole_moe.console import quiet_console
from recbole_moe.environment import package_versions
from recbole_moe.errors import RecBoleMoeError
from recbole_moe.overrides import parse_overrides, split_config_files
from recbole_moe.process_group import wants_distributed
from recbole_moe.quick_start import check_run, resume_file_of_current_run, run
from recbole_moe.quiet import internal_warnings_to_log
from recbole_moe.trainer import TimeBudgetReached
from recbole_moe.version import __version__

#: Subcommands other than ``train``: name -> ``module`` with a ``main(argv) -> int``, or
#: ``module:function`` taking the same arguments.
SUBCOMMANDS = {
    "prepare": "recbole_moe.data.prepare",
    "benchmark": "recbole_moe.benchmark",
    "report": "recbole_moe.benchmark:report_main",
    "merge": "recbole_moe.benchmark:merge_main",
    "recommend": "recbole_moe.recommend",
    "tune": "recbole_moe.tuning",
}


def subcommand(name: str) -> Callable[[list[str]], int]:
    """The entry point of subcommand ``name`` (imported on first use)."""
    module, _, function = SUBCOMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), function or "main")


def unknown_command(word: str) -> str:
    """The error for a first argument that is neither a subcommand nor an option."""
    known = ["train", *SUBCOMMANDS]
    close = difflib.get_close_matches(word, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (
        f"unknown command '{word}'{hint} (commands: {', '.join(known)}; "
        "training needs no command: recbole-moe --model M --dataset D)"
    )


def version_line() -> str:
    """``recbole-moe --version``: this package's version and those it runs on."""
    others = ", ".join(
        f"{k} {v}" for k, v in package_versions().items() if v and k != "recbole-moe"
    )
    return f"recbole-moe {__version__} ({others})"


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-moe",
        allow_abbrev=False,  # a setting such as --data_path_mode is never taken for --dataset
        description="Train and evaluate a recbole-moe or RecBole model. Subcommands: "
        + ", ".join(["train (default)"] + list(SUBCOMMANDS))
        + ". Any --key=value or --key value is a RecBole config override; --debug prints "
        "the traceback of an unexpected error.",
    )
    parser.add_argument("--model", "-m", type=str, required=True, help="model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument(
        "--config_files", type=str, nargs="+", default=None, help="YAML config files"
    )
    return parser


def train_main(argv: Sequence[str]) -> int:
    parser = build_train_parser()
    args, extra = parser.parse_known_args(list(argv))
    try:
        overrides = parse_overrides(extra)
    except ValueError as exc:
        parser.error(str(exc))
    if wants_distributed(overrides):  # --nproc=N, --world_size=W or torchrun
        _check_before_launch(
            args.model, args.dataset, overrides, split_config_files(args.config_files)
        )
        result = distributed.run_from_settings(
            args.model, args.dataset, overrides, split_config_files(args.config_files)
        )
        if result is not None:  # rank 0 reports
            print(format_result(result))
        return 0
    result = run(
        args.model,
        args.dataset,
        config_dict=overrides,
        config_file_list=split_config_files(args.config_files),
        override_source="the command line",
    )
    print(format_result(result))
    return 0


def _check_before_launch(
    model: str, dataset: str, overrides: dict, config_files: list[str] | None
) -> None:
    """The checks of a run (settings, data files, resume checkpoint) once, in this process,
    before any worker process starts."""
    settings = {
        k: v
        for k, v in overrides.items()
        if k not in ("nproc", "world_size", "ip", "port", "offset")
    }
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config sets it from gpu_id
    try:
        check_run(
            model,
            dataset,
            config_dict=settings,
            config_file_list=config_files,
            override_source="the command line",
        )
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


def format_result(result: dict) -> str:
    """Human-readable summary of :func:`recbole_moe.run`'s result."""

    def fmt(metrics: dict) -> str:
        return "  ".join(f"{k}: {v:.4f}" for k, v in metrics.items())

    lines = [
        f"best valid: {fmt(result['best_valid_result'])}",
        f"test      : {fmt(result['test_result'])}",
    ]
    if result.get("log_file"):
        lines.append(f"log       : {result['log_file']}")
    if result.get("model_file"):
        lines.append(f"checkpoint: {result['model_file']}")
    return "\n".join(lines)


def _what(argv: Sequence[str]) -> str:
    """What the command was doing, for the one-line report of an unexpected error."""
    if argv and argv[0] in SUBCOMMANDS:
        return f"recbole-moe {argv[0]}"
    model = None
    for index, arg in enumerate(argv):
        if arg in ("--model", "-m") and index + 1 < len(argv):
            model = argv[index + 1]
        elif arg.startswith("--model="):
            model = arg.split("=", 1)[1]
    return f"training {model}" if model else "training"


def _run_log_file() -> str | None:
    """The log file of the run in progress (None before one is opened or once discarded)."""
    quick_start = sys.modules.get("recbole_moe.quick_start")
    for handler in getattr(quick_start, "_RUN_HANDLERS", []):
        path = getattr(handler, "baseFilename", None)
        if path and os.path.isfile(path):
            return path
    return None


def _write_traceback(text: str) -> str:
    """Append ``text`` to the run's log file, or write a new error log; returns its path."""
    path = _run_log_file()
    if path is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(tempfile.gettempdir(), f"recbole-moe-error-{stamp}-{os.getpid()}.log")
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
    return path


def report_unexpected(exc: BaseException, argv: Sequence[str], debug: bool) -> int:
    """The last line of defence: one line on the terminal, the traceback in a log file."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if debug:
        sys.stderr.write(text)
    try:
        where = f"the full traceback is in {_write_traceback(text)}"
    except OSError as write_error:
        where = f"the traceback could not be written ({write_error.strerror})"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    reason = f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
    hint = "" if debug else "; run again with --debug to print it"
    print(
        f"recbole-moe: error: {_what(argv)} failed with {reason} ({where}{hint})", file=sys.stderr
    )
    return 1


def _resume_hint(argv: Sequence[str]) -> str:
    """How to continue an interrupted training run: the same command with ``--resume`` (empty
    when no resume checkpoint has been written yet, or for a subcommand)."""
    if argv and argv[0] in SUBCOMMANDS:
        return ""
    path = resume_file_of_current_run()
    if path is None:
        return ""
    args, skip = [], False
    for arg in argv:  # the command without its own --resume (either form)
        if not skip and not arg.startswith("--resume"):
            args.append(arg)
        skip = arg == "--resume"
    return f"; continue with: recbole-moe {shlex.join(args)} --resume={shlex.quote(path)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 2 bad input, 1 unexpected error,
    3 stopped by ``time_budget_minutes`` and resumable, 130 interrupted). No traceback
    reaches the terminal unless ``--debug`` is given."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, verbose = "--debug" in argv, "--verbose" in argv
    argv = [arg for arg in argv if arg not in ("--debug", "--verbose")]
    run_lines = not (argv and argv[0] == "tune")  # tune prints a line per trial instead
    with internal_warnings_to_log(), quiet_console(verbose=verbose, run_lines=run_lines):
        try:
            if argv and argv[0] in SUBCOMMANDS:
                return int(subcommand(argv[0])(argv[1:]) or 0)
            if argv and argv[0] == "train":
                argv = argv[1:]
            elif argv and argv[0] == "--version":
                print(version_line())
                return 0
            elif argv and not argv[0].startswith("-"):
                print(f"recbole-moe: error: {unknown_command(argv[0])}", file=sys.stderr)
                return 2
            return train_main(argv)
        except TimeBudgetReached as exc:
            print(f"recbole-moe: {exc}", file=sys.stderr)
            return 3
        except RecBoleMoeError as exc:
            if debug:
                traceback.print_exc()
            print(f"recbole-moe: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"recbole-moe: interrupted{_resume_hint(argv)}", file=sys.stderr)
            return 130
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                return int(exc.code or 0)
            print(exc.code, file=sys.stderr)
            return 2
        except Exception as exc:
            return report_unexpected(exc, argv, debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

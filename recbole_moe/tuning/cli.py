"""``recbole-moe tune``: hyper-parameter search with Optuna.

    recbole-moe tune --model HyMoERec --dataset beauty --params space.hyper --trials 30
    recbole-moe tune --model HyMoERec --dataset beauty --params space.hyper --trials 30 \\
        --storage postgresql://tune:secret@db-host/tune --n_jobs 2   # on every machine

Any ``--key=value`` is a fixed RecBole setting of every trial, as for ``recbole-moe train``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recbole_moe.errors import RecBoleMoeError
from recbole_moe.overrides import parse_overrides, split_config_files
from recbole_moe.tuning.api import execute, format_summary, prepare
from recbole_moe.tuning.space import TuneError
from recbole_moe.tuning.study import PRUNERS, SAMPLERS


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``TuneError``) instead of usage + exit."""

    def error(self, message: str):
        raise TuneError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recbole-moe tune",
        allow_abbrev=False,
        description="Search hyper-parameters with Optuna: every trial is an ordinary "
        "recbole-moe run with the trial's settings. The study is stored in "
        "--storage (default: an SQLite file in --out), so rerunning the command "
        "continues it and the same command on several machines shares it. Any "
        "--key=value is a fixed setting of every trial.",
    )
    parser.add_argument("--model", "-m", required=True, help="model name")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument(
        "--params",
        required=True,
        metavar="FILE",
        help="search space: RecBole's hyper-parameter file format "
        "('name choice [..]', 'name loguniform a b', 'name uniform a b', "
        "'name quniform a b q'), or YAML (.yaml/.yml)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="trials of the whole study, across reruns and workers (default "
        "20; every combination with --sampler grid)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="start no new trial after S seconds",
    )
    parser.add_argument(
        "--study", default=None, metavar="NAME", help="study name (default: <model>-<dataset>)"
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL of the study database, e.g. "
        "postgresql://user:password@host/db (default: "
        "sqlite:///<out>/study.db)",
    )
    parser.add_argument(
        "--n_jobs",
        type=int,
        default=1,
        metavar="K",
        help="worker processes on this machine (default 1)",
    )
    _add_search_arguments(parser)
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="results folder (default: tuning/<study>)"
    )
    parser.add_argument("--config_files", nargs="+", default=None, help="YAML config files")
    parser.add_argument(
        "--keep_checkpoints", action="store_true", help="keep every trial's best-model checkpoint"
    )
    parser.add_argument("--no_plots", action="store_true", help="write no PNG plots")
    return parser


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampler's and the pruner's options."""
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default="tpe", help="tpe (default), random or grid"
    )
    parser.add_argument(
        "--sampler_seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of the sampler (combined with the worker and the trial "
        "count, so reruns and workers draw differently)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default="median",
        help="median (default): stop a trial whose validation score after an "
        "epoch is worse than the median of earlier trials; none",
    )
    parser.add_argument(
        "--pruner_startup_trials",
        type=int,
        default=5,
        metavar="N",
        help="complete trials before the median pruner prunes (default 5)",
    )
    parser.add_argument(
        "--pruner_warmup_epochs",
        type=int,
        default=0,
        metavar="E",
        help="epochs of a trial before it may be pruned (default 0)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``recbole-moe tune``; returns the exit code (0 done, 2 bad input,
    1 a worker failed, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = build_parser().parse_known_args(argv)
        try:
            overrides = parse_overrides(extra)
        except ValueError as exc:
            raise TuneError(str(exc)) from exc
        spec = prepare(
            args.model,
            args.dataset,
            args.params,
            trials=args.trials,
            timeout=args.timeout,
            study=args.study,
            storage=args.storage,
            n_jobs=args.n_jobs,
            config_dict=overrides,
            config_file_list=split_config_files(args.config_files),
            sampler=args.sampler,
            sampler_seed=args.sampler_seed,
            pruner=args.pruner,
            pruner_startup_trials=args.pruner_startup_trials,
            pruner_warmup_epochs=args.pruner_warmup_epochs,
            out=args.out,
            keep_checkpoints=args.keep_checkpoints,
            plots=not args.no_plots,
            override_source="the tune command line",
        )
        info = execute(spec, log=lambda line: print(line, flush=True))
    except RecBoleMoeError as exc:
        print(f"recbole-moe tune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "recbole-moe tune: interrupted; rerun the same command to continue the study",
            file=sys.stderr,
        )
        return 130
    print(format_summary(info), flush=True)
    failed = [code for code in info.get("worker_exit_codes", []) if code]
    if failed:
        print(f"recbole-moe tune: {len(failed)} worker(s) exited with an error", file=sys.stderr)
        return 1
    return 0

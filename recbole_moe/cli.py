"""The ``recbole-moe`` command (also ``python run_recbole_moe.py``).

    recbole-moe --model HyMoERec --dataset ml-100k --epochs=5 --n_experts=8
    recbole-moe train --model SASRec --dataset beauty --config_files a.yaml b.yaml
    recbole-moe prepare --dataset beauty --source ../shared/datasets/beauty/Beauty.txt

Options follow RecBole's ``run_recbole.py``: ``--model``, ``--dataset``, ``--config_files``
and any ``--key=value`` override, parsed the way RecBole parses its command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Optional, Sequence

#: Subcommands other than ``train``: name -> module with a ``main(argv) -> int``.
SUBCOMMANDS = {
    "prepare": "recbole_moe.data.prepare",
    "benchmark": "recbole_moe.benchmark",
    "recommend": "recbole_moe.recommend",
}


def parse_overrides(extra: Sequence[str]) -> dict:
    """``["--epochs=2", "--topk=[5,10]"]`` -> ``{"epochs": "2", "topk": "[5,10]"}``.

    Values stay strings; RecBole's ``Config`` converts them exactly as it converts its own
    command line (numbers, lists, dicts, booleans).

    Raises:
        SystemExit: (through argparse-style error) for an argument not of the form --key=value.
    """
    overrides: dict = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(
                f"Unrecognised argument '{arg}': overrides must look like --key=value "
                "(e.g. --epochs=10 or --topk=[5,10])."
            )
        key, value = arg[2:].split("=", 1)
        if not key:
            raise ValueError(f"Unrecognised argument '{arg}': the key is empty.")
        if key in overrides and overrides[key] != value:
            raise ValueError(f"Override --{key} given twice with different values.")
        overrides[key] = value
    return overrides


def _split_files(values: Optional[Sequence[str]]) -> Optional[list[str]]:
    """Accept ``--config_files a.yaml b.yaml`` and RecBole's ``--config_files "a.yaml b.yaml"``."""
    if not values:
        return None
    return [f for value in values for f in value.strip().split(" ") if f]


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-moe",
        description="Train and evaluate a recbole-moe or RecBole model. Subcommands: "
        + ", ".join(["train (default)"] + list(SUBCOMMANDS))
        + ". Any --key=value is a RecBole config override.",
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
    from recbole_moe import distributed

    if distributed.wants_distributed(overrides):  # --nproc=N, --world_size=W or torchrun
        result = distributed.run_from_settings(
            args.model, args.dataset, overrides, _split_files(args.config_files)
        )
        if result is not None:  # rank 0 reports
            print(format_result(result))
        return 0
    from recbole_moe.quick_start import run

    result = run(
        args.model,
        args.dataset,
        config_dict=overrides,
        config_file_list=_split_files(args.config_files),
        override_source="the command line",
    )
    print(format_result(result))
    return 0


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from recbole_moe.errors import RecBoleMoeError

    try:
        if argv and argv[0] in SUBCOMMANDS:
            module = importlib.import_module(SUBCOMMANDS[argv[0]])
            return int(module.main(argv[1:]) or 0)
        if argv and argv[0] == "train":
            argv = argv[1:]
        return train_main(argv)
    except RecBoleMoeError as exc:
        print(f"recbole-moe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recbole-moe: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The speed scripts under ``benchmarks/`` and the harness they share
(``recbole_moe.benchmark.timing``)."""

from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

from recbole_moe.benchmark import timing
from recbole_moe.testing import TINY_CONFIG

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO_ROOT / "benchmarks").glob("*.py"))


def test_scripts_are_found():
    assert len(SCRIPTS) > 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_imports_no_other_script(script):
    """A script imports the package's harness, never a sibling script (which only resolves
    when Python runs from ``benchmarks/``)."""
    siblings = {path.stem for path in SCRIPTS}
    imported = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & siblings, f"{script.name} imports {sorted(imported & siblings)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_help_runs_from_another_folder(script, tmp_path, monkeypatch, capsys):
    """``python <path>/x.py --help`` from an unrelated folder: the script's folder is not on
    ``sys.path`` (``runpy.run_path`` does not add it), the working directory is a temporary
    one (conftest), and the usage names the script."""
    assert os.getcwd() == str(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script.name}")


def test_script_launches_from_another_folder(tmp_path):
    """One real launch by absolute path from a temporary folder (a script that used to
    import a sibling's builder)."""
    script = REPO_ROOT / "benchmarks" / "sequence_padding.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: sequence_padding.py")
    assert "--chunks" in out.stdout and "--output" in out.stdout


class FakeClock:
    """``perf_counter`` that only the work moves: every call's cost is known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_time_alternatives_interleaves_and_reports_ratios_from_the_same_run(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    calls = []
    cost = {"fast": 1.0, "slow": 3.0}

    def switch(name: str):
        def apply() -> None:
            calls.append(f"switch {name}")
            clock.now += 100.0  # a switch is not timed

        return apply

    def work(name: str) -> None:
        calls.append(name)
        warm_up = 10.0 if calls.count(name) == 1 else 0.0  # round 0 pays a warm-up
        clock.now += cost[name] + warm_up

    alternatives = {"fast": switch("fast"), "slow": switch("slow")}
    seconds = timing.time_alternatives(alternatives, work, rounds=3)

    assert calls == ["switch fast", "fast", "switch slow", "slow"] * 3
    assert seconds == {"fast": [11.0, 1.0, 1.0], "slow": [13.0, 3.0, 3.0]}
    median = timing.medians(seconds, skip=1)
    assert median == {"fast": 1.0, "slow": 3.0}
    assert timing.speedups(median) == {"fast": 1.0, "slow": pytest.approx(1 / 3)}
    assert timing.speedups(median, "slow") == {"fast": 3.0, "slow": 1.0}
    # without skipping the warm-up round, the medians of the same run
    assert timing.medians(seconds) == {"fast": 1.0, "slow": 3.0}
    assert timing.medians({"one": [5.0]}, skip=1) == {"one": 5.0}


def test_time_interleaved_runs_before_untimed_and_in_order(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    calls = []

    def step(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            clock.now += seconds

        return run

    work = {"a": step("a", 2.0), "b": step("b", 5.0), "c": step("c", 1.0)}
    seconds = timing.time_interleaved(work, rounds=2, before={"b": step("before b", 50.0)})
    assert calls == ["a", "before b", "b", "c"] * 2
    assert seconds == {"a": [2.0, 2.0], "b": [5.0, 5.0], "c": [1.0, 1.0]}


def test_timed_steps_spreads_over_the_epoch_after_the_warm_up():
    assert timing.timed_steps(5, 8) == set(range(5))
    assert timing.timed_steps(11, 3) == {1, 5, 10}
    assert 0 not in timing.timed_steps(100, 10)


def test_build_trainer_applies_the_shared_settings_then_the_overrides(synth):
    args = types.SimpleNamespace(data_path=synth.data_path, batch=48, seed=7)
    synthetic = {  # what the synthetic dataset needs (its columns, a leave-one-out split)
        key: TINY_CONFIG[key] for key in ("load_col", "eval_args", "user_inter_num_interval")
    }
    trainer, train_data, valid_data = timing.build_trainer(
        "SASRec", synth.dataset, args, n_layers=1, MAX_ITEM_LIST_LENGTH=12, **synthetic
    )
    config = trainer.config
    assert config["train_objective"] == "sequence"
    assert (config["hidden_size"], config["n_layers"]) == (64, 1)
    assert (config["train_batch_size"], config["seed"]) == (48, 7)
    assert trainer.model.hidden_size == 64 and trainer.model.n_layers == 1
    batch = next(iter(train_data))
    assert batch["item_id_list"].shape[0] <= 48 and batch["item_id_list"].shape[1] <= 12
    assert len(valid_data) > 0

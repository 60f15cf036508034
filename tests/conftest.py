"""Shared fixtures: a tiny synthetic sequential dataset and fast settings."""

from __future__ import annotations

import os
import subprocess
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import recbole_moe  # noqa: F401  (applies the compatibility patches)
from recbole_moe.testing import make_synthetic_dataset
from recbole_moe.testing import tiny_config as _tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> types.SimpleNamespace:
    """A synthetic dataset with a planted next-item pattern: ``.data_path``, ``.dataset``."""
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(str(root), name="synth")
    return types.SimpleNamespace(data_path=str(root), dataset="synth", n_items=80)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The test models are tiny: one intra-op thread avoids thread start-up and contention
    costs that make them several times slower on a 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """RecBole writes ``log/``, ``log_tensorboard/`` and ``saved/`` under the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_config(synth, tmp_path) -> dict:
    """Fast settings on the synthetic dataset, checkpoints in the test's temp dir."""
    return _tiny_config(synth.data_path, checkpoint_dir=str(tmp_path / "saved"))


@pytest.fixture
def run_tiny_cli(synth) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``program`` (a command-line entry point, as a list) in a subprocess: one epoch of a
    small SASRec on the synthetic data, one torch thread, output captured.

    ``separate=True`` passes every setting as ``--key value`` instead of ``--key=value``.
    """
    settings = {
        "data_path": synth.data_path,
        "epochs": "1",
        "MAX_ITEM_LIST_LENGTH": "20",
        "hidden_size": "16",
        "inner_size": "32",
        "show_progress": "False",
        "load_col": "{'inter': ['user_id', 'item_id', 'timestamp']}",
    }

    def run(program: list[str], cwd, separate: bool = False) -> subprocess.CompletedProcess:
        args = ["--model", "SASRec", "--dataset", "synth"]
        for key, value in settings.items():
            args += [f"--{key}", value] if separate else [f"--{key}={value}"]
        return subprocess.run(
            program + args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )

    return run

"""A non-editable install into a fresh virtual environment works from another directory."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory) -> Path:
    """A venv that sees the already installed dependencies but has its own recbole-moe wheel."""
    root = tmp_path_factory.mktemp("install")
    wheel_dir = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = next(wheel_dir.glob("recbole_moe-*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return env_dir


def test_property_files_come_from_the_installed_package(installed_venv, tmp_path):
    code = (
        "import os, recbole_moe.config as c; "
        "print(c.__file__); print(c.model_property_file('HyMoERec')); "
        "print(os.path.isfile(c.model_property_file('HyMoERec')) "
        "and os.path.isfile(c.dataset_property_file('beauty')))"
    )
    out = subprocess.run(
        [str(installed_venv / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split("\n")
    assert out[0].startswith(str(installed_venv)), out[0]
    assert out[1].startswith(str(installed_venv)), out[1]
    assert out[2] == "True"


def test_console_script_trains_from_another_directory(installed_venv, run_tiny_cli, tmp_path):
    proc = run_tiny_cli([str(installed_venv / "bin" / "recbole-moe")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test      :" in proc.stdout and "ndcg@10:" in proc.stdout
    assert (tmp_path / "log").is_dir()  # logs land in the working directory, not the package

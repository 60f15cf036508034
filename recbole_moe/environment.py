"""The environment a run used: package versions, hardware, and peak memory of a block."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import threading
from importlib import metadata
from typing import Any

import psutil
import torch

from recbole_moe.version import __version__


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that decide the numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("recbole-moe", "recbole", "torch", "numpy", "pandas", "scipy", "mamba-ssm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["recbole-moe"] is None:
        versions["recbole-moe"] = __version__
    return versions


def code_version() -> str | None:
    """The git commit of the recbole-moe checkout running this code (``+dirty`` when tracked
    files differ from it), or ``None`` for an installed copy outside a checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        status = subprocess.run(
            # Benchmark outputs (runs.jsonl, plan.json) are tracked files a campaign rewrites
            # while it runs; they are results, not code, so they do not make the code dirty.
            ["git", "-C", root, "status", "--porcelain", "-uno", "--", ".", ":!benchmarks/results"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | None = None) -> dict[str, Any]:
    """The machine a run used: CPU model and cores, torch threads, memory, GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "device": device,
        "gpu": None,
    }
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def describe_hardware(info: dict) -> str:
    """``"2-core CPU (Intel Xeon ...), 1 torch thread"`` or the GPU name."""
    cores = info.get("cpu_affinity") or info.get("cpu_count")
    text = f"{cores}-core CPU ({info.get('cpu')}), {info.get('torch_threads')} torch thread(s)"
    if info.get("gpu") and str(info.get("device", "")).startswith("cuda"):
        text = f"{info['gpu']} GPU; " + text
    return text


def describe_machine() -> str:
    """One line naming this machine, its torch threads, torch and the code's commit, for the
    header of a benchmark script's output."""
    return f"{describe_hardware(hardware())}; torch {torch.__version__}; commit {code_version()}"


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.start = self.peak = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

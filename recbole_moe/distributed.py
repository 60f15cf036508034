"""Data-parallel training with PyTorch's DistributedDataParallel, on CPU (gloo) and GPU (nccl):
the launchers.

RecBole 1.2.1 already trains data-parallel: each process sets ``local_rank``, its ``Config``
joins a process group (:func:`recbole_moe.process_group.init_device`), the dataloaders shard
every split with a ``DistributedSampler`` (a rank gets ``train_batch_size / world_size``
sequences per step) and the trainer wraps the model in ``DistributedDataParallel``
(:class:`recbole_moe.trainer.RecBoleMoeTrainer` adds exact evaluation, averaged losses and
summed MoE statistics over ranks, and rank-0 tensorboard). This module starts the workers,
without ``recbole.quick_start`` (which imports ray): :func:`run_distributed` spawns ``nproc``
workers on this machine (several machines with ``world_size``/``ip``/``port``/``offset``),
:func:`run_torchrun` runs one worker under ``torchrun``, :func:`run_from_settings` picks one of
the two from command-line settings.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recbole_moe.process_group import (
    TORCHRUN_VARS,
    DistributedError,
    check_port_free,
    free_port,
    int_setting,
    torchrun_env,
)
from recbole_moe.quick_start import run


def _run_worker(
    local_rank: int,
    model: Any,
    dataset: str,
    config_dict: dict,
    config_file_list: list | None,
    saved: bool,
    queue,
    nproc: int,
) -> None:
    """One spawned worker: ``recbole_moe.run`` with ``local_rank`` set; rank 0 reports back."""
    if "OMP_NUM_THREADS" not in os.environ:  # share the CPU cores instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    config_dict = dict(config_dict, local_rank=local_rank)
    try:
        result = run(
            model, dataset, config_dict=config_dict, config_file_list=config_file_list, saved=saved
        )
        if local_rank == 0:  # global rank 0 on the machine that hosts it
            queue.put(_picklable(result))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _picklable(result: dict) -> dict:
    try:
        pickle.dumps(result)
        return result
    except Exception:
        return {key: value for key, value in result.items() if key != "config"}


def launch(fn: Callable, nproc: int, args: tuple = (), queue=None, poll: float = 0.2) -> list:
    """Spawn ``fn(local_rank, *args)`` in ``nproc`` processes and wait for all of them.

    ``queue`` (a spawn-context ``SimpleQueue`` passed in ``args``) is drained while waiting, so
    a worker never blocks on a full pipe; returns what the workers put there. A worker that
    raises or dies ends the run: the others are terminated and a :class:`DistributedError`
    names the worker and its error.
    """
    received: list = []

    def drain() -> None:
        while queue is not None and not queue.empty():
            received.append(queue.get())

    context = mp.start_processes(fn, args=args, nprocs=nproc, join=False, start_method="spawn")
    try:
        while not context.join(timeout=poll):
            drain()
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise DistributedError(
            f"worker {exc.error_index} failed, so the run was stopped: "
            f"{lines[-1] if lines else exc}"
        ) from exc
    except mp.ProcessExitedException as exc:
        how = f"signal {exc.signal_name}" if exc.signal_name else f"exit code {exc.exit_code}"
        raise DistributedError(
            f"worker {exc.error_index} died ({how}), so the run was stopped"
        ) from exc
    except BaseException:  # e.g. Ctrl-C in the launcher: take the workers down too
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        raise
    drain()
    return received


def run_distributed(
    model: Any,
    dataset: str,
    config_dict: dict | None = None,
    config_file_list: list[str] | None = None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int | None = None,
    ip: str = "localhost",
    port: int | None = None,
    offset: int = 0,
) -> dict | None:
    """Train data-parallel in ``nproc`` processes on this machine, like RecBole's ``--nproc``.

    Several machines: run this on each with the same ``world_size`` (total processes), ``ip``
    and ``port`` (rank 0's machine) and ``offset`` = the global rank of this machine's first
    worker. Without ``port`` a single-machine run picks a free one.

    Returns:
        rank 0's :func:`recbole_moe.run` result on the machine running rank 0 (``None`` on the
        others; there the first local worker's result is returned).

    Raises:
        DistributedError: port in use, a worker failed or died.
    """
    world_size = nproc if world_size is None or world_size <= 0 else int(world_size)
    if nproc < 1 or offset < 0 or offset + nproc > world_size:
        raise DistributedError(
            f"need 1 <= nproc and offset + nproc <= world_size, got nproc={nproc}, "
            f"offset={offset}, world_size={world_size}"
        )
    if port is None:
        if world_size != nproc:
            raise DistributedError("a run over several machines needs --port (and --ip)")
        port = free_port(ip)
    elif offset == 0:
        check_port_free(ip, int(port))
    config_dict = dict(config_dict or {})
    config_dict.update(nproc=nproc, world_size=world_size, ip=ip, port=int(port), offset=offset)
    queue = mp.get_context("spawn").SimpleQueue()
    results = launch(
        _run_worker,
        nproc,
        (model, dataset, config_dict, config_file_list, saved, queue, nproc),
        queue,
    )
    return results[0] if results else None


def run_torchrun(
    model: Any,
    dataset: str,
    config_dict: dict | None = None,
    config_file_list: list[str] | None = None,
    saved: bool = True,
) -> dict:
    """This process's part of a ``torchrun`` launch (reads ``RANK``, ``LOCAL_RANK``, ...).

    Returns:
        :func:`recbole_moe.run`'s result on global rank 0, ``None`` on the other ranks.
    """
    env = torchrun_env()
    if env is None:
        raise DistributedError(f"not launched by torchrun: set {', '.join(TORCHRUN_VARS)}")
    config_dict = dict(config_dict or {})
    config_dict.update(
        local_rank=env["local_rank"],
        nproc=env["local_world_size"],
        world_size=env["world_size"],
        offset=env["rank"] - env["local_rank"],
        ip=env["master_addr"],
        port=env["master_port"],
        dist_init_method="env://",
    )
    try:
        result = run(
            model, dataset, config_dict=config_dict, config_file_list=config_file_list, saved=saved
        )
        return result if env["rank"] == 0 else None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_from_settings(
    model: Any, dataset: str, settings: dict, config_file_list: list[str] | None = None
) -> dict | None:
    """The command line's distributed path: torchrun when its variables are set, else spawn.

    ``settings`` are the ``--key=value`` overrides; ``nproc``, ``world_size``, ``ip``, ``port``
    and ``offset`` choose the launch, the rest configure the run.
    """
    settings = dict(settings)
    if torchrun_env() is not None:
        return run_torchrun(model, dataset, settings, config_file_list)
    nproc = int_setting(settings, "nproc", 1) or 1
    world_size = int_setting(settings, "world_size", -1)
    port = int_setting(settings, "port", None)
    offset = int_setting(settings, "offset", 0) or 0
    ip = str(settings.get("ip") or "localhost")
    for key in ("nproc", "world_size", "ip", "port", "offset"):
        settings.pop(key, None)
    return run_distributed(
        model,
        dataset,
        settings,
        config_file_list,
        nproc=nproc,
        world_size=world_size,
        ip=ip,
        port=port,
        offset=offset,
    )


__all__ = [
    "DistributedError",
    "launch",
    "run_distributed",
    "run_from_settings",
    "run_torchrun",
]

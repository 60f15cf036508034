"""Process-group setup for data-parallel runs: what a worker's ``Config`` needs to join its group.

:func:`init_device` is the body of ``recbole_moe.Config._init_device`` for a process with
``local_rank`` set: backend ``dist_backend: auto | nccl | gloo`` (``auto``: nccl on CUDA, gloo on
CPU) and a timeout ``dist_timeout`` (seconds) on joining the group, where RecBole hard-codes nccl
and CUDA. Also here: torchrun's environment, whether settings ask for a distributed run, ports,
:func:`is_main_process` and :func:`as_single_process` (reloading a data-parallel checkpoint).
Launching workers is :mod:`recbole_moe.distributed`'s job.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket

import torch
import torch.distributed as dist

from recbole_moe.errors import RecBoleMoeError

BACKENDS = ("auto", "nccl", "gloo")
#: Seconds a worker waits to join the process group (and, with gloo, for any collective).
DEFAULT_TIMEOUT = 600.0
#: torchrun's environment variables.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RecBoleMoeError):
    """A distributed run that cannot start or lost a worker."""


def torchrun_env(environ: dict | None = None) -> dict | None:
    """``{rank, local_rank, world_size, master_addr, master_port}`` when launched by torchrun."""
    env = os.environ if environ is None else environ
    if not all(name in env for name in TORCHRUN_VARS):
        return None
    return {
        "rank": int(env["RANK"]),
        "local_rank": int(env["LOCAL_RANK"]),
        "world_size": int(env["WORLD_SIZE"]),
        "local_world_size": int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
        "master_addr": env["MASTER_ADDR"],
        "master_port": int(env["MASTER_PORT"]),
    }


def int_setting(settings: dict, key: str, default: int | None) -> int | None:
    """``settings[key]`` as an integer (``default`` when unset, empty or "None")."""
    value = settings.get(key)
    if value is None or value == "" or value == "None":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DistributedError(f"--{key} must be an integer, got {value!r}") from exc


def wants_distributed(settings: dict, environ: dict | None = None) -> bool:
    """True for ``nproc > 1``, an explicit ``world_size``, or a torchrun launch."""
    return (
        (int_setting(settings, "nproc", 1) or 1) > 1
        or (int_setting(settings, "world_size", -1) or -1) > 0
        or torchrun_env(environ) is not None
    )


def resolve_backend(name: str | None) -> str:
    """``auto`` -> ``nccl`` when CUDA is available, else ``gloo``; validates the name."""
    name = (name or "auto").lower()
    if name not in BACKENDS:
        raise DistributedError(f"dist_backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if name == "nccl" and not torch.cuda.is_available():
        raise DistributedError("dist_backend nccl needs CUDA GPUs; use gloo (or auto) on CPU")
    return name


def check_port_free(ip: str, port: int) -> None:
    """Raise :class:`DistributedError` when ``ip:port`` is already taken on this machine.

    Only checked where this machine hosts the rendezvous (rank 0); an address that is not
    this machine's is left to ``init_process_group``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DistributedError(
                    f"port {port} on {ip} is already in use, so the workers cannot meet there; "
                    f"stop what holds it or choose another with --port=PORT"
                ) from exc
            # EADDRNOTAVAIL etc.: not an address of this machine, nothing to check here.


def free_port(ip: str = "localhost") -> int:
    """A port that is free on ``ip`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


def init_device(config) -> None:
    """``Config._init_device`` for a process with ``local_rank`` set: join the group, pick the
    device.

    Global rank = ``local_rank + offset``. gloo runs on the CPU; nccl on ``cuda:local_rank``
    (with ``gpu_id`` listing at least ``nproc`` GPUs it becomes ``CUDA_VISIBLE_DEVICES``, as in
    RecBole). ``dist_init_method`` defaults to ``tcp://ip:port``; torchrun uses ``env://``.
    Ranks other than 0 log errors only and show no progress bars.

    Raises:
        DistributedError: bad backend, or the group could not be joined within ``dist_timeout``.
    """
    cfg = config.final_config_dict
    gpu_id = cfg.get("gpu_id")
    gpu_id = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    cfg["gpu_id"] = gpu_id
    local_rank = int(cfg["local_rank"])
    nproc = int_setting(cfg, "nproc", 1) or 1
    world_size = int_setting(cfg, "world_size", -1)
    world_size = nproc if world_size is None or world_size <= 0 else world_size
    offset = int_setting(cfg, "offset", 0) or 0
    rank = local_rank + offset
    requested = str(cfg.get("dist_backend") or "auto").lower()
    if (
        requested in ("auto", "nccl")
        and gpu_id
        and len(gpu_id.split(",")) >= nproc
        and (cfg.get("dist_init_method") != "env://")
    ):
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id  # before CUDA is first queried, as RecBole
    backend = resolve_backend(requested)
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    init_method = (
        cfg.get("dist_init_method") or f"tcp://{cfg.get('ip') or 'localhost'}:{cfg.get('port')}"
    )
    timeout = float(cfg.get("dist_timeout") or DEFAULT_TIMEOUT)
    if dist.is_initialized():  # a second Config in the same worker reuses the group
        if dist.get_rank() != rank or dist.get_world_size() != world_size:
            raise DistributedError(
                f"this process is already rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"not rank {rank} of {world_size}"
            )
    else:
        try:
            dist.init_process_group(
                backend,
                init_method=init_method,
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )
        except Exception as exc:
            raise DistributedError(
                f"rank {rank} of {world_size} could not join the process group at {init_method} "
                f"({backend}, timeout {timeout:g}s): {type(exc).__name__}: {exc}"
            ) from exc
    # Every rank writes into checkpoint_dir (RecBole's trainer, saved datasets and dataloaders),
    # each through RecBole's check-then-create ``ensure_dir``, which fails in the slower of two
    # ranks; created here once, race-free, it already exists for all of them.
    if cfg.get("checkpoint_dir"):
        os.makedirs(cfg["checkpoint_dir"], exist_ok=True)
    cfg.update(
        device=device,
        single_spec=False,
        local_rank=local_rank,
        nproc=nproc,
        world_size=world_size,
        offset=offset,
        dist_backend=backend,
    )
    if rank != 0:
        cfg.update(state="error", show_progress=False, verbose=False)


def as_single_process(config) -> None:
    """Turn the config saved by a distributed run back into a single-process one (for reloading
    a checkpoint: RecBole's dataloaders shard whenever ``single_spec`` is false)."""
    cfg = config.final_config_dict
    cfg.update(single_spec=True, local_rank=0)
    for key in ("nproc", "world_size", "offset", "dist_init_method"):
        cfg.pop(key, None)


def is_main_process() -> bool:
    """True outside a process group and on global rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT",
    "TORCHRUN_VARS",
    "DistributedError",
    "as_single_process",
    "check_port_free",
    "free_port",
    "init_device",
    "is_main_process",
    "resolve_backend",
    "torchrun_env",
    "wants_distributed",
]

"""Data-parallel training with PyTorch's DistributedDataParallel, on CPU (gloo) and GPU (nccl).

RecBole 1.2.1 already trains data-parallel: each process sets ``local_rank``, its ``Config``
joins a process group, the dataloaders shard every split with a ``DistributedSampler`` (a rank
gets ``train_batch_size / world_size`` sequences per step) and the trainer wraps the model in
``DistributedDataParallel``. This module supplies what it lacks:

* a launcher without ``recbole.quick_start`` (which imports ray): :func:`run_distributed`
  spawns ``nproc`` workers on this machine (several machines with ``world_size``/``ip``/
  ``port``/``offset``), :func:`run_torchrun` runs one worker under ``torchrun``;
* :func:`init_device`, the body of ``recbole_moe.Config._init_device`` for a distributed run:
  backend ``dist_backend: auto | nccl | gloo`` (``auto``: nccl on CUDA, gloo on CPU) and a
  timeout ``dist_timeout`` (seconds) on joining the group, where RecBole hard-codes nccl and CUDA;
* :func:`apply_patches`, a few narrow fixes to RecBole's trainer, each inert in a
  single-process run (``config["single_spec"]`` true):

  - ``DistributedDataParallel`` without ``device_ids`` for a CPU model (RecBole always passes
    ``device_ids=[local_rank]``, which DDP rejects for CPU modules), and without broadcasting
    the MoE routing-statistics buffers (rank-local counters, all-reduced per epoch instead);
  - exact evaluation: each rank's per-user rows (``rec.topk`` ...) are gathered in dataset order
    without the sampler's padding duplicates, so every rank computes the metrics one process
    would. RecBole instead averages per-rank metrics weighted by ``len(batched_data)`` (always 4,
    the tuple's length), which differs whenever the shards differ in size;
  - ``load_best_model``: rank 0 reads the checkpoint (the only rank that wrote it) after a
    barrier and broadcasts the state, so no rank reads a half-written or absent file;
  - after each training epoch, the loss (each part) is averaged over ranks and the MoE
    routing statistics are summed, before the trainer logs them;
  - no tensorboard files on ranks other than 0;
  - directories created without a race between ranks (``ensure_dir``).

What is reduced across ranks: gradients (DDP: averaged every step), the logged training loss
and its parts (averaged per epoch), MoE routing statistics (summed per epoch,
:func:`all_reduce_routing_stats`) and evaluation rows (gathered). Losses themselves stay per
rank: each rank's MoE balance loss is computed on its own shard, and DDP averages the gradients.
Buffers (HyMoERec's warm-up clock ``train_step``) are broadcast from rank 0 before every step.
"""

from __future__ import annotations

import datetime
import errno
import functools
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from recbole_moe.errors import RecBoleMoeError

BACKENDS = ("auto", "nccl", "gloo")
#: Seconds a worker waits to join the process group (and, with gloo, for any collective).
DEFAULT_TIMEOUT = 600.0
#: torchrun's environment variables.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: Per-sample rows a RecBole ``Collector`` fills during evaluation (one row per sampler index).
SAMPLE_KEYS = ("rec.items", "rec.topk", "rec.meanrank", "rec.score", "data.label")


class DistributedError(RecBoleMoeError):
    """A distributed run that cannot start or lost a worker."""


# ---------------------------------------------------------------------------- settings
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


def _int_setting(settings: dict, key: str, default: int | None) -> int | None:
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
        (_int_setting(settings, "nproc", 1) or 1) > 1
        or (_int_setting(settings, "world_size", -1) or -1) > 0
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


# ---------------------------------------------------------------------------- Config
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
    nproc = _int_setting(cfg, "nproc", 1) or 1
    world_size = _int_setting(cfg, "world_size", -1)
    world_size = nproc if world_size is None or world_size <= 0 else world_size
    offset = _int_setting(cfg, "offset", 0) or 0
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
    apply_patches()
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


# ---------------------------------------------------------------------------- MoE statistics
def all_reduce_routing_stats(model: torch.nn.Module) -> None:
    """Sum the MoE routing statistics of every rank, so rank 0 logs the whole epoch's.

    Covers the shared core's ``RoutingStats`` buffers (HyMoERec) and FAME's accumulators
    (``_stat_count``/``_stat_gate``/``_stat_router``). A no-op outside a process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    from recbole_moe.layers.moe import RoutingStats

    for module in model.modules():
        if isinstance(module, RoutingStats):
            for buffer in (module.counts, module.prob_sum, module.n_tokens):
                dist.all_reduce(buffer)
        elif hasattr(module, "_stat_count") and hasattr(module, "_stat_gate"):
            _all_reduce_fame_stats(module)


def _all_reduce_fame_stats(module: torch.nn.Module) -> None:
    device = next(module.parameters()).device
    count = torch.tensor([float(module._stat_count)], device=device)
    dist.all_reduce(count)
    if count.item() == 0:
        return
    if module._stat_gate is None:  # this rank saw no batch; contribute zeros of the right shape
        raise DistributedError("FAME statistics missing on a rank that trained no batch")
    for name in ("_stat_gate", "_stat_router"):
        value = getattr(module, name).clone()
        dist.all_reduce(value)
        setattr(module, name, value)
    module._stat_count = int(count.item())


# ---------------------------------------------------------------------------- RecBole fixes
def _routing_buffer_names(module: torch.nn.Module) -> list[str]:
    from recbole_moe.layers.moe import RoutingStats

    names = []
    for prefix, sub in module.named_modules():
        if isinstance(sub, RoutingStats):
            names += [
                f"{prefix}.{name}" if prefix else name
                for name, _ in sub.named_buffers(recurse=False)
            ]
    return names


def make_ddp(module: torch.nn.Module, device_ids: Sequence[int] | None = None, **kwargs):
    """``DistributedDataParallel`` for RecBole's trainer: no ``device_ids`` on CPU, routing
    statistics excluded from the buffer broadcast (they are rank-local until the epoch's
    all-reduce). Other buffers, e.g. HyMoERec's ``train_step``, are broadcast from rank 0."""
    from torch.nn.parallel import DistributedDataParallel

    first = next(module.parameters(), None)
    if first is None or first.device.type != "cuda":
        device_ids = None
    ignore = _routing_buffer_names(module)
    if ignore:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignore)
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


class _NullWriter:
    """A tensorboard ``SummaryWriter`` stand-in that writes nothing (ranks other than 0)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _rank_zero_tensorboard(original: Callable) -> Callable:
    @functools.wraps(original)
    def get_tensorboard(logger):
        if dist.is_initialized() and dist.get_rank() != 0:
            return _NullWriter()
        return original(logger)

    return get_tensorboard


def gather_eval_rows(struct, eval_data, device: torch.device):
    """Replace each rank's per-sample rows in ``struct`` by all ranks' rows in dataset order.

    With ``shuffle=False`` a ``DistributedSampler`` gives rank ``r`` the indices
    ``r, r + W, r + 2W, ...`` of the sample list padded (by repeating its head) to
    ``W * num_samples``. Gathering the ``[num_samples, ...]`` blocks and interleaving them
    restores that order; cutting at the true length drops the padding. ``struct`` is a
    RecBole ``DataStruct``; returns it, or ``None`` when the rows do not match the sampler.
    """
    sampler = getattr(eval_data, "sampler", None)
    if not isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        return None
    world, n_local, n_total = dist.get_world_size(), sampler.num_samples, len(sampler.dataset)
    keys = [key for key in SAMPLE_KEYS if key in struct]
    if any(struct[key].shape[0] != n_local for key in keys):
        return None
    for key in keys:
        local = struct[key].to(device).contiguous()
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local)
        rows = torch.stack(parts, dim=1).reshape(world * n_local, *local.shape[1:])  # [N_pad, ...]
        struct[key] = rows[:n_total].cpu()
    return struct


def _broadcast_model_state(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters, buffers and ``other_parameter`` to every rank."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)
    other = [model.other_parameter() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(other, src=0)
    model.load_other_parameter(other[0])


def _distributed_evaluate(original: Callable) -> Callable:
    @functools.wraps(original)
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if self.config["single_spec"] or not eval_data:
            return original(self, eval_data, load_best_model, model_file, show_progress)
        if load_best_model:
            dist.barrier()  # rank 0 has finished writing the checkpoint
            if dist.get_rank() == 0:
                from recbole_moe.compat import load_recbole_checkpoint

                checkpoint_file = model_file or self.saved_model_file
                checkpoint = load_recbole_checkpoint(checkpoint_file, map_location=self.device)
                self.model.load_state_dict(checkpoint["state_dict"])
                self.model.load_other_parameter(checkpoint.get("other_parameter"))
                self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
            _broadcast_model_state(self.model)
        collector = self.eval_collector
        local_struct = collector.get_data_struct
        gathered = []

        def get_data_struct():
            struct = gather_eval_rows(local_struct(), eval_data, self.device)
            gathered.append(struct is not None)
            return struct if struct is not None else local_struct()

        collector.get_data_struct = get_data_struct
        # metrics computed from the gathered rows are already global: skip RecBole's average
        self._map_reduce = lambda result, num_sample: (
            result
            if gathered and gathered[-1]
            else type(self)._map_reduce(self, result, num_sample)
        )
        try:
            return original(self, eval_data, False, None, show_progress)
        finally:
            del collector.get_data_struct
            del self._map_reduce

    return evaluate


def _averaged_train_epoch(original: Callable) -> Callable:
    @functools.wraps(original)
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        total = original(
            self, train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
        if self.config["single_spec"]:
            return total
        all_reduce_routing_stats(self.model)  # before a subclass's per-epoch hook logs them
        if total is None:
            return total
        parts = list(total) if isinstance(total, tuple) else [total]
        summed = torch.tensor(parts, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        averaged = (summed / dist.get_world_size()).tolist()
        return tuple(averaged) if isinstance(total, tuple) else averaged[0]

    return _train_epoch


def ensure_dir(dir_path: str) -> None:
    """RecBole's ``ensure_dir`` without its check-then-create race between processes
    (``os.path.exists`` then ``os.makedirs`` fails in the slower of two ranks)."""
    os.makedirs(dir_path, exist_ok=True)


#: Modules that bound RecBole's ``ensure_dir`` by name.
_ENSURE_DIR_USERS = (
    "recbole.utils",
    "recbole.utils.utils",
    "recbole.utils.logger",
    "recbole.trainer.trainer",
    "recbole.data.utils",
    "recbole.data.dataset.dataset",
)

_PATCHED = False


def apply_patches() -> None:
    """Install the fixes listed in the module docstring (idempotent; inert in one process)."""
    global _PATCHED
    if _PATCHED:
        return
    import importlib

    import recbole.trainer.trainer as trainer_module

    for name in _ENSURE_DIR_USERS:
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir
    trainer_module.DistributedDataParallel = make_ddp
    trainer_module.get_tensorboard = _rank_zero_tensorboard(trainer_module.get_tensorboard)
    trainer_module.Trainer.evaluate = _distributed_evaluate(trainer_module.Trainer.evaluate)
    trainer_module.Trainer._train_epoch = _averaged_train_epoch(trainer_module.Trainer._train_epoch)
    _PATCHED = True


# ---------------------------------------------------------------------------- launching
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
    from recbole_moe.quick_start import run

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
    import pickle

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
    import torch.multiprocessing as mp

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
    import torch.multiprocessing as mp

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
    from recbole_moe.quick_start import run

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
    nproc = _int_setting(settings, "nproc", 1) or 1
    world_size = _int_setting(settings, "world_size", -1)
    port = _int_setting(settings, "port", None)
    offset = _int_setting(settings, "offset", 0) or 0
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


def is_main_process() -> bool:
    """True outside a process group and on global rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


__all__ = [
    "DistributedError",
    "all_reduce_routing_stats",
    "apply_patches",
    "as_single_process",
    "gather_eval_rows",
    "init_device",
    "launch",
    "resolve_backend",
    "run_distributed",
    "run_from_settings",
    "run_torchrun",
    "torchrun_env",
    "wants_distributed",
]

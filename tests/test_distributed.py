"""Data-parallel training on CPU (gloo, 2 processes) against single-process evaluation."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)

DATASET = "dsynth"
#: Global batch 64 = 32 per rank with 2 processes.
SETTINGS = {"train_batch_size": 64, "eval_batch_size": 64, "n_experts": 4, "top_k": 2}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory) -> str:
    """A smaller synthetic dataset than the shared one, to keep the spawned runs short."""
    from recbole_moe.testing import make_synthetic_dataset

    root = tmp_path_factory.mktemp("ddp_data")
    make_synthetic_dataset(str(root), name=DATASET, n_users=150, n_items=50)
    return str(root)


def _settings(data_path: str, checkpoint_dir: str, **overrides) -> dict:
    from recbole_moe.testing import tiny_config

    return tiny_config(data_path, checkpoint_dir=checkpoint_dir, **SETTINGS, **overrides)


def _single_process_eval(model_file: str, split: str, filter_seen: bool | None = None) -> dict:
    """Metrics of a checkpoint evaluated by one process (no process group); ``filter_seen``
    as :meth:`RecBoleMoeTrainer.evaluate` takes it."""
    from recbole_moe import load_model
    from recbole_moe.quick_start import get_trainer

    parts = load_model(model_file)
    trainer = get_trainer(parts.config, parts.model)
    trainer.eval_collector.data_collect(parts.valid_data)  # as fit() does before evaluating
    data = parts.valid_data if split == "valid" else parts.test_data
    result = trainer.evaluate(data, load_best_model=False, filter_seen=filter_seen)
    return {k: float(v) for k, v in result.items()}


def _train_loss(model_file: str) -> float:
    """Mean CE loss of a checkpoint over the training sequences (eval mode: no dropout)."""
    from recbole_moe import load_model

    parts = load_model(model_file)
    model, train_data = parts.model, parts.train_data
    total, count = 0.0, 0
    with torch.no_grad():
        for interaction in train_data:
            loss = model.calculate_loss(interaction)
            total += float(loss) * len(interaction)
            count += len(interaction)
    return total / count


def _train_worker(
    local_rank: int,
    models: list,
    data_path: str,
    out_dir: str,
    ports: list,
    queue,
    extra: dict = None,
) -> None:
    """Each rank runs ``recbole_moe.run`` for every model (one epoch) and saves its state after
    training, before the test evaluation reloads the best checkpoint."""
    torch.set_num_threads(1)
    from recbole.trainer import Trainer

    from recbole_moe import distributed, trainer

    fit, reduce_stats = Trainer.fit, trainer.all_reduce_statistics
    routed_tokens = []  # per epoch: (this rank's tokens, all ranks' tokens) seen by the router

    def reduce_and_record(model):
        stats = [m for m in model.modules() if type(m).__name__ == "RoutingStats"]
        before = float(stats[0].n_tokens) if stats else None
        reduce_stats(model)
        routed_tokens.append((before, float(stats[0].n_tokens) if stats else None))

    def fit_and_snapshot(self, train_data, *args, **kwargs):
        result = fit(self, train_data, *args, **kwargs)
        model = self.model
        torch.save(
            {
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "steps": len(train_data),
                "routed_tokens": list(routed_tokens),
                # non-padding tokens of this rank's shard (the sampler repeats epoch 0's order)
                "shard_tokens": sum(float(batch[model.ITEM_SEQ_LEN].sum()) for batch in train_data),
                "widths": [batch[model.ITEM_SEQ].shape[1] for batch in train_data],
            },
            os.path.join(out_dir, f"{self.config['model']}-rank{local_rank}.pt"),
        )
        return result

    Trainer.fit = fit_and_snapshot  # this worker process only
    trainer.all_reduce_statistics = reduce_and_record
    for model_name, port in zip(
        models, ports, strict=False
    ):  # a fresh rendezvous port for each group
        settings = _settings(
            data_path,
            os.path.join(out_dir, model_name),
            nproc=2,
            world_size=2,
            ip="localhost",
            port=port,
            dist_timeout=90,
            **(extra or {}),
        )
        if model_name == "HyMoERec" and local_rank == 1:
            settings["alpha_init"] = 0.5  # rank 1 starts elsewhere: DDP broadcasts rank 0's state
        routed_tokens.clear()
        distributed._run_worker(local_rank, model_name, DATASET, settings, None, True, queue, 2)


def _free_ports(n: int) -> list:
    """``n`` distinct free ports (a process group re-created on the same port could meet the
    previous group's rendezvous store while another rank is still closing it)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _failing_worker(local_rank: int) -> None:
    if local_rank == 1:
        raise RuntimeError("boom on purpose")
    time.sleep(120)  # must be terminated by the launcher, not waited for


def test_two_processes_match_one_process(data_path, tmp_path):
    """2 processes train SASRec and HyMoERec one epoch through ``recbole_moe.run``:

    * both ranks end the epoch with identical parameters and buffers (HyMoERec's ``train_step``
      counts the steps of one rank, not of both);
    * the metrics rank 0 reports (gathered across ranks) equal one process's evaluation of
      the checkpoint;
    * with the same global batch and seed, the loss after the epoch is close to a
      single-process run's.
    """
    import torch.multiprocessing as mp

    from recbole_moe import run
    from recbole_moe.distributed import launch

    models = ["SASRec", "HyMoERec"]
    queue = mp.get_context("spawn").SimpleQueue()
    ports = _free_ports(len(models))
    results = launch(_train_worker, 2, (models, data_path, str(tmp_path), ports, queue), queue)
    assert [r["config"]["model"] for r in results] == models  # rank 0 reports, once per model
    for model_name, result in zip(models, results, strict=False):
        rank0, rank1 = (
            torch.load(tmp_path / f"{model_name}-rank{r}.pt", weights_only=False) for r in (0, 1)
        )
        assert rank0["state"].keys() == rank1["state"].keys()
        for key, value in rank0["state"].items():
            assert torch.equal(value, rank1["state"][key]), (
                f"{model_name}: {key} differs across ranks"
            )
        # the best checkpoint and the finished run's resume point (its last epoch, 0) were
        # written by rank 0 alone
        best = os.path.basename(result["model_file"])
        last = best[: -len(".pth")] + "-last.pth"
        assert sorted(os.listdir(tmp_path / model_name)) == sorted([best, last])
        resume = torch.load(tmp_path / model_name / last, weights_only=False)
        assert resume["epoch"] == 0
        assert result["best_valid_result"] == _single_process_eval(result["model_file"], "valid")
        assert result["test_result"] == _single_process_eval(result["model_file"], "test")
        assert result["test_result"]["ndcg@10"] > 0
    hymoe = [torch.load(tmp_path / f"HyMoERec-rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert int(hymoe[0]["state"]["train_step"]) == hymoe[0]["steps"]
    # routing statistics: each rank counted its own shard (not overwritten by DDP's buffer
    # broadcast) and the logged ones are the sum over ranks
    ((local0, total0),) = hymoe[0]["routed_tokens"]
    ((local1, total1),) = hymoe[1]["routed_tokens"]
    assert (local0, local1) == (hymoe[0]["shard_tokens"], hymoe[1]["shard_tokens"])
    assert total0 == total1 == local0 + local1

    one = run("SASRec", DATASET, config_dict=_settings(data_path, str(tmp_path / "single")))
    loss_two, loss_one = _train_loss(results[0]["model_file"]), _train_loss(one["model_file"])
    assert loss_two == pytest.approx(loss_one, rel=0.05)


def test_length_grouped_batches_in_two_processes(data_path, tmp_path):
    """Length-grouped, trimmed batches under DDP: both ranks take the same number of steps
    (each rank's batches may have another width) and end with identical parameters."""
    import torch.multiprocessing as mp

    from recbole_moe.distributed import launch

    queue = mp.get_context("spawn").SimpleQueue()
    extra = {"train_batch_order": "length_grouped", "length_group_size": 2}
    (result,) = launch(
        _train_worker,
        2,
        (["SASRec"], data_path, str(tmp_path), _free_ports(1), queue, extra),
        queue,
    )
    assert result["config"]["train_batch_order"] == "length_grouped"
    rank0, rank1 = (torch.load(tmp_path / f"SASRec-rank{r}.pt", weights_only=False) for r in (0, 1))
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), f"{key} differs across ranks"
    assert len(rank0["widths"]) == len(rank1["widths"]) == rank0["steps"]
    max_len = result["config"]["MAX_ITEM_LIST_LENGTH"]
    assert min(rank0["widths"] + rank1["widths"]) < max_len  # trimmed batches
    assert result["test_result"] == _single_process_eval(result["model_file"], "test")


def test_seen_items_removed_in_two_processes(data_path, tmp_path):
    """``eval_filter_seen`` under DDP: each rank removes its rows' seen items, and the
    gathered metrics equal one process's evaluation of the checkpoint, on both splits."""
    import torch.multiprocessing as mp

    from recbole_moe.distributed import launch

    queue = mp.get_context("spawn").SimpleQueue()
    extra = {"eval_filter_seen": True}
    (result,) = launch(
        _train_worker,
        2,
        (["SASRec"], data_path, str(tmp_path), _free_ports(1), queue, extra),
        queue,
    )
    assert result["config"]["eval_filter_seen"] is True
    assert result["best_valid_result"] == _single_process_eval(result["model_file"], "valid")
    assert result["test_result"] == _single_process_eval(result["model_file"], "test")
    assert result["test_result"] != _single_process_eval(result["model_file"], "test", False)


def test_occupied_port_fails_fast_with_clear_error(data_path, tmp_path):
    from recbole_moe.distributed import DistributedError, run_distributed

    with socket.socket() as holder:
        holder.bind(("localhost", 0))
        holder.listen()
        port = holder.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(DistributedError, match=f"port {port}.*already in use"):
            run_distributed(
                "SASRec", DATASET, _settings(data_path, str(tmp_path)), nproc=2, port=port
            )
        assert time.monotonic() - start < 30


def test_dead_worker_ends_the_run(tmp_path):
    from recbole_moe.distributed import DistributedError, launch

    start = time.monotonic()
    with pytest.raises(DistributedError, match="worker 1 failed.*boom on purpose"):
        launch(_failing_worker, 2)
    assert time.monotonic() - start < 100  # rank 0 (sleeping 120 s) was terminated


def test_cli_routes_to_launcher(monkeypatch):
    from recbole_moe import cli, distributed, process_group

    calls = []
    monkeypatch.setattr(
        distributed,
        "run_from_settings",
        lambda model, dataset, settings, files: calls.append((model, dataset, settings)) or None,
    )
    monkeypatch.setattr(cli, "_check_before_launch", lambda *args: None)  # no dataset 'x'
    assert cli.main(["--model", "SASRec", "--dataset", "x", "--nproc=2", "--epochs=1"]) == 0
    assert calls == [("SASRec", "x", {"nproc": "2", "epochs": "1"})]
    assert process_group.wants_distributed({"world_size": "4"})
    assert not process_group.wants_distributed({"nproc": "1"}, environ={})
    env = {
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "29500",
    }
    assert process_group.wants_distributed({}, environ=env)
    assert process_group.torchrun_env(env)["master_port"] == 29500


def test_backend_choice():
    from recbole_moe.process_group import DistributedError, resolve_backend

    assert resolve_backend("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert resolve_backend("gloo") == "gloo"
    with pytest.raises(DistributedError, match="dist_backend"):
        resolve_backend("mpi")

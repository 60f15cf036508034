"""Data-parallel training on CPU (gloo, 2 processes) against single-process evaluation."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
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


def _single_process_eval(model_file: str, split: str) -> dict:
    """Metrics of a checkpoint evaluated by one process (no process group)."""
    from recbole_moe import load_model
    from recbole_moe.quick_start import get_trainer

    config, model, _, _, valid_data, test_data = load_model(model_file)
    trainer = get_trainer(config, model)
    trainer.eval_collector.data_collect(valid_data)  # as fit() does before evaluating
    data = valid_data if split == "valid" else test_data
    return {k: float(v) for k, v in trainer.evaluate(data, load_best_model=False).items()}


def _train_loss(model_file: str) -> float:
    """Mean CE loss of a checkpoint over the training sequences (eval mode: no dropout)."""
    from recbole_moe import load_model

    _, model, _, train_data, _, _ = load_model(model_file)
    total, count = 0.0, 0
    with torch.no_grad():
        for interaction in train_data:
            loss = model.calculate_loss(interaction)
            total += float(loss) * len(interaction)
            count += len(interaction)
    return total / count


def _train_worker(local_rank: int, models: list, data_path: str, out_dir: str, port: int) -> None:
    """Each rank trains every model one epoch through RecBole's trainer and saves its state."""
    torch.set_num_threads(1)
    from recbole_moe.quick_start import get_trainer, prepare_run

    for model_name in models:
        settings = _settings(
            data_path, os.path.join(out_dir, model_name),
            local_rank=local_rank, nproc=2, world_size=2, ip="localhost", port=port,
        )
        config, train_data, valid_data, _, model, _ = prepare_run(model_name, DATASET, settings, log=False)
        if model_name == "HyMoERec" and local_rank == 1:
            model.train_step.fill_(1000)  # DDP's buffer broadcast must overwrite this with rank 0's
        trainer = get_trainer(config, model)
        trainer.fit(train_data, valid_data, saved=True)
        valid = trainer.evaluate(valid_data, load_best_model=False)
        torch.save(
            {
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                "valid": {k: float(v) for k, v in valid.items()},
                "model_file": trainer.saved_model_file,
                "steps": len(train_data),
                "routing": model.epoch_summary() if hasattr(model, "epoch_summary") else None,
            },
            os.path.join(out_dir, f"{model_name}-rank{local_rank}.pt"),
        )
    dist.destroy_process_group()


def _failing_worker(local_rank: int) -> None:
    if local_rank == 1:
        raise RuntimeError("boom on purpose")
    time.sleep(120)  # must be terminated by the launcher, not waited for


def test_two_processes_match_single_process_evaluation(data_path, tmp_path):
    from recbole_moe.distributed import free_port, launch

    models = ["SASRec", "HyMoERec"]
    launch(_train_worker, 2, (models, data_path, str(tmp_path), free_port()))
    for model_name in models:
        rank0, rank1 = (torch.load(tmp_path / f"{model_name}-rank{r}.pt", weights_only=False) for r in (0, 1))
        # gradients were averaged every step: both ranks hold the same parameters and buffers
        assert rank0["state"].keys() == rank1["state"].keys()
        for key, value in rank0["state"].items():
            assert torch.equal(value, rank1["state"][key]), f"{model_name}: {key} differs across ranks"
        # gathered metrics equal one process's evaluation of the checkpoint (saved after epoch 0)
        single = _single_process_eval(rank0["model_file"], "valid")
        assert rank0["valid"] == rank1["valid"] == single, model_name
        assert single["ndcg@10"] > 0
    # HyMoERec's warm-up clock: rank 1 started at 1000, rank 0's count won (one per step)
    hymoe = torch.load(tmp_path / "HyMoERec-rank0.pt", weights_only=False)
    assert int(hymoe["state"]["train_step"]) == hymoe["steps"]


def test_two_process_run_matches_one_process(data_path, tmp_path):
    """Same global batch and seed: the loss after one epoch is close, and the metrics that
    ``run_distributed`` reports equal one process's evaluation of its checkpoint."""
    from recbole_moe import run
    from recbole_moe.distributed import run_distributed

    settings = _settings(data_path, str(tmp_path / "saved"), epochs=1)
    two = run_distributed("SASRec", DATASET, dict(settings), nproc=2)
    one = run("SASRec", DATASET, config_dict=dict(settings))
    assert two["test_result"] == _single_process_eval(two["model_file"], "test")
    loss_two, loss_one = _train_loss(two["model_file"]), _train_loss(one["model_file"])
    assert loss_two == pytest.approx(loss_one, rel=0.05)
    # only rank 0 wrote a checkpoint
    assert len([f for f in os.listdir(tmp_path / "saved") if f.endswith(".pth")]) == 2


def test_occupied_port_fails_fast_with_clear_error(data_path, tmp_path):
    from recbole_moe.distributed import DistributedError, run_distributed

    with socket.socket() as holder:
        holder.bind(("localhost", 0))
        holder.listen()
        port = holder.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(DistributedError, match=f"port {port}.*already in use"):
            run_distributed("SASRec", DATASET, _settings(data_path, str(tmp_path)), nproc=2, port=port)
        assert time.monotonic() - start < 30


def test_dead_worker_ends_the_run(tmp_path):
    from recbole_moe.distributed import DistributedError, launch

    start = time.monotonic()
    with pytest.raises(DistributedError, match="worker 1 failed.*boom on purpose"):
        launch(_failing_worker, 2)
    assert time.monotonic() - start < 100  # rank 0 (sleeping 120 s) was terminated


def test_cli_routes_to_launcher(monkeypatch):
    from recbole_moe import cli, distributed

    calls = []
    monkeypatch.setattr(
        distributed, "run_from_settings",
        lambda model, dataset, settings, files: calls.append((model, dataset, settings)) or None,
    )
    assert cli.main(["--model", "SASRec", "--dataset", "x", "--nproc=2", "--epochs=1"]) == 0
    assert calls == [("SASRec", "x", {"nproc": "2", "epochs": "1"})]
    assert distributed.wants_distributed({"world_size": "4"})
    assert not distributed.wants_distributed({"nproc": "1"}, environ={})
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert distributed.wants_distributed({}, environ=env)
    assert distributed.torchrun_env(env)["master_port"] == 29500


def test_backend_choice():
    from recbole_moe.distributed import DistributedError, resolve_backend

    assert resolve_backend("auto") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert resolve_backend("gloo") == "gloo"
    with pytest.raises(DistributedError, match="dist_backend"):
        resolve_backend("mpi")

"""Interrupted runs resume to the same result; checkpoints are atomic; NaN losses stop training."""

from __future__ import annotations

import glob
import os

import pytest
import torch

import recbole_moe
from recbole_moe.checkpoint import atomic_torch_save
from recbole_moe.errors import CheckpointMismatchError
from recbole_moe.trainer import NonFiniteLossError, RecBoleMoeTrainer, TimeBudgetReached


class Interrupted(RuntimeError):
    pass


@pytest.mark.parametrize(
    "model, extra",
    [
        ("SASRec", {}),
        ("HyMoERec", {}),
        ("SASRec", {"train_batch_order": "length_grouped"}),  # lean loader's own batch shuffling
        ("HyMoERec", {"train_objective": "sequence"}),  # one sequence per user, user order restored
        # a window drawn per epoch for the long histories: the draws are restored too
        (
            "SASRec",
            {"train_objective": "sequence", "train_window": "random", "MAX_ITEM_LIST_LENGTH": 10},
        ),
    ],
)
def test_resume_after_crash_reaches_the_same_metrics(
    model, extra, tiny_config, tmp_path, monkeypatch
):
    tiny_config.update(epochs=4, warmup_steps=20, **extra)  # HyMoERec's warm-up spans the crash
    full = recbole_moe.run(model, "synth", config_dict=dict(tiny_config))

    crash_dir = tmp_path / "crash"
    crashing = dict(tiny_config, checkpoint_dir=str(crash_dir))
    original = RecBoleMoeTrainer._add_train_loss_to_tensorboard

    before_crash: list[float] = []

    def crash_after_epoch_2(self, epoch_idx, losses, tag="Loss/Train"):
        original(self, epoch_idx, losses, tag)
        if epoch_idx == 2:
            # the last checkpoint was written as epoch 2 began: epochs 0 and 1 were timed
            before_crash.append(sum(self.train_epoch_times[:2]) + sum(self.valid_epoch_times[:2]))
            raise Interrupted("killed after epoch 2")

    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", crash_after_epoch_2)
    with pytest.raises(Interrupted):
        recbole_moe.run(model, "synth", config_dict=crashing)
    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", original)

    (last,) = glob.glob(str(crash_dir / "*-last.pth"))
    resumed = recbole_moe.run(model, "synth", config_dict=dict(crashing, resume=last))
    assert resumed["best_valid_result"] == full["best_valid_result"]
    assert resumed["test_result"] == full["test_result"]
    assert resumed["epochs_run"] == 2  # epochs 2 and 3 only
    # the best epoch and the epochs in all count the part before the crash
    assert resumed["epochs_total"] == full["epochs_total"] == 4
    assert resumed["best_epoch"] == full["best_epoch"]
    # the time of the crashed process travels with the checkpoint
    assert full["elapsed_before_s"] == 0.0
    assert before_crash[0] > 0
    assert resumed["elapsed_before_s"] == pytest.approx(before_crash[0])
    # the per-epoch model statistics survive the crash: all 4 epochs, as without it
    assert resumed["epoch_stats"] == full["epoch_stats"]
    if model == "HyMoERec":
        assert [s["epoch"] for s in full["epoch_stats"]] == [0, 1, 2, 3]
        assert all(len(s["alpha"]) == tiny_config.get("n_layers", 2) for s in full["epoch_stats"])
    else:
        assert full["epoch_stats"] == []


def test_time_budget_stops_at_an_epoch_boundary_and_the_run_resumes_exactly(tiny_config, tmp_path):
    tiny_config.update(epochs=3, warmup_steps=20)
    full = recbole_moe.run("HyMoERec", "synth", config_dict=dict(tiny_config))

    # A budget of 0 minutes: each process trains one epoch, then stops before the next with
    # that epoch's resume checkpoint written.
    config = dict(tiny_config, checkpoint_dir=str(tmp_path / "ckpt"), time_budget_minutes=0)
    with pytest.raises(TimeBudgetReached) as first:
        recbole_moe.run("HyMoERec", "synth", config_dict=dict(config))
    assert first.value.epoch == 1
    assert os.path.isfile(first.value.resume_file) and first.value.resume_file.endswith("-last.pth")
    assert "time_budget_minutes=0" in str(first.value) and "--resume=" in str(first.value)
    with pytest.raises(TimeBudgetReached) as second:
        recbole_moe.run(
            "HyMoERec", "synth", config_dict=dict(config, resume=first.value.resume_file)
        )
    assert second.value.epoch == 2
    resumed = recbole_moe.run(
        "HyMoERec",
        "synth",
        config_dict=dict(config, resume=second.value.resume_file, time_budget_minutes=None),
    )
    assert resumed["test_result"] == full["test_result"]
    assert resumed["best_valid_result"] == full["best_valid_result"]
    assert resumed["epoch_stats"] == full["epoch_stats"]
    assert (resumed["epochs_run"], resumed["epochs_total"]) == (1, 3)


def test_a_time_budget_not_yet_spent_changes_nothing(tiny_config, tmp_path):
    tiny_config.update(epochs=2)
    full = recbole_moe.run("SASRec", "synth", config_dict=dict(tiny_config))
    config = dict(tiny_config, checkpoint_dir=str(tmp_path / "ckpt"), time_budget_minutes=60)
    budgeted = recbole_moe.run("SASRec", "synth", config_dict=config)
    assert budgeted["test_result"] == full["test_result"]
    assert budgeted["epochs_run"] == 2


def test_best_epoch_is_the_last_epoch_with_the_best_validation_score(tiny_config):
    tiny_config.update(epochs=8, stopping_step=2)
    scores: list[float] = []
    result = recbole_moe.run(
        "SASRec",
        "synth",
        config_dict=dict(tiny_config),
        callback_fn=lambda epoch, score: scores.append(score),
    )
    # RecBole keeps a later epoch that ties the best (``value >= best``).
    best = max(range(len(scores)), key=lambda i: (scores[i], i))
    assert result["best_epoch"] == best
    assert result["epochs_total"] == len(scores)
    assert result["best_valid_score"] == pytest.approx(scores[best])


def test_resume_refuses_another_models_checkpoint(tiny_config):
    result = recbole_moe.run("SASRec", "synth", config_dict=dict(tiny_config))
    with pytest.raises(CheckpointMismatchError, match="made by model SASRec on dataset synth"):
        recbole_moe.run(
            "GRU4Rec", "synth", config_dict=dict(tiny_config, resume=result["model_file"])
        )


def test_non_finite_loss_stops_training_with_epoch_batch_and_model(tiny_config, monkeypatch):
    from recbole.model.sequential_recommender.sasrec import SASRec

    original = SASRec.calculate_loss
    calls = {"n": 0}

    def poisoned(self, interaction):
        calls["n"] += 1
        loss = original(self, interaction)
        return loss * float("inf") if calls["n"] == 3 else loss

    monkeypatch.setattr(SASRec, "calculate_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"in epoch 0, batch 2 of model SASRec"):
        recbole_moe.run("SASRec", "synth", config_dict=tiny_config)


def test_atomic_save_keeps_the_previous_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    atomic_torch_save({"w": torch.ones(3)}, str(path))
    good = path.read_bytes()

    def broken_save(obj, f, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"w": torch.zeros(3)}, str(path))
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.pth"]


@pytest.fixture
def trained_on_own_data(tiny_config, tmp_path):
    """A 2-epoch SASRec on a small synthetic dataset of this test's own (the test edits it):
    ``(settings, inter_file, last_checkpoint)``."""
    from recbole_moe.testing import make_synthetic_dataset

    make_synthetic_dataset(str(tmp_path / "data"), name="synth", n_users=60, n_items=30)
    settings = dict(tiny_config, data_path=str(tmp_path / "data"), epochs=2)
    recbole_moe.run("SASRec", "synth", config_dict=dict(settings))
    (last,) = glob.glob(os.path.join(settings["checkpoint_dir"], "*-last.pth"))
    return settings, tmp_path / "data" / "synth" / "synth.inter", last


def test_resume_on_changed_data_is_refused_before_training(trained_on_own_data, monkeypatch):
    settings, inter, last = trained_on_own_data
    fits = []
    monkeypatch.setattr(RecBoleMoeTrainer, "fit", lambda self, *a, **k: fits.append(a))
    original = inter.read_text(encoding="utf-8")
    header, *rows = original.splitlines(keepends=True)
    inter.write_text(header + "".join(reversed(rows)), encoding="utf-8")
    with pytest.raises(CheckpointMismatchError, match=r"rows reordered.*start a new run"):
        recbole_moe.run("SASRec", "synth", config_dict=dict(settings, resume=last))
    inter.write_text(original + "7\t5\t100\n", encoding="utf-8")  # one more row, same ids
    with pytest.raises(CheckpointMismatchError, match="same users and items at the same"):
        recbole_moe.run("SASRec", "synth", config_dict=dict(settings, resume=last))
    assert fits == []


def test_a_checkpoint_without_a_fingerprint_resumes_with_a_warning(trained_on_own_data, tmp_path):
    from recbole_moe.fingerprint import UncheckedCheckpointWarning

    settings, _, last = trained_on_own_data
    made = torch.load(last, map_location="cpu", weights_only=False)
    del made["fingerprint"]
    old = tmp_path / "old-last.pth"
    torch.save(made, old)
    with pytest.warns(UncheckedCheckpointWarning, match="cannot be checked"):
        result = recbole_moe.run(
            "SASRec", "synth", config_dict=dict(settings, epochs=3, resume=str(old))
        )
    assert result["epochs_total"] == 3

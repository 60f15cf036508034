"""``extra_valid_metrics``: one run selecting on several validation metrics reports, for each, what
a run selecting on that metric alone reports."""

from __future__ import annotations

import glob
import os

import pytest

import recbole_moe
from recbole_moe.errors import ConfigError
from recbole_moe.selection import Selection, parse_extra_valid_metrics
from recbole_moe.trainer import RecBoleMoeTrainer


class Interrupted(Exception):
    pass


@pytest.fixture
def noisy(tiny_config) -> dict:
    """Settings under which the metrics stop at different epochs on the synthetic data: Hit@5
    after 6 epochs, NDCG@10 after 12 (patience 1), Hit@10 runs its whole budget of 15."""
    return dict(
        tiny_config,
        epochs=15,
        stopping_step=1,
        topk=[5, 10],
        train_objective="sequence",
        learning_rate=0.02,
        hidden_dropout_prob=0.3,
        dropout_impl="torch",  # the stopping epochs above are those of torch's dropout masks
    )


def _own_run(config: dict, metric: str, epochs: int) -> dict:
    config = dict(config, valid_metric=metric, epochs=epochs)
    config.pop("extra_valid_metrics", None)
    return recbole_moe.run("SASRec", "synth", config_dict=config)


def test_each_metric_reports_what_its_own_run_reports(noisy):
    dual = recbole_moe.run(
        "SASRec",
        "synth",
        config_dict=dict(noisy, extra_valid_metrics={"Hit@5": 15, "Hit@10": 14}),
    )
    hit5, hit10 = dual["selections"]["Hit@5"], dual["selections"]["Hit@10"]
    # the three metrics stop at different epochs, before and after valid_metric
    assert hit5["epochs_run"] < dual["epochs_run"] < hit10["epochs_run"] == 14
    assert dual["epochs_trained"] == 14  # until the last metric stopped

    alone = _own_run(noisy, "NDCG@10", 15)
    assert dual["epochs_run"] == alone["epochs_run"]
    assert dual["best_valid_score"] == alone["best_valid_score"]
    assert dual["best_valid_result"] == alone["best_valid_result"]
    assert dual["test_result"] == alone["test_result"]
    for metric, epochs in (("Hit@5", 15), ("Hit@10", 14)):
        selection, alone = dual["selections"][metric], _own_run(noisy, metric, epochs)
        assert selection["epochs_run"] == alone["epochs_run"], metric
        assert selection["best_valid_score"] == alone["best_valid_score"], metric
        assert selection["best_valid_result"] == alone["best_valid_result"], metric
        assert selection["test_result"] == alone["test_result"], metric


def test_resume_keeps_every_selection(noisy, tmp_path, monkeypatch):
    config = dict(noisy, extra_valid_metrics=["Hit@10"])
    full = recbole_moe.run("SASRec", "synth", config_dict=dict(config))

    crashing = dict(config, checkpoint_dir=str(tmp_path / "crash"))
    original = RecBoleMoeTrainer._add_train_loss_to_tensorboard

    def crash(self, epoch_idx, losses, tag="Loss/Train"):
        original(self, epoch_idx, losses, tag)
        if epoch_idx == full["epochs_run"] + 1:  # NDCG@10 has stopped, Hit@10 still selects
            raise Interrupted

    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", crash)
    with pytest.raises(Interrupted):
        recbole_moe.run("SASRec", "synth", config_dict=crashing)
    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", original)
    (last,) = glob.glob(str(tmp_path / "crash" / "*-last.pth"))
    resumed = recbole_moe.run("SASRec", "synth", config_dict=dict(crashing, resume=last))

    for key in ("epochs_run", "best_valid_result", "test_result"):
        assert resumed[key] == full[key], key
        assert resumed["selections"]["Hit@10"][key] == full["selections"]["Hit@10"][key], key


def test_a_selection_stops_where_recboles_early_stopping_would():
    selection = Selection("NDCG@10", epochs=100, patience=2, bigger=True)
    scores = [0.1, 0.3, 0.3, 0.2, 0.25, 0.29, 0.9]  # a tie counts as the new best, as in RecBole
    improved = [selection.update(epoch, {"ndcg@10": s}) for epoch, s in enumerate(scores)]
    assert improved == [True, True, True, False, False, False, False]
    assert (selection.best_epoch, selection.best_score, selection.stopped_at) == (2, 0.3, 5)
    assert selection.epochs_run == 6

    budget = Selection("Hit@5", epochs=2, patience=10, bigger=True)
    for epoch, score in enumerate([0.1, 0.2, 0.3]):
        budget.update(epoch, {"hit@5": score})
    assert (budget.best_epoch, budget.stopped_at) == (1, 1)  # epoch 2 is past its budget

    # validated every 3 epochs (eval_step 3): its own 5-epoch run ends after epoch 4, which it
    # does not validate, so the validation after epoch 5 is not its
    sparse = Selection("Hit@5", epochs=5, patience=10, bigger=True)
    for epoch, score in ((2, 0.1), (5, 0.9)):
        sparse.update(epoch, {"hit@5": score})
    assert (sparse.best_epoch, sparse.best_score, sparse.epochs_run) == (2, 0.1, 5)


def test_parse_accepts_a_list_or_budgets_and_rejects_the_rest():
    assert parse_extra_valid_metrics(["NDCG@20"], 300) == {"NDCG@20": 300}
    assert parse_extra_valid_metrics({"NDCG@10": 200}, 300) == {"NDCG@10": 200}
    assert parse_extra_valid_metrics(None, 300) == {}
    with pytest.raises(ValueError, match="between 1 and epochs=300, not 400"):
        parse_extra_valid_metrics({"NDCG@10": 400}, 300)
    with pytest.raises(ValueError, match="list of metric names"):
        parse_extra_valid_metrics(3, 300)


@pytest.mark.parametrize(
    "value, message",
    [
        (["NDCG@50"], "NDCG@50 is not one of the metrics this run computes: Hit@10, NDCG@10"),
        (["NDCG@10"], "NDCG@10 is already valid_metric"),
        ({"Hit@10": 5}, "epoch budget of Hit@10 must be an integer between 1 and epochs=1"),
    ],
)
def test_bad_extra_metrics_are_refused_before_training(tiny_config, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        recbole_moe.run("SASRec", "synth", config_dict=dict(tiny_config, extra_valid_metrics=value))


def test_benchmark_run_shared_with_another_plan_writes_its_record(noisy, tmp_path):
    from recbole_moe.benchmark.plans import build_plan
    from recbole_moe.benchmark.runner import RUNS_FILE, SharedPlan, execute, read_runs

    settings = {k: v for k, v in noisy.items() if k != "seed"}

    def plan(name, **changes):
        return build_plan(
            models=["SASRec"],
            datasets=["synth"],
            seeds=[0],
            overrides={**settings, **changes},
            name=name,
        )

    ndcg, hit = plan("ndcg"), plan("hit", valid_metric="Hit@5", epochs=14)
    other = plan("other", valid_metric="Hit@5", hidden_size=16)  # trains differently
    counts = execute(
        ndcg,
        str(tmp_path / "ndcg"),
        log=lambda _: None,
        share_with=[SharedPlan(hit, str(tmp_path / "hit")), SharedPlan(other, str(tmp_path / "o"))],
    )
    assert counts["ok"] == 1 and counts["shared"] == 1
    assert not os.path.exists(tmp_path / "o" / RUNS_FILE)
    (shared,) = read_runs(str(tmp_path / "hit" / RUNS_FILE))
    assert shared["shared_run"] == {
        "results": os.path.join("..", "ndcg"),
        "key": "SASRec|synth|0",
        "valid_metric": "NDCG@10",
        "epochs_trained": shared["shared_run"]["epochs_trained"],
    }
    assert shared["config"]["valid_metric"] == "Hit@5" and shared["config"]["epochs"] == 14

    # the plan's own run skips the shared cell, and a fresh run of it reports the same
    alone_out = str(tmp_path / "alone")
    assert execute(hit, str(tmp_path / "hit"), log=lambda _: None)["skipped"] == 1
    execute(hit, alone_out, log=lambda _: None)
    (alone,) = read_runs(os.path.join(alone_out, RUNS_FILE))
    for key in ("fingerprint", "epochs_run", "best_valid_result", "test_result", "overrides"):
        assert shared[key] == alone[key], key
    from recbole_moe.benchmark.report import write_report

    write_report(str(tmp_path / "hit"), plots=False)
    report = open(tmp_path / "hit" / "report.md", encoding="utf-8").read()
    assert "SASRec seed 0: the run of `../ndcg` (selecting on NDCG@10" in report


def test_dry_run_names_the_shared_selection(capsys, tmp_path):
    from recbole_moe import benchmark
    from recbole_moe.testing import make_synthetic_dataset

    make_synthetic_dataset(str(tmp_path / "data"), name="beauty")  # the plan is checked whole
    argv = ["--protocol", "fame", "--datasets", "beauty", "--models", "SASRec", "--seeds", "2"]
    argv.append(f"--data_path={tmp_path / 'data'}")
    share = ["--share-with", f"hymoerec:{tmp_path}", "--train_objective=sequence", "--dry-run"]
    assert benchmark.main(argv + share) == 0
    assert f"(also selects on NDCG@10 for {tmp_path})" in capsys.readouterr().out


def test_only_runs_that_train_identically_are_shared():
    from recbole_moe.benchmark.plans import build_plan
    from recbole_moe.benchmark.runner import shared_selection

    def preset(protocol, **overrides):
        return build_plan(
            protocol=protocol, datasets=["beauty"], models=["SASRec"], overrides=overrides
        )

    fame, hymoerec = preset("fame"), preset("hymoerec")
    assert shared_selection(fame, hymoerec, "SASRec", "beauty") == {"NDCG@10": 200}
    # the other way round the budget would be 300 epochs, more than this plan's 200
    assert shared_selection(hymoerec, fame, "SASRec", "beauty") is None
    other = preset("hymoerec", hidden_dropout_prob=0.2)
    assert shared_selection(fame, other, "SASRec", "beauty") is None
    assert shared_selection(fame, hymoerec, "SASRec", "toys") is None  # not in that plan

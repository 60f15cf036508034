"""Benchmark runner and report on the synthetic dataset: 2 models x 2 seeds x 1 epoch."""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import shutil
import sys
import types

import numpy as np
import pytest

from recbole_moe import benchmark
from recbole_moe.benchmark.plans import Plan, build_plan
from recbole_moe.benchmark.report import write_report
from recbole_moe.benchmark.runner import RUNS_FILE, append_record, execute, read_runs
from recbole_moe.testing import write_model_package

SMALL = {
    "hidden_size": 16,
    "inner_size": 32,
    "expert_inner_size": 32,
    "n_layers": 1,
    "MAX_ITEM_LIST_LENGTH": 10,
    "epochs": 1,
    "train_batch_size": 256,
}
MODELS = ["HyMoERec", "SASRec"]
SEEDS = [0, 1]


def make_plan(tiny_config: dict, models=MODELS) -> Plan:
    overrides = {**tiny_config, **SMALL}
    overrides.pop("seed")
    return build_plan(
        models=list(models), datasets=["synth"], seeds=SEEDS, overrides=overrides, name="test"
    )


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synth):
    """One benchmark of 4 runs, shared by the tests that only read it."""
    from recbole_moe.testing import tiny_config

    root = tmp_path_factory.mktemp("bench")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        config = tiny_config(synth.data_path, checkpoint_dir=str(root / "saved"))
        plan = make_plan(config)
        out = str(root / "out")
        counts = execute(plan, out, log=quiet)
    finally:
        os.chdir(cwd)
    return types.SimpleNamespace(plan=plan, out=out, counts=counts, config=config)


def lines_of(out: str) -> list[str]:
    with open(os.path.join(out, RUNS_FILE), encoding="utf-8") as f:
        return f.read().splitlines()


def test_four_complete_lines(finished):
    assert finished.counts == {"total": 4, "skipped": 0, "ok": 4, "failed": 0, "paused": 0}
    records = [json.loads(line) for line in lines_of(finished.out)]
    assert len(records) == 4
    assert {(r["model"], r["seed"]) for r in records} == {(m, s) for m in MODELS for s in SEEDS}
    for record in records:
        assert record["status"] == "ok"
        assert record["config"]["seed"] == record["seed"]
        assert record["config"]["hidden_size"] == 16 and record["config"]["epochs"] == 1
        assert record["epochs_run"] == 1
        assert record["train_time_per_epoch"] > 0 and record["eval_time"] > 0
        assert record["n_params"] > 0 and record["peak_rss_mib"] > 0
        assert set(record["test_result"]) == {"hit@10", "ndcg@10"}
        assert record["versions"]["recbole"] == "1.2.1"
        assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", record["commit"])  # run from a checkout
        data_path = record["config"]["data_path"]  # no absolute path of this machine
        assert not os.path.isabs(data_path)
        assert os.path.isfile(os.path.join(finished.out, data_path, "synth.inter"))
        assert record["hardware"]["cpu_count"] >= 1
    # Different seeds give different models.
    by_model = {m: [r for r in records if r["model"] == m] for m in MODELS}
    assert by_model["SASRec"][0]["best_valid_score"] != by_model["SASRec"][1]["best_valid_score"]
    assert by_model["HyMoERec"][0]["n_params"] > by_model["SASRec"][0]["n_params"]


def test_report_names_every_machine_with_its_runs(finished, tmp_path):
    out = str(tmp_path / "two-machines")
    shutil.copytree(finished.out, out)
    records = [json.loads(line) for line in lines_of(out)]
    records[0]["hardware"] = dict(records[0]["hardware"], cpu="Other CPU")
    with open(os.path.join(out, RUNS_FILE), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    write_report(out, plots=False)
    markdown = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    first = f"{records[0]['model']} seed {records[0]['seed']}"
    other = [f"{r['model']} seed {r['seed']}" for r in records[1:]]
    assert "(Other CPU), " in markdown
    recbole = f"recbole {records[0]['versions']['recbole']}"
    assert f"{recbole}: {first}.\n" in markdown
    assert f"{recbole}: {', '.join(other)}.\n" in markdown


def write_records(folder, records: list[dict]) -> str:
    os.makedirs(folder, exist_ok=True)
    for record in records:
        append_record(os.path.join(folder, RUNS_FILE), record)
    return str(folder)


def test_merge_brings_new_records_of_clones_into_one_folder(finished, tmp_path, capsys):
    records = [json.loads(line) for line in lines_of(finished.out)]
    clone_a = write_records(tmp_path / "a", records[:2])
    shutil.copy(os.path.join(finished.out, "plan.json"), clone_a)
    clone_b = write_records(tmp_path / "b", [records[0], *records[2:]])  # record 0 twice
    out = str(tmp_path / "main")
    assert benchmark.main(["merge", out, clone_a, clone_b]) == 0
    merged = [json.loads(line) for line in lines_of(out)]
    assert merged == records  # each once, in the sources' order
    assert os.path.isfile(os.path.join(out, "plan.json"))
    markdown = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "| HyMoERec (ours) | 2 |" in markdown and "| SASRec | 2 |" in markdown
    # Merging again adds nothing.
    assert benchmark.main(["merge", out, clone_a, clone_b, "--no-report"]) == 0
    assert len(lines_of(out)) == len(records)
    # A finished run made with other settings is refused, and named.
    other = dict(records[0], started_at="2099-01-01T00:00:00+00:00", fingerprint="other")
    clone_c = write_records(tmp_path / "c", [other])
    capsys.readouterr()
    assert benchmark.main(["merge", out, clone_c, "--no-report"]) == 1
    assert f"{clone_c}: {records[0]['key']} was run with other settings" in capsys.readouterr().err
    assert len(lines_of(out)) == len(records)


def test_portable_data_path_of_the_embedded_ml_100k(tmp_path):
    import recbole

    from recbole_moe.benchmark.runner import portable_data_path

    embedded = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    ml100k = os.path.join(embedded, "ml-100k")  # RecBole appends the dataset to data_path
    assert portable_data_path(ml100k, str(tmp_path)) == "recbole/dataset_example/ml-100k"


def test_report_rows_and_mean_std_match_hand_computation(finished):
    paths = write_report(finished.out, plots=False)
    assert os.path.join(finished.out, "report.md") in paths
    records = [json.loads(line) for line in lines_of(finished.out)]
    with open(os.path.join(finished.out, "synth.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == MODELS
    for row in rows:
        for metric in ("hit@10", "ndcg@10"):
            values = [r["test_result"][metric] for r in records if r["model"] == row["model"]]
            mean = sum(values) / 2
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (2 - 1))
            assert float(row[f"{metric}_mean"]) == pytest.approx(mean, abs=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(std, abs=1e-12)
        assert row["n_seeds"] == "2"
    # The best mean of each column is marked in the CSV and in bold in the Markdown.
    best = max(rows, key=lambda r: float(r["ndcg@10_mean"]))
    assert best["ndcg@10_best"] == "True"
    markdown = open(os.path.join(finished.out, "report.md"), encoding="utf-8").read()
    assert "| HyMoERec (ours) | 2 |" in markdown and "| SASRec | 2 |" in markdown
    assert "- Training regime (`train_objective`): prefix\n" in markdown
    assert f"- Code commit: {records[0]['commit']}\n" in markdown
    assert f"**{float(best['ndcg@10_mean']):.4f} ± {float(best['ndcg@10_std']):.4f}**" in markdown
    # HyMoERec against the strongest (only) baseline, with the paired test over 2 seeds.
    hy = next(r for r in rows if r["model"] == "HyMoERec")
    sas = next(r for r in rows if r["model"] == "SASRec")
    improvement = (float(hy["hit@10_mean"]) - float(sas["hit@10_mean"])) / float(sas["hit@10_mean"])
    assert "| HyMoERec | HR@10 | SASRec |" in markdown
    assert f"{improvement * 100:+.1f}%" in markdown
    assert "(n=2 vs 2)" in markdown
    assert "p (Welch t)" in markdown and "Wins, ties and losses" in markdown
    # both protocols, the selection's named; the second table from test_result_seen_removed
    assert (
        "- Ranking protocols: model selection on validation NDCG@10 with every item ranked "
        "(RecBole's protocol)" in markdown
    )
    seen_part = markdown.split("### Test, each user's seen items removed")[1]
    with open(os.path.join(finished.out, "synth_seen_removed.csv"), encoding="utf-8") as f:
        seen_rows = list(csv.DictReader(f))
    for row in seen_rows:
        values = [
            r["test_result_seen_removed"]["ndcg@10"] for r in records if r["model"] == row["model"]
        ]
        assert float(row["ndcg@10_mean"]) == pytest.approx(np.mean(values), abs=1e-12)
        assert _fmt_mean_std(values) in seen_part
    with open(os.path.join(finished.out, "efficiency.csv"), encoding="utf-8") as f:
        efficiency = list(csv.DictReader(f))
    assert [r["model"] for r in efficiency] == MODELS
    assert all(float(r["train_s_per_epoch"]) > 0 for r in efficiency)
    for row in efficiency:
        runs = [r for r in records if r["model"] == row["model"]]
        assert all(0 <= r["best_epoch"] < r["epochs_total"] for r in runs)
        assert float(row["best_epoch"]) == pytest.approx(np.mean([r["best_epoch"] for r in runs]))
        wall = np.mean([r["duration_s"] for r in runs]) / 60
        assert float(row["wall_min"]) == pytest.approx(wall)


def _fmt_mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def test_records_hold_both_protocols_of_the_kept_checkpoint(finished):
    """Each record's two test results are its kept best checkpoint evaluated both ways."""
    from recbole_moe.quick_start import get_trainer, load_model

    for record in read_runs(os.path.join(finished.out, RUNS_FILE)):
        model_file = os.path.join(os.path.dirname(finished.out), record["model_file"])
        assert os.path.isfile(model_file)  # kept for further protocols
        parts = load_model(model_file)
        trainer = get_trainer(parts.config, parts.model)
        for key, removed in (("test_result", False), ("test_result_seen_removed", True)):
            result = trainer.evaluate(parts.test_data, load_best_model=False, filter_seen=removed)
            assert record[key] == {k: float(v) for k, v in result.items()}
        assert record["test_result_seen_removed"] != record["test_result"]


def test_plots_written_when_matplotlib_available(finished):
    pytest.importorskip("matplotlib")
    paths = write_report(finished.out)
    for name in ("synth_metrics.png", "time_vs_quality.png"):
        path = os.path.join(finished.out, name)
        assert path in paths
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_without_matplotlib(finished, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    paths = write_report(finished.out)
    assert not any(p.endswith(".png") for p in paths)
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert "![" not in open(os.path.join(finished.out, "report.md"), encoding="utf-8").read()


def test_deleted_line_reruns_only_that_run(finished, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    lines = lines_of(finished.out)
    dropped = json.loads(lines[2])
    with open(os.path.join(out, RUNS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:2] + lines[3:]) + "\n")
    counts = execute(finished.plan, out, log=quiet)
    assert counts == {"total": 4, "skipped": 3, "ok": 1, "failed": 0, "paused": 0}
    records = read_runs(os.path.join(out, RUNS_FILE))
    assert len(records) == 4
    assert records[-1]["key"] == dropped["key"]
    # Same seed, same settings: the rerun reproduces the deleted run.
    assert records[-1]["test_result"] == dropped["test_result"]
    # A third call has nothing left to do.
    assert execute(finished.plan, out, log=quiet)["ok"] == 0


def test_truncated_last_line_is_ignored_and_not_glued_to_the_next(finished, tmp_path):
    path = str(tmp_path / RUNS_FILE)
    lines = lines_of(finished.out)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    records = read_runs(path)
    assert [r["key"] for r in records] == [json.loads(line)["key"] for line in lines[:3]]
    append_record(path, json.loads(lines[3]))
    assert [r["key"] for r in read_runs(path)] == [json.loads(line)["key"] for line in lines]


def test_changed_settings_are_refused(finished):
    plan = make_plan({**finished.config, "learning_rate": 0.01})
    with pytest.raises(ValueError, match="different settings"):
        execute(plan, finished.out, log=quiet)


BOOM = """
from recbole.model.sequential_recommender.sasrec import SASRec


class Boom(SASRec):
    \"\"\"A model whose construction fails.\"\"\"

    def __init__(self, config, dataset):
        raise RuntimeError("boom: broken model")
"""


def test_failing_model_is_recorded_and_the_others_go_on(tiny_config, tmp_path, monkeypatch):
    write_model_package(str(tmp_path / "plugins"), "boom_models", {"boom.py": BOOM})
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    plan = make_plan(tiny_config, models=["Boom", "SASRec"])
    plan.seeds = [0]
    plan.layers.append({"model_overrides": {"Boom": {"loss_type": "CE"}}})
    out = str(tmp_path / "out")
    counts = execute(plan, out, log=quiet)
    assert counts == {"total": 2, "skipped": 0, "ok": 1, "failed": 1, "paused": 0}
    records = {r["model"]: r for r in read_runs(os.path.join(out, RUNS_FILE))}
    assert records["Boom"]["status"] == "failed"
    assert "boom: broken model" in records["Boom"]["error"]
    assert records["SASRec"]["status"] == "ok"
    write_report(out, plots=False)
    markdown = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "failed: Boom on synth, seed 0" in markdown
    # A failed run is retried on the next call (and fails again), the finished one is skipped.
    assert execute(plan, out, log=quiet) == {
        "total": 2,
        "skipped": 1,
        "ok": 0,
        "failed": 1,
        "paused": 0,
    }


def test_presets_and_layering():
    plan = build_plan(
        protocol="hymoerec", scale="cpu-smoke", datasets=["beauty"], overrides={"epochs": "1"}
    )
    assert plan.models[0] == "HyMoERec" and "Mamba4Rec" in plan.models
    config = plan.config_dict("Mamba4Rec", "beauty", 3)
    # The scale beats the protocol's per-dataset value; the command line beats both.
    assert config["MAX_ITEM_LIST_LENGTH"] == 20 and config["hidden_size"] == 32
    assert config["dropout_prob"] == 0.4 and config["epochs"] == "1" and config["seed"] == 3
    assert build_plan(protocol="fame").config_dict("FAME", "beauty", 0)["valid_metric"] == "NDCG@20"
    with pytest.raises(ValueError, match="Unknown protocol"):
        build_plan(protocol="nope")


def test_plan_file_and_cli_dry_run(tmp_path, capsys, synth):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "models: {SASRec: {n_layers: 1}, GRU4Rec: ~}\ndatasets: [synth]\n"
        f"seeds: [4]\noverrides: {{epochs: 2, data_path: {synth.data_path}}}\n"
    )
    assert benchmark.main(["--plan", str(plan_file), "--dry-run", "--hidden_size=8"]) == 0
    out = capsys.readouterr().out
    assert "SASRec     synth        seed 4" in out and "'n_layers': 1" in out
    assert "'hidden_size': '8'" in out and "'epochs': 2" in out


def test_read_runs_of_missing_file_is_empty(tmp_path):
    assert read_runs(str(tmp_path / "nothing.jsonl")) == []


def test_std_is_sample_std():
    from recbole_moe.benchmark.report import Cell

    cell = Cell("X", [0, 1, 2], {"hit@10": [0.1, 0.2, 0.4]})
    assert cell.std("hit@10") == pytest.approx(float(np.std([0.1, 0.2, 0.4], ddof=1)))
    assert math.isnan(Cell("X", [0], {"hit@10": [0.1]}).std("hit@10"))


def test_an_interrupted_run_resumes_from_its_last_epoch(tiny_config, tmp_path, monkeypatch):
    from recbole_moe.trainer import RecBoleMoeTrainer

    config = {**tiny_config, **SMALL, "epochs": 3, "train_objective": "sequence"}
    config.pop("seed")
    plan = build_plan(
        models=["HyMoERec"], datasets=["synth"], seeds=[0], overrides=config, name="resume"
    )
    original = RecBoleMoeTrainer._add_train_loss_to_tensorboard

    def killed_after_epoch_1(self, epoch_idx, losses, tag="Loss/Train"):
        original(self, epoch_idx, losses, tag)
        if epoch_idx == 1:
            raise KeyboardInterrupt  # like a killed process: no record is written

    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", killed_after_epoch_1)
    out = str(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        execute(plan, out, log=quiet)
    assert read_runs(os.path.join(out, RUNS_FILE)) == []
    monkeypatch.setattr(RecBoleMoeTrainer, "_add_train_loss_to_tensorboard", original)
    assert execute(plan, out, log=quiet)["ok"] == 1
    (record,) = read_runs(os.path.join(out, RUNS_FILE))
    assert record["resumed_from"].endswith("-last.pth")
    assert record["epochs_run"] == 2  # epochs 1 and 2: the kill came before epoch 1 finished
    uninterrupted = execute(plan, str(tmp_path / "again"), log=quiet)
    assert uninterrupted["ok"] == 1
    (again,) = read_runs(str(tmp_path / "again" / RUNS_FILE))
    assert again["test_result"] == record["test_result"]
    # the record counts the epochs before the kill too: all three epochs' statistics
    assert [s["epoch"] for s in record["epoch_stats"]] == [0, 1, 2]
    assert record["epoch_stats"] == again["epoch_stats"]
    assert (record["epochs_total"], record["best_epoch"]) == (3, again["best_epoch"])
    # the wall time in all counts the killed process's epoch 0 too
    assert again["wall_total_s"] == again["duration_s"]
    assert record["wall_total_s"] > record["duration_s"]
    # finished: the resume point removed, the best checkpoint kept for further protocols
    assert not glob.glob(os.path.join(config["checkpoint_dir"], "*-last.pth"))
    assert os.path.isfile(record["model_file"])


def test_max_minutes_pauses_a_run_and_the_same_call_continues_it(tiny_config, tmp_path):
    config = {**tiny_config, **SMALL, "epochs": 3, "stopping_step": 10}
    config.update(train_objective="sequence")
    config.pop("seed")
    plan = build_plan(
        models=["SASRec"], datasets=["synth"], seeds=[0, 1], overrides=config, name="budget"
    )
    out = str(tmp_path / "out")
    # 0 minutes: each call trains one epoch of its first unfinished run, then pauses it
    # (no record: it is not finished) and starts no other run.
    messages: list[str] = []
    counts = execute(plan, out, log=messages.append, max_minutes=0)
    assert (counts["paused"], counts["ok"]) == (1, 0)
    assert read_runs(os.path.join(out, RUNS_FILE)) == []
    assert glob.glob(os.path.join(config["checkpoint_dir"], "*-last.pth"))  # the resume point
    assert any("paused before epoch 1" in m for m in messages)
    assert not any("seed 1" in m for m in messages)  # the second run waits
    calls, finished = 1, 0
    while not finished and calls < 10:
        calls += 1
        finished = execute(plan, out, log=quiet, max_minutes=0)["ok"]
    assert (calls, finished) == (3, 1)  # seed 0's epochs 0, 1 and 2, one call each
    (record,) = read_runs(os.path.join(out, RUNS_FILE))
    assert (record["seed"], record["epochs_run"], record["epochs_total"]) == (0, 1, 3)
    assert "time_budget_minutes" not in record["config"]  # how a call was bounded, not the run
    uninterrupted = execute(plan, str(tmp_path / "again"), log=quiet)
    assert uninterrupted["ok"] == 2
    again = {r["seed"]: r for r in read_runs(str(tmp_path / "again" / RUNS_FILE))}
    assert again[0]["test_result"] == record["test_result"]


def test_a_call_paused_before_any_run_finished_exits_3_without_a_report(
    tiny_config, tmp_path, capsys
):
    """The first call of a long run: paused after its first epoch, no record yet, so no report
    to write; the call must still say how to continue (exit 3), not fail on the report."""
    out = tmp_path / "out"
    argv = ["--models", "SASRec", "--datasets", "synth", "--seeds", "0", "--out", str(out)]
    settings = {**tiny_config, **SMALL, "epochs": 2, "train_objective": "sequence"}
    settings.pop("seed")
    argv += [f"--{key}={value}" for key, value in settings.items()]
    assert benchmark.main([*argv, "--max-minutes", "0"]) == 3
    printed = capsys.readouterr().out
    assert "1 paused (run again to continue)" in printed and "no report" in printed
    assert not (out / RUNS_FILE).exists()
    assert benchmark.main([*argv, "--max-minutes", "0"]) == 0  # epoch 1 of 2: finished
    assert len(read_runs(str(out / RUNS_FILE))) == 1 and (out / "report.md").is_file()


def test_max_minutes_must_not_be_negative(capsys):
    from recbole_moe.benchmark import run_main

    with pytest.raises(SystemExit) as exc:
        run_main(["--protocol", "hymoerec", "--max-minutes", "-1", "--dry-run"])
    assert exc.value.code == 2
    assert "--max-minutes must be a number of minutes >= 0, got -1" in capsys.readouterr().err


def _record(model: str, seed: int, ndcg: float) -> dict:
    return {
        "status": "ok",
        "dataset": "toys",
        "model": model,
        "seed": seed,
        "test_result": {"ndcg@10": ndcg},
        "config": {"train_objective": "sequence"},
        "plan": {"ours": ["FAME"], "report_metrics": ["NDCG@10"]},
    }


def test_single_seed_strongest_baseline_gets_a_tested_second_row():
    from recbole_moe.benchmark.report import summarize

    fame = [0.051, 0.050, 0.052]
    sasrec = [0.044, 0.0445, 0.0441]
    records = [_record("FAME", s, v) for s, v in enumerate(fame)]
    records += [_record("SASRec", s, v) for s, v in enumerate(sasrec)]
    records += [_record("GRU4Rec", s, v) for s, v in enumerate([0.03, 0.031, 0.029])]
    records.append(_record("Mamba4Rec", 0, 0.048))  # strongest mean, one seed
    (summary,) = summarize(records)
    first, second = summary.comparisons
    assert (first.baseline, first.n_base, first.tested_fallback) == ("Mamba4Rec", 1, False)
    assert math.isnan(first.p_value) and first.outcome == "untested"
    # The fallback is the strongest of the baselines with >= 2 seeds: SASRec, not GRU4Rec.
    assert (second.baseline, second.n_ours, second.n_base) == ("SASRec", 3, 3)
    assert second.tested_fallback
    assert second.p_value == pytest.approx(_welch_p(fame, sasrec), rel=1e-9)
    assert second.improvement == pytest.approx((np.mean(fame) / np.mean(sasrec) - 1) * 100)
    # With three Mamba4Rec seeds it is tested directly and no second row is added.
    records += [_record("Mamba4Rec", s, v) for s, v in [(1, 0.047), (2, 0.049)]]
    (summary,) = summarize(records)
    assert [(c.baseline, c.n_base) for c in summary.comparisons] == [("Mamba4Rec", 3)]


def _welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p-value by its formula (Welch-Satterthwaite degrees of freedom)."""
    from scipy import stats

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def test_welch_test_is_scipys_and_ignores_seed_order():
    """Model-vs-model rows use Welch's test: scipy's ttest_ind(equal_var=False) on the seeds,
    the same p-value whatever seed of one model would be paired with which of the other."""
    from scipy import stats

    from recbole_moe.benchmark.report import summarize

    fame = [0.0512, 0.0498, 0.0530]
    sasrec = [0.0481, 0.0502, 0.0470, 0.0490]  # a different number of seeds
    records = [_record("FAME", s, v) for s, v in enumerate(fame)]
    records += [_record("SASRec", s, v) for s, v in enumerate(sasrec)]
    (row,) = summarize(records)[0].comparisons
    expected = stats.ttest_ind(fame, sasrec, equal_var=False).pvalue
    assert row.p_value == pytest.approx(expected, rel=1e-12)
    assert row.p_value == pytest.approx(_welch_p(fame, sasrec), rel=1e-9)
    assert (row.n_ours, row.n_base) == (3, 4)
    # SASRec's seeds relabelled: a paired test would change, Welch's does not
    shuffled = [_record("SASRec", s, v) for s, v in enumerate(reversed(sasrec))]
    (again,) = summarize(records[:3] + shuffled)[0].comparisons
    assert again.p_value == pytest.approx(row.p_value, rel=1e-12)
    paired = [stats.ttest_rel(fame, b[:3]).pvalue for b in (sasrec, sasrec[::-1])]
    assert paired[0] != pytest.approx(paired[1])


def test_outcomes_of_both_protocols_and_old_records_shown_as_missing(tmp_path):
    """The report's win / tie / lose summary follows Welch's p < 0.05 and the sign, in each
    protocol; records written before test_result_seen_removed existed show as missing."""
    from recbole_moe.benchmark.report import summarize

    fame = {0: 0.060, 1: 0.061, 2: 0.062}
    sasrec = {0: 0.050, 1: 0.051, 2: 0.049}
    records = []
    for seed in range(3):
        ours = _record("FAME", seed, fame[seed])
        ours["test_result"]["hit@10"] = 0.09 + seed * 0.01  # a tie: spread over both sides
        ours["test_result_seen_removed"] = {"ndcg@10": sasrec[seed], "hit@10": 0.2}
        base = _record("SASRec", seed, sasrec[seed])
        base["test_result"]["hit@10"] = 0.10 + seed * 0.001
        if seed:  # seed 0 recorded before both protocols were
            base["test_result_seen_removed"] = {"ndcg@10": fame[seed], "hit@10": 0.1 + seed / 1000}
        records += [ours, base]
    plan = {"ours": ["FAME"], "report_metrics": ["NDCG@10", "Hit@10"]}
    for record in records:
        record["plan"] = plan
    (configured,) = summarize(records)
    assert {c.metric: c.outcome for c in configured.comparisons} == {
        "ndcg@10": "win",
        "hit@10": "tie",
    }
    (seen,) = summarize(records, "test_result_seen_removed")
    assert seen.missing == ["SASRec"]
    assert seen.cell("SASRec").seeds == [1, 2]
    outcomes = {c.metric: c.outcome for c in seen.comparisons}
    assert outcomes == {"ndcg@10": "lose", "hit@10": "win"}
    out = tmp_path / "out"
    out.mkdir()
    for record in records:
        record["key"] = f"{record['model']}|toys|{record['seed']}"
        append_record(str(out / RUNS_FILE), record)
    write_report(str(out), plots=False)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    configured_part, seen_part = markdown.split("### Test, each user's seen items removed")
    assert "Missing (recorded without these results): SASRec (1 run)." in seen_part
    assert "| FAME | SASRec | NDCG@10 +" in configured_part
    assert "| FAME | SASRec | HR@10 +" in seen_part and "| NDCG@10 -" in seen_part


def test_wall_time_counts_every_process_of_a_resumed_run():
    from recbole_moe.benchmark.report import efficiency_rows

    fresh = dict(_record("FAME", 0, 0.05), duration_s=600.0, wall_total_s=600.0)
    resumed = dict(_record("FAME", 1, 0.05), duration_s=300.0, wall_total_s=1500.0)
    older = dict(_record("FAME", 2, 0.05), duration_s=900.0)  # recorded before wall_total_s
    unknown = dict(_record("FAME", 3, 0.05), duration_s=60.0, wall_total_s=None)
    (row,) = efficiency_rows([fresh, resumed, older, unknown])
    assert row["wall_min"] == pytest.approx((600 + 1500 + 900) / 3 / 60)


def test_the_run_summary_of_a_recbole_trainer_without_epoch_times():
    """RecBole's own trainers (NCL's, KGIN's, the boosters') record no epoch times."""
    from recbole_moe.benchmark.runner import _run_summary

    record = {"status": "ok", "duration_s": 3.0, "epochs_run": 2, "train_time_per_epoch": None}
    record["test_result"] = {"ndcg@10": 0.125}
    assert _run_summary(record) == "ok in 3.0s (2 epochs), test ndcg@10 0.1250"
    record["train_time_per_epoch"] = 1.25
    assert _run_summary(record) == "ok in 3.0s (2 epochs, 1.2 s/epoch), test ndcg@10 0.1250"

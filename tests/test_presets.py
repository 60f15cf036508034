"""Benchmark presets and property files: the settings each run resolves to.

Every test reads the resolved RecBole config (``recbole_moe.config.Config``), built from the
property files alone or from a preset's ``Plan.config_dict``. Building a config reads no data.
"""

from __future__ import annotations

import csv
import json
import os

import pytest

from recbole_moe.benchmark.plans import PROTOCOLS, build_plan
from recbole_moe.benchmark.report import write_report
from recbole_moe.benchmark.runner import RUNS_FILE, append_record, run_key
from recbole_moe.config import DATASET_OVERRIDES_KEY, Config
from recbole_moe.errors import ConfigError
from recbole_moe.model import sequence_models
from recbole_moe.validation import config_problems, unknown_key_messages

AMAZON = ("beauty", "sports", "toys")
MOVIELENS = ("ml-100k", "ml-1m", "ml-1m-5core", "ml-20m")
SEQUENCE = {"train_objective": "sequence"}


def resolved(model: str, dataset: str, plan=None, seed: int = 0, **overrides) -> Config:
    """The final config of ``model`` on ``dataset``: property files, then ``plan``'s overrides
    (when given), then ``overrides``."""
    config_dict = plan.config_dict(model, dataset, seed) if plan is not None else {}
    config_dict.update(overrides)
    return Config(model, dataset, config_dict=config_dict)


def family_dropout(dataset: str) -> float:
    return 0.5 if dataset in AMAZON else 0.2


# --------------------------------------------------------------------------------------------
# Property files alone (no --protocol)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, valid_metric, epochs, batch",
    [
        ("FAME", "NDCG@20", 300, 256),
        ("HyMoERec", "NDCG@10", 200, 256),
        ("Mamba4Rec", "NDCG@10", 300, 2048),
    ],
)
def test_model_files_give_the_papers_run_settings(model, valid_metric, epochs, batch):
    config = resolved(model, "beauty")
    assert config["valid_metric"] == valid_metric  # the dataset file no longer overrides it
    assert (config["epochs"], config["train_batch_size"], config["stopping_step"]) == (
        epochs,
        batch,
        10,
    )
    assert DATASET_OVERRIDES_KEY not in config.final_config_dict


@pytest.mark.parametrize("dataset", AMAZON + MOVIELENS)
def test_dropout_follows_the_dataset_family(dataset):
    for model in ("FAME", "HyMoERec", "SASRec"):
        config = resolved(model, dataset)
        assert config["hidden_dropout_prob"] == family_dropout(dataset), model
        assert config["attn_dropout_prob"] == family_dropout(dataset), model
        assert config["valid_metric"] == ("NDCG@20" if model == "FAME" else "NDCG@10")
    # Mamba4Rec's own dropout: 0.4 on Amazon (its model file's dataset_overrides), 0.2 else.
    assert resolved("Mamba4Rec", dataset)["dropout_prob"] == (0.4 if dataset in AMAZON else 0.2)


def test_dataset_overrides_belong_to_their_model_only():
    # GRU4Rec's dropout_prob stays RecBole's default: Mamba4Rec's Amazon value is Mamba4Rec's.
    assert resolved("GRU4Rec", "beauty")["dropout_prob"] == 0.3
    # SASRec on beauty: the dataset file's 0.5 is RecBole's own SASRec default anyway.
    sasrec = resolved("SASRec", "beauty")
    assert (sasrec["hidden_dropout_prob"], sasrec["attn_dropout_prob"]) == (0.5, 0.5)
    # FAME's own ML-20M batch size beats its global 256.
    assert resolved("FAME", "ml-20m")["train_batch_size"] == 1024
    assert resolved("FAME", "toys")["train_batch_size"] == 256


def test_command_line_beats_the_model_files_dataset_overrides():
    config = resolved("Mamba4Rec", "beauty", dropout_prob=0.3, valid_metric="NDCG@5")
    assert config["dropout_prob"] == 0.3 and config["valid_metric"] == "NDCG@5"
    config = Config("Mamba4Rec", "sports")
    assert "dataset_overrides: sports" in config.source_of("dropout_prob")
    assert config.source_of("hidden_dropout_prob").endswith("dataset/sports.yaml")
    # Only property files have the section: as a setting it is unknown.
    messages = unknown_key_messages(config, [DATASET_OVERRIDES_KEY])
    assert len(messages) == 1 and "Unknown setting 'dataset_overrides'" in messages[0]


def test_a_dataset_without_property_file_gets_the_shared_valid_metric():
    assert resolved("SASRec", "some-other-dataset")["valid_metric"] == "NDCG@10"
    assert resolved("FAME", "some-other-dataset")["valid_metric"] == "NDCG@20"


def test_malformed_dataset_overrides_section_is_a_config_error(tmp_path, monkeypatch):
    bad = tmp_path / "HyMoERec.yaml"
    bad.write_text(
        "loss_type: CE\nn_layers: 1\ndataset_overrides:\n  beauty: 0.4\n", encoding="utf-8"
    )
    monkeypatch.setattr("recbole_moe.config.model_property_file", lambda model: str(bad))
    with pytest.raises(ConfigError, match="'dataset_overrides' must map dataset names"):
        Config("HyMoERec", "beauty")
    assert Config("HyMoERec", "toys")["n_layers"] == 1  # other datasets: entry unused


# --------------------------------------------------------------------------------------------
# Protocol presets
# --------------------------------------------------------------------------------------------

#: The resolved settings of SASRec on beauty under ``--protocol hymoerec
#: --train_objective=sequence``; runs recorded with these must stay comparable.
HYMOEREC_SASREC_BEAUTY = {
    "eval_args": {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    },
    "metrics": ["Hit", "NDCG", "MRR"],
    "learning_rate": 0.001,
    "stopping_step": 10,
    "eval_batch_size": 4096,
    "show_progress": False,
    "topk": [5, 10, 20],
    "valid_metric": "NDCG@10",
    "epochs": 200,
    "train_batch_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "MAX_ITEM_LIST_LENGTH": 50,
    "train_objective": "sequence",
}


def test_hymoerec_protocol_sasrec_on_beauty_is_unchanged():
    plan = build_plan(
        protocol="hymoerec",
        datasets=["beauty"],
        models=["SASRec"],
        seeds=[0],
        overrides=dict(SEQUENCE),
    )
    assert plan.config_dict("SASRec", "beauty", 0) == {**HYMOEREC_SASREC_BEAUTY, "seed": 0}
    config = resolved("SASRec", "beauty", plan)
    for key, value in HYMOEREC_SASREC_BEAUTY.items():
        if key != "eval_args":  # RecBole expands the mode per phase
            assert config[key] == value, key
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}


def test_hymoerec_protocol_uses_ml_1m_5core_with_movielens_settings():
    plan = build_plan(protocol="hymoerec")
    assert plan.datasets == ["ml-1m-5core", "beauty"]
    for model in ("HyMoERec", "SASRec", "BERT4Rec"):
        config = resolved(model, "ml-1m-5core", plan)
        assert (config["hidden_dropout_prob"], config["attn_dropout_prob"]) == (0.2, 0.2)
        assert config["MAX_ITEM_LIST_LENGTH"] == 200
        assert config["item_inter_num_interval"] == "[5,inf)"  # the 3,416-item variant
        assert (config["train_batch_size"], config["epochs"]) == (256, 200)
        assert config["valid_metric"] == "NDCG@10"


@pytest.mark.parametrize(
    "protocol, dataset",
    [
        ("hymoerec", "ml-1m-5core"),
        ("hymoerec", "beauty"),
        ("hymoerec", "sports"),
        ("fame", "beauty"),
        ("fame", "toys"),
        ("fame", "ml-20m"),
    ],
)
def test_mamba4rec_keeps_its_published_settings_inside_a_protocol(protocol, dataset):
    plan = build_plan(protocol=protocol, datasets=[dataset])
    config = resolved("Mamba4Rec", dataset, plan)
    assert (config["train_batch_size"], config["epochs"]) == (2048, 300)
    assert config["dropout_prob"] == (0.4 if dataset in AMAZON else 0.2)
    # The protocol's model selection still applies to it; the other models keep the preset's.
    assert config["valid_metric"] == ("NDCG@20" if protocol == "fame" else "NDCG@10")
    sasrec = resolved("SASRec", dataset, plan)
    assert sasrec["train_batch_size"] == (1024 if dataset == "ml-20m" else 256)
    assert sasrec["epochs"] == (300 if protocol == "fame" else 200)


def test_cpu_smoke_still_shrinks_every_model():
    plan = build_plan(protocol="hymoerec", scale="cpu-smoke", datasets=["beauty"])
    for model in plan.models:
        config = plan.config_dict(model, "beauty", 0)
        assert (config["epochs"], config["train_batch_size"]) == (2, 512), model
        assert config["MAX_ITEM_LIST_LENGTH"] == 20
    assert plan.config_dict("Mamba4Rec", "beauty", 0)["dropout_prob"] == 0.4


def test_fame_protocol_models():
    assert PROTOCOLS["fame"]["models"] == [
        "FAME",
        "SASRec",
        "HyMoERec",
        "Mamba4Rec",
        "GRU4Rec",
        "BERT4Rec",
    ]
    plan = build_plan(protocol="fame")
    config = resolved("HyMoERec", "beauty", plan)
    assert config["valid_metric"] == "NDCG@20" and config["epochs"] == 300


@pytest.mark.parametrize("protocol, model", [("hymoerec", "NARM"), ("fame", "Caser")])
def test_models_without_sequence_training_run_with_prefix(protocol, model):
    assert model not in sequence_models()
    plan = build_plan(
        protocol=protocol, datasets=["beauty"], overrides=dict(SEQUENCE), models=[model, "SASRec"]
    )
    assert plan.falls_back_to_prefix(model, "beauty")
    assert not plan.falls_back_to_prefix("SASRec", "beauty")
    config = resolved(model, "beauty", plan)
    assert config["train_objective"] == "prefix"
    assert not config_problems(config)  # runs instead of failing
    assert resolved("SASRec", "beauty", plan)["train_objective"] == "sequence"
    # Without a preset (or prefix_fallback in a plan file) the request stands, and is refused.
    flags = build_plan(models=[model], datasets=["beauty"], overrides=dict(SEQUENCE))
    config = resolved(model, "beauty", flags)
    assert config["train_objective"] == "sequence"
    assert any("not available for model" in p for p in config_problems(config))
    # A prefix benchmark changes nothing.
    assert not build_plan(protocol=protocol).falls_back_to_prefix(model, "beauty")
    # A sequence-only setting of the plan is set back for the prefix run.
    windows = dict(SEQUENCE, train_window="random")
    plan = build_plan(protocol=protocol, datasets=["beauty"], overrides=windows, models=[model])
    config = resolved(model, "beauty", plan)
    assert config["train_window"] == "last" and not config_problems(config)


def test_plan_file_can_ask_for_the_prefix_fallback(tmp_path):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "models: [NARM, SASRec]\ndatasets: [beauty]\nprefix_fallback: true\n"
        "overrides: {train_objective: sequence}\n",
        encoding="utf-8",
    )
    plan = build_plan(plan_file=str(plan_file))
    assert plan.config_dict("NARM", "beauty", 0)["train_objective"] == "prefix"
    assert plan.describe()["prefix_fallback"] is True


# --------------------------------------------------------------------------------------------
# The regime in every report table
# --------------------------------------------------------------------------------------------


def _record(model: str, seed: int, regime: str, ndcg: float, fallback: bool = False) -> dict:
    plan = build_plan(protocol="hymoerec", datasets=["beauty"], overrides=dict(SEQUENCE))
    return {
        "key": run_key(model, "beauty", seed),
        "model": model,
        "dataset": "beauty",
        "seed": seed,
        "status": "ok",
        "prefix_fallback": fallback,
        "plan": plan.describe(),
        "overrides": plan.config_dict(model, "beauty", seed),
        "config": {"train_objective": regime, "valid_metric": "NDCG@10"},
        "test_result": {"hit@10": ndcg * 2, "ndcg@10": ndcg},
        "epochs_run": 3,
        "train_time_per_epoch": 1.0,
        "n_params": 1000,
    }


def test_report_names_the_regime_of_every_table(tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    for seed in (0, 1):
        append_record(os.path.join(out, RUNS_FILE), _record("HyMoERec", seed, "sequence", 0.05))
        append_record(os.path.join(out, RUNS_FILE), _record("SASRec", seed, "sequence", 0.04))
        append_record(
            os.path.join(out, RUNS_FILE),
            _record("NARM", seed, "prefix", 0.06 + seed / 100, fallback=True),
        )
    write_report(out, plots=False)
    markdown = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    label = "train_objective: sequence; NARM: prefix"
    assert markdown.startswith(f"# Benchmark report: hymoerec ({label})\n")
    assert f"## beauty ({label})\n" in markdown
    assert "- Training regime (`train_objective`): sequence; NARM: prefix\n" in markdown
    assert "- NARM: `prefix` because the plan asked for `sequence`" in markdown
    assert "| NARM (prefix) | 2 |" in markdown and "| HyMoERec (ours) | 2 |" in markdown
    assert "| HyMoERec | HR@10 | NARM (prefix) |" in markdown  # the comparison table
    assert "| beauty | NARM | prefix |" in markdown and "| beauty | SASRec | sequence |" in markdown
    assert "| beauty | SASRec | sequence | NDCG@10 |" in markdown  # against published numbers
    with open(os.path.join(out, "beauty.csv"), encoding="utf-8") as f:
        regimes = {row["model"]: row["train_objective"] for row in csv.DictReader(f)}
    assert regimes == {"HyMoERec": "sequence", "SASRec": "sequence", "NARM": "prefix"}
    with open(os.path.join(out, "efficiency.csv"), encoding="utf-8") as f:
        assert {row["model"]: row["train_objective"] for row in csv.DictReader(f)} == regimes
    with open(os.path.join(out, RUNS_FILE), encoding="utf-8") as f:
        narm = [json.loads(line) for line in f if '"NARM"' in line]
    assert all(r["overrides"]["train_objective"] == "prefix" for r in narm)

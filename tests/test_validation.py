"""Bad input is rejected before training, with the value, what is allowed and its source."""

from __future__ import annotations

import logging
import os

import pytest

import recbole_moe
from recbole_moe import cli
from recbole_moe.errors import ConfigError, RecBoleMoeError

BAD_VALUES = [
    ({"top_k": 5}, "HyMoERec", r"top_k=5 \(from config_dict\) must be between 1 and n_experts=4"),
    ({"top_k": 0}, "HyMoERec", r"top_k=0 \(from config_dict\): must be an integer >= 1"),
    ({"hidden_size": 30, "n_heads": 4}, "SASRec", r"hidden_size=30 .* not divisible by n_heads=4"),
    ({"hidden_size": 0}, "SASRec", r"hidden_size=0 \(from config_dict\): must be an integer >= 1"),
    ({"inner_size": -8}, "SASRec", r"inner_size=-8 .*>= 1"),
    ({"n_layers": 0}, "SASRec", r"n_layers=0 .*>= 1"),
    ({"n_experts": 0}, "HyMoERec", r"n_experts=0 .*>= 1"),
    ({"learning_rate": 0}, "SASRec", r"learning_rate=0 .*must be a number > 0"),
    ({"learning_rate": -1e-3}, "SASRec", r"learning_rate=-0.001 .*> 0"),
    ({"train_batch_size": 0}, "SASRec", r"train_batch_size=0 .*>= 1"),
    ({"hidden_dropout_prob": 1.0}, "SASRec", r"hidden_dropout_prob=1.0 .*\[0, 1\)"),
    ({"attn_dropout_prob": -0.1}, "SASRec", r"attn_dropout_prob=-0.1 .*\[0, 1\)"),
    ({"MAX_ITEM_LIST_LENGTH": 1}, "SASRec", r"MAX_ITEM_LIST_LENGTH=1 .*>= 2"),
    ({"loss_type": "MSE"}, "SASRec", r"loss_type='MSE' .*'CE' and 'BPR'"),
    (
        {"train_batch_order": "sorted"},
        "SASRec",
        r"train_batch_order='sorted': allowed values are random, length_grouped",
    ),
    (
        {"train_batch_order": "length_grouped"},
        "BERT4Rec",
        r"length_grouped.*model BERT4Rec is not one of them",
    ),
    (
        {"train_batch_order": "length_grouped", "data_path_mode": "recbole"},
        "SASRec",
        r"length_grouped' needs the lean data path; data_path_mode is 'recbole'",
    ),
    ({"length_group_size": 0}, "SASRec", r"length_group_size=0 .*>= 1"),
    ({"scan_compile": "maybe"}, "Mamba4Rec", r"scan_compile='maybe' .*must be True or False"),
    ({"scan_chunk_size": 0}, "Mamba4Rec", r"scan_chunk_size=0 .*>= 1"),
    ({"eval_group_rows": -1}, "SASRec", r"eval_group_rows=-1 .*integer >= 0 \(~ or 0: whole"),
    ({"eval_group_rows": 0.5}, "SASRec", r"eval_group_rows=0.5 .*integer >= 0"),
    ({"time_budget_minutes": -5}, "SASRec", r"time_budget_minutes=-5 .*number >= 0"),
    ({"time_budget_minutes": "soon"}, "SASRec", r"time_budget_minutes='soon' .*number >= 0"),
    ({"time_budget_minutes": 30, "nproc": 2}, "SASRec", r"time_budget_minutes=30 .*one training"),
    # each model's own settings, from what its class declares (``accepts``)
    (
        {"gate": "mixed"},
        "FAME",
        r"gate='mixed' \(from config_dict\): allowed values are learned, uniform",
    ),
    ({"fusion": "sum"}, "FAME", r"fusion='sum' .*allowed values are logits, probs"),
    ({"item_subemb": "cut"}, "FAME", r"item_subemb='cut' .*allowed values are proj, split"),
    ({"head_prediction": "yes"}, "FAME", r"head_prediction='yes' .*must be True or False"),
    ({"fusion": "probs"}, "HyMoERec", r"fusion='probs' .*allowed values are adaptive, fixed, sum"),
    (
        {"warmup_type": "step"},
        "HyMoERec",
        r"warmup_type='step' .*allowed values are linear, cosine",
    ),
    ({"expert_inner_size": 0}, "HyMoERec", r"expert_inner_size=0 .*integer >= 1 or ~"),
    ({"warmup_steps": 2.5}, "HyMoERec", r"warmup_steps=2.5 .*integer >= 0 or ~"),
    ({"lb_weight": -0.1}, "HyMoERec", r"lb_weight=-0.1 .*must be a number >= 0"),
    ({"mamba_dt_init": "zero"}, "Mamba4Rec", r"mamba_dt_init='zero' .*recbole, mamba"),
    ({"d_state": 0}, "Mamba4Rec", r"d_state=0 .*>= 1"),
    (
        {"shared_expert": False, "routed_experts": False},
        "HyMoERec",
        r"routed_experts=False \(from config_dict\): HyMoERec needs the routed experts when "
        "shared_expert is off",
    ),
]


@pytest.mark.parametrize("overrides, model, pattern", BAD_VALUES)
def test_bad_value_is_rejected_before_training(overrides, model, pattern, tiny_config, tmp_path):
    tiny_config.update(overrides)
    with pytest.raises(ConfigError, match=pattern):
        recbole_moe.run(model, "synth", config_dict=tiny_config)
    assert not (tmp_path / "log").exists() and not (tmp_path / "saved").exists()


def test_each_problem_is_listed_once(tiny_config):
    tiny_config.update(stopping_step=0, epochs=0)
    with pytest.raises(ConfigError) as error:
        recbole_moe.run("SASRec", "synth", config_dict=tiny_config)
    assert str(error.value).count("stopping_step=0") == 1
    assert str(error.value).count("epochs=0") == 1


def test_source_is_a_config_file_or_property_file(tiny_config, tmp_path):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("n_experts: 2\n")
    tiny_config["top_k"] = 3
    with pytest.raises(ConfigError) as info:
        recbole_moe.run(
            "HyMoERec", "synth", config_dict=tiny_config, config_file_list=[str(yaml_file)]
        )
    assert f"n_experts=2 (from config file {yaml_file})" in str(info.value)

    del tiny_config["top_k"]
    yaml_file.write_text("top_k: 9\n")
    with pytest.raises(ConfigError) as info:
        recbole_moe.run(
            "HyMoERec", "synth", config_dict=tiny_config, config_file_list=[str(yaml_file)]
        )
    message = str(info.value)
    assert f"top_k=9 (from config file {yaml_file})" in message
    assert "n_experts=4 (from property file" in message and "HyMoERec.yaml" in message


def test_cli_names_the_command_line_and_exits_non_zero(synth, capsys):
    code = cli.main(
        ["--model", "HyMoERec", "--dataset", "synth", f"--data_path={synth.data_path}", "--top_k=7"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "top_k=7 (from the command line) must be between 1 and n_experts=4" in err


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("epochs: [1, 2\n", r"is not valid YAML"),
        ("- just\n- a list\n", r"must hold a mapping"),
        (None, r"cannot read config file"),
    ],
)
def test_broken_or_missing_yaml(content, pattern, tiny_config, tmp_path):
    path = tmp_path / "conf.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=pattern) as info:
        recbole_moe.run("SASRec", "synth", config_dict=tiny_config, config_file_list=[str(path)])
    assert str(path) in str(info.value)


def test_unknown_key_warns_with_close_match(tiny_config, caplog):
    from recbole_moe.quick_start import prepare_run

    tiny_config["n_expert"] = 8
    with caplog.at_level(logging.WARNING):
        prepare_run("HyMoERec", "synth", config_dict=tiny_config)
    assert "Unknown setting 'n_expert' (from config_dict)" in caplog.text
    assert "Did you mean 'n_experts'?" in caplog.text


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("", r"the file is empty"),
        (
            "user_id:token\titem_id:token\ttimestamp:date\n1\t1\t0\n",
            r"line 1: header column 'timestamp:date'",
        ),
        (
            "user_id:token\titem_id:token\ttimestamp:float\n1\t1\t0\n1\t2\tyesterday\n",
            r"line 3: non-numeric timestamp 'yesterday'",
        ),
    ],
)
def test_malformed_atomic_file(content, pattern, tiny_config, tmp_path):
    data = tmp_path / "bad_data"
    (data / "broken").mkdir(parents=True)
    inter = data / "broken" / "broken.inter"
    inter.write_text(content)
    tiny_config["data_path"] = str(data)
    with pytest.raises(RecBoleMoeError, match=pattern) as info:
        recbole_moe.run("SASRec", "broken", config_dict=tiny_config)
    assert str(inter) in str(info.value)
    assert not (tmp_path / "saved").exists()
    leftover = (
        [f for _, _, files in os.walk(tmp_path / "log") for f in files]
        if (tmp_path / "log").exists()
        else []
    )
    assert leftover == []


def test_a_context_aware_models_evaluation_settings_are_named_as_recboles():
    """DeepFM keeps RecBole's labeled evaluation (AUC, LogLoss): an error about those keys
    names RecBole's settings, not our dataset file whose values were not used."""
    from recbole_moe.config import Config

    config = Config("DeepFM", "ml-100k", config_dict={"epochs": 1})
    assert config["metrics"] == ["AUC", "LogLoss"]
    assert config.source_of("metrics").startswith("RecBole's settings for DeepFM")
    sasrec = Config("SASRec", "ml-100k", config_dict={"epochs": 1})
    assert sasrec.source_of("metrics").endswith("ml-100k.yaml")

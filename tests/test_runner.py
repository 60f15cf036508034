"""The Python API and the command line: training, overrides and clear errors."""

from __future__ import annotations

import os
import sys

import pytest

import recbole_moe
from recbole_moe import cli
from recbole_moe.config import Config
from recbole_moe.errors import DatasetNotFoundError, MissingPackageError, UnknownModelError
from recbole_moe.model import get_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sasrec_trains_and_beats_random(tiny_config, synth):
    tiny_config.update(epochs=3)
    result = recbole_moe.run("SASRec", "synth", config_dict=tiny_config)
    for part in ("best_valid_result", "test_result"):
        assert set(result[part]) == {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in result[part].values())
    random_hit = 10 / synth.n_items
    assert result["test_result"]["hit@10"] > 3 * random_hit
    assert os.path.isfile(result["model_file"]) and os.path.isfile(result["log_file"])


def test_same_seed_same_metrics(tiny_config):
    first = recbole_moe.run("SASRec", "synth", config_dict=dict(tiny_config), saved=False)
    second = recbole_moe.run("SASRec", "synth", config_dict=dict(tiny_config), saved=False)
    assert first["test_result"] == second["test_result"]


def test_parse_overrides():
    parsed = cli.parse_overrides(["--epochs=2", "--topk=[5,10]", "--eval_args={'mode': 'full'}"])
    assert parsed == {"epochs": "2", "topk": "[5,10]", "eval_args": "{'mode': 'full'}"}
    with pytest.raises(ValueError, match="--key=value"):
        cli.parse_overrides(["epochs=2"])
    with pytest.raises(ValueError, match="twice"):
        cli.parse_overrides(["--epochs=2", "--epochs=3"])


def test_overrides_are_typed_and_beat_config_files(tmp_path, synth):
    yaml_file = tmp_path / "a.yaml"
    yaml_file.write_text("epochs: 7\nlearning_rate: 0.01\n")
    overrides = cli.parse_overrides(["--epochs=2", "--topk=[5,10]", "--show_progress=false"])
    overrides["data_path"] = synth.data_path
    config = Config("SASRec", "synth", config_file_list=[str(yaml_file)], config_dict=overrides)
    assert config["epochs"] == 2 and config["learning_rate"] == 0.01
    assert config["topk"] == [5, 10] and config["show_progress"] is False
    # A CE model gets train_neg_sample_args: ~ without the user writing it.
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_get_model_resolves_recbole_models_and_suggests():
    from recbole.model.sequential_recommender import GRU4Rec

    assert get_model("GRU4Rec") is GRU4Rec
    with pytest.raises(UnknownModelError, match="Did you mean 'SASRec'"):
        get_model("SASrec")


@pytest.mark.parametrize(
    "model, sources, threshold, valid_metric",
    [
        ("SASRec", {"inter"}, None, "NDCG@10"),
        ("KGIN", {"inter", "kg", "link"}, None, "NDCG@10"),
        ("DeepFM", {"inter", "user", "item"}, {"rating": 4}, "AUC"),
        ("DIN", {"inter", "user", "item"}, None, "AUC"),
    ],
)
def test_model_family_keeps_its_files_and_metric(model, sources, threshold, valid_metric):
    """Our ml-100k file loads the interactions only; a knowledge or context-aware model still
    gets the files RecBole's settings for its family load, and a model computing AUC and
    LogLoss selects on AUC (not our top-k default)."""
    config = Config(model, "ml-100k", config_dict={})
    assert set(config["load_col"]) == sources
    assert config["threshold"] == threshold
    assert config["valid_metric"] == valid_metric
    assert (valid_metric == "AUC") == (config["metrics"] == ["AUC", "LogLoss"])
    if threshold:
        assert "rating" in config["load_col"]["inter"]
        assert config["eval_args"]["mode"] == {"valid": "labeled", "test": "labeled"}


def test_every_recbole_model_resolves_or_names_its_package():
    """Each model RecBole 1.2.1 registers is known, LightGBM and XGBoost included: its class,
    or (optional package missing) one line with the install command."""
    from recbole_moe import model as registry

    names = registry.recbole_models()
    assert {"LightGBM", "XGBoost", "KGAT", "KGIN", "DeepFM", "SASRec"} <= set(names)
    assert set(names) <= set(registry.available_models())
    for name in names:
        missing = registry.missing_package(name)
        if missing:
            with pytest.raises(MissingPackageError, match=f"pip install {missing[1]}$"):
                get_model(name)
        else:
            assert get_model(name).__name__ == name


@pytest.mark.parametrize(
    "model, package, command",
    [("LightGBM", "lightgbm", "pip install lightgbm"), ("KGAT", "dgl", "pip install dgl")],
)
def test_cli_missing_optional_package_fails_before_data(
    model, package, command, monkeypatch, capsys
):
    """Simulates the package's absence; the dataset does not exist either, so an error about
    the package (not the data) shows that the check comes first."""
    from recbole_moe import model as registry

    find_spec = registry.importlib.util.find_spec
    monkeypatch.setattr(
        registry.importlib.util,
        "find_spec",
        lambda name, *args: None if name == package else find_spec(name, *args),
    )
    code = cli.main(["--model", model, "--dataset", "no-such-dataset"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"recbole-moe: error: RecBole's {model} needs the package '{package}', which is not "
        f"installed: {command}"
    )


def test_cli_unknown_model_lists_available(capsys):
    code = cli.main(["--model", "HyMoERecc", "--dataset", "ml-100k"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown model 'HyMoERecc'" in err and "Did you mean 'HyMoERec'" in err
    assert "SASRec" in err and "GRU4Rec" in err


def test_cli_missing_dataset_fails_without_download(tmp_path, capsys, monkeypatch):
    from recbole.data.dataset import Dataset

    def no_download(self):  # pragma: no cover - reaching it is the failure
        raise AssertionError("RecBole's download was attempted")

    monkeypatch.setattr(Dataset, "_download", no_download)
    monkeypatch.delenv("RECBOLE_MOE_RAW_DATA", raising=False)
    code = cli.main(
        ["--model", "SASRec", "--dataset", "nosuchdata", f"--data_path={tmp_path}", "--epochs=1"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "nosuchdata" in err and str(tmp_path) in err and "prepare" in err
    assert not (tmp_path / "nosuchdata").exists()


def test_missing_dataset_error_type(tmp_path, monkeypatch):
    monkeypatch.delenv("RECBOLE_MOE_RAW_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError):
        recbole_moe.run("SASRec", "nosuchdata", config_dict={"data_path": str(tmp_path)})


def test_cli_bad_argument_exit_code():
    assert cli.main(["--model", "SASRec", "epochs=1"]) == 2


def test_run_script_trains_and_prints_metrics(run_tiny_cli, tmp_path):
    """``python run_recbole_moe.py`` end to end in a subprocess, from another directory."""
    proc = run_tiny_cli([sys.executable, os.path.join(REPO_ROOT, "run_recbole_moe.py")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    test_line = next(line for line in proc.stdout.splitlines() if line.startswith("test      :"))
    assert "hit@10:" in test_line and "ndcg@10:" in test_line
    assert "checkpoint:" in proc.stdout


def test_run_log_records_seed_versions_and_resolved_config(tiny_config):
    import torch

    tiny_config.update(seed=123, learning_rate=0.0042, state="INFO")
    result = recbole_moe.run("SASRec", "synth", config_dict=tiny_config, saved=False)
    log = open(result["log_file"], encoding="utf-8").read()
    assert "seed: 123" in log and f"torch {torch.__version__}" in log and "recbole 1.2.1" in log
    assert "learning_rate = 0.0042" in log  # the resolved config is logged

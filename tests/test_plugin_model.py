"""A model from another package, in its module and its property file only: registered with a
``recbole_moe.models`` entry point, it trains, has its settings checked before any data loads,
and runs in a benchmark whose report shows it as ours, with its declared statistics."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

import recbole_moe
from recbole_moe.benchmark.plans import build_plan
from recbole_moe.benchmark.report import write_report
from recbole_moe.benchmark.runner import RUNS_FILE, execute, read_runs
from recbole_moe.config import Config
from recbole_moe.errors import ConfigError
from recbole_moe.model import available_models, get_model, sequence_models
from recbole_moe.testing import write_model_package
from recbole_moe.validation import unknown_key_messages

TOY_MODULE = '''
"""ToyPool: the next item from the mean (or the last) item embedding of the history so far."""

import torch
from torch import nn

from recbole_moe.model.base import DotProductSequentialRecommender
from recbole_moe.model.declaration import Insight, Number, OneOf, Panel, fmt_list


class ToyPool(DotProductSequentialRecommender):
    accepts = {"pooling": OneOf(("mean", "last")), "toy_size": Number(low=1, integer=True)}
    sequence_trainable = True
    proposed = True
    smoke_settings = {"toy_size": 8}
    insight = Insight(
        description="ToyPool: mean norm of its training representations.",
        columns=(("norm", lambda s: fmt_list(s["norm"])),),
        panels=(Panel("norm", lambda s: s["norm"]),),
        series="model",
    )

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.pooling = config["pooling"]
        self.loss_type = config["loss_type"]
        self.initializer_range = config["initializer_range"]
        self.item_embedding = nn.Embedding(self.n_items, config["toy_size"], padding_idx=0)
        self.mix = nn.Linear(config["toy_size"], config["toy_size"])
        self.loss_fct = self.build_loss()
        self.norms = []
        self.apply(self._init_weights)

    def forward_positions(self, item_seq, item_seq_len):
        states = self.item_embedding(item_seq)  # [B, L, D]
        if self.pooling == "mean":
            seen = (item_seq != 0).cumsum(1).clamp(min=1).unsqueeze(-1)  # [B, L, 1]
            states = states.cumsum(1) / seen
        states = self.mix(states)
        if self.training:
            self.norms.append(float(states.detach().norm(dim=-1).mean()))
        return states

    def forward(self, item_seq, item_seq_len):
        states = self.forward_positions(item_seq, item_seq_len)
        return self.gather_indexes(states, item_seq_len - 1)  # [B, D]

    def epoch_statistics(self):
        return {"norm": [sum(self.norms) / len(self.norms)]} if self.norms else None

    def reset_statistics(self):
        self.norms = []
'''

TOY_PROPERTIES = """\
pooling: mean                   # (str) How the history is summarised. Range in ['mean', 'last'].
toy_size: 16                    # (int) Embedding size.
initializer_range: 0.02         # (float) Std of the normal initialisation.
loss_type: CE                   # (str) Recommendation loss. Range in ['CE', 'BPR'].
train_neg_sample_args: ~        # (dict) No negative sampling for CE.
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Iterator[str]:
    """The package ``toy_models`` with the model ToyPool, registered and importable (for this
    module's tests only)."""
    root = str(tmp_path_factory.mktemp("plugins"))
    write_model_package(
        root, "toy_models", {"toypool.py": TOY_MODULE, "ToyPool.yaml": TOY_PROPERTIES}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(root)
        yield os.path.join(root, "toy_models")
    for name in [m for m in sys.modules if m.split(".")[0] == "toy_models"]:
        del sys.modules[name]


def test_the_registry_finds_the_model_by_its_module(toy):
    model = get_model("ToyPool")
    assert model.__module__ == "toy_models.toypool"
    assert "ToyPool" in available_models() and "ToyPool" in sequence_models()


def test_its_property_file_and_declared_settings(toy, tiny_config):
    config = Config("ToyPool", "synth", config_dict=tiny_config)
    assert (config["pooling"], config["toy_size"]) == ("mean", 16)
    assert config.source_of("toy_size") == f"property file {os.path.join(toy, 'ToyPool.yaml')}"
    assert unknown_key_messages(config, ["pooling", "toy_size", "toy_sise"]) == [
        f"Unknown setting 'toy_sise' (from {config.source_of('toy_sise')}): no model, dataset "
        "or RecBole setting uses it, so it has no effect. Did you mean 'toy_size'?"
    ]


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"pooling": "max"}, r"pooling='max' \(from config_dict\): allowed values are mean, last"),
        ({"toy_size": 0}, r"toy_size=0 \(from config_dict\): must be an integer >= 1"),
    ],
)
def test_its_settings_are_checked_before_data_loads(toy, tiny_config, tmp_path, overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        recbole_moe.run("ToyPool", "synth", config_dict={**tiny_config, **overrides})
    assert not (tmp_path / "log").exists()


def test_it_trains_under_both_regimes(toy, tiny_config):
    prefix = recbole_moe.run("ToyPool", "synth", config_dict=tiny_config, saved=False)
    assert prefix["epochs_run"] == 1 and prefix["n_params"] == 80 * 16 + 16 * 16 + 16 + 16
    assert prefix["epoch_stats"][0]["norm"][0] > 0
    sequence = recbole_moe.run(
        "ToyPool",
        "synth",
        config_dict={**tiny_config, "train_objective": "sequence", "pooling": "last"},
        saved=False,
    )
    assert sequence["config"]["train_objective"] == "sequence"
    assert sequence["test_result"]["ndcg@10"] > 0


def test_benchmark_runs_and_reports_it_as_ours(toy, tiny_config, tmp_path):
    overrides = {k: v for k, v in tiny_config.items() if k != "seed"}
    plan = build_plan(
        models=["ToyPool", "SASRec"],
        datasets=["synth"],
        seeds=[0],
        scale="cpu-smoke",
        overrides={**overrides, "epochs": 1},
        name="toy",
    )
    assert plan.config_dict("ToyPool", "synth", 0)["toy_size"] == 8  # its smoke_settings
    assert "toy_size" not in plan.config_dict("SASRec", "synth", 0)
    out = str(tmp_path / "out")
    assert execute(plan, out, log=lambda _: None)["ok"] == 2
    (record,) = [r for r in read_runs(os.path.join(out, RUNS_FILE)) if r["model"] == "ToyPool"]
    assert record["config"]["toy_size"] == 8 and record["plan"]["ours"] == ["ToyPool"]
    written = write_report(out, plots=True)
    markdown = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "| ToyPool (ours) | 1 |" in markdown and "| SASRec | 1 |" in markdown
    norm = record["epoch_stats"][-1]["norm"][0]
    assert "ToyPool: mean norm of its training representations." in markdown
    assert f"| synth | 0 | 1 | [{norm:.3f}] |" in markdown
    assert os.path.join(out, "synth_ToyPool_insight.png") in written

"""Every model RecBole 1.2.1 registers builds, trains one batch and evaluates through
``recbole_moe.run`` (the runner's path) on today's stack.

The list comes from RecBole's package (``recbole_moe.model.recbole_model_families``), so a
model added or broken by a library upgrade shows up here. Models whose optional package is
not installed are skipped, naming it.
"""

from __future__ import annotations

import math

import psutil
import pytest

from recbole_moe.model import missing_package, recbole_model_families
from recbole_moe.quick_start import run
from recbole_moe.testing import KG_EMBEDDING_SETTINGS, make_feature_dataset

#: Every dataset file's columns, as ``load_col`` (each family loads the part it reads).
INTER = ["user_id", "item_id", "rating", "timestamp"]
USER = ["user_id", "age", "gender"]
ITEM = ["item_id", "price", "genre"]
KG = {"kg": ["head_id", "relation_id", "tail_id"], "link": ["item_id", "entity_id"]}
TOP5 = {"metrics": ["Recall", "NDCG"], "topk": [5], "valid_metric": "NDCG@5"}

#: Settings shared by every model: one batch, one epoch, small layers, no filtering.
COMMON = {
    "epochs": 1,
    "train_batch_size": 4096,
    "eval_batch_size": 4096,
    "embedding_size": 8,
    "hidden_size": 8,
    "inner_size": 16,
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "show_progress": False,
    "state": "ERROR",
    "seed": 0,
    "log_wandb": False,
}

FAMILY_SETTINGS = {
    "general_recommender": {"load_col": {"inter": INTER}, **TOP5},
    "knowledge_aware_recommender": {"load_col": {"inter": INTER, **KG}, **TOP5},
    "sequential_recommender": {
        "load_col": {"inter": INTER, "item": ITEM},
        "MAX_ITEM_LIST_LENGTH": 5,
        **TOP5,
    },
    "context_aware_recommender": {
        "load_col": {"inter": INTER, "user": USER, "item": ITEM},
        "threshold": {"rating": 4},
        "numerical_features": ["age", "price"],
    },
    "exlib_recommender": {
        "load_col": {"inter": INTER, "user": USER, "item": ITEM},
        "threshold": {"rating": 4},
    },
}
SEQUENTIAL_SPLIT = {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}

#: Pre-trained entity and relation embeddings (``.ent`` / ``.rel``) for GRU4RecKG and KSR.
KG_EMBEDDINGS = {
    **KG_EMBEDDING_SETTINGS,
    "kg_embedding_size": 8,
    "eval_args": SEQUENTIAL_SPLIT,
}

#: What a model needs beyond its family's settings on the tiny data.
MODEL_SETTINGS = {
    "DIN": {
        "load_col": {"inter": INTER, "user": USER, "item": ITEM},
        "eval_args": {**SEQUENTIAL_SPLIT, "mode": "uni5"},
    },
    "ConvNCF": {"embedding_size": 64},
    "NCL": {"num_clusters": 4},
    "LightGBM": {"lgb_num_boost_round": 2},
    "XGBoost": {"xgb_num_boost_round": 2},  # k-means needs at least as many users as clusters
    # DGCF samples max(n_users, n_items) / n_batches users without replacement: two batches.
    "DGCF": {"train_batch_size": 64},  # its CNN halves a 64 x 64 map down to 1 x 1
    "FDSA": {"selected_features": ["genre"]},
    "GRU4RecF": {"selected_features": ["genre"]},
    "SASRecF": {"selected_features": ["genre"]},
    "S3Rec": {"item_attribute": "genre", "pretrain_epochs": 1, "save_step": 1},
    "RaCT": {"pretrain_epochs": 1, "save_step": 1},
    "GRU4RecCPR": {"reranker_CAN_NUM": 5},  # a reranker partition within the 20 items
    "SASRecCPR": {"reranker_CAN_NUM": 5},
    "GRU4RecKG": KG_EMBEDDINGS,
    "KSR": KG_EMBEDDINGS,
}
MODEL_SETTINGS["DIEN"] = MODEL_SETTINGS["DIN"]

#: Variants beyond each model's defaults: GCMC sums its GCN layers instead of stacking them.
VARIANTS = {"GCMC-sum": ("GCMC", {"accum": "sum"})}

CASES = {name: (name, {}) for name in recbole_model_families()} | VARIANTS


@pytest.fixture(scope="module")
def feature_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("every-model")
    make_feature_dataset(str(root), name="feat", emb_size=8)
    return str(root)


def test_every_family_is_enumerated():
    families = recbole_model_families()
    assert {"LightGCN", "KGIN", "SASRec", "DeepFM", "LightGBM", "XGBoost"} <= set(families)
    assert set(families.values()) == set(FAMILY_SETTINGS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_trains_one_batch(case, feature_data, tmp_path, monkeypatch):
    name, variant = CASES[case]
    missing = missing_package(name)
    if missing:
        pytest.skip(f"{name} needs '{missing[0]}' (pip install {missing[1]})")
    family = recbole_model_families()[name]
    config_dict = {
        **COMMON,
        **FAMILY_SETTINGS[family],
        **MODEL_SETTINGS.get(name, {}),
        **variant,
        "data_path": feature_data,
        "checkpoint_dir": str(tmp_path / "saved"),
    }
    # run() logs RecBole's environment table, whose CPU usage is sampled over one second
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: 0.0)
    # saved=True as on the command line: the best checkpoint is written and reloaded for the test
    result = run(name, "feat", config_dict=config_dict, saved=True)
    assert result["epochs_trained"] in (0, 1)  # RecBole's own trainers do not report epochs
    metrics = result["test_result"]
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics

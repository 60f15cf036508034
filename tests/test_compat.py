"""Each compatibility patch, checked by behaviour that breaks without it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import recbole_moe
from recbole_moe import compat
from recbole_moe.config import Config


def test_numpy_aliases_used_by_recbole_exist():
    for name in ("float", "int", "bool", "complex_", "unicode_", "float_", "long", "object"):
        assert hasattr(np, name), name
    # RecBole's own compatibility hook reads np.float_ etc.; it must not raise on numpy 2.
    Config.compatibility_settings(None)


def test_recbole_metrics_run_on_numpy_2():
    from recbole.evaluator.metrics import NDCG

    metric = NDCG({"topk": [2], "metric_decimal_place": 4})
    pos_index = np.array([[False, True], [True, False]])
    pos_len = np.array([1, 1])
    result = metric.metric_info(pos_index, pos_len)
    assert result[:, 1] == pytest.approx([1 / np.log2(3), 1.0])


def test_apply_is_idempotent():
    from recbole.data.dataset import dataset as dataset_module
    from recbole.trainer import trainer as trainer_module

    pd_proxy, torch_proxy = dataset_module.pd, trainer_module.torch
    compat._APPLIED = False
    compat.apply()
    assert dataset_module.pd is pd_proxy and trainer_module.torch is torch_proxy


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_missing_values_are_filled(tmp_path):
    """pandas 3 ignores ``df[col].fillna(inplace=True)``: missing floats/token seqs stay NaN."""
    from recbole.data import create_dataset

    root = tmp_path / "data"
    _write(
        root / "gaps" / "gaps.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{t}\n" for u in range(1, 6) for t, i in enumerate(range(1, 6))),
    )
    _write(
        root / "gaps" / "gaps.item",
        "item_id:token\tprice:float\ttags:token_seq\n"
        "1\t1.0\ta b\n2\t\tb\n3\t3.0\t\n4\t5.0\tc\n5\t\ta\n",
    )
    config = Config(
        "BPR",
        "gaps",
        config_dict={
            "data_path": str(root),
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"],
                "item": ["item_id", "price", "tags"],
            },
            "normalize_field": [],
            "normalize_all": False,
            "state": "WARNING",
        },
    )
    dataset = create_dataset(config)
    dataset.build()  # converts the features to padded tensors
    item_feat = dataset.get_item_feature()
    price = item_feat["price"].numpy()
    assert not np.isnan(price).any()
    # Items 2 and 5 had no price: filled with the mean of the others, 3.0.
    ids = dataset.field2id_token["item_id"]
    for raw in ("2", "5"):
        assert price[list(ids).index(raw)] == pytest.approx(3.0)
    tags = item_feat["tags"]
    assert int((tags[list(ids).index("3")] != 0).sum()) == 0  # empty token_seq cell -> empty
    assert int((tags[list(ids).index("1")] != 0).sum()) == 2  # "a b" -> two tokens


def test_thop_flops_counter_imports():
    ok, reason = compat.thop_available()
    assert ok, reason


def test_checkpoint_written_by_training_reloads(tiny_config):
    """torch >= 2.6 refuses RecBole's checkpoints with ``weights_only=True``."""
    result = recbole_moe.run("SASRec", "synth", config_dict=tiny_config)
    checkpoint = compat.load_recbole_checkpoint(result["model_file"])
    assert "state_dict" in checkpoint and "config" in checkpoint
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(result["model_file"])  # the safe default is left in place elsewhere

    from recbole_moe.quick_start import get_trainer, prepare_run

    parts = prepare_run("SASRec", "synth", config_dict=tiny_config, log=False)
    config, model = parts.config, parts.model
    trainer = get_trainer(config, model)
    trainer.resume_checkpoint(result["model_file"])
    assert trainer.start_epoch == 1
    for name, value in checkpoint["state_dict"].items():
        assert torch.equal(model.state_dict()[name].cpu(), value.cpu()), name


def test_importing_recbole_models_leaves_autograd_anomaly_mode_off():
    """RecBole's sine.py switches anomaly mode on at import; the compat layer switches it off."""
    import subprocess
    import sys

    code = (
        "import torch, recbole_moe; from recbole_moe.model import get_model; "
        "get_model('SINE'); get_model('SASRec'); print(torch.is_anomaly_enabled())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- graph models' adjacency matrices on SciPy >= 1.13 (no dok_matrix._update) -----------------
def _interactions(n_users: int = 4, n_items: int = 5):
    """A tiny user x item interaction matrix with a repeated pair and an item nobody has."""
    import scipy.sparse as sp

    rows = np.array([0, 0, 1, 2, 2, 2, 3, 0])
    cols = np.array([1, 3, 0, 1, 2, 3, 3, 1])  # (0, 1) twice; item 4 has no interaction
    return sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def _dense_bipartite(inter, n_nodes: int) -> np.ndarray:
    """The symmetric 0/1 user-item adjacency, items after users, padded to ``n_nodes``."""
    n_users = inter.shape[0]
    adjacency = np.zeros((n_nodes, n_nodes))
    for u, i in zip(inter.row, inter.col, strict=True):
        adjacency[u, n_users + i] = adjacency[n_users + i, u] = 1.0
    return adjacency


@pytest.mark.parametrize(
    "module, name",
    [
        ("general_recommender.lightgcn", "LightGCN"),
        ("general_recommender.ngcf", "NGCF"),
        ("general_recommender.ncl", "NCL"),
        ("general_recommender.gcmc", "GCMC"),
    ],
)
def test_normalized_adjacency_is_d_half_a_d_half(module, name):
    import importlib
    import types

    inter = _interactions()
    model = types.SimpleNamespace(n_users=4, n_items=5, interaction_matrix=inter, device="cpu")
    cls = getattr(importlib.import_module(f"recbole.model.{module}"), name)
    got = cls.get_norm_adj_mat(model).to_dense().numpy()

    adjacency = _dense_bipartite(inter, 9)
    d = (adjacency.sum(axis=1) + 1e-7) ** -0.5
    np.testing.assert_allclose(got, d[:, None] * adjacency * d[None, :], rtol=1e-6, atol=1e-7)


def test_spectralcf_laplacian_is_identity_minus_d_inv_a():
    import types

    from recbole.model.general_recommender.spectralcf import SpectralCF

    inter = _interactions()
    model = types.SimpleNamespace(n_users=4, n_items=5, interaction_matrix=inter, device="cpu")
    model.get_eye_mat = lambda num: SpectralCF.get_eye_mat(model, num)
    got = SpectralCF.get_laplacian_matrix(model).to_dense().numpy()

    adjacency = _dense_bipartite(inter, 9)
    expected = np.eye(9) - adjacency / (adjacency.sum(axis=1, keepdims=True) + 1e-7)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("module, name", [("kgin", "KGIN"), ("mcclk", "MCCLK")])
@pytest.mark.parametrize("mode", ["bi", "si"])
def test_knowledge_interaction_matrix_is_normalized(module, name, mode):
    import importlib
    import types

    inter = _interactions()
    n_entities = 7  # items are the first 5 entities; 2 more appear only in the graph
    model = types.SimpleNamespace(n_users=4, n_entities=n_entities, inter_matrix=inter)
    model.device = "cpu"
    cls = getattr(
        importlib.import_module(f"recbole.model.knowledge_aware_recommender.{module}"), name
    )
    norm_matrix, norm_graph = cls.get_norm_inter_matrix(model, mode=mode)

    adjacency = _dense_bipartite(inter, 4 + n_entities)
    degree = adjacency.sum(axis=1)
    with np.errstate(divide="ignore"):
        scale = np.where(degree > 0, degree ** (-0.5 if mode == "bi" else -1.0), 0.0)
    expected = scale[:, None] * adjacency * (scale[None, :] if mode == "bi" else 1.0)
    np.testing.assert_allclose(norm_graph.to_dense().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(norm_matrix.to_dense().numpy(), expected[:4, 4:], rtol=1e-6)


# -- torch_scatter stand-in for KGIN and MCCLK ---------------------------------------------------
def test_scatter_mean_and_softmax_match_a_loop():
    torch.manual_seed(0)
    src = torch.randn(9, 3)
    index = torch.tensor([0, 2, 0, 2, 2, 5, 0, 5, 2])
    mean = compat.scatter_mean(src, index, dim=0, dim_size=7)
    softmax = compat.scatter_softmax(src, index, dim=0)
    assert mean.shape == (7, 3)
    for group in range(7):
        rows = src[index == group]
        expected = rows.mean(dim=0) if len(rows) else torch.zeros(3)
        torch.testing.assert_close(mean[group], expected)
        if len(rows):
            torch.testing.assert_close(softmax[index == group], torch.softmax(rows, dim=0))


def test_kgin_imports_the_stand_in_without_exposing_it():
    """Only KGIN's and MCCLK's aggregators see the stand-in; other code still finds no
    ``torch_scatter`` (when it is not installed)."""
    import sys

    from recbole.model.knowledge_aware_recommender.kgin import Aggregator

    if compat.torch_scatter_installed():
        pytest.skip("torch_scatter is installed: the stand-in is not used")
    scope = Aggregator.forward.__globals__["__builtins__"]
    module = scope["__import__"]("torch_scatter", fromlist=("scatter_mean",))
    assert module.scatter_mean is compat.scatter_mean
    assert "torch_scatter" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        __import__("torch_scatter")


def test_preloaded_weights_are_float32(tmp_path):
    """KSR multiplies its pre-loaded relation matrix with float32 activations."""
    from recbole_moe.testing import KG_EMBEDDING_SETTINGS, build, make_feature_dataset

    directory = make_feature_dataset(str(tmp_path), name="feat", emb_size=8)
    settings = {
        **KG_EMBEDDING_SETTINGS,
        "MAX_ITEM_LIST_LENGTH": 5,
        "embedding_size": 8,
        "kg_embedding_size": 8,
    }
    dataset = build("KSR", str(tmp_path), "feat", settings).dataset
    weights = dataset.get_preload_weight("rel_id")
    assert weights.dtype == np.float32
    with open(f"{directory}/feat.rel", encoding="utf-8") as f:
        token, values = f.readlines()[1].rstrip("\n").split("\t")
    row = dataset.field2token_id["relation_id"][token]
    np.testing.assert_allclose(weights[row], [float(v) for v in values.split()], rtol=1e-6)

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

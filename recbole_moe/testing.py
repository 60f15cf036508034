"""Tiny deterministic data and settings for tests, examples and quick benchmarks."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch

from recbole_moe.config import Config
from recbole_moe.files import atomic_write_text
from recbole_moe.model import ENTRY_POINT_GROUP
from recbole_moe.quick_start import RunParts, get_trainer, load_model, prepare_run, run

#: Fast settings for a sequential model on the synthetic dataset (CPU, seconds per epoch).
TINY_CONFIG: dict[str, Any] = {
    "epochs": 1,
    "train_batch_size": 128,
    "eval_batch_size": 256,
    "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_size": 32,
    "inner_size": 64,
    "n_layers": 1,
    "n_heads": 2,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.1,
    "learning_rate": 0.003,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "eval_args": {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    },
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "stopping_step": 10,
    "seed": 2020,
    "reproducibility": True,
    "show_progress": False,
    "state": "WARNING",
    "log_wandb": False,
}


def make_synthetic_dataset(
    root: str,
    name: str = "synth",
    n_users: int = 300,
    n_items: int = 80,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 24,
    noise: float = 0.1,
) -> str:
    """Write ``<root>/<name>/<name>.inter`` with a planted sequential pattern.

    Each user starts at a random item and then mostly steps to the next item id
    (``item + 1``, wrapping around); with probability ``noise`` the next item is random. A model
    that learns order ranks the true next item near the top, a random ranking puts it at
    ``HR@10 ≈ 10 / n_items``. Deterministic for a given ``seed``.

    Returns:
        The dataset directory ``<root>/<name>``.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n_users)
    rows = []
    for user, length in enumerate(lengths, start=1):
        items = np.empty(length, dtype=np.int64)
        items[0] = rng.integers(0, n_items)
        jumps = rng.random(length) < noise
        randoms = rng.integers(0, n_items, size=length)
        for t in range(1, length):
            items[t] = randoms[t] if jumps[t] else (items[t - 1] + 1) % n_items
        for t, item in enumerate(items):
            rows.append(f"{user}\t{item + 1}\t{t}\n")
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.inter")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(rows)
    os.replace(tmp, path)
    return directory


def user_histories(inter_file: str) -> dict[str, list[str]]:
    """Every user's items in a ``user_id, item_id, timestamp`` file, oldest first (original
    ids): a history computed without RecBole, for tests to compare with. Times are compared
    as RecBole stores them (float32, so epoch seconds close together tie), ties in file
    order, as RecBole's stable sort keeps them."""
    rows: dict[str, list[tuple[float, str]]] = {}
    with open(inter_file, encoding="utf-8") as f:
        next(f)
        for line in f:
            user, item, time = line.rstrip("\n").split("\t")[:3]
            rows.setdefault(user, []).append((np.float32(time), item))
    return {
        user: [item for _, item in sorted(items, key=lambda row: row[0])]
        for user, items in rows.items()
    }


def tiny_config(data_path: str, **overrides: Any) -> dict[str, Any]:
    """``TINY_CONFIG`` pointing at ``data_path`` (the folder holding the dataset folder)."""
    config = dict(TINY_CONFIG)
    config["data_path"] = data_path
    config.update(overrides)
    return config


def build(
    model_name: str,
    data_path: str,
    dataset: str,
    config_dict: dict | None = None,
) -> RunParts:
    """Build config, data and an untrained model without training or logging to files.

    Returns:
        :class:`~recbole_moe.quick_start.RunParts` (no ``log_file``).
    """
    overrides = {k: v for k, v in (config_dict or {}).items() if k != "data_path"}
    config_dict = tiny_config(data_path, **overrides)
    return prepare_run(model_name, dataset, config_dict=config_dict, log=False)


def train_twice_and_untrained(model_name: str, data_path: str, dataset: str, config_dict: dict):
    """Train ``model_name`` twice with the same settings and evaluate an untrained copy.

    For reproducibility and learning checks: returns ``(first, second, untrained)``, the two
    :func:`recbole_moe.run` results and the untrained model's test metrics.
    """
    run_config = dict(config_dict, data_path=data_path)
    first = run(model_name, dataset, config_dict=dict(run_config), saved=False)
    second = run(model_name, dataset, config_dict=dict(run_config), saved=False)
    parts = build(model_name, data_path, dataset, config_dict)
    untrained = get_trainer(parts.config, parts.model).evaluate(
        parts.test_data, load_best_model=False
    )
    return first, second, {k: float(v) for k, v in untrained.items()}


def best_and_reloaded(trainer, model, test_data) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The trainer's best checkpoint loaded into ``model`` and, independently, through
    :func:`recbole_moe.load_model`: both models' full-sort scores of the first test batch
    ``[B, n_items]`` and the reloaded model (to compare its state)."""
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    loaded = load_model(trainer.saved_model_file).model
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        return model.full_sort_predict(batch), loaded.full_sort_predict(batch), loaded


def assert_reproducible_and_learns(
    model_name: str, data_path: str, dataset: str, config_dict: dict, margin: float = 0.05
) -> None:
    """Two runs with one seed give identical test metrics, and training beats the untrained
    model's test NDCG@10 by more than ``margin``."""
    first, second, untrained = train_twice_and_untrained(
        model_name, data_path, dataset, config_dict
    )
    assert first["test_result"] == second["test_result"]
    assert first["test_result"]["ndcg@10"] > untrained["ndcg@10"] + margin


class FakeDataset:
    """What a sequential model reads from its dataset when built without data: the item count
    (``num``) and the number of training rows (``inter_num``)."""

    def __init__(self, n_items: int, inter_num: int = 1000) -> None:
        self.n_items, self.inter_num = n_items, inter_num

    def num(self, field: str) -> int:
        return self.n_items


def property_config(model_name: str, root: str, **settings: Any) -> Config:
    """``model_name``'s resolved property files with ``settings`` on top, for building a model
    without data (:class:`FakeDataset`); ``root`` is an empty data folder this creates."""
    os.makedirs(os.path.join(root, "synth"), exist_ok=True)
    return Config(model_name, "synth", config_dict={"data_path": str(root), **settings})


def full_width_dataset(name: str, batch: int, n_items: int, length: int) -> str:
    """A synthetic dataset ``name`` in a new temporary folder whose ``2 * batch`` users all
    have more than ``length + 2`` items, so every training batch is ``[batch, length]`` wide
    (no history shorter than the model's window); returns the folder (``data_path``)."""
    root = tempfile.mkdtemp(prefix=f"{name}-")
    make_synthetic_dataset(
        root,
        name=name,
        n_users=batch * 2,
        n_items=n_items,
        min_len=length + 3,
        max_len=length + 10,
    )
    return root


def write_model_package(root: str, package: str, files: dict[str, str]) -> str:
    """Write the model package ``<root>/<package>/`` with ``files`` (``{file name: text}``:
    model modules and their property files) and register it as ``pip install`` of a
    distribution declaring it would: a ``recbole_moe.models`` entry point in
    ``<root>/<package>-0.0.dist-info``. Put ``root`` on ``sys.path`` to use it.

    Returns:
        the package directory.
    """
    directory = os.path.join(root, package)
    os.makedirs(directory, exist_ok=True)
    for name, text in {"__init__.py": "", **files}.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(text)
    info = os.path.join(root, f"{package}-0.0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as f:
        f.write(f"[{ENTRY_POINT_GROUP}]\n{package} = {package}\n")
    return directory


#: Settings that load :func:`make_feature_dataset`'s knowledge graph with its pre-trained
#: entity and relation embeddings (``.ent`` / ``.rel``), as GRU4RecKG and KSR read them.
KG_EMBEDDING_SETTINGS: dict[str, Any] = {
    "load_col": {
        "inter": ["user_id", "item_id", "rating", "timestamp"],
        "kg": ["head_id", "relation_id", "tail_id"],
        "link": ["item_id", "entity_id"],
        "ent": ["ent_id", "ent_emb"],
        "rel": ["rel_id", "rel_emb"],
    },
    "additional_feat_suffix": ["ent", "rel"],
    "alias_of_entity_id": ["ent_id"],
    "alias_of_relation_id": ["rel_id"],
    "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
}


def _write_atomic(path: str, header: str, rows: list[str]) -> None:
    """Write one atomic file (``header`` then ``rows``, tab-separated) atomically."""
    atomic_write_text(path, "".join(line + "\n" for line in [header, *rows]))


def make_feature_dataset(
    root: str,
    name: str = "feat",
    n_users: int = 16,
    n_items: int = 20,
    per_user: int = 7,
    n_extra_entities: int = 6,
    n_relations: int = 3,
    emb_size: int = 4,
    seed: int = 0,
) -> str:
    """Write a tiny dataset with every kind of file RecBole's model families read.

    ``<name>.inter`` (user, item, rating 1-5, timestamp; ``per_user`` distinct items each),
    ``.user`` (age float, gender token), ``.item`` (price float, genre token_seq), ``.kg`` and
    ``.link`` (each item is an entity ``e<item>``; random triples over the items' and
    ``n_extra_entities`` other entities) and ``.ent`` / ``.rel`` (pre-trained embeddings of
    size ``emb_size``, for GRU4RecKG and KSR). Deterministic for a given ``seed``.

    Returns:
        The dataset directory ``<root>/<name>``.
    """
    rng = np.random.default_rng(seed)
    directory = os.path.join(root, name)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    inter = []
    for user in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        for t, item in enumerate(items):
            inter.append(f"u{user}\ti{item}\t{rng.integers(1, 6)}\t{t}")
    _write_atomic(
        path + ".inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        inter,
    )
    _write_atomic(
        path + ".user",
        "user_id:token\tage:float\tgender:token",
        [f"u{u}\t{rng.integers(18, 60)}\t{'MF'[u % 2]}" for u in range(1, n_users + 1)],
    )
    genres = [
        " ".join(f"g{g}" for g in rng.choice(4, size=rng.integers(1, 3), replace=False))
        for _ in range(n_items)
    ]
    _write_atomic(
        path + ".item",
        "item_id:token\tprice:float\tgenre:token_seq",
        [f"i{i}\t{rng.uniform(1, 50):.2f}\t{genres[i - 1]}" for i in range(1, n_items + 1)],
    )
    entities = [f"e{i}" for i in range(1, n_items + n_extra_entities + 1)]
    triples = {
        (entities[h], f"r{rng.integers(1, n_relations + 1)}", entities[t])
        for h, t in rng.integers(0, len(entities), size=(4 * len(entities), 2))
        if h != t
    }
    _write_atomic(
        path + ".kg",
        "head_id:token\trelation_id:token\ttail_id:token",
        ["\t".join(triple) for triple in sorted(triples)],
    )
    _write_atomic(
        path + ".link",
        "item_id:token\tentity_id:token",
        [f"i{i}\te{i}" for i in range(1, n_items + 1)],
    )

    def embedding() -> str:
        return " ".join(f"{v:.4f}" for v in rng.normal(size=emb_size))

    _write_atomic(
        path + ".ent",
        "ent_id:token\tent_emb:float_seq",
        [f"{e}\t{embedding()}" for e in entities],
    )
    _write_atomic(
        path + ".rel",
        "rel_id:token\trel_emb:float_seq",
        [f"r{r}\t{embedding()}" for r in range(1, n_relations + 1)],
    )
    return directory

"""The top-k collector gives RecBole's collected rows, and RecBole's metrics, without the dense
positive-item matrix."""

from __future__ import annotations

import pytest
import torch
from recbole.evaluator import Collector, Evaluator

from recbole_moe.collector import TopkCollector, topk_hits
from recbole_moe.quick_start import get_trainer
from recbole_moe.testing import build


def dense_rows(topk_idx: torch.Tensor, positive_u, positive_i, n_items: int) -> torch.Tensor:
    """The hits and positive counts from a dense ``[users, n_items]`` 0/1 matrix."""
    users = topk_idx.shape[0]
    dense = torch.zeros(users, n_items, dtype=torch.long)
    for u, i in zip(positive_u.tolist(), positive_i.tolist(), strict=True):
        dense[u, i] = 1
    hits = torch.stack([dense[u, topk_idx[u]] for u in range(users)])
    return torch.cat((hits, dense.sum(1, keepdim=True)), dim=1)


def test_topk_hits_equal_a_dense_matrix_with_repeats_and_users_without_positives():
    generator = torch.Generator().manual_seed(0)
    users, n_items, k = 7, 30, 5
    scores = torch.randint(0, 4, (users, n_items), generator=generator).float()  # many ties
    _, topk_idx = torch.topk(scores, k, dim=-1)
    positive_u = torch.tensor([0, 0, 0, 2, 3, 3, 3, 5, 6, 6])  # users 1 and 4 have none
    positive_i = torch.tensor([1, 4, 4, 9, 0, 2, 29, 7, 3, 3])  # (0, 4) and (6, 3) repeat
    positive_i[positive_u == 2] = topk_idx[2, 0]  # a hit at rank 1
    positive_i[positive_u == 5] = topk_idx[5, k - 1]  # a hit at rank k
    rows = topk_hits(topk_idx, positive_u, positive_i)
    expected = dense_rows(topk_idx, positive_u, positive_i, n_items)
    assert rows.dtype == torch.long
    assert torch.equal(rows, expected)
    assert rows[2, 0] == 1 and rows[5, k - 1] == 1
    assert rows[:, -1].tolist() == [2, 0, 1, 3, 0, 1, 1]


def collector_config(metrics: list[str]) -> dict:
    return {
        "metrics": metrics,
        "eval_args": {"mode": {"valid": "full", "test": "full"}},
        "topk": [1, 5, 10],
        "device": torch.device("cpu"),
        "metric_decimal_place": 6,
    }


@pytest.mark.parametrize(
    "metrics",
    [
        ["Hit", "NDCG", "MRR", "Recall", "Precision", "MAP"],
        ["Hit", "NDCG", "ItemCoverage", "GAUC"],  # also rec.items and rec.meanrank
    ],
)
def test_collected_struct_equals_recboles(metrics):
    generator = torch.Generator().manual_seed(1)
    ours, recboles = (cls(collector_config(metrics)) for cls in (TopkCollector, Collector))
    for _ in range(3):  # three batches, concatenated by the collector
        scores = torch.randn(9, 40, generator=generator)
        # every user has a positive (as in an evaluation), some have several or a repeat
        positive_u = torch.cat((torch.arange(9), torch.randint(0, 9, (6,), generator=generator)))
        positive_i = torch.randint(1, 40, (15,), generator=generator)
        for collector in (ours, recboles):
            collector.eval_batch_collect(scores.clone(), None, positive_u, positive_i)
    struct, expected = ours.get_data_struct(), recboles.get_data_struct()
    for key in ("rec.topk", "rec.items", "rec.meanrank"):
        if key in expected:
            assert torch.equal(struct.get(key), expected.get(key)), key
    assert ours.register.need("rec.topk")  # the register is restored after each batch
    # the metrics from the rows (ItemCoverage also needs the training data: rows compared above)
    config = collector_config([metric for metric in metrics if metric != "ItemCoverage"])
    assert Evaluator(config).evaluate(struct) == Evaluator(config).evaluate(expected)


def test_trainer_uses_it_and_its_metrics_are_recboles(synth, tmp_path):
    parts = build("SASRec", synth.data_path, synth.dataset, {"checkpoint_dir": str(tmp_path)})
    trainer = get_trainer(parts.config, parts.model)
    assert isinstance(trainer.eval_collector, TopkCollector)
    trainer._train_epoch(parts.train_data, 0)
    ours = trainer.evaluate(parts.valid_data, load_best_model=False)
    trainer.eval_collector = Collector(parts.config)
    assert trainer.evaluate(parts.valid_data, load_best_model=False) == ours
    assert ours["hit@10"] > 0

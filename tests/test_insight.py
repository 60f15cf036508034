"""Model insight in benchmark reports: HyMoERec's α and expert load, FAME's gate per head."""

from __future__ import annotations

import os

import pytest

from recbole_moe.benchmark.insight import insight_plots, insight_section
from recbole_moe.model.declaration import entropy as _entropy


def hymoe_stats(epoch: int, alpha: list[float], loads: list[list[float]]) -> dict:
    return {
        "epoch": epoch,
        "train_step": 10 * (epoch + 1),
        "warmup": 1.0,
        "alpha": alpha,
        "layers": [
            {
                "token_fraction": load,
                "load_entropy": _entropy(load),
                "mean_prob": load,
                "tokens": 100.0,
            }
            for load in loads
        ],
    }


RECORDS = [
    {
        "model": "HyMoERec",
        "dataset": "beauty",
        "seed": 0,
        "epoch_stats": [
            hymoe_stats(0, [0.1, 0.2], [[0.25] * 4, [0.25] * 4]),
            hymoe_stats(1, [0.3, 0.4], [[1.0, 0.0, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1]]),
        ],
    },
    {
        "model": "FAME",
        "dataset": "beauty",
        "seed": 1,
        "epoch_stats": [
            {"epoch": 0, "gate": [0.5, 0.5], "router": [[0.5, 0.5], [0.9, 0.1]]},
        ],
    },
    {"model": "SASRec", "dataset": "beauty", "seed": 0},
]


def test_entropy_is_one_when_balanced_and_zero_when_collapsed():
    assert _entropy([0.25] * 4) == pytest.approx(1.0)
    assert _entropy([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert 0 < _entropy([0.9, 0.1]) < 1


def test_section_shows_the_last_epoch_of_each_run():
    text = "\n".join(insight_section(RECORDS))
    assert (
        "| beauty | 0 | 2 | [0.300, 0.400] | [1.00, 0.00, 0.00, 0.00]; [0.40, 0.30, 0.20, 0.10]"
        in text
    )
    assert "[0.000, 0.923]" in text  # collapsed layer 0, nearly balanced layer 1
    assert "| beauty | 1 | 1 | [0.500, 0.500] | 1.000 | [1.000, 0.469] |" in text
    assert "SASRec" not in text
    assert insight_section([RECORDS[2]]) == []  # nothing to show without MoE runs


def test_plots_per_dataset_and_model(tmp_path):
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    written = insight_plots(str(tmp_path), RECORDS)
    assert sorted(os.path.basename(p) for p in written) == [
        "beauty_FAME_insight.png",
        "beauty_HyMoERec_insight.png",
    ]
    assert all(os.path.getsize(p) > 1000 for p in written)


def test_report_has_the_insight_section_and_plots(tmp_path):
    import json

    from recbole_moe.benchmark.report import write_report

    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    record = dict(
        RECORDS[0],
        status="ok",
        key="HyMoERec/beauty/0",
        test_result={"ndcg@10": 0.05},
        best_valid_result={"ndcg@10": 0.05},
        config={"train_objective": "sequence"},
    )
    with open(tmp_path / "runs.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    written = write_report(str(tmp_path))
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Model insight" in text and "![beauty_HyMoERec_insight.png]" in text
    assert str(tmp_path / "beauty_HyMoERec_insight.png") in written

"""Tests for HyMoERec: model behaviour (fast, no data loading) and short runs on synthetic data."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_moe.layers.moe import entropy_balance_loss
from recbole_moe.model.hymoerec import HyMoERec
from recbole_moe.quick_start import get_trainer
from recbole_moe.testing import (
    FakeDataset,
    assert_reproducible_and_learns,
    best_and_reloaded,
    build,
    property_config,
)
from recbole_moe.trainer import RecBoleMoeTrainer, statistics_lines, statistics_scalars

N_ITEMS, L, B = 30, 12, 16


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    """HyMoERec's resolved property file (through our Config) with small sizes."""
    sizes = dict(hidden_size=16, inner_size=32, expert_inner_size=24, n_heads=2)
    root = str(tmp_path_factory.mktemp("cfg"))
    return property_config("HyMoERec", root, MAX_ITEM_LIST_LENGTH=L, train_batch_size=100, **sizes)


#: Every layer computed by RecBole's own operations (as RecBole's models built directly).
RECBOLE_LAYERS = {"attention_impl": "recbole", "dropout_impl": "torch", "gelu_impl": "recbole"}


def make_model(base_config, cls=HyMoERec, seed: int = 0, **overrides):
    config = copy.deepcopy(base_config)
    for key, value in overrides.items():
        config[key] = value
    torch.manual_seed(seed)
    return cls(config, FakeDataset(N_ITEMS))


def make_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    lengths[0] = L
    seq = torch.randint(1, N_ITEMS, (B, L), generator=g)
    seq[torch.arange(L).unsqueeze(0) >= lengths.unsqueeze(1)] = 0  # right padding, as RecBole
    return {
        "item_id_list": seq,
        "item_length": lengths,
        "item_id": torch.randint(1, N_ITEMS, (B,), generator=g),
    }


def total(loss) -> torch.Tensor:
    return sum(loss) if isinstance(loss, tuple) else loss


# ----------------------------------------------------------------------------- model behaviour


def test_paper_defaults_in_property_file(base_config):
    assert base_config["n_experts"] == 4 and base_config["top_k"] == 2
    assert base_config["lb_weight"] == pytest.approx(0.01) and base_config["lb_type"] == "entropy"
    assert base_config["fusion"] == "adaptive" and base_config["alpha_init"] == 0.0
    assert base_config["warmup_epochs"] == 5 and base_config["warmup_steps"] is None
    assert (
        base_config["loss_type"] == "CE"
        and base_config["train_neg_sample_args"]["distribution"] == "none"
    )
    assert base_config["shared_expert"] is True and base_config["routed_experts"] is True


def test_shapes_and_finite_gradients(base_config):
    model = make_model(base_config, warmup_steps=0)
    model.train()
    batch = make_batch()
    assert model.forward(batch["item_id_list"], batch["item_length"]).shape == (B, 16)
    assert model.full_sort_predict(batch).shape == (B, N_ITEMS)
    loss = model.calculate_loss(batch)
    assert isinstance(loss, tuple) and len(loss) == 2
    total(loss).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_routing_picks_top_k_for_every_non_padding_token(base_config):
    model = make_model(base_config).eval()
    batch = make_batch()
    _, routings, token_mask = model._encode(batch["item_id_list"], batch["item_length"])
    assert torch.equal(token_mask, batch["item_id_list"] != 0)
    assert len(routings) == base_config["n_layers"]
    for r in routings:
        assert r.indices.shape == (B, L, 2) and r.probs.shape == (B, L, 4)
        assert (r.indices[..., 0] != r.indices[..., 1]).all()
        top = r.logits.topk(2, dim=-1).indices
        assert torch.equal(r.indices, top)
        sel = r.probs.gather(-1, r.indices)
        torch.testing.assert_close(r.weights, sel / sel.sum(-1, keepdim=True))
    # training statistics count exactly K assignments per non-padding token
    model.train()
    model.calculate_loss(batch)
    for layer in model.trm_encoder.layer:
        assert layer.feed_forward.stats.n_tokens.item() == token_mask.sum().item()
        assert layer.feed_forward.stats.counts.sum().item() == 2 * token_mask.sum().item()


def test_balance_loss_is_entropy_term_summed_over_layers(base_config):
    model = make_model(base_config).eval()
    batch = make_batch()
    rec, lb = model.calculate_loss(batch)
    _, routings, mask = model._encode(batch["item_id_list"], batch["item_length"])
    expected = 0.01 * sum(entropy_balance_loss(r.probs, mask) for r in routings)
    torch.testing.assert_close(lb, expected)
    assert lb.item() < 0  # + λ Σ ḡ log ḡ is a negative entropy (spec §3, sign kept)
    assert lb.item() >= 0.01 * base_config["n_layers"] * -math.log(4) - 1e-6


def test_warmup_schedule_start_middle_end(base_config):
    model = make_model(base_config, warmup_steps=10)
    for t, w in [(0, 0.0), (5, 0.5), (10, 1.0), (25, 1.0)]:
        model.train_step.fill_(t)
        assert model.warmup_factor().item() == pytest.approx(w)
        assert model.alphas() == pytest.approx([0.5 * w] * base_config["n_layers"])  # σ(0)·w(t)
    cosine = make_model(base_config, warmup_steps=10, warmup_type="cosine")
    cosine.train_step.fill_(2)
    assert cosine.warmup_factor().item() == pytest.approx(0.5 * (1 - math.cos(0.2 * math.pi)))
    # warm-up given in epochs: 5 epochs × ceil(1000 rows / 100 per batch) = 50 steps
    assert int(make_model(base_config).warmup_length) == 50
    assert int(make_model(base_config, warmup_epochs=0.5).warmup_length) == 5
    off = make_model(base_config, warmup_epochs=0)
    assert off.warmup_factor().item() == 1.0


def test_alpha_frozen_during_eval(base_config):
    model = make_model(base_config, warmup_steps=10)
    batch = make_batch()
    model.train()
    model.calculate_loss(batch)
    model.calculate_loss(batch)
    assert int(model.train_step) == 2
    alphas = model.alphas()
    model.eval()
    with torch.no_grad():
        model.calculate_loss(batch)
        model.full_sort_predict(batch)
        model.predict(batch)
    assert int(model.train_step) == 2
    assert model.alphas() == alphas
    assert model.alphas()[0] == pytest.approx(0.5 * 0.2)


def test_schedule_restored_after_reload(base_config):
    model = make_model(base_config, warmup_steps=10)
    model.train()
    for _ in range(3):
        model.calculate_loss(make_batch())
    state = model.state_dict()
    assert int(state["train_step"]) == 3 and int(state["warmup_length"]) == 10
    fresh = make_model(base_config, seed=1, warmup_steps=99)  # config changed since training
    fresh.load_state_dict(state)
    assert int(fresh.train_step) == 3 and int(fresh.warmup_length) == 10
    assert fresh.warmup_factor().item() == pytest.approx(0.3)
    model.eval(), fresh.eval()
    assert torch.equal(
        model.full_sort_predict(make_batch(1)), fresh.full_sort_predict(make_batch(1))
    )


@pytest.mark.parametrize("last_position_only", [False, True])
def test_without_routed_experts_equals_sasrec(base_config, last_position_only):
    sasrec = make_model(base_config, cls=SASRec, seed=3)
    hymoe = make_model(
        base_config,
        seed=4,
        routed_experts=False,
        last_position_only=last_position_only,
        **RECBOLE_LAYERS,  # SASRec built directly computes with RecBole's layers
    )
    missing, unexpected = hymoe.load_state_dict(sasrec.state_dict(), strict=False)
    assert set(missing) == {"train_step", "warmup_length"} and not unexpected
    assert set(hymoe.state_dict()) - set(sasrec.state_dict()) == {"train_step", "warmup_length"}
    batch = make_batch()
    sasrec.eval(), hymoe.eval()
    # computing only the read position of the last layer may round differently: allow 1 ulp-ish
    same = (
        torch.equal
        if not last_position_only
        else (lambda a, b: torch.allclose(a, b, rtol=1e-6, atol=1e-6))
    )
    assert same(sasrec.full_sort_predict(batch), hymoe.full_sort_predict(batch))
    assert same(sasrec.predict(batch), hymoe.predict(batch))
    assert same(sasrec.calculate_loss(batch), hymoe.calculate_loss(batch))
    if not last_position_only:
        # training mode too: same dropout draws in the same order
        sasrec.train(), hymoe.train()
        torch.manual_seed(7)
        a = sasrec.calculate_loss(batch)
        torch.manual_seed(7)
        b = hymoe.calculate_loss(batch)
        assert torch.equal(a, b)


ABLATIONS = {
    "no_shared_expert": {"shared_expert": False},
    "no_routed_experts": {"routed_experts": False},
    "fusion_fixed": {"fusion": "fixed", "fixed_alpha": 0.3},
    "fusion_sum": {"fusion": "sum"},
    "no_warmup": {"warmup_epochs": 0},
    "no_balance_loss": {"lb_weight": 0.0},
    "switch_balance_loss": {"lb_type": "switch"},
    "top_1": {"top_k": 1},
    "two_experts": {"n_experts": 2},
    "small_experts": {"expert_inner_size": 8},
    "cosine_warmup": {"warmup_type": "cosine"},
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_switch_changes_the_computation(base_config, name):
    default = make_model(base_config).eval()
    variant = make_model(base_config, **ABLATIONS[name]).eval()
    # share every weight the two models have in common (not the schedule), then put both mid-warm-up
    shared = {
        k: v
        for k, v in default.named_parameters()
        if k in variant.state_dict() and variant.state_dict()[k].shape == v.shape
    }
    variant.load_state_dict(shared, strict=False)
    for m in (default, variant):
        m.train_step.fill_(12)  # default warm-up: 50 steps, so w(t) = 0.24
    batch = make_batch()
    with torch.no_grad():
        a, b = default.calculate_loss(batch), variant.calculate_loss(batch)
    a_parts = a if isinstance(a, tuple) else (a,)
    b_parts = b if isinstance(b, tuple) else (b,)
    differs = len(a_parts) != len(b_parts) or any(
        not torch.equal(x, y) for x, y in zip(a_parts, b_parts, strict=False)
    )
    assert differs, f"switch {name} did not change the loss"


def test_invalid_switches_raise(base_config):
    with pytest.raises(ValueError):
        make_model(base_config, shared_expert=False, routed_experts=False)
    # the layers refuse these too when built directly (a run refuses every declared setting
    # before any data loads: tests/test_validation.py)
    for key, value in [("fusion", "max"), ("moe_impl", "x")]:
        with pytest.raises(ValueError):
            make_model(base_config, **{key: value})


def test_sparse_only_has_no_shared_parameters(base_config):
    model = make_model(base_config, shared_expert=False)
    assert not any("dense_1" in k or "dense_2" in k for k in model.state_dict())
    assert model.alphas() == []


def test_implementation_choices_give_the_same_scores(base_config):
    batch = make_batch()
    ref = make_model(base_config, moe_impl="loop", last_position_only=False).eval()
    ref.train_step.fill_(30)
    expected = ref.full_sort_predict(batch)
    for overrides in (
        {"moe_impl": "dense"},
        {"moe_impl": "loop", "last_position_only": True},
        {"moe_impl": "dense", "last_position_only": True},
    ):
        other = make_model(base_config, **overrides).eval()
        other.load_state_dict(ref.state_dict())
        torch.testing.assert_close(other.full_sort_predict(batch), expected, rtol=1e-5, atol=1e-6)
        # the loss path (every query attended, routing over all tokens) and its gradients too
        for model in (ref, other):
            model.zero_grad()
            total(model.calculate_loss(batch)).backward()
        torch.testing.assert_close(
            total(other.calculate_loss(batch)), total(ref.calculate_loss(batch))
        )
        for (name, p), q in zip(other.named_parameters(), ref.parameters(), strict=False):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_epoch_statistics_report_alpha_warmup_and_load(base_config):
    model = make_model(base_config, warmup_steps=10)
    model.train()
    model.calculate_loss(make_batch())
    summary = model.epoch_statistics()
    lines = statistics_lines("HyMoERec", 0, summary)
    scalars = dict(statistics_scalars(summary, "HyMoERec"))
    assert summary["warmup"] == pytest.approx(0.1)
    assert summary["alpha"] == pytest.approx([0.05, 0.05])
    assert len(summary["layers"]) == 2
    for layer in summary["layers"]:
        assert sum(layer["token_fraction"]) == pytest.approx(1.0)
        assert 0.0 <= layer["load_entropy"] <= 1.0
    assert any("alpha=" in line for line in lines) and any("load_entropy" in line for line in lines)
    assert scalars["HyMoERec/warmup"] == pytest.approx(0.1) and "HyMoERec/alpha/1" in scalars
    assert "HyMoERec/layers/0/load_entropy" in scalars
    assert "HyMoERec/layers/1/token_fraction/3" in scalars
    model.reset_statistics()
    assert model.epoch_statistics()["layers"][0]["tokens"] == 0  # reset for the next epoch


# ----------------------------------------------------------------------------- short runs


def _fast(tiny_config, **overrides):
    """Small HyMoERec settings; ``data_path`` is dropped because ``build`` adds it itself."""
    cfg = {k: v for k, v in tiny_config.items() if k != "data_path"}
    cfg.update(n_experts=4, top_k=2, expert_inner_size=32, warmup_epochs=1)
    cfg.update(overrides)
    return cfg


def test_save_load_identical_full_sort_predict_and_epoch_hook(synth, tiny_config, monkeypatch):
    parts = build("HyMoERec", synth.data_path, synth.dataset, _fast(tiny_config, epochs=2))
    config, model = parts.config, parts.model
    train_data, valid_data, test_data = parts.train_data, parts.valid_data, parts.test_data
    calls = []
    original = HyMoERec.epoch_statistics
    monkeypatch.setattr(
        HyMoERec,
        "epoch_statistics",
        lambda self: calls.append(int(self.train_step)) or original(self),
    )
    trainer = get_trainer(config, model)
    assert isinstance(trainer, RecBoleMoeTrainer)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    assert len(calls) == 2 and 0 < calls[0] < calls[1]  # once per training epoch
    scores, reloaded_scores, loaded = best_and_reloaded(trainer, model, test_data)
    assert int(loaded.train_step) == int(model.train_step) > 0
    assert torch.equal(scores, reloaded_scores)


def test_same_seed_identical_metrics_and_training_beats_untrained(synth, tiny_config):
    cfg = _fast(tiny_config, epochs=2)
    assert_reproducible_and_learns("HyMoERec", synth.data_path, synth.dataset, cfg)

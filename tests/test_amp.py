"""enable_amp on CPU: RecBole's trainer runs the loss under bf16 autocast, and our models
train through it with finite losses and gradients, routing kept in float32."""

from __future__ import annotations

import pytest
import torch

from recbole_moe.errors import ConfigError
from recbole_moe.layers.moe import Router, entropy_balance_loss, softmax_fp32
from recbole_moe.quick_start import get_trainer
from recbole_moe.testing import build


@pytest.mark.parametrize(
    ("model_name", "extra"),
    [
        ("SASRec", {}),
        ("SASRec", {"attention_impl": "sdpa"}),
        ("HyMoERec", {}),
        ("HyMoERec", {"moe_impl": "dense", "attention_impl": "sdpa"}),
        ("FAME", {}),
    ],
)
def test_one_amp_epoch_runs_in_bf16_with_finite_loss_and_gradients(
    synth, tmp_path, model_name, extra
):
    parts = build(
        model_name,
        synth.data_path,
        synth.dataset,
        {
            "enable_amp": True,
            "train_objective": "sequence",
            "n_layers": 2,
            "checkpoint_dir": str(tmp_path / "saved"),
            **extra,
        },
    )
    model = parts.model
    trainer = get_trainer(parts.config, model)
    linear_dtypes, losses = set(), []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, out: linear_dtypes.add(out.dtype))
    loss_fn = trainer.training_loss()

    def recording(interaction):
        out = loss_fn(interaction)
        losses.extend(out if isinstance(out, tuple) else (out,))
        return out

    before = [p.detach().clone() for p in model.parameters()]
    total = trainer._train_epoch(parts.train_data, 0, loss_func=recording)

    assert linear_dtypes == {torch.bfloat16}  # autocast was active inside the forward
    assert losses and all(loss.dtype == torch.float32 for loss in losses)
    assert all(torch.isfinite(loss).all() for loss in losses)
    assert all(
        torch.isfinite(torch.tensor(t)) for t in (total if isinstance(total, tuple) else (total,))
    )
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert changed > len(before) // 2  # the optimizer stepped


def test_amp_is_off_by_default(synth, tmp_path):
    parts = build("SASRec", synth.data_path, synth.dataset, {"checkpoint_dir": str(tmp_path)})
    assert parts.config["enable_amp"] is False


def test_without_amp_the_forward_stays_float32(synth, tmp_path):
    parts = build(
        "SASRec",
        synth.data_path,
        synth.dataset,
        {
            "train_objective": "sequence",
            "enable_amp": False,
            "checkpoint_dir": str(tmp_path / "saved"),
        },
    )
    dtypes = set()
    for module in parts.model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    trainer = get_trainer(parts.config, parts.model)
    trainer._train_epoch(parts.train_data, 0)
    assert dtypes == {torch.float32}


def test_router_probabilities_and_balance_loss_are_float32_under_autocast():
    torch.manual_seed(0)
    router = Router(16, 4, top_k=2)
    x = torch.randn(32, 16)
    reference = router(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = router(x)
        loss = entropy_balance_loss(out.probs)
    assert out.logits.dtype == torch.bfloat16  # the gate itself ran in bf16
    assert out.probs.dtype == out.weights.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(32))
    torch.testing.assert_close(out.probs, reference.probs, atol=2e-2, rtol=0)


def test_softmax_fp32_keeps_float64():
    x = torch.randn(3, 5, dtype=torch.float64)
    assert softmax_fp32(x).dtype == torch.float64
    torch.testing.assert_close(softmax_fp32(x), torch.softmax(x, -1))


def test_fame_gate_and_router_are_float32_and_the_loss_close_to_fp32_under_autocast(synth):
    parts = build("FAME", synth.data_path, synth.dataset, {"train_objective": "sequence"})
    model = parts.model.eval()  # no dropout: both passes see the same function
    batch = next(iter(parts.train_data))
    item_seq = batch[model.ITEM_SEQ]
    gate_logits = []
    model.gate.register_forward_hook(lambda m, i, out: gate_logits.append(out.dtype))
    with torch.no_grad():
        reference = model.calculate_sequence_loss(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, gate, beta = model.encode_positions(item_seq)
            loss = model.calculate_sequence_loss(batch)
    assert gate_logits[-1] == torch.bfloat16  # the gate's Linear ran in bf16
    assert gate.dtype == beta.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference, rtol=1e-2, atol=0)


@pytest.mark.parametrize(
    ("value", "device", "bf16_cpu", "expected"),
    [
        ("auto", "cpu", True, True),
        ("auto", "cpu", False, False),
        ("auto", "cuda", True, False),  # RecBole's CUDA AMP is float16: not the default
        (True, "cuda", False, True),
        (False, "cpu", True, False),
        (1, "cpu", False, True),
    ],
)
def test_enable_amp_auto_resolves_by_device(monkeypatch, value, device, bf16_cpu, expected):
    from recbole_moe import recbole_settings

    monkeypatch.setattr(recbole_settings, "cpu_supports_bf16", lambda: bf16_cpu)
    assert recbole_settings.resolve_amp(value, device) is expected


def test_config_resolves_enable_amp_to_a_bool(synth, tmp_path, monkeypatch):
    from recbole_moe import recbole_settings

    for bf16_cpu in (True, False):
        monkeypatch.setattr(recbole_settings, "cpu_supports_bf16", lambda b=bf16_cpu: b)
        parts = build(
            "SASRec",
            synth.data_path,
            synth.dataset,
            {
                "train_objective": "sequence",
                "enable_amp": "auto",
                "checkpoint_dir": str(tmp_path / "saved"),
            },
        )
        assert parts.config["enable_amp"] is bf16_cpu
        assert get_trainer(parts.config, parts.model).enable_amp is bf16_cpu


def test_enable_amp_refuses_other_strings(synth, tmp_path):
    with pytest.raises(ConfigError, match="enable_amp"):
        build(
            "SASRec",
            synth.data_path,
            synth.dataset,
            {"enable_amp": "maybe", "checkpoint_dir": str(tmp_path / "saved")},
        )

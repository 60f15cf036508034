"""dropout_impl: fast — the cheaper CPU dropout mask has nn.Dropout's distribution and scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recbole_moe.errors import ConfigError
from recbole_moe.layers.attention import SelfAttention, attend
from recbole_moe.layers.dropout import FastDropout, fast_dropout, keep_mask, masked
from recbole_moe.layers.recbole_models import use_dropout_impl
from recbole_moe.testing import build


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_keep_fraction_matches_one_minus_p_in_every_lane(p):
    torch.manual_seed(0)
    n = 1 << 22
    mask = keep_mask((n,), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (n,)
    # four 16-bit lanes share one 64-bit word: each lane on its own must keep 1 - p
    for lane in range(4):
        kept = mask[lane::4].double().mean().item()
        sd = math.sqrt(p * (1 - p) / (n / 4))
        assert abs(kept - (1 - p)) < 5 * sd, (lane, kept)
    # neighbouring elements are independent: P(both kept) = (1 - p)^2
    both = (mask[:-1] & mask[1:]).double().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 / n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_floating_mask_keeps_the_same_elements_as_the_boolean_one(dtype):
    torch.manual_seed(7)
    expected = keep_mask((3, 50, 7), 0.3, torch.device("cpu"))
    torch.manual_seed(7)
    mask = keep_mask((3, 50, 7), 0.3, torch.device("cpu"), dtype)
    assert mask.dtype == dtype
    assert torch.equal(mask, expected.to(dtype))


def test_output_is_input_times_mask_over_keep_probability_and_unbiased():
    torch.manual_seed(1)
    x = torch.randn(64, 50, 32, dtype=torch.float64)
    y = fast_dropout(x, 0.3)
    kept = y != 0
    # 65536 levels: keep probability round(0.7 * 65536) / 65536, scale its exact inverse
    scale = 65536 / round(0.7 * 65536)
    torch.testing.assert_close(y[kept], x[kept] * scale, rtol=0, atol=1e-12)
    assert abs(kept.double().mean().item() - 0.7) < 0.01
    # E[y] = x: the mean over many masks of a constant input
    ones = torch.ones(200_000, dtype=torch.float64)
    assert abs(fast_dropout(ones, 0.3).mean().item() - 1.0) < 0.01


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(8, 20, 16, requires_grad=True)
    y = fast_dropout(x, 0.5)
    weight = torch.randn_like(y)
    (y * weight).sum().backward()
    kept = (y != 0).float()
    torch.testing.assert_close(x.grad, weight * kept * 2.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_keeps_the_dtype_and_zeroes_exactly_the_dropped_elements(dtype):
    torch.manual_seed(4)
    x = torch.randn(6, 9, 5).to(dtype).requires_grad_()
    mask = torch.rand(6, 9, 5) < 0.6
    y = masked(x, mask)
    assert y.dtype == dtype  # the mask's bytes multiply as uint8: no promotion to float32
    pairs = zip(x.detach().flatten().tolist(), mask.flatten().tolist(), strict=True)
    expected = [v if keep else 0.0 for v, keep in pairs]
    assert y.detach().flatten().tolist() == expected
    y.backward(torch.full_like(y, 3.0))
    assert x.grad.dtype == dtype
    assert x.grad.flatten().tolist() == [3.0 if keep else 0.0 for keep in mask.flatten()]


def test_identity_in_eval_and_at_p_zero_zeros_at_p_one_and_seeded():
    x = torch.randn(4, 7)
    layer = FastDropout(0.5)
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    torch.manual_seed(3)
    first = fast_dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(fast_dropout(x, 0.5), first)


def test_switch_covers_recboles_modules_keeps_checkpoints_and_goes_back(synth):
    parts = build("SASRec", synth.data_path, synth.dataset, {"dropout_impl": "torch"})
    model = parts.model
    n_dropout = sum(type(m) is nn.Dropout for m in model.modules())
    assert n_dropout > 0 and not any(isinstance(m, FastDropout) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_dropout_impl(model, "fast") == n_dropout
    assert all(type(m) is not nn.Dropout for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    assert use_dropout_impl(model, "torch") == n_dropout
    with pytest.raises(ValueError, match="dropout_impl='bits': allowed values are torch, fast"):
        use_dropout_impl(model, "bits")


@pytest.mark.parametrize("model_name", ["SASRec", "HyMoERec", "FAME", "Mamba4Rec"])
def test_fast_is_the_default_and_torch_the_other_choice(synth, model_name):
    settings = {"scan_compile": False}
    model = build(model_name, synth.data_path, synth.dataset, settings).model
    assert any(isinstance(m, FastDropout) for m in model.modules())
    assert not any(type(m) is nn.Dropout for m in model.modules())
    settings["dropout_impl"] = "torch"
    model = build(model_name, synth.data_path, synth.dataset, settings).model
    assert not any(isinstance(m, FastDropout) for m in model.modules())


def test_a_bad_value_is_refused_before_data(synth):
    with pytest.raises(ConfigError, match="dropout_impl='bits'.*allowed values are torch, fast"):
        build("SASRec", synth.data_path, synth.dataset, {"dropout_impl": "bits"})


@pytest.mark.parametrize("causal", [True, False])
def test_attention_with_fast_dropout_is_softmax_attention_with_that_mask(causal):
    """The math path of :func:`attend` in training, against a hand-written one with the same
    mask (re-drawn from the same seed), and with no dropout against torch's fused function."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 4, 6, 8, generator=g)  # 4 query heads
    k = torch.randn(3, 2, 6, 8, generator=g)  # sharing 2 key/value heads
    v = torch.randn(3, 2, 6, 8, generator=g)
    mask = torch.where(torch.rand(3, 1, 6, 6, generator=g) < 0.2, -10000.0, 0.0)
    dropout = FastDropout(0.4).train()
    torch.manual_seed(5)
    out = attend(q, k, v, dropout, attn_mask=None if causal else mask, is_causal=causal,
                 enable_gqa=True)  # fmt: skip

    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ kk.transpose(-1, -2) / math.sqrt(8)
    if causal:
        scores = scores + torch.triu(torch.full((6, 6), float("-inf")), diagonal=1)
    else:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    torch.manual_seed(5)
    keep = keep_mask(probs.shape, 0.4, probs.device)
    expected = (probs * keep * (65536 / round(0.6 * 65536))) @ vv
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)

    dropout.p = 0.0
    fused = attend(q, k, v, dropout, attn_mask=None if causal else mask, is_causal=causal,
                   enable_gqa=True)  # fmt: skip
    torch.testing.assert_close(fused, torch.softmax(scores, dim=-1) @ vv, rtol=1e-5, atol=1e-6)


def test_sdpa_layer_trains_with_fast_attention_dropout():
    """The attention layer, fused and with fast dropout: dropout really applies in training
    (two draws differ), gradients reach every parameter, eval mode is deterministic."""
    layer = SelfAttention(2, 16, 0.5, 0.5, 1e-12, impl="sdpa", causal=True, dropout_impl="fast")
    assert type(layer.attn_dropout) is FastDropout and type(layer.out_dropout) is FastDropout
    x = torch.randn(4, 10, 16)
    mask = torch.zeros(4, 1, 10, 10)
    first, second = layer(x, mask), layer(x, mask)
    assert not torch.allclose(first, second)
    first.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    layer.eval()
    assert torch.equal(layer(x, mask), layer(x, mask))

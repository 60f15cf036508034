"""Tests for the shared MoE core: router, expert bank, balance losses, routing statistics."""

import math

import pytest
import torch

from recbole_moe.layers.moe import (
    ExpertBank,
    Router,
    RoutingStats,
    entropy_balance_loss,
    load_balance_loss,
    mean_gate_prob,
    normalized_entropy,
    resolve_impl,
    switch_balance_loss,
    token_fraction,
)

D, E, K, H = 16, 5, 2, 24


def _reference_mixture(bank: ExpertBank, x, weights, indices, mask):
    """Token-by-token Σ_k g_k f_{idx_k}(x) — slow, obviously correct."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if mask[b, t]:
                for k in range(indices.shape[-1]):
                    e = int(indices[b, t, k])
                    out[b, t] += weights[b, t, k] * bank.expert_forward(x[b, t].unsqueeze(0), e)[0]
    return out


@pytest.fixture
def routed():
    torch.manual_seed(0)
    router = Router(D, E, K)
    bank = ExpertBank(E, D, H, "gelu", "loop")
    bank.reset_parameters(0.3)
    x = torch.randn(3, 6, D, requires_grad=True)
    mask = torch.rand(3, 6) < 0.7
    mask[:, 0] = True
    return router, bank, x, mask


def test_router_picks_exact_top_k_and_renormalises():
    torch.manual_seed(1)
    router = Router(D, E, K)
    x = torch.randn(4, 7, D)
    out = router(x)
    assert out.logits.shape == out.probs.shape == (4, 7, E)
    assert out.weights.shape == out.indices.shape == (4, 7, K)
    # exactly K distinct experts per token, and they are the K largest logits
    assert (out.indices.sort(-1).values.diff(dim=-1) != 0).all()
    expected = out.logits.sort(dim=-1, descending=True).indices[..., :K]
    assert torch.equal(out.indices.sort(-1).values, expected.sort(-1).values)
    # spec A3 (a): gates = softmax over the K selected logits == renormalised full probs
    selected = out.probs.gather(-1, out.indices)
    torch.testing.assert_close(out.weights, selected / selected.sum(-1, keepdim=True))
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(4, 7))
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(4, 7))
    assert router.gate.bias is None


def test_router_dense_mixing_without_top_k():
    router = Router(D, E, top_k=None)
    out = router(torch.randn(2, 3, D))
    assert out.indices is None
    assert torch.equal(out.weights, out.probs)


def test_router_rejects_bad_top_k():
    with pytest.raises(ValueError):
        Router(D, E, top_k=E + 1)


@pytest.mark.parametrize("impl", ["loop", "dense"])
def test_expert_bank_matches_reference(routed, impl):
    router, bank, x, mask = routed
    bank.impl = impl
    r = router(x)
    y = bank(x, r.weights, r.indices, mask)
    assert y.shape == x.shape
    torch.testing.assert_close(
        y, _reference_mixture(bank, x, r.weights, r.indices, mask), rtol=1e-5, atol=1e-6
    )
    assert torch.count_nonzero(y[~mask]) == 0  # masked tokens are not computed


def test_loop_and_dense_agree_in_values_and_gradients(routed):
    router, bank, x, mask = routed
    params = [x, bank.w1, bank.b1, bank.w2, bank.b2, router.gate.weight]
    results = []
    for impl in ("loop", "dense"):
        bank.impl = impl
        r = router(x)
        y = bank(x, r.weights, r.indices, mask)
        grads = torch.autograd.grad((y.square() * torch.arange(D)).sum(), params)
        results.append((y, grads))
    (y_loop, g_loop), (y_dense, g_dense) = results
    torch.testing.assert_close(y_loop, y_dense, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_loop, g_dense, strict=False):
        assert torch.isfinite(a).all()
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_expert_bank_dense_mixing_and_no_mask(routed):
    _, bank, x, _ = routed
    probs = torch.softmax(torch.randn(3, 6, E), dim=-1)
    y = bank(x, probs, None)  # every expert, weighted by probs
    ref = torch.zeros_like(x)
    for e in range(E):
        ref += probs[..., e : e + 1] * bank.expert_forward(x.reshape(-1, D), e).reshape(3, 6, D)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    bank.impl = "dense"
    torch.testing.assert_close(bank(x, probs, None), ref, rtol=1e-5, atol=1e-6)


def test_resolve_impl():
    assert resolve_impl("auto", torch.device("cpu")) == "loop"
    assert resolve_impl("auto", torch.device("cuda")) == "dense"
    assert resolve_impl("dense", torch.device("cpu")) == "dense"
    with pytest.raises(ValueError):
        resolve_impl("fast", torch.device("cpu"))


def test_entropy_balance_loss_hand_computed_and_padding_excluded():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.0, 0.0, 1.0]])
    mask = torch.tensor([True, True, False])  # the third token is padding
    gbar = [0.4, 0.4, 0.2]
    expected = sum(g * math.log(g) for g in gbar)  # + Σ ḡ log ḡ (spec §3, sign kept)
    assert entropy_balance_loss(probs, mask).item() == pytest.approx(expected, rel=1e-6)
    assert load_balance_loss("entropy", probs, None, mask).item() == pytest.approx(
        expected, rel=1e-6
    )
    torch.testing.assert_close(mean_gate_prob(probs, mask), torch.tensor(gbar))


def test_entropy_balance_loss_is_minimal_at_uniform():
    uniform = torch.full((10, E), 1.0 / E, requires_grad=True)
    value = entropy_balance_loss(uniform)
    assert value.item() == pytest.approx(-math.log(E), rel=1e-6)  # the minimum
    (grad,) = torch.autograd.grad(value, uniform)
    # stationary along the simplex: the gradient is the same for every expert
    torch.testing.assert_close(grad, grad[:, :1].expand_as(grad))
    torch.manual_seed(0)
    for _ in range(20):
        probs = torch.softmax(torch.randn(10, E) * 2, dim=-1)
        assert entropy_balance_loss(probs).item() > value.item()
    collapsed = torch.zeros(10, E)
    collapsed[:, 0] = 1.0
    assert entropy_balance_loss(collapsed).item() == pytest.approx(0.0, abs=1e-7)  # maximum


def test_switch_balance_loss_hand_computed():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    indices = torch.tensor([[0, 1], [1, 2], [2, 0]])
    mask = torch.tensor([True, True, False])
    f = [1 / 4, 2 / 4, 1 / 4]  # assignments of the two valid tokens
    p = [0.35, 0.4, 0.25]
    expected = 3 * sum(a * b for a, b in zip(f, p, strict=False))
    assert switch_balance_loss(probs, indices, mask).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(token_fraction(indices, 3, mask), torch.tensor(f))
    uniform = torch.full((6, 3), 1 / 3)
    balanced = torch.tensor([[0, 1], [1, 2], [2, 0]] * 2)
    assert switch_balance_loss(uniform, balanced).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        load_balance_loss("switch", probs, None)
    with pytest.raises(ValueError):
        load_balance_loss("zloss", probs, indices)


def test_routing_stats_and_normalized_entropy():
    stats = RoutingStats(3)
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    indices = torch.tensor([[0], [1], [0]])
    stats.update(probs, indices, torch.tensor([True, True, False]))
    stats.update(probs[:1], indices[:1])
    s = stats.summary()
    assert s["tokens"] == 3
    assert s["token_fraction"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert s["mean_prob"] == pytest.approx(
        [(0.6 + 0.2 + 0.6) / 3, (0.3 + 0.5 + 0.3) / 3, (0.1 + 0.3 + 0.1) / 3]
    )
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)
    assert s["load_entropy"] == pytest.approx(h, rel=1e-5)
    stats.reset()
    assert stats.summary()["tokens"] == 0
    assert normalized_entropy(torch.full((4,), 0.25)).item() == pytest.approx(1.0)
    assert normalized_entropy(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.0)
    assert "counts" not in stats.state_dict()  # statistics are not checkpointed

"""gelu_impl: fused — one GELU operation, the same function as RecBole's FeedForward.gelu."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.model.layers import FeedForward

from recbole_moe.errors import ConfigError
from recbole_moe.layers.activation import recbole_gelu
from recbole_moe.layers.moe import ExpertBank
from recbole_moe.layers.recbole_models import use_gelu_impl
from recbole_moe.testing import build


def _activations(model) -> list:
    """Every feed-forward activation of ``model``: RecBole FeedForwards and our expert banks."""
    found = []
    for module in model.modules():
        if isinstance(module, FeedForward):
            found.append(module.intermediate_act_fn)
        if isinstance(module, ExpertBank):
            found.append(module.act)
    return found


def test_both_are_the_exact_erf_gelu_with_its_gradient():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64, requires_grad=True)
    expected = x.detach() * 0.5 * (1 + torch.erf(x.detach() / math.sqrt(2)))
    # d/dx x Φ(x) = Φ(x) + x φ(x)
    slope = 0.5 * (1 + torch.erf(x.detach() / math.sqrt(2))) + x.detach() * torch.exp(
        -(x.detach() ** 2) / 2
    ) / math.sqrt(2 * math.pi)
    for gelu in (F.gelu, recbole_gelu):
        (grad,) = torch.autograd.grad(gelu(x).sum(), x)
        torch.testing.assert_close(gelu(x).detach(), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, slope, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("model_name", "expected"),
    # SASRec and BERT4Rec: one FeedForward per layer; HyMoERec: its shared expert and its
    # routed experts per layer; FAME: its lower layer's FeedForward and the facet layer's
    [("SASRec", 2), ("BERT4Rec", 2), ("HyMoERec", 4), ("FAME", 2)],
)
def test_fused_is_the_default_for_every_feed_forward(synth, model_name, expected):
    model = build(model_name, synth.data_path, synth.dataset, {"n_layers": 2}).model
    acts = _activations(model)
    assert len(acts) == expected and all(fn is F.gelu for fn in acts)
    model = build(
        model_name, synth.data_path, synth.dataset, {"n_layers": 2, "gelu_impl": "recbole"}
    )
    assert all(fn is recbole_gelu for fn in _activations(model.model))


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec"])
def test_recboles_models_switch_and_switch_back(synth, model_name):
    model = build(model_name, synth.data_path, synth.dataset, {"n_layers": 2}).model
    keys = set(model.state_dict())
    assert use_gelu_impl(model, "recbole") == 2
    assert all(fn is recbole_gelu for fn in _activations(model))
    assert use_gelu_impl(model, "recbole") == 0  # already there
    assert set(model.state_dict()) == keys
    assert use_gelu_impl(model, "fused") == 2
    with pytest.raises(ValueError, match="gelu_impl='tanh': allowed values are fused, recbole"):
        use_gelu_impl(model, "tanh")


def test_other_activations_are_left_alone(synth):
    model = build("SASRec", synth.data_path, synth.dataset, {"hidden_act": "relu"}).model
    assert all(fn is F.relu for fn in _activations(model))
    assert use_gelu_impl(model, "recbole") == 0


@pytest.mark.parametrize("model_name", ["SASRec", "HyMoERec"])
def test_loss_and_gradients_equal_with_either_gelu(synth, model_name):
    config = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}
    models, batch = {}, None
    for impl in ("recbole", "fused"):
        parts = build(model_name, synth.data_path, synth.dataset, {**config, "gelu_impl": impl})
        models[impl] = parts.model.double()  # float64: the two differ by rounding only
        batch = next(iter(parts.train_data))
    start = {k: v.clone() for k, v in models["recbole"].state_dict().items()}
    results = []
    for model in models.values():
        model.load_state_dict(start)  # the same weights and HyMoERec warm-up clock
        model.zero_grad()
        torch.manual_seed(0)
        loss = model.calculate_loss(batch)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-10, atol=1e-12)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-8, atol=1e-12)


def test_a_bad_value_is_refused_before_data(synth):
    with pytest.raises(ConfigError, match="gelu_impl='tanh'.*allowed values are fused, recbole"):
        build("SASRec", synth.data_path, synth.dataset, {"gelu_impl": "tanh"})

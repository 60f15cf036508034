"""attention_impl: sdpa — the fused attention path equals RecBole's MultiHeadAttention."""

from __future__ import annotations

import pytest
import torch
from recbole.model.layers import MultiHeadAttention

from recbole_moe.errors import ConfigError
from recbole_moe.layers.attention import SelfAttention
from recbole_moe.layers.recbole_models import use_attention_impl
from recbole_moe.model.sequence import SequenceObjective
from recbole_moe.testing import build


def additive_mask(lengths: torch.Tensor, width: int, causal: bool) -> torch.Tensor:
    """RecBole's mask by hand: 0 where a query may attend a key, -10000 elsewhere,
    ``[B, 1, L, L]``; keys after a sequence's length are padding."""
    keys = torch.arange(width)[None, :] < lengths[:, None]  # [B, L]
    allowed = keys[:, None, None, :].expand(-1, 1, width, width)
    if causal:
        allowed = allowed & torch.ones(width, width, dtype=torch.bool).tril()
    return torch.where(allowed, 0.0, -10000.0)


@pytest.mark.parametrize("causal", [True, False])
def test_outputs_and_gradients_equal_recboles_layer(causal):
    torch.manual_seed(0)
    reference = MultiHeadAttention(4, 32, 0.0, 0.0, 1e-12)
    fused = SelfAttention(4, 32, 0.0, 0.0, 1e-12, impl="sdpa")
    fused.load_state_dict(reference.state_dict())  # RecBole's layer's checkpoint, strict
    lengths = torch.tensor([9, 1, 5, 9, 3])  # a padded batch, one full-width row
    mask = additive_mask(lengths, 9, causal)
    outputs, grads = [], []
    for layer in (reference, fused):
        x = torch.randn(5, 9, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
        out = layer(x, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([x.grad] + [p.grad for p in layer.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for new, ref in zip(grads[1], grads[0], strict=False):
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-5)


def test_switching_keeps_parameters_and_goes_both_ways():
    layer = MultiHeadAttention(2, 16, 0.1, 0.1, 1e-12)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    assert use_attention_impl(layer, "sdpa") == 1
    assert type(layer) is SelfAttention and layer.impl == "sdpa"
    assert layer.state_dict().keys() == before.keys()
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in before.items())
    assert use_attention_impl(layer, "recbole") == 1 and layer.impl == "recbole"
    with pytest.raises(
        ValueError, match="attention_impl='flash': allowed values are recbole, sdpa"
    ):
        use_attention_impl(layer, "flash")


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec", "HyMoERec", "FAME"])
def test_models_score_the_same_with_either_implementation(synth, model_name):
    scores, classes = {}, {}
    for impl in ("recbole", "sdpa"):
        parts = build(
            model_name, synth.data_path, synth.dataset, {"attention_impl": impl, "n_layers": 2}
        )
        test_data, model = parts.test_data, parts.model
        classes[impl] = {
            getattr(m, "impl", "recbole")
            for m in model.modules()
            if isinstance(m, MultiHeadAttention)
        }
        model.eval()
        batch = next(iter(test_data))[0]
        with torch.no_grad():
            scores[impl] = model.full_sort_predict(batch)
        if impl == "sdpa":  # a checkpoint of either loads into the other
            reference = build(model_name, synth.data_path, synth.dataset, {"n_layers": 2}).model
            reference.load_state_dict(model.state_dict())
    assert classes == {"recbole": {"recbole"}, "sdpa": {"sdpa"}}
    torch.testing.assert_close(scores["sdpa"], scores["recbole"], rtol=1e-4, atol=1e-4)


def test_unknown_attention_impl_is_refused(synth):
    with pytest.raises(
        ConfigError, match="attention_impl='flash'.*allowed values are recbole, sdpa"
    ):
        build("SASRec", synth.data_path, synth.dataset, {"attention_impl": "flash"})


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_causal_path_equals_the_masked_layer_at_every_real_position(dropout):
    torch.manual_seed(0)
    reference = MultiHeadAttention(2, 16, 0.0, dropout, 1e-12)
    fused = SelfAttention(2, 16, 0.0, dropout, 1e-12, impl="sdpa", causal=True)
    fused.load_state_dict(reference.state_dict())
    lengths = torch.tensor([7, 2, 5])  # right-padded: items first, padding after
    real = torch.arange(7)[None, :] < lengths[:, None]  # [B, L]
    mask = additive_mask(lengths, 7, causal=True)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(2))
    for layer in (reference, fused):
        layer.eval()  # dropout off, as in evaluation
    with torch.no_grad():
        expected, out = reference(x, mask), fused(x, mask)
    torch.testing.assert_close(out[real], expected[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[~real], expected[~real], atol=1e-3)  # padding is not kept


@pytest.mark.parametrize(
    "model_name, causal",
    [("SASRec", True), ("HyMoERec", True), ("FAME", True), ("BERT4Rec", False)],
)
def test_causal_models_attend_with_is_causal_and_train_the_same(synth, model_name, causal):
    """Sequence-mode loss and gradients at dropout 0 equal RecBole's masked layers'."""
    settings = {"n_layers": 2, "train_objective": "sequence"}
    settings.update(hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    losses, grads = {}, {}
    for impl in ("recbole", "sdpa"):
        torch.manual_seed(3)
        parts = build(
            model_name, synth.data_path, synth.dataset, {"attention_impl": impl, **settings}
        )
        model = parts.model
        fused = [m for m in model.modules() if getattr(m, "impl", None) == "sdpa"]
        assert all(m.causal is causal for m in fused) and (impl == "recbole") != bool(fused)
        torch.manual_seed(4)  # BERT4Rec's masking draws
        loss = SequenceObjective(model)(next(iter(parts.train_data)))
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        losses[impl] = loss.detach()
        grads[impl] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    torch.testing.assert_close(losses["sdpa"], losses["recbole"], rtol=1e-5, atol=1e-5)
    for new, ref in zip(grads["sdpa"], grads["recbole"], strict=True):
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-5)

"""Each layer chooses its implementation when it is built (``attention_impl``, ``dropout_impl``,
``gelu_impl``): our models come out of their constructors computing as the settings say, with
RecBole's parameter names, so checkpoints saved with RecBole's layers load and score the same."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from recbole.model.layers import MultiHeadAttention
from recbole.model.layers import TransformerEncoder as RecBoleTransformerEncoder
from torch import nn

from recbole_moe import quick_start
from recbole_moe.layers import recbole_models
from recbole_moe.layers.attention import SelfAttention
from recbole_moe.layers.dropout import FastDropout
from recbole_moe.layers.transformer import LayerImpls, TransformerEncoder
from recbole_moe.model import get_model
from recbole_moe.testing import build

OFF = {"attention_impl": "recbole", "dropout_impl": "torch", "gelu_impl": "recbole"}
ON = {"attention_impl": "sdpa", "dropout_impl": "fast", "gelu_impl": "fused"}


def test_transformer_encoder_loads_recboles_checkpoint_and_computes_the_same():
    sizes = dict(n_layers=2, n_heads=2, hidden_size=16, inner_size=32)
    torch.manual_seed(0)
    old = RecBoleTransformerEncoder(**sizes, hidden_dropout_prob=0.1, attn_dropout_prob=0.1)
    new = TransformerEncoder(
        **sizes, hidden_dropout_prob=0.1, attn_dropout_prob=0.1, impls=LayerImpls(**_impls(ON))
    )
    new.load_state_dict(old.state_dict(), strict=True)
    layer = new.layer[1]
    assert layer.multi_head_attention.impl == "sdpa"
    assert type(layer.feed_forward.dropout) is FastDropout
    assert layer.feed_forward.intermediate_act_fn is F.gelu
    old.eval(), new.eval()
    x = torch.randn(3, 7, 16)
    mask = torch.zeros(3, 1, 7, 7)
    with torch.no_grad():
        expected, got = old(x, mask)[-1], new(x, mask)[-1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _impls(settings: dict) -> dict:
    return {
        "attention": settings["attention_impl"],
        "dropout": settings["dropout_impl"],
        "gelu": settings["gelu_impl"],
    }


def _spy_on_switching(monkeypatch) -> list:
    """The models whose layers are switched after construction, in order."""
    switched = []

    def use_layer_impls(model, impls):
        switched.append(type(model).__name__)
        recbole_models.use_layer_impls(model, impls)

    monkeypatch.setattr(quick_start, "use_layer_impls", use_layer_impls)
    return switched


@pytest.mark.parametrize("model_name", ["HyMoERec", "FAME"])
def test_our_models_build_their_layers_as_set_and_load_a_checkpoint_of_the_other(
    synth, monkeypatch, model_name
):
    switched = _spy_on_switching(monkeypatch)
    settings = {"n_layers": 2, "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}
    off = build(model_name, synth.data_path, synth.dataset, {**settings, **OFF})
    on = build(model_name, synth.data_path, synth.dataset, {**settings, **ON})
    assert switched == []  # nothing replaced after construction
    # the model's constructor alone gives the chosen layers
    built = get_model(model_name)(on.config, on.train_data._dataset)
    for model, sdpa in ((built, True), (on.model, True), (off.model, False)):
        attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
        assert attention and all(type(m) is SelfAttention for m in attention)
        assert all(m.impl == ("sdpa" if sdpa else "recbole") and m.causal for m in attention)
        dropout = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        assert dropout and all((type(m) is FastDropout) == sdpa for m in dropout)
    # RecBole's parameter names: the attention of every layer is RecBole's layer's state
    recbole_keys = set(MultiHeadAttention(2, 64, 0.2, 0.2, 1e-12).state_dict())
    for name, module in on.model.named_modules():
        if isinstance(module, SelfAttention):
            assert set(module.state_dict()) == recbole_keys, name
    # a checkpoint of the model built with every implementation off loads, strict, both ways
    on.model.load_state_dict(off.model.state_dict(), strict=True)
    off.model.load_state_dict(on.model.state_dict(), strict=True)
    batch = next(iter(on.test_data))[0]
    on.model.eval(), off.model.eval()
    with torch.no_grad():
        expected = off.model.full_sort_predict(batch)
        got = on.model.full_sort_predict(batch)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_recboles_models_are_switched_in_one_place(synth, monkeypatch):
    switched = _spy_on_switching(monkeypatch)
    model = build("SASRec", synth.data_path, synth.dataset, ON).model
    attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert attention and all(type(m) is SelfAttention and m.impl == "sdpa" for m in attention)
    assert all(m.causal for m in attention)  # SASRec's mask is causal + padding
    model = build("BERT4Rec", synth.data_path, synth.dataset, OFF).model
    assert {type(m) for m in model.modules() if isinstance(m, MultiHeadAttention)} == {
        MultiHeadAttention
    }
    assert switched == ["SASRec", "BERT4Rec"]

"""Under CPU bf16 autocast, sequence training rounds its varying sizes up (fewer oneDNN kernel
shapes) without changing any real position's loss or gradient."""

from __future__ import annotations

import copy

import pytest
import torch

from recbole_moe.layers import shape_buckets
from recbole_moe.layers.moe import ExpertBank
from recbole_moe.layers.shape_buckets import bucket_width, pad_rows
from recbole_moe.model.sequence import SequenceObjective
from recbole_moe.testing import build

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_sizes_are_rounded_up_only_under_cpu_bf16_autocast():
    x = torch.randn(70, 3)
    assert pad_rows(x) is x
    assert bucket_width(37, x.device, limit=50) == 37
    with torch.autocast(**BF16):
        padded = pad_rows(x)
        assert padded.shape == (128, 3)
        assert torch.equal(padded[:70], x) and not padded[70:].any()
        assert pad_rows(torch.randn(64, 3)).shape == (64, 3)
        assert bucket_width(37, x.device, limit=50) == 40
        assert bucket_width(37, x.device, limit=38) == 38  # never past the model's length
        assert bucket_width(40, x.device, limit=50) == 40
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        assert pad_rows(x) is x


def _loss_and_grads(model, objective, batch):
    model.zero_grad()
    with torch.autocast(**BF16):
        loss = objective(batch)
    total = sum(loss) if isinstance(loss, tuple) else loss
    total.backward()
    grads = {
        n: p.grad.detach().float().clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    return float(total.detach()), grads


@pytest.mark.parametrize(("model_name", "chunks"), [("SASRec", 1), ("SASRec", 4), ("HyMoERec", 4)])
def test_bucketed_shapes_give_the_unbucketed_loss_and_gradients(
    synth, monkeypatch, model_name, chunks
):
    parts = build(
        model_name,
        synth.data_path,
        synth.dataset,
        {
            "train_objective": "sequence",
            "MAX_ITEM_LIST_LENGTH": 50,
            "hidden_dropout_prob": 0.0,
            "attn_dropout_prob": 0.0,
        },
    )
    model = parts.model.train()
    # a batch whose width (its longest history) is not a bucket size already
    batch = next(
        b for b in parts.train_data if b["item_id_list"].shape[1] % shape_buckets.WIDTH_STEP
    )
    objective = SequenceObjective(model, 0, chunks)
    widths = []
    model.item_embedding.register_forward_hook(lambda m, i, out: widths.append(i[0].shape[1]))
    state = copy.deepcopy(model.state_dict())  # HyMoERec's step clock advances per batch

    loss, grads = _loss_and_grads(model, objective, batch)
    step = shape_buckets.WIDTH_STEP
    assert widths and all(w % step == 0 or w == model.max_seq_length for w in widths)

    monkeypatch.setattr(shape_buckets, "WIDTH_STEP", 1)
    monkeypatch.setattr(shape_buckets, "ROW_STEP", 1)
    model.load_state_dict(state)
    widths.clear()
    plain_loss, plain_grads = _loss_and_grads(model, objective, batch)
    assert not all(w % step == 0 for w in widths)  # the unbucketed run had other widths

    assert loss == pytest.approx(plain_loss, rel=1e-3)
    assert grads.keys() == plain_grads.keys()
    scale = max(float(g.abs().max()) for g in plain_grads.values())
    for name, grad in grads.items():  # bf16 products: equal up to bf16 rounding
        torch.testing.assert_close(grad, plain_grads[name], rtol=2e-2, atol=1e-3 * scale)


def test_expert_groups_padded_under_bf16_give_the_same_mixture(monkeypatch):
    torch.manual_seed(0)
    bank = ExpertBank(n_experts=3, in_features=8, inner_size=16, impl="loop")
    x = torch.randn(37, 8, requires_grad=True)
    weights = torch.rand(37, 2)
    indices = torch.stack([torch.randperm(3)[:2] for _ in range(37)])  # [37, 2]
    rows = []
    addmm = torch.addmm

    def recording(bias, mat1, mat2):
        rows.append(mat1.shape[0])
        return addmm(bias, mat1, mat2)

    def mixture():
        x.grad = None
        with torch.autocast(**BF16):
            y = bank(x, weights, indices)
        y.float().sum().backward()
        return y.float(), x.grad.clone()

    monkeypatch.setattr(torch, "addmm", recording)
    y, grad = mixture()
    assert rows and all(r % 64 == 0 for r in rows)  # every expert product had a bucketed size
    monkeypatch.setattr(shape_buckets, "ROW_STEP", 1)
    rows.clear()
    y_plain, grad_plain = mixture()
    assert any(r % 64 for r in rows)  # other sizes without the buckets
    assert y.shape == y_plain.shape == (37, 8)
    torch.testing.assert_close(y, y_plain, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(grad, grad_plain, rtol=1e-2, atol=1e-3)

"""The chunked cross-entropy with its gradient formed in the forward pass equals PyTorch's
``F.cross_entropy`` on the full logits: loss and gradients, with and without a bias."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recbole_moe.layers.sequence_loss import linear_cross_entropy


def _inputs(rows: int, items: int, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(items, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(items, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, items, (rows,), generator=gen)
    return hidden, weight, bias, target


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize(("items", "item_step"), [(11, 1), (11, 4), (11, 16), (16, 16)])
def test_equals_full_logits_cross_entropy(chunk_rows, with_bias, items, item_step):
    """Padding the item axis (11 items to 12 or 16 columns; 16 items: none) changes nothing."""
    hidden, weight, bias, target = _inputs(rows=7, items=items)
    b = bias if with_bias else None
    # reference: -log softmax at the target, averaged, written out by hand
    logits = hidden @ weight.t() + (bias if with_bias else 0.0)
    reference = (torch.logsumexp(logits, dim=1) - logits[torch.arange(7), target]).mean()
    fused = linear_cross_entropy(
        hidden, weight, target, b, chunk_rows=chunk_rows, item_step=item_step
    )
    torch.testing.assert_close(fused.double(), reference, rtol=1e-6, atol=1e-6)
    wrt = (hidden, weight, bias) if with_bias else (hidden, weight)
    # an upstream gradient other than 1 must scale every gradient
    for got, want in zip(_grads(3.0 * fused, *wrt), _grads(3.0 * reference, *wrt), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_frozen_weight_gives_hidden_gradient_only():
    hidden, weight, _, target = _inputs(rows=5, items=9, seed=1)
    frozen = weight.detach()
    (got,) = _grads(linear_cross_entropy(hidden, frozen, target, chunk_rows=2), hidden)
    (want,) = _grads(F.cross_entropy(hidden @ frozen.t(), target), hidden)
    torch.testing.assert_close(got, want)


def test_large_logits_do_not_overflow():
    hidden, weight, _, target = _inputs(rows=4, items=6, seed=2)
    hidden = (hidden.detach() * 500).float().requires_grad_()
    weight = weight.detach().float()
    loss = linear_cross_entropy(hidden, weight, target, chunk_rows=3)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(hidden @ weight.t(), target))


def test_without_grad_gives_the_loss():
    hidden, weight, bias, target = _inputs(rows=6, items=5, seed=3)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, target, bias, chunk_rows=4)
        want = F.cross_entropy(hidden @ weight.t() + bias, target)
    assert not loss.requires_grad
    torch.testing.assert_close(loss.double(), want)


def test_gradient_reaches_an_embedding_through_indexing():
    """As in the sequence loss: rows gathered from ``[B, L, D]`` states and the item table."""
    torch.manual_seed(4)
    emb = torch.nn.Embedding(10, 4)
    states = torch.randn(2, 3, 4, requires_grad=True)
    targets = torch.tensor([[1, 2, 0], [3, 0, 0]])
    keep = targets > 0
    loss = linear_cross_entropy(states[keep], emb.weight, targets[keep], chunk_rows=2)
    loss.backward()
    got_states, got_emb = states.grad.clone(), emb.weight.grad.clone()
    states.grad = None
    emb.weight.grad = None
    F.cross_entropy(states[keep] @ emb.weight.t(), targets[keep]).backward()
    torch.testing.assert_close(got_states, states.grad)
    torch.testing.assert_close(got_emb, emb.weight.grad)
    assert torch.all(got_states[~keep] == 0)


def test_padded_items_get_no_probability():
    """All logits 0 over 5 items padded to 16 columns: the loss is log 5 (padding columns
    counted as logits 0 would give log 16)."""
    hidden = torch.zeros(1, 2, dtype=torch.float64)
    weight = torch.zeros(5, 2, dtype=torch.float64)
    loss = linear_cross_entropy(hidden, weight, torch.tensor([3]), item_step=16)
    torch.testing.assert_close(loss, torch.tensor(5.0, dtype=torch.float64).log())


@pytest.mark.parametrize("item_step", [0, -16])
def test_bad_item_step_is_refused(item_step):
    hidden, weight, _, target = _inputs(rows=2, items=5)
    with pytest.raises(ValueError, match=f"item_step must be a positive integer, got {item_step}"):
        linear_cross_entropy(hidden, weight, target, item_step=item_step)


def test_every_layout_agrees(monkeypatch):
    """The benchmark's layouts (``benchmarks/loss_layout.py``): the table's gradient as
    ``grad.T @ hidden`` or ``hidden.T @ grad``, logits in a new tensor per chunk or in one
    buffer, items padded or not: all give the loss and gradients of ``F.cross_entropy``."""
    from recbole_moe.layers import sequence_loss

    hidden, weight, bias, target = _inputs(rows=9, items=13, seed=5)
    logits = hidden @ weight.t() + bias
    want = _grads(F.cross_entropy(logits, target), hidden, weight, bias)
    for transposed in (True, False):
        for reuse in (True, False):
            monkeypatch.setattr(sequence_loss, "WEIGHT_GRAD_HT_G", transposed)
            monkeypatch.setattr(sequence_loss, "REUSE_LOGITS_BUFFER", reuse)
            for item_step in (1, 16):
                loss = linear_cross_entropy(
                    hidden, weight, target, bias, chunk_rows=4, item_step=item_step
                )
                torch.testing.assert_close(loss, F.cross_entropy(logits, target))
                for g, w in zip(_grads(loss, hidden, weight, bias), want, strict=True):
                    torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)

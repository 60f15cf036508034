"""Tests for Mamba4Rec and the pure-PyTorch selective scan."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from recbole_moe.config import Config
from recbole_moe.layers.selective_scan import selective_scan
from recbole_moe.model.mamba4rec import Mamba4Rec, MambaBlock, load_mamba_ssm_scan, resolve_backend
from recbole_moe.quick_start import get_trainer
from recbole_moe.testing import (
    FakeDataset,
    assert_reproducible_and_learns,
    best_and_reloaded,
    build,
    property_config,
)

N_ITEMS, L, B = 30, 12, 8


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    """Mamba4Rec's resolved property file (through our Config) with small sizes."""
    root = str(tmp_path_factory.mktemp("cfg"))
    return property_config(
        "Mamba4Rec",
        root,
        hidden_size=16,
        d_state=8,
        MAX_ITEM_LIST_LENGTH=L,
        scan_chunk_size=5,
        scan_batch_block=3,  # several chunks and batch blocks
    )


def make_model(base_config, seed: int = 0, **overrides) -> Mamba4Rec:
    config = copy.deepcopy(base_config)
    for key, value in overrides.items():
        config[key] = value
    torch.manual_seed(seed)
    return Mamba4Rec(config, FakeDataset(N_ITEMS))


def make_batch(seed: int = 0, length: int = L) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (B,), generator=g)
    lengths[0] = length
    seq = torch.randint(1, N_ITEMS, (B, length), generator=g)
    seq[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0  # right padding, as RecBole
    return {
        "item_id_list": seq,
        "item_length": lengths,
        "item_id": torch.randint(1, N_ITEMS, (B,), generator=g),
    }


# ----------------------------------------------------------------------------- the scan


def naive_scan(u, delta, A, Bm, C):
    """The SSM definition, one time step at a time: h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t."""
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = (
            torch.exp(delta[:, t, :, None] * A) * h
            + (delta[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        )
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1)


def naive_block(block: MambaBlock, x):
    """``mamba_ssm.Mamba``'s computation written out, with a loop over time for the conv too."""
    Lx = x.shape[1]
    xz = x @ block.in_proj.weight.t()
    u, z = xz[..., : block.d_inner], xz[..., block.d_inner :]
    w = block.conv1d.weight[:, 0, :]  # [E, K]
    K = w.shape[1]
    padded = torch.cat([u.new_zeros(u.shape[0], K - 1, u.shape[2]), u], dim=1)
    u = (
        torch.stack([(padded[:, t : t + K] * w.t()).sum(1) for t in range(Lx)], 1)
        + block.conv1d.bias
    )
    u = F.silu(u)
    proj = u @ block.x_proj.weight.t()
    dt, Bm, C = proj.split([block.dt_rank, block.d_state, block.d_state], dim=-1)
    delta = F.softplus(dt @ block.dt_proj.weight.t() + block.dt_proj.bias)
    y = naive_scan(u, delta, -torch.exp(block.A_log), Bm, C) + u * block.D
    return (y * F.silu(z)) @ block.out_proj.weight.t()


@pytest.mark.parametrize(
    "chunk_size,batch_block,compiled",
    [(4, 2, False), (7, None, False), (64, 3, False), (4, 2, True), (7, None, True)],
)
def test_scan_and_gradients_match_naive_recurrence(chunk_size, batch_block, compiled):
    torch.manual_seed(0)
    n, Lx, D, N = 5, 23, 6, 4
    u = torch.randn(n, Lx, D, requires_grad=True)
    delta = F.softplus(torch.randn(n, Lx, D)).requires_grad_()
    A = (-torch.rand(D, N) * 3 - 0.1).requires_grad_()
    Bm = torch.randn(n, Lx, N, requires_grad=True)
    C = torch.randn(n, Lx, N, requires_grad=True)
    inputs = (u, delta, A, Bm, C)
    y = selective_scan(*inputs, chunk_size=chunk_size, batch_block=batch_block, compiled=compiled)
    ref = naive_scan(*inputs)
    assert y.shape == (n, Lx, D)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # evaluation: the forward alone, no chunk states kept
        y_eval = selective_scan(
            *inputs, chunk_size=chunk_size, batch_block=batch_block, compiled=compiled
        )
    torch.testing.assert_close(y_eval, ref.detach(), atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    for got, want in zip(
        torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g), strict=False
    ):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("compiled", [False, True])
def test_scan_gradcheck_float64(compiled):
    torch.manual_seed(1)
    n, Lx, D, N = 3, 9, 3, 2
    inputs = (
        torch.randn(n, Lx, D, dtype=torch.float64),
        F.softplus(torch.randn(n, Lx, D, dtype=torch.float64)),
        -torch.rand(D, N, dtype=torch.float64) - 0.5,
        torch.randn(n, Lx, N, dtype=torch.float64),
        torch.randn(n, Lx, N, dtype=torch.float64),
    )
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan(*a, chunk_size=4, batch_block=2, compiled=compiled), inputs
    )


def test_failed_compilation_warns_and_falls_back_to_the_eager_scan(monkeypatch, caplog):
    from recbole_moe.layers import selective_scan as scan_module

    def no_compiler(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler found")

        return fail

    monkeypatch.setattr(scan_module.torch, "compile", no_compiler)
    monkeypatch.setattr(scan_module, "_compiled_kernels", {})
    monkeypatch.setattr(scan_module, "_compile_error", [])
    torch.manual_seed(2)
    n, Lx, D, N = 3, 10, 4, 3
    inputs = (
        torch.randn(n, Lx, D),
        F.softplus(torch.randn(n, Lx, D)),
        -torch.rand(D, N) - 0.5,
        torch.randn(n, Lx, N),
        torch.randn(n, Lx, N),
    )
    with caplog.at_level(logging.WARNING):
        y = selective_scan(*inputs, chunk_size=4, batch_block=2, compiled=True)
    torch.testing.assert_close(y, naive_scan(*inputs), atol=1e-5, rtol=1e-5)
    assert (
        "Compiling the selective scan failed (RuntimeError: no C++ compiler found)" in caplog.text
    )
    assert scan_module._compile_error  # later calls take the eager path without trying again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = selective_scan(*inputs, chunk_size=4, batch_block=2, compiled=True)
    torch.testing.assert_close(again, y)
    assert caplog.text == ""


@pytest.mark.parametrize("compile_scan", [False, True])
def test_torch_block_matches_naive_step_by_step_block(compile_scan):
    torch.manual_seed(0)
    block = MambaBlock(
        d_model=8,
        d_state=4,
        d_conv=3,
        expand=2,
        chunk_size=4,
        batch_block=2,
        compile_scan=compile_scan,
    )
    with torch.no_grad():  # non-trivial values everywhere
        block.A_log.add_(torch.rand_like(block.A_log) - 0.5)
        block.D.uniform_(-1, 1)
    x = torch.randn(3, 11, 8)
    torch.testing.assert_close(block(x), naive_block(block, x), atol=1e-5, rtol=1e-5)


def test_parameter_names_and_shapes_are_mamba_ssm_s():
    block = MambaBlock(d_model=64, d_state=32, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        "A_log": (128, 32),
        "D": (128,),
        "in_proj.weight": (256, 64),
        "conv1d.weight": (128, 1, 4),
        "conv1d.bias": (128,),
        "x_proj.weight": (68, 128),
        "dt_proj.weight": (128, 4),
        "dt_proj.bias": (128,),
        "out_proj.weight": (64, 128),
    }


# ----------------------------------------------------------------------------- the model


def test_shapes_and_finite_gradients(base_config):
    model = make_model(base_config)
    batch = make_batch()
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.mamba_layers[0].mamba.A_log.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model.full_sort_predict(batch).shape == (B, N_ITEMS)
        assert model.predict(batch).shape == (B,)


def test_bpr_loss(base_config):
    model = make_model(base_config, loss_type="BPR")
    batch = dict(make_batch(), neg_item_id=torch.randint(1, N_ITEMS, (B,)))
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_causality_changing_a_later_item_keeps_earlier_states(base_config):
    model = make_model(base_config, num_layers=2).eval()
    seq = make_batch(length=L)["item_id_list"].clamp(min=1)  # all positions valid
    changed = seq.clone()
    k = 6
    changed[:, k] = (changed[:, k] % (N_ITEMS - 1)) + 1
    with torch.no_grad():
        for t in range(L):
            lengths = torch.full((B,), t + 1)
            same = torch.equal(model(seq, lengths), model(changed, lengths))
            assert same == (t < k), t


def test_padding_after_the_last_item_does_not_change_scores(base_config):
    model = make_model(base_config).eval()
    batch = make_batch(length=L)
    longer = dict(batch, item_id_list=F.pad(batch["item_id_list"], (0, 9)))  # 9 more padding items
    with torch.no_grad():
        torch.testing.assert_close(
            model.full_sort_predict(batch), model.full_sort_predict(longer), atol=1e-6, rtol=1e-6
        )


def test_residual_only_with_several_layers(base_config):
    assert not make_model(base_config, num_layers=1).mamba_layers[0].residual
    assert all(layer.residual for layer in make_model(base_config, num_layers=2).mamba_layers)


def test_dt_init_switch(base_config):
    dt_proj = make_model(base_config).mamba_layers[0].mamba.dt_proj
    assert torch.all(dt_proj.bias == 0) and dt_proj.weight.std() < 0.05  # normal(0, 0.02)
    dt_proj = make_model(base_config, mamba_dt_init="mamba").mamba_layers[0].mamba.dt_proj
    dt = F.softplus(dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6 and dt.std() > 0
    # a bad mamba_dt_init is refused before any data loads (tests/test_validation.py)


def test_backend_resolution(caplog):
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with caplog.at_level(logging.WARNING):
        assert resolve_backend("mamba_ssm", torch.device("cpu")) == "torch"  # GPU checkpoint on CPU
    assert "CUDA" in caplog.text
    with pytest.raises(ValueError):
        resolve_backend("triton", torch.device("cpu"))


def test_published_defaults_in_property_file(base_config):
    cfg = Config("Mamba4Rec", "synth", config_dict={"data_path": base_config["data_path"]})
    expected = {
        "hidden_size": 64,
        "num_layers": 1,
        "d_state": 32,
        "d_conv": 4,
        "expand": 2,
        "dropout_prob": 0.2,
        "train_batch_size": 2048,
        "learning_rate": 0.001,
        "loss_type": "CE",
        "mamba_backend": "auto",
        "mamba_dt_init": "recbole",
        "scan_compile": True,
    }
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["train_neg_sample_args"]["distribution"] == "none"


# ----------------------------------------------------------------------------- short runs


def _fast(tiny_config, **overrides):
    """Small Mamba4Rec settings; ``data_path`` is dropped because ``build`` adds it itself."""
    cfg = {k: v for k, v in tiny_config.items() if k != "data_path"}
    cfg.update(d_state=16, dropout_prob=0.1)
    cfg.update(overrides)
    return cfg


def test_save_load_identical_full_sort_predict(synth, tiny_config):
    parts = build("Mamba4Rec", synth.data_path, synth.dataset, _fast(tiny_config))
    config, model = parts.config, parts.model
    train_data, valid_data, test_data = parts.train_data, parts.valid_data, parts.test_data
    trainer = get_trainer(config, model)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    scores, reloaded_scores, _ = best_and_reloaded(trainer, model, test_data)
    assert torch.equal(scores, reloaded_scores)


def test_same_seed_identical_metrics_and_training_beats_untrained(synth, tiny_config):
    cfg = _fast(tiny_config, epochs=2)
    assert_reproducible_and_learns("Mamba4Rec", synth.data_path, synth.dataset, cfg)


# ----------------------------------------------------------------------------- CUDA kernels

_KERNEL, _KERNEL_REASON = load_mamba_ssm_scan()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible)")
@pytest.mark.skipif(_KERNEL is None, reason=f"needs mamba_ssm ({_KERNEL_REASON})")
def test_cuda_mamba_ssm_backend_matches_torch_backend():
    from mamba_ssm import Mamba

    torch.manual_seed(0)
    device = torch.device("cuda")
    ours = MambaBlock(64, d_state=32, d_conv=4, expand=2, backend="mamba_ssm").to(device)
    with torch.no_grad():
        ours.A_log.add_(torch.rand_like(ours.A_log) - 0.5)
    reference = Mamba(64, d_state=32, d_conv=4, expand=2, use_fast_path=False).to(device)
    reference.load_state_dict(ours.state_dict())  # same names and shapes: loads strictly
    x = torch.randn(4, 50, 64, device=device)
    torch_out = MambaBlock(64, d_state=32, d_conv=4, expand=2).to(device)
    torch_out.load_state_dict(ours.state_dict())
    y_kernel, y_torch, y_ref = ours(x), torch_out(x), reference(x)
    torch.testing.assert_close(y_kernel, y_torch, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(y_ref, y_torch, atol=1e-3, rtol=1e-3)
    y_kernel.square().sum().backward()
    y_torch.square().sum().backward()
    for (name, a), b in zip(ours.named_parameters(), torch_out.parameters(), strict=False):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-3, rtol=1e-2, msg=name)

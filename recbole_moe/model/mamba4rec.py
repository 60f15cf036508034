"""
Mamba4Rec
################################################

Reference:
    Chengkai Liu et al. "Mamba4Rec: Towards Efficient Sequential Recommendation with Selective
    State Space Models." arXiv 2403.03900, 2024.
    Albert Gu and Tri Dao. "Mamba: Linear-Time Sequence Modeling with Selective State Spaces."
    arXiv 2312.00752, 2023.

Reference code:
    https://github.com/chengkai-liu/Mamba4Rec (RecBole-based design followed here)
    https://github.com/state-spaces/mamba (``mamba_ssm.Mamba``: parameter names and shapes)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recbole_moe.layers.dropout import dropout_impl, make_dropout
from recbole_moe.layers.selective_scan import selective_scan
from recbole_moe.model.base import DotProductSequentialRecommender
from recbole_moe.model.declaration import Number, OneOf, Switch

BACKENDS = ("auto", "mamba_ssm", "torch")
DT_INITS = ("recbole", "mamba")


def load_mamba_ssm_scan() -> tuple[Callable | None, str]:
    """Return ``(selective_scan_fn, "")`` from ``mamba_ssm``, or ``(None, reason)``."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # ImportError, or a CUDA extension built for another torch
        return None, f"{type(exc).__name__}: {exc}"
    return selective_scan_fn, ""


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick the scan implementation: ``"mamba_ssm"`` (CUDA kernels) or ``"torch"``.

    ``auto`` uses ``mamba_ssm`` when the model runs on CUDA and the package imports. An explicit
    ``mamba_ssm`` on a CPU device falls back to ``torch`` with a warning (a checkpoint trained on
    GPU stays usable on CPU); on a CUDA device without the package it is an error.
    """
    if backend not in BACKENDS:
        raise ValueError(f"mamba_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    on_cuda = torch.device(device).type == "cuda"
    if not on_cuda:
        if backend == "mamba_ssm":
            logging.getLogger(__name__).warning(
                "mamba_backend=mamba_ssm needs a CUDA device; using the torch backend on %s.",
                device,
            )
        return "torch"
    scan_fn, reason = load_mamba_ssm_scan()
    if scan_fn is None:
        if backend == "mamba_ssm":
            raise ImportError(
                "mamba_backend=mamba_ssm but mamba_ssm does not import "
                f"({reason}). Install it (pip install mamba-ssm) or set mamba_backend to "
                "'auto' or 'torch'."
            )
        return "torch"
    return "mamba_ssm"


class MambaBlock(nn.Module):
    """Mamba mixer (Gu & Dao 2023, Fig. 3) with the parameters of ``mamba_ssm.Mamba``.

    ``in_proj`` → (x, z); x → causal depthwise ``conv1d`` → SiLU → ``x_proj`` → (Δ_low, B, C);
    Δ = softplus(``dt_proj``(Δ_low)); y = scan(x, Δ, A = -exp(``A_log``), B, C) + ``D`` ⊙ x;
    out = ``out_proj``(y ⊙ SiLU(z)). Same names and shapes as ``mamba_ssm.Mamba`` (bias-free
    projections, conv bias), so state dicts load across the two backends.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        backend: str = "torch",
        chunk_size: int = 8,
        batch_block: int | None = 32,
        compile_scan: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        self.backend = backend
        self.chunk_size = chunk_size
        self.batch_block = batch_block
        self.compile_scan = compile_scan

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=True,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        # S4D-real initialisation A[d, n] = -(n + 1), stored as log(-A)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # [E, N]
        self.D = nn.Parameter(torch.ones(self.d_inner))  # [E]
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self.reset_dt_parameters()
        self._kernel = load_mamba_ssm_scan()[0] if backend == "mamba_ssm" else None

    @torch.no_grad()
    def reset_dt_parameters(
        self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4
    ) -> None:
        """Mamba's Δ initialisation: uniform ``dt_proj`` weight, softplus(bias) in [min, max]."""
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, L, d_model]`` → ``[B, L, d_model]``; causal in L."""
        seq_len = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [B, L, E] each
        x = self.conv1d(x.transpose(1, 2))[..., :seq_len]  # causal: left padding only
        x = F.silu(x).transpose(1, 2)  # [B, L, E]
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        A = -torch.exp(self.A_log.float())  # [E, N]
        if self._kernel is not None and hidden.is_cuda:
            y = self._kernel(
                x.transpose(1, 2).contiguous(),  # [B, E, L]
                (dt @ self.dt_proj.weight.t()).transpose(1, 2).contiguous(),
                A,
                B.transpose(1, 2).contiguous(),  # [B, N, L]
                C.transpose(1, 2).contiguous(),
                self.D.float(),
                z=z.transpose(1, 2).contiguous(),
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
            ).transpose(1, 2)  # [B, L, E]
        else:
            delta = F.softplus(self.dt_proj(dt))  # [B, L, E]
            compiled = self.compile_scan and not hidden.is_cuda
            y = selective_scan(x, delta, A, B, C, self.chunk_size, self.batch_block, compiled)
            y = (y + x * self.D) * F.silu(z)
        return self.out_proj(y)


class FeedForward(nn.Module):
    """Position-wise FFN: LayerNorm(x + Dropout(W2 · Dropout(GELU(W1 · x))))."""

    def __init__(
        self,
        d_model: int,
        inner_size: int,
        dropout: float,
        layer_norm_eps: float,
        dropout_impl: str = "torch",
    ):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.dropout = make_dropout(dropout, dropout_impl)
        self.LayerNorm = nn.LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` → ``[B, L, D]``."""
        h = self.dropout(F.gelu(self.w_1(x)))
        h = self.dropout(self.w_2(h))
        return self.LayerNorm(h + x)


class MambaLayer(nn.Module):
    """Mamba block → dropout → LayerNorm (residual only in stacks) → FFN (paper Sec. 3.2)."""

    def __init__(
        self,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: int,
        dropout: float,
        residual: bool,
        layer_norm_eps: float,
        backend: str,
        chunk_size: int,
        batch_block: int | None,
        compile_scan: bool = False,
        dropout_impl: str = "torch",
    ):
        super().__init__()
        self.residual = residual
        self.mamba = MambaBlock(
            d_model, d_state, d_conv, expand, backend, chunk_size, batch_block, compile_scan
        )
        self.dropout = make_dropout(dropout, dropout_impl)
        self.LayerNorm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout, layer_norm_eps, dropout_impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` → ``[B, L, D]``."""
        h = self.dropout(self.mamba(x))
        h = self.LayerNorm(h + x if self.residual else h)
        return self.ffn(h)


class Mamba4Rec(DotProductSequentialRecommender):
    r"""Mamba4Rec: item embedding → dropout → LayerNorm → ``num_layers`` Mamba layers.

    No positional embedding: the selective SSM is order-aware. The hidden state at the last
    valid position (``item_seq_len - 1``) scores all items by a dot product with the item
    embeddings. ``mamba_backend`` chooses the CUDA kernels of ``mamba_ssm`` or the pure-PyTorch
    chunked scan (on CPU with compiled chunk kernels when ``scan_compile`` is on); all use the
    same parameters, so a checkpoint moves freely between them.
    """

    #: Each setting's allowed values or range, checked before any data is loaded.
    accepts = {
        "d_state": Number(low=1, integer=True),
        "d_conv": Number(low=1, integer=True),
        "expand": Number(low=1, integer=True),
        "mamba_backend": OneOf(BACKENDS),
        "mamba_dt_init": OneOf(DT_INITS),
        "scan_chunk_size": Number(low=1, integer=True),
        "scan_batch_block": Number(low=1, integer=True, optional=True),
        "scan_compile": Switch(),
    }
    #: Trains under ``train_objective: sequence`` (:meth:`forward_positions`).
    sequence_trainable = True
    #: Causal, with no padding position read: batches may be trimmed to their longest history.
    padding_invariant = True
    #: Benchmark ``cpu-smoke`` scale: a smaller SSM state.
    smoke_settings = {"d_state": 16}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.dropout_prob = config["dropout_prob"]
        self.d_state = config["d_state"]
        self.d_conv = config["d_conv"]
        self.expand = config["expand"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.mamba_dt_init = config["mamba_dt_init"]
        self.scan_chunk_size = config["scan_chunk_size"]
        self.scan_batch_block = config["scan_batch_block"]
        self.scan_compile = bool(config["scan_compile"])
        self.loss_type = config["loss_type"]
        self.backend = resolve_backend(config["mamba_backend"], config["device"])
        self.dropout_impl = dropout_impl(config)  # torch's dropout masks or the cheaper CPU ones

        # define layers and loss
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = make_dropout(self.dropout_prob, self.dropout_impl)
        self.mamba_layers = nn.ModuleList(
            MambaLayer(
                d_model=self.hidden_size,
                d_state=self.d_state,
                d_conv=self.d_conv,
                expand=self.expand,
                dropout=self.dropout_prob,
                residual=self.num_layers > 1,
                layer_norm_eps=self.layer_norm_eps,
                backend=self.backend,
                chunk_size=self.scan_chunk_size,
                batch_block=self.scan_batch_block,
                compile_scan=self.scan_compile,
                dropout_impl=self.dropout_impl,
            )
            for _ in range(self.num_layers)
        )

        self.loss_fct = self.build_loss()

        # parameters initialization: RecBole's normal(0, initializer_range) for every Linear,
        # Mamba's Δ projection included (zero bias), as the reference implementation does
        self.apply(self._init_weights)
        if self.mamba_dt_init == "mamba":
            for layer in self.mamba_layers:
                layer.mamba.reset_dt_parameters()

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` item ids, ``[B]`` lengths → ``[B, D]`` state at the last valid item."""
        return self.gather_indexes(self.forward_positions(item_seq, item_seq_len), item_seq_len - 1)

    def forward_positions(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` item ids -> ``[B, L, D]`` state after every item (the scan is causal)."""
        hidden = self.LayerNorm(self.dropout(self.item_embedding(item_seq)))  # [B, L, D]
        for layer in self.mamba_layers:
            hidden = layer(hidden)
        return hidden

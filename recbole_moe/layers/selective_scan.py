"""Selective scan (the S6 recurrence of Mamba) in pure PyTorch.

Implements the discretised selective state-space recurrence of Mamba (Gu & Dao, 2023, Eq. 2a-2b
with the zero-order-hold ``Ā = exp(ΔA)`` and the simplified ``B̄ = ΔB`` used by ``mamba_ssm``),
one independent recurrence per channel ``d`` and state ``n``::

    h_t[d, n] = exp(Δ_t[d] · A[d, n]) · h_{t-1}[d, n] + Δ_t[d] · u_t[d] · B_t[n]      (h_0 = 0)
    y_t[d]    = Σ_n h_t[d, n] · C_t[n]

The skip term ``D ⊙ u`` and the ``SiLU(z)`` gate are cheap ``[B, L, D]`` operations left to the
caller (``recbole_moe.model.mamba4rec.MambaBlock``).

Memory: a naive autograd implementation keeps several ``[B, L, D, N]`` tensors alive (about
0.8 GB each at batch 256, length 200, D=128, N=32). :class:`_ChunkedSelectiveScan` instead runs
the recurrence sequentially inside chunks of ``chunk_size`` steps, keeps only the state at each
chunk boundary (``[L / chunk_size, B, D, N]``) for the backward pass, and recomputes the
chunk's states there, the same recompute-in-backward strategy as the CUDA kernel. Peak memory is
``O(chunk_size · B · D · N)`` on top of the ``[B, L, D]`` inputs. The batch is additionally split
into blocks of ``batch_block`` rows so that a chunk's working set stays in the CPU cache.

Compiled kernels (``compiled=True``, CPU): :class:`_CompiledSelectiveScan` keeps the same
chunking and recomputation but runs each chunk's forward and backward as one function written
step by step (:func:`_forward_chunk`, :func:`_backward_chunk`) and compiled once per process by
``torch.compile`` (inductor, which needs a C++ compiler). Inductor fuses the chunk's steps, so
the ``[T, b, D, N]`` intermediates of the eager path are never written to memory. The sequence
and batch are zero-padded to whole chunks and blocks, so one compiled shape serves every batch:
a padded step has ``Δ = 0`` and ``u = B = C = 0``, leaving the state unchanged and adding
nothing to any gradient. If compilation fails, a warning is logged and the eager path is used.
"""

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG2E = math.log2(math.e)


def _discretised_A(delta: Tensor, A: Tensor) -> Tensor:
    """``exp(Δ_t ⊙ A)``: ``[T, Bt, D]`` × ``[D, N]`` → ``[T, Bt, D, N]`` (exp2: faster on CPU)."""
    return torch.exp2(delta.unsqueeze(-1) * (A * _LOG2E))


def _chunk_states(dA: Tensor, q: Tensor, B: Tensor, h: Tensor) -> Tensor:
    """Run the recurrence over one chunk, sequentially in time.

    Args:
        dA: ``[T, Bt, D, N]`` discretised state matrix ``exp(Δ_t A)``.
        q: ``[T, Bt, D]`` ``Δ_t ⊙ u_t``.
        B: ``[T, Bt, N]`` input projection ``B_t``.
        h: ``[Bt, D, N]`` state before the chunk.

    Returns:
        ``[T, Bt, D, N]`` states ``h_t`` for every step of the chunk.
    """
    H = q.unsqueeze(-1) * B.unsqueeze(-2)  # (Δ_t u_t) ⊗ B_t, then += exp(Δ_t A) ⊙ h_{t-1}
    H[0].addcmul_(dA[0], h)
    for t in range(1, dA.shape[0]):  # the recurrence itself: sequential by definition
        H[t].addcmul_(dA[t], H[t - 1])
    return H


def _scan_block(u: Tensor, dl: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int):
    """Forward over one batch block, time-major: ``[L, b, ·]`` inputs.

    Returns:
        ``y`` ``[L, b, D]`` and the state entering each chunk ``[n_chunks, b, D, N]``.
    """
    L, b, D = u.shape
    q = dl * u  # [L, b, D]
    h = u.new_zeros(b, D, A.shape[1])
    y = u.new_empty(L, b, D)
    starts = range(0, L, chunk_size)
    boundary = u.new_empty(len(starts), b, D, A.shape[1])
    for c, s in enumerate(starts):
        e = min(s + chunk_size, L)
        boundary[c] = h
        H = _chunk_states(_discretised_A(dl[s:e], A), q[s:e], B[s:e], h)  # [T, b, D, N]
        y[s:e] = (H * C[s:e].unsqueeze(-2)).sum(-1)  # y_t = Σ_n h_t C_t
        h = H[-1]
    return y, boundary


def _scan_block_backward(u, dl, A, B, C, boundary, dy, chunk_size: int):
    """Backward over one batch block (time-major), recomputing each chunk's states.

    Returns:
        ``du, dΔ`` ``[L, b, D]``, ``dA`` ``[D, N]``, ``dB, dC`` ``[L, b, N]``.
    """
    L = u.shape[0]
    q = dl * u
    dq, ddl = torch.empty_like(q), torch.empty_like(dl)
    dB, dC = torch.empty_like(B), torch.empty_like(C)
    dA_param = torch.zeros_like(A)
    carry = torch.zeros_like(boundary[0])  # ∂loss/∂h_{e-1} through exp(Δ_e A) of the next chunk
    starts = list(range(0, L, chunk_size))
    for c in reversed(range(len(starts))):
        s = starts[c]
        e = min(s + chunk_size, L)
        dA = _discretised_A(dl[s:e], A)  # [T, b, D, N]
        H = _chunk_states(dA, q[s:e], B[s:e], boundary[c])
        G = dy[s:e].unsqueeze(-1) * C[s:e].unsqueeze(-2)  # dy_t ⊗ C_t, then += carry
        for t in reversed(range(e - s)):  # G[t] = ∂loss/∂h_t
            G[t].add_(carry)
            carry = dA[t].mul_(G[t])  # dA now holds G ⊙ exp(ΔA)
        carry = carry.clone()  # dA[0] is overwritten below
        dC[s:e] = torch.matmul(dy[s:e].unsqueeze(-2), H).squeeze(-2)  # Σ_d dy_t h_t
        dq[s:e] = (G * B[s:e].unsqueeze(-2)).sum(-1)  # Σ_n G B_t
        dB[s:e] = torch.matmul(q[s:e].unsqueeze(-2), G).squeeze(-2)  # Σ_d G q_t
        P = dA  # ∂loss/∂(Δ_t A) = G ⊙ exp(Δ_t A) ⊙ h_{t-1}
        P[1:].mul_(H[:-1])
        P[0].mul_(boundary[c])
        ddl[s:e] = (P * A).sum(-1)  # Σ_n P A
        dA_param += P.mul_(dl[s:e].unsqueeze(-1)).sum((0, 1))  # Σ_{t,b} P Δ_t
    return dq * dl, ddl + dq * u, dA_param, dB, dC


class _ChunkedSelectiveScan(torch.autograd.Function):
    """``y = scan(u, Δ, A, B, C)`` with chunked recomputation in the backward pass.

    Sequence tensors are batch-major at the interface (``[Bt, L, ·]``); each block of
    ``batch_block`` rows is made time-major (``[L, b, ·]``) inside.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size: int, batch_block: int):
        y = torch.empty_like(u)
        boundaries = []
        for i in range(0, u.shape[0], batch_block):
            block = [x[i : i + batch_block].transpose(0, 1).contiguous() for x in (u, delta, B, C)]
            y_blk, boundary = _scan_block(block[0], block[1], A, block[2], block[3], chunk_size)
            y[i : i + batch_block] = y_blk.transpose(0, 1)
            boundaries.append(boundary)
        ctx.chunk_size, ctx.batch_block = chunk_size, batch_block
        ctx.save_for_backward(u, delta, A, B, C, torch.cat(boundaries, dim=1))
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, boundary = ctx.saved_tensors
        chunk_size, batch_block = ctx.chunk_size, ctx.batch_block
        du, ddelta, dB, dC = (torch.empty_like(x) for x in (u, delta, B, C))
        dA = torch.zeros_like(A)
        for i in range(0, u.shape[0], batch_block):
            rows = slice(i, i + batch_block)
            block = [x[rows].transpose(0, 1).contiguous() for x in (u, delta, B, C, dy)]
            grads = _scan_block_backward(
                block[0], block[1], A, block[2], block[3], boundary[:, rows], block[4], chunk_size
            )
            du[rows], ddelta[rows] = grads[0].transpose(0, 1), grads[1].transpose(0, 1)
            dA += grads[2]
            dB[rows], dC[rows] = grads[3].transpose(0, 1), grads[4].transpose(0, 1)
        return du, ddelta, dA, dB, dC, None, None


# --------------------------------------------------------------------------- compiled kernels
def _forward_chunk(dl: Tensor, q: Tensor, B: Tensor, C: Tensor, A2: Tensor, h: Tensor):
    """One chunk forward, step by step (compiled: fused into a few loops).

    Args:
        dl, q: ``[T, b, D]`` ``Δ_t`` and ``Δ_t ⊙ u_t``.
        B, C: ``[T, b, N]``.
        A2: ``[D, N]`` ``A · log2(e)`` (so that ``exp(Δ A) = exp2(Δ A2)``).
        h: ``[b, D, N]`` state before the chunk.

    Returns:
        ``y`` ``[T, b, D]`` and the state after the chunk ``[b, D, N]``.
    """
    ys = []
    for t in range(dl.shape[0]):
        h = torch.exp2(dl[t].unsqueeze(-1) * A2) * h + q[t].unsqueeze(-1) * B[t].unsqueeze(-2)
        ys.append((h * C[t].unsqueeze(-2)).sum(-1))  # y_t = Σ_n h_t C_t
    return torch.stack(ys), h


def _backward_chunk(
    dl: Tensor, q: Tensor, B: Tensor, C: Tensor, A2: Tensor, h: Tensor, dy: Tensor, carry: Tensor
):
    """One chunk backward, step by step: recompute the chunk's states from ``h``, then run the
    adjoint recurrence ``G_t = dy_t ⊗ C_t + exp(Δ_{t+1} A) ⊙ G_{t+1}`` back from ``carry``
    (``∂loss/∂h`` at the chunk's last step through the next chunk). Shapes as
    :func:`_forward_chunk`, ``dy`` ``[T, b, D]``, ``carry`` ``[b, D, N]``.

    Returns:
        ``dq, dΔ`` (the part through ``exp(ΔA)``) ``[T, b, D]``, ``dB, dC`` ``[T, b, N]``, ``dA``
        ``[D, N]`` summed over the chunk, and the carry into the previous chunk ``[b, D, N]``.
    """
    T = dl.shape[0]
    A = A2 / _LOG2E
    states, decays, dC = [h], [], []
    for t in range(T):
        decay = torch.exp2(dl[t].unsqueeze(-1) * A2)  # exp(Δ_t A)
        h = decay * h + q[t].unsqueeze(-1) * B[t].unsqueeze(-2)
        decays.append(decay)
        states.append(h)
        dC.append((dy[t].unsqueeze(-1) * h).sum(-2))  # Σ_d dy_t h_t
    dq, ddl, dB = [], [], []
    dA = torch.zeros_like(h)  # Σ_t P Δ_t, summed over the batch once at the end
    for t in reversed(range(T)):
        G = dy[t].unsqueeze(-1) * C[t].unsqueeze(-2) + carry  # ∂loss/∂h_t
        dq.append((G * B[t].unsqueeze(-2)).sum(-1))  # Σ_n G B_t
        dB.append((G * q[t].unsqueeze(-1)).sum(-2))  # Σ_d G q_t
        P = G * decays[t] * states[t]  # ∂loss/∂(Δ_t A)
        ddl.append((P * A).sum(-1))
        dA = dA + P * dl[t].unsqueeze(-1)
        carry = decays[t] * G
    reverse = (torch.stack(g[::-1]) for g in (dq, ddl, dB))
    return (*reverse, torch.stack(dC), dA.sum(0), carry)


_KERNELS: dict[str, Callable] = {"forward": _forward_chunk, "backward": _backward_chunk}
_compiled_kernels: dict[str, Callable] = {}
_compile_error: list[str] = []  # set once compilation has failed: the eager path from then on


def _run_kernel(name: str, *args: Tensor):
    """Run the compiled chunk kernel ``name`` (compiled at its first call, and again for new
    input shapes or dtypes). If that fails, warn once and run it uncompiled; every later
    :func:`selective_scan` call then takes the eager path."""
    if not _compile_error:
        if name not in _compiled_kernels:
            _compiled_kernels[name] = torch.compile(_KERNELS[name], dynamic=False, fullgraph=True)
        try:
            return _compiled_kernels[name](*args)
        except Exception as exc:  # typically no C++ compiler, or an inductor error
            _compile_error.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            logging.getLogger(__name__).warning(
                "Compiling the selective scan failed (%s); using the eager scan "
                "(set scan_compile: False to skip compilation).",
                _compile_error[0],
            )
    return _KERNELS[name](*args)


def _to_blocks(x: Tensor, length: int, block: int) -> Tensor:
    """``[Bt, L, K]`` → block-major, time-major ``[Bt' / block, length, block, K]``, zero-padded
    at the end of the batch (to ``Bt'``, a multiple of ``block``) and of the sequence (to
    ``length``), so that each chunk of a block is one contiguous ``[T, block, K]`` tensor."""
    rows = -(-x.shape[0] // block) * block
    x = F.pad(x, (0, 0, 0, length - x.shape[1], 0, rows - x.shape[0]))
    return x.view(rows // block, block, length, x.shape[-1]).transpose(1, 2).contiguous()


def _from_blocks(x: Tensor, rows: int, length: int) -> Tensor:
    """Inverse of :func:`_to_blocks`: ``[n_blocks, L', block, K]`` → ``[rows, length, K]``."""
    n_blocks, padded_length, block, K = x.shape
    return x.transpose(1, 2).reshape(n_blocks * block, padded_length, K)[:rows, :length]


def _compiled_forward(
    u_: Tensor, dl: Tensor, B_: Tensor, C_: Tensor, A: Tensor, chunk_size: int, keep: bool
):
    """The compiled forward over block-major inputs (:func:`_to_blocks`).

    Returns:
        ``y`` ``[n_blocks, L', block, D]`` and, when ``keep``, the state entering each chunk
        ``[n_blocks, n_chunks, block, D, N]`` (else ``None``).
    """
    q, A2 = dl * u_, A * _LOG2E
    y = torch.empty_like(u_)
    n_blocks, n_chunks, block = u_.shape[0], u_.shape[1] // chunk_size, u_.shape[2]
    boundary = u_.new_empty(n_blocks, n_chunks, block, *A.shape) if keep else None
    for i in range(n_blocks):
        h = u_.new_zeros(block, *A.shape)
        for c in range(n_chunks):
            t = slice(c * chunk_size, (c + 1) * chunk_size)
            if boundary is not None:
                boundary[i, c] = h
            y[i, t], h = _run_kernel("forward", dl[i, t], q[i, t], B_[i, t], C_[i, t], A2, h)
    return y, boundary


def _padded_blocks(sequences: tuple[Tensor, ...], chunk_size: int, batch_block: int) -> list:
    """``[Bt, L, ·]`` tensors as :func:`_to_blocks`, the sequence padded to whole chunks."""
    padded_length = -(-sequences[0].shape[1] // chunk_size) * chunk_size
    return [_to_blocks(x, padded_length, batch_block) for x in sequences]


def _compiled_scan_no_grad(u, delta, A, B, C, chunk_size: int, batch_block: int) -> Tensor:
    """The compiled forward alone, when no gradient is needed (evaluation): no chunk states kept."""
    blocks = _padded_blocks((u, delta, B, C), chunk_size, batch_block)
    y, _ = _compiled_forward(*blocks, A, chunk_size, keep=False)
    return _from_blocks(y, u.shape[0], u.shape[1])


class _CompiledSelectiveScan(torch.autograd.Function):
    """``y = scan(u, Δ, A, B, C)`` with compiled chunk kernels (module docstring): the
    sequence is padded to whole chunks, the batch to whole blocks, and only each chunk's
    entering state (``[n_blocks, n_chunks, block, D, N]``) is kept for the backward pass."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size: int, batch_block: int):
        rows, length = u.shape[0], u.shape[1]
        u_, dl, B_, C_ = _padded_blocks((u, delta, B, C), chunk_size, batch_block)
        y, boundary = _compiled_forward(u_, dl, B_, C_, A, chunk_size, keep=True)
        ctx.chunk_size, ctx.rows, ctx.length = chunk_size, rows, length
        ctx.save_for_backward(u_, dl, A, B_, C_, boundary)
        return _from_blocks(y, rows, length)

    @staticmethod
    def backward(ctx, dy):
        u_, dl, A, B_, C_, boundary = ctx.saved_tensors
        chunk_size, n_blocks, n_chunks = ctx.chunk_size, boundary.shape[0], boundary.shape[1]
        dy_ = _to_blocks(dy, u_.shape[1], u_.shape[2])
        q, A2 = dl * u_, A * _LOG2E
        dq, ddl, dB, dC = (torch.empty_like(x) for x in (q, dl, B_, C_))
        dA = torch.zeros_like(A)
        for i in range(n_blocks):
            carry = torch.zeros_like(boundary[i, 0])
            for c in reversed(range(n_chunks)):
                t = slice(c * chunk_size, (c + 1) * chunk_size)
                args = (dl[i, t], q[i, t], B_[i, t], C_[i, t], A2, boundary[i, c], dy_[i, t], carry)
                dq[i, t], ddl[i, t], dB[i, t], dC[i, t], dA_chunk, carry = _run_kernel(
                    "backward", *args
                )
                dA += dA_chunk
        du, ddelta = dq * dl, ddl + dq * u_
        grads = (_from_blocks(g, ctx.rows, ctx.length) for g in (du, ddelta, dB, dC))
        du, ddelta, dB, dC = grads
        return du, ddelta, dA, dB, dC, None, None


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 8,
    batch_block: int | None = 32,
    compiled: bool = False,
) -> Tensor:
    """Selective scan ``y_t = C_t · h_t`` (module docstring) for a batch of sequences.

    Args:
        u: ``[Bt, L, D]`` input after the causal convolution.
        delta: ``[Bt, L, D]`` positive step sizes ``Δ`` (after softplus).
        A: ``[D, N]`` negative state matrix diagonal.
        B: ``[Bt, L, N]`` input-dependent ``B_t``.
        C: ``[Bt, L, N]`` input-dependent ``C_t``.
        chunk_size: steps per recomputation chunk.
        batch_block: rows processed together (``None``: the whole batch).
        compiled: use the compiled chunk kernels (CPU; falls back to the eager path if
            compilation fails).

    Returns:
        ``[Bt, L, D]`` scan output (without the ``D ⊙ u`` skip and the gate).
    """
    block = batch_block if batch_block else u.shape[0]
    if compiled and not _compile_error:
        inputs = (u, delta, A, B, C)
        if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
            return _CompiledSelectiveScan.apply(*inputs, chunk_size, block)
        return _compiled_scan_no_grad(*inputs, chunk_size, block)
    return _ChunkedSelectiveScan.apply(u, delta, A, B, C, chunk_size, block)

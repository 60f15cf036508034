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
"""

import math

import torch
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


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 16,
    batch_block: int | None = 32,
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

    Returns:
        ``[Bt, L, D]`` scan output (without the ``D ⊙ u`` skip and the gate).
    """
    block = batch_block if batch_block else u.shape[0]
    return _ChunkedSelectiveScan.apply(u, delta, A, B, C, chunk_size, block)

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

from typing import List, Optional

import torch
from torch import Tensor


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
    H = torch.empty_like(dA)
    for t in range(dA.shape[0]):  # the recurrence itself: sequential by definition
        torch.mul(dA[t], h, out=H[t])
        H[t].addcmul_(q[t].unsqueeze(-1), B[t].unsqueeze(1))  # += (Δ_t u_t) ⊗ B_t
        h = H[t]
    return H


class _ChunkedSelectiveScan(torch.autograd.Function):
    """``y = scan(u, Δ, A, B, C)`` with chunked recomputation in the backward pass.

    All sequence tensors are batch-major at the interface (``[Bt, L, ·]``) and time-major inside.
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int):
        u_t, dl_t, B_t, C_t = (x.transpose(0, 1).contiguous() for x in (u, delta, B, C))
        L, Bt, D = u_t.shape
        N = A.shape[1]
        q_t = dl_t * u_t  # [L, Bt, D]
        h = u.new_zeros(Bt, D, N)
        y_t = u.new_empty(L, Bt, D)
        starts = list(range(0, L, chunk_size))
        boundary = u.new_empty(len(starts), Bt, D, N)  # state entering each chunk
        for c, s in enumerate(starts):
            e = min(s + chunk_size, L)
            boundary[c] = h
            dA = torch.exp(dl_t[s:e].unsqueeze(-1) * A)  # [T, Bt, D, N]
            H = _chunk_states(dA, q_t[s:e], B_t[s:e], h)  # [T, Bt, D, N]
            y_t[s:e] = torch.matmul(H, C_t[s:e].unsqueeze(-1)).squeeze(-1)  # [T, Bt, D]
            h = H[-1].clone()
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(u_t, dl_t, A, B_t, C_t, boundary)
        return y_t.transpose(0, 1)

    @staticmethod
    def backward(ctx, dy: Tensor):
        u_t, dl_t, A, B_t, C_t, boundary = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        L, Bt, D = u_t.shape
        N = A.shape[1]
        dy_t = dy.transpose(0, 1).contiguous()  # [L, Bt, D]
        q_t = dl_t * u_t
        dq_t = torch.empty_like(q_t)
        ddl_t = torch.empty_like(dl_t)
        dB_t = torch.empty_like(B_t)
        dC_t = torch.empty_like(C_t)
        dA_param = torch.zeros_like(A)
        carry = u_t.new_zeros(Bt, D, N)  # ∂loss/∂h_{e-1} flowing back through exp(Δ_e A)
        starts = list(range(0, L, chunk_size))
        for c in reversed(range(len(starts))):
            s = starts[c]
            e = min(s + chunk_size, L)
            dA = torch.exp(dl_t[s:e].unsqueeze(-1) * A)  # [T, Bt, D, N]
            H = _chunk_states(dA, q_t[s:e], B_t[s:e], boundary[c])
            G = torch.empty_like(dA)  # G[t] = ∂loss/∂h_t
            for t in reversed(range(e - s)):
                G[t].copy_(carry).addcmul_(dy_t[s + t].unsqueeze(-1), C_t[s + t].unsqueeze(1))
                carry = dA[t].mul_(G[t])  # dA now holds G ⊙ exp(ΔA)
            carry = carry.clone()  # dA[0] is overwritten below
            dC_t[s:e] = torch.matmul(dy_t[s:e].unsqueeze(-2), H).squeeze(-2)  # Σ_d dy_t h_t
            dq_t[s:e] = torch.matmul(G, B_t[s:e].unsqueeze(-1)).squeeze(-1)  # Σ_n G B_t
            dB_t[s:e] = torch.matmul(q_t[s:e].unsqueeze(-2), G).squeeze(-2)  # Σ_d G q_t
            P = dA  # ∂loss/∂(Δ_t A) = G ⊙ exp(Δ_t A) ⊙ h_{t-1}
            P[1:].mul_(H[:-1])
            P[0].mul_(boundary[c])
            ddl_t[s:e] = (P * A).sum(-1)  # Σ_n P A
            dA_param += P.mul_(dl_t[s:e].unsqueeze(-1)).sum((0, 1))  # Σ_{t,b} P Δ_t
        du_t = dq_t * dl_t
        ddl_t += dq_t * u_t
        return (
            du_t.transpose(0, 1),
            ddl_t.transpose(0, 1),
            dA_param,
            dB_t.transpose(0, 1),
            dC_t.transpose(0, 1),
            None,
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 16,
    batch_block: Optional[int] = 32,
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
    n = u.shape[0]
    block = n if not batch_block else batch_block
    outs: List[Tensor] = []
    for i in range(0, n, block):
        sl = slice(i, i + block)
        outs.append(_ChunkedSelectiveScan.apply(u[sl], delta[sl], A, B[sl], C[sl], chunk_size))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

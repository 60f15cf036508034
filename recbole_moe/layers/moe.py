"""Shared Mixture-of-Experts core: router, expert bank, balance losses, routing statistics.

Written once and used by every MoE model of the package (HyMoERec uses the sparse top-K path,
FAME-style dense mixing uses ``top_k=None``). The steps read in order, as in a standard sparse
MoE block::

    probs, weights, indices = Router(x)          # logits -> softmax -> top-K -> renormalise
    y = ExpertBank(x, weights, indices)          # dispatch to experts -> weighted combine
    aux = load_balance_loss(lb_type, ...)        # computed once, outside the block

Shapes: ``T`` tokens (any leading dims are flattened), ``D`` model width, ``H`` expert inner
width, ``E`` experts, ``K`` experts per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from recbole_moe.layers.shape_buckets import pad_rows

MOE_IMPLS = ("auto", "loop", "dense")
LB_TYPES = ("entropy", "switch")

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU, the same function as RecBole's FeedForward.gelu
    "relu": F.relu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def get_activation(act: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Activation function of a RecBole ``hidden_act`` name (a callable is passed through)."""
    if callable(act):
        return act
    if act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {sorted(_ACTIVATIONS)}, got {act!r}")
    return _ACTIVATIONS[act]


def softmax_fp32(logits: Tensor, dim: int = -1) -> Tensor:
    """``softmax(logits)`` computed and returned in at least float32.

    Under CPU bf16 autocast (``enable_amp``) the router and gate logits come out of their
    Linear layers in bfloat16, and autocast leaves ``softmax`` in the input's dtype: the routing
    probabilities, the balance losses and the routing statistics would all be bfloat16 (about
    3 significant digits). Routing decisions are kept in float32, as is usual for MoE under
    mixed precision; without autocast (float32 logits) this is plain ``softmax``.
    """
    return torch.softmax(logits, dim=dim, dtype=torch.promote_types(logits.dtype, torch.float32))


def log_softmax_fp32(logits: Tensor, dim: int = -1) -> Tensor:
    """``log_softmax(logits)`` in at least float32 (see :func:`softmax_fp32`)."""
    return torch.log_softmax(
        logits, dim=dim, dtype=torch.promote_types(logits.dtype, torch.float32)
    )


def resolve_impl(impl: str, device: torch.device) -> str:
    """Resolve ``moe_impl: auto | loop | dense`` to a concrete implementation for ``device``.

    ``auto`` picks ``loop`` (per-expert dispatch) on CPU, where computing only each expert's
    routed tokens beats dense compute (``benchmarks/moe_impl.py`` compares them). On CUDA it
    picks ``dense``: batched matmuls need no host synchronisation and are expected to win for
    small E (``benchmarks/moe_impl.py --device cuda`` checks it).
    """
    if impl not in MOE_IMPLS:
        raise ValueError(f"moe_impl must be one of {MOE_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    return "loop" if device.type == "cpu" else "dense"


@dataclass
class RouterOutput:
    """What a router returns for ``T`` tokens (leading dims of the input are kept).

    logits:  ``[..., E]`` raw router scores.
    probs:   ``[..., E]`` full softmax distribution (used by the balance losses).
    weights: ``[..., K]`` combine weights of the selected experts (``K = E`` for dense mixing).
    indices: ``[..., K]`` selected expert ids, or ``None`` for dense mixing (all experts, in order).
    """

    logits: Tensor
    probs: Tensor
    weights: Tensor
    indices: Tensor | None


class Router(nn.Module):
    """Linear router: logits ``x W_r`` -> softmax -> top-K -> renormalise.

    HyMoERec's router: ``r = x W_r`` (no bias), ``p = softmax(r)``, ``(v, idx) = TopK(r, K)``,
    ``g = softmax(v)`` — the gates are renormalised over the K selected experts (the paper
    leaves this open; renormalised, they sum to 1, so α alone scales the routed branch). With
    ``top_k=None`` the router mixes densely: ``weights = p`` over all experts and ``indices =
    None`` (FAME-style routing).
    """

    def __init__(
        self, in_features: int, n_experts: int, top_k: int | None = None, bias: bool = False
    ):
        super().__init__()
        if top_k is not None and not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in [1, n_experts={n_experts}], got {top_k}")
        self.n_experts = n_experts
        self.top_k = top_k
        self.gate = nn.Linear(in_features, n_experts, bias=bias)

    def forward(self, x: Tensor) -> RouterOutput:
        """x: ``[..., in_features]`` -> :class:`RouterOutput` of ``[..., E]`` / ``[..., K]``."""
        logits = self.gate(x)  # [..., E]
        probs = softmax_fp32(logits)  # [..., E], float32 under bf16 autocast
        if self.top_k is None:
            return RouterOutput(logits, probs, probs, None)
        top_logits, indices = logits.topk(self.top_k, dim=-1)  # [..., K]
        weights = softmax_fp32(top_logits)  # [..., K] renormalised over the chosen K
        return RouterOutput(logits, probs, weights, indices)


class _Permute(torch.autograd.Function):
    """Row permutation ``x[perm]``; its backward is the gather ``grad[inverse]``, not a scatter."""

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class ExpertBank(nn.Module):
    """E position-wise FFN experts ``f_e(x) = act(x W1_e + b1_e) W2_e + b2_e`` with stacked weights.

    Parameters: ``w1 [E, D, H]``, ``b1 [E, H]``, ``w2 [E, H, D]``, ``b2 [E, D]`` — one layout,
    so every implementation loads the same checkpoints.

    Implementations (``impl``, resolved per call from the input's device by :func:`resolve_impl`):

    * ``loop``  — dispatch: sort the (token, expert) assignments by expert, gather each expert's
      tokens, one matmul pair per expert, weight, ``index_add`` back. Compute ∝ K·T.
    * ``dense`` — run every expert on every token with batched matmuls ``[E, T, *]`` and keep the
      selected ones by masking the combine weights. Compute ∝ E·T, no host synchronisation.
    """

    def __init__(
        self,
        n_experts: int,
        in_features: int,
        inner_size: int,
        act: str | Callable[[Tensor], Tensor] = "gelu",
        impl: str = "auto",
    ):
        super().__init__()
        resolve_impl(impl, torch.device("cpu"))  # validate early
        self.n_experts, self.in_features, self.inner_size = n_experts, in_features, inner_size
        self.act = get_activation(act)
        self.impl = impl
        self.w1 = nn.Parameter(torch.empty(n_experts, in_features, inner_size))
        self.b1 = nn.Parameter(torch.empty(n_experts, inner_size))
        self.w2 = nn.Parameter(torch.empty(n_experts, inner_size, in_features))
        self.b2 = nn.Parameter(torch.empty(n_experts, in_features))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Weights ~ N(0, std), biases 0 (RecBole's ``_init_weights`` convention for Linear)."""
        nn.init.normal_(self.w1, mean=0.0, std=std)
        nn.init.normal_(self.w2, mean=0.0, std=std)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, in={self.in_features}, "
            f"inner={self.inner_size}, impl={self.impl}"
        )

    def expert_forward(self, x: Tensor, e: int) -> Tensor:
        """One expert: ``[N, D] -> [N, D]``."""
        h = self.act(torch.addmm(self.b1[e], x, self.w1[e]))  # [N, H]
        return torch.addmm(self.b2[e], h, self.w2[e])  # [N, D]

    def forward_all(self, x: Tensor) -> Tensor:
        """Every expert on every token: ``[T, D] -> [E, T, D]`` (batched matmuls)."""
        xe = x.unsqueeze(0).expand(self.n_experts, -1, -1)  # [E, T, D]
        h = self.act(torch.baddbmm(self.b1.unsqueeze(1), xe, self.w1))  # [E, T, H]
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)  # [E, T, D]

    def forward(
        self,
        x: Tensor,
        weights: Tensor,
        indices: Tensor | None,
        token_mask: Tensor | None = None,
    ) -> Tensor:
        """Weighted expert mixture ``y = Σ_k weights_k · f_{indices_k}(x)``.

        x: ``[..., D]``; weights: ``[..., K]``; indices: ``[..., K]`` or ``None`` (dense mixing,
        ``K = E``); token_mask: ``[...]`` bool, tokens outside it are not computed and get 0.
        Returns ``[..., D]``.
        """
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # [T, D]
        w2 = weights.reshape(x2.shape[0], -1)  # [T, K]
        i2 = None if indices is None else indices.reshape(x2.shape[0], -1)  # [T, K]
        m2 = None if token_mask is None else token_mask.reshape(-1)  # [T]
        impl = resolve_impl(self.impl, x.device)
        if impl == "loop" and i2 is not None:
            y = self._forward_loop(x2, w2, i2, m2)
        else:
            y = self._forward_dense(x2, w2, i2, m2)
        return y.reshape(*lead, self.in_features)

    def _forward_loop(
        self, x: Tensor, weights: Tensor, indices: Tensor, token_mask: Tensor | None
    ) -> Tensor:
        """Dispatch implementation. x ``[T, D]``, weights/indices ``[T, K]``, token_mask ``[T]``.

        The T·K (token, slot) assignments are sorted by expert; masked tokens go to a dummy
        bucket E that is never computed. Rows move with permutations whose backward is the
        inverse permutation (gathers both ways, no scatter-add).
        """
        n_tokens, k = indices.shape
        flat_expert = indices.reshape(-1)  # [TK] expert of each assignment
        if token_mask is not None:
            skip = ~token_mask.unsqueeze(1).expand(-1, k).reshape(-1)
            flat_expert = flat_expert.masked_fill(skip, self.n_experts)  # dummy bucket E
        order = flat_expert.argsort()  # [TK] assignments grouped by expert
        inverse = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.numel(), device=x.device)
        )
        counts = torch.bincount(flat_expert, minlength=self.n_experts + 1).tolist()  # one host sync
        x_rep = x.unsqueeze(1).expand(-1, k, -1).reshape(-1, self.in_features)  # [TK, D]
        chunks = _Permute.apply(x_rep, order, inverse).split(counts)  # per-expert token groups
        # Loop over experts (not tokens): E small matmul pairs beat dense E·T compute on CPU.
        params = zip(
            self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0), self.b2.unbind(0), strict=False
        )
        # Under CPU bf16 autocast each group is padded to a bucketed row count (shape_buckets).
        ys = [
            torch.addmm(b2, self.act(torch.addmm(b1, pad_rows(xe), w1)), w2)[: xe.shape[0]]
            for xe, (w1, b1, w2, b2) in zip(chunks, params, strict=False)
        ]
        ys.append(x.new_zeros(counts[-1], self.in_features))  # skipped tokens contribute 0
        y = _Permute.apply(torch.cat(ys), inverse, order).view(
            n_tokens, k, self.in_features
        )  # [T, K, D]
        # [T, D] = Σ_k g_k y_k, as a broadcast product and sum: T batched [1, K] @ [K, D]
        # products (bmm) are slower for small K, forward and backward
        return (weights.unsqueeze(-1).to(y.dtype) * y).sum(1)

    def _forward_dense(
        self, x: Tensor, weights: Tensor, indices: Tensor | None, token_mask: Tensor | None
    ) -> Tensor:
        """Dense implementation: all experts, then combine with a ``[T, E]`` gate matrix."""
        y_all = self.forward_all(x)  # [E, T, D]
        if indices is None:
            gates = weights  # [T, E] dense mixing
        else:
            gates = weights.new_zeros(x.shape[0], self.n_experts).scatter(
                1, indices, weights
            )  # [T, E]
        if token_mask is not None:
            gates = gates * token_mask.unsqueeze(1).to(gates.dtype)
        return torch.einsum("te,etd->td", gates, y_all)  # [T, D]


# ---------------------------------------------------------------------------------------------
# Load-balance losses (HyMoERec's objective) and routing statistics
# ---------------------------------------------------------------------------------------------


def _flat(probs: Tensor, token_mask: Tensor | None) -> Tensor:
    """``[..., E]`` probs restricted to valid tokens -> ``[T_valid, E]``."""
    probs = probs.reshape(-1, probs.shape[-1])
    if token_mask is None:
        return probs
    return probs[token_mask.reshape(-1)]


def mean_gate_prob(probs: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """ḡ_e: mean full-softmax router probability of each expert over valid tokens. ``[E]``."""
    return _flat(probs, token_mask).mean(dim=0)


def expert_counts(indices: Tensor, n_experts: int, token_mask: Tensor | None = None) -> Tensor:
    """Number of (token, slot) assignments per expert over valid tokens. ``[E]`` float."""
    idx = indices.reshape(-1, indices.shape[-1])
    if token_mask is not None:
        idx = idx[token_mask.reshape(-1)]
    return torch.bincount(idx.reshape(-1), minlength=n_experts).to(torch.float32)


def token_fraction(indices: Tensor, n_experts: int, token_mask: Tensor | None = None) -> Tensor:
    """f_e: fraction of the top-K assignments that go to expert e (sums to 1). ``[E]``."""
    counts = expert_counts(indices, n_experts, token_mask)
    return counts / counts.sum().clamp_min(1.0)


def entropy_balance_loss(probs: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """HyMoERec's balance loss ``Σ_e ḡ_e log ḡ_e`` (negative entropy of mean expert usage, one
    layer).

    ḡ averages the differentiable full softmax probabilities over non-padding tokens; the plus
    sign is the paper's: minimising it pushes usage towards uniform, where it takes its minimum
    ``-log E``.
    """
    gbar = mean_gate_prob(probs, token_mask)  # [E]
    return torch.special.xlogy(gbar, gbar).sum()


def switch_balance_loss(probs: Tensor, indices: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """Switch-Transformer form ``E · Σ_e f_e · P_e`` (one layer); minimum 1 at uniform load.

    f_e: fraction of top-K assignments dispatched to e (no gradient); P_e: mean router
    probability ḡ_e (carries the gradient). Balances actual dispatch, not only probability mass.
    """
    n_experts = probs.shape[-1]
    f = token_fraction(indices, n_experts, token_mask)  # [E]
    p = mean_gate_prob(probs, token_mask)  # [E]
    return n_experts * (f.to(p.dtype) * p).sum()


def load_balance_loss(
    lb_type: str, probs: Tensor, indices: Tensor | None, token_mask: Tensor | None = None
) -> Tensor:
    """Dispatch on ``lb_type: entropy | switch`` (one layer; callers sum over layers)."""
    if lb_type == "entropy":
        return entropy_balance_loss(probs, token_mask)
    if lb_type == "switch":
        if indices is None:
            raise ValueError("lb_type 'switch' needs top-K indices (a sparse router)")
        return switch_balance_loss(probs, indices, token_mask)
    raise ValueError(f"lb_type must be one of {LB_TYPES}, got {lb_type!r}")


def normalized_entropy(fraction: Tensor) -> Tensor:
    """Entropy of a distribution over E experts divided by ``log E``: 1 = uniform, 0 = collapsed."""
    n = fraction.shape[-1]
    if n <= 1:
        return fraction.new_ones(())
    p = fraction / fraction.sum().clamp_min(1e-12)
    return -torch.special.xlogy(p, p).sum() / math.log(n)


class EpochStatistics(nn.Module):
    """Sums over a training epoch, kept in non-persistent buffers (never in a checkpoint).

    Each rank accumulates its own shard; :meth:`all_reduce` sums the buffers over the ranks of a
    process group, so every rank then holds the statistics of the whole epoch. Data-parallel
    training leaves these buffers out of DDP's broadcast (:func:`statistics_buffer_names`).
    """

    def reset(self) -> None:
        """Zero every buffer (the start of an epoch)."""
        for buffer in self.buffers(recurse=False):
            buffer.zero_()

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Sum every buffer over the ranks of the process group (no-op outside one)."""
        if dist.is_available() and dist.is_initialized():
            for buffer in self.buffers(recurse=False):
                dist.all_reduce(buffer)


def all_reduce_statistics(model: nn.Module) -> None:
    """:meth:`EpochStatistics.all_reduce` on every statistics module of ``model``."""
    for module in model.modules():
        if isinstance(module, EpochStatistics):
            module.all_reduce()


def statistics_buffer_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_buffers()``) of the buffers of its statistics modules."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, EpochStatistics):
            names += [
                f"{prefix}.{name}" if prefix else name
                for name, _ in module.named_buffers(recurse=False)
            ]
    return names


class MeanWeights(EpochStatistics):
    """Running mean of per-sample weight vectors, e.g. FAME's gate ``[H]`` and router ``[H, N]``.

    ``update`` adds ``[T, *shape]`` weights of T samples; ``mean`` is ``[*shape]`` (None when no
    sample was seen since the last reset).
    """

    def __init__(self, *shape: int):
        super().__init__()
        self.register_buffer("total", torch.zeros(shape), persistent=False)
        self.register_buffer("count", torch.zeros(()), persistent=False)

    @torch.no_grad()
    def update(self, weights: Tensor) -> None:
        self.total += weights.detach().sum(dim=0)
        self.count += weights.shape[0]

    def mean(self) -> Tensor | None:
        """Mean weights ``[*shape]`` on the CPU, or None before any update."""
        if not int(self.count):
            return None
        return (self.total / self.count).cpu()


class RoutingStats(EpochStatistics):
    """Running routing statistics of one MoE layer, accumulated without host syncs.

    ``update`` adds a batch; ``summary`` returns token fraction per expert, mean gate probability
    per expert and the normalised entropy of the load; ``reset`` clears. Buffers are not saved.
    """

    def __init__(self, n_experts: int):
        super().__init__()
        self.n_experts = n_experts
        self.register_buffer("counts", torch.zeros(n_experts), persistent=False)
        self.register_buffer("prob_sum", torch.zeros(n_experts), persistent=False)
        self.register_buffer("n_tokens", torch.zeros(()), persistent=False)

    @torch.no_grad()
    def update(
        self, probs: Tensor, indices: Tensor | None, token_mask: Tensor | None = None
    ) -> None:
        p = _flat(probs.detach(), token_mask).float()  # [T_valid, E]
        self.prob_sum += p.sum(dim=0)
        self.n_tokens += p.shape[0]
        if indices is not None:
            self.counts += expert_counts(indices, self.n_experts, token_mask)
        else:  # dense mixing: the "load" is the probability mass
            self.counts += p.sum(dim=0)

    def summary(self) -> dict[str, object]:
        """``{"tokens", "token_fraction": [E], "mean_prob": [E], "load_entropy"}`` as floats."""
        n = float(self.n_tokens)
        frac = self.counts / self.counts.sum().clamp_min(1e-12)
        return {
            "tokens": n,
            "token_fraction": frac.tolist(),
            "mean_prob": (self.prob_sum / max(n, 1.0)).tolist(),
            "load_entropy": float(normalized_entropy(frac)) if n > 0 else float("nan"),
        }

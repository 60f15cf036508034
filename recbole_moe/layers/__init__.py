"""Reusable layers: the shared Mixture-of-Experts core (see :mod:`recbole_moe.layers.moe`)."""

from recbole_moe.layers.moe import (
    LB_TYPES,
    MOE_IMPLS,
    ExpertBank,
    Router,
    RouterOutput,
    RoutingStats,
    entropy_balance_loss,
    expert_counts,
    get_activation,
    load_balance_loss,
    mean_gate_prob,
    normalized_entropy,
    resolve_impl,
    switch_balance_loss,
    token_fraction,
)

__all__ = [
    "LB_TYPES",
    "MOE_IMPLS",
    "ExpertBank",
    "Router",
    "RouterOutput",
    "RoutingStats",
    "entropy_balance_loss",
    "expert_counts",
    "get_activation",
    "load_balance_loss",
    "mean_gate_prob",
    "normalized_entropy",
    "resolve_impl",
    "switch_balance_loss",
    "token_fraction",
]

"""Fewer distinct matrix shapes under bfloat16 autocast on a CPU.

On a CPU with native bf16, PyTorch runs bfloat16 matrix products through oneDNN, which builds
(JIT-compiles) a kernel for every new shape and caches a limited number of them. A shape seen
before costs the product alone; a new one adds the kernel's build, which for the small
products of these models costs more than the product itself (``benchmarks/amp_epoch.py``
times epochs with and without the buckets below). Sequence training makes
new shapes all the time: batches are trimmed to their longest history, the chunked loss ends
with a remainder of arbitrary length, and HyMoERec's experts receive a different number of
tokens every step. float32 products (MKL) have no such cost.

So, only while bf16 autocast is active on the CPU, the sizes that vary are rounded up:
sequence widths to a multiple of :data:`WIDTH_STEP` (extra trailing padding, which a causal
model's real positions never see and which carries no loss), and the rows of a loss chunk or an
expert's token group to a multiple of :data:`ROW_STEP` (zero rows whose results are dropped).
Every real position gets the value it would get without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Sequence widths under CPU bf16 autocast are rounded up to a multiple of this.
WIDTH_STEP = 8
#: Row counts of bf16 products with a data-dependent size are rounded up to a multiple of this.
ROW_STEP = 64


def cpu_bf16_autocast(device: torch.device) -> bool:
    """Whether bfloat16 autocast is active for tensors on ``device`` (a CPU)."""
    return (
        device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def round_up(n: int, step: int) -> int:
    """The smallest multiple of ``step`` that is ``>= n``."""
    return -(-n // step) * step


def pad_rows(x: Tensor) -> Tensor:
    """``x`` ``[N, ...]`` with zero rows appended up to a multiple of :data:`ROW_STEP` rows,
    under CPU bf16 autocast; ``x`` itself otherwise. The caller keeps the first ``N`` rows of
    results."""
    if not cpu_bf16_autocast(x.device):
        return x
    extra = round_up(x.shape[0], ROW_STEP) - x.shape[0]
    if not extra:
        return x
    return F.pad(x, (0, 0) * (x.dim() - 1) + (0, extra))


def bucket_width(width: int, device: torch.device, limit: int) -> int:
    """A sequence width rounded up to a multiple of :data:`WIDTH_STEP`, at most ``limit`` (the
    model's longest sequence), under CPU bf16 autocast; unchanged otherwise."""
    if not cpu_bf16_autocast(device):
        return width
    return max(width, min(round_up(width, WIDTH_STEP), limit))


__all__ = ["ROW_STEP", "WIDTH_STEP", "bucket_width", "cpu_bf16_autocast", "pad_rows", "round_up"]

"""Time the two ExpertBank implementations (``loop`` dispatch vs ``dense`` batched) side by side.

Forward, and forward + backward, of one routed-expert layer on random tokens, same weights for
both, all four interleaved in each round (after ``--warmup`` rounds; the median of
``--repeats``).

Usage::

    python benchmarks/moe_impl.py                       # B=256 L=50 D=64 inner=256 E=8 K=2
    python benchmarks/moe_impl.py --experts 4 --top-k 2 --device cuda
"""

from __future__ import annotations

import argparse
import functools

import torch

from recbole_moe.benchmark.timing import medians, time_interleaved
from recbole_moe.layers.moe import ExpertBank, Router


def setup(impl: str, args: argparse.Namespace):
    """A forward (+ backward) step of one routed-expert layer with ``impl``, on the same
    random tokens and weights (seed 0) for every impl: ``step(backward)``."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    router = Router(args.hidden, args.experts, args.top_k).to(device)
    bank = ExpertBank(args.experts, args.hidden, args.inner, "gelu", impl).to(device)
    x = torch.randn(args.batch, args.length, args.hidden, device=device, requires_grad=True)
    mask = torch.rand(args.batch, args.length, device=device) < args.fill

    def step(backward: bool) -> None:
        with torch.set_grad_enabled(backward):
            r = router(x)
            y = bank(x, r.weights, r.indices, mask)
            if backward:
                y.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def time_impls(impls: tuple[str, ...], args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds of ``<impl> fwd`` and ``<impl> fwd+bwd`` over ``args.repeats``
    rounds after ``args.warmup``, every impl and pass interleaved in each round."""
    work = {}
    for impl in impls:
        step = setup(impl, args)
        work[f"{impl} fwd"] = functools.partial(step, False)
        work[f"{impl} fwd+bwd"] = functools.partial(step, True)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time_interleaved(work, args.warmup + args.repeats)
    return {name: 1000 * value for name, value in medians(seconds, skip=args.warmup).items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--inner", type=int, default=256)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--fill", type=float, default=1.0, help="fraction of non-padding tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"B={args.batch} L={args.length} D={args.hidden} inner={args.inner} E={args.experts} "
        f"K={args.top_k} fill={args.fill} device={args.device} threads={torch.get_num_threads()}"
    )
    print(f"{'impl':<6} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    impls = ("loop", "dense")
    ms = time_impls(impls, args)
    for impl in impls:
        print(f"{impl:<6} {ms[f'{impl} fwd']:>9.1f} {ms[f'{impl} fwd+bwd']:>11.1f}")


if __name__ == "__main__":
    main()

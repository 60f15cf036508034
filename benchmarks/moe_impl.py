"""Time the two ExpertBank implementations (``loop`` dispatch vs ``dense`` batched) side by side.

Forward + backward of one routed-expert layer on random tokens, same weights for both.

Usage::

    python benchmarks/moe_impl.py                       # B=256 L=50 D=64 inner=256 E=8 K=2
    python benchmarks/moe_impl.py --experts 4 --top-k 2 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recbole_moe.layers.moe import ExpertBank, Router


def time_impl(impl: str, args: argparse.Namespace) -> tuple[float, float]:
    """Median milliseconds of (forward, forward+backward) over ``args.repeats`` runs."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    router = Router(args.hidden, args.experts, args.top_k).to(device)
    bank = ExpertBank(args.experts, args.hidden, args.inner, "gelu", impl).to(device)
    x = torch.randn(args.batch, args.length, args.hidden, device=device, requires_grad=True)
    mask = torch.rand(args.batch, args.length, device=device) < args.fill

    def step(backward: bool) -> None:
        r = router(x)
        y = bank(x, r.weights, r.indices, mask)
        if backward:
            y.sum().backward()

    fwd, fwdbwd = [], []
    for i in range(args.warmup + args.repeats):
        for backward, out in ((False, fwd), (True, fwdbwd)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if backward:
                step(True)
            else:
                with torch.no_grad():
                    step(False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                out.append((time.perf_counter() - start) * 1000)
    return statistics.median(fwd), statistics.median(fwdbwd)


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
    for impl in ("loop", "dense"):
        f, fb = time_impl(impl, args)
        print(f"{impl:<6} {f:>9.1f} {fb:>11.1f}")


if __name__ == "__main__":
    main()

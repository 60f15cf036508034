"""The chunked sequence loss with its item axis padded or not, side by side.

``linear_cross_entropy`` (the ``sequence`` regime's full softmax) multiplies each chunk of
``C`` positions by the ``[V, D]`` item table three times: the logits ``[C, D] @ [D, V]``, the
states' gradient ``[C, V] @ [V, D]`` and the table's gradient. With ``V`` the dataset's item
count (3,417 on ML-1M 5-core, 12,102 on Beauty: not multiples of 16), the rows of the ``[C, V]``
matrices do not start on a 64-byte boundary. The loss pads the item axis to a multiple of
``item_step`` (zero item rows, logits ``-inf``, so the same loss and gradients) and accumulates
the table's gradient as ``hidden.T @ grad``.

For each item count, the loss's forward and backward on random ``[--rows, --hidden]`` states
are timed interleaved for ``--rounds`` rounds in one process: ``previous`` (no padding, the
table's gradient as ``grad.T @ hidden``: the layout before), ``item_step 1`` (no padding, the
current gradient layout) and ``item_step N`` for each of ``--steps`` (the default is 16).
Ratios use the median of the rounds after the first (> 1: faster than ``previous``); the
losses of all variants are printed beside the times.

    OMP_NUM_THREADS=1 python benchmarks/loss_layout.py --threads 1 \\
        --output benchmarks/results/loss_layout.json
"""

from __future__ import annotations

import argparse
import statistics

import torch

#: Item counts (padding item included) of the prepared datasets and of step_speed.py's data.
ITEMS = {"step_speed": 3001, "ml-1m-5core": 3417, "toys": 11925, "beauty": 12102, "sports": 18358}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", nargs="+", default=list(ITEMS), choices=list(ITEMS))
    parser.add_argument("--rows", type=int, default=8192, help="positions T in the loss")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--output", help="write the rows and the machine as JSON here")
    return parser.parse_args(argv)


def measure(name: str, args) -> dict:
    from recbole_moe.benchmark.timing import time_alternatives
    from recbole_moe.layers import sequence_loss

    n_items = ITEMS[name]
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, generator=generator, requires_grad=True)
    weight = torch.randn(n_items, args.hidden, generator=generator) * 0.1
    weight.requires_grad_(True)
    target = torch.randint(1, n_items, (args.rows,), generator=generator)
    losses: dict[str, float] = {}
    current = {"name": "previous", "step": 1}

    def use(name: str, step: int, transposed: bool):
        def switch():
            current.update(name=name, step=step)
            sequence_loss.WEIGHT_GRAD_HT_G = transposed

        return switch

    def work():
        hidden.grad = weight.grad = None
        loss = sequence_loss.linear_cross_entropy(hidden, weight, target, item_step=current["step"])
        loss.backward()
        losses[current["name"]] = loss.item()

    alternatives = {"previous": use("previous", 1, False)}
    for step in [1, *args.steps]:
        alternatives[f"item_step {step}"] = use(f"item_step {step}", step, True)
    try:
        seconds = time_alternatives(alternatives, work, args.rounds)
    finally:
        sequence_loss.WEIGHT_GRAD_HT_G = True
    row = {"dataset": name, "items": n_items, "rows": args.rows}
    base = statistics.median(seconds["previous"][1:])
    for key, values in seconds.items():
        ms = statistics.median(values[1:]) * 1000
        row[f"{key} ms"] = round(ms, 1)
        row[f"{key} speedup"] = round(base * 1000 / ms, 2)
        row[f"{key} loss"] = losses[key]
    return row


def main() -> None:
    import json

    from recbole_moe.benchmark.timing import write_results
    from recbole_moe.environment import describe_machine

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe_machine()
    print(f"# {machine}", flush=True)
    rows = []
    for name in args.items:
        rows.append(measure(name, args))
        print(json.dumps(rows[-1]), flush=True)
    keys = ["previous", "item_step 1", *(f"item_step {s}" for s in args.steps)]
    print(f"\nloss forward + backward, {args.rows} positions, hidden {args.hidden}: ms (speed-up)")
    print("| dataset | items | " + " | ".join(keys) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in keys) + " |")
    for row in rows:
        cells = [f"{row[k + ' ms']} ({row[k + ' speedup']}x)" for k in keys]
        print(f"| {row['dataset']} | {row['items']} | " + " | ".join(cells) + " |")
    if args.output:
        write_results(args.output, machine, args, rows)


if __name__ == "__main__":
    main()

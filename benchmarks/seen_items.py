"""Test metrics of a checkpoint in both ranking protocols: every item ranked (RecBole's), and
each user's seen items removed (``eval_filter_seen: True``, :mod:`recbole_moe.data.seen`: the
user's whole history before the test item, a repeat test item still ranked).

    python benchmarks/seen_items.py --checkpoint saved/SASRec-....pth --topk 5 10 20

Benchmark records hold both already (``test_result``, ``test_result_seen_removed``); this
evaluates a checkpoint made elsewhere.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--topk", nargs="+", type=int, help="default: the checkpoint's topk")
    args = parser.parse_args()

    from recbole_moe.quick_start import get_trainer, load_model

    loaded = load_model(args.checkpoint)
    config = loaded.config
    if args.topk:
        config["topk"], config["metrics"] = args.topk, ["Hit", "NDCG"]
    trainer = get_trainer(config, loaded.model)
    results = {
        name: {k: float(v) for k, v in trainer.evaluate(loaded.test_data, False, **how).items()}
        for name, how in (
            ("all items (RecBole)", {"filter_seen": False}),
            ("seen items removed", {"filter_seen": True}),
        )
    }
    repeats, users = loaded.test_data.seen_items.repeats
    summary = {
        "checkpoint": args.checkpoint,
        "model": config["model"],
        "dataset": config["dataset"],
        "users": users,
        "targets_in_history": repeats,
        **results,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

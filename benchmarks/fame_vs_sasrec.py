"""FAME vs RecBole's SASRec, one training step and one full-sort evaluation, side by side.

Random sequences at the paper's default sizes (hidden 64, 2 layers, 4 heads, 4 experts, L=50,
B=256); the item count defaults to Amazon Beauty's. Reports median milliseconds per train step
(forward + backward + Adam), per full-sort evaluation batch, and the peak of live CPU tensor
memory during the evaluation (from the profiler's allocation events), with ratios to SASRec.

Usage::

    python benchmarks/fame_vs_sasrec.py
    python benchmarks/fame_vs_sasrec.py --threads 2 --items 3417 --variants logits probs
"""

from __future__ import annotations

import argparse
import functools

import torch
from recbole.model.sequential_recommender.sasrec import SASRec
from torch.profiler import ProfilerActivity, profile

import recbole_moe  # noqa: F401  (compatibility patches before RecBole is used)
from recbole_moe.benchmark.timing import medians, time_interleaved, train_step
from recbole_moe.model.fame import FAME
from recbole_moe.testing import FakeDataset


def base_config(args: argparse.Namespace) -> dict:
    return {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length",
        "NEG_PREFIX": "neg_",
        "MAX_ITEM_LIST_LENGTH": args.length,
        "device": "cpu",
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_size": args.hidden,
        "inner_size": 4 * args.hidden,
        "head_inner_size": 0,
        "n_experts": args.experts,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "moe_attention": True,
        "head_prediction": True,
        "gate": "learned",
        "fusion": "logits",
        "item_subemb": "proj",
    }


def random_batch(args: argparse.Namespace) -> dict:
    """Right-padded item sequences ``[B, L]`` with lengths in [5, L] and a target item ``[B]``."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, args.length + 1, (args.batch,), generator=g)
    seq = torch.randint(1, args.items, (args.batch, args.length), generator=g)
    seq[torch.arange(args.length)[None] >= lengths[:, None]] = 0
    target = torch.randint(1, args.items, (args.batch,), generator=g)
    return {"item_id_list": seq, "item_length": lengths, "item_id": target}


def eval_peak_mib(model: torch.nn.Module, batch: dict) -> float:
    """Peak of live tensor memory allocated during one ``full_sort_predict`` (MiB)."""
    model.eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model.full_sort_predict(batch)
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument(
        "--items", type=int, default=12102, help="items incl. padding (Beauty: 12102)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["logits"],
        help="FAME fusion variants to time: logits, probs",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = base_config(args)
    dataset = FakeDataset(args.items)
    torch.manual_seed(0)
    models = {"SASRec": SASRec(config, dataset)}
    for fusion in args.variants:
        models[f"FAME[{fusion}]"] = FAME(dict(config, fusion=fusion), dataset)
    batch = random_batch(args)
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}

    def train(name: str) -> None:
        train_step(models[name], optimizers[name], batch)

    def eval_step(name: str) -> None:
        model = models[name]
        model.eval()
        with torch.no_grad():
            model.full_sort_predict(batch)

    work = {  # interleaved, so load changes hit every model alike
        f"{name} {kind}": functools.partial(step, name)
        for name in models
        for kind, step in (("train", train), ("eval", eval_step))
    }
    median = medians(time_interleaved(work, args.warmup + args.repeats), skip=args.warmup)

    print(
        f"B={args.batch} L={args.length} d={args.hidden} layers={args.layers} heads={args.heads} "
        f"experts={args.experts} items={args.items} threads={args.threads}"
    )
    print(
        f"{'model':<14}{'params':>9}{'train ms':>10}{'x':>6}"
        f"{'eval ms':>9}{'x':>6}{'eval MiB':>10}{'x':>6}"
    )
    ref = None
    for name, model in models.items():
        train, evaluate = 1000 * median[f"{name} train"], 1000 * median[f"{name} eval"]
        peak = eval_peak_mib(model, batch)
        ref = ref or (train, evaluate, peak)
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<14}{params:>9}{train:>10.1f}{train / ref[0]:>6.2f}{evaluate:>9.1f}"
            f"{evaluate / ref[1]:>6.2f}{peak:>10.1f}{peak / ref[2]:>6.2f}"
        )


if __name__ == "__main__":
    main()

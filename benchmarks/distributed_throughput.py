"""Training throughput (sequences/s) of one process against data-parallel runs on this machine.

Each configuration trains the same model on the same data with the same global batch size
through the real entry points (``recbole_moe.run`` for one process, ``run_distributed`` with
``nproc`` workers), and reads the mean training-epoch time that ``run`` reports (rank 0's, which
covers the whole synchronous step of every rank; process start-up, data loading and evaluation
are excluded). Throughput = training sequences per epoch / epoch time.

    OMP_NUM_THREADS=1 python benchmarks/distributed_throughput.py --models SASRec HyMoERec
    python benchmarks/distributed_throughput.py --dataset ml-100k --data_path ../shared/datasets

Without ``--data_path`` a synthetic dataset (``--n_users`` users) is generated in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile

import torch

import recbole_moe
from recbole_moe.distributed import run_distributed
from recbole_moe.testing import make_synthetic_dataset, tiny_config


def count_training_sequences(model: str, dataset: str, settings: dict) -> int:
    """Training sequences per epoch (RecBole's prefix-augmented training split)."""
    from recbole_moe.quick_start import prepare_run

    train_data = prepare_run(model, dataset, dict(settings), log=False).train_data
    return len(train_data._dataset)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "HyMoERec"])
    parser.add_argument("--dataset", default="synth")
    parser.add_argument(
        "--data_path", default=None, help="folder holding <dataset>/ (default: synthetic)"
    )
    parser.add_argument("--n_users", type=int, default=2000, help="synthetic dataset size")
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="global training batch size")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max_len", type=int, default=50)
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="ddp_bench_")
    os.chdir(workdir)  # RecBole writes log/, log_tensorboard/ and saved/ here
    data_path = args.data_path and os.path.abspath(args.data_path)
    if data_path is None:
        data_path = os.path.join(workdir, "data")
        make_synthetic_dataset(data_path, name=args.dataset, n_users=args.n_users, n_items=500)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"dataset: {args.dataset} ({'synthetic' if args.data_path is None else data_path}), "
        f"global batch {args.batch}, hidden {args.hidden}, max_len {args.max_len}, "
        f"epochs {args.epochs} (mean epoch time)"
    )
    print(
        f"{'model':<10} {'procs':>5} {'backend':>7} {'seqs/epoch':>10} {'epoch s':>8} "
        f"{'seqs/s':>9} {'speed-up':>8} {'test NDCG@10':>12}"
    )
    for model in args.models:
        settings = tiny_config(
            data_path,
            epochs=args.epochs,
            train_batch_size=args.batch,
            eval_batch_size=args.batch,
            hidden_size=args.hidden,
            inner_size=4 * args.hidden,
            n_layers=2,
            MAX_ITEM_LIST_LENGTH=args.max_len,
            eval_step=args.epochs,
            checkpoint_dir=os.path.join(workdir, "saved"),
        )
        n_seqs = count_training_sequences(model, args.dataset, settings)
        base = None
        for nproc in args.nprocs:
            if nproc == 1:
                result, backend = (
                    recbole_moe.run(model, args.dataset, config_dict=dict(settings)),
                    "-",
                )
            else:
                result = run_distributed(model, args.dataset, dict(settings), nproc=nproc)
                backend = result["config"]["dist_backend"] if "config" in result else "?"
            seconds = result["train_time_per_epoch"]
            rate = n_seqs / seconds
            base = base or rate
            print(
                f"{model:<10} {nproc:>5} {backend:>7} {n_seqs:>10} {seconds:>8.2f} {rate:>9.0f} "
                f"{rate / base:>7.2f}x {result['test_result'].get('ndcg@10', float('nan')):>12.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

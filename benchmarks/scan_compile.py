"""Mamba4Rec training steps with the eager and the compiled selective scan, side by side.

The torch backend of Mamba4Rec runs its selective scan either with eager kernels
(``scan_compile: False``: each chunk's ``[T, b, E, N]`` intermediates written to memory) or
with chunk kernels compiled by ``torch.compile`` (``scan_compile: True``, the default on CPU;
``recbole_moe/layers/selective_scan.py``). One trainer (``train_objective: sequence``, the
model's property defaults, ``--batch`` sequences a batch) trains on the same ``--steps``
batches of the dataset under each alternative in turn, for ``--rounds`` rounds in one process;
the speed-ups use the median of the rounds after the first (> 1: faster). The first round of a
compiled alternative includes its compilation, reported separately.

Alternatives (``<impl> <chunk_size>/<batch_block>``): ``eager 16/32`` (the reference: the
eager path at the sizes it was tuned for) and the compiled path at ``--sizes``.

    OMP_NUM_THREADS=1 python benchmarks/scan_compile.py --datasets sports ml-1m-5core \\
        --output benchmarks/results/scan_compile.json
"""

from __future__ import annotations

import itertools
import statistics

REFERENCE = ("eager", 16, 32)


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import (
        build_trainer,
        medians,
        speedups,
        time_alternatives,
        train_steps,
    )
    from recbole_moe.model.mamba4rec import MambaBlock

    trainer, train_data, _ = build_trainer(model_name, dataset, args)
    loss_fn = trainer.training_loss()
    batches = list(itertools.islice(iter(train_data), args.steps))
    blocks = [m for m in trainer.model.modules() if isinstance(m, MambaBlock)]
    sizes = [tuple(int(v) for v in size.split("/")) for size in args.sizes]
    alternatives = [REFERENCE] + [("compiled", chunk, block) for chunk, block in sizes]

    def use(impl: str, chunk: int, block: int):
        def switch():
            for mamba in blocks:
                mamba.compile_scan, mamba.chunk_size, mamba.batch_block = (
                    impl == "compiled",
                    chunk,
                    block,
                )

        return switch

    def steps(_name: str) -> None:
        train_steps(trainer, batches, loss_fn)

    names = {
        f"{impl} {chunk}/{block}": use(impl, chunk, block) for impl, chunk, block in alternatives
    }
    seconds = time_alternatives(names, steps, args.rounds)
    step = {name: v / len(batches) for name, v in medians(seconds, skip=1).items()}
    reference = next(iter(names))
    list_field = trainer.config["ITEM_ID_FIELD"] + trainer.config["LIST_SUFFIX"]
    return {
        "dataset": dataset,
        "model": model_name,
        "batch": args.batch,
        "mean_width": round(statistics.mean(b[list_field].shape[1] for b in batches), 1),
        "step_ms": {name: round(value * 1000, 1) for name, value in step.items()},
        "first_round_s": {name: round(v[0], 1) for name, v in seconds.items()},
        f"speedup_vs_{reference}": {
            name: round(value, 3) for name, value in speedups(step, reference).items()
        },
    }


def main() -> None:
    from recbole_moe.benchmark.timing import grid_parser, measure_grid, report_grid

    parser = grid_parser(__doc__, ["sports"], ["Mamba4Rec"], batch=2048)
    parser.add_argument("--steps", type=int, default=4, help="batches per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the alternatives")
    parser.add_argument(
        "--sizes", nargs="+", default=["16/32", "8/64"], help="compiled chunk_size/batch_block"
    )
    args = parser.parse_args()
    reference = "{} {}/{}".format(*REFERENCE)

    def cells(row: dict) -> str:
        ms, up = row["step_ms"], row[f"speedup_vs_{reference}"]
        others = [f"{ms[name]:.0f} ms ({up[name]:.2f}x)" for name in ms if name != reference]
        return (
            f"| {row['dataset']} | {row['model']} | {row['batch']} | {row['mean_width']} | "
            f"{ms[reference]:.0f} ms | " + " | ".join(others) + " |"
        )

    header = f"| dataset | model | batch | mean width | `{reference}` step | "
    header += " | ".join(f"`compiled {size}`" for size in args.sizes) + " |\n"
    header += "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in args.sizes) + " |"
    report_grid(args, *measure_grid(args, measure), header, cells)


if __name__ == "__main__":
    main()

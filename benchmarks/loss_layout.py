"""Training steps with the chunked sequence loss laid out four ways, side by side.

``linear_cross_entropy`` (the ``sequence`` regime's full softmax over all items) multiplies each
chunk of ``C`` positions by the ``[V, D]`` item table three times: the logits
``[C, D] @ [D, V]``, the states' gradient ``[C, V] @ [V, D]`` and the table's gradient. On the
Amazon datasets, with their large item tables, it is a large part of a training step.
The dataset's item count ``V`` (3,417 on ML-1M 5-core, 12,102 on Beauty) is not a multiple of
16, so the rows of the ``[C, V]`` matrices do not start on a cache line. The layouts, all with
the same loss and gradients (``tests/test_linear_cross_entropy.py``):

* ``previous``: no padding, the table's gradient as ``grad.T @ hidden``, a new ``[C, V]``
  logits tensor for every chunk (the layout before);
* ``padded``: the item axis padded to a multiple of 16 (zero item rows, logits ``-inf``) and
  the table's gradient accumulated as ``hidden.T @ grad``;
* ``padded+buffer``: the same, with every chunk's logits written into one ``[C, Vp]`` buffer
  allocated once per call and both gradient products written in place;
* ``one call``: the same, with the states of a batch's length groups (``train_batch_chunks``)
  scored in one loss call instead of one per group (the current code).

For every dataset and model, one trainer (``train_objective: sequence``, hidden 64, 2 layers,
``--dropout`` for hidden and attention dropout) trains on the same ``--steps`` batches with each
layout in turn, for ``--rounds`` rounds in one process; the ratios to ``previous`` use the
median of the rounds after the first (> 1: faster).

    OMP_NUM_THREADS=1 python benchmarks/loss_layout.py --datasets beauty toys ml-1m-5core \\
        --models SASRec FAME --output benchmarks/results/loss_layout.json
"""

from __future__ import annotations

import functools

LAYOUTS = {  # item_step, WEIGHT_GRAD_HT_G, REUSE_LOGITS_BUFFER, one loss call per batch
    "previous": (1, False, False, False),
    "padded": (16, True, False, False),
    "padded+buffer": (16, True, True, False),
    "one call": (16, True, True, True),
}


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import measure_switched
    from recbole_moe.layers import sequence_loss
    from recbole_moe.model.sequence import SequenceObjective

    current = (
        sequence_loss.linear_cross_entropy,
        sequence_loss.WEIGHT_GRAD_HT_G,
        sequence_loss.REUSE_LOGITS_BUFFER,
        SequenceObjective.scores_states,
    )

    def use(item_step: int, transposed: bool, reuse: bool, one_call: bool):
        def switch():
            sequence_loss.linear_cross_entropy = functools.partial(current[0], item_step=item_step)
            sequence_loss.WEIGHT_GRAD_HT_G = transposed
            sequence_loss.REUSE_LOGITS_BUFFER = reuse
            SequenceObjective.scores_states = current[3] if one_call else lambda self: False

        return switch

    def restore():
        (
            sequence_loss.linear_cross_entropy,
            sequence_loss.WEIGHT_GRAD_HT_G,
            sequence_loss.REUSE_LOGITS_BUFFER,
            SequenceObjective.scores_states,
        ) = current

    switches = {name: use(*layout) for name, layout in LAYOUTS.items()}
    return measure_switched(model_name, dataset, args, switches, restore)


def main() -> None:
    from recbole_moe.benchmark.timing import report_switched, step_parser

    args = step_parser(__doc__, steps=8).parse_args()
    report_switched(args, measure, list(LAYOUTS))


if __name__ == "__main__":
    main()

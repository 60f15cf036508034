"""Training steps with the fast dropout mask applied three ways, side by side.

``dropout_impl: fast`` draws its keep mask from 16-bit random lanes. How the mask is applied
(forward and backward) has changed twice; all three give the same values:

* ``where``: a boolean mask and ``torch.where(mask, x, 0)``, which on the CPU costs several times a
  multiply;
* ``uint8``: a boolean mask multiplied as its bytes read as ``uint8`` (the multiply converts
  them to float, forward and backward);
* ``float``: the mask written as 0/1 in ``x``'s dtype by the comparison itself, multiplied
  directly (:func:`recbole_moe.layers.dropout.keep_mask`, :class:`~recbole_moe.layers.
  dropout._Masked`; the current code). The causal attention's future mask is the same in all
  three (an added bias).

For every dataset and model, one trainer (``train_objective: sequence``, hidden 64, 2 layers,
``--dropout`` for hidden and attention dropout) trains on the same ``--steps`` batches with each
in turn, for ``--rounds`` rounds in one process; the ratios to ``where`` use the median of the
rounds after the first (> 1: faster).

    OMP_NUM_THREADS=1 python benchmarks/mask_apply.py --datasets beauty \\
        --models SASRec HyMoERec FAME --output benchmarks/results/mask_apply_beauty.json
"""

from __future__ import annotations

import torch

APPLICATIONS = ("where", "uint8", "float")


def _where_forward(ctx, x, mask):
    ctx.save_for_backward(mask)
    return torch.where(mask, x, 0.0)


def _where_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return torch.where(mask, grad, 0.0), None


def measure(model_name: str, dataset: str, args) -> dict:
    from recbole_moe.benchmark.timing import measure_switched
    from recbole_moe.layers import attention, dropout

    current = (dropout._Masked.forward, dropout._Masked.backward, dropout.keep_mask)

    def boolean_mask(shape, p, device, dtype=torch.bool):
        return current[2](shape, p, device)

    def use(forward, backward, mask_fn):
        def switch():
            dropout._Masked.forward = staticmethod(forward)
            dropout._Masked.backward = staticmethod(backward)
            dropout.keep_mask = attention.keep_mask = mask_fn

        return switch

    switches = {
        "where": use(_where_forward, _where_backward, boolean_mask),
        "uint8": use(current[0], current[1], boolean_mask),
        "float": use(*current),
    }
    return measure_switched(model_name, dataset, args, switches, use(*current))


def main() -> None:
    from recbole_moe.benchmark.timing import report_switched, step_parser

    args = step_parser(__doc__, steps=10).parse_args()
    report_switched(args, measure, list(APPLICATIONS))


if __name__ == "__main__":
    main()

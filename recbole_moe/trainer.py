"""RecBole ``Trainer`` with a per-epoch hook for models that report internal statistics."""

from __future__ import annotations

from recbole.trainer import Trainer


class MoETrainer(Trainer):
    """RecBole's ``Trainer`` that calls ``model.log_epoch_stats(logger, tensorboard, epoch_idx)``
    after every training epoch when the model defines it (e.g. HyMoERec's α, warm-up factor and
    expert load). Training itself is RecBole's, unchanged; models without the hook behave
    exactly as under ``Trainer``.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        total_loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        hook = getattr(self.model, "log_epoch_stats", None)
        if callable(hook):
            hook(self.logger, self.tensorboard, epoch_idx)
        return total_loss

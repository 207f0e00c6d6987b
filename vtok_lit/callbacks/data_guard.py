"""Stop a run whose data gives nothing to train on or to measure, instead of spinning or exiting 0."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class NoUsableDataError(RuntimeError):
    """A whole training or validation epoch had not one batch the model could use."""


class RequireUsableData(Callback):
    """Raises :class:`NoUsableDataError` after a training epoch in which no batch gave a loss, or a
    validation epoch in which every batch was empty (every clip skipped under ``bad_video_policy: skip``).

    Without it such a run never reaches ``max_steps`` (no optimizer step is taken, epochs go by
    forever), or dies later on a metric that was never logged. The message names the split and, from
    a :class:`~vtok_lit.data.VideoTextDataModule`, the first unreadable files and why. Every
    vtok-lit module adds this callback (``configure_callbacks``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen = self._usable = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen = self._usable = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *_: Any
    ) -> None:
        # A module's training_step returns None for a batch it cannot use (no clip, no question).
        self._seen += 1
        self._usable += outputs is not None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, "train", "gave a loss to train on")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seen = self._usable = 0

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self._seen += 1
        self._usable += batch is not None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The sanity check sees a couple of batches only: a bad start there says nothing of the split.
        if not trainer.sanity_checking:
            self._check(trainer, "val", "held a readable clip")

    def _check(self, trainer: L.Trainer, role: str, what: str) -> None:
        # An epoch this process saw no batch of (a run resumed at its very end) proves nothing.
        if not trainer.strategy.reduce_boolean_decision(self._seen > 0 and self._usable == 0, all=True):
            return
        datamodule = trainer.datamodule
        split = getattr(datamodule, "splits", {}).get(role, role)
        message = f"No batch of split {split!r} (for {role}) {what} in epoch {trainer.current_epoch}"
        unreadable = datamodule.unreadable_clips(role) if hasattr(datamodule, "unreadable_clips") else []
        if unreadable:
            message += "; its clips are unreadable, e.g.:\n  " + "\n  ".join(unreadable)
        else:
            message += " (its first clips read fine: the model found nothing to use in them)."
        raise NoUsableDataError(message)

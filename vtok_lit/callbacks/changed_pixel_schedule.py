"""Weigh the changed pixels up early in tokenizer pretraining, then hand the loss back to plain MSE."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class ChangedPixelWeightDecay(Callback):
    """Lowers the video decoder's ``changed_pixel_weight`` linearly from its configured value to
    ``final_weight`` between ``start_step`` and ``end_step``, and logs it as
    ``train/changed_pixel_weight``.

    Weighing up the pixels that changed since the key frame is what makes a regression decoder start
    reading the residual tokens instead of blurring moving objects in place; it also trades error on
    the static pixels (most of the frame) for error on the moving ones, which costs PSNR. Decaying
    it keeps the first effect for the start of training and optimises plain MSE at the end.

    The weight follows the global step alone, so a resumed run continues the same schedule.
    ``val/loss`` is taken with the weight of the moment, so it is not comparable across the
    schedule; PSNR and ``val/mse_changed_pixels`` / ``val/mse_static_pixels`` are.
    """

    def __init__(self, start_step: int, end_step: int, final_weight: float = 0.0) -> None:
        """
        Args:
            start_step: The step until which the decoder keeps its configured weight.
            end_step: The step from which the weight is ``final_weight``.
            final_weight: The weight at the end (0: plain MSE).
        """
        super().__init__()
        if not 0 <= start_step <= end_step:
            raise ValueError(
                "start_step and end_step must satisfy 0 <= start_step <= end_step, "
                f"got {start_step} and {end_step}"
            )
        if final_weight < 0:
            raise ValueError(f"final_weight must not be negative, got {final_weight}")
        self.start_step = start_step
        self.end_step = end_step
        self.final_weight = final_weight
        self.initial_weight: float | None = None

    def weight_at(self, step: int) -> float:
        """The decoder's ``changed_pixel_weight`` at global step ``step``."""
        if self.initial_weight is None:
            raise RuntimeError("ChangedPixelWeightDecay reads the decoder's weight when fitting starts")
        if step <= self.start_step:
            return self.initial_weight
        if step >= self.end_step:
            return self.final_weight
        progress = (step - self.start_step) / (self.end_step - self.start_step)
        return self.initial_weight + progress * (self.final_weight - self.initial_weight)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        decoder = getattr(pl_module, "decoder", None)
        if decoder is None or not hasattr(decoder, "changed_pixel_weight"):
            raise ValueError(
                f"ChangedPixelWeightDecay (trainer.callbacks) needs a module with a video decoder that "
                f"has changed_pixel_weight, and {type(pl_module).__name__} has none: remove the callback"
            )
        if self.initial_weight is None:
            self.initial_weight = float(decoder.changed_pixel_weight)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        weight = self.weight_at(trainer.global_step)
        pl_module.decoder.changed_pixel_weight = weight
        pl_module.log("train/changed_pixel_weight", weight, on_step=True, on_epoch=False)

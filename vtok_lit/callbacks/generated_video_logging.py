"""Generated clips and the captions they were written from, in TensorBoard at each validation."""

from __future__ import annotations

from typing import Any

from lightning import Callback, LightningModule, Trainer

from vtok_lit.callbacks.video_logging import logs_this_validation_batch, tensorboard_writers, write_clips


class GeneratedVideoLogger(Callback):
    """Logs the first validation batch's generated clips (frame grid and video) and their captions.

    Works with any module whose ``validation_step`` returns ``captions`` (a list) and ``generated``
    clips ``(B, T, 3, H, W)`` in [0, 1]; row i of the grid is caption i of the text.
    """

    def __init__(self, num_clips: int = 4, fps: int = 4, log_video: bool = True) -> None:
        """
        Args:
            num_clips: Clips logged per validation.
            fps: Frame rate of the TensorBoard videos.
            log_video: Also log videos; needs ``moviepy<2`` (the grid image is always logged).
        """
        self.num_clips = num_clips
        self.fps = fps
        self.log_video = log_video

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not outputs or not logs_this_validation_batch(trainer, batch_idx):
            return
        writers = tensorboard_writers(trainer)
        step = trainer.global_step
        write_clips(
            writers, "val/generated", outputs["generated"][: self.num_clips], step, self.fps, self.log_video
        )
        captions = outputs["captions"][: self.num_clips]
        prompts = "\n".join(f"{row}. {caption}" for row, caption in enumerate(captions, start=1))
        for writer in writers:
            writer.add_text("val/generated/captions", prompts, global_step=step)

"""Originals next to reconstructions in TensorBoard, as a frame grid and (with moviepy<2) a video."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid


def logs_this_validation_batch(trainer: Trainer, batch_idx: int) -> bool:
    """Whether a logging callback writes at this validation batch: the first batch of a real
    validation (not the sanity check), on the main process only."""
    return batch_idx == 0 and not trainer.sanity_checking and trainer.is_global_zero


def tensorboard_writers(trainer: Trainer) -> list[Any]:
    """The ``SummaryWriter`` of every TensorBoard logger of the trainer."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


@functools.cache
def moviepy_available() -> bool:
    """Whether TensorBoard's ``add_video`` can write (it needs ``moviepy<2``); warns once when not.

    Without moviepy ``add_video`` writes nothing and says nothing, so a run would lose its videos unseen.
    """
    if importlib.util.find_spec("moviepy") is None:
        warnings.warn(
            "moviepy<2 is not installed, so TensorBoard gets frame grids but no videos.", stacklevel=2
        )
        return False
    return True


def write_clips(
    writers: list[Any], tag: str, clips: torch.Tensor, global_step: int, fps: int, log_video: bool
) -> None:
    """Write clips ``(B, T, 3, H, W)`` in [0, 1] as ``<tag>/frames`` (a grid, one row per clip, frames
    left to right) and, if ``log_video`` and moviepy allow, as ``<tag>/video``."""
    clips = clips.float().cpu()
    grid = make_grid(clips.flatten(0, 1), nrow=clips.shape[1], padding=1, pad_value=1.0)
    for writer in writers:
        writer.add_image(f"{tag}/frames", grid, global_step=global_step)
        if log_video and moviepy_available():
            writer.add_video(f"{tag}/video", clips, global_step=global_step, fps=fps)


def side_by_side(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Join two clips ``(B, T, 3, H, W)`` horizontally, original on the left: ``(B, T, 3, H, 2W)``."""
    return torch.cat([original, reconstruction], dim=-1)


class ReconstructionLogger(Callback):
    """Logs clips next to the module's reconstruction of them, every N training steps and each validation.

    The module must offer ``reconstruct(video) -> video`` on clips ``(B, T, 3, H, W)`` in [0, 1].
    """

    def __init__(
        self, every_n_steps: int = 200, num_clips: int = 4, fps: int = 4, log_video: bool = True
    ) -> None:
        """
        Args:
            every_n_steps: Log from the training batch every this many optimizer steps (0 = only validation).
            num_clips: Clips taken from the batch.
            fps: Frame rate of the TensorBoard videos.
            log_video: Also log videos; needs ``moviepy<2`` (the grid image is always logged).
        """
        self.every_n_steps = every_n_steps
        self.num_clips = num_clips
        self.fps = fps
        self.log_video = log_video

    def _write(self, trainer: Trainer, pl_module: LightningModule, video: torch.Tensor, tag: str) -> None:
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        clips = video[: self.num_clips]
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            reconstruction = pl_module.reconstruct(clips).clamp(0, 1)
        pl_module.train(was_training)
        # Each frame shows original|reconstruction.
        pairs = side_by_side(clips, reconstruction)
        write_clips(writers, tag, pairs, trainer.global_step, self.fps, self.log_video)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            batch is None
            or self.every_n_steps <= 0
            or step % self.every_n_steps != 0
            or not trainer.is_global_zero
        ):
            return
        self._write(trainer, pl_module, batch["video"], "train/reconstruction")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch is None or not logs_this_validation_batch(trainer, batch_idx):
            return
        self._write(trainer, pl_module, batch["video"], "val/reconstruction")

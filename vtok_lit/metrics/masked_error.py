"""Mean squared error over a mask of pixels: where a reconstruction's error lives."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MaskedMeanSquaredError(Metric):
    """The mean squared error over the pixels a mask selects, summed over the epoch so that every
    selected pixel weighs alike (a batch mean would weigh a clip with few selected pixels as much as one
    with many).

    Tokenizer pretraining logs three: on the pixels that changed since the key frame, on the pixels of
    later frames that did not, and on the key frame. PSNR mixes them by their share of the frame (a few
    percent change in MotionShapes), so a decoder can gain on moving things and lose it all on the
    static background.
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("squared_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Adds one batch: ``(B, T, C, H, W)`` prediction and target, ``(B, T, 1, H, W)`` bool mask."""
        if mask.shape[2] != 1 or mask.shape[:2] + mask.shape[3:] != target.shape[:2] + target.shape[3:]:
            raise ValueError(
                f"mask must be (B, T, 1, H, W) for a target of shape {tuple(target.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        self.squared_error += ((prediction - target).pow(2) * mask).sum().double()
        self.count += mask.sum().double() * target.shape[2]

    def compute(self) -> torch.Tensor:
        return (self.squared_error / self.count.clamp(min=1)).float()

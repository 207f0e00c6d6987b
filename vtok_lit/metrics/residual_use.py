"""How much a video decoder relies on the residual tokens: the ``val/residual_use`` ratio."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ResidualUse(Metric):
    """The decoder's error on the pixels that changed since the key frame when each clip gets ANOTHER
    clip's residual tokens, over its error with the clip's own.

    1.0 means the decoder ignores the residual tokens (it renders the same frames whatever motion
    they describe); the more the frames depend on them, the higher. Sums over the epoch, so the
    ratio weighs every changed pixel alike.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("own_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("other_error", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, own: torch.Tensor, other: torch.Tensor, target: torch.Tensor, changed: torch.Tensor
    ) -> None:
        """Adds one batch.

        Args:
            own: ``(B, T, 3, H, W)`` reconstructions from the clips' own tokens.
            other: The same, with each clip's residual tokens taken from another clip.
            target: The real clips.
            changed: ``(B, T, 1, H, W)`` bool, the pixels that changed since the key frame.
        """
        self.own_error += ((own - target).pow(2) * changed).sum().double()
        self.other_error += ((other - target).pow(2) * changed).sum().double()

    def compute(self) -> torch.Tensor:
        return (self.other_error / self.own_error.clamp(min=1e-12)).float()

"""Learning-rate schedules the experiment YAMLs name by class path (plain torch, no Lightning)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosineSchedule(LambdaLR):
    """Linear warmup from ``start_factor`` x lr to lr, then cosine decay to ``end_factor`` x lr.

    Steps once per optimizer step (``lr_scheduler_interval: step``); after ``total_steps`` the rate
    stays at ``end_factor`` x lr. In a YAML::

        lr_scheduler:
          class_path: vtok_lit.core.WarmupCosineSchedule
          init_args: {warmup_steps: 100, total_steps: 1500}
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        start_factor: float = 0.01,
        end_factor: float = 0.0,
    ) -> None:
        """
        Args:
            optimizer: The optimizer whose learning rates are scheduled.
            warmup_steps: Steps of linear warmup (0: start at the full rate).
            total_steps: Steps until the cosine reaches its end, warmup included (usually
                trainer.max_steps).
            start_factor: The rate at step 0 as a fraction of the optimizer's rate.
            end_factor: The rate at ``total_steps`` and after, as a fraction of the optimizer's rate.
        """
        if warmup_steps < 0 or total_steps <= warmup_steps:
            raise ValueError(
                f"WarmupCosineSchedule: needs 0 <= warmup_steps < total_steps "
                f"(warmup_steps={warmup_steps}, total_steps={total_steps})"
            )
        for name, factor in (("start_factor", start_factor), ("end_factor", end_factor)):
            if not 0.0 <= factor <= 1.0:
                raise ValueError(f"WarmupCosineSchedule: {name}={factor} is not in [0, 1]")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.start_factor = start_factor
        self.end_factor = end_factor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """The multiplier of the optimizer's rate at ``step``."""
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

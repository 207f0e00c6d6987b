"""Frame encoders: the per-frame feature extractor ``F`` every video tokenizer builds on."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn


class FrameEncoder(nn.Module, ABC):
    """Maps frames to spatial feature maps.

    Attributes:
        out_channels: ``C``, the number of channels of the returned feature maps.
    """

    out_channels: int

    @abstractmethod
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, 3, H, W)`` frames in [0, 1] to ``(N, C, h, w)`` feature maps."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the architecture or the source of the weights changes.

        Feature caches use it as their key, so two encoders with the same identity must compute the
        same features.
        """


class ConvFrameEncoder(FrameEncoder):
    """A small trainable convolutional encoder for CPU runs.

    Each stage halves the resolution (64x64 frames give 8x8 maps with 3 stages).
    """

    def __init__(self, channels: int = 64, num_layers: int = 3, coordinate_channels: bool = True) -> None:
        """
        Args:
            channels: Width of every stage, and so the number of output channels.
            num_layers: Number of stride-2 stages (3x3 conv, GroupNorm, GELU).
            coordinate_channels: Append x/y coordinate planes in [-1, 1] to the input. They make
                pooled features position-aware, so a globally pooled residual can tell which way
                something moved.
        """
        super().__init__()
        self.channels = channels
        self.num_layers = num_layers
        self.coordinate_channels = coordinate_channels
        self.out_channels = channels
        stages = []
        in_channels = 5 if coordinate_channels else 3
        for _ in range(num_layers):
            stages += [
                nn.Conv2d(in_channels, channels, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(math.gcd(8, channels), channels),
                nn.GELU(),
            ]
            in_channels = channels
        self.stages = nn.Sequential(*stages)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames * 2 - 1
        if self.coordinate_channels:
            n, _, height, width = frames.shape
            ys = torch.linspace(-1, 1, height, device=frames.device, dtype=frames.dtype)
            xs = torch.linspace(-1, 1, width, device=frames.device, dtype=frames.dtype)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            coordinates = torch.stack([grid_x, grid_y]).expand(n, -1, -1, -1)
            x = torch.cat([x, coordinates], dim=1)
        return self.stages(x)

    @property
    def identity(self) -> str:
        return (
            f"conv/channels={self.channels}/layers={self.num_layers}/coords={int(self.coordinate_channels)}"
        )

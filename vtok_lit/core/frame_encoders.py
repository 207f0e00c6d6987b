"""Frame encoders: the per-frame feature extractor ``F`` every video tokenizer builds on."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
from torch import nn


class FrameEncoder(nn.Module, ABC):
    """Maps frames to spatial feature maps.

    Attributes:
        out_channels: ``C``, the number of channels of the returned feature maps.
    """

    out_channels: int

    def __init__(self) -> None:
        super().__init__()
        self._weights_digest: str | None = None
        self.register_load_state_dict_post_hook(_forget_weights_digest)

    @abstractmethod
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, 3, H, W)`` frames in [0, 1] to ``(N, C, h, w)`` feature maps."""

    @property
    @abstractmethod
    def config_identity(self) -> str:
        """A string that changes whenever the architecture, its options or the weights' source change."""

    @property
    def identity(self) -> str:
        """:attr:`config_identity` plus a digest of the weights: equal identities compute equal features.

        Feature caches use it as their key. The digest covers every parameter and buffer (values,
        dtypes, shapes). Hashing a large tower takes a moment, so it is computed once, on first use,
        and again after ``load_state_dict``; weights changed in place in between (an optimizer step, a
        dtype cast) go unnoticed, which is why feature caches refuse encoders that are not frozen.
        """
        if self._weights_digest is None:
            digest = hashlib.blake2b(digest_size=12)
            for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_digest = digest.hexdigest()
        return f"{self.config_identity}/weights-digest={self._weights_digest}"


def _forget_weights_digest(module: FrameEncoder, incompatible_keys: object) -> None:
    """Load-state-dict hook: new weights need a new digest."""
    module._weights_digest = None


class ConvFrameEncoder(FrameEncoder):
    """A small trainable convolutional encoder for CPU runs.

    A patch-embedding stem (one ``patch_size`` x ``patch_size`` convolution of that stride, so 64x64
    frames give 8x8 maps with the default) followed by residual 3x3 convolution blocks. The stem is
    linear in the pixels, so every object, however small, reaches the feature map from the first step;
    a stack of normalised stride-2 stages instead let small shapes fade into the background and kept
    reconstruction training at the mean frame.
    """

    def __init__(
        self, channels: int = 64, patch_size: int = 8, num_blocks: int = 2, coordinate_channels: bool = True
    ) -> None:
        """
        Args:
            channels: Width of the stem and the blocks, and so the number of output channels.
            patch_size: Side of the square patch one feature-map position sees (the stem's stride).
            num_blocks: Residual blocks (GELU, 3x3 conv) after the stem.
            coordinate_channels: Append x/y coordinate planes in [-1, 1] to the input. They make
                pooled features position-aware, so a globally pooled residual can tell which way
                something moved.
        """
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be at least 1, got {patch_size}")
        self.channels = channels
        self.patch_size = patch_size
        self.num_blocks = num_blocks
        self.coordinate_channels = coordinate_channels
        self.out_channels = channels
        in_channels = 5 if coordinate_channels else 3
        self.stem = nn.Conv2d(in_channels, channels, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv2d(channels, channels, kernel_size=3, padding=1))
            for _ in range(num_blocks)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames * 2 - 1
        if self.coordinate_channels:
            n, _, height, width = frames.shape
            ys = torch.linspace(-1, 1, height, device=frames.device, dtype=frames.dtype)
            xs = torch.linspace(-1, 1, width, device=frames.device, dtype=frames.dtype)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            coordinates = torch.stack([grid_x, grid_y]).expand(n, -1, -1, -1)
            x = torch.cat([x, coordinates], dim=1)
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return x

    @property
    def config_identity(self) -> str:
        return (
            f"conv/channels={self.channels}/patch={self.patch_size}/blocks={self.num_blocks}"
            f"/coords={int(self.coordinate_channels)}"
        )

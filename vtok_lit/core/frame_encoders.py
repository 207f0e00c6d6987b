"""Frame encoders: the per-frame feature extractor ``F`` every video tokenizer builds on."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
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


def embed_patches(
    frames: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """A convolution whose kernel is its stride (a patch-embedding stem), computed as one matrix
    product over the frames' patches: the same map (a pixel remainder at the right and bottom is
    dropped likewise). On CPU its forward + backward on 256 64x64 frames took 0.71x the convolution's
    (``benchmarks/training_step.py --threads 1``).

    Args:
        frames: ``(N, C_in, H, W)``.
        weight: ``(C_out, C_in, p, p)``, the kernel of a ``Conv2d`` of stride p, no padding, dilation
            or groups (``stem.weight``).
        bias: Optional ``(C_out,)``.

    Returns:
        ``(N, C_out, H // p, W // p)``.
    """
    patch = weight.shape[-1]
    n, channels, height, width = frames.shape
    rows, columns = height // patch, width // patch
    frames = frames[:, :, : rows * patch, : columns * patch]
    patches = frames.reshape(n, channels, rows, patch, columns, patch).permute(0, 2, 4, 1, 3, 5)
    embedded = F.linear(patches.flatten(3), weight.flatten(1), bias)  # (N, rows, columns, C_out)
    return embedded.permute(0, 3, 1, 2)


def coordinate_planes(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """``(2, height, width)``: the x and y coordinate of each pixel in [-1, 1], on ``like``'s device
    and dtype."""
    ys = torch.linspace(-1, 1, height, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, width, device=like.device, dtype=like.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])


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
            coordinate_channels: Append x/y coordinate planes in [-1, 1] to the input, so that the
                features of one frame can say where things are. They are the same planes in every
                frame, so they cancel in a residual ``F(x_t) - F(x_key)``, and the encoder stays
                translation-equivariant: a globally averaged residual of an object that moves is
                (nearly) zero. A VTok tokenizer that must see motion pools the residual with position
                weights (``residual_pooling: moments``), or uses :class:`ViTFrameEncoder`.
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
        if not self.coordinate_channels:
            x = embed_patches(frames * 2 - 1, self.stem.weight, self.stem.bias)
        else:
            # The stem is linear and the coordinate planes are the same in every frame, so their
            # share of it is one map, added to every frame's: the stem of the frames with the planes
            # appended, without building a copy of every frame with them.
            colour_weight, coordinate_weight = self.stem.weight.split([3, 2], dim=1)
            planes = coordinate_planes(*frames.shape[-2:], like=frames)
            x = embed_patches(frames * 2 - 1, colour_weight, self.stem.bias)
            x = x + embed_patches(planes[None], coordinate_weight)
        for block in self.blocks:
            x = x + block(x)
        return x

    @property
    def config_identity(self) -> str:
        return (
            f"conv/channels={self.channels}/patch={self.patch_size}/blocks={self.num_blocks}"
            f"/coords={int(self.coordinate_channels)}"
        )


class ViTFrameEncoder(FrameEncoder):
    """A small ViT for CPU runs: patch embedding, LEARNED absolute position embeddings, pre-norm
    transformer layers; the patch tokens come back as a feature map.

    The CPU analogue of a CLIP ViT (:class:`OpenCLIPFrameEncoder`): because every position adds its
    own embedding before the nonlinear layers, the features of an object depend on where it is, and
    a globally pooled residual changes when it moves.
    """

    def __init__(
        self,
        channels: int = 64,
        patch_size: int = 8,
        image_size: int = 64,
        depth: int = 2,
        num_heads: int = 4,
    ) -> None:
        """
        Args:
            channels: Width of the patch tokens, and so the number of output channels.
            patch_size: Side of the square patch one token sees.
            image_size: Side of the square input frames (the position embeddings cover this size).
            depth: Transformer layers.
            num_heads: Attention heads per layer.
        """
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        if channels % num_heads:
            raise ValueError(f"channels={channels} is not divisible by num_heads={num_heads}")
        self.channels = channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.depth = depth
        self.num_heads = num_heads
        self.out_channels = channels
        self.grid = image_size // patch_size
        self.patch_embedding = nn.Conv2d(3, channels, kernel_size=patch_size, stride=patch_size)
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, self.grid**2, channels))
        layer = nn.TransformerEncoderLayer(
            channels,
            num_heads,
            4 * channels,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(channels)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"frames of size {tuple(frames.shape[-2:])} do not match image_size={self.image_size} "
                "of the ViTFrameEncoder"
            )
        tokens = (
            embed_patches(frames * 2 - 1, self.patch_embedding.weight, self.patch_embedding.bias)
            .flatten(2)
            .transpose(1, 2)
            + self.position_embedding
        )
        tokens = self.norm(self.layers(tokens))  # (N, grid * grid, C)
        return tokens.transpose(1, 2).unflatten(2, (self.grid, self.grid))

    @property
    def config_identity(self) -> str:
        return (
            f"vit/channels={self.channels}/patch={self.patch_size}/image={self.image_size}"
            f"/depth={self.depth}/heads={self.num_heads}"
        )

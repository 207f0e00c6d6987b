"""Video decoders: reconstruct ``(B, T, 3, H, W)`` clips from a token sequence.

Both decoders share one backbone. Queries are frame-factorised: each output frame has one query per
``patch_size`` patch (learned patch-position + frame-index embeddings); queries attend within their
frame, then to EVERY token of the sequence, and a linear layer turns each query into its patch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.layers import MLP, FrameEmbedding, FrameQueryBlock, timestep_embedding
from vtok_lit.core.tokens import VideoTokens


class VideoDecoder(nn.Module, ABC):
    """Decodes :class:`VideoTokens` to clips through cross-attention to every token."""

    def __init__(
        self,
        token_dim: int = 128,
        image_size: int = 64,
        patch_size: int = 8,
        max_frames: int = 64,
        width: int = 128,
        depth: int = 2,
        num_heads: int = 4,
    ) -> None:
        """
        Args:
            token_dim: Size D of the input tokens.
            image_size: Side of the square output frames.
            patch_size: Side of the square patch each query decodes.
            max_frames: Longest clip the frame-index embedding covers.
            width: Width of the decoder's queries.
            depth: Number of transformer blocks.
            num_heads: Attention heads per block.
        """
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.patches_per_side = image_size // patch_size
        num_patches = self.patches_per_side**2
        # Unit-scale query embeddings let every (frame, patch) query differ from the first step; with
        # ViT-style 0.02 the regression decoder learns the mean frame first and leaves it slowly.
        self.patch_position_embedding = nn.Parameter(torch.randn(num_patches, width))
        self.frame_embedding = FrameEmbedding(max_frames, width, init_std=1.0)
        self.token_projection = nn.Sequential(nn.Linear(token_dim, width), nn.LayerNorm(width))
        # Always visible, so attention stays defined when every token is masked (dropped condition).
        self.null_token = nn.Parameter(0.02 * torch.randn(1, 1, width))
        self.blocks = nn.ModuleList(FrameQueryBlock(width, num_heads) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.to_patches = nn.Linear(width, 3 * patch_size**2)
        # Near-zero outputs at first: from the default init's random pixels, training settles on the
        # mean frame of the data and stays there for hundreds of steps.
        nn.init.normal_(self.to_patches.weight, std=1e-3)
        nn.init.zeros_(self.to_patches.bias)

    @abstractmethod
    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of reconstructing ``(B, T, 3, H, W)`` clips in [0, 1]."""

    @abstractmethod
    def decode(self, tokens: VideoTokens, num_frames: int) -> torch.Tensor:
        """Reconstructs ``(B, num_frames, 3, H, W)`` clips in [0, 1]."""

    def query_positions(self, num_frames: int) -> torch.Tensor:
        """``(T, P, width)`` position embeddings of the queries, P patches a frame."""
        return self.frame_embedding(num_frames)[:, None] + self.patch_position_embedding[None]

    def predict(
        self, queries: torch.Tensor, tokens: VideoTokens, drop_condition: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Runs the backbone: ``(B, T, P, width)`` queries -> ``(B, T, 3, H, W)`` unbounded values.

        Args:
            queries: Embedded queries, P patches a frame.
            tokens: The sequence every query attends to.
            drop_condition: Optional ``(B,)`` bool; True hides all tokens of that clip.
        """
        batch = queries.shape[0]
        context = torch.cat([self.null_token.expand(batch, -1, -1), self.token_projection(tokens.tokens)], 1)
        visible = ~tokens.padding_mask
        if drop_condition is not None:
            visible = visible & ~drop_condition[:, None]
        visible = torch.cat([visible.new_ones(batch, 1), visible], dim=1)
        x = queries
        for block in self.blocks:
            x = block(x, context, visible)
        return self.unpatchify(self.to_patches(self.out_norm(x)))

    def check_frames(self, video: torch.Tensor) -> None:
        """Raises a ValueError naming ``image_size`` unless ``video`` has frames of that size."""
        expected = (3, self.image_size, self.image_size)
        if video.shape[-3:] != expected:
            raise ValueError(
                f"frames of shape {tuple(video.shape[-3:])} do not match {expected} "
                f"(image_size={self.image_size})"
            )

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W) -> (B, T, P, 3 * p * p)``, patches in row-major order."""
        self.check_frames(video)
        n, p = self.patches_per_side, self.patch_size
        patches = video.unflatten(-1, (n, p)).unflatten(-3, (n, p))  # (B, T, 3, n, p, n, p)
        return patches.permute(0, 1, 3, 5, 2, 4, 6).flatten(4).flatten(2, 3)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, T, P, 3 * p * p) -> (B, T, 3, H, W)``, the inverse of :meth:`patchify`."""
        n, p = self.patches_per_side, self.patch_size
        grid = patches.unflatten(-1, (3, p, p)).unflatten(2, (n, n))  # (B, T, n, n, 3, p, p)
        return grid.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


class RegressionVideoDecoder(VideoDecoder):
    """A deterministic decoder trained with a pixel MSE (+ optional L1) loss."""

    def __init__(self, *, l1_weight: float = 0.0, **kwargs) -> None:
        """
        Args:
            l1_weight: Weight of an L1 term added to the MSE loss.
            **kwargs: The :class:`VideoDecoder` options (token_dim, image_size, patch_size, max_frames,
                width, depth, num_heads).
        """
        super().__init__(**kwargs)
        self.l1_weight = l1_weight

    def forward(self, tokens: VideoTokens, num_frames: int) -> torch.Tensor:
        """The unclamped ``(B, T, 3, H, W)`` pixel prediction the loss is taken on."""
        positions = self.query_positions(num_frames)
        return self.predict(positions.expand(len(tokens.tokens), -1, -1, -1), tokens)

    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        self.check_frames(video)
        prediction = self(tokens, video.shape[1])
        loss = F.mse_loss(prediction, video)
        if self.l1_weight:
            loss = loss + self.l1_weight * F.l1_loss(prediction, video)
        return loss

    def decode(self, tokens: VideoTokens, num_frames: int) -> torch.Tensor:
        return self(tokens, num_frames).clamp(0, 1)


class FlowMatchingVideoDecoder(VideoDecoder):
    """A conditional rectified-flow decoder with classifier-free guidance.

    In [-1, 1] pixel space, ``x_t = (1 - t) * noise + t * video`` and the network predicts the
    velocity ``video - noise`` from the patches of ``x_t``, the time ``t`` and the tokens.
    """

    def __init__(
        self,
        *,
        num_sampling_steps: int = 16,
        condition_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        **kwargs,
    ) -> None:
        """
        Args:
            num_sampling_steps: Euler steps from noise to video in :meth:`decode`.
            condition_dropout: Probability of hiding all tokens of a training clip, which teaches
                the unconditional velocity classifier-free guidance needs.
            guidance_scale: Classifier-free guidance scale at sampling; 1.0 means no guidance.
            **kwargs: The :class:`VideoDecoder` options (token_dim, image_size, patch_size, max_frames,
                width, depth, num_heads).
        """
        super().__init__(**kwargs)
        self.num_sampling_steps = num_sampling_steps
        self.condition_dropout = condition_dropout
        self.guidance_scale = guidance_scale
        self.patch_embedding = nn.Linear(3 * self.patch_size**2, self.width)
        self.time_mlp = MLP(self.width, self.width, self.width)

    def velocity(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        tokens: VideoTokens,
        drop_condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The predicted ``(B, T, 3, H, W)`` velocity at points ``noisy`` (same shape) of times ``(B,)``."""
        time = self.time_mlp(timestep_embedding(t, self.width))[:, None, None]
        queries = self.patch_embedding(self.patchify(noisy)) + self.query_positions(noisy.shape[1]) + time
        return self.predict(queries, tokens, drop_condition)

    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        target = video * 2 - 1
        noise = torch.randn_like(target)
        t = torch.rand(len(target), device=target.device)
        t_video = t.view(-1, 1, 1, 1, 1)
        noisy = (1 - t_video) * noise + t_video * target
        drop_condition = None
        if self.training and self.condition_dropout > 0:
            drop_condition = torch.rand(len(target), device=target.device) < self.condition_dropout
        return F.mse_loss(self.velocity(noisy, t, tokens, drop_condition), target - noise)

    @torch.no_grad()
    def decode(
        self, tokens: VideoTokens, num_frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Samples clips by Euler steps from noise; a ``generator`` on the tokens' device fixes the noise."""
        batch = len(tokens.tokens)
        shape = (batch, num_frames, 3, self.image_size, self.image_size)
        x = torch.randn(shape, generator=generator, device=tokens.tokens.device, dtype=tokens.tokens.dtype)
        step = 1.0 / self.num_sampling_steps
        for i in range(self.num_sampling_steps):
            t = x.new_full((batch,), i * step)
            x = x + step * self.guided_velocity(x, t, tokens)
        return ((x + 1) / 2).clamp(0, 1)

    def guided_velocity(self, noisy: torch.Tensor, t: torch.Tensor, tokens: VideoTokens) -> torch.Tensor:
        """The velocity with classifier-free guidance: one batched pass with and without the tokens."""
        if self.guidance_scale == 1.0:
            return self.velocity(noisy, t, tokens)
        batch = len(noisy)
        doubled = VideoTokens(
            tokens.tokens.repeat(2, 1, 1), tokens.kinds, tokens.frame_index, tokens.padding_mask.repeat(2, 1)
        )
        drop_condition = torch.arange(2 * batch, device=noisy.device) >= batch
        velocities = self.velocity(noisy.repeat(2, 1, 1, 1, 1), t.repeat(2), doubled, drop_condition)
        conditional, unconditional = velocities.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

"""Video decoders: reconstruct ``(B, T, 3, H, W)`` clips from a token sequence.

Both decoders share one backbone. Queries are frame-factorised: each output frame has one query per
``patch_size`` patch (learned patch-position + frame-index embeddings); queries attend within their
frame, then to EVERY token of the sequence, and a linear layer turns each query into its patch.

Frame t of a VTok clip is described by the key frame's spatial tokens and by ONE residual token, so
the decoder gives that token direct paths to frame t: it conditions the frame's queries on it
(``frame_conditioning``) and moves the key frame's content by a motion field read from it
(``motion_field``).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.flow_matching import euler_sample, training_point
from vtok_lit.core.layers import MLP, FrameEmbedding, FrameQueryBlock, timestep_embedding
from vtok_lit.core.tokens import TokenKind, VideoTokens, cell_centres

# A pixel "changed since the key frame" when a channel moved by more than this (intensities in
# [0, 1]): above the corpus's background noise (std 0.03 a frame) and codec error, below the
# smallest change of a fading object.
CHANGE_THRESHOLD = 0.15
# The locality bias never goes below this. A token that far away gets a softmax weight under e^-50
# (zero for any purpose), and without the floor far tokens get weights around e^-87 .. e^-103, which
# float32 holds as denormals: CPU matrix products over them run up to 10x slower.
LOCALITY_BIAS_FLOOR = -50.0
# With ``prediction="clean"``, the velocity divides by the time left, ``1 - t``, floored here. Euler
# sampling stops at ``t = 1 - 1 / num_sampling_steps``; the floor guards a caller asking nearer 1.
CLEAN_PREDICTION_MIN_REMAINING = 0.05


def changed_pixels(video: torch.Tensor, key_frame: int, frames: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, T', 1, H, W)`` bool: where a pixel of ``frames`` (default: all T) of ``(B, T, 3, H, W)``
    clips in [0, 1] differs from the key frame's."""
    selected = video if frames is None else video[:, frames]
    difference = (selected - video[:, key_frame : key_frame + 1]).abs().amax(dim=2, keepdim=True)
    return difference > CHANGE_THRESHOLD


def key_frame_of(tokens: VideoTokens) -> int:
    """The key frame of a sequence: the frame of its spatial tokens, or frame 0 when it has none."""
    spatial = tokens.kinds == TokenKind.SPATIAL
    return int(tokens.frame_index[spatial][0]) if spatial.any() else 0


def residual_of_frames(tokens: VideoTokens, frames: torch.Tensor) -> torch.Tensor:
    """``(T',)`` long: the position in the sequence of the residual token that describes each of
    ``frames``, or -1 (the key frame, or a sequence without residual tokens).

    A residual token stands for its group of frames, from its own frame index to the next token's,
    on its side of the key frame.
    """
    is_residual = tokens.kinds == TokenKind.RESIDUAL
    positions = is_residual.nonzero().squeeze(1).to(frames.device)
    if len(positions) == 0:
        return torch.full_like(frames, -1)
    key = key_frame_of(tokens)
    starts = tokens.frame_index.to(frames.device)[positions][None]  # (1, R)
    frame = frames[:, None]
    candidate = (starts <= frame) & ((starts > key) == (frame > key)) & (frame != key)
    best = torch.where(candidate, starts, -1).argmax(dim=1)
    return torch.where(candidate.any(dim=1), positions[best], -1)


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
        frames_per_clip: int | None = None,
        locality: float = 1.0,
        frame_conditioning: bool = False,
        motion_field: bool = False,
        changed_pixel_weight: float = 0.0,
        patch_code_dim: int = 0,
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
            frames_per_clip: In training, take the loss on this many random frames of each clip
                instead of all of them. Queries of one frame never see another frame's, so this is
                exact for those frames and makes a step several times cheaper; None uses every frame.
            locality: Initial strength of a learned attention bias: ``-locality * d**2`` from each query
                to the tokens of grid cells ``d`` patches from its patch, and ``-locality * dt**2`` to the
                tokens of a single frame (residual and naive frame tokens) ``dt`` frames from its frame.
                Without it a query must first learn which tokens hold its part of the clip, and
                training sits at the mean frame for a long time. Each head of each block learns
                its own strength, so some can look far (where an object came from). 0 disables it.
            frame_conditioning: Modulate the queries of frame t (adaLN in every block) by the residual
                token that describes frame t, so that token reaches its frame directly rather than
                only through cross-attention, competing with every other token.
            motion_field: Move each key-frame spatial token, for frame t, by a displacement an MLP
                reads from that token and frame t's residual token: the locality bias then favours
                the queries where the cell's content has moved to, not where it was.
            changed_pixel_weight: Weight ``1 + changed_pixel_weight`` in the loss on pixels that
                changed since the key frame (the moving objects, a few percent of the pixels), 1
                elsewhere; 0 is the plain mean.
            patch_code_dim: Add to each query of frame t a code of this size for its own patch, read
                by an MLP from frame t's residual token (then widened to the query width): a path
                from the token to WHERE in frame t something changed, which neither the per-frame
                adaLN condition nor attention gives directly. 0 disables it.
        """
        super().__init__()
        if frames_per_clip is not None and frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be at least 1 (or None), got {frames_per_clip}")
        if changed_pixel_weight < 0:
            raise ValueError(f"changed_pixel_weight must not be negative, got {changed_pixel_weight}")
        self.frames_per_clip = frames_per_clip
        self.changed_pixel_weight = changed_pixel_weight
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        self.image_size = image_size
        self.token_dim = token_dim
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
        self.blocks = nn.ModuleList(
            FrameQueryBlock(width, num_heads, conditioned=frame_conditioning) for _ in range(depth)
        )
        # The condition of a frame no residual token describes (the key frame).
        self.key_frame_condition = nn.Parameter(torch.zeros(width)) if frame_conditioning else None
        self.condition_mlp = MLP(width, width, width) if frame_conditioning else None
        if motion_field:
            self.motion_from_cell = nn.Linear(width, width)
            self.motion_from_frame = nn.Linear(width, width, bias=False)
            self.motion_out = nn.Linear(width, 2)
            nn.init.zeros_(self.motion_out.weight)  # no motion at first: the plain locality bias
            nn.init.zeros_(self.motion_out.bias)
        else:
            self.motion_out = None
        if patch_code_dim < 0:
            raise ValueError(f"patch_code_dim must not be negative, got {patch_code_dim}")
        self.patch_code_dim = patch_code_dim
        if patch_code_dim:
            self.patch_code_mlp = MLP(width, width, num_patches * patch_code_dim)
            self.patch_code_out = nn.Linear(patch_code_dim, width)
        if locality < 0:
            raise ValueError(f"locality must not be negative, got {locality}")
        self.log_locality = (
            nn.Parameter(torch.full((depth, num_heads), math.log(locality))) if locality > 0 else None
        )
        self.register_buffer("patch_xy", cell_centres(self.patches_per_side), persistent=False)
        self.out_norm = nn.LayerNorm(width)
        self.to_patches = self.patch_head(channels=3)

    def patch_head(self, channels: int) -> nn.Linear:
        """The layer that turns each query into ``channels`` values for every pixel of its patch."""
        head = nn.Linear(self.width, channels * self.patch_size**2)
        # Near-zero outputs at first: from the default init's random pixels, training settles on the
        # mean frame of the data and stays there for hundreds of steps.
        nn.init.normal_(head.weight, std=1e-3)
        nn.init.zeros_(head.bias)
        return head

    @abstractmethod
    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of reconstructing ``(B, T, 3, H, W)`` clips in [0, 1]."""

    @abstractmethod
    def decode(
        self, tokens: VideoTokens, num_frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reconstructs ``(B, num_frames, 3, H, W)`` clips in [0, 1]; a sampling decoder draws its
        noise from ``generator`` (on the tokens' device) when one is given."""

    def loss_and_decode(
        self, tokens: VideoTokens, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss` of ``video`` and its :meth:`decode` (what validation reports); a decoder whose
        loss renders the whole clip renders it once for both."""
        return self.loss(tokens, video), self.decode(tokens, video.shape[1], generator)

    def query_positions(self, num_frames: int, frames: torch.Tensor | None = None) -> torch.Tensor:
        """``(T', P, width)`` position embeddings of the queries of ``frames`` (default: all T), P a frame."""
        frame_embeddings = self.frame_embedding(num_frames)
        if frames is not None:
            frame_embeddings = frame_embeddings[frames]
        return frame_embeddings[:, None] + self.patch_position_embedding[None]

    def pixel_mse(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        tokens: VideoTokens,
        video: torch.Tensor,
        frames: torch.Tensor | None,
    ) -> torch.Tensor:
        """The mean squared error of ``(B, T', 3, H, W)`` predictions of ``frames`` (None: all) of
        ``video``, weighted up on the pixels that changed since the key frame (``changed_pixel_weight``)."""
        squared_error = (prediction - target).pow(2)
        if not self.changed_pixel_weight:
            return squared_error.mean()
        changed = changed_pixels(video, key_frame_of(tokens), frames)
        return (squared_error * (1 + self.changed_pixel_weight * changed)).mean()

    def loss_frames(self, num_frames: int, device: torch.device) -> torch.Tensor | None:
        """The sorted frame indices a training loss is taken on, or None for all frames."""
        if not self.training or self.frames_per_clip is None or self.frames_per_clip >= num_frames:
            return None
        return torch.randperm(num_frames, device=device)[: self.frames_per_clip].sort().values

    def predict(
        self,
        queries: torch.Tensor,
        tokens: VideoTokens,
        drop_condition: torch.Tensor | None = None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Runs the backbone: ``(B, T', P, width)`` queries -> ``(B, T', C, H, W)`` unbounded values
        (C = 3 colours, and the blend mask's logit with ``key_frame_blend``).

        Args:
            queries: Embedded queries, P patches a frame.
            tokens: The sequence every query attends to.
            drop_condition: Optional ``(B,)`` bool; True hides all tokens of that clip.
            frames: ``(T',)`` the clip frames the queries decode; default ``0 .. T' - 1``.
        """
        batch, num_query_frames = queries.shape[:2]
        projected = self.token_projection(tokens.tokens)
        context = torch.cat([self.null_token.expand(batch, -1, -1), projected], 1)
        visible = ~tokens.padding_mask
        if drop_condition is not None:
            visible = visible & ~drop_condition[:, None]
        visible = torch.cat([visible.new_ones(batch, 1), visible], dim=1)
        if frames is None:
            frames = torch.arange(num_query_frames, device=queries.device)
        residual_index = residual_of_frames(tokens, frames)
        frame_residuals = self.frame_residual_tokens(projected, residual_index)
        condition = self.frame_condition(frame_residuals, residual_index, drop_condition)
        bias = self.locality_bias(tokens, frames, projected, frame_residuals, residual_index)
        x = queries
        if self.patch_code_dim:
            x = x + self.patch_codes(frame_residuals, residual_index, drop_condition)
        for depth, block in enumerate(self.blocks):
            x = block(x, context, visible, None if bias is None else bias[:, depth], condition)
        return self.unpatchify(self.to_patches(self.out_norm(x)))

    @staticmethod
    def frame_residual_tokens(projected: torch.Tensor, residual_index: torch.Tensor) -> torch.Tensor:
        """``(B, T', W)``: each frame's projected residual token (zeros where it has none)."""
        gathered = projected[:, residual_index.clamp(min=0)]
        return gathered * (residual_index >= 0)[None, :, None]

    def frame_condition(
        self,
        frame_residuals: torch.Tensor,
        residual_index: torch.Tensor,
        drop_condition: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """``(B, T', W)`` adaLN condition of each frame's queries, or None without frame conditioning."""
        if self.condition_mlp is None:
            return None
        has_residual = (residual_index >= 0)[None, :, None]
        if drop_condition is not None:
            has_residual = has_residual & ~drop_condition[:, None, None]
        return torch.where(has_residual, self.condition_mlp(frame_residuals), self.key_frame_condition)

    def patch_codes(
        self,
        frame_residuals: torch.Tensor,
        residual_index: torch.Tensor,
        drop_condition: torch.Tensor | None,
    ) -> torch.Tensor:
        """``(B, T', P, width)``: what each frame's residual token says about each of its patches, zero
        for frames without one (the key frame) and for clips whose tokens are dropped."""
        codes = self.patch_code_mlp(frame_residuals).unflatten(-1, (-1, self.patch_code_dim))
        has_residual = (residual_index >= 0)[None, :, None, None]
        if drop_condition is not None:
            has_residual = has_residual & ~drop_condition[:, None, None, None]
        return self.patch_code_out(codes) * has_residual

    def displacements(
        self,
        tokens: VideoTokens,
        projected: torch.Tensor,
        frame_residuals: torch.Tensor,
        residual_index: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, T', L, 2)``: where each key-frame spatial token's content has moved by each frame, in
        units of the frame side; zero for other tokens and for frames without a residual token."""
        hidden = (
            self.motion_from_cell(projected)[:, None] + self.motion_from_frame(frame_residuals)[:, :, None]
        )
        moved = (tokens.kinds == TokenKind.SPATIAL).to(projected.device)[None, None, :, None]
        has_residual = (residual_index >= 0)[None, :, None, None]
        return self.motion_out(F.gelu(hidden)) * (moved & has_residual)

    def locality_bias(
        self,
        tokens: VideoTokens,
        frames: torch.Tensor,
        projected: torch.Tensor | None = None,
        frame_residuals: torch.Tensor | None = None,
        residual_index: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """``(B or 1, depth, heads, T' * P, 1 + L)`` attention bias from each query to the null token
        and every token, or None without locality.

        A token of a grid cell is favoured by the queries of nearby patches (with a motion field: of
        the patches near where its content has moved to by the query's frame); a token of one frame
        (residual or naive frame tokens) by the queries of nearby frames. Key-frame spatial tokens
        describe the whole clip, so time does not weigh on them. The motion field needs the
        projected tokens and the frames' residual tokens (from :meth:`predict`). The bias stops at
        ``LOCALITY_BIAS_FLOOR``.
        """
        if self.log_locality is None:
            return None
        distance = torch.zeros(
            1, len(frames), len(self.patch_xy), len(tokens.kinds), device=self.patch_xy.device
        )
        if tokens.cell_xy is not None:
            cell_xy = tokens.cell_xy.to(self.patch_xy)
            has_cell = ~cell_xy.isnan().any(-1)  # NaN must not reach the product: its gradient would be NaN
            centres = cell_xy.nan_to_num(0.0)[None, None]  # (1, 1, L, 2)
            if self.motion_out is not None and projected is not None and (residual_index >= 0).any():
                centres = centres + self.displacements(tokens, projected, frame_residuals, residual_index)
            offsets = (self.patch_xy[None, None, :, None] - centres[:, :, None]) * self.patches_per_side
            distance = distance + offsets.pow(2).sum(-1) * has_cell  # (B or 1, T', P, L)
        per_frame = tokens.kinds != TokenKind.SPATIAL
        frame_gap = (frames[:, None] - tokens.frame_index[None]).float()  # (T', L)
        distance = (distance + (frame_gap.pow(2) * per_frame)[None, :, None]).flatten(1, 2)  # (B or 1, Q, L)
        strength = self.log_locality.exp()  # (depth, heads)
        bias = (-strength[None, :, :, None, None] * distance[:, None, None]).clamp(min=LOCALITY_BIAS_FLOOR)
        return F.pad(bias, (1, 0))  # the null token: no bias

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
        """``(B, T, P, C * p * p) -> (B, T, C, H, W)``, the inverse of :meth:`patchify`."""
        n, p = self.patches_per_side, self.patch_size
        grid = patches.unflatten(-1, (-1, p, p)).unflatten(2, (n, n))  # (B, T, n, n, C, p, p)
        return grid.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


class RegressionVideoDecoder(VideoDecoder):
    """A deterministic decoder trained with a pixel MSE (+ optional L1) loss."""

    def __init__(self, *, l1_weight: float = 0.0, key_frame_blend: bool = False, **kwargs) -> None:
        """
        Args:
            l1_weight: Weight of an L1 term added to the MSE loss.
            key_frame_blend: Render each later frame as a per-pixel blend of its own rendering and
                the key frame's, by a mask the decoder predicts with it: where the mask is low, frame t
                copies the key frame's rendering. Every frame's unchanged pixels then train that one
                rendering, as they do when every frame is rendered from the key frame alone, and frame
                t's own rendering (and its residual token) is needed only where it differs from the
                key frame. Training decodes the key frame with the sampled frames.
            **kwargs: The :class:`VideoDecoder` options (token_dim, image_size, patch_size, max_frames,
                width, depth, num_heads, frames_per_clip, locality, frame_conditioning,
                motion_field, changed_pixel_weight, patch_code_dim).
        """
        super().__init__(**kwargs)
        self.l1_weight = l1_weight
        self.key_frame_blend = key_frame_blend
        if key_frame_blend:
            # One more output a pixel: the logit of its blend mask, near 0 at first (an even blend),
            # so both renderings learn from the start.
            self.to_patches = self.patch_head(channels=4)

    def forward(
        self, tokens: VideoTokens, num_frames: int, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The unclamped ``(B, T', 3, H, W)`` pixel prediction of ``frames`` (default: all T)."""
        batch = len(tokens.tokens)
        if not self.key_frame_blend:
            positions = self.query_positions(num_frames, frames)
            return self.predict(positions.expand(batch, -1, -1, -1), tokens, frames=frames)
        if frames is None:
            frames = torch.arange(num_frames, device=tokens.tokens.device)
        key = torch.tensor([key_frame_of(tokens)], device=frames.device)
        decoded = torch.cat([frames, key]).unique(sorted=True)  # the key frame at most once
        positions = self.query_positions(num_frames, decoded)
        output = self.predict(positions.expand(batch, -1, -1, -1), tokens, frames=decoded)
        colour, mask = output[:, :, :3], torch.sigmoid(output[:, :, 3:])
        key_rendering = colour[:, decoded == key]  # (B, 1, 3, H, W)
        blended = mask * colour + (1 - mask) * key_rendering  # the key frame's own rendering is itself
        return blended[:, torch.searchsorted(decoded, frames)]

    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        return self.rendered_loss(tokens, video)[0]

    def loss_and_decode(
        self, tokens: VideoTokens, video: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, prediction, frames = self.rendered_loss(tokens, video)
        if frames is not None:  # a training loss on a few frames: render the clip on its own
            return loss, self.decode(tokens, video.shape[1], generator)
        return loss, prediction.clamp(0, 1)

    def rendered_loss(
        self, tokens: VideoTokens, video: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The loss, the unclamped prediction it was taken on and its frames (None: all, as in
        evaluation)."""
        self.check_frames(video)
        frames = self.loss_frames(video.shape[1], video.device)
        prediction = self(tokens, video.shape[1], frames)
        target = video if frames is None else video[:, frames]
        loss = self.pixel_mse(prediction, target, tokens, video, frames)
        if self.l1_weight:
            loss = loss + self.l1_weight * F.l1_loss(prediction, target)
        return loss, prediction, frames

    def decode(
        self, tokens: VideoTokens, num_frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Deterministic: ``generator`` is accepted for a common signature and unused."""
        return self(tokens, num_frames).clamp(0, 1)


class FlowMatchingVideoDecoder(VideoDecoder):
    """A conditional rectified-flow decoder with classifier-free guidance.

    In [-1, 1] pixel space, on the path ``x_t = (1 - t) * noise + t * video``
    (:mod:`vtok_lit.core.flow_matching`), the network predicts the velocity ``video - noise`` from the
    patches of ``x_t``, the time ``t`` and the tokens.
    """

    def __init__(
        self,
        *,
        num_sampling_steps: int = 16,
        condition_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        prediction: Literal["velocity", "clean"] = "velocity",
        **kwargs,
    ) -> None:
        """
        Args:
            num_sampling_steps: Euler steps from noise to video in :meth:`decode`.
            condition_dropout: Probability of hiding all tokens of a training clip, which teaches
                the unconditional velocity classifier-free guidance needs.
            guidance_scale: Classifier-free guidance scale at sampling; 1.0 means no guidance.
            prediction: What the network outputs: the velocity itself, or the clean clip, from which
                the velocity is ``(clean - x_t) / (1 - t)``. A velocity must carry the noise of every
                pixel back out, and a patch of ``3 * p**2`` values (192 at p=8) embedded in a
                narrower width cannot carry it: the velocity error stays near the share of the noise
                that the width drops, and samples keep that noise. The clean clip is what a
                regression decoder draws, and fits any width. Its loss is on the clean clip, the
                same weight at every t: on the velocity it would weigh ``(1 - t)**-2``, most on the
                nearly clean points, which need no tokens (measured: a decoder trained so ignored
                them and its tokenizer's tokens stopped differing between clips).
            **kwargs: The :class:`VideoDecoder` options (token_dim, image_size, patch_size, max_frames,
                width, depth, num_heads, frames_per_clip, locality, frame_conditioning,
                motion_field, changed_pixel_weight, patch_code_dim).
        """
        super().__init__(**kwargs)
        self.num_sampling_steps = num_sampling_steps
        self.condition_dropout = condition_dropout
        self.guidance_scale = guidance_scale
        if prediction not in ("velocity", "clean"):
            raise ValueError(f"prediction must be 'velocity' or 'clean', got {prediction!r}")
        self.prediction = prediction
        patch_values = 3 * self.patch_size**2
        if prediction == "velocity" and self.width < patch_values:
            warnings.warn(
                f"FlowMatchingVideoDecoder: width={self.width} is below the {patch_values} values of a "
                f"{self.patch_size}x{self.patch_size} patch, so a predicted velocity cannot carry every "
                "pixel's noise back out and samples stay noisy; set prediction: clean.",
                stacklevel=2,
            )
        self.patch_embedding = nn.Linear(3 * self.patch_size**2, self.width)
        self.time_mlp = MLP(self.width, self.width, self.width)

    def network_output(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        tokens: VideoTokens,
        drop_condition: torch.Tensor | None = None,
        num_frames: int | None = None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The network's ``(B, T', 3, H, W)`` output at points ``noisy`` (same shape) of times ``(B,)``:
        the velocity, or the clean clip in [-1, 1] with ``prediction="clean"``.

        ``noisy`` holds ``frames`` (default: all) of clips of ``num_frames`` (default: ``T'``) frames.
        """
        time = self.time_mlp(timestep_embedding(t, self.width))[:, None, None]
        positions = self.query_positions(num_frames or noisy.shape[1], frames)
        queries = self.patch_embedding(self.patchify(noisy)) + positions + time
        return self.predict(queries, tokens, drop_condition, frames)

    def velocity(
        self, noisy: torch.Tensor, t: torch.Tensor, tokens: VideoTokens, **options: Any
    ) -> torch.Tensor:
        """The predicted ``(B, T', 3, H, W)`` velocity at points ``noisy`` (same shape) of times ``(B,)``;
        ``options`` (``drop_condition``, ``num_frames``, ``frames``) as :meth:`network_output` takes them."""
        output = self.network_output(noisy, t, tokens, **options)
        if self.prediction == "velocity":
            return output
        remaining = (1 - t).clamp(min=CLEAN_PREDICTION_MIN_REMAINING).view(-1, 1, 1, 1, 1)
        return (output - noisy) / remaining

    def loss(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        self.check_frames(video)
        num_frames = video.shape[1]
        frames = self.loss_frames(num_frames, video.device)
        target = (video if frames is None else video[:, frames]) * 2 - 1
        noisy, t, target_velocity = training_point(target)
        drop_condition = None
        if self.training and self.condition_dropout > 0:
            drop_condition = torch.rand(len(target), device=target.device) < self.condition_dropout
        output = self.network_output(noisy, t, tokens, drop_condition, num_frames, frames)
        return self.pixel_mse(
            output, target_velocity if self.prediction == "velocity" else target, tokens, video, frames
        )

    @torch.no_grad()
    def decode(
        self, tokens: VideoTokens, num_frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Samples clips by Euler steps from noise; a ``generator`` on the tokens' device fixes the noise."""
        shape = (len(tokens.tokens), num_frames, 3, self.image_size, self.image_size)
        x = euler_sample(
            lambda noisy, t: self.guided_velocity(noisy, t, tokens),
            shape,
            self.num_sampling_steps,
            tokens.tokens,
            generator,
        )
        return ((x + 1) / 2).clamp(0, 1)

    def guided_velocity(self, noisy: torch.Tensor, t: torch.Tensor, tokens: VideoTokens) -> torch.Tensor:
        """The velocity with classifier-free guidance: one batched pass with and without the tokens."""
        if self.guidance_scale == 1.0:
            return self.velocity(noisy, t, tokens)
        batch = len(noisy)
        doubled = VideoTokens(
            tokens.tokens.repeat(2, 1, 1),
            tokens.kinds,
            tokens.frame_index,
            tokens.padding_mask.repeat(2, 1),
            tokens.cell_xy,
        )
        drop_condition = torch.arange(2 * batch, device=noisy.device) >= batch
        velocities = self.velocity(
            noisy.repeat(2, 1, 1, 1, 1), t.repeat(2), doubled, drop_condition=drop_condition
        )
        conditional, unconditional = velocities.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

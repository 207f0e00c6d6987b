"""Auxiliary objectives on the residual tokens themselves, next to the decoder's reconstruction loss.

Trained through the decoder alone, the frame encoder learns what the decoder asks of the residual
tokens, and the decoder asks little of tokens that do not yet say where things moved: whether the
residual tokens come to carry motion within a short pretraining then depends on the seed. An objective
that every residual token must meet on its own gives the encoder that signal from the first step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.layers import MLP
from vtok_lit.core.tokenizers import position_bases
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import CHANGE_THRESHOLD, key_frame_of, residual_of_frames


class ResidualObjective(nn.Module, ABC):
    """An objective each residual token must meet alone; its error is added to the loss times ``weight``.

    Attributes:
        metric_name: The name the error is logged under (``train/<name>``, ``val/<name>``).
    """

    metric_name: str

    def __init__(self, token_dim: int, weight: float) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must not be negative, got {weight}")
        self.token_dim = token_dim
        self.weight = weight

    @abstractmethod
    def forward(
        self, tokens: VideoTokens, video: torch.Tensor, captions: list[str] | None = None
    ) -> torch.Tensor:
        """The scalar error of the residual tokens of ``video`` ``(B, T, 3, H, W)`` in [0, 1]; the
        clips' ``captions`` for an objective that reads them (the others leave them)."""

    def residual_positions(self, tokens: VideoTokens) -> torch.Tensor:
        """The positions of the residual tokens in the sequence; refuses a sequence without any."""
        positions = (tokens.kinds == TokenKind.RESIDUAL).nonzero().squeeze(1)
        if len(positions) == 0:
            raise ValueError(
                f"{type(self).__name__} needs residual tokens, and this tokenizer makes none: "
                "set model.init_args.residual_objective to null for it"
            )
        return positions

    def frames_of_tokens(self, tokens: VideoTokens, num_frames: int, device: torch.device) -> torch.Tensor:
        """``(R, T)`` 0/1: which frames each residual token stands for (its group)."""
        owner = residual_of_frames(tokens, torch.arange(num_frames, device=device))
        positions = self.residual_positions(tokens).to(device)
        return (owner[None] == positions[:, None]).float()

    def kept(self, tokens: VideoTokens) -> torch.Tensor:
        """``(B, R)`` float: 1 for the residual tokens that are not padding."""
        positions = self.residual_positions(tokens).to(tokens.padding_mask.device)
        return (~tokens.padding_mask[:, positions]).float()


class ChangeMapObjective(ResidualObjective):
    """Each residual token must predict, alone, a coarse map of how its frame differs from the key frame.

    The target of the residual token of frame t is ``x_t - x_key`` average-pooled to ``map_size x
    map_size`` (all three channels, signed: an object that moved leaves a mark where it went and
    another where it was), the mean over the token's frames when it stands for a group. A small MLP
    reads the map from the token. The error is normalised by the target's energy: 1.0 is what predicting
    "no change" scores, 0 a perfect map.
    """

    metric_name = "change_map_error"

    def __init__(
        self, token_dim: int = 128, map_size: int = 8, hidden_dim: int = 256, weight: float = 1.0
    ) -> None:
        """
        Args:
            token_dim: Size D of the tokens.
            map_size: Side of the pooled change map each residual token predicts (the frame side must
                be a multiple of it).
            hidden_dim: Hidden width of the MLP that reads the map from a token.
            weight: Weight of the normalised error in the training loss.
        """
        super().__init__(token_dim, weight)
        if map_size < 1:
            raise ValueError(f"map_size must be at least 1, got {map_size}")
        self.map_size = map_size
        self.head = MLP(token_dim, hidden_dim, 3 * map_size**2)

    def target_maps(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        """``(B, R, 3, m, m)``: the pooled change since the key frame of each residual token's frames."""
        batch, num_frames, _, height, width = video.shape
        if height % self.map_size or width % self.map_size:
            raise ValueError(
                f"frames of {height}x{width} are not a multiple of map_size={self.map_size} "
                "(ChangeMapObjective)"
            )
        key = key_frame_of(tokens)
        difference = video - video[:, key : key + 1]
        pooled = F.avg_pool2d(difference.flatten(0, 1), height // self.map_size)
        pooled = pooled.unflatten(0, (batch, num_frames))
        membership = self.frames_of_tokens(tokens, num_frames, video.device).to(pooled.dtype)
        membership = membership / membership.sum(dim=1, keepdim=True).clamp(min=1)
        return torch.einsum("rt,btchw->brchw", membership, pooled)

    def forward(
        self, tokens: VideoTokens, video: torch.Tensor, captions: list[str] | None = None
    ) -> torch.Tensor:
        """The normalised error of the maps read from the residual tokens of ``video`` ``(B, T, 3, H, W)``
        in [0, 1]: ``sum (prediction - target)**2 / sum target**2`` over the batch's unpadded tokens."""
        positions = self.residual_positions(tokens)
        target = self.target_maps(tokens, video)
        residual = tokens.tokens[:, positions.to(tokens.tokens.device)]
        prediction = self.head(residual).unflatten(-1, target.shape[2:])
        kept = self.kept(tokens).to(target)[:, :, None, None, None]
        error = ((prediction - target).pow(2) * kept).sum()
        return error / (target.pow(2) * kept).sum().clamp(min=1e-12)


def foreground_weights(video: torch.Tensor, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """``(B, T, H, W)``: how far each pixel of ``(B, T, 3, H, W)`` clips in [0, 1] stands out from its
    frame's median colour beyond ``threshold`` (the largest channel's distance, minus ``threshold``,
    floored at 0). On a background that covers most of the frame, the median colour is the
    background's and the weights mark the things in front of it; noise below the threshold weighs 0."""
    median = video.flatten(-2).median(dim=-1).values[..., None, None]  # (B, T, 3, 1, 1)
    return F.relu((video - median).abs().amax(dim=2) - threshold)


class ForegroundMotionObjective(ResidualObjective):
    """Each residual token must give, through ONE linear map, how its frame's foreground moved and
    changed in amount since the key frame.

    From the pixels alone (:func:`foreground_weights`), each frame's foreground has a mass and a centre
    of mass; the targets of frame t are the shift of the centre, ``(dx, dy)`` in units of half the
    frame side, and ``log`` of the mass ratio (an object that grows or fades, appears or leaves),
    averaged over a token's group. The centre shift counts only where both frames show foreground.
    Each target's error is normalised by its spread over the batch: 1.0 is what predicting the
    batch's mean scores (for a target that varies in the batch), 0 a perfect read.

    A linear reader, unlike the decoder's nonlinear ones, makes the token say which way things moved
    the same way for every object: the decoder alone is satisfied by a code of "this object went
    there" that a reader without the key frame cannot untangle. The targets are a summary of the
    clip's motion: with several objects, the shift of their common centre of mass.
    """

    metric_name = "motion_error"

    def __init__(
        self, token_dim: int = 128, weight: float = 1.0, threshold: float = CHANGE_THRESHOLD
    ) -> None:
        """
        Args:
            token_dim: Size D of the tokens.
            weight: Weight of the normalised error in the training loss.
            threshold: How far, on a 0-1 scale, a pixel's colour must be from its frame's median colour
                to count as foreground (above the background's noise).
        """
        super().__init__(token_dim, weight)
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = threshold
        self.head = nn.Linear(token_dim, 3)

    def frame_targets(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 3)`` centre of mass ``(x, y)`` and ``log`` mass of each frame's foreground, and
        ``(B, T)`` whether the frame has any."""
        weights = foreground_weights(video, self.threshold)
        mass = weights.mean(dim=(-2, -1))
        height, width = weights.shape[-2:]
        xy = position_bases(height, width)[1:].to(weights)  # (2, H, W) in [-1, 1]
        centre = torch.einsum("bthw,khw->btk", weights, xy) / (weights.sum(dim=(-2, -1))[..., None] + 1e-8)
        return torch.cat([centre, torch.log(mass + 1e-3)[..., None]], dim=-1), mass > 1e-4

    def targets(self, tokens: VideoTokens, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, R, 3)`` each residual token's targets and ``(B, R, 3)`` their weights (0 where undefined)."""
        per_frame, has_foreground = self.frame_targets(video)
        key = key_frame_of(tokens)
        change = per_frame - per_frame[:, key : key + 1]  # (B, T, 3)
        defined = torch.stack(
            [has_foreground & has_foreground[:, key : key + 1]] * 2 + [torch.ones_like(has_foreground)], -1
        ).to(change)
        membership = self.frames_of_tokens(tokens, video.shape[1], video.device).to(change)  # (R, T)
        counts = torch.einsum("rt,btk->brk", membership, defined)
        summed = torch.einsum("rt,btk->brk", membership, change * defined)
        return summed / counts.clamp(min=1), (counts > 0).to(change) * self.kept(tokens)[..., None].to(change)

    def forward(
        self, tokens: VideoTokens, video: torch.Tensor, captions: list[str] | None = None
    ) -> torch.Tensor:
        """The mean of :meth:`target_errors` over the three targets."""
        return self.target_errors(tokens, video).mean()

    def target_errors(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        """``(3,)``: for dx, dy and the log mass ratio, ``sum (prediction - target)**2 / sum (target -
        mean)**2`` over the batch's defined, unpadded residual tokens."""
        positions = self.residual_positions(tokens)
        target, weight = self.targets(tokens, video)
        prediction = self.head(tokens.tokens[:, positions.to(tokens.tokens.device)])
        count = weight.sum(dim=(0, 1)).clamp(min=1)
        mean = (target * weight).sum(dim=(0, 1)) / count
        # A target that barely varies in the batch (every clip still) is scored against a floor of
        # 0.03 (1 px of a 64-px frame; 3% in mass) rather than its near-zero spread.
        spread = torch.maximum(((target - mean).pow(2) * weight).sum(dim=(0, 1)), count * 0.03**2)
        return ((prediction - target).pow(2) * weight).sum(dim=(0, 1)) / spread

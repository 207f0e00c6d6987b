"""Auxiliary objectives on the residual tokens themselves, next to the decoder's reconstruction loss.

Trained through the decoder alone, the frame encoder learns what the decoder asks of the residual
tokens, and the decoder asks little of tokens that do not yet say where things moved: whether the
residual tokens come to carry motion within a short pretraining then depends on the seed. An objective
that every residual token must meet on its own gives the encoder that signal from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.layers import MLP
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import key_frame_of, residual_of_frames


class ChangeMapObjective(nn.Module):
    """Each residual token must predict, alone, a coarse map of how its frame differs from the key frame.

    The target of the residual token of frame t is ``x_t - x_key`` average-pooled to ``map_size x
    map_size`` (all three channels, signed: an object that moved leaves a mark where it went and
    another where it was), the mean over the token's frames when it stands for a group. A small MLP
    reads the map from the token. The error is normalised by the target's energy: 1.0 is what predicting
    "no change" scores, 0 a perfect map.
    """

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
        super().__init__()
        if map_size < 1:
            raise ValueError(f"map_size must be at least 1, got {map_size}")
        if weight < 0:
            raise ValueError(f"weight must not be negative, got {weight}")
        self.map_size = map_size
        self.weight = weight
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
        frames = torch.arange(num_frames, device=video.device)
        owner = residual_of_frames(tokens, frames)  # (T,) the residual token of each frame, or -1
        positions = self.residual_positions(tokens).to(video.device)
        membership = (owner[None] == positions[:, None]).to(pooled.dtype)  # (R, T)
        membership = membership / membership.sum(dim=1, keepdim=True).clamp(min=1)
        return torch.einsum("rt,btchw->brchw", membership, pooled)

    @staticmethod
    def residual_positions(tokens: VideoTokens) -> torch.Tensor:
        return (tokens.kinds == TokenKind.RESIDUAL).nonzero().squeeze(1)

    def forward(self, tokens: VideoTokens, video: torch.Tensor) -> torch.Tensor:
        """The normalised error of the maps read from the residual tokens of ``video`` ``(B, T, 3, H, W)``
        in [0, 1]: ``sum (prediction - target)**2 / sum target**2`` over the batch's unpadded tokens."""
        positions = self.residual_positions(tokens)
        if len(positions) == 0:
            raise ValueError(
                "ChangeMapObjective needs residual tokens, and this tokenizer makes none: "
                "set model.init_args.residual_objective to null for it"
            )
        target = self.target_maps(tokens, video)
        residual = tokens.tokens[:, positions.to(tokens.tokens.device)]
        prediction = self.head(residual).unflatten(-1, target.shape[2:])
        kept = (~tokens.padding_mask[:, positions.to(tokens.padding_mask.device)]).to(target.dtype)
        kept = kept[:, :, None, None, None]
        error = ((prediction - target).pow(2) * kept).sum()
        return error / (target.pow(2) * kept).sum().clamp(min=1e-12)

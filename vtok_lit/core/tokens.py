"""The token sequence every video tokenizer returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch


class TokenKind(IntEnum):
    """What a token stands for; the LM gets a learned embedding per kind."""

    SPATIAL = 0  # one grid cell of the key frame, all channels
    RESIDUAL = 1  # one later frame (or group of frames) relative to the key frame
    FRAME = 2  # one grid cell of one sampled frame (naive tokenization)


def cell_centres(cells_per_side: int) -> torch.Tensor:
    """``(n * n, 2)`` (x, y) centres in [0, 1] of the cells of an ``n x n`` grid over a frame, row-major:
    where a grid-cell token sits (``VideoTokens.cell_xy``), and where a decoder's patch does."""
    centres = (torch.arange(cells_per_side, dtype=torch.float32) + 0.5) / cells_per_side
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


@dataclass
class VideoTokens:
    """A batch of video token sequences.

    Attributes:
        tokens: ``(B, L, D)`` token vectors.
        kinds: ``(L,)`` long, a :class:`TokenKind` per position.
        frame_index: ``(L,)`` long, the frame each token comes from (the first frame of a group).
        padding_mask: ``(B, L)`` bool, True where a position is padding.
        cell_xy: ``(L, 2)`` float, the (x, y) centre in [0, 1] of the grid cell a token pools, NaN for
            tokens that pool no single cell (residual tokens); None when no token has a cell.
    """

    tokens: torch.Tensor
    kinds: torch.Tensor
    frame_index: torch.Tensor
    padding_mask: torch.Tensor
    cell_xy: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[1]

    def with_tokens(self, tokens: torch.Tensor) -> VideoTokens:
        """The same layout and padding around other ``(B, L, D)`` token vectors."""
        return VideoTokens(tokens, self.kinds, self.frame_index, self.padding_mask, self.cell_xy)

    def select(self, clips: torch.Tensor | list[int]) -> VideoTokens:
        """The tokens of some clips of the batch (indices into its first dimension)."""
        return VideoTokens(
            self.tokens[clips], self.kinds, self.frame_index, self.padding_mask[clips], self.cell_xy
        )

    def with_residuals_from_other_clips(self) -> VideoTokens:
        """Each clip's residual tokens replaced by the next clip's in the batch (the last takes the
        first's): the ablation that shows whether a reader uses what the residual tokens say."""
        residual = (self.kinds == TokenKind.RESIDUAL).to(self.tokens.device)[None, :, None]
        return self.with_tokens(torch.where(residual, self.tokens.roll(1, dims=0), self.tokens))

    def detach(self) -> VideoTokens:
        return VideoTokens(
            self.tokens.detach(), self.kinds, self.frame_index, self.padding_mask, self.cell_xy
        )

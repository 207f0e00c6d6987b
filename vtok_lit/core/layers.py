"""Small building blocks shared by the tokenizers and the video decoders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Sequential):
    """Two linear layers with a GELU between them: ``(..., in_dim) -> (..., out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


class FrameEmbedding(nn.Module):
    """A learned embedding per frame index, for clips of at most ``max_frames`` frames."""

    def __init__(self, max_frames: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.weight = nn.Parameter(init_std * torch.randn(max_frames, dim))

    def forward(self, num_frames: int) -> torch.Tensor:
        """Returns the ``(num_frames, dim)`` embeddings of frames ``0 .. num_frames - 1``."""
        if not 1 <= num_frames <= self.max_frames:
            raise ValueError(
                f"a clip of T={num_frames} frames does not fit max_frames={self.max_frames}: "
                "raise max_frames (a new embedding is learned for each frame index)"
            )
        return self.weight[:num_frames]


class AttentionPooling(nn.Module):
    """Pools ``(N, L, C)`` to ``(N, C)`` with one learned query (single head).

    The query starts at zero, so the pooling starts as a plain mean and learns where to look.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.key = nn.Linear(channels, channels)
        self.query = nn.Parameter(torch.zeros(channels))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        logits = self.key(values) @ self.query / math.sqrt(values.shape[-1])  # (N, L)
        weights = logits.softmax(dim=-1)
        return torch.einsum("nl,nlc->nc", weights, values)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times ``t`` in [0, 1]: ``(B,) -> (B, dim)``.

    ``t`` is scaled by 1000 so that the slowest frequencies still tell apart nearby sampling steps.
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * frequencies[None]
    embedding = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return F.pad(embedding, (0, dim % 2))


class Attention(nn.Module):
    """Multi-head attention from ``(N, Lq, W)`` queries to a ``(N, Lk, W)`` context."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width={width} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        visible: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` to ``context``.

        Args:
            x: ``(N, Lq, W)`` queries.
            context: ``(N, Lk, W)`` keys and values.
            visible: Optional ``(N, Lk)`` bool, False for context positions nobody may attend to.
            bias: Optional float added to the attention logits: ``(Lq, Lk)``, or a shape that
                broadcasts to ``(N, heads, Lq, Lk)``.
        """
        query = self._split_heads(self.query(x))
        key, value = (self._split_heads(t) for t in self.key_value(context).chunk(2, dim=-1))
        attn_mask = None if visible is None else visible[:, None, None, :]
        if bias is not None:
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        return self.out(attended.transpose(1, 2).flatten(2))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (N, heads, L, W / heads)


class FrameQueryBlock(nn.Module):
    """Pre-norm transformer block over frame-factorised queries.

    Queries attend to the other queries of their own frame, then to the whole token sequence, so
    self-attention costs ``T * P^2`` rather than ``(T * P)^2`` while every query still sees every token.
    """

    def __init__(self, width: int, num_heads: int, mlp_ratio: int = 4, conditioned: bool = False) -> None:
        """
        Args:
            width: Width of the queries and the context.
            num_heads: Attention heads.
            mlp_ratio: Hidden width of the MLP over ``width``.
            conditioned: Modulate the three pre-norms of each frame's queries by a per-frame condition
                vector (adaLN, as DiT conditions on its time step). The modulation starts at zero.
        """
        super().__init__()
        self.modulation = nn.Linear(width, 6 * width) if conditioned else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = Attention(width, num_heads)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attention = Attention(width, num_heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio * width, width)

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        visible: torch.Tensor,
        context_bias: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Updates ``(B, T, P, W)`` queries from a ``(B, L, W)`` context.

        ``visible`` is ``(B, L)`` bool; ``context_bias`` an optional cross-attention logit bias,
        ``(T * P, L)`` or any shape that broadcasts to ``(B, heads, T * P, L)``; ``condition`` an
        optional ``(B, T, W)`` vector per frame (for a block built with ``conditioned=True``).
        """
        batch, frames, positions, width = queries.shape
        modulation = None
        if self.modulation is not None and condition is not None:
            modulation = self.modulation(condition)[:, :, None].chunk(6, dim=-1)  # 6 x (B, T, 1, W)

        def normed(norm: nn.LayerNorm, x: torch.Tensor, i: int) -> torch.Tensor:
            if modulation is None:
                return norm(x)
            return norm(x) * (1 + modulation[3 + i]) + modulation[i]

        x = queries
        attended = normed(self.self_norm, x, 0).flatten(0, 1)
        x = x + self.self_attention(attended, attended).view_as(x)
        cross = normed(self.cross_norm, x, 1).reshape(batch, frames * positions, width)
        x = x + self.cross_attention(cross, context, visible, context_bias).view_as(x)
        x = x + self.mlp(normed(self.mlp_norm, x, 2))
        return x

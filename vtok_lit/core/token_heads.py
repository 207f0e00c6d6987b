"""Heads that turn an LM hidden state into the next continuous VTok token.

VTok tokens are vectors, not ids, so the LM's vocabulary logits do not apply: a head reads the hidden
state ``(N, H)`` at a position and either regresses the next token or samples it by rectified flow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.flow_matching import euler_sample, training_point
from vtok_lit.core.layers import MLP, timestep_embedding
from vtok_lit.core.tokens import TokenKind

TokenHeadName = Literal["regression", "flow_matching"]


class TokenHead(nn.Module, ABC):
    """Predicts a ``(N, D)`` token from a ``(N, H)`` hidden state."""

    @abstractmethod
    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of predicting ``target`` ``(N, D)`` from ``hidden`` ``(N, H)``."""

    @abstractmethod
    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A ``(N, D)`` token for each hidden state; ``generator`` (on their device) fixes any noise."""


class RegressionTokenHead(TokenHead):
    """An MLP trained with the MSE to the target: it predicts the mean token, deterministically."""

    def __init__(self, hidden_size: int, token_dim: int, hidden_dim: int = 256) -> None:
        """
        Args:
            hidden_size: Width H of the LM hidden states.
            token_dim: Size D of a video token.
            hidden_dim: Hidden width of the MLP.
        """
        super().__init__()
        self.mlp = MLP(hidden_size, hidden_dim, token_dim)

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.mlp(hidden).float(), target.float())

    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mlp(hidden)


class FlowMatchingTokenHead(TokenHead):
    """A per-token rectified flow conditioned on the hidden state: it samples the token distribution.

    On the path ``x_t = (1 - t) * noise + t * token`` (:mod:`vtok_lit.core.flow_matching`) a small
    residual MLP predicts the velocity ``token - noise`` from ``x_t``, ``t`` and the hidden state.
    Where a caption leaves a token uncertain, regression blurs the choices into their mean; the flow
    picks one of them.
    """

    def __init__(
        self,
        hidden_size: int,
        token_dim: int,
        hidden_dim: int = 256,
        num_blocks: int = 2,
        num_sampling_steps: int = 8,
    ) -> None:
        """
        Args:
            hidden_size: Width H of the LM hidden states.
            token_dim: Size D of a video token.
            hidden_dim: Width of the velocity network.
            num_blocks: Residual MLP blocks of the velocity network.
            num_sampling_steps: Euler steps from noise to token in :meth:`sample`.
        """
        super().__init__()
        if num_sampling_steps < 1:
            raise ValueError(f"num_sampling_steps must be at least 1, got {num_sampling_steps}")
        self.hidden_dim = hidden_dim
        self.num_sampling_steps = num_sampling_steps
        self.token_input = nn.Linear(token_dim, hidden_dim)
        self.condition = nn.Linear(hidden_size, hidden_dim)
        self.time_mlp = MLP(hidden_dim, hidden_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden_dim), MLP(hidden_dim, 2 * hidden_dim, hidden_dim))
            for _ in range(num_blocks)
        )
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.to_velocity = nn.Linear(hidden_dim, token_dim)

    def velocity(self, noisy: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The predicted ``(N, D)`` velocity at points ``noisy`` ``(N, D)`` of times ``t`` ``(N,)``."""
        time = self.time_mlp(timestep_embedding(t, self.hidden_dim).to(noisy.dtype))
        x = self.token_input(noisy) + self.condition(hidden) + time
        for block in self.blocks:
            x = x + block(x)
        return self.to_velocity(self.out_norm(x))

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        noisy, t, target_velocity = training_point(target)
        return F.mse_loss(self.velocity(noisy, t, hidden).float(), target_velocity.float())

    def sample(self, hidden: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return euler_sample(
            lambda x, t: self.velocity(x, t, hidden),
            (len(hidden), self.to_velocity.out_features),
            self.num_sampling_steps,
            hidden,
            generator,
        )


class TokenStandardizer(nn.Module):
    """Z-scores tokens per channel and per token kind with running statistics, so heads work at any
    tokenizer's scale.

    Tokenizer outputs are unnormalised (their scale can reach tens), which would dwarf the flow head's
    unit noise and make the regression loss scale arbitrary. Spatial and residual tokens come from
    different maps (a projected grid cell, ``g_phi`` of a pooled difference) and spread differently
    between clips, so each kind of :class:`TokenKind` has its own statistics: with shared ones the
    residual tokens' spread sat at a fifth of the flow head's unit noise. The statistics average the
    batches seen, and after ``1 / momentum`` of them follow an exponential moving average, which tracks
    a tokenizer that is still training.
    """

    def __init__(self, token_dim: int, momentum: float = 0.01, eps: float = 1e-5) -> None:
        """
        Args:
            token_dim: Size D of a token.
            momentum: Weight of each new batch in the moving averages.
            eps: Added to the variance before the square root.
        """
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        num_kinds = len(TokenKind)
        self.register_buffer("mean", torch.zeros(num_kinds, token_dim))
        self.register_buffer("var", torch.ones(num_kinds, token_dim))
        self.register_buffer("num_updates", torch.zeros(num_kinds, dtype=torch.long))

    @torch.no_grad()
    def update(self, tokens: torch.Tensor, kinds: torch.Tensor) -> None:
        """Fold the statistics of ``(..., L, D)`` tokens of ``(L,)`` kinds into the running ones."""
        for kind in kinds.unique().tolist():
            flat = tokens[..., kinds == kind, :].detach().reshape(-1, tokens.shape[-1]).float()
            # A plain running mean until the average would weigh batches less than ``momentum`` does.
            weight = max(self.momentum, 1.0 / float(self.num_updates[kind] + 1))
            self.mean[kind].lerp_(flat.mean(0), weight)
            self.var[kind].lerp_(flat.var(0, unbiased=False), weight)
            self.num_updates[kind] += 1

    def forward(self, tokens: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Standardised ``(..., L, D)`` tokens of ``(L,)`` kinds."""
        return ((tokens - self.mean[kinds]) * torch.rsqrt(self.var[kinds] + self.eps)).to(tokens.dtype)

    def inverse(self, standardized: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """``(..., L, D)`` tokens of ``(L,)`` kinds back in the tokenizer's scale."""
        scale = torch.sqrt(self.var[kinds] + self.eps)
        return (standardized * scale + self.mean[kinds]).to(standardized.dtype)


def build_token_head(
    name: TokenHeadName, hidden_size: int, token_dim: int, hidden_dim: int, num_sampling_steps: int
) -> TokenHead:
    """The head called ``name``; ``num_sampling_steps`` only concerns the flow-matching head."""
    if name == "regression":
        return RegressionTokenHead(hidden_size, token_dim, hidden_dim)
    if name == "flow_matching":
        return FlowMatchingTokenHead(
            hidden_size, token_dim, hidden_dim, num_sampling_steps=num_sampling_steps
        )
    raise ValueError(f"token_head={name!r}; choose one of {get_args(TokenHeadName)}")

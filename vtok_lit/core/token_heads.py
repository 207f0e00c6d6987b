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

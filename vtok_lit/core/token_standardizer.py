"""Per-kind z-scoring of video tokens, for the parts that read or write them in a scale of their own."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vtok_lit.core.tokens import TokenKind


class TokenStandardizer(nn.Module):
    """Z-scores tokens per channel and per token kind with running statistics, so that what reads or
    writes them works at any tokenizer's scale.

    Tokenizer outputs are unnormalised: their scale can reach tens, or their spread between clips can be
    a tenth of their mean (the tokens of a flow-matching decoder's tokenizer). That would dwarf a flow
    head's unit noise, make a regression loss's scale arbitrary, or leave an LM's projector a small
    signal on a large constant. Spatial and residual tokens come from different maps (a projected grid
    cell, ``g_phi`` of a pooled difference) and spread differently between clips, so each
    :class:`TokenKind` has its own statistics: with shared ones the residual tokens' spread sat at a
    fifth of the flow head's unit noise. The statistics average the batches seen, and after
    ``1 / momentum`` of them follow an exponential moving average, which tracks a tokenizer that is
    still training.

    A model trained before its reader standardised the tokens loads :meth:`fixed_identity_state`: the
    tokens are read as that model was trained to read them.
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
        # Batches folded in per kind; -1 marks statistics held fixed (see the class docstring).
        self.register_buffer("num_updates", torch.zeros(num_kinds, dtype=torch.long))
        # Set by what trains it in several processes: sums a tensor over them (the task modules hand
        # it Lightning's strategy's reduce). None: this process's batch alone.
        self.sum_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, tokens: torch.Tensor, kinds: torch.Tensor) -> None:
        """Fold the statistics of ``(..., L, D)`` tokens of ``(L,)`` kinds into the running ones.

        With :attr:`sum_across_processes` set, they are the statistics of every process's batch
        together, so every process keeps the same ones (those of one process with the whole batch).
        """
        present = [kind for kind in kinds.unique().tolist() if self.num_updates[kind] >= 0]
        if not present:
            return
        flats = [
            tokens[..., kinds == kind, :].detach().reshape(-1, tokens.shape[-1]).float() for kind in present
        ]
        # Two sums over the processes: each kind's count and sum, then its squared deviations from
        # the mean they give (no difference of large sums, so float32 keeps a small spread on a
        # large mean; float64 is not on every accelerator).
        totals = self._sum(
            torch.stack([torch.cat([flat.new_tensor([len(flat)]), flat.sum(0)]) for flat in flats])
        )
        count, batch_mean = totals[:, :1], totals[:, 1:] / totals[:, :1]
        deviations = torch.stack(
            [(flat - mean).square().sum(0) for flat, mean in zip(flats, batch_mean, strict=True)]
        )
        batch_var = self._sum(deviations) / count
        for index, kind in enumerate(present):
            # A plain running mean until the average would weigh batches less than ``momentum`` does.
            weight = max(self.momentum, 1.0 / float(self.num_updates[kind] + 1))
            self.mean[kind].lerp_(batch_mean[index].to(self.mean.dtype), weight)
            self.var[kind].lerp_(batch_var[index].to(self.var.dtype), weight)
            self.num_updates[kind] += 1

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.sum_across_processes is None else self.sum_across_processes(tensor)

    def forward(self, tokens: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """Standardised ``(..., L, D)`` tokens of ``(L,)`` kinds."""
        return ((tokens - self.mean[kinds]) * torch.rsqrt(self.var[kinds] + self.eps)).to(tokens.dtype)

    def inverse(self, standardized: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
        """``(..., L, D)`` tokens of ``(L,)`` kinds back in the tokenizer's scale."""
        scale = torch.sqrt(self.var[kinds] + self.eps)
        return (standardized * scale + self.mean[kinds]).to(standardized.dtype)

    def fixed_identity_state(self) -> dict[str, torch.Tensor]:
        """A state dict of statistics that leave tokens as they are and never update: what a model
        trained before its reader standardised the tokens loads (see the class docstring)."""
        return {
            "mean": torch.zeros_like(self.mean),
            "var": torch.ones_like(self.var),
            "num_updates": torch.full_like(self.num_updates, -1),
        }

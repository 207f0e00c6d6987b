"""Rectified flow, shared by the flow-matching video decoder and the flow-matching token head.

A straight path runs from noise at ``t = 0`` to data at ``t = 1``: ``x_t = (1 - t) * noise + t * data``,
whose velocity is ``data - noise`` everywhere along it. A network learns that velocity from ``x_t`` and
``t`` (and a condition), and sampling integrates it from noise with Euler steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def training_point(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random point on the path of each sample of ``data`` ``(N, ...)``, for the velocity loss.

    Returns:
        ``x_t`` (like ``data``), the times ``t`` ``(N,)`` drawn uniformly from [0, 1), and the target
        velocity ``data - noise`` (like ``data``).
    """
    noise = torch.randn_like(data)
    t = torch.rand(len(data), device=data.device, dtype=data.dtype)
    t_data = t.view(-1, *[1] * (data.dim() - 1))
    return (1 - t_data) * noise + t_data * data, t, data - noise


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    num_steps: int,
    like: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate ``velocity(x_t, t)`` (``t`` of shape ``(N,)``) from noise of ``shape`` ``(N, ...)``
    at ``t = 0`` to ``t = 1`` in ``num_steps`` Euler steps.

    Args:
        velocity: The learned velocity at points ``x_t`` of times ``t``.
        shape: The shape of the samples, N first.
        num_steps: Euler steps.
        like: A tensor whose device and dtype the samples take.
        generator: Fixes the starting noise (on ``like``'s device).
    """
    x = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    step = 1.0 / num_steps
    for i in range(num_steps):
        x = x + step * velocity(x, x.new_full((shape[0],), i * step))
    return x

"""MaskedMeanSquaredError: the error over a pixel mask, every selected pixel weighing alike."""

from __future__ import annotations

import pytest
import torch

from vtok_lit.metrics import MaskedMeanSquaredError


def test_every_selected_pixel_weighs_alike_across_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    metric = MaskedMeanSquaredError()
    predictions, targets, masks = [], [], []
    for keep in (0.05, 0.9):  # a batch with few selected pixels and one with many
        prediction = torch.rand(2, 3, 3, 8, 8, generator=generator)
        target = torch.rand(2, 3, 3, 8, 8, generator=generator)
        mask = torch.rand(2, 3, 1, 8, 8, generator=generator) < keep
        metric.update(prediction, target, mask)
        predictions.append(prediction), targets.append(target), masks.append(mask.expand_as(target))
    selected = torch.cat([(p - t)[m] for p, t, m in zip(predictions, targets, masks, strict=True)])
    assert metric.compute().item() == pytest.approx(selected.pow(2).mean().item(), rel=1e-5)


def test_pixels_outside_the_mask_do_not_count() -> None:
    target = torch.zeros(1, 2, 3, 4, 4)
    prediction = target.clone()
    prediction[:, 1] = 1.0  # every pixel of frame 1 is wrong
    mask = torch.zeros(1, 2, 1, 4, 4, dtype=torch.bool)
    mask[:, 0] = True
    metric = MaskedMeanSquaredError()
    metric.update(prediction, target, mask)
    assert metric.compute().item() == 0.0


def test_a_mask_of_the_wrong_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"mask must be \(B, T, 1, H, W\).*\(1, 2, 3, 4, 4\)"):
        frames = torch.zeros(1, 2, 3, 4, 4)
        MaskedMeanSquaredError().update(frames, frames, torch.ones_like(frames, dtype=torch.bool))

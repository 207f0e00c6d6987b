"""VBench-style temporal metrics: still, smooth, noisy and moving clips read as they should."""

import pytest
import torch

from vtok_lit.metrics import TemporalQuality
from vtok_lit.metrics.temporal_quality import (
    coarse_frames,
    motion_smoothness,
    subject_consistency,
    temporal_flicker,
)

FRAMES, SIDE = 8, 32


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def still_clip() -> torch.Tensor:
    """One random frame held for the whole clip: ``(1, T, 3, H, W)``."""
    return torch.rand(1, 1, 3, SIDE, SIDE, generator=generator()).expand(1, FRAMES, 3, SIDE, SIDE)


def fading_clip() -> torch.Tensor:
    """A random frame blending linearly into grey."""
    weight = torch.linspace(1, 0, FRAMES).view(1, FRAMES, 1, 1, 1)
    return weight * still_clip() + (1 - weight) * 0.5


def moving_clip(noise_std: float = 0.0) -> torch.Tensor:
    """A bright square crossing a grey background 2 px a frame, with fresh pixel noise every frame."""
    clip = torch.full((1, FRAMES, 3, SIDE, SIDE), 0.5)
    for t in range(FRAMES):
        clip[0, t, :, 10:18, 2 + 2 * t : 10 + 2 * t] = 0.9
    clip += noise_std * torch.randn(clip.shape, generator=generator())
    return clip.clamp(0, 1)


def noise_clip() -> torch.Tensor:
    return torch.rand(1, FRAMES, 3, SIDE, SIDE, generator=generator())


def test_a_still_clip_has_no_flicker_no_motion_and_full_consistency() -> None:
    metric = TemporalQuality()
    metric.update(still_clip())
    result = metric.compute()
    expected = {
        "temporal_flicker": 0.0,
        "temporal_flicker_score": 1.0,
        "motion_smoothness": 1.0,
        "subject_consistency": 1.0,
        "dynamic_degree": 0.0,
    }
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name].ndim == 0 and result[name].item() == pytest.approx(value, abs=1e-6), name


def test_steady_change_is_smoother_than_noise() -> None:
    noise = motion_smoothness(noise_clip()).item()
    assert motion_smoothness(fading_clip()).item() == pytest.approx(1.0, abs=1e-6)
    assert motion_smoothness(moving_clip()).item() > noise + 0.1
    assert temporal_flicker(noise_clip()).item() > temporal_flicker(moving_clip()).item()


def test_flicker_is_the_mean_change_between_frames() -> None:
    blinking = torch.zeros(2, FRAMES, 3, 4, 4)
    blinking[0, 1::2] = 1.0
    blinking[1, 1::2] = 0.25
    assert temporal_flicker(blinking).tolist() == [1.0, 0.25]


def test_dynamic_degree_counts_moving_clips_and_ignores_pixel_noise() -> None:
    metric = TemporalQuality()
    still_with_noise = 0.5 + 0.03 * torch.randn(1, FRAMES, 3, SIDE, SIDE, generator=generator())
    metric.update(torch.cat([moving_clip(noise_std=0.03), still_with_noise.clamp(0, 1)]))
    assert metric.compute()["dynamic_degree"].item() == 0.5


def test_subject_consistency_uses_given_frame_features() -> None:
    turning = torch.eye(FRAMES)[None]  # every later frame orthogonal to the first
    assert subject_consistency(torch.ones(1, FRAMES, 5)).item() == pytest.approx(1.0)
    assert subject_consistency(turning).item() == pytest.approx(0.0)
    metric = TemporalQuality()
    metric.update(still_clip(), frame_features=turning)
    assert metric.compute()["subject_consistency"].item() == pytest.approx(0.0)
    assert coarse_frames(still_clip(), cell_size=4).shape == (1, FRAMES, 3 * 8 * 8)


def test_states_add_up_across_processes() -> None:
    """Under DDP every state is summed; merging two halves must give the whole batch's values."""
    clips = torch.cat([still_clip(), fading_clip(), moving_clip(), noise_clip()])
    whole, first, second = TemporalQuality(), TemporalQuality(), TemporalQuality()
    whole.update(clips)
    first.update(clips[:1])
    second.update(clips[1:])
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    for name, value in expected.items():
        assert merged[name].item() == pytest.approx(value.item()), name


@pytest.mark.parametrize(
    ("video", "features", "message"),
    [
        (
            torch.rand(FRAMES, 3, SIDE, SIDE),
            None,
            r"video \(B, T, 3, H, W\) with T >= 3, got \(8, 3, 32, 32\)",
        ),
        (torch.rand(1, 2, 3, SIDE, SIDE), None, r"video \(B, T, 3, H, W\) with T >= 3"),
        (torch.rand(1, FRAMES, 1, SIDE, SIDE), None, r"video \(B, T, 3, H, W\)"),
        (torch.rand(1, FRAMES, 3, SIDE, SIDE), torch.rand(1, FRAMES - 1, 4), r"frame_features \(B, T, D\)"),
    ],
)
def test_wrong_shapes_name_the_expected_shape(
    video: torch.Tensor, features: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TemporalQuality().update(video, frame_features=features)

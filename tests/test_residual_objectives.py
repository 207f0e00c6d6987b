"""The auxiliary objectives on the residual tokens: their targets, their scale, where their gradient goes."""

import pytest
import torch

from vtok_lit.core import (
    ChangeMapObjective,
    ConvFrameEncoder,
    ForegroundMotionObjective,
    KeyFrameTokenizer,
    VTokTokenizer,
)
from vtok_lit.core.residual_objectives import foreground_weights
from vtok_lit.core.video_decoders import RegressionVideoDecoder
from vtok_lit.modules import TokenizerPretraining

SIDE, FRAMES = 32, 5

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_square_clips(batch: int = 2) -> torch.Tensor:
    """``(B, T, 3, 32, 32)``: a bright square on grey, 4 px further right each frame."""
    video = torch.full((batch, FRAMES, 3, SIDE, SIDE), 0.5)
    for clip in range(batch):
        for t in range(FRAMES):
            left = 2 + 3 * clip + 4 * t
            video[clip, t, :, 8:16, left : left + 8] = 0.9
    return video


def tokenizer(**options) -> VTokTokenizer:
    torch.manual_seed(0)
    return VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2, **options)


def test_each_residual_token_targets_the_pooled_change_of_its_frame():
    video = moving_square_clips()
    objective = ChangeMapObjective(token_dim=16, map_size=4)
    targets = objective.target_maps(tokenizer()(video), video)
    assert targets.shape == (2, FRAMES - 1, 3, 4, 4)
    expected = torch.nn.functional.avg_pool2d((video[0, 3] - video[0, 0]), 8)
    torch.testing.assert_close(targets[0, 2], expected)
    # Signed: the square's new place is brighter than before, the place it left darker.
    assert targets[0, 2].max() > 0 > targets[0, 2].min()


def test_a_group_token_targets_the_mean_change_of_its_frames():
    video = moving_square_clips()
    objective = ChangeMapObjective(token_dim=16, map_size=4)
    targets = objective.target_maps(tokenizer(temporal_stride=2)(video), video)
    pooled = torch.nn.functional.avg_pool2d(video[1] - video[1, :1], 8)
    assert targets.shape[1] == 2  # frames 1-2 and 3-4
    torch.testing.assert_close(targets[1, 1], (pooled[3] + pooled[4]) / 2)


def test_predicting_no_change_scores_one_and_the_right_map_zero():
    video = moving_square_clips()
    tokens = tokenizer()(video)
    objective = ChangeMapObjective(token_dim=16, map_size=4)
    torch.nn.init.zeros_(objective.head[-1].weight)
    torch.nn.init.zeros_(objective.head[-1].bias)
    assert objective(tokens, video).item() == pytest.approx(1.0)
    # A head that returns the target exactly (through its bias, one clip) scores 0.
    single = video[:1]
    single_tokens = tokenizer(temporal_stride=FRAMES)(single)
    objective.head[-1].bias.data = objective.target_maps(single_tokens, single)[0, 0].flatten()
    assert objective(single_tokens, single).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(
    "objective", [ChangeMapObjective(token_dim=16, map_size=4), ForegroundMotionObjective(token_dim=16)]
)
def test_its_gradient_reaches_the_frame_encoder_through_the_residual_tokens(objective):
    video = moving_square_clips()
    vtok = tokenizer()
    objective(vtok(video), video).backward()
    encoder_gradient = sum(p.grad.abs().sum() for p in vtok.frame_encoder.parameters() if p.grad is not None)
    assert encoder_gradient > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vtok.residual_mlp.parameters())


def test_a_few_steps_teach_the_residual_tokens_the_change_map():
    """The signal exists and the tokens can carry it: 60 steps on the moving squares halve the error."""
    video = moving_square_clips(batch=4)
    vtok = tokenizer()
    objective = ChangeMapObjective(token_dim=16, map_size=4)
    parameters = [*vtok.parameters(), *objective.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    first = objective(vtok(video), video).item()
    for _ in range(60):
        optimizer.zero_grad()
        error = objective(vtok(video), video)
        error.backward()
        optimizer.step()
    assert error.item() < 0.5 * first


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="map_size"):
        ChangeMapObjective(map_size=0)
    with pytest.raises(ValueError, match="weight"):
        ChangeMapObjective(weight=-1.0)
    with pytest.raises(ValueError, match="weight"):
        ForegroundMotionObjective(weight=-1.0)
    with pytest.raises(ValueError, match="threshold must be in"):
        ForegroundMotionObjective(threshold=1.5)
    video = moving_square_clips()
    with pytest.raises(ValueError, match="map_size=5"):
        ChangeMapObjective(token_dim=16, map_size=5)(tokenizer()(video), video)


@pytest.mark.parametrize(
    "objective", [ChangeMapObjective(token_dim=16, map_size=4), ForegroundMotionObjective(token_dim=16)]
)
def test_a_tokenizer_without_residual_tokens_is_refused_at_setup(objective):
    torch.manual_seed(0)
    key_frame_only = KeyFrameTokenizer(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2)
    module = TokenizerPretraining(
        key_frame_only,
        RegressionVideoDecoder(token_dim=16, image_size=SIDE, patch_size=8, width=16, depth=1),
        residual_objective=objective,
    )
    with pytest.raises(ValueError, match=r"residual_objective .*KeyFrameTokenizer makes none"):
        module.setup("fit")
    video = moving_square_clips()
    with pytest.raises(ValueError, match="needs residual tokens.*residual_objective to null"):
        objective(key_frame_only(video), video)


def coloured_squares(colours: list[tuple[float, float, float]], steps: list[int]) -> torch.Tensor:
    """``(B, T, 3, 32, 32)``: clip b holds one square of ``colours[b]`` on noisy grey, moved
    ``steps[b]`` px right each frame."""
    generator = torch.Generator().manual_seed(0)
    video = 0.5 + 0.03 * torch.randn(len(colours), FRAMES, 3, SIDE, SIDE, generator=generator)
    for clip, (colour, step) in enumerate(zip(colours, steps, strict=True)):
        for t in range(FRAMES):
            left = 12 + step * t
            video[clip, t, :, 12:20, left : left + 8] = torch.tensor(colour)[:, None, None]
    return video.clamp(0, 1)


def test_foreground_targets_are_the_centre_shift_whatever_the_colour_and_the_mass_change():
    """A square moving right on a noisy grey background, dark or bright: the x target is its shift in
    half-frame units, dy and the mass change (nearly) 0; the noise (below the threshold) weighs nothing."""
    video = coloured_squares([(0.9, 0.1, 0.1), (0.1, 0.1, 0.2), (0.2, 0.8, 0.9)], [3, -2, 0])
    assert foreground_weights(video)[:, :, :8].abs().max() == 0  # rows with noise only
    objective = ForegroundMotionObjective(token_dim=16)
    target, weight = objective.targets(tokenizer()(video), video)
    assert target.shape == weight.shape == (3, FRAMES - 1, 3) and (weight == 1).all()
    shifts = torch.arange(1, FRAMES)[None] * torch.tensor([3, -2, 0])[:, None] / (SIDE / 2)
    torch.testing.assert_close(target[..., 0], shifts.float(), atol=1e-4, rtol=0)
    assert target[..., 1].abs().max() < 1e-4 and target[..., 2].abs().max() < 0.02


def test_a_fading_object_lowers_the_mass_target_and_a_group_averages_its_frames():
    video = coloured_squares([(0.9, 0.1, 0.1)], [2])
    for t in range(FRAMES):  # fade toward the grey background
        opacity = 1 - 0.15 * t
        square = video[0, t, :, 12:20]
        square[square != 0.5] = 0.5 + opacity * (square[square != 0.5] - 0.5)
    objective = ForegroundMotionObjective(token_dim=16)
    single, _ = objective.targets(tokenizer()(video), video)
    assert (single[0, :, 2].diff() < 0).all() and single[0, -1, 2] < -0.3
    grouped, _ = objective.targets(tokenizer(temporal_stride=2)(video), video)
    torch.testing.assert_close(grouped[0, 0], single[0, :2].mean(0))
    torch.testing.assert_close(grouped[0, 1], single[0, 2:].mean(0))


def test_predicting_the_batch_mean_scores_one_and_a_linear_read_learns_the_motion():
    """The scale of the error, and the point of the objective: the residual tokens come to say, through
    one linear map, which way a square of any colour moved."""
    colours = [(0.9, 0.1, 0.1), (0.1, 0.1, 0.2), (0.2, 0.8, 0.9), (0.9, 0.9, 0.2)] * 2
    video = coloured_squares(colours, [3, 3, -3, -3, -2, 2, 1, -1])
    vtok = tokenizer(residual_pooling="moments")
    objective = ForegroundMotionObjective(token_dim=16)
    tokens = vtok(video)
    target, weight = objective.targets(tokens, video)
    torch.nn.init.zeros_(objective.head.weight)
    objective.head.bias.data = (target * weight).sum((0, 1)) / weight.sum((0, 1))
    assert objective.target_errors(tokens, video)[0].item() == pytest.approx(1.0)
    optimizer = torch.optim.Adam([*vtok.parameters(), *objective.parameters()], lr=3e-3)
    for _ in range(80):
        optimizer.zero_grad()
        error = objective(vtok(video), video)
        error.backward()
        optimizer.step()
    assert error.item() < 0.2

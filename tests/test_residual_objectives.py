"""The auxiliary objective on the residual tokens: its targets, its scale, where its gradient goes."""

import pytest
import torch

from vtok_lit.core import ChangeMapObjective, ConvFrameEncoder, KeyFrameTokenizer, VTokTokenizer
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


def test_its_gradient_reaches_the_frame_encoder_through_the_residual_tokens():
    video = moving_square_clips()
    vtok = tokenizer()
    ChangeMapObjective(token_dim=16, map_size=4)(vtok(video), video).backward()
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
    video = moving_square_clips()
    with pytest.raises(ValueError, match="map_size=5"):
        ChangeMapObjective(token_dim=16, map_size=5)(tokenizer()(video), video)


def test_a_tokenizer_without_residual_tokens_is_refused_at_setup():
    torch.manual_seed(0)
    module = TokenizerPretraining(
        KeyFrameTokenizer(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2),
        RegressionVideoDecoder(token_dim=16, image_size=SIDE, patch_size=8, width=16, depth=1),
        residual_objective=ChangeMapObjective(token_dim=16, map_size=4),
    )
    with pytest.raises(ValueError, match=r"residual_objective .*KeyFrameTokenizer makes none"):
        module.setup("fit")

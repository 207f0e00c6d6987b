"""Does motion reach the residual tokens, and does the decoder read it back? (At initialisation.)"""

import pytest
import torch

from vtok_lit.core.frame_encoders import ConvFrameEncoder, ViTFrameEncoder
from vtok_lit.core.tokenizers import VTokTokenizer, feature_contrast, position_bases
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import (
    FlowMatchingVideoDecoder,
    RegressionVideoDecoder,
    changed_pixels,
    residual_of_frames,
)
from vtok_lit.data.motionshapes.vocabulary import COLORS

SIZE = 32


def square_clip(shift_x: int, num_frames: int = 2) -> torch.Tensor:
    """``(1, T, 3, 32, 32)``: a red square on grey, moved ``shift_x`` pixels between frames 0 and 1."""
    video = torch.full((1, num_frames, 3, SIZE, SIZE), 0.5)
    for t in range(num_frames):
        left = 10 + t * shift_x
        video[0, t, :, 12:20, left : left + 8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    return video


def residual_token(tokenizer: VTokTokenizer, video: torch.Tensor) -> torch.Tensor:
    tokens = tokenizer(video)
    return tokens.tokens[0, tokens.kinds == TokenKind.RESIDUAL][0]


def conv_vtok(**options) -> VTokTokenizer:
    torch.manual_seed(0)
    return VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=16, grid_size=2, **options)


def test_mean_pooling_of_a_translation_equivariant_encoder_is_blind_to_a_move():
    """The blind spot the position-aware pooling exists for: an 8-px move (two stem patches) with the
    stem alone leaves the mean residual at zero."""
    torch.manual_seed(0)
    stem_only = ConvFrameEncoder(channels=16, patch_size=4, num_blocks=0)
    left, right = stem_only(square_clip(-8)[0]), stem_only(square_clip(8)[0])
    assert (left[1] - left[0]).mean(dim=(-2, -1)).abs().max() < 1e-5
    assert (right[1] - right[0]).mean(dim=(-2, -1)).abs().max() < 1e-5


def pooled_residual(tokenizer: VTokTokenizer, video: torch.Tensor) -> torch.Tensor:
    features = tokenizer.encode_frames(video)
    return tokenizer.pool_positions(features[:, 1:] - features[:, :1], features[:, :1])[0, 0]


@pytest.mark.parametrize("frequencies", [0, 2])
def test_moment_pooling_sees_a_translation_and_its_direction_at_initialisation(frequencies):
    mean = conv_vtok()
    moments = conv_vtok(residual_pooling="moments", fourier_frequencies=frequencies)
    channels = 16
    for shift in (-8, 8):
        x_moment = pooled_residual(moments, square_clip(shift))[channels : 2 * channels]
        assert x_moment.norm() > 5 * pooled_residual(mean, square_clip(shift)).norm()
    # Moving left and moving right give opposite x moments: the token tells the direction.
    left, right = (pooled_residual(moments, square_clip(shift))[channels : 2 * channels] for shift in (-8, 8))
    assert torch.nn.functional.cosine_similarity(left, right, dim=0) < -0.9
    tokens = {shift: residual_token(moments, square_clip(shift)) for shift in (-8, 0, 8)}
    mean_tokens = {shift: residual_token(mean, square_clip(shift)) for shift in (-8, 8)}
    assert (tokens[-8] - tokens[8]).norm() > 5 * (mean_tokens[-8] - mean_tokens[8]).norm()
    assert (tokens[-8] - tokens[0]).norm() > 0 and (tokens[8] - tokens[0]).norm() > 0


def aligned_square_clip(left_end: int, fade_to: float = 1.0) -> torch.Tensor:
    """``(1, 2, 3, 32, 32)``: a red 8 px square filling two 4-px patches a side at x = 8, then at
    ``left_end``, its colour ``fade_to`` of the way from grey (1: unfaded; 0.2: the corpus's faded end)."""
    video = torch.full((1, 2, 3, SIZE, SIZE), 0.5)
    red = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    video[0, 0, :, 12:20, 8:16] = red
    video[0, 1, :, 12:20, left_end : left_end + 8] = 0.5 + fade_to * (red - 0.5)
    return video


def split_parts(tokenizer: VTokTokenizer, video: torch.Tensor) -> torch.Tensor:
    """``(2, 3, C)``: the positive and negative parts' ``1, x, y`` moments of a 2-frame residual."""
    return pooled_residual(tokenizer, video).unflatten(0, (2, 3, -1))


def test_split_moments_keep_where_features_rose_apart_from_where_they_fell():
    """With the linear stem: a square moved 8 px right rises in each channel where it arrived and falls
    where it left (or the other way), the two parts' centres 8 px apart; a square fading in place
    changes one part only, centred on the square. The plain ``x`` moment of that fade points the same
    way in every channel as the move's: it reads as a move."""
    torch.manual_seed(0)
    encoder = ConvFrameEncoder(channels=16, patch_size=4, num_blocks=0)
    split = VTokTokenizer(encoder, token_dim=16, grid_size=2, residual_pooling="split_moments")
    plain = VTokTokenizer(encoder, token_dim=16, grid_size=2, residual_pooling="moments")
    assert split.residual_mlp[0].in_features == 2 * plain.residual_mlp[0].in_features
    moved, faded = aligned_square_clip(16), aligned_square_clip(8, fade_to=0.2)
    for clip in (moved, faded):  # the parts add up to the plain moments
        torch.testing.assert_close(split_parts(split, clip).sum(0).flatten(), pooled_residual(plain, clip))

    mass, x_moment = split_parts(split, moved)[:, 0], split_parts(split, moved)[:, 1]
    responding = mass.abs().amin(0) > 1e-4
    assert responding.sum() >= 8
    centres = x_moment[:, responding] / mass[:, responding]  # (2 parts, channels), x in [-1, 1]
    torch.testing.assert_close((centres[0] - centres[1]).abs(), torch.full_like(centres[0], 0.5))  # 8 px

    fade_parts = split_parts(split, faded)
    fade_mass = fade_parts[:, 0].abs()
    assert (fade_mass.amin(0) < 1e-6).all()  # one part a channel
    fade_centres = fade_parts[:, 1].sum(0) / fade_parts[:, 0].sum(0)
    torch.testing.assert_close(fade_centres[responding], torch.full_like(fade_centres[responding], -0.25))
    plain_move, plain_fade = (
        pooled_residual(plain, clip).unflatten(0, (3, -1))[1] for clip in (moved, faded)
    )
    assert torch.nn.functional.cosine_similarity(plain_move, plain_fade, dim=0) > 0.99


def test_centred_moments_see_a_move_and_not_a_fade_in_place():
    """With the linear stem: about each channel's key-frame centre, a square fading in place has (nearly) no
    ``x`` moment (the plain moment has one, pointing as a move's does), and a square that moves keeps
    the plain one, its mean residual being zero."""
    torch.manual_seed(0)
    encoder = ConvFrameEncoder(channels=16, patch_size=4, num_blocks=0)
    centred = VTokTokenizer(encoder, token_dim=16, grid_size=2, residual_pooling="centred_moments")
    plain = VTokTokenizer(encoder, token_dim=16, grid_size=2, residual_pooling="moments")
    assert centred.residual_mlp[0].in_features == plain.residual_mlp[0].in_features
    moved, faded = aligned_square_clip(16), aligned_square_clip(8, fade_to=0.2)
    assert residual_token(centred, faded).shape == residual_token(plain, faded).shape
    centred_fade, plain_fade = (
        pooled_residual(tokenizer, faded).unflatten(0, (3, -1)) for tokenizer in (centred, plain)
    )
    torch.testing.assert_close(centred_fade[0], plain_fade[0])  # the same means
    assert plain_fade[1].abs().max() > 1e-3
    assert centred_fade[1:].abs().max() < 0.1 * plain_fade[1].abs().max()
    torch.testing.assert_close(pooled_residual(centred, moved), pooled_residual(plain, moved))
    with pytest.raises(ValueError, match="needs the key frame's features"):
        centred.pool_positions(torch.zeros(1, 1, 16, 8, 8))


def test_a_vit_encoder_with_absolute_positions_sees_a_translation_under_mean_pooling():
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(
        ViTFrameEncoder(channels=16, patch_size=4, image_size=SIZE, num_heads=2), token_dim=16, grid_size=2
    )
    still, left, right = (pooled_residual(tokenizer, square_clip(shift)) for shift in (0, -8, 8))
    assert still.norm() == 0
    assert left.norm() > 0.01 and right.norm() > 0.01
    assert torch.nn.functional.cosine_similarity(left, right, dim=0) < 0.5


def coloured_square_clip(shift_x: int, colour: tuple[float, float, float]) -> torch.Tensor:
    """:func:`square_clip` with a square of another colour."""
    video = square_clip(shift_x)
    video[0, :, :, 12:20] = torch.where(
        video[0, :, :, 12:20] == 0.5, 0.5, torch.tensor(colour)[:, None, None].expand(-1, 8, SIZE)
    )
    return video


def x_moments(tokenizer: VTokTokenizer, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The x moments of a 2-frame clip's residual and of its contrast residual, per channel."""
    features = tokenizer.encode_frames(video)
    residual = tokenizer.pool_positions(features[:, 1:] - features[:, :1])[0, 0]
    contrast = feature_contrast(features)
    contrast_residual = tokenizer.pool_positions(contrast[:, 1:] - contrast[:, :1])[0, 0]
    channels = tokenizer.frame_encoder.out_channels
    return residual[channels : 2 * channels], contrast_residual[channels : 2 * channels]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contrast_moments_tell_right_from_left_whatever_the_colour_at_initialisation(seed):
    """A plain residual's x moment is the move times the object's feature difference from the grey
    background, whose sign follows the colour; the contrast residual's has the move's sign in (nearly)
    every channel, for every palette colour, coordinate channels included."""
    torch.manual_seed(seed)
    tokenizer = VTokTokenizer(
        ConvFrameEncoder(channels=16, patch_size=4), token_dim=16, grid_size=2, residual_pooling="moments"
    )
    plain_signs = []
    for colour in COLORS.values():
        for shift in (-8, 8):
            plain, contrast = x_moments(tokenizer, coloured_square_clip(shift, colour))
            assert (contrast.sign() == (1 if shift > 0 else -1)).float().mean() >= 0.85, (colour, shift)
            plain_signs.append(plain.sign() * (1 if shift > 0 else -1))
    # The plain residual's channels do not agree across colours on which sign "right" has.
    agreement = torch.stack(plain_signs).mean(0).abs()
    assert agreement.mean() < 0.8


def test_feature_contrast_is_zero_on_flat_and_ramp_maps_and_marks_a_spot():
    ramp = torch.linspace(-1, 1, 6).expand(6, 6)
    maps = torch.stack([torch.full((6, 6), 0.3), ramp, torch.zeros(6, 6)])[None]  # (1, 3, 6, 6)
    maps[0, 2, 3, 3] = 1.0
    contrast = feature_contrast(maps[None])  # (1, 1, 3, 6, 6): any leading dims
    assert contrast.shape == (1, 1, 3, 6, 6)
    assert contrast[0, 0, 0].abs().max() < 1e-6
    assert contrast[0, 0, 1, :, 1:-1].abs().max() < 1e-6  # the interior of a ramp (coordinate channels)
    assert contrast[0, 0, 2].argmax() == 3 * 6 + 3 and (contrast >= 0).all()


@pytest.mark.parametrize("pooling", ["mean", "attention", "moments", "split_moments", "centred_moments"])
def test_residual_contrast_widens_g_phi_and_changes_only_residual_tokens(pooling):
    plain, with_contrast = (
        conv_vtok(residual_pooling=pooling, residual_contrast=contrast) for contrast in (False, True)
    )
    assert with_contrast.residual_mlp[0].in_features == 2 * plain.residual_mlp[0].in_features
    tokens = with_contrast(square_clip(8, num_frames=3))
    assert tokens.tokens.shape == plain(square_clip(8, num_frames=3)).tokens.shape
    still = with_contrast(square_clip(0, num_frames=3))
    residual = tokens.kinds == TokenKind.RESIDUAL
    assert (tokens.tokens[0, residual] - still.tokens[0, residual]).norm() > 0
    torch.testing.assert_close(tokens.tokens[0, ~residual], still.tokens[0, ~residual])


def test_position_bases_are_constant_then_coordinates_then_fourier():
    bases = position_bases(4, 4, fourier_frequencies=1)
    assert bases.shape == (7, 4, 4)
    torch.testing.assert_close(bases[0], torch.ones(4, 4))
    assert bases[1, 0, 0] < 0 < bases[1, 0, -1]  # x grows to the right
    assert bases[2, 0, 0] < 0 < bases[2, -1, 0]  # y grows downward
    with pytest.raises(ValueError, match="fourier_frequencies=2 needs residual_pooling='moments' or"):
        conv_vtok(fourier_frequencies=2)


@pytest.mark.parametrize(("key_frame", "stride"), [("middle", 3), ("middle", 2), (5, 4), ("first", 3)])
def test_no_residual_group_straddles_the_key_frame(key_frame, stride):
    tokenizer = conv_vtok(key_frame=key_frame, temporal_stride=stride)
    num_frames = 16
    key = tokenizer.key_frame_index(num_frames)
    others, group_of = tokenizer.residual_groups(num_frames)
    for group in group_of.unique():
        members = others[group_of == group]
        assert len(members) <= stride
        assert (members < key).all() or (members > key).all(), members.tolist()
    tokens = tokenizer(torch.rand(1, num_frames, 3, SIZE, SIZE))
    assert len(tokens) == tokenizer.num_tokens(num_frames) == 4 + len(group_of.unique())


def test_each_frame_is_described_by_its_own_groups_residual_token():
    tokenizer = conv_vtok(key_frame="middle", temporal_stride=3)
    tokens = tokenizer(
        torch.rand(1, 16, 3, SIZE, SIZE)
    )  # key 8; groups [0-2] [3-5] [6,7] [9-11] [12-14] [15]
    positions = residual_of_frames(tokens, torch.arange(16))
    starts = [-1 if p < 0 else int(tokens.frame_index[p]) for p in positions]
    assert starts == [0, 0, 0, 3, 3, 3, 6, 6, -1, 9, 9, 9, 12, 12, 12, 15]


def _as_after_training(decoder: torch.nn.Module) -> None:
    """The conditioning layers start at zero (the plain decoder); give them weights, as training would."""
    torch.manual_seed(1)
    for name, parameter in decoder.named_parameters():
        if name.startswith(("blocks.0.modulation", "motion_out")):
            torch.nn.init.normal_(parameter, std=0.5)


def change_per_frame(decoder: torch.nn.Module, tokens: VideoTokens, residual_index: int) -> torch.Tensor:
    """``(T,)`` mean change of each decoded frame when one residual token changes."""
    changed = tokens.tokens.clone()
    changed[0, residual_index] += 3 * torch.randn(
        changed.shape[-1], generator=torch.Generator().manual_seed(2)
    )
    before = decoder.decode(tokens, 4, torch.Generator().manual_seed(0))
    after = decoder.decode(tokens.with_tokens(changed), 4, torch.Generator().manual_seed(0))
    return (after - before).abs().mean(dim=(0, 2, 3, 4))


@pytest.mark.parametrize("decoder_class", [RegressionVideoDecoder, FlowMatchingVideoDecoder])
def test_frame_conditioning_makes_frame_t_respond_to_residual_token_t(decoder_class):
    tokens = conv_vtok()(torch.rand(1, 4, 3, SIZE, SIZE))
    residual_of_frame_2 = int((tokens.kinds == TokenKind.RESIDUAL).nonzero()[1])
    responses = {}
    for enabled in (False, True):
        torch.manual_seed(0)
        decoder = decoder_class(
            token_dim=16, image_size=SIZE, patch_size=8, width=32, depth=1, frame_conditioning=enabled
        )
        _as_after_training(decoder)
        responses[enabled] = change_per_frame(decoder.eval(), tokens, residual_of_frame_2)
    response = responses[True]
    assert response[2] > 5 * response[1] and response[2] > 5 * response[3]
    assert response[2] > 100 * response[0]  # the key frame: no residual token describes it
    assert response[2] > 3 * responses[False][2]  # the direct path adds to cross-attention's


def test_the_motion_field_moves_frame_ts_attention_by_residual_token_t():
    tokens = conv_vtok()(torch.rand(1, 4, 3, SIZE, SIZE))
    residual_of_frame_2 = int((tokens.kinds == TokenKind.RESIDUAL).nonzero()[1])
    torch.manual_seed(0)
    decoder = RegressionVideoDecoder(
        token_dim=16, image_size=SIZE, patch_size=8, width=32, depth=1, motion_field=True
    )
    frames = torch.arange(4)
    index = residual_of_frames(tokens, frames)

    def spatial_bias(video_tokens: VideoTokens) -> torch.Tensor:
        projected = decoder.token_projection(video_tokens.tokens)
        bias = decoder.locality_bias(
            video_tokens, frames, projected, decoder.frame_residual_tokens(projected, index), index
        )
        return bias[0, 0, 0, :, 1:5].unflatten(0, (4, -1))  # (T, P, S): queries to the 4 spatial tokens

    plain = spatial_bias(tokens)
    assert torch.equal(plain[0], plain[2])  # no motion at initialisation: the plain locality bias
    _as_after_training(decoder)
    changed = tokens.tokens.clone()
    changed[0, residual_of_frame_2] += 3 * torch.randn(16)
    moved, moved_again = spatial_bias(tokens), spatial_bias(tokens.with_tokens(changed))
    assert torch.equal(moved[0], plain[0])  # the key frame does not move
    assert not torch.allclose(moved[2], plain[2])
    frame_change = (moved_again - moved).abs().amax(dim=(1, 2))
    assert frame_change[2] > 1e-3 and frame_change[[0, 1, 3]].max() == 0


@pytest.mark.parametrize("decoder_class", [RegressionVideoDecoder, FlowMatchingVideoDecoder])
def test_patch_codes_give_residual_token_t_a_say_in_each_patch_of_frame_t(decoder_class):
    tokens = conv_vtok()(torch.rand(1, 4, 3, SIZE, SIZE))
    torch.manual_seed(0)
    decoder = decoder_class(token_dim=16, image_size=SIZE, patch_size=8, width=32, depth=1, patch_code_dim=4)
    frames = torch.arange(4)
    index = residual_of_frames(tokens, frames)
    projected = decoder.token_projection(tokens.tokens)
    codes = decoder.patch_codes(decoder.frame_residual_tokens(projected, index), index, None)
    assert codes.shape == (1, 4, (SIZE // 8) ** 2, 32)
    assert codes[0, 0].abs().max() == 0  # the key frame has no residual token
    assert not torch.allclose(codes[0, 2, 0], codes[0, 2, 1])  # a code per patch, not one per frame
    dropped = decoder.patch_codes(
        decoder.frame_residual_tokens(projected, index), index, torch.tensor([True])
    )
    assert dropped.abs().max() == 0  # classifier-free guidance's unconditional pass sees none
    decoder.eval()
    with_codes = decoder.decode(tokens, 4, torch.Generator().manual_seed(0))
    torch.nn.init.zeros_(decoder.patch_code_out.weight)
    torch.nn.init.zeros_(decoder.patch_code_out.bias)
    without_codes = decoder.decode(tokens, 4, torch.Generator().manual_seed(0))
    effect = (with_codes - without_codes).abs().amax(dim=(0, 2, 3, 4))
    assert effect[0] == 0 and effect[1:].min() > 0  # frames with a residual token, and only they
    with pytest.raises(ValueError, match="patch_code_dim"):
        decoder_class(token_dim=16, image_size=SIZE, patch_size=8, patch_code_dim=-1)


def test_changed_pixel_weight_weighs_up_the_moving_object():
    video = square_clip(8, num_frames=3)
    changed = changed_pixels(video, 0)
    assert not changed[:, 0].any() and changed[:, 1].any()
    assert changed[:, 1].float().mean() < 0.2  # the square's old and new place, not the background
    tokenizer = conv_vtok()
    tokens = tokenizer(video)
    plain, weighted = (
        RegressionVideoDecoder(
            token_dim=16, image_size=SIZE, patch_size=8, width=32, depth=1, changed_pixel_weight=w
        )
        for w in (0.0, 9.0)
    )
    weighted.load_state_dict(plain.state_dict())
    prediction = plain(tokens, 3)
    error = (prediction - video).pow(2)
    torch.testing.assert_close(plain.loss(tokens, video), error.mean())
    torch.testing.assert_close(weighted.loss(tokens, video), (error * (1 + 9.0 * changed)).mean())


def test_residual_swap_changes_only_residual_tokens():
    tokenizer = conv_vtok()
    tokens = tokenizer(torch.rand(3, 4, 3, SIZE, SIZE))
    swapped = tokens.with_residuals_from_other_clips()
    residual = tokens.kinds == TokenKind.RESIDUAL
    torch.testing.assert_close(swapped.tokens[:, ~residual], tokens.tokens[:, ~residual])
    torch.testing.assert_close(swapped.tokens[1, residual], tokens.tokens[0, residual])
    assert isinstance(swapped, VideoTokens)


@pytest.mark.parametrize("reaches_encoder", [True, False])
def test_residual_encoder_gradient_decides_whether_residual_tokens_train_the_encoder(reaches_encoder):
    torch.manual_seed(0)
    encoder = ConvFrameEncoder(channels=16, patch_size=4)
    tokenizer = VTokTokenizer(encoder, token_dim=32, grid_size=2, residual_encoder_gradient=reaches_encoder)
    tokens = tokenizer(torch.rand(2, 4, 3, 32, 32))
    residual = tokens.tokens[:, tokens.kinds == TokenKind.RESIDUAL]
    residual.pow(2).sum().backward()
    encoder_gradient = sum(p.grad.abs().sum() for p in encoder.parameters() if p.grad is not None)
    assert (encoder_gradient > 0) == reaches_encoder
    # g_phi learns either way.
    assert tokenizer.residual_mlp[0].weight.grad.abs().sum() > 0


def test_detaching_the_residual_path_leaves_the_tokens_unchanged():
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=32, grid_size=2)
    video = torch.rand(2, 4, 3, 32, 32)
    attached = tokenizer(video).tokens
    tokenizer.residual_encoder_gradient = False
    torch.testing.assert_close(tokenizer(video).tokens, attached)

import pytest
import torch

from vtok_lit.core import video_decoders
from vtok_lit.core.frame_encoders import ConvFrameEncoder
from vtok_lit.core.tokenizers import VTokTokenizer
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import LOCALITY_BIAS_FLOOR, FlowMatchingVideoDecoder, RegressionVideoDecoder

TINY = {"token_dim": 16, "image_size": 16, "patch_size": 4, "max_frames": 8, "width": 32, "depth": 1}
DECODERS = [RegressionVideoDecoder, FlowMatchingVideoDecoder]


def random_tokens(batch: int = 2, length: int = 6, seed: int = 0) -> VideoTokens:
    tokens = torch.randn(batch, length, 16, generator=torch.Generator().manual_seed(seed))
    layout = torch.full((length,), TokenKind.SPATIAL)
    return VideoTokens(
        tokens, layout, torch.zeros(length, dtype=torch.long), torch.zeros(batch, length).bool()
    )


def moving_squares() -> torch.Tensor:
    """Two ``(4, 3, 16, 16)`` clips: a red square moving right, a blue one moving down."""
    video = torch.full((2, 4, 3, 16, 16), 0.1)
    for t in range(4):
        video[0, t, 0, 4:10, 2 + 2 * t : 8 + 2 * t] = 1.0
        video[1, t, 2, 2 + 2 * t : 8 + 2 * t, 6:12] = 1.0
    return video


def make(decoder_class, **options):
    torch.manual_seed(0)
    return decoder_class(**TINY, num_heads=2, **options)


@pytest.mark.parametrize("decoder_class", DECODERS)
def test_decode_shapes_and_range(decoder_class):
    decoder = make(decoder_class)
    video = decoder.decode(random_tokens(), num_frames=3)
    assert video.shape == (2, 3, 3, 16, 16)
    assert video.min() >= 0 and video.max() <= 1


@pytest.mark.parametrize("decoder_class", DECODERS)
def test_loss_is_finite_and_reaches_the_tokens(decoder_class):
    decoder = make(
        decoder_class, **({"condition_dropout": 0.0} if decoder_class is FlowMatchingVideoDecoder else {})
    )
    tokens = random_tokens()
    tokens.tokens.requires_grad_(True)
    loss = decoder.loss(tokens, moving_squares())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert tokens.tokens.grad.abs().amax(dim=-1).gt(0).all()  # every token is seen


def _seeded(decoder, generator: torch.Generator) -> dict:
    """The same sampling noise for every call of a flow decoder; nothing for a regression one."""
    if isinstance(decoder, FlowMatchingVideoDecoder):
        return {"generator": generator.manual_seed(0)}
    return {}


@pytest.mark.parametrize("decoder_class", DECODERS)
def test_padded_tokens_are_ignored_and_all_padding_stays_finite(decoder_class):
    decoder = make(decoder_class).eval()
    tokens = random_tokens()
    tokens.padding_mask[:, 4:] = True
    other = random_tokens(seed=1)
    other.tokens[:, :4] = tokens.tokens[:, :4]
    other.padding_mask = tokens.padding_mask
    generator = torch.Generator()
    first = decoder.decode(tokens, 2, **_seeded(decoder, generator))
    torch.testing.assert_close(decoder.decode(other, 2, **_seeded(decoder, generator)), first)
    tokens.padding_mask[:] = True
    assert torch.isfinite(decoder.decode(tokens, 2, **_seeded(decoder, generator))).all()


@pytest.mark.parametrize("key_frame_blend", [False, True])
def test_regression_decoder_overfits_two_clips(key_frame_blend):
    video = moving_squares()
    tokens = random_tokens()
    decoder = make(RegressionVideoDecoder, key_frame_blend=key_frame_blend)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = decoder.loss(tokens, video)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Below what any decoder blind to the tokens can reach: it must tell the two clips apart.
    token_blind_floor = (video - video.mean(dim=0)).square().mean().item()
    assert losses[-1] < 0.2 * losses[0]
    assert losses[-1] < 0.5 * token_blind_floor


def test_tokenizer_and_decoder_train_end_to_end():
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    decoder = make(RegressionVideoDecoder)
    video = moving_squares()
    decoder.loss(tokenizer(video), video).backward()
    for name, parameter in tokenizer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_flow_decode_is_deterministic_given_a_generator():
    decoder = make(FlowMatchingVideoDecoder, num_sampling_steps=4).eval()
    tokens = random_tokens()
    first = decoder.decode(tokens, 2, generator=torch.Generator().manual_seed(7))
    again = decoder.decode(tokens, 2, generator=torch.Generator().manual_seed(7))
    other = decoder.decode(tokens, 2, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_clean_prediction_samples_clean_clips_where_a_narrow_velocity_stays_noisy():
    # TINY embeds patches of 3 * 4 * 4 = 48 values in a width of 32: a predicted velocity cannot carry
    # every pixel's noise back out, a predicted clean clip need not.
    video, tokens = moving_squares(), random_tokens()
    errors = {}
    with pytest.warns(UserWarning, match="width=32 is below the 48 values of a 4x4 patch"):
        make(FlowMatchingVideoDecoder, prediction="velocity")
    for prediction in ("velocity", "clean"):
        decoder = make(
            FlowMatchingVideoDecoder, condition_dropout=0.0, num_sampling_steps=8, prediction=prediction
        )
        optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
        for _ in range(150):
            loss = decoder.loss(tokens, video)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sample = decoder.eval().decode(tokens, 4, generator=torch.Generator().manual_seed(0))
        errors[prediction] = (sample - video).square().mean().item()
    assert errors["clean"] < 0.5 * errors["velocity"], errors
    with pytest.raises(ValueError, match="prediction must be"):
        make(FlowMatchingVideoDecoder, prediction="noise")


def test_flow_classifier_free_guidance():
    unguided = make(FlowMatchingVideoDecoder, num_sampling_steps=4).eval()
    guided = make(FlowMatchingVideoDecoder, num_sampling_steps=4, guidance_scale=3.0).eval()
    tokens = random_tokens()
    samples = [d.decode(tokens, 2, generator=torch.Generator().manual_seed(0)) for d in (unguided, guided)]
    assert samples[1].shape == (2, 2, 3, 16, 16) and torch.isfinite(samples[1]).all()
    assert not torch.allclose(samples[0], samples[1])

    noisy, t = torch.randn(2, 2, 3, 16, 16), torch.tensor([0.2, 0.7])
    conditional = guided.velocity(noisy, t, tokens)
    unconditional = guided.velocity(noisy, t, tokens, drop_condition=torch.ones(2, dtype=torch.bool))
    expected = unconditional + 3.0 * (conditional - unconditional)
    torch.testing.assert_close(guided.guided_velocity(noisy, t, tokens), expected)


def test_flow_condition_dropout_hides_the_tokens_in_training_only():
    decoder = make(FlowMatchingVideoDecoder, condition_dropout=1.0)
    tokens = random_tokens()
    tokens.tokens.requires_grad_(True)
    decoder.loss(tokens, moving_squares()).backward()
    assert tokens.tokens.grad is None or not tokens.tokens.grad.any()
    decoder.eval().loss(tokens, moving_squares()).backward()
    assert tokens.tokens.grad.any()


def test_patchify_round_trip_and_bad_input():
    decoder = make(RegressionVideoDecoder)
    video = torch.rand(2, 3, 3, 16, 16)
    patches = decoder.patchify(video)
    assert patches.shape == (2, 3, 16, 48)
    torch.testing.assert_close(patches[0, 0, 1], video[0, 0, :, 0:4, 4:8].flatten())  # row-major patches
    torch.testing.assert_close(decoder.unpatchify(patches), video)
    with pytest.raises(ValueError, match="image_size=16"):
        decoder.patchify(torch.rand(1, 1, 3, 32, 32))
    with pytest.raises(ValueError, match="image_size=16"):
        decoder.loss(random_tokens(batch=1), torch.rand(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="T=9.*max_frames=8"):
        decoder.decode(random_tokens(), num_frames=9)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        RegressionVideoDecoder(image_size=30, patch_size=8)


def test_inherited_options_are_configurable_through_jsonargparse():
    from jsonargparse import ArgumentParser

    from vtok_lit.core.video_decoders import VideoDecoder

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VideoDecoder, "decoder")
    init_args = {"guidance_scale": 2.0, "width": 64, "num_heads": 2}
    config = parser.parse_object(
        {"decoder": {"class_path": "vtok_lit.core.FlowMatchingVideoDecoder", "init_args": init_args}}
    )
    decoder = parser.instantiate(config).decoder
    assert (decoder.guidance_scale, decoder.width) == (2.0, 64)


def test_frames_per_clip_takes_the_loss_on_a_subset_of_frames() -> None:
    torch.manual_seed(0)
    decoder = RegressionVideoDecoder(
        token_dim=16, image_size=16, patch_size=8, width=16, depth=1, frames_per_clip=2
    )
    tokens = VideoTokens(
        torch.randn(1, 3, 16),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3, dtype=torch.long),
        torch.zeros(1, 3, dtype=torch.bool),
    )
    video = torch.rand(1, 6, 3, 16, 16)
    torch.manual_seed(1)
    loss = decoder.loss(tokens, video)
    torch.manual_seed(1)
    frames = decoder.loss_frames(6, video.device)
    assert frames.tolist() == sorted(frames.tolist()) and len(frames) == 2
    expected = torch.nn.functional.mse_loss(decoder(tokens, 6)[:, frames], video[:, frames])
    torch.testing.assert_close(loss, expected)
    decoder.eval()
    assert decoder.loss_frames(6, video.device) is None


def test_locality_bias_favours_near_cells_and_the_query_frame() -> None:
    decoder = RegressionVideoDecoder(token_dim=16, image_size=32, patch_size=8, width=16, depth=1)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    tokens = tokenizer(torch.rand(1, 4, 3, 32, 32))
    bias = decoder.locality_bias(tokens, torch.arange(4))  # (1, depth, heads, T * P, 1 + L)
    assert bias.shape == (1, 1, 4, 4 * 16, 1 + 4 + 3)
    bias = bias[0, 0, 0].unflatten(0, (4, 16))  # (T, P, 1 + L)
    top_left_patch, top_left_cell, bottom_right_cell = 0, 1, 4
    assert bias[0, top_left_patch, top_left_cell] > bias[0, top_left_patch, bottom_right_cell]
    # Residual tokens (frames 1, 2, 3) are favoured by their own frame's queries, whatever the patch.
    residual_columns = 1 + 4 + torch.arange(3)
    for frame in (1, 2, 3):
        assert bias[frame, :, residual_columns].argmax(-1).eq(frame - 1).all()
    assert torch.isfinite(bias).all()


def test_locality_bias_stops_at_its_floor_without_changing_the_frames(monkeypatch) -> None:
    tokens = vtok_tokens_of(moving_squares())
    decoder = make(RegressionVideoDecoder, locality=40.0)  # far cells 40 x d**2 below the near ones
    with torch.no_grad():
        decoder.to_patches.weight.normal_(std=0.1)
        floored = decoder.locality_bias(tokens, torch.arange(4))
        clip = decoder(tokens, num_frames=4)
        monkeypatch.setattr(video_decoders, "LOCALITY_BIAS_FLOOR", -float("inf"))
        unfloored = decoder.locality_bias(tokens, torch.arange(4))
        reference = decoder(tokens, num_frames=4)
    assert unfloored.min() < 2 * LOCALITY_BIAS_FLOOR and floored.min() == LOCALITY_BIAS_FLOOR
    near = unfloored >= LOCALITY_BIAS_FLOOR
    assert torch.equal(floored[near], unfloored[near])
    torch.testing.assert_close(clip, reference, atol=1e-6, rtol=0)


def test_each_head_and_layer_learns_its_own_locality_strength() -> None:
    video = moving_squares()
    tokens = vtok_tokens_of(video)
    decoder = RegressionVideoDecoder(
        token_dim=16, image_size=16, patch_size=4, width=16, depth=2, num_heads=2
    )
    assert decoder.log_locality.shape == (2, 2)
    with torch.no_grad():
        decoder.to_patches.weight.normal_(std=0.1)
    decoder.loss(tokens, video).backward()
    gradient = decoder.log_locality.grad
    assert gradient.abs().min() > 0 and len(set(gradient.flatten().tolist())) == 4
    # A head set free of the bias reads far cells as easily as near ones; the others still do not.
    with torch.no_grad():
        decoder.log_locality[1, 0] = -30.0
        bias = decoder.locality_bias(tokens, torch.arange(4))[0]  # (depth, heads, T * P, 1 + L)
    assert bias[1, 0].abs().max() < 1e-6 < bias[1, 1].abs().max()
    assert bias[0, 0].abs().max() > 1e-6


def vtok_tokens_of(video: torch.Tensor) -> VideoTokens:
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    return tokenizer(video)


def test_key_frame_blend_copies_the_key_frame_where_its_mask_is_closed() -> None:
    video = moving_squares()
    tokens = vtok_tokens_of(video)
    decoder = make(RegressionVideoDecoder, key_frame_blend=True)
    with torch.no_grad():
        decoder.to_patches.bias[3 * 16 :] = -30.0  # every pixel's mask logit: copy the key frame
        clip = decoder(tokens, num_frames=4)
        torch.testing.assert_close(clip, clip[:, :1].expand_as(clip))
        decoder.to_patches.bias[3 * 16 :] = 30.0  # open: each frame is its own rendering again
        opened = decoder(tokens, num_frames=4)
    assert (opened[:, 1:] - opened[:, :1]).abs().amax() > 1e-4
    torch.testing.assert_close(opened[:, 0], clip[:, 0])  # the key frame is always its own rendering


def test_key_frame_blend_gives_the_same_frames_whichever_others_are_decoded() -> None:
    video = moving_squares()
    tokens = vtok_tokens_of(video)
    decoder = make(RegressionVideoDecoder, key_frame_blend=True)
    with torch.no_grad():
        decoder.to_patches.weight.normal_(std=0.1)  # a mask that differs by pixel and frame
        full = decoder(tokens, num_frames=4)
        part = decoder(tokens, num_frames=4, frames=torch.tensor([1, 3]))  # the key frame not asked for
    torch.testing.assert_close(part, full[:, [1, 3]])


@pytest.mark.parametrize("decoder_class", DECODERS)
@pytest.mark.parametrize("training", [False, True])
def test_loss_and_decode_are_the_loss_and_the_decoded_clip(decoder_class, training) -> None:
    video = moving_squares()
    tokens = vtok_tokens_of(video)
    decoder = make(decoder_class, frames_per_clip=2).train(training)
    renderings = []
    decoder.register_forward_hook(lambda *_: renderings.append(1))
    with torch.no_grad():
        torch.manual_seed(1)
        loss, clip = decoder.loss_and_decode(tokens, video, torch.Generator().manual_seed(2))
        shared = len(renderings)
        torch.manual_seed(1)
        expected_loss = decoder.loss(tokens, video)
        expected_clip = decoder.decode(tokens, 4, torch.Generator().manual_seed(2))
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(clip, expected_clip)
    if decoder_class is RegressionVideoDecoder:
        # In evaluation the loss renders every frame: that rendering is the clip, made once.
        assert shared == (2 if training else 1)

"""Caption contrast: residual tokens matched to their clips' captions."""

import math

import pytest
import torch

from vtok_lit.core import CaptionContrastObjective, ConvFrameEncoder, VideoTokens, VTokTokenizer
from vtok_lit.core.caption_contrast import CaptionEncoder, exchanged_words
from vtok_lit.core.tokens import TokenKind
from vtok_lit.core.video_decoders import RegressionVideoDecoder
from vtok_lit.modules import TokenizerPretraining

pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = [
    "a red square moves left.",
    "a red square moves right.",
    "a blue circle moves up; a red square stays still.",
    "a blue circle stays still; a red square moves up.",
]


GROUPS = [["red", "green", "blue", "yellow"], ["left", "right"], ["up", "down"], ["circle", "square"]]


def small_objective(**options) -> CaptionContrastObjective:
    torch.manual_seed(0)
    return CaptionContrastObjective(
        token_dim=16, embed_dim=16, text_width=32, text_layers=2, text_heads=2, **options
    )


def residual_only_tokens(vectors: torch.Tensor) -> VideoTokens:
    """``(B, R, D)`` vectors as R residual tokens of frames 1..R, the last one padding in clip 0."""
    batch, length, _ = vectors.shape
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[0, -1] = True
    kinds = torch.full((length,), int(TokenKind.RESIDUAL))
    return VideoTokens(vectors, kinds, torch.arange(1, length + 1), padding)


def test_a_caption_reads_the_same_alone_and_beside_a_longer_one():
    encoder = CaptionEncoder(width=32, num_layers=2, num_heads=2, max_bytes=256).eval()
    alone = encoder(CAPTIONS[:1])
    beside = encoder([CAPTIONS[0], CAPTIONS[2]])[:1]
    torch.testing.assert_close(alone, beside)
    assert not torch.allclose(encoder(CAPTIONS[:1]), encoder(CAPTIONS[1:2]), atol=1e-4)


def test_captions_that_differ_only_in_word_order_read_differently():
    encoder = CaptionEncoder(width=32, num_layers=2, num_heads=2, max_bytes=256).eval()
    first, second = encoder(CAPTIONS[2:])  # the same words, the motions on the other object
    assert not torch.allclose(first, second, atol=1e-4)


def test_it_learns_to_pair_clips_with_their_captions_and_not_with_others():
    objective = small_objective()
    generator = torch.Generator().manual_seed(1)
    tokens = residual_only_tokens(torch.randn(4, 3, 16, generator=generator))
    video = torch.zeros(4, 4, 3, 8, 8)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        objective(tokens, video, CAPTIONS).backward()
        optimizer.step()
    with torch.no_grad():
        paired = objective(tokens, video, CAPTIONS).item()
        shuffled = objective(tokens, video, CAPTIONS[1:] + CAPTIONS[:1]).item()
    assert paired < 0.2 < math.log(4) < shuffled


def test_a_hard_negative_exchanges_two_different_words_of_one_group():
    caption = "a yellow square moves down; a blue circle moves up; a red square stays still."
    generator = torch.Generator().manual_seed(0)
    seen = {exchanged_words(caption, GROUPS, generator) for _ in range(40)}
    assert caption not in seen and len(seen) > 3
    for negative in seen:
        assert sorted(negative.split()) == sorted(caption.split())
        changed = [(a, b) for a, b in zip(caption.split(), negative.split(), strict=True) if a != b]
        assert len(changed) == 2 and changed[0] == changed[1][::-1]
        assert any({a.strip(";."), b.strip(";.")} <= set(group) for group in GROUPS for a, b in changed[:1])
    # "Square" twice and nothing else of a group twice: nothing to exchange.
    assert exchanged_words("a square and a square stay still.", GROUPS) is None
    assert exchanged_words("a Red circle is left of a blue one.", [["red", "blue"]]) == (
        "a blue circle is left of a Red one."
    )


def test_with_swap_groups_every_clip_is_scored_against_the_hard_negatives_too():
    objective = small_objective(swap_groups=GROUPS).eval()
    negatives = objective.hard_negatives(CAPTIONS)
    assert negatives == objective.hard_negatives(CAPTIONS)  # fixed in evaluation
    assert len(negatives) == 2  # the one-object captions have no pair to exchange
    # Each caption's only exchange is the other clip's caption: a true caption, not a negative.
    twins = ["a red square and a blue circle.", "a blue square and a red circle."]
    assert small_objective(swap_groups=[["red", "blue"]]).hard_negatives(twins) == []
    generator = torch.Generator().manual_seed(1)
    tokens = residual_only_tokens(torch.randn(4, 3, 16, generator=generator))
    video = torch.zeros(4, 4, 3, 8, 8)
    objective.train()
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    for _ in range(80):
        optimizer.zero_grad()
        objective(tokens, video, CAPTIONS).backward()
        optimizer.step()
    objective.eval()
    with torch.no_grad():
        clips = objective.clip_embeddings(tokens)
        true = (clips * objective.caption_embeddings(CAPTIONS)).sum(-1)
        exchanged = [exchanged_words(c, GROUPS, torch.Generator().manual_seed(2)) or c for c in CAPTIONS]
        other = (clips * objective.caption_embeddings(exchanged)).sum(-1)
    # Without swap_groups the same training leaves margins of -0.07 to 0.37 (three seeds).
    assert (true[2:] - other[2:]).min() > 0.25
    with pytest.raises(ValueError, match=r"swap_groups: .* got \['red'\]"):
        small_objective(swap_groups=[["red"]])


def test_its_gradient_reaches_the_frame_encoder_through_the_residual_tokens():
    objective = small_objective()
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2)
    video = torch.rand(4, 5, 3, 32, 32)
    objective(tokenizer(video), video, CAPTIONS).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tokenizer.frame_encoder.parameters())


def test_a_batch_without_captions_is_refused_by_name():
    objective = small_objective()
    tokens = residual_only_tokens(torch.randn(4, 3, 16))
    video = torch.zeros(4, 4, 3, 8, 8)
    with pytest.raises(ValueError, match="CaptionContrastObjective needs the clips' captions"):
        objective(tokens, video)
    with pytest.raises(ValueError, match="3 captions for 4 clips"):
        objective(tokens, video, CAPTIONS[:3])
    with pytest.raises(ValueError, match="text_width 30 must split into 4 heads"):
        CaptionContrastObjective(token_dim=16, text_width=30, text_heads=4)


def test_pretraining_adds_it_to_the_loss_with_its_weight():
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2)
    decoder = RegressionVideoDecoder(token_dim=16, image_size=32, patch_size=8, width=16, depth=1)
    objective = small_objective()
    module = TokenizerPretraining(tokenizer, decoder, residual_objective=objective)
    video = torch.rand(4, 5, 3, 32, 32)
    torch.manual_seed(1)
    loss, parts = module.training_loss(video, CAPTIONS)
    torch.manual_seed(1)
    reconstruction = decoder.loss(tokenizer(video), video)
    assert set(parts) == {"caption_contrast"}
    torch.testing.assert_close(loss, reconstruction + objective.weight * parts["caption_contrast"])

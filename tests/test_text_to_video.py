"""Text-to-video: token and sequence layout, rollout, the TextToVideo module, and a run that learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import cli_args

from vtok_lit.cli import main
from vtok_lit.core import (
    ConvFrameEncoder,
    FlowMatchingVideoDecoder,
    FrameSamplingTokenizer,
    KeyFrameTokenizer,
    RegressionVideoDecoder,
    TransformerLM,
    VTokTokenizer,
)
from vtok_lit.core.sequences import build_video_generation_sequences
from vtok_lit.core.token_heads import FlowMatchingTokenHead
from vtok_lit.data import write_manifest, write_video
from vtok_lit.data.motionshapes import BACKGROUND, COLORS
from vtok_lit.modules import CheckpointMismatchError, TextToVideo, TokenizerPretraining

CONF = Path(__file__).parent / "conf"
TOKENIZERS = [VTokTokenizer, FrameSamplingTokenizer, KeyFrameTokenizer]
FRAMES, SIDE, TOKEN_DIM, HIDDEN = 4, 32, 16, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_parts(tokenizer_class=VTokTokenizer, decoder_class=RegressionVideoDecoder, max_seq_len=128):
    torch.manual_seed(0)
    tokenizer = tokenizer_class(ConvFrameEncoder(channels=8, patch_size=8), token_dim=TOKEN_DIM, grid_size=2)
    decoder = decoder_class(token_dim=TOKEN_DIM, image_size=SIDE, patch_size=8, width=16, depth=1)
    lm = TransformerLM(hidden_size=HIDDEN, num_layers=1, num_heads=2, max_seq_len=max_seq_len)
    return tokenizer, decoder, lm


def tiny_model(tokenizer_class=VTokTokenizer, decoder_class=RegressionVideoDecoder, **options) -> TextToVideo:
    options = {"freeze_tokenizer": False, "freeze_decoder": False, "decoder_loss_weight": 1.0, **options}
    parts = tiny_parts(tokenizer_class, decoder_class)
    return TextToVideo(*parts, head_hidden_dim=32, num_frames=FRAMES, **options).eval()


@pytest.mark.parametrize("tokenizer_class", TOKENIZERS)
def test_token_layout_is_the_one_tokenize_gives(tokenizer_class) -> None:
    tokenizer = tiny_parts(tokenizer_class)[0]
    tokens = tokenizer(torch.rand(1, FRAMES, 3, SIDE, SIDE))
    kinds, frame_index, cell_xy = tokenizer.token_layout(FRAMES)
    assert len(kinds) == tokenizer.num_tokens(FRAMES)
    assert tokens.kinds.tolist() == kinds.tolist() and tokens.frame_index.tolist() == frame_index.tolist()
    torch.testing.assert_close(tokens.cell_xy, cell_xy, equal_nan=True)


@pytest.mark.parametrize("tokenizer_class", TOKENIZERS)
def test_rollout_writes_the_tokenizers_sequence_length(tokenizer_class) -> None:
    model = tiny_model(tokenizer_class)
    captions = ["a red circle stays still.", "a blue square moves left."]
    tokens = model.model.sample_tokens(captions)
    assert tokens.shape == (2, model.tokenizer.num_tokens(FRAMES), TOKEN_DIM)
    video = model.model.generate(captions)
    assert video.shape == (2, FRAMES, 3, SIDE, SIDE)
    assert video.min() >= 0 and video.max() <= 1


def test_rollout_asks_the_lm_for_the_logits_of_one_position_only() -> None:
    """The token head reads hidden states: the LM's head need not run over the prompt."""
    model = tiny_model()
    lm = model.model.language_model
    kept: list[int] = []
    forward = lm.forward

    def recording_forward(*args, logits_to_keep=0, **kwargs):
        kept.append(logits_to_keep)
        return forward(*args, logits_to_keep=logits_to_keep, **kwargs)

    lm.forward = recording_forward
    torch.manual_seed(0)
    tokens = model.model.sample_tokens(["a red circle stays still."])
    assert len(kept) == tokens.shape[1] and set(kept) == {1}


def test_loss_covers_exactly_the_video_positions() -> None:
    model = tiny_model().model
    length = model.num_video_tokens
    targets = torch.randn(1, length, TOKEN_DIM)
    caption = [model.text_tokenizer.encode("a red circle moves up.")]
    hidden = model.video_hidden_states(targets, caption)
    assert hidden.shape == (1, length, HIDDEN)

    other_caption = model.video_hidden_states(targets, [model.text_tokenizer.encode("a blue square.")])
    assert (other_caption - hidden).abs().amax(dim=-1).gt(1e-6).all(), "a prediction ignores the caption"

    changed = 3  # hidden state i predicts target i, so target 3 may only reach states 4 and later
    edited = targets.clone()
    edited[:, changed] += 1.0
    after = model.video_hidden_states(edited, caption)
    torch.testing.assert_close(after[:, : changed + 1], hidden[:, : changed + 1])
    assert not torch.allclose(after[:, changed + 1], hidden[:, changed + 1])

    last = targets.clone()
    last[:, -1] += 1.0  # the last target is predicted, never read
    torch.testing.assert_close(model.video_hidden_states(last, caption), hidden)
    loss = model.token_head.loss(hidden.flatten(0, 1), targets.flatten(0, 1))
    assert model.token_head.loss(hidden.flatten(0, 1), last.flatten(0, 1)) > loss


def embed(ids: torch.Tensor) -> torch.Tensor:
    return ids[..., None].float().expand(*ids.shape, HIDDEN)


def test_caption_longer_than_the_context_is_cut_from_its_start() -> None:
    begin, video = torch.full((HIDDEN,), -1.0), torch.randn(1, 7, HIDDEN)
    with pytest.warns(UserWarning, match="first 6 tokens are dropped"):
        inputs, mask = build_video_generation_sequences([list(range(100, 110))], begin, video, 8, embed, 12)
    assert inputs.shape == (1, 12, HIDDEN) and mask.all()
    assert inputs[0, :4, 0].tolist() == [106, 107, 108, 109]
    torch.testing.assert_close(inputs[0, 4], begin)
    torch.testing.assert_close(inputs[0, 5:], video[0])

    with pytest.warns(UserWarning, match="frozen tokenizer keeps its random weights"):
        model = TextToVideo(*tiny_parts(max_seq_len=16), num_frames=FRAMES)
    with pytest.warns(UserWarning, match="first 13 tokens are dropped"):  # 7 video tokens, 22 bytes
        model.model.losses(torch.rand(1, FRAMES, 3, SIDE, SIDE), ["a red circle moves up."])


def test_rows_are_left_padded_and_an_empty_caption_is_unconditional() -> None:
    begin = torch.full((HIDDEN,), -1.0)
    inputs, mask = build_video_generation_sequences(
        [[5, 6], []], begin, torch.zeros(2, 0, HIDDEN), 4, embed, 8
    )
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    torch.testing.assert_close(inputs[:, -1], begin.expand(2, -1))


def test_video_that_cannot_fit_names_max_seq_len() -> None:
    parts = tiny_parts(FrameSamplingTokenizer, max_seq_len=12)  # 4 frames x 4 cells = 16 tokens
    options = {"freeze_tokenizer": False, "freeze_decoder": False, "decoder_loss_weight": 1.0}
    with pytest.raises(ValueError, match="16 video tokens .* context of 12; raise the LM's max_seq_len"):
        TextToVideo(*parts, num_frames=FRAMES, **options)


def test_a_decoder_for_tokens_of_another_size_is_named() -> None:
    tokenizer, _, lm = tiny_parts()
    decoder = RegressionVideoDecoder(
        token_dim=2 * TOKEN_DIM, image_size=SIDE, patch_size=8, width=16, depth=1
    )
    with pytest.raises(ValueError, match=r"decoder.init_args.token_dim=32 does not match .*token_dim=16"):
        TextToVideo(tokenizer, decoder, lm, num_frames=FRAMES)


def test_inconsistent_options_are_refused() -> None:
    with pytest.raises(ValueError, match="set freeze_decoder: false"):
        TextToVideo(*tiny_parts(), decoder_loss_weight=1.0, num_frames=FRAMES)
    with pytest.raises(ValueError, match="learns from the decoder loss alone"):
        TextToVideo(*tiny_parts(), freeze_tokenizer=False, num_frames=FRAMES)
    with pytest.raises(ValueError, match="set caption_dropout > 0"):
        tiny_model(guidance_scale=2.0, caption_dropout=0.0)


def save_pretraining_checkpoint(path: Path, tokenizer_class=VTokTokenizer) -> TokenizerPretraining:
    tokenizer, decoder, _ = tiny_parts(tokenizer_class)
    pretraining = TokenizerPretraining(tokenizer, decoder)
    torch.nn.init.normal_(pretraining.decoder.to_patches.weight)  # unlike a fresh decoder
    checkpoint = {"state_dict": pretraining.state_dict()}
    pretraining.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return pretraining


def test_tokenizer_checkpoint_initialises_tokenizer_and_decoder(tmp_path: Path) -> None:
    path = tmp_path / "pretraining.ckpt"
    pretraining = save_pretraining_checkpoint(path)
    model = TextToVideo(*tiny_parts(), tokenizer_checkpoint=str(path), num_frames=FRAMES)
    for part in ("tokenizer", "decoder"):
        saved = getattr(pretraining, part).state_dict()
        for name, value in getattr(model, part).state_dict().items():
            torch.testing.assert_close(value, saved[name], msg=f"{part}.{name}")
        assert not any(p.requires_grad for p in getattr(model, part).parameters()), f"{part} is not frozen"
    with pytest.raises(
        CheckpointMismatchError, match="holds a tokenizer of class VTokTokenizer, but this run's tokenizer is"
    ):
        TextToVideo(*tiny_parts(KeyFrameTokenizer), tokenizer_checkpoint=str(path), num_frames=FRAMES)


def test_guidance_runs_conditional_and_unconditional_rows_in_one_batch() -> None:
    model = tiny_model(
        FrameSamplingTokenizer,
        FlowMatchingVideoDecoder,
        token_head="flow_matching",
        guidance_scale=3.0,
        caption_dropout=0.2,
    ).model
    captions = ["a red circle.", "a green triangle."]
    guided = model.generate(captions, torch.Generator().manual_seed(0))
    assert guided.shape == (2, FRAMES, 3, SIDE, SIDE)
    again = model.generate(captions, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, guided)
    guided_tokens = model.sample_tokens(captions, torch.Generator().manual_seed(0))
    model.guidance_scale = 1.0
    plain_tokens = model.sample_tokens(captions, torch.Generator().manual_seed(0))
    assert guided_tokens.shape == plain_tokens.shape and not torch.allclose(guided_tokens, plain_tokens)


def test_flow_matching_head_trains_and_samples_reproducibly() -> None:
    torch.manual_seed(0)
    head = FlowMatchingTokenHead(HIDDEN, TOKEN_DIM, hidden_dim=32, num_sampling_steps=4)
    hidden = torch.randn(5, HIDDEN)
    head.loss(hidden, torch.randn(5, TOKEN_DIM)).backward()
    assert all(p.grad is not None for p in head.parameters())
    first, again, other = (head.sample(hidden, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert first.shape == (5, TOKEN_DIM)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


def test_fit_and_validate_log_the_benchmark(tmp_path: Path) -> None:
    args = cli_args("generation_tiny.yaml", tmp_path)
    cli = main(["fit", *args])
    metrics = cli.trainer.logged_metrics
    for key in (
        "train/decoder_loss",
        "val/motionshapes/overall",
        "val/motionshapes/color",
        "val/motionshapes_reconstructed/overall",
        "val/vbench/temporal_flicker",
        "val/vbench/subject_consistency",
        "val/psnr_vs_real",
        "val/generation_seconds_per_clip",
    ):
        assert key in metrics, key
    log_dir = Path(cli.trainer.log_dir)
    tags = EventAccumulator(str(log_dir)).Reload().Tags()
    assert {"val/generated/frames", "val/generated/video"} <= set(tags["images"]), tags
    assert any(tag.startswith("val/generated/captions") for tag in tags["tensors"]), tags
    checkpoint = next(log_dir.glob("checkpoints/*.ckpt"))
    validated = main(
        ["validate", *cli_args("generation_tiny.yaml", tmp_path / "again"), f"--ckpt_path={checkpoint}"]
    )
    assert "val/vbench/dynamic_degree" in validated.trainer.callback_metrics
    restored = TextToVideo.load_from_checkpoint(checkpoint, map_location="cpu")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert restored.state_dict().keys() == saved.keys()
    for name, value in restored.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)
    with pytest.raises(
        ValueError, match="data.init_args.num_frames is 8 but model.init_args.num_frames is 4"
    ):
        main(["fit", *args, "--model.init_args.num_frames=4"])


def write_colour_corpus(root: Path) -> Path:
    """One clip per colour and split, each a large still square in the middle: only the colour varies."""
    half = SIDE // 4  # the square covers whole 8-pixel decoder patches
    centre = slice(SIDE // 2 - half, SIDE // 2 + half)
    records = []
    for split in ("train", "val"):
        for colour, rgb in COLORS.items():
            frames = np.full((3, SIDE, SIDE, 3), BACKGROUND)
            frames[:, centre, centre] = rgb
            video = f"{split}_{colour}.mp4"
            write_video(root / video, np.rint(frames * 255).astype(np.uint8), fps=8)
            question = {"question": "What color is the square?", "answer": colour, "category": "color"}
            caption = f"a large {colour} square stays still."
            records.append({"video": video, "caption": caption, "qa": [question], "split": split})
    write_manifest(root / "manifest.jsonl", records)
    return root / "manifest.jsonl"


def colour_tokenizer_checkpoint(tmp_path: Path, data: str) -> Path:
    """A tokenizer and decoder pretrained to rebuild the colour corpus (``data``: its manifest argument)."""
    pretraining = main(
        [
            "fit",
            "-c",
            str(CONF / "generation_learns_tokenizer.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            data,
        ]
    )
    assert pretraining.trainer.callback_metrics["train/loss"] < 2e-3, "the decoder stayed at the mean frame"
    return next(Path(pretraining.trainer.log_dir).rglob("*.ckpt"))


def fit_on_the_colour_corpus(tmp_path: Path, config: str) -> dict[str, float]:
    """The validation metrics of ``tests/conf/<config>`` fitted on the one-attribute colour corpus,
    over a tokenizer pretrained on it first (in tmp_path)."""
    data = f"--data.init_args.manifest={write_colour_corpus(tmp_path)}"
    checkpoint = colour_tokenizer_checkpoint(tmp_path, data)
    cli = main(
        [
            "fit",
            "-c",
            str(CONF / config),
            f"--trainer.default_root_dir={tmp_path / Path(config).stem}",
            f"--model.init_args.tokenizer_checkpoint={checkpoint}",
            data,
        ]
    )
    return {key: round(float(value), 4) for key, value in cli.trainer.callback_metrics.items()}


def test_generates_the_asked_for_colour(tmp_path: Path) -> None:
    metrics = fit_on_the_colour_corpus(tmp_path, "generation_learns.yaml")
    # Four colours: chance is 0.25. The judge reads the colour off the generated frames.
    assert metrics["val/motionshapes/color"] >= 0.75, metrics
    # The decoder renders the real clips' own tokens in their colours: the ceiling is reached.
    assert metrics["val/motionshapes_reconstructed/color"] == 1.0, metrics

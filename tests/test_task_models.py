"""The task models of core, used without a Trainer, and what their LightningModules run per batch."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Sequence

import pytest
import torch

from vtok_lit.core import (
    ConvFrameEncoder,
    KeyFrameTokenizer,
    QuestionRow,
    RegressionVideoDecoder,
    TextToVideoModel,
    TransformerLM,
    VideoQuestionAnswering,
    VTokTokenizer,
)
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.metrics import ClipJudge
from vtok_lit.modules import TextToVideo, TokenizerPretraining, VideoLLM

FRAMES, SIDE = 4, 32

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_tokenizer(tokenizer_class=VTokTokenizer) -> VTokTokenizer:
    return tokenizer_class(ConvFrameEncoder(channels=8, patch_size=8), token_dim=16, grid_size=2)


def tiny_lm() -> TransformerLM:
    return TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=128)


def tiny_decoder() -> RegressionVideoDecoder:
    return RegressionVideoDecoder(token_dim=16, image_size=SIDE, patch_size=8, width=16, depth=1)


def test_core_imports_no_lightning() -> None:
    code = "import sys, vtok_lit.core; print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning'}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_video_question_answering_learns_and_answers_without_a_trainer() -> None:
    torch.manual_seed(0)
    model = VideoQuestionAnswering(tiny_tokenizer(), tiny_lm(), projector_hidden_dim=32, max_answer_tokens=6)
    video = torch.stack([torch.zeros(FRAMES, 3, SIDE, SIDE), torch.ones(FRAMES, 3, SIDE, SIDE)])
    rows = [QuestionRow(0, "What color is it?", "black"), QuestionRow(1, "What color is it?", "white")]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model.loss(model.video_prefix(video), rows)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 10
    # The answer depends on the clip, not only on the question.
    assert model.eval().answer(video, [["What color is it?"]] * 2) == [["black"], ["white"]]


def video_qa_and_tokens(**options) -> tuple[VideoQuestionAnswering, VideoTokens]:
    torch.manual_seed(0)
    model = VideoQuestionAnswering(tiny_tokenizer(), tiny_lm(), projector_hidden_dim=32, **options)
    layout = model.tokenizer(torch.rand(3, FRAMES, 3, SIDE, SIDE))
    return model, layout.with_tokens(torch.randn_like(layout.tokens))  # spread well above eps


def rescaled_per_kind(tokens: VideoTokens) -> VideoTokens:
    """Spatial tokens 10x larger and shifted, residual tokens half as large: another tokenizer's scale."""
    spatial = (tokens.kinds == TokenKind.SPATIAL)[None, :, None]
    return tokens.with_tokens(torch.where(spatial, 10 * tokens.tokens + 3, 0.5 * tokens.tokens))


def test_the_projector_reads_the_video_tokens_standardised_per_kind() -> None:
    model, tokens = video_qa_and_tokens()
    other_scale = copy.deepcopy(model)
    with torch.no_grad():
        prefix = model.train().project_tokens(tokens)  # a training batch sets the statistics
        rescaled = other_scale.train().project_tokens(rescaled_per_kind(tokens))
    assert torch.allclose(prefix, rescaled, atol=1e-4)
    # Validation reads with the statistics of training and leaves them as they are.
    before = model.standardizer.state_dict()
    with torch.no_grad():
        model.eval().project_tokens(rescaled_per_kind(tokens))
    for name, value in model.standardizer.state_dict().items():
        assert torch.equal(value, before[name])

    raw, tokens = video_qa_and_tokens(standardize_tokens=False)
    assert raw.standardizer is None
    with torch.no_grad():
        assert not torch.allclose(raw.project_tokens(tokens), raw.project_tokens(rescaled_per_kind(tokens)))


def test_weights_without_token_statistics_load_as_an_unstandardised_reader() -> None:
    """A model trained before its projector read standardised tokens keeps reading them raw."""
    old, tokens = video_qa_and_tokens(standardize_tokens=False)
    new, _ = video_qa_and_tokens()
    with pytest.warns(UserWarning, match="projector: the weights loaded have no token statistics"):
        new.load_state_dict(old.state_dict())
    with torch.no_grad():
        expected = old.project_tokens(tokens)
        for _ in range(2):  # a training batch leaves the statistics fixed
            assert torch.allclose(new.train().project_tokens(tokens), expected, atol=1e-4)
    assert new.standardizer.num_updates.tolist() == [-1] * len(TokenKind)


def test_text_to_video_model_trains_and_generates_without_a_trainer() -> None:
    torch.manual_seed(0)
    model = TextToVideoModel(
        tiny_tokenizer(),
        tiny_decoder(),
        tiny_lm(),
        num_frames=FRAMES,
        head_hidden_dim=32,
        decoder_loss_weight=1.0,
        freeze_tokenizer=False,
        freeze_decoder=False,
    )
    video = torch.rand(2, FRAMES, 3, SIDE, SIDE)
    losses = model.losses(video, ["a red circle.", "a blue square."])
    assert set(losses) == {"loss", "visual_loss", "decoder_loss"}
    losses["loss"].backward()
    for part in (model.token_head, model.decoder, model.tokenizer.residual_mlp, model.token_projection):
        assert all(p.grad is not None for p in part.parameters()), part
    model.eval()
    clips = model.generate(["a red circle."], torch.Generator().manual_seed(0))
    assert clips.shape == (1, FRAMES, 3, SIDE, SIDE) and 0 <= clips.min() and clips.max() <= 1
    torch.testing.assert_close(model.generate(["a red circle."], torch.Generator().manual_seed(0)), clips)


class CountingFrameEncoder(ConvFrameEncoder):
    """Records how many frames each call encodes."""

    def __init__(self) -> None:
        super().__init__(channels=8, patch_size=8)
        self.calls: list[int] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(frames))
        return super().forward(frames)


class RedJudge(ClipJudge):
    """Answers every question "red"."""

    def can_answer(self, question: str) -> bool:
        return True

    def answer_clips(self, videos: torch.Tensor, questions: Sequence[Sequence[str]]) -> list[list[str]]:
        return [["red"] * len(clip) for clip in questions]


@pytest.mark.parametrize("tokenizer_class", [VTokTokenizer, KeyFrameTokenizer])
def test_a_text_to_video_validation_batch_encodes_each_clip_once(tokenizer_class) -> None:
    torch.manual_seed(0)
    tokenizer = tokenizer_class(CountingFrameEncoder(), token_dim=16, grid_size=2)
    with pytest.warns(UserWarning, match="frozen tokenizer keeps its random weights"):
        module = TextToVideo(tokenizer, tiny_decoder(), tiny_lm(), num_frames=FRAMES, judge=RedJudge())
    module.eval()
    question = {"question": "What color is the circle?", "answer": "red"}
    batch = {
        "video": torch.rand(2, FRAMES, 3, SIDE, SIDE),
        "caption": ["a red circle.", "a red square."],
        "questions": [[question], [question]],
    }
    with torch.no_grad(), pytest.warns(UserWarning, match="self.log"):
        module.validation_step(batch, 0)
    real = 2 * (FRAMES if tokenizer_class is VTokTokenizer else 1)
    # The real clips once (their tokens serve the loss and the judged reconstruction), the generated
    # clips once (their features serve the temporal scores).
    assert tokenizer.frame_encoder.calls == [real, 2 * FRAMES]
    assert module.val_metrics["reconstructed_alignment"].total_all == 2


def test_checkpoint_identity_names_the_components() -> None:
    video_llm = VideoLLM(tiny_tokenizer(KeyFrameTokenizer), tiny_lm(), projector_hidden_dim=32)
    assert video_llm.checkpoint_identity() == {
        "module": "vtok_lit.modules.video_llm.VideoLLM",
        "tokenizer": "KeyFrameTokenizer",
        "frame_encoder": "ConvFrameEncoder",
        "language_model": "TransformerLM",
    }
    pretraining = TokenizerPretraining(tiny_tokenizer(), tiny_decoder())
    assert pretraining.checkpoint_identity() == {
        "module": "vtok_lit.modules.tokenizer_pretraining.TokenizerPretraining",
        "tokenizer": "VTokTokenizer",
        "frame_encoder": "ConvFrameEncoder",
        "decoder": "RegressionVideoDecoder",
    }


@pytest.mark.parametrize("tokenizer_class", [VTokTokenizer, KeyFrameTokenizer])
def test_still_frames_are_other_frames_of_each_clip_rebuilt_from_their_own_tokens(tokenizer_class) -> None:
    torch.manual_seed(0)
    module = TokenizerPretraining(tiny_tokenizer(tokenizer_class), tiny_decoder(), still_frames_per_clip=2)
    video = torch.rand(3, FRAMES, 3, SIDE, SIDE)
    seen = []
    decoder_loss = module.decoder.loss

    def recording_loss(tokens, clips):
        seen.append(clips)
        return decoder_loss(tokens, clips)

    module.decoder.loss = recording_loss
    loss = module.still_frame_loss(video)
    (stills,) = seen
    assert stills.shape == (3 * 2, 1, 3, SIDE, SIDE)  # one-frame clips, two a clip
    key = module.tokenizer.key_frame_index(FRAMES)
    for clip in range(3):
        pair = [
            next(t for t in range(FRAMES) if torch.equal(video[clip, t], still[0]))
            for still in stills[2 * clip : 2 * clip + 2]
        ]
        assert key not in pair and pair[0] != pair[1]
    # The loss is the decoder's on those stills, each from its own frame's tokens only.
    torch.testing.assert_close(loss, decoder_loss(module.tokenizer(stills), stills))
    loss.backward()
    assert module.tokenizer.frame_encoder.stem.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="still_frames_per_clip must not be negative, got -1"):
        TokenizerPretraining(tiny_tokenizer(), tiny_decoder(), still_frames_per_clip=-1)


def test_a_pretraining_fit_with_still_frames_logs_their_loss(tmp_path) -> None:
    from test_cli import cli_args

    from vtok_lit.cli import main

    arguments = cli_args(
        "pretraining_tiny.yaml",
        tmp_path,
        "--data.init_args.num_workers=0",
        "--model.init_args.still_frames_per_clip=1",
        "--trainer.log_every_n_steps=1",
    )
    cli = main(["fit", *arguments])
    logged = cli.trainer.logged_metrics
    assert torch.isfinite(logged["train/still_frame_loss"]) and logged["train/still_frame_loss"] > 0

"""UnifiedVideoModel / UnifiedVideoLM: one LM, one tokenizer, both tasks in every step."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import cli_args, manifest_of
from test_text_to_video import fit_on_the_colour_corpus

from vtok_lit.cli import main
from vtok_lit.core import (
    ConvFrameEncoder,
    QuestionRow,
    RegressionVideoDecoder,
    TransformerLM,
    UnifiedVideoModel,
    VTokTokenizer,
)
from vtok_lit.core.tokens import TokenKind
from vtok_lit.core.unified import GENERATION_MARKER, UNDERSTANDING_MARKER
from vtok_lit.modules import CheckpointMismatchError, TextToVideo, UnifiedVideoLM, VideoLLM

FRAMES, SIDE = 4, 16
CAPTIONS = ["a red circle moves up.", "a blue square stays still."]
ROWS = [
    QuestionRow(0, "How many objects are there?", "1"),
    QuestionRow(1, "What color is the square?", "blue"),
]


def tiny_model(**options) -> UnifiedVideoModel:
    torch.manual_seed(0)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    decoder = RegressionVideoDecoder(token_dim=16, image_size=SIDE, patch_size=4, width=16, depth=1)
    language_model = TransformerLM(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=128)
    settings = {"num_frames": FRAMES, "projector_hidden_dim": 16, "head_hidden_dim": 16, **options}
    return UnifiedVideoModel(tokenizer, decoder, language_model, **settings)


def clips(count: int = 4) -> torch.Tensor:
    return torch.rand(count, FRAMES, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def gradient_norms(model: UnifiedVideoModel, **batch) -> dict[str, float]:
    model.zero_grad()
    torch.manual_seed(2)
    model.losses(clips(), **batch)["loss"].backward()
    parts = {
        "projector": model.understanding.projector,
        "token_head": model.generation.token_head,
        "token_projection": model.generation.token_projection,
        "language_model": model.language_model,
    }
    return {
        name: sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        for name, part in parts.items()
    }


def test_each_task_loss_reaches_its_own_parameters_only() -> None:
    model = tiny_model()
    understanding_only = gradient_norms(model, rows=ROWS, generation_clips=[], captions=[])
    assert understanding_only["projector"] > 0 and understanding_only["language_model"] > 0
    assert understanding_only["token_head"] == 0 and understanding_only["token_projection"] == 0
    generation_only = gradient_norms(model, rows=[], generation_clips=[2, 3], captions=CAPTIONS)
    assert generation_only["token_head"] > 0 and generation_only["language_model"] > 0
    assert generation_only["projector"] == 0


def test_the_two_tasks_share_one_tokenizer_and_one_lm() -> None:
    model = tiny_model()
    assert model.understanding.tokenizer is model.generation.tokenizer
    assert model.understanding.language_model is model.generation.language_model
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(id(p) for p in model.parameters()))  # each shared weight once


@pytest.mark.parametrize("weights", [(1.0, 1.0, 0.0), (0.5, 2.0, 0.7)])
def test_mixed_batch_loss_is_the_weighted_sum_of_the_single_task_losses(weights) -> None:
    understanding_weight, visual_weight, decoder_weight = weights
    model = tiny_model(
        understanding_loss_weight=understanding_weight,
        visual_loss_weight=visual_weight,
        decoder_loss_weight=decoder_weight,
        freeze_decoder=decoder_weight == 0,
    ).eval()
    video = clips()

    def losses(*batch) -> dict[str, torch.Tensor]:
        torch.manual_seed(3)  # the flow-matching head draws its noise and times: the same draws each call
        return model.losses(video, *batch)

    mixed = losses(ROWS, [2, 3], CAPTIONS)
    understanding = losses(ROWS, [], [])
    generation = losses([], [2, 3], CAPTIONS)
    expected = (
        understanding_weight * understanding["understanding_loss"] + visual_weight * generation["visual_loss"]
    )
    if decoder_weight:
        expected = expected + decoder_weight * generation["decoder_loss"]
        assert torch.allclose(mixed["decoder_loss"], generation["decoder_loss"])
    assert torch.allclose(mixed["loss"], expected, atol=1e-6)
    assert torch.allclose(mixed["understanding_loss"], understanding["understanding_loss"])
    assert torch.allclose(mixed["visual_loss"], generation["visual_loss"])


def test_generation_rows_are_the_separate_models_rows_of_the_same_clips() -> None:
    """Generation clips are tokenized with the whole batch, and scored as if tokenized alone."""
    model = tiny_model().eval()
    video = clips()
    torch.manual_seed(3)
    together = model.losses(video, ROWS, [2, 3], CAPTIONS)["visual_loss"]
    torch.manual_seed(3)
    alone = model.generation.losses(video[2:], CAPTIONS)["visual_loss"]
    assert torch.allclose(together, alone, atol=1e-6)


def test_task_markers_open_each_row_and_change_the_prediction() -> None:
    model = tiny_model().eval()
    text = model.understanding.text_tokenizer
    assert model.understanding.task_marker_ids == text.encode(UNDERSTANDING_MARKER)
    assert model.generation.caption_ids(["x"]) == [text.encode(GENERATION_MARKER + "x")]
    # A dropped caption keeps the marker: the unconditional row is still a generation row.
    assert model.generation.caption_ids(["x"], dropout=0.999) == [text.encode(GENERATION_MARKER)]
    video = clips(2)
    prefix = model.understanding.project_tokens(model.tokenizer(video))
    with torch.no_grad():
        marked = model.understanding.logits(prefix, ROWS)[0][:, -1]
        model.understanding.task_marker_ids = []
        unmarked = model.understanding.logits(prefix, ROWS)[0][:, -1]
    assert not torch.allclose(marked, unmarked)
    unmarked_model = tiny_model(task_markers=False)
    assert unmarked_model.understanding.task_marker_ids == [] == unmarked_model.generation.task_marker_ids


def test_a_batch_needs_a_task_and_one_caption_per_written_clip() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="question rows or generation clips"):
        model.losses(clips(), [], [], [])
    with pytest.raises(ValueError, match="2 generation clips but 1 captions"):
        model.losses(clips(), ROWS, [2, 3], CAPTIONS[:1])


def test_fit_and_validate_log_both_benchmark_loops(tmp_path: Path) -> None:
    main(["fit", *cli_args("unified_tiny.yaml", tmp_path)])
    (events,) = (tmp_path / "runs" / "tiny_unified").rglob("events.out.tfevents.*")
    scalars = set(EventAccumulator(str(events)).Reload().Tags()["scalars"])
    for name in ("understanding_loss", "visual_loss", "decoder_loss"):
        assert f"train/{name}" in scalars
    for key in (
        "val/motionshapes/understanding/overall",
        "val/motionshapes/understanding/counting",
        "val/motionshapes/generation/overall",
        "val/motionshapes/generation_reconstructed/overall",
        "val/psnr_vs_real",
        "val/vbench/temporal_flicker",
        "val/generation_seconds_per_clip",
        "val/accuracy",
        "val/alignment",
    ):
        assert key in scalars, key
    (checkpoint,) = (tmp_path / "runs" / "tiny_unified").rglob("*.ckpt")
    main(["validate", *cli_args("unified_tiny.yaml", tmp_path), f"--ckpt_path={checkpoint}"])
    # A VideoLLM started from it builds its tokenizer as the unified run saved it, with its weights.
    language_model = TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=256)
    understanding = VideoLLM(
        language_model=language_model, projector_hidden_dim=32, init_checkpoint=str(checkpoint)
    )
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in understanding.model.tokenizer.state_dict().items():
        assert torch.equal(value, saved[f"model.understanding.tokenizer.{name}"]), name


# Weights moving between the task modules ------------------------------------------------------------


def tiny_parts(hidden_size: int = 16) -> dict:
    torch.manual_seed(0)
    return {
        "tokenizer": VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2),
        "language_model": TransformerLM(hidden_size=hidden_size, num_layers=1, num_heads=2, max_seq_len=128),
    }


def tiny_decoder() -> RegressionVideoDecoder:
    return RegressionVideoDecoder(token_dim=16, image_size=SIDE, patch_size=4, width=16, depth=1)


def tiny_module(cls, seed: int = 0, hidden_size: int = 16, **options):
    """A task module of random weights (different for each seed), or of those of init_checkpoint."""
    parts = tiny_parts(hidden_size)
    if cls is not VideoLLM:
        parts["decoder"] = tiny_decoder()
        options = {"num_frames": FRAMES, "head_hidden_dim": 16, **options}
    if cls is not TextToVideo:
        options = {"projector_hidden_dim": 16, **options}
    torch.manual_seed(seed)
    module = cls(**parts, **options)
    if options.get("init_checkpoint") is None:
        for parameter in module.model.parameters():  # every weight differs from another seed's
            parameter.data = torch.randn_like(parameter) * 0.1
    return module


def save_checkpoint(module, path: Path) -> str:
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save({"state_dict": checkpoint["state_dict"], "vtok_lit": checkpoint["vtok_lit"]}, path)
    return str(path)


def answer_logits(model, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(model.project_tokens(model.tokenizer(video)), ROWS)[0]


def written_loss(model, video: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return model.losses(video, CAPTIONS)["visual_loss"]


def test_unified_checkpoint_initialises_each_single_task_module(tmp_path: Path) -> None:
    unified = tiny_module(UnifiedVideoLM).eval()
    path = save_checkpoint(unified, tmp_path / "unified.ckpt")
    video = clips(2)
    understanding = tiny_module(
        VideoLLM, seed=1, init_checkpoint=path, task_marker=UNDERSTANDING_MARKER
    ).eval()
    assert torch.equal(
        answer_logits(understanding.model, video), answer_logits(unified.model.understanding, video)
    )
    generation = tiny_module(TextToVideo, seed=1, init_checkpoint=path, task_marker=GENERATION_MARKER).eval()
    assert torch.equal(written_loss(generation.model, video), written_loss(unified.model.generation, video))
    assert understanding.hparams["init_checkpoint"] is None  # its own checkpoints hold the weights


def test_single_task_checkpoint_initialises_the_shared_parts_of_a_unified_module(tmp_path: Path) -> None:
    understanding = tiny_module(VideoLLM, task_marker=UNDERSTANDING_MARKER).eval()
    path = save_checkpoint(understanding, tmp_path / "video_llm.ckpt")
    parts = {**tiny_parts(), "decoder": tiny_decoder()}
    torch.manual_seed(1)  # as tiny_module builds it, without loading or randomising weights
    fresh = UnifiedVideoLM(**parts, num_frames=FRAMES, head_hidden_dim=16, projector_hidden_dim=16)
    token_head = fresh.model.generation.token_head.state_dict()
    unified = tiny_module(UnifiedVideoLM, seed=1, init_checkpoint=path).eval()
    video = clips(2)
    assert torch.equal(
        answer_logits(unified.model.understanding, video), answer_logits(understanding.model, video)
    )
    # The generation task shares the LM it was given; its own head keeps the weights it was built with.
    assert unified.model.generation.language_model is unified.model.understanding.language_model
    for name, value in unified.model.generation.token_head.state_dict().items():
        assert torch.equal(value, token_head[name])


def test_a_checkpoint_without_token_statistics_initialises_a_module_that_reads_tokens_as_it_did(
    tmp_path: Path,
) -> None:
    """A VideoLLM of before standardised tokens (none in its checkpoint) starts another as it was."""
    old = tiny_module(VideoLLM, standardize_tokens=False).eval()
    path = save_checkpoint(old, tmp_path / "video_llm.ckpt")
    with pytest.warns(UserWarning, match="no token statistics"):
        new = tiny_module(VideoLLM, seed=1, init_checkpoint=path).eval()
    video = clips(2)
    assert torch.allclose(answer_logits(new.model, video), answer_logits(old.model, video), atol=1e-4)
    # A checkpoint of the other task gives only the tokenizer and LM: the statistics stay to be learned.
    path = save_checkpoint(tiny_module(TextToVideo), tmp_path / "text_to_video.ckpt")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no token statistics")
        fresh = tiny_module(VideoLLM, seed=1, init_checkpoint=path)
    assert fresh.model.standardizer.num_updates.tolist() == [0] * len(TokenKind)
    # Refused for another reason, the statistics it would have filled in are not named as missing.
    with pytest.raises(CheckpointMismatchError, match="other shapes") as refusal:
        tiny_module(VideoLLM, hidden_size=32, init_checkpoint=str(tmp_path / "video_llm.ckpt"))
    assert "standardizer" not in str(refusal.value)


def test_weights_that_do_not_fit_are_refused_with_the_keys_named(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_module(UnifiedVideoLM), tmp_path / "unified.ckpt")
    with pytest.raises(
        CheckpointMismatchError, match=r"other shapes: language_model\.token_embedding\.weight"
    ):
        tiny_module(VideoLLM, hidden_size=32, init_checkpoint=path)
    pretraining = {
        "state_dict": {"tokenizer.x": torch.zeros(1)},
        "vtok_lit": {"module": "vtok_lit.modules.tokenizer_pretraining.TokenizerPretraining"},
    }
    torch.save(pretraining, tmp_path / "pretraining.ckpt")
    with pytest.raises(CheckpointMismatchError, match="goes to model.init_args.tokenizer_checkpoint"):
        tiny_module(VideoLLM, init_checkpoint=str(tmp_path / "pretraining.ckpt"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_short_fit_learns_to_answer_and_to_write_the_colour(tmp_path: Path) -> None:
    metrics = fit_on_the_colour_corpus(tmp_path, "unified_learns.yaml")
    # Four colours: chance is 0.25 for the answer and for the judge's reading of the written clip.
    assert metrics["val/motionshapes/understanding/color"] >= 0.75, metrics
    assert metrics["val/motionshapes/generation/color"] >= 0.75, metrics


def test_clips_without_questions_are_an_error_unless_every_clip_is_written(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    manifest = f"--data.init_args.manifest={manifest_of(tmp_path, tiny_corpus, (), with_qa=False)}"
    with pytest.raises(ValueError, match=r"UnifiedVideoLM learns from.*no clip of split 'train'"):
        main(["fit", *cli_args("unified_tiny.yaml", tmp_path, manifest)])
    main(
        ["fit", *cli_args("unified_tiny.yaml", tmp_path, manifest, "--model.init_args.generation_share=1.0")]
    )

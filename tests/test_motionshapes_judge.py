"""The MotionShapes judge: it answers real, decoded clips like the corpus does, and fails safe."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_CORPUS

from vtok_lit.data.dataset import VideoTextDataset, collate_video_text
from vtok_lit.data.manifest import read_manifest
from vtok_lit.data.motionshapes import QUESTION_CATEGORIES, SHAPES, MotionShapesJudge, generate_motionshapes
from vtok_lit.data.motionshapes.judge import UNKNOWN
from vtok_lit.data.motionshapes.vocabulary import COLORS
from vtok_lit.metrics import CategoryAccuracy
from vtok_lit.metrics.structural_similarity import gaussian_blur

JUDGE_CORPUS = replace(TINY_CORPUS, num_train=120, num_val=30, seed=3)
# Below this in any category, the judge, not the generator, is what the benchmark would measure.
MIN_ACCURACY = 0.95


@pytest.fixture(scope="module")
def judge_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_motionshapes(tmp_path_factory.mktemp("judge_corpus"), JUDGE_CORPUS, processes=2)


@pytest.fixture(scope="module")
def decoded(judge_manifest: Path) -> dict:
    """Every clip of the judge corpus, decoded from mp4 at the corpus's 64 px, as one batch."""
    return read_batch(judge_manifest, image_size=64)


def read_batch(manifest: Path, image_size: int, limit: int | None = None) -> dict:
    dataset = VideoTextDataset(read_manifest(manifest)[:limit], num_frames=16, image_size=image_size)
    return collate_video_text([dataset[index] for index in range(len(dataset))])


def judge_accuracy(batch: dict) -> dict[str, float]:
    questions = [[pair["question"] for pair in clip] for clip in batch["questions"]]
    answers = MotionShapesJudge().answer_clips(batch["video"], questions)
    accuracy = CategoryAccuracy(QUESTION_CATEGORIES)
    for clip, clip_answers in zip(batch["questions"], answers, strict=True):
        accuracy.update(
            [pair["category"] for pair in clip],
            [answer == pair["answer"] for pair, answer in zip(clip, clip_answers, strict=True)],
        )
    return {category: float(value) for category, value in accuracy.compute().items()}


def test_judge_answers_decoded_clips_like_the_corpus(decoded: dict) -> None:
    accuracy = judge_accuracy(decoded)
    assert set(accuracy) == {*QUESTION_CATEGORIES, "overall"}
    assert min(accuracy.values()) >= MIN_ACCURACY, accuracy


def test_judge_reads_blurred_clips(decoded: dict) -> None:
    # A decoder's reconstruction is softer than the real clip: the judge must still read shapes a person
    # reads at once, so that a low score on reconstructions is the decoder's, not the judge's.
    accuracy = judge_accuracy({**decoded, "video": gaussian_blur(decoded["video"].float(), sigma=1.0)})
    assert min(accuracy.values()) >= MIN_ACCURACY, accuracy


@pytest.mark.parametrize("image_size", [32, 96])
def test_judge_reads_clips_resized_to_other_sides(judge_manifest: Path, image_size: int) -> None:
    accuracy = judge_accuracy(read_batch(judge_manifest, image_size=image_size, limit=30))
    assert min(accuracy.values()) >= MIN_ACCURACY, accuracy


def test_an_object_in_another_shape_is_unknown(decoded: dict) -> None:
    judge = MotionShapesJudge()
    for video, meta in zip(decoded["video"][:4], decoded["meta"][:4], strict=True):
        obj = meta["objects"][0]
        other_shape = next(shape for shape in SHAPES if shape != obj["shape"])
        assert judge.answer(video, f"What size is the {obj['color']} {obj['shape']}?") == obj["size"]
        assert judge.answer(video, f"What size is the {obj['color']} {other_shape}?") == UNKNOWN


def test_shapes_reads_each_colour_and_by_colour_names_objects_of_any_shape(decoded: dict) -> None:
    judge, by_colour = MotionShapesJudge(), MotionShapesJudge(name_by_shape=False)
    for video, meta in zip(decoded["video"][:4], decoded["meta"][:4], strict=True):
        assert judge.shapes(video) == {obj["color"]: obj["shape"] for obj in meta["objects"]}
        obj = meta["objects"][0]
        other_shape = next(shape for shape in SHAPES if shape != obj["shape"])
        question = f"What size is the {obj['color']} {other_shape}?"
        assert by_colour.answer(video, question) == obj["size"]
        # A colour the clip does not hold is still unknown.
        missing = next(color for color in COLORS if color not in judge.shapes(video))
        assert by_colour.answer(video, f"What size is the {missing} {obj['shape']}?") == UNKNOWN


def test_an_empty_clip_has_no_objects_and_unknown_answers() -> None:
    grey = (0.5 + 0.03 * torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    judge = MotionShapesJudge()
    assert judge.answer(grey, "How many objects are there?") == "0"
    questions = [
        "Which way does the red circle move?",
        "At the end, is the red circle left of or right of the blue square?",
        "At the end, is the red circle above or below the blue square?",
        "What size is the green triangle?",
        "What color is the square?",
        "What happens to the yellow square?",
        "Is the blue triangle moving or still?",
    ]
    assert judge.answer_clips(grey[None], [questions]) == [[UNKNOWN] * len(questions)]


def test_unknown_questions_and_bad_videos_are_named_in_the_error() -> None:
    judge = MotionShapesJudge()
    video = torch.full((4, 3, 64, 64), 0.5)
    for question in ("What is the meaning of life?", "What size is the purple circle?"):
        with pytest.raises(ValueError, match=question.replace("?", r"\?")):
            judge.answer(video, question)
    with pytest.raises(ValueError, match="What is"):
        judge.answer_clips(video[None], [["How many objects are there?", "What is it?"]])
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\).*\(4, 3, 16, 16\)"):
        judge.answer(torch.full((4, 3, 16, 16), 0.5), "How many objects are there?")
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        judge.answer_clips(video[None], [[], []])

"""A user's own manifest through every module: free-form and missing categories, multiple choice,
captions without questions, and captions of another benchmark than the judge's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import cli_args

from vtok_lit.cli import main
from vtok_lit.data import write_manifest, write_video

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
FRAMES, SIDE = 8, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def write_clip(path: Path, seed: int) -> None:
    """A square sliding right over noise: not a MotionShapes clip."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(FRAMES, SIDE, SIDE, 3), dtype=np.uint8)
    for t in range(FRAMES):
        frames[t, 10:18, 2 + 2 * t : 10 + 2 * t] = (200, 40 * seed % 256, 90)
    write_video(path, frames, fps=8)


# Per split, four clips: free-form categories, no category, multiple choice, a caption alone. Four
# clips make one batch of the tiny configs, so one validation batch holds every kind.
QUESTIONS = [
    [
        {"question": "What is the person doing?", "answer": "jumping", "category": "action"},
        {"question": "Where is this?", "answer": "a kitchen", "category": "scene"},
    ],
    [{"question": "How many squares are there?", "answer": "one"}],
    [
        {
            "question": "Which way does it move?",
            "answer": "B",
            "options": ["left", "right"],
            "category": "action",
        },
        {"question": "What colour is it?", "answer": "red", "options": ["green", "red", "blue"]},
    ],
    [],
]


def write_user_manifest(root: Path, questions: list[list[dict]] = QUESTIONS) -> Path:
    records = []
    for split in ("train", "val"):
        for index, qa in enumerate(questions):
            video = f"clips/{split}_{index}.mp4"
            (root / "clips").mkdir(parents=True, exist_ok=True)
            write_clip(root / video, index)
            caption = f"a red square slides right over noise, take {index}."
            records.append({"video": video, "caption": caption, "qa": qa, "split": split})
    write_manifest(root / "manifest.jsonl", records)
    return root / "manifest.jsonl"


def shipped_monitor(config: str) -> str:
    """The key the shipped config's ModelCheckpoint monitors."""
    callbacks = yaml.safe_load((EXPERIMENTS / config).read_text())["trainer"]["callbacks"]
    return next(c["init_args"]["monitor"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint"))


def test_understanding_scores_free_form_categories_and_multiple_choice(tmp_path: Path) -> None:
    data = f"--data.init_args.manifest={write_user_manifest(tmp_path / 'data')}"
    cli = main(["fit", *cli_args("understanding_tiny.yaml", tmp_path, data)])
    logged = set(cli.trainer.logged_metrics)
    expected = {
        f"val/motionshapes/{name}"
        for name in (
            "action",
            "scene",
            "overall",
            "overall_raw",
            "multiple_choice_generated",
            "multiple_choice_likelihood",
        )
    }
    assert expected <= logged, logged
    assert not {key for key in logged if key.endswith(("/counting", "/color"))}, logged
    assert shipped_monitor("understanding.yaml") in logged
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    again = cli_args("understanding_tiny.yaml", tmp_path / "again", data)
    validated = main(["validate", *again, f"--ckpt_path={checkpoint}"])
    assert expected <= set(validated.trainer.callback_metrics)


def test_understanding_without_any_category_reports_overall(tmp_path: Path) -> None:
    plain = [[{key: qa[key] for key in ("question", "answer")} for qa in clip] for clip in QUESTIONS[:2]]
    data = f"--data.init_args.manifest={write_user_manifest(tmp_path / 'data', plain)}"
    cli = main(
        ["validate", *cli_args("understanding_tiny.yaml", tmp_path, data, "--model.init_args.benchmark=mine")]
    )
    accuracy = {key for key in cli.trainer.callback_metrics if key.startswith("val/mine/")}
    assert accuracy == {"val/mine/overall", "val/mine/overall_raw"}


@pytest.mark.parametrize(
    "questions", [QUESTIONS, [[]] * len(QUESTIONS)], ids=["user_questions", "captions_only"]
)
def test_generation_validates_on_captions_of_any_data(tmp_path: Path, questions: list[list[dict]]) -> None:
    data = f"--data.init_args.manifest={write_user_manifest(tmp_path / 'data', questions)}"
    cli = main(["fit", *cli_args("generation_tiny.yaml", tmp_path, data)])
    logged = set(cli.trainer.logged_metrics)
    for key in ("val/loss", "val/psnr_vs_real", "val/vbench/temporal_flicker", "val/vbench/dynamic_degree"):
        assert key in logged, key
    # The MotionShapes judge reads none of these questions: no alignment figure at all, not 0%.
    assert not {key for key in logged if key.startswith("val/motionshapes")}, logged
    assert shipped_monitor("generation.yaml") in logged
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    validated = main(
        ["validate", *cli_args("generation_tiny.yaml", tmp_path / "again", data), f"--ckpt_path={checkpoint}"]
    )
    assert "val/vbench/motion_smoothness" in validated.trainer.callback_metrics


def test_generation_judges_only_the_judges_own_questions(tmp_path: Path) -> None:
    # One MotionShapes question among the user's: the judge answers it and skips the others.
    mixed = [
        QUESTIONS[0] + [{"question": "How many objects are there?", "answer": "1", "category": "counting"}]
    ]
    mixed += QUESTIONS[1:]
    data = f"--data.init_args.manifest={write_user_manifest(tmp_path / 'data', mixed)}"
    cli = main(["validate", *cli_args("generation_tiny.yaml", tmp_path, data)])
    alignment = {key for key in cli.trainer.callback_metrics if key.startswith("val/motionshapes/")}
    assert alignment == {
        "val/motionshapes/counting",
        "val/motionshapes/overall",
        "val/motionshapes/overall_raw",
    }
    no_judge = main(
        [
            "validate",
            *cli_args("generation_tiny.yaml", tmp_path / "no_judge", data, "--model.init_args.judge=null"),
        ]
    )
    assert not {key for key in no_judge.trainer.callback_metrics if key.startswith("val/motionshapes")}
    assert "val/psnr_vs_real" in no_judge.trainer.callback_metrics


def test_understanding_refuses_training_data_without_questions(tmp_path: Path) -> None:
    data = f"--data.init_args.manifest={write_user_manifest(tmp_path / 'data', [[]] * 2)}"
    with pytest.raises(ValueError, match=r"no clip of split 'train' .* in .*manifest.jsonl has any"):
        main(["fit", *cli_args("understanding_tiny.yaml", tmp_path, data)])

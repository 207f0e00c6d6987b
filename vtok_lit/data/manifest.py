"""JSONL manifests: one line per clip, naming its video, caption, questions and split.

A line looks like::

    {"video": "clips/000.mp4", "caption": "a red circle moves left",
     "qa": [{"question": "...", "answer": "...", "category": "direction"}], "split": "train"}

``qa`` and ``split`` are optional (the split defaults to ``"train"``), other keys are kept as the
record's ``meta``, and a relative video path is relative to the manifest's folder. ``start`` and
``end`` (seconds, optional) name a segment of a longer video: frames are sampled inside it. A
multiple-choice question carries ``options`` (a list of at least two distinct strings) and its
``answer`` is an option's letter (``"A"``, ``"B"``, ...) or its text::

    {"question": "What does the man do?", "options": ["sits", "runs"], "answer": "B"}
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SPLIT = "train"
_KNOWN_KEYS = ("video", "caption", "qa", "split", "start", "end")
OPTION_LETTERS = string.ascii_uppercase


class ManifestError(ValueError):
    """A manifest is missing or one of its lines is malformed."""


@dataclass(frozen=True)
class QAPair:
    """One question about a clip.

    Attributes:
        question: The question text.
        answer: The expected answer text.
        category: What the question tests (e.g. ``"direction"``), None when the manifest gives none.
        options: The choices of a multiple-choice question, None for an open one; ``answer`` is
            then one of them or its letter (``"A"`` the first).
    """

    question: str
    answer: str
    category: str | None = None
    options: tuple[str, ...] | None = None

    @property
    def answer_index(self) -> int | None:
        """Position of the correct option (the answer as a letter or as an option's text); None
        for an open-ended question."""
        return None if self.options is None else option_index(self.answer, self.options)


@dataclass
class ManifestRecord:
    """One clip of a manifest.

    Attributes:
        video: The video file, resolved against the manifest's folder.
        caption: The caption text.
        qa: Questions about the clip.
        split: The split the clip belongs to, e.g. ``"train"``.
        start: Start of the segment of the video the record is about, in seconds; None: the start.
        end: End of the segment (exclusive), in seconds; None: the end of the video.
        line: 1-based line number in the manifest.
        manifest: The manifest file the record comes from, None for a record made in code.
        meta: Every other key of the line, as parsed.
    """

    video: Path
    caption: str
    qa: list[QAPair] = field(default_factory=list)
    split: str = DEFAULT_SPLIT
    start: float | None = None
    end: float | None = None
    line: int = 0
    manifest: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """Where the record comes from, for error messages: ``"<manifest> line <n>"``."""
        return f"{self.manifest} line {self.line}" if self.manifest else f"record of {self.video}"


def read_manifest(path: str | os.PathLike) -> list[ManifestRecord]:
    """Parse a JSONL manifest; blank lines are ignored.

    Raises:
        ManifestError: The file is missing or not UTF-8, a line is not a JSON object, or a key is
            missing or has the wrong type; the message names the file, the line and the key.
    """
    manifest = Path(path).absolute()
    try:
        raw = manifest.read_bytes()
    except FileNotFoundError as err:
        raise ManifestError(f"manifest not found: {manifest}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line_number = raw.count(b"\n", 0, err.start) + 1
        raise ManifestError(
            f"{manifest} line {line_number}: not UTF-8 text (byte "
            f"0x{raw[err.start]:02x} at column {err.start - line_start + 1}); save the manifest as UTF-8"
        ) from None
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(_parse_line(line, manifest, line_number))
    return records


def _parse_line(line: str, manifest: Path, line_number: int) -> ManifestRecord:
    where = f"{manifest} line {line_number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from err
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    video = _string(entry, "video", where, required=True)
    if not video:
        raise ManifestError(f"{where}: key 'video' is empty")
    qa_entries = entry.get("qa", [])
    if not isinstance(qa_entries, list):
        raise ManifestError(f"{where}: key 'qa' must be a list, got {qa_entries!r}")
    qa = [_parse_qa(item, f"{where}: qa[{i}]") for i, item in enumerate(qa_entries)]
    split = _string(entry, "split", where, required=False) or DEFAULT_SPLIT
    start, end = _seconds(entry, "start", where), _seconds(entry, "end", where)
    if start is not None and end is not None and end <= start:
        raise ManifestError(f"{where}: segment end {end} must be after start {start}")
    return ManifestRecord(
        video=manifest.parent / video,
        caption=_string(entry, "caption", where, required=True),
        qa=qa,
        split=split,
        start=start,
        end=end,
        line=line_number,
        manifest=manifest,
        meta={key: value for key, value in entry.items() if key not in _KNOWN_KEYS},
    )


def _parse_qa(item: Any, where: str) -> QAPair:
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: expected an object with 'question' and 'answer', got {item!r}")
    answer = _string(item, "answer", where, required=True)
    return QAPair(
        question=_string(item, "question", where, required=True),
        answer=answer,
        category=_string(item, "category", where, required=False),
        options=_options(item, answer, where),
    )


def _options(item: dict[str, Any], answer: str, where: str) -> tuple[str, ...] | None:
    options = item.get("options")
    if options is None:  # an open question; a record written back by write_manifest says null
        return None
    if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        raise ManifestError(f"{where}: key 'options' must be a list of strings, got {options!r}")
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise ManifestError(
            f"{where}: key 'options' needs 2 to {len(OPTION_LETTERS)} options, got {len(options)}"
        )
    if len(set(options)) != len(options):
        raise ManifestError(f"{where}: key 'options' repeats an option: {options!r}")
    try:
        option_index(answer, options)
    except ValueError as err:
        raise ManifestError(f"{where}: {err}") from err
    return tuple(options)


def option_index(answer: str, options: Sequence[str]) -> int:
    """The option a multiple-choice answer names: its text (case aside) or its letter, ``"A"`` the first.

    Raises:
        ValueError: The answer names no option.
    """
    wanted = answer.strip().casefold()
    for index, option in enumerate(options):
        if option.strip().casefold() == wanted:
            return index
    if len(wanted) == 1 and 0 <= ord(wanted) - ord("a") < len(options):
        return ord(wanted) - ord("a")
    letters = f"A-{chr(ord('A') + len(options) - 1)}"
    raise ValueError(f"answer {answer!r} is neither one of the options {options} nor a letter {letters}")


def _seconds(entry: dict[str, Any], key: str, where: str) -> float | None:
    if key not in entry:
        return None
    value = entry[key]
    # bool is an int to Python, but `"start": true` is a mistake, not second 1.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0:
        raise ManifestError(f"{where}: key '{key}' must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _string(entry: dict[str, Any], key: str, where: str, required: bool) -> str | None:
    if key not in entry:
        if required:
            raise ManifestError(f"{where}: missing key '{key}'")
        return None
    value = entry[key]
    if not isinstance(value, str):
        raise ManifestError(f"{where}: key '{key}' must be a string, got {value!r}")
    return value


def write_manifest(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records (dicts in the manifest's line format) as a JSONL manifest, one per line."""
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")

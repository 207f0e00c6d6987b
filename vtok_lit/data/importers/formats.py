"""Readers of the common video data set formats, each giving :class:`Entry` records in manifest form.

A reader never raises on a bad entry: it returns an :class:`Entry` with the problem, so the import
report counts and names it. Video paths are made absolute against ``video_dir``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vtok_lit.data.importers.check import Entry

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
# ActivityNet-QA's question and answer types (MILVLG/activitynet-qa, dataset/README.md).
ACTIVITYNET_QA_TYPES = (
    "motion",
    "spatial",
    "temporal",
    "yes/no",
    "color",
    "object",
    "location",
    "number",
    "other",
)
_MEDIA_TOKENS = re.compile(r"<(video|image)>")


class SourceError(ValueError):
    """A source file that cannot be read at all (missing, not JSON, not a list)."""


class BadEntry(ValueError):
    """One entry of a source that cannot become a record; the message says why."""


def load_json_list(path: Path) -> list[Any]:
    """A JSON file holding a list (or a JSONL file of objects)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SourceError(f"source not found: {path}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise SourceError(f"{path}: invalid JSON: {err.msg} at line {err.lineno}") from err
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _field(item: Any, key: str) -> str:
    """``item[key]`` as text; raises :class:`BadEntry` naming the key."""
    if not isinstance(item, dict):
        raise BadEntry(f"expected an object, got {item!r:.60}")
    if key not in item or item[key] is None:
        raise BadEntry(f"missing key {key!r}")
    value = item[key]
    if isinstance(value, (dict, list)):
        raise BadEntry(f"key {key!r} must be text, got {value!r:.60}")
    return str(value).strip()


def _entries(items: list[Any], source: Path, parse: Callable[[Any], dict[str, Any]]) -> list[Entry]:
    entries = []
    for number, item in enumerate(items, start=1):
        where = f"{source} entry {number}"
        try:
            entries.append(Entry(where, parse(item)))
        except BadEntry as err:
            entries.append(Entry(where, problem=str(err)))
    return entries


def read_llava(source: Path, video_dir: Path) -> list[Entry]:
    """LLaVA-style video conversations: ``[{"video": ..., "conversations": [{"from": "human",
    "value": "<video>\\nQ"}, {"from": "gpt", "value": "A"}, ...]}]``; each human turn and the reply
    after it become a question. The records have an empty caption."""

    def parse(item: Any) -> dict[str, Any]:
        video = _field(item, "video")
        turns = item.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise BadEntry("key 'conversations' must be a non-empty list")
        qa = []
        for question, answer in zip(turns[::2], turns[1::2], strict=False):
            if _field(question, "from") != "human" or _field(answer, "from") != "gpt":
                raise BadEntry("turns must alternate 'human' then 'gpt'")
            text = _MEDIA_TOKENS.sub("", _field(question, "value")).strip()
            qa.append({"question": text, "answer": _field(answer, "value")})
        if not qa:
            raise BadEntry("no human turn with a reply")
        return {"video": str(video_dir / video), "caption": "", "qa": qa}

    return _entries(load_json_list(source), source, parse)


def read_webvid(
    source: Path, video_dir: Path, video_template: str = "{videoid}.mp4", caption_column: str = "name"
) -> list[Entry]:
    """WebVid-style CSV: one row a clip; the video file is ``video_template`` filled from the row's
    columns (e.g. ``"{page_dir}/{videoid}.mp4"``), the caption the ``caption_column``."""
    try:
        with open(source, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError as err:
        raise SourceError(f"source not found: {source}") from err
    entries = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{source} line {number}"
        try:
            video = video_template.format(**row)
        except KeyError as err:
            entries.append(
                Entry(where, problem=f"video_template names column {err.args[0]!r}, not in the CSV")
            )
            continue
        caption = (row.get(caption_column) or "").strip()
        if not caption:
            entries.append(Entry(where, problem=f"empty or missing caption column {caption_column!r}"))
            continue
        entries.append(Entry(where, {"video": str(video_dir / video), "caption": caption}))
    return entries


def _group_by_video(entries: list[Entry]) -> list[Entry]:
    """Merge the questions of entries about the same video (and segment) into one record."""
    merged: dict[tuple[str, Any, Any], Entry] = {}
    out = []
    for entry in entries:
        if entry.record is None:
            out.append(entry)
            continue
        key = (entry.record["video"], entry.record.get("start"), entry.record.get("end"))
        if key in merged:
            merged[key].record["qa"] += entry.record["qa"]
        else:
            merged[key] = entry
            out.append(entry)
    return out


def _question_word(question: str) -> str | None:
    """MSRVTT-QA and MSVD-QA report accuracy by question word (what, who, how, when, where)."""
    words = question.lower().split()
    return words[0] if words and words[0] in ("what", "who", "how", "when", "where", "why", "which") else None


def read_msrvtt_qa(source: Path, video_dir: Path, video_map: Path | None = None) -> list[Entry]:
    """MSRVTT-QA / MSVD-QA style: ``[{"video_id": 7010, "question": ..., "answer": ...}]``. MSR-VTT
    videos are ``video<id>.mp4``; MSVD's are named through ``video_map`` (lines ``<file stem>
    vid<id>``, MSVD-QA's ``youtube_mapping.txt``). The category is the question word."""
    names = _read_video_map(video_map) if video_map else None

    def parse(item: Any) -> dict[str, Any]:
        video_id = _field(item, "video_id")
        if names is not None:
            stem = names.get(f"vid{video_id}") or names.get(video_id)
            if stem is None:
                raise BadEntry(f"video_id {video_id} is not in {video_map}")
            video = _find_video(video_dir, stem)
        else:
            video = str(video_dir / f"{video_id if video_id.startswith('video') else 'video' + video_id}.mp4")
        question = _field(item, "question")
        pair = {"question": question, "answer": _field(item, "answer")}
        category = _question_word(question)
        return {"video": video, "caption": "", "qa": [{**pair, "category": category} if category else pair]}

    return _group_by_video(_entries(load_json_list(source), source, parse))


def _read_video_map(path: Path) -> dict[str, str]:
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            names[parts[1]] = parts[0]
    return names


def _find_video(video_dir: Path, stem: str) -> str:
    """The video named ``stem`` with any common suffix (the first that exists, else ``.avi``)."""
    for suffix in VIDEO_SUFFIXES:
        if (video_dir / f"{stem}{suffix}").is_file():
            return str(video_dir / f"{stem}{suffix}")
    return str(video_dir / f"{stem}.avi")


def read_activitynet_qa(source: Path, video_dir: Path, answers: Path | None = None) -> list[Entry]:
    """ActivityNet-QA: questions ``[{"video_name", "question", "question_id"}]`` joined by
    ``question_id`` with ``answers`` (``[{"question_id", "answer", "type"}]``), or entries that
    carry their ``answer`` themselves. Videos are ``v_<video_name>`` with a common suffix; the
    category is the question type name."""
    by_id = {}
    if answers is not None:
        for item in load_json_list(answers):
            if isinstance(item, dict) and "question_id" in item:
                by_id[str(item["question_id"])] = item

    def parse(item: Any) -> dict[str, Any]:
        name = _field(item, "video_name")
        if by_id:
            question_id = _field(item, "question_id")
            if question_id not in by_id:
                raise BadEntry(f"question_id {question_id} has no answer in {answers}")
            item = {**by_id[question_id], **item}
        pair = {"question": _field(item, "question"), "answer": _field(item, "answer")}
        kind = item.get("type")
        if isinstance(kind, int) and 0 <= kind < len(ACTIVITYNET_QA_TYPES):
            pair["category"] = ACTIVITYNET_QA_TYPES[kind]
        stem = name if name.startswith("v_") else f"v_{name}"
        return {"video": _find_video(video_dir, stem), "caption": "", "qa": [pair]}

    return _group_by_video(_entries(load_json_list(source), source, parse))


def read_mvbench(source: Path, video_dir: Path, category: str | None = None) -> list[Entry]:
    """MVBench-style multiple choice: ``[{"video", "question", "candidates": [...], "answer": text,
    "start"?, "end"?}]``. The category is ``category`` or the file's stem (MVBench has one file a
    task); the answer is kept as the option text."""
    task = category or source.stem

    def parse(item: Any) -> dict[str, Any]:
        video = _field(item, "video")
        options = item.get("candidates") if isinstance(item, dict) else None
        if not isinstance(options, list) or len(options) < 2:
            raise BadEntry("key 'candidates' must list at least two options")
        options = [str(option).strip() for option in options]
        answer = _field(item, "answer")
        if answer not in options:
            raise BadEntry(f"answer {answer!r} is not one of the candidates {options}")
        record = {
            "video": str(video_dir / video),
            "caption": "",
            "qa": [
                {"question": _field(item, "question"), "options": options, "answer": answer, "category": task}
            ],
        }
        for bound in ("start", "end"):
            if item.get(bound) is not None:
                try:
                    record[bound] = float(item[bound])
                except (TypeError, ValueError):
                    raise BadEntry(f"key {bound!r} must be seconds, got {item[bound]!r}") from None
        return record

    return _group_by_video(_entries(load_json_list(source), source, parse))


def read_caption_folder(source: Path) -> list[Entry]:
    """A folder (searched recursively) of videos, each with a caption in a ``.txt`` file of the same
    stem beside it: ``clips/dog.mp4`` + ``clips/dog.txt``."""
    if not source.is_dir():
        raise SourceError(f"not a folder: {source}")
    entries = []
    videos = sorted(path for path in source.rglob("*") if path.suffix.lower() in VIDEO_SUFFIXES)
    for video in videos:
        caption_file = video.with_suffix(".txt")
        if not caption_file.is_file():
            entries.append(Entry(str(video), problem=f"no caption file {caption_file.name}"))
            continue
        caption = caption_file.read_text(encoding="utf-8").strip()
        if not caption:
            entries.append(Entry(str(video), problem=f"empty caption file {caption_file.name}"))
            continue
        entries.append(Entry(str(video), {"video": str(video.absolute()), "caption": caption}))
    stems = {video.with_suffix("") for video in videos}
    for caption_file in sorted(source.rglob("*.txt")):
        if caption_file.with_suffix("") not in stems:
            entries.append(Entry(str(caption_file), problem="caption file without a video"))
    return entries

"""Checking imported records against their videos, and the report of what was kept and dropped."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtok_lit.data.manifest import write_manifest
from vtok_lit.data.video_io import (
    FrameSampling,
    VideoDecodeError,
    VideoTooShortError,
    check_frame_sampling,
    read_clip,
)


@dataclass
class Entry:
    """One record read from a source file, or the reason it could not be read.

    Attributes:
        where: Where it comes from, for the report: ``"<source> line 3"`` or ``"<source> entry 5"``.
        record: The manifest line (``"video"`` an absolute path), None when ``problem`` says why not.
        problem: Why the entry is unusable, None when it is usable so far.
    """

    where: str
    record: dict[str, Any] | None = None
    problem: str | None = None


@dataclass(frozen=True)
class ClipSampling:
    """The frames training will ask of each clip: an import keeps only clips that have them.

    Attributes:
        num_frames: Frames sampled from each clip.
        frame_sampling: ``"uniform"``, ``"stride"`` or ``"fps"``.
        frame_stride: Step between frames for ``"stride"``.
        target_fps: Frame rate for ``"fps"``.
    """

    num_frames: int = 16
    frame_sampling: FrameSampling = "uniform"
    frame_stride: int = 1
    target_fps: float | None = None

    def __post_init__(self) -> None:
        check_frame_sampling(self.num_frames, self.frame_sampling, self.frame_stride, self.target_fps)


@dataclass
class ImportReport:
    """What an import kept and dropped, and why."""

    source: str
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[str, str, str]] = field(default_factory=list)  # (where, reason, detail)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (where, warning) of kept records

    def text(self) -> str:
        """The report as printed: counts, reasons, then every dropped entry and note."""
        questions = sum(len(record.get("qa", [])) for record in self.kept)
        total = len(self.kept) + len(self.dropped)
        lines = [f"{self.source}: kept {len(self.kept)} of {total} records ({questions} questions)"]
        splits = Counter(record.get("split", "train") for record in self.kept)
        if splits:
            lines.append(
                "  splits: " + ", ".join(f"{name} {count}" for name, count in sorted(splits.items()))
            )
        if self.dropped:
            reasons = Counter(reason for _, reason, _ in self.dropped)
            lines.append(
                f"  dropped {len(self.dropped)}: "
                + ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
            )
            lines += [f"  dropped {where}: {reason}: {detail}" for where, reason, detail in self.dropped]
        lines += [f"  note {where}: {note}" for where, note in self.notes]
        return "\n".join(lines)


def check_entries(entries: list[Entry], sampling: ClipSampling, source: str) -> ImportReport:
    """Keep the entries whose video exists, decodes and holds the frames ``sampling`` asks for.

    Each video (and segment) is read once, with the sampling training will use, so a record kept
    here is one the DataModule can read.
    """
    report = ImportReport(source)
    verdicts: dict[tuple[str, Any, Any], tuple[str, str] | list[str]] = {}
    for entry in entries:
        if entry.record is None:
            report.dropped.append((entry.where, "bad entry", entry.problem or "unreadable"))
            continue
        record = entry.record
        key = (record["video"], record.get("start"), record.get("end"))
        if key not in verdicts:
            verdicts[key] = _check_video(*key, sampling)
        verdict = verdicts[key]
        if isinstance(verdict, tuple):
            report.dropped.append((entry.where, *verdict))
            continue
        report.kept.append(record)
        report.notes += [(entry.where, note) for note in verdict]
    return report


def _check_video(
    video: str, start: float | None, end: float | None, sampling: ClipSampling
) -> tuple[str, str] | list[str]:
    """``(reason, detail)`` when the video is unusable, else the warnings reading it gave."""
    if not os.path.isfile(video):
        return "video not found", video
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            read_clip(
                video,
                sampling.num_frames,
                sampling.frame_sampling,
                sampling.frame_stride,
                sampling.target_fps,
                start=start,
                end=end,
            )
        except VideoTooShortError as err:
            return "too short", str(err)
        except VideoDecodeError as err:
            return "cannot decode", str(err)
        except ValueError as err:  # a segment that cannot be (start after end)
            return "bad segment", str(err)
    return [str(warning.message) for warning in caught]


def assign_splits(records: list[dict[str, Any]], split: str, val_fraction: float) -> None:
    """Put ``val_fraction`` of the records, spread evenly in their order, in ``"val"``; the rest in
    ``split``. Records that already name a split keep it."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for position, record in enumerate(records):
        if "split" in record:
            continue
        to_val = int((position + 1) * val_fraction) > int(position * val_fraction)
        record["split"] = "val" if to_val else split


def write_relative_manifest(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records with their video paths relative to the manifest's folder, so the folder can move."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.absolute()
    write_manifest(
        path, [{**record, "video": os.path.relpath(record["video"], folder)} for record in records]
    )

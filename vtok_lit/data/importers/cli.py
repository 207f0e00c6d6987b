"""The import command: read a source, check every video, print the report, write the manifest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vtok_lit.data.importers.check import (
    ClipSampling,
    Entry,
    ImportReport,
    assign_splits,
    check_entries,
    write_relative_manifest,
)
from vtok_lit.data.importers.formats import (
    SourceError,
    read_activitynet_qa,
    read_caption_folder,
    read_llava,
    read_msrvtt_qa,
    read_mvbench,
    read_webvid,
)
from vtok_lit.data.video_io import FRAME_SAMPLING_MODES


def _read_source(args: argparse.Namespace, source: Path) -> list[Entry]:
    """Every entry of one source file of the chosen format."""
    video_dir = args.video_dir or source.parent
    if args.format == "llava":
        return read_llava(source, video_dir)
    if args.format == "webvid":
        return read_webvid(source, video_dir, args.video_template, args.caption_column)
    if args.format in ("msrvtt-qa", "msvd-qa"):
        return read_msrvtt_qa(source, video_dir, args.video_map)
    if args.format == "activitynet-qa":
        return read_activitynet_qa(source, video_dir, args.answers)
    if args.format == "mvbench":
        return read_mvbench(source, video_dir, args.category)
    return read_caption_folder(source)


FORMATS: dict[str, str] = {
    "llava": "LLaVA-style video conversation JSON (video, conversations of human/gpt turns)",
    "webvid": "WebVid-style CSV (videoid, name, page_dir, ...)",
    "msrvtt-qa": "MSRVTT-QA JSON (video_id, question, answer); videos video<id>.mp4",
    "msvd-qa": "MSVD-QA JSON (video_id, question, answer); videos named through --video-map",
    "activitynet-qa": "ActivityNet-QA questions JSON (+ --answers JSON); videos v_<name>.*",
    "mvbench": "MVBench-style multiple choice JSON (video, question, candidates, answer, start?, end?)",
    "caption-folder": "a folder of videos, each with a caption .txt of the same name",
}


def build_parser(prog: str = "python -m vtok_lit.data.importers") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Import a video data set into a vtok-lit JSONL manifest, checking every video.",
        epilog="formats:\n" + "\n".join(f"  {name:15s} {text}" for name, text in FORMATS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=list(FORMATS), help="the source format")
    parser.add_argument(
        "sources", nargs="+", type=Path, help="source file(s), or the folder for caption-folder"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="the manifest to write (.jsonl)")
    parser.add_argument(
        "--video-dir",
        type=Path,
        default=None,
        help="folder the source's video paths are relative to (default: the source file's folder)",
    )
    parser.add_argument("--split", default="train", help="split of the imported records (default train)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="put this fraction of the records, spread evenly, in 'val'",
    )
    parser.add_argument(
        "--strict", action="store_true", help="write nothing and exit 1 if any entry is dropped"
    )
    sampling = parser.add_argument_group("frame sampling: a clip is kept only if it holds these frames")
    sampling.add_argument("--num-frames", type=int, default=16)
    sampling.add_argument("--frame-sampling", choices=FRAME_SAMPLING_MODES, default="uniform")
    sampling.add_argument("--frame-stride", type=int, default=1)
    sampling.add_argument("--target-fps", type=float, default=None)
    formats = parser.add_argument_group("format options")
    formats.add_argument(
        "--video-template",
        default="{videoid}.mp4",
        help="webvid: video path from CSV columns (default {videoid}.mp4)",
    )
    formats.add_argument("--caption-column", default="name", help="webvid: the caption column (default name)")
    formats.add_argument("--video-map", type=Path, default=None, help="msvd-qa: lines '<file stem> vid<id>'")
    formats.add_argument(
        "--answers", type=Path, default=None, help="activitynet-qa: the answers JSON (*_a.json)"
    )
    formats.add_argument("--category", default=None, help="mvbench: the category (default: the file's stem)")
    return parser


def run_import(args: argparse.Namespace) -> ImportReport:
    """Read, check and report; write the manifest unless ``--strict`` and something was dropped."""
    sampling = ClipSampling(args.num_frames, args.frame_sampling, args.frame_stride, args.target_fps)
    if args.format == "msvd-qa" and args.video_map is None:
        raise SourceError("msvd-qa needs --video-map (MSVD-QA's youtube_mapping.txt)")
    source = ", ".join(str(path) for path in args.sources)
    entries = [entry for path in args.sources for entry in _read_source(args, path)]
    report = check_entries(entries, sampling, f"{args.format} {source}")
    assign_splits(report.kept, args.split, args.val_fraction)
    print(report.text())
    if report.dropped and args.strict:
        print(f"--strict: {len(report.dropped)} entries dropped, {args.output} not written", file=sys.stderr)
        return report
    if not report.kept:
        print(f"nothing to write: no entry was kept; {args.output} not written", file=sys.stderr)
        return report
    write_relative_manifest(args.output, report.kept)
    print(f"wrote {len(report.kept)} records to {args.output}")
    return report


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run an import; returns the exit status (1 when a strict import dropped anything or none was kept)."""
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    try:
        report = run_import(args)
    except (SourceError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    failed = not report.kept or (args.strict and bool(report.dropped))
    return 1 if failed else 0

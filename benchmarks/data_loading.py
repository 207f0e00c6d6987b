"""Frames per second the data pipeline delivers, and whether the frames are the right ones, by reader.

``vtok_lit.data.video_io.read_clip`` reads with PyAV (``backend="pyav"``, the default: a per-file
frame index, cached, and keyframe seeking) or decord (``backend="decord"``: decoded from the first
frame, since decord's seeking returns wrong frames on B-frame content). The baseline is the reader
this kit used before: decord's ``get_batch`` at indices from decord's own frame count, fast but not
exact. Every reader is timed at three levels, on the same clips, interleaved round-robin, each as
a ratio to the baseline measured in the same run:

- reader: one ``read_clip(path, T)`` per clip; ``pyav-cold`` rebuilds the frame index for every
  read (a file's first read in a worker: the first epoch), ``pyav`` reuses it (every later read);
- dataset: ``VideoTextDataset[i]`` (read + centre crop + resize to ``--image-size``), the reader
  swapped in for ``read_clip``;
- loader: the train loader of ``VideoTextDataModule`` with ``num_workers`` 0, 1, 2 (the swap is
  inherited by forked workers; other start methods measure the baseline only and say so).

Each reader's frames of the first clip are compared with a sequential PyAV decode (mean absolute
error of the worst frame, on 0-255): the truth the kit holds readers to.

Three sources: a small MotionShapes corpus (64x64, 16 frames, H.264), a longer, larger H.264 clip
(by default 256x256, 120 frames) where sampling T frames means decoding far more frames than are
kept, and the same long clip as MPEG-4 Part 2 with B-frames in AVI, where decord's seeking is wrong.

    python benchmarks/data_loading.py             # 64 short clips, 16 reads of each long one
    python benchmarks/data_loading.py --quick     # fewer and smaller clips, fewer repeats
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from harness import (
    Column,
    add_common_arguments,
    apply_threads,
    machine_info,
    median,
    time_interleaved,
    write_report,
)
from torch.utils.data import DataLoader

from vtok_lit.data import video_io
from vtok_lit.data.datamodule import VideoTextDataModule
from vtok_lit.data.frame_index import build_frame_index, read_indexed_frames
from vtok_lit.data.manifest import read_manifest, write_manifest
from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes

NAME = "data_loading"
BASELINE = "decord get_batch"
Reader = Callable[[str, int], tuple[torch.Tensor, torch.Tensor]]


def decord_batch_read_clip(path: str, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kit's reader before exact reading: decord's frame count and ``get_batch``."""
    import decord

    reader = decord.VideoReader(str(path))
    indices = video_io.sample_frame_indices(len(reader), num_frames, source_fps=reader.get_avg_fps())
    return torch.from_numpy(reader.get_batch(indices.tolist()).asnumpy()), indices


def pyav_read_clip(path: str, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return video_io.read_clip(path, num_frames, backend="pyav")


def pyav_cold_read_clip(path: str, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = build_frame_index(path)
    indices = video_io.sample_frame_indices(index.num_frames, num_frames, source_fps=index.fps)
    return torch.from_numpy(read_indexed_frames(index, indices.tolist())), indices


def decord_read_clip(path: str, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return video_io.read_clip(path, num_frames, backend="decord")


READERS: dict[str, Reader] = {
    BASELINE: decord_batch_read_clip,
    "pyav": pyav_read_clip,
    "pyav-cold": pyav_cold_read_clip,
    "decord": decord_read_clip,
}


def torchcodec_read_clip(path: str, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), dimension_order="NHWC")
    metadata = decoder.metadata
    indices = video_io.sample_frame_indices(
        metadata.num_frames, num_frames, source_fps=metadata.average_fps, path=path
    )
    return decoder.get_frames_at(indices.tolist()).data, indices


def torchcodec_problem(probe_clip: Path) -> str | None:
    """Why torchcodec cannot decode here (None when it can)."""
    try:
        torchcodec_read_clip(str(probe_clip), 2)
    except ImportError as error:
        return f"not installed ({error})"
    except Exception as error:  # any failure to load FFmpeg or decode means "not available"
        missing = (
            [] if ctypes.util.find_library("avcodec") else ["no FFmpeg shared libraries on the loader path"]
        )
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # torchcodec lists every FFmpeg major it tried; the loader's own complaint is the telling line.
        reason = next((line for line in lines if "cannot open shared object" in line), lines[0])
        return "; ".join([*missing, reason])
    return None


@contextlib.contextmanager
def reading_with(reader: Reader) -> Iterator[None]:
    """Makes ``VideoTextDataset`` read with ``reader`` (and forked DataLoader workers with it)."""
    with mock.patch("vtok_lit.data.dataset.read_clip", lambda path, num_frames, *_: reader(path, num_frames)):
        yield


def write_long_clip(
    root: Path, size: int, frames: int, num_clips: int, seed: int, mpeg4_avi: bool = False
) -> Path:
    """A moving pattern with MotionShapes-like noise as one video, listed ``num_clips`` times in a
    manifest: H.264 mp4, or MPEG-4 Part 2 with two B-frames between references in AVI."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.jsonl"
    video = root / f"long_{size}px_{frames}f_seed{seed}.{'avi' if mpeg4_avi else 'mp4'}"
    if not video.is_file():
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
        clip = np.empty((frames, size, size, 3), dtype=np.uint8)
        for t in range(frames):
            phase = t / frames
            pattern = np.stack(
                [(x + phase) % 1, (y + 0.5 * phase) % 1, 0.5 + 0.3 * np.sin(6 * (x + y + phase))], -1
            )
            noisy = pattern + 0.03 * rng.standard_normal(pattern.shape, dtype=np.float32)
            clip[t] = (255 * noisy.clip(0, 1)).astype(np.uint8)
        if mpeg4_avi:
            write_mpeg4_avi(video, clip, fps=30)
        else:
            video_io.write_video(video, clip, fps=30)
    records = [{"video": video.name, "caption": "a moving pattern", "split": "train"}] * num_clips
    write_manifest(manifest, [*records, {"video": video.name, "caption": "a moving pattern", "split": "val"}])
    return manifest


def write_mpeg4_avi(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.max_b_frames, stream.codec_context.gop_size = 2, 12
        stream.codec_context.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def sequential_frames(path: str, indices: torch.Tensor) -> np.ndarray:
    """The frames a sequential PyAV decode gives at ``indices``."""
    import av

    with av.open(path) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack([frames[i] for i in indices.tolist()])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where the clips are made or reused (default: a temp dir)"
    )
    parser.add_argument("--num-clips", type=int, default=None, help="MotionShapes train clips (default 64)")
    parser.add_argument("--long-clips", type=int, default=None, help="reads of the long clip (default 16)")
    parser.add_argument("--long-size", type=int, default=None, help="long clip side (default 256)")
    parser.add_argument("--long-frames", type=int, default=None, help="long clip frames (default 120)")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled a clip (T)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the frames the dataset returns")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=[*list(READERS)[1:], "torchcodec"],
        default=None,
        help="besides the baseline",
    )
    parser.add_argument("--quick", action="store_true", help="16 + 4 clips, a 128x128 60-frame long clip")
    add_common_arguments(parser, repeats=None, warmup=1)
    args = parser.parse_args(argv)
    quick = args.quick
    args.num_clips = args.num_clips or (16 if quick else 64)
    args.long_clips = args.long_clips or (4 if quick else 16)
    args.long_size = args.long_size or (128 if quick else 256)
    args.long_frames = args.long_frames or (60 if quick else 120)
    args.repeats = args.repeats or (2 if quick else 5)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args.threads)
    machine = machine_info()
    import av
    import decord

    machine |= {"decord": decord.__version__, "av": av.__version__}
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="vtok-bench-"))
        )
        corpus = MotionShapesConfig(num_train=args.num_clips, num_val=1, seed=args.seed)
        long = f"{args.long_size}px {args.long_frames}f"
        sources = {
            f"MotionShapes {corpus.image_size}px {corpus.num_frames}f": ensure_motionshapes(
                data_dir / "motionshapes", corpus, processes=1
            ),
            f"long H.264 {long}": write_long_clip(
                data_dir / "long", args.long_size, args.long_frames, args.long_clips, args.seed
            ),
            f"long MPEG-4 AVI B-frames {long}": write_long_clip(
                data_dir / "long_avi", args.long_size, args.long_frames, args.long_clips, args.seed, True
            ),
        }
        readers = dict(READERS)
        first_clip = read_manifest(next(iter(sources.values())))[0].video
        problem = torchcodec_problem(first_clip)
        if problem is None:
            readers["torchcodec"] = torchcodec_read_clip
        wanted = args.backends or list(readers)
        readers = {name: reader for name, reader in readers.items() if name in [BASELINE, *wanted]}
        forked = torch.multiprocessing.get_start_method() == "fork"
        rows, raw = [], {}
        for source, manifest in sources.items():
            rows += measure_source(source, manifest, readers, forked, args, raw)
        if problem is not None and (args.backends is None or "torchcodec" in args.backends):
            rows.append({"source": "all", "level": "reader", "backend": "torchcodec", "note": problem})

    columns = [
        Column("source", "source"),
        Column("level", "level"),
        Column("backend", "backend"),
        Column("workers", "workers"),
        Column("frames/s", "fps", ",.0f"),
        Column("vs decord get_batch", "vs_baseline", ".2f"),
        Column("worst frame error vs sequential decode", "frame_error", ".1f"),
        Column("note", "note"),
    ]
    torchcodec_note = (
        "torchcodec: available." if problem is None else f"torchcodec: not available ({problem})."
    )
    notes = [
        f"T = {args.frames} frames a clip, sampled uniformly; the dataset returns "
        f"{args.image_size}x{args.image_size} frames; loader batch size {args.batch_size}. frames/s: "
        f"median over {args.repeats} full passes after {args.warmup} warm-up pass (a loader's workers "
        "persist, so their start-up is in the warm-up, and so is building their frame indices), "
        "readers interleaved round-robin. 'vs decord get_batch': this reader's frames/s over the "
        "baseline's at the same source, level and workers, in this run. 'worst frame error': mean "
        "absolute difference (0-255) of the worst of the first clip's T frames from a sequential PyAV "
        "decode at the same indices; exact readers show 0.0.",
        f"decord {decord.__version__}, PyAV {av.__version__}. {torchcodec_note}",
    ]
    return write_report(
        NAME,
        "Data loading: frames per second by reader",
        notes,
        [("", columns, rows)],
        machine,
        vars(args),
        args.output_dir,
        raw=raw,
    )


def measure_source(
    source: str,
    manifest: Path,
    readers: dict[str, Reader],
    forked: bool,
    args: argparse.Namespace,
    raw: dict[str, Any],
) -> list[dict[str, Any]]:
    """The reader, dataset and loader rows of one source."""
    datamodules = {}
    for backend in readers:
        for workers in args.workers:
            datamodule = VideoTextDataModule(
                video_backend="pyav",
                manifest=str(manifest),
                num_frames=args.frames,
                image_size=args.image_size,
                batch_size=args.batch_size,
                num_workers=workers,
                seed=args.seed,
            )
            datamodule.setup("fit")
            datamodules[backend, workers] = datamodule
    dataset = next(iter(datamodules.values())).datasets["train"]
    paths = [str(record.video) for record in dataset.records]

    def reader_pass(reader: Reader) -> None:
        for path in paths:
            reader(path, args.frames)

    def dataset_pass(reader: Reader) -> None:
        with reading_with(reader):
            for index in range(len(dataset)):
                dataset[index]

    def loader_pass(loader: DataLoader, reader: Reader) -> None:
        with reading_with(reader):
            for _ in loader:
                pass

    passes: dict[tuple[str, str, int | None], Callable[[], None]] = {}
    for backend, reader in readers.items():
        passes["reader", backend, None] = lambda reader=reader: reader_pass(reader)
        passes["dataset", backend, None] = lambda reader=reader: dataset_pass(reader)
    for (backend, workers), datamodule in datamodules.items():
        if backend == BASELINE or workers == 0 or forked:
            loader, reader = datamodule.train_dataloader(), readers[backend]
            passes["loader", backend, workers] = lambda loader=loader, reader=reader: loader_pass(
                loader, reader
            )
    seconds = time_interleaved(passes, args.warmup, args.repeats)
    passes.clear()  # drops the loaders, which shuts their persistent workers down
    # Every pass delivers all clips, T frames each.
    frames_per_pass = len(paths) * args.frames

    rows = []
    for (level, backend, workers), timings in seconds.items():
        fps = frames_per_pass / median(timings)
        baseline_fps = frames_per_pass / median(seconds[level, BASELINE, workers])
        row = {
            "source": source,
            "level": level,
            "backend": backend,
            "workers": "-" if workers is None else workers,
            "fps": fps,
            "vs_baseline": fps / baseline_fps,
            "note": "",
        }
        if level == "reader":
            frames, indices = readers[backend](paths[0], args.frames)
            truth = torch.from_numpy(sequential_frames(paths[0], indices))
            row["frame_error"] = float((frames.float() - truth.float()).abs().mean(dim=(1, 2, 3)).max())
        rows.append(row)
        raw[f"{source}/{level}/{backend}/{row['workers']}"] = timings
    if not forked:
        rows.append(
            {
                "source": source,
                "level": "loader",
                "backend": "all but the baseline",
                "note": "workers not forked: not measured",
            }
        )
    return rows


if __name__ == "__main__":
    main()

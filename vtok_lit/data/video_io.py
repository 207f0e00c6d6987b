"""Reading and writing video files, and choosing which frames of a clip (or segment) to read.

Every backend returns the frames a sequential decode gives at the requested indices; frame counts
and timestamps come from :mod:`vtok_lit.data.frame_index`. decord and PyAV are imported inside the
functions that need them so that importing the package stays fast, and a decord ``VideoReader`` is
opened per call: a reader made in the parent process does not survive being forked into DataLoader
workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from vtok_lit.data.frame_index import FrameIndex, VideoDecodeError, frame_index, read_indexed_frames

FrameSampling = Literal["uniform", "stride", "fps"]
FRAME_SAMPLING_MODES: tuple[str, ...] = ("uniform", "stride", "fps")
# PyAV seeks to keyframes; decord decodes from the first frame (its seeking is not exact), so PyAV
# is the faster of the two on long clips (benchmarks/results/data_loading.md).
VideoBackend = Literal["pyav", "decord"]
VIDEO_BACKENDS: tuple[str, ...] = ("pyav", "decord")


class VideoTooShortError(ValueError):
    """A video has fewer frames than the requested frame sampling needs."""


def check_frame_sampling(
    num_frames: int, mode: str, stride: int = 1, target_fps: float | None = None
) -> None:
    """Raise ``ValueError`` for sampling arguments no clip could satisfy."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if mode not in FRAME_SAMPLING_MODES:
        raise ValueError(f"frame sampling must be one of {FRAME_SAMPLING_MODES}, got {mode!r}")
    if mode == "stride" and stride < 1:
        raise ValueError(f"frame stride must be at least 1, got {stride}")
    if mode == "fps" and (target_fps is None or target_fps <= 0):
        raise ValueError(f"frame sampling 'fps' needs a positive target_fps, got {target_fps}")


def sample_frame_indices(
    num_available: int,
    num_frames: int,
    mode: FrameSampling = "uniform",
    stride: int = 1,
    source_fps: float | None = None,
    target_fps: float | None = None,
    *,
    path: str | os.PathLike | None = None,
    frame_times: np.ndarray | None = None,
) -> torch.Tensor:
    """Choose which frames of a clip to read.

    Args:
        num_available: Frames in the clip.
        num_frames: Frames to return.
        mode: ``"uniform"`` spreads the frames evenly from the first to the last frame;
            ``"stride"`` takes every ``stride``-th frame from the start; ``"fps"`` resamples the
            clip from ``source_fps`` to ``target_fps`` from the start (the frame on screen at each
            target time, so frames repeat when ``target_fps`` is the higher).
        stride: Step between frames for ``"stride"``.
        source_fps: Frame rate of the clip, for ``"fps"``.
        target_fps: Frame rate to resample to, for ``"fps"``.
        path: The video, only to name it in errors.
        frame_times: ``(num_available,)`` seconds of each frame from the first; given, ``"fps"``
            finds the frame on screen at each target time from them, which a variable frame rate
            needs; else from ``source_fps``.

    Returns:
        ``(num_frames,)`` long tensor of frame indices, non-decreasing.

    Raises:
        VideoTooShortError: The clip has fewer frames than the sampling needs.
    """
    check_frame_sampling(num_frames, mode, stride, target_fps)
    if mode == "uniform":
        needed = num_frames
        indices = torch.linspace(0, max(num_available - 1, 0), num_frames).round().long()
    elif mode == "stride":
        needed = (num_frames - 1) * stride + 1
        indices = torch.arange(num_frames) * stride
    else:
        if source_fps is None or source_fps <= 0:
            raise VideoDecodeError(f"{path}: frame rate unknown ({source_fps}), cannot resample to fps")
        # The epsilon keeps exact multiples (e.g. 30 fps -> 10 fps) from flooring one frame short.
        targets = torch.arange(num_frames, dtype=torch.float64) / target_fps + 1e-6
        if frame_times is None:
            frame_times = np.arange(num_available) / source_fps
        times = torch.from_numpy(np.asarray(frame_times, np.float64))
        # The frame on screen at a time is the last one shown at or before it; the last frame
        # stays on screen for one frame period.
        indices = torch.searchsorted(times, targets, right=True) - 1
        ends_in_clip = num_available and targets[-1] < times[-1] + 1 / source_fps
        needed = (
            int(indices[-1]) + 1
            if ends_in_clip
            else max(int(targets[-1] * source_fps) + 1, num_available + 1)
        )
    if num_available < needed:
        raise VideoTooShortError(
            f"{path}: {num_available} frames available, {mode} sampling of {num_frames} frames needs {needed}"
        )
    return indices


def _read_with_decord(index: FrameIndex, indices: Sequence[int]) -> np.ndarray:
    """Read frames with decord by decoding from the first frame on, which is exact.

    decord's seeking (``get_batch``, ``skip_frames``) returns other frames than those asked for on
    B-frame content (MPEG-4 Part 2 in AVI: frames after the first keyframe off by several places),
    so only its sequential ``next`` is used.
    """
    import decord

    wanted = set(indices)
    decoded = {}
    try:
        reader = decord.VideoReader(index.path)
        for position in range(max(wanted) + 1):
            frame = reader.next()
            if position in wanted:
                decoded[position] = frame.asnumpy()
    except StopIteration:
        raise VideoDecodeError(f"{index.path}: decord's decode ends before frame {max(wanted)}") from None
    except (RuntimeError, decord.DECORDError):
        # decord 0.6 cannot open or copy out frames of some widths (16, 24, 48 and 72 px among them:
        # dmlc/decord#336) that FFmpeg decodes; the frame index reads those.
        return read_indexed_frames(index, indices)
    return np.stack([decoded[i] for i in indices])


def _read(index: FrameIndex, indices: Sequence[int], backend: VideoBackend) -> torch.Tensor:
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"video backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    if backend == "decord":
        index.check_indices(indices)
        return torch.from_numpy(_read_with_decord(index, indices))
    return torch.from_numpy(read_indexed_frames(index, indices))


def read_frames(
    path: str | os.PathLike, indices: Sequence[int] | torch.Tensor, backend: VideoBackend = "pyav"
) -> torch.Tensor:
    """Decode the given frames of a video: the frames a sequential decode gives at those places.

    Args:
        path: The video file.
        indices: Frame indices, each in ``[0, num_frames)``; repeats are allowed.
        backend: The decoder, ``"pyav"`` (seeks to keyframes) or ``"decord"`` (decodes from the start).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded or is damaged.
    """
    return _read(frame_index(path), torch.as_tensor(indices).tolist(), backend)


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """Return ``(num_frames, fps)`` of a video: the frames a sequential decode gives and their rate.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded or is damaged.
    """
    index = frame_index(path)
    return index.num_frames, index.fps


def segment_frames(
    index: FrameIndex, start: float | None = None, end: float | None = None
) -> tuple[int, int]:
    """The frames shown in ``[start, end)`` seconds from a video's first frame.

    Returns:
        ``(first, count)``: the first frame of the segment and how many frames it holds.

    Raises:
        ValueError: ``start`` is negative or ``end`` is not after ``start``.
        VideoTooShortError: No frame is shown in the segment.
    """
    if start is None and end is None:
        return 0, index.num_frames
    begin = 0.0 if start is None else start
    if begin < 0 or (end is not None and end <= begin):
        raise ValueError(f"{index.path}: a segment needs 0 <= start < end, got start={start}, end={end}")
    times = index.times
    # Timestamps are rounded to the time base, so a frame exactly at a bound may land a hair off it.
    tolerance = 1e-6
    first = int(np.searchsorted(times, begin - tolerance, side="left"))
    stop = index.num_frames if end is None else int(np.searchsorted(times, end - tolerance, side="left"))
    if stop <= first:
        raise VideoTooShortError(
            f"{index.path}: no frame in the segment {begin}-{end} s of a {times[-1]:.3f} s video"
        )
    return first, stop - first


def read_clip(
    path: str | os.PathLike,
    num_frames: int,
    mode: FrameSampling = "uniform",
    stride: int = 1,
    target_fps: float | None = None,
    backend: VideoBackend = "pyav",
    start: float | None = None,
    end: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample frame indices for a video (or a segment of it) and decode those frames.

    Args:
        path: The video file.
        num_frames: Frames to read.
        mode: Frame sampling, see :func:`sample_frame_indices`.
        stride: Step between frames for ``"stride"``.
        target_fps: Frame rate to resample to for ``"fps"``.
        backend: The decoder, ``"pyav"`` or ``"decord"``; both give the frames a sequential decode
            gives.
        start: Start of the segment to sample from, in seconds from the first frame; None: the start.
        end: End of the segment (exclusive), in seconds; None: the end of the video.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames and their ``(T,)`` long frame indices in the whole video.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded or is damaged.
        VideoTooShortError: The video (or segment) has too few frames for the sampling.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"video backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    index = frame_index(path)
    first, available = segment_frames(index, start, end)
    times = index.times[first : first + available]
    indices = first + sample_frame_indices(
        available, num_frames, mode, stride, index.fps, target_fps, path=path, frame_times=times - times[0]
    )
    return _read(index, indices.tolist(), backend), indices


def write_video(
    path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float, crf: int = 17
) -> None:
    """Encode frames as an H.264 (libx264, yuv420p) mp4 file; the same frames give the same bytes.

    Args:
        path: Where to write; the parent folder must exist.
        frames: ``(T, H, W, 3)`` uint8 RGB frames; yuv420p needs ``H`` and ``W`` even.
        fps: Frame rate.
        crf: x264 constant rate factor; lower keeps more detail (17 is close to lossless).
    """
    import av

    frames = np.ascontiguousarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {height}x{width}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # With x264's macroblock-tree rate control on, the same frames now and then encode to
        # different bytes (seen with libx264 165 on an AVX-512 CPU); off, the output is repeatable.
        stream.options = {"crf": str(crf), "x264-params": "mbtree=0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())

"""Reading and writing video files, and choosing which frames of a clip to read.

decord and PyAV are imported inside the functions that need them so that importing the package
stays fast, and a ``VideoReader`` is opened per call: a reader made in the parent process does
not survive being forked into DataLoader workers.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    import av
    import decord

FrameSampling = Literal["uniform", "stride", "fps"]
FRAME_SAMPLING_MODES: tuple[str, ...] = ("uniform", "stride", "fps")
# decord is faster on short clips; PyAV on long, large ones (benchmarks/results/data_loading.md).
VideoBackend = Literal["decord", "pyav"]
VIDEO_BACKENDS: tuple[str, ...] = ("decord", "pyav")


class VideoDecodeError(ValueError):
    """A video file exists but cannot be decoded."""


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
        times = torch.arange(num_frames, dtype=torch.float64) * (source_fps / target_fps)
        indices = torch.floor(times + 1e-6).long()
        needed = int(indices[-1]) + 1
    if num_available < needed:
        raise VideoTooShortError(
            f"{path}: {num_available} frames available, {mode} sampling of {num_frames} frames needs {needed}"
        )
    return indices


def _open_reader(path: str | os.PathLike) -> decord.VideoReader:
    import decord

    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "No such video file", str(path))
    try:
        return decord.VideoReader(str(path))
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoDecodeError(f"cannot decode {path}: {_ffmpeg_reason(path, err)}") from err


def _ffmpeg_reason(path: str | os.PathLike, decord_error: Exception) -> str:
    """FFmpeg's own reason a file does not open.

    decord's exception only says "Error reading <path>..." and logs the reason to stderr; opening
    the file with PyAV gives the same FFmpeg reason as text.
    """
    import av

    try:
        with av.open(str(path)):
            pass
    except av.FFmpegError as err:
        return err.strerror or str(err)
    return str(decord_error)


def _read_batch(reader: decord.VideoReader, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    import decord

    num_available = len(reader)
    out_of_range = [i for i in indices if not 0 <= i < num_available]
    if out_of_range:
        raise IndexError(f"{path}: frame indices {out_of_range[:5]} out of range for {num_available} frames")
    try:
        frames = reader.get_batch(list(indices)).asnumpy()
    except (RuntimeError, decord.DECORDError) as err:
        # decord 0.6 cannot copy out frames of some widths (16, 24, 48 and 72 px among them:
        # dmlc/decord#336) although FFmpeg decodes them; PyAV reads those.
        frames = _read_with_pyav(path, indices, err)
    return torch.from_numpy(frames)


def _decode_with_pyav(container: av.container.InputContainer, indices: Sequence[int]) -> np.ndarray | None:
    """Decodes from the start up to the last wanted frame; None when the stream ends before it."""
    wanted = set(indices)
    decoded = {}
    for index, frame in enumerate(container.decode(video=0)):
        if index in wanted:
            decoded[index] = frame.to_ndarray(format="rgb24")
        if len(decoded) == len(wanted):
            return np.stack([decoded[index] for index in indices])
    return None


def _read_with_pyav(path: str | os.PathLike, indices: Sequence[int], decord_error: Exception) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            frames = _decode_with_pyav(container, indices)
    except av.FFmpegError as err:
        raise VideoDecodeError(f"cannot decode {path}: {decord_error}; PyAV: {err}") from err
    if frames is None:
        raise VideoDecodeError(f"cannot decode {path}: {decord_error}")
    return frames


def _read_clip_with_pyav(
    path: str | os.PathLike, num_frames: int, mode: FrameSampling, stride: int, target_fps: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_clip` with PyAV alone: the frame count and rate from the container, one open."""
    import av

    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "No such video file", str(path))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            available, fps = stream.frames, float(stream.average_rate or 0)
            if available <= 0:  # a container that does not store its frame count
                available = sum(1 for _ in container.decode(video=0))
                container.seek(0)
            indices = sample_frame_indices(available, num_frames, mode, stride, fps, target_fps, path=path)
            frames = _decode_with_pyav(container, indices.tolist())
    except (av.FFmpegError, IndexError) as err:  # IndexError: no video stream
        raise VideoDecodeError(f"cannot decode {path}: {err}") from err
    if frames is None:
        raise VideoDecodeError(f"cannot decode {path}: the stream ends before frame {int(indices.max())}")
    return torch.from_numpy(frames), indices


def read_frames(path: str | os.PathLike, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Decode the given frames of a video.

    Args:
        path: The video file.
        indices: Frame indices, each in ``[0, num_frames)``; repeats are allowed.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded.
    """
    reader = _open_reader(path)
    return _read_batch(reader, path, torch.as_tensor(indices).tolist())


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """Return ``(num_frames, fps)`` of a video.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded.
    """
    reader = _open_reader(path)
    return len(reader), float(reader.get_avg_fps())


def read_clip(
    path: str | os.PathLike,
    num_frames: int,
    mode: FrameSampling = "uniform",
    stride: int = 1,
    target_fps: float | None = None,
    backend: VideoBackend = "decord",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample frame indices for a video and decode them, opening the file once.

    Args:
        path: The video file.
        num_frames: Frames to read.
        mode: Frame sampling, see :func:`sample_frame_indices`.
        stride: Step between frames for ``"stride"``.
        target_fps: Frame rate to resample to for ``"fps"``.
        backend: The decoder, ``"decord"`` or ``"pyav"``; both give the same frames.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames and their ``(T,)`` long frame indices.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file cannot be decoded.
        VideoTooShortError: The video has too few frames for the sampling.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"video backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    if backend == "pyav":
        return _read_clip_with_pyav(path, num_frames, mode, stride, target_fps)
    reader = _open_reader(path)
    indices = sample_frame_indices(
        len(reader), num_frames, mode, stride, float(reader.get_avg_fps()), target_fps, path=path
    )
    return _read_batch(reader, path, indices.tolist()), indices


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

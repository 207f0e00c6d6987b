"""Exact frame access with PyAV: which frames a video holds, and reading any of them by seeking.

The truth for "frame ``i``" is the ``i``-th frame a sequential decode of the file gives. Containers
often disagree with it (a header that overstates the frame count, B-frames stored out of order,
edit lists that hide a frame), and readers that trust them return other frames than the ones asked
for. A :class:`FrameIndex` is built once per file by demuxing its packets without decoding them:
their presentation timestamps, sorted, are the frames in the order a decoder shows them, and their
keyframe flags say where decoding may start. The last group of pictures is decoded once to make sure
the frames at the end really come out. Reading then seeks to the nearest keyframe at or before each
wanted frame and decodes forward, matching frames by timestamp, so the frames returned are exactly
those of a sequential decode.

PyAV is imported inside the functions that use it so that importing the package stays fast.
"""

from __future__ import annotations

import errno
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av
    from av.video.reformatter import VideoReformatter

# Frame indices of files a process has opened; an entry is a few arrays, so thousands fit easily.
_CACHE_SIZE = 4096
_cache: OrderedDict[tuple[str, int, int], FrameIndex] = OrderedDict()
# An AVI packet's position is its data; the chunk's id and size come before it.
_CHUNK_HEADER_BYTES = 8


class VideoDecodeError(ValueError):
    """A video file exists but cannot be decoded, or is damaged (truncated, corrupt packets)."""


@dataclass(frozen=True)
class FrameIndex:
    """Where every frame of a video's first video stream lies.

    Attributes:
        path: The video file.
        pts: ``(N,)`` presentation timestamps of the frames that decode, in display order.
        seek_pts: ``(N,)`` for each frame, the timestamp to seek to so that decoding forward reaches
            it: the decode timestamp of the last keyframe shown at or before it.
        time_base: Seconds per timestamp unit.
        fps: Average frame rate (frames per second), from the container or else the timestamps.
        header_frames: The frame count the container states (0 when it states none).
    """

    path: str
    pts: np.ndarray
    seek_pts: np.ndarray
    time_base: Fraction
    fps: float
    header_frames: int

    @property
    def num_frames(self) -> int:
        """Frames a sequential decode gives."""
        return len(self.pts)

    def check_indices(self, indices: Sequence[int]) -> None:
        """Raise ``IndexError`` naming the file for indices outside ``[0, num_frames)``."""
        out_of_range = [i for i in indices if not 0 <= i < self.num_frames]
        if out_of_range:
            raise IndexError(
                f"{self.path}: frame indices {out_of_range[:5]} out of range for {self.num_frames} frames"
            )

    @property
    def times(self) -> np.ndarray:
        """``(N,)`` seconds of each frame from the first frame shown."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)


def frame_index(path: str | os.PathLike) -> FrameIndex:
    """The :class:`FrameIndex` of a video, built on first use and cached by path, size and mtime.

    Raises:
        FileNotFoundError: No file at ``path``.
        VideoDecodeError: The file has no video stream, cannot be opened, or is damaged: a packet
            is cut short or flagged corrupt, or its last frames do not decode. The message names the
            file and says how many frames its container lists and how many decode.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such video file", str(path)) from None
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    index = build_frame_index(path)
    _cache[key] = index
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return index


def build_frame_index(path: str | os.PathLike) -> FrameIndex:
    """Build a :class:`FrameIndex` without the cache (:func:`frame_index` is the cached way)."""
    import av

    path = str(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"cannot decode {path}: no video stream")
            stream = _threaded(container.streams.video[0])
            pts, dts, keys, packets, packets_end = _demux(container, stream, path)
            _check_not_cut_between_packets(path, packets, packets_end, int(stream.frames or 0))
            if not pts.size:
                raise VideoDecodeError(f"cannot decode {path}: no video frames")
            order = np.argsort(pts, kind="stable")
            pts, dts, keys = pts[order], dts[order], keys[order]
            if not keys[0]:
                # A stream that starts inside a group of pictures (cut from a longer one): decoding
                # from the first packet is the only start a sequential decode has too.
                keys[0] = True
            seek_pts = dts[keys][np.cumsum(keys) - 1]
            decoded = _decode_tail(container, stream, pts, seek_pts, path)
            time_base = stream.time_base or Fraction(1, 1)
            rate = float(stream.average_rate or 0)
            header_frames = int(stream.frames or 0)
    except av.FFmpegError as err:
        raise VideoDecodeError(f"cannot decode {path}: {err.strerror or err}") from err
    # Frames of the last group of pictures that never come out (a header or index entry too many)
    # are not frames of the sequential decode either.
    shown = (seek_pts != seek_pts[-1]) | np.isin(pts, decoded)
    pts, seek_pts = pts[shown], seek_pts[shown]
    if not pts.size:
        raise VideoDecodeError(f"cannot decode {path}: no frame decodes")
    if header_frames > pts.size:
        # A clean stream that ends early is read as it decodes (decord and sequential decodes agree),
        # but the researcher should know the container promised more.
        warnings.warn(
            f"{path}: the container lists {header_frames} frames but {pts.size} decode; using those",
            stacklevel=3,
        )
    if rate <= 0 and pts.size > 1:
        rate = (pts.size - 1) / float((pts[-1] - pts[0]) * time_base)
    return FrameIndex(path, pts, seek_pts, time_base, rate, header_frames)


def _threaded(stream: av.video.stream.VideoStream) -> av.video.stream.VideoStream:
    """Let FFmpeg decode on as many threads as torch may use in this process (frame and slice
    threads), one in a DataLoader worker.

    The frames that come out are the same. In the main process a single-threaded decoder of a
    256x256 H.264 clip delivered 0.7x the frames per second of decord, which decodes threaded
    (benchmarks/data_loading.py); in a worker, which torch limits to one thread, more decoding
    threads only compete with the training step for the cores.
    """
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        stream.thread_type = "AUTO"
        stream.thread_count = threads
    return stream


def _check_not_cut_between_packets(path: str, packets: int, packets_end: int, header_frames: int) -> None:
    """Refuse a file that ends right after a whole packet while its container lists more frames.

    A cut inside a packet marks that packet corrupt (see ``_demux``); a cut that falls between two
    packets leaves every packet whole, and the file would read as a shorter clip. Such a file ends
    where its last packet ends (within an AVI chunk header), whereas a header that merely overstates
    the count is followed by the container's index, which is read as it decodes (with a warning).
    """
    size = os.path.getsize(path)
    if header_frames > packets and packets_end >= 0 and size - packets_end <= _CHUNK_HEADER_BYTES:
        raise VideoDecodeError(
            f"{path} is damaged (truncated): the file ends at byte {size}, right after packet "
            f"{packets}; {packets} frames come before its end, the container lists {header_frames}"
        )


def _demux(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Presentation and decode timestamps and keyframe flags of the packets that show a frame; how
    many packets hold data (shown or not) and the byte where the last of them ends (-1 when the
    demuxer gives no positions)."""
    pts, dts, keys = [], [], []
    packets, packets_end = 0, -1
    for packet in container.demux(stream):
        if packet.size:
            packets += 1
            if packet.pos is not None and packet.pos >= 0:
                packets_end = max(packets_end, packet.pos + packet.size)
        # The empty packet at the end flushes the decoder; discarded ones (outside an edit list)
        # decode but are never shown.
        if packet.size == 0 or packet.is_discard:
            continue
        if packet.is_corrupt:
            raise VideoDecodeError(
                f"{path} is damaged (truncated or corrupt): packet {len(pts)} at byte {packet.pos} is "
                f"cut short; {len(pts)} frames come before it, the container lists {stream.frames}"
            )
        shown = packet.pts if packet.pts is not None else packet.dts
        if shown is None:
            raise VideoDecodeError(f"cannot decode {path}: packet {len(pts)} has no timestamp")
        pts.append(shown)
        dts.append(packet.dts if packet.dts is not None else shown)
        keys.append(packet.is_keyframe)
    return np.asarray(pts, np.int64), np.asarray(dts, np.int64), np.asarray(keys, bool), packets, packets_end


def _decode_tail(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    pts: np.ndarray,
    seek_pts: np.ndarray,
    path: str,
) -> np.ndarray:
    """Timestamps of the frames that decode from the last keyframe to the end."""
    import av

    try:
        decoded = _decoded_pts(container, stream, int(seek_pts[-1]))
        last_key_pts = pts[seek_pts == seek_pts[-1]][0]
        if not decoded.size or decoded.min() > last_key_pts:
            # The seek landed after the keyframe (or nothing came out): decode it all to be sure.
            decoded = _decoded_pts(container, stream, int(seek_pts[0]))
    except av.InvalidDataError as err:
        raise VideoDecodeError(f"{path} is damaged: its last frames do not decode: {err}") from err
    return decoded


def _decoded_pts(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, seek_to: int
) -> np.ndarray:
    container.seek(seek_to, stream=stream, backward=True)
    return np.asarray([frame.pts for frame in container.decode(stream) if frame.pts is not None], np.int64)


def read_indexed_frames(index: FrameIndex, indices: Sequence[int]) -> np.ndarray:
    """Decode frames by seeking to their keyframes and decoding forward.

    Frames are visited in display order; a frame whose keyframe lies at or before the last frame
    decoded is reached by decoding on rather than seeking back, so close indices share the work.

    Args:
        index: The video's :class:`FrameIndex`.
        indices: Frame indices in ``[0, index.num_frames)``, in any order, repeats allowed.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames in the order of ``indices``.

    Raises:
        IndexError: An index is out of range (the message names the file).
        VideoDecodeError: A wanted frame does not come out of the decoder.
    """
    import av
    from av.video.reformatter import VideoReformatter

    index.check_indices(indices)
    # One reformatter keeps its colour-conversion context across frames; ``frame.to_ndarray`` makes
    # a new one per frame, which costs more than decoding a small frame.
    to_rgb = VideoReformatter()
    wanted = sorted(set(indices))
    by_pts: dict[int, np.ndarray] = {}
    try:
        with av.open(index.path) as container:
            stream = _threaded(container.streams.video[0])
            frames, last_shown = None, None
            for position in wanted:
                target, seek_to = int(index.pts[position]), int(index.seek_pts[position])
                if frames is None or last_shown is None or seek_to > last_shown:
                    container.seek(seek_to, stream=stream, backward=True)
                    frames = container.decode(stream)
                found, last_shown = _decode_to(frames, target, to_rgb)
                if found is None:
                    # Some demuxers land after the keyframe asked for; the first frame is always a start.
                    container.seek(int(index.seek_pts[0]), stream=stream, backward=True)
                    frames = container.decode(stream)
                    found, last_shown = _decode_to(frames, target, to_rgb)
                if found is None:
                    raise VideoDecodeError(
                        f"{index.path}: frame {position} (timestamp {target}) does not decode"
                    )
                by_pts[target] = found
    except av.FFmpegError as err:
        raise VideoDecodeError(f"cannot decode {index.path}: {err.strerror or err}") from err
    return np.stack([by_pts[int(index.pts[i])] for i in indices])


def _decode_to(
    frames: Iterator[av.VideoFrame], target: int, to_rgb: VideoReformatter
) -> tuple[np.ndarray | None, int | None]:
    """Decode on until the frame shown at ``target``; returns it (None if passed) and the last pts seen."""
    last_shown = None
    for frame in frames:
        if frame.pts is None:
            continue
        last_shown = frame.pts
        if frame.pts == target:
            return to_rgb.reformat(frame, format="rgb24").to_ndarray(), last_shown
        if frame.pts > target:
            break
    return None, last_shown

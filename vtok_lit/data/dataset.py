"""A map-style dataset of manifest clips: sampled, resized frames with their captions and questions."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vtok_lit.data.manifest import ManifestRecord
from vtok_lit.data.video_io import (
    VIDEO_BACKENDS,
    FrameSampling,
    VideoBackend,
    VideoDecodeError,
    VideoTooShortError,
    check_frame_sampling,
    read_clip,
)

BadVideoPolicy = Literal["raise", "skip"]
BAD_VIDEO_POLICIES: tuple[str, ...] = ("raise", "skip")
# What a broken or unsuitable video file raises; anything else is a bug and always propagates.
BAD_VIDEO_ERRORS = (FileNotFoundError, VideoDecodeError, VideoTooShortError)


class VideoTextDataset(Dataset):
    """Clips of a manifest, each read as ``num_frames`` sampled frames resized to a square.

    Frames are sampled inside the record's segment (``start``/``end``) when it names one. An item is
    a dict with ``"video"`` (``(T, 3, H, W)`` float32 in ``[0, 1]``), ``"frame_indices"`` (``(T,)``
    long, in the whole video), ``"caption"`` (str), ``"questions"`` (list of dicts with ``question``,
    ``answer``, ``category`` and ``options``), ``"path"`` (str) and ``"meta"`` (the record's extra keys). With
    ``bad_video_policy="skip"`` an unreadable clip gives None; :func:`collate_video_text` drops it.
    """

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        num_frames: int = 16,
        frame_sampling: FrameSampling = "uniform",
        frame_stride: int = 1,
        target_fps: float | None = None,
        image_size: int = 64,
        bad_video_policy: BadVideoPolicy = "raise",
        video_backend: VideoBackend = "pyav",
        cache_decoded_clips: bool = False,
    ) -> None:
        """Create the dataset.

        Args:
            records: The clips, e.g. from :func:`vtok_lit.data.manifest.read_manifest`.
            num_frames: Frames sampled from each clip.
            frame_sampling: How frames are chosen, see :func:`vtok_lit.data.video_io.sample_frame_indices`.
            frame_stride: Step between frames for ``"stride"`` sampling.
            target_fps: Frame rate to resample to for ``"fps"`` sampling.
            image_size: Side of the square frames returned: the shorter side is resized to it
                (bilinear, antialiased) and the longer one centre-cropped.
            bad_video_policy: ``"raise"`` re-raises a missing, undecodable or too short video's
                error naming the manifest line; ``"skip"`` warns and returns None for it.
            video_backend: The decoder: ``"pyav"`` or ``"decord"``; both give the frames of a
                sequential decode.
            cache_decoded_clips: Keep each clip's decoded frames (uint8, at the video's own size)
                after its first read, so later epochs skip decoding; for corpora that fit in memory.
                Every process that reads the dataset (each DataLoader worker) holds its own cache.
        """
        check_frame_sampling(num_frames, frame_sampling, frame_stride, target_fps)
        if image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {image_size}")
        if bad_video_policy not in BAD_VIDEO_POLICIES:
            raise ValueError(
                f"bad_video_policy must be one of {BAD_VIDEO_POLICIES}, not {bad_video_policy!r}"
            )
        if video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"video_backend must be one of {VIDEO_BACKENDS}, not {video_backend!r}")
        self.video_backend = video_backend
        self.records = list(records)
        self.num_frames = num_frames
        self.frame_sampling = frame_sampling
        self.frame_stride = frame_stride
        self.target_fps = target_fps
        self.image_size = image_size
        self.bad_video_policy = bad_video_policy
        self.cache_decoded_clips = cache_decoded_clips
        self._decoded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        decoded = self._decoded.get(index)
        if decoded is None:
            try:
                decoded = read_clip(
                    record.video,
                    self.num_frames,
                    self.frame_sampling,
                    self.frame_stride,
                    self.target_fps,
                    self.video_backend,
                    record.start,
                    record.end,
                )
            except BAD_VIDEO_ERRORS as err:
                if self.bad_video_policy == "raise":
                    raise type(err)(f"{record.location}: {err}") from err
                warnings.warn(f"{record.location}: skipping {record.video}: {err}", stacklevel=2)
                return None
            if self.cache_decoded_clips:
                self._decoded[index] = decoded
        frames, frame_indices = decoded
        return {
            "video": square_resize(frames, self.image_size),
            "frame_indices": frame_indices.clone(),
            "caption": record.caption,
            "questions": [dataclasses.asdict(pair) for pair in record.qa],
            "path": str(record.video),
            "meta": record.meta,
        }


def square_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop frames to a square and resize it to ``size`` (bilinear, antialiased).

    Cropping the central square of the longer side first and then resizing gives the same picture
    as resizing the shorter side and then cropping, for less work.

    Args:
        frames: ``(T, H, W, 3)`` uint8.
        size: Output side.

    Returns:
        ``(T, 3, size, size)`` float32 in ``[0, 1]``.
    """
    height, width = frames.shape[1:3]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[:, top : top + side, left : left + side].permute(0, 3, 1, 2).float().div_(255)
    if side == size:
        return square.contiguous()
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    # Bilinear weights are convex, but float rounding can step a hair outside [0, 1].
    return resized.clamp_(0.0, 1.0)


def collate_video_text(items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Batch dataset items, dropping the None a skipped clip gives.

    Returns:
        ``"video"`` ``(B, T, 3, H, W)``, ``"frame_indices"`` ``(B, T)``, lists ``"caption"``,
        ``"questions"``, ``"path"`` and ``"meta"``, and ``"num_skipped"`` (items dropped from this
        batch); None when every item was skipped.
    """
    kept = [item for item in items if item is not None]
    if not kept:
        return None
    return {
        "video": torch.stack([item["video"] for item in kept]),
        "frame_indices": torch.stack([item["frame_indices"] for item in kept]),
        "caption": [item["caption"] for item in kept],
        "questions": [item["questions"] for item in kept],
        "path": [item["path"] for item in kept],
        "meta": [item["meta"] for item in kept],
        "num_skipped": len(items) - len(kept),
    }

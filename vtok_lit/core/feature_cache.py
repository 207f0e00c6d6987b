"""A disk cache of frozen frame-encoder features: a clip's feature maps are computed once, not every epoch.

With the frame encoder frozen (the paper's setting) its ``(T, C, h, w)`` features of a clip depend only
on the clip's frames and the encoder, so :func:`encode_frames_cached` reads them back instead of
running the encoder again. The frames are assumed to be a fixed function of the video file, the frame
indices and the frame size, as :class:`vtok_lit.data.VideoTextDataset` reads them: a random
augmentation before the encoder would be frozen into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vtok_lit.core.tokenizers import VideoTokenizer

# What torch.load raises on a truncated, empty or foreign file.
_UNREADABLE_ERRORS = (OSError, EOFError, RuntimeError, pickle.UnpicklingError)


@dataclass(frozen=True)
class FeatureCacheKey:
    """Everything the features of one clip depend on; change any field and the cache misses.

    Attributes:
        path: The video file, absolute.
        file_size: Its size in bytes; with the mtime, a replaced or re-encoded file gives a new key.
        file_mtime_ns: Its modification time in nanoseconds.
        frame_indices: The frames of the file that were read, in clip order.
        encoder_identity: :attr:`vtok_lit.core.FrameEncoder.identity` (configuration and weights).
        frame_size: ``(H, W)`` of the frames given to the encoder.
    """

    path: str
    file_size: int
    file_mtime_ns: int
    frame_indices: tuple[int, ...]
    encoder_identity: str
    frame_size: tuple[int, int]

    @classmethod
    def for_clip(
        cls,
        path: str | os.PathLike,
        frame_indices: Sequence[int],
        encoder_identity: str,
        frame_size: Sequence[int],
    ) -> FeatureCacheKey:
        """The key of a clip read from ``path`` (which must exist: its size and mtime are part of the key)."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        height, width = frame_size
        return cls(
            str(resolved),
            stat.st_size,
            stat.st_mtime_ns,
            tuple(int(index) for index in frame_indices),
            encoder_identity,
            (int(height), int(width)),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class FrameFeatureCache:
    """Per-clip frame features ``(T, C, h, w)`` in a folder, one ``<sha256 of the key>.pt`` file a clip.

    Files are written to a temporary name and moved into place with ``os.replace``, so a reader sees a
    whole file or none, and processes sharing the folder (DDP ranks) may write the same key at once:
    they write the same features. A file that cannot be read is a miss, with a warning naming it, and
    is overwritten by the recomputed features. Files of stale keys (a replaced video, other weights)
    are never read again but stay on disk until the folder is deleted.
    """

    def __init__(self, directory: str | os.PathLike, float16: bool = False) -> None:
        """
        Args:
            directory: Folder of the cache files; created when missing.
            float16: Store features as float16: half the disk space and reading, at the cost of
                rounding them.
        """
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage_dtype = torch.float16 if float16 else torch.float32

    def file_of(self, key: FeatureCacheKey) -> Path:
        """The cache file of ``key`` (it may not exist)."""
        return self.directory / f"{hashlib.sha256(key.to_json().encode()).hexdigest()}.pt"

    def get(self, key: FeatureCacheKey) -> torch.Tensor | None:
        """The cached ``(T, C, h, w)`` CPU features of ``key``, or None on a miss."""
        file = self.file_of(key)
        if not file.is_file():
            return None
        try:
            entry = torch.load(file, map_location="cpu", weights_only=True)
        except _UNREADABLE_ERRORS as error:
            warnings.warn(
                f"feature cache file {file} is unreadable ({type(error).__name__}); recomputing it",
                stacklevel=2,
            )
            return None
        features = entry.get("features") if isinstance(entry, dict) else None
        if (
            not isinstance(features, torch.Tensor)
            or entry.get("key") != key.to_json()
            or features.dim() != 4
            or len(features) != len(key.frame_indices)
        ):
            warnings.warn(
                f"feature cache file {file} does not hold this clip's features; recomputing it", stacklevel=2
            )
            return None
        return features

    def put(self, key: FeatureCacheKey, features: torch.Tensor) -> None:
        """Store the ``(T, C, h, w)`` features of ``key`` (in :attr:`storage_dtype`, on the CPU)."""
        target = self.file_of(key)
        # clone(): torch.save would otherwise write the whole batch a slice of it views.
        entry = {"key": key.to_json(), "features": features.detach().to("cpu", self.storage_dtype).clone()}
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{target.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(entry, file)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def encode_frames_cached(
    tokenizer: VideoTokenizer,
    video: torch.Tensor,
    paths: Sequence[str],
    frame_indices: torch.Tensor,
    cache: FrameFeatureCache,
) -> torch.Tensor:
    """:meth:`VideoTokenizer.encode_frames` through a feature cache: ``(B, T, 3, H, W) -> (B, T, C, h, w)``.

    Clips found in the cache are read from it; the frame encoder runs once, batched and without
    gradients, on the others, whose features are then stored. Every clip's features come back
    rounded to the cache's storage dtype, so the epoch that fills the cache sees what later ones read.

    Args:
        tokenizer: The tokenizer whose (frozen) frame encoder computes the features.
        video: The clips' frames, as read from ``paths``.
        paths: The video file of each clip (a batch's ``"path"``).
        frame_indices: ``(B, T)`` the frames of each file in ``video`` (a batch's ``"frame_indices"``).
        cache: Where features are read and stored.

    Returns:
        The features in batch order, in the dtype and on the device of ``video``.

    Raises:
        ValueError: The frame encoder has trainable parameters (its features would go stale), or
            ``paths``/``frame_indices`` do not describe the clips of ``video``.
    """
    encoder = tokenizer.frame_encoder
    trainable = [name for name, parameter in encoder.named_parameters() if parameter.requires_grad]
    if trainable:
        raise ValueError(
            f"a feature cache needs a frozen frame encoder, but {type(encoder).__name__} has "
            f"{len(trainable)} trainable parameters ({trainable[0]}, ...): freeze it (freeze_tokenizer=True "
            "on the module, or freeze=True on OpenCLIPFrameEncoder) or unset feature_cache_dir"
        )
    batch, num_frames = video.shape[:2]
    if len(paths) != batch or tuple(frame_indices.shape) != (batch, num_frames):
        raise ValueError(
            f"{len(paths)} paths and frame_indices of shape {tuple(frame_indices.shape)} do not describe "
            f"a video batch of shape {tuple(video.shape)}: expected {batch} paths and ({batch}, {num_frames})"
        )
    identity = encoder.identity
    keys = [
        FeatureCacheKey.for_clip(path, indices, identity, video.shape[-2:])
        for path, indices in zip(paths, frame_indices.tolist(), strict=True)
    ]
    features = [cache.get(key) for key in keys]
    missing = [index for index, clip_features in enumerate(features) if clip_features is None]
    if missing:
        with torch.no_grad():
            computed = tokenizer.encode_frames(video[missing]).to(cache.storage_dtype)
        for index, clip_features in zip(missing, computed, strict=True):
            cache.put(keys[index], clip_features)
            features[index] = clip_features
    return torch.stack([clip_features.to(video.device) for clip_features in features]).to(video.dtype)

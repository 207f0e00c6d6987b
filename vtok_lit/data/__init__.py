"""Video reading, manifests, the built-in MotionShapes corpus and the one DataModule."""

from vtok_lit.data.datamodule import VideoTextDataModule
from vtok_lit.data.dataset import VideoTextDataset, collate_video_text, square_resize
from vtok_lit.data.manifest import ManifestError, ManifestRecord, QAPair, read_manifest, write_manifest
from vtok_lit.data.motionshapes import (
    QUESTION_CATEGORIES,
    CorpusFolderError,
    MotionShapesConfig,
    ensure_motionshapes,
    generate_motionshapes,
)
from vtok_lit.data.video_io import (
    VideoDecodeError,
    VideoTooShortError,
    read_clip,
    read_frames,
    sample_frame_indices,
    video_info,
    write_video,
)

__all__ = [
    "QUESTION_CATEGORIES",
    "ManifestError",
    "ManifestRecord",
    "MotionShapesConfig",
    "QAPair",
    "VideoDecodeError",
    "VideoTextDataModule",
    "VideoTextDataset",
    "VideoTooShortError",
    "collate_video_text",
    "CorpusFolderError",
    "ensure_motionshapes",
    "generate_motionshapes",
    "read_clip",
    "read_frames",
    "read_manifest",
    "sample_frame_indices",
    "square_resize",
    "video_info",
    "write_manifest",
    "write_video",
]

"""Callbacks: media and tables in TensorBoard, a checkpoint on interrupt, data checks, prediction files,
the changed-pixel weight schedule."""

from vtok_lit.callbacks.changed_pixel_schedule import ChangedPixelWeightDecay
from vtok_lit.callbacks.data_guard import NoUsableDataError, RequireUsableData
from vtok_lit.callbacks.generated_video_logging import GeneratedVideoLogger
from vtok_lit.callbacks.interrupt import InterruptCheckpoint
from vtok_lit.callbacks.prediction_table import PredictionTableLogger
from vtok_lit.callbacks.prediction_writer import PredictionWriter
from vtok_lit.callbacks.video_logging import ReconstructionLogger, tensorboard_writers

__all__ = [
    "ChangedPixelWeightDecay",
    "GeneratedVideoLogger",
    "InterruptCheckpoint",
    "NoUsableDataError",
    "PredictionTableLogger",
    "PredictionWriter",
    "RequireUsableData",
    "ReconstructionLogger",
    "tensorboard_writers",
]

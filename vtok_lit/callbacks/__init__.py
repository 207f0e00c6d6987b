"""Callbacks that write media and tables to TensorBoard."""

from vtok_lit.callbacks.generated_video_logging import GeneratedVideoLogger
from vtok_lit.callbacks.prediction_table import PredictionTableLogger
from vtok_lit.callbacks.video_logging import ReconstructionLogger, tensorboard_writers

__all__ = ["GeneratedVideoLogger", "PredictionTableLogger", "ReconstructionLogger", "tensorboard_writers"]

"""Callbacks that write media and tables to TensorBoard."""

from vtok_lit.callbacks.prediction_table import PredictionTableLogger
from vtok_lit.callbacks.video_logging import ReconstructionLogger, tensorboard_writers

__all__ = ["PredictionTableLogger", "ReconstructionLogger", "tensorboard_writers"]

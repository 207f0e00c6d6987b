"""Thin LightningModules over the VTok core."""

from vtok_lit.modules.base import CheckpointMismatchError, VTokModule
from vtok_lit.modules.text_to_video import TextToVideo
from vtok_lit.modules.tokenizer_pretraining import TokenizerPretraining
from vtok_lit.modules.video_llm import VideoLLM

__all__ = ["CheckpointMismatchError", "TextToVideo", "TokenizerPretraining", "VTokModule", "VideoLLM"]

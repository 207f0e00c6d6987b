"""Thin LightningModules over the VTok core."""

from vtok_lit.modules.base import VTokModule
from vtok_lit.modules.checkpoints import CheckpointMismatchError
from vtok_lit.modules.text_to_video import TextToVideo
from vtok_lit.modules.tokenizer_pretraining import TokenizerPretraining
from vtok_lit.modules.unified import UnifiedVideoLM
from vtok_lit.modules.video_llm import VideoLLM

__all__ = [
    "CheckpointMismatchError",
    "TextToVideo",
    "TokenizerPretraining",
    "UnifiedVideoLM",
    "VTokModule",
    "VideoLLM",
]

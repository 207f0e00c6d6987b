"""The VTok core: plain ``nn.Module``s shared by every LightningModule (no Lightning here)."""

from vtok_lit.core.caption_contrast import CaptionContrastObjective
from vtok_lit.core.feature_cache import FrameFeatureCache, encode_frames_cached
from vtok_lit.core.frame_encoders import ConvFrameEncoder, FrameEncoder, ViTFrameEncoder
from vtok_lit.core.hf_language_model import HFCausalLM
from vtok_lit.core.language_models import LanguageModel, LMOutput, TransformerBlock, TransformerLM
from vtok_lit.core.open_clip_encoder import OpenCLIPFrameEncoder
from vtok_lit.core.residual_objectives import (
    ChangeMapObjective,
    ForegroundMotionObjective,
    ResidualObjective,
)
from vtok_lit.core.schedules import WarmupCosineSchedule
from vtok_lit.core.text_to_video import TextToVideoModel
from vtok_lit.core.text_tokenizers import ByteTokenizer, HFTokenizer, OpenCLIPTokenizer, TextTokenizer
from vtok_lit.core.tokenizers import (
    FrameSamplingTokenizer,
    KeyFrameTokenizer,
    VideoTokenizer,
    VTokTokenizer,
    merge_to_grid_tokens,
    pool_to_grid_tokens,
)
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.unified import UnifiedVideoModel
from vtok_lit.core.video_decoders import FlowMatchingVideoDecoder, RegressionVideoDecoder, VideoDecoder
from vtok_lit.core.video_qa import QuestionRow, VideoQuestionAnswering

__all__ = [
    "ByteTokenizer",
    "CaptionContrastObjective",
    "ChangeMapObjective",
    "HFCausalLM",
    "HFTokenizer",
    "LMOutput",
    "LanguageModel",
    "OpenCLIPTokenizer",
    "QuestionRow",
    "TextToVideoModel",
    "TextTokenizer",
    "TransformerBlock",
    "TransformerLM",
    "ConvFrameEncoder",
    "FlowMatchingVideoDecoder",
    "FrameEncoder",
    "ForegroundMotionObjective",
    "FrameFeatureCache",
    "FrameSamplingTokenizer",
    "KeyFrameTokenizer",
    "OpenCLIPFrameEncoder",
    "RegressionVideoDecoder",
    "ResidualObjective",
    "TokenKind",
    "VTokTokenizer",
    "ViTFrameEncoder",
    "VideoDecoder",
    "UnifiedVideoModel",
    "VideoQuestionAnswering",
    "VideoTokenizer",
    "VideoTokens",
    "WarmupCosineSchedule",
    "encode_frames_cached",
    "merge_to_grid_tokens",
    "pool_to_grid_tokens",
]

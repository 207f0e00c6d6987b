"""torchmetrics Metrics and scoring for any benchmark: answers, categories, clip judges, temporal quality,
error over a pixel mask, SSIM."""

from vtok_lit.metrics.answer_scoring import AnswerAccuracy, is_correct, normalize_answer
from vtok_lit.metrics.category_accuracy import CategoryAccuracy
from vtok_lit.metrics.clip_judge import ClipJudge, judge_clips
from vtok_lit.metrics.masked_error import MaskedMeanSquaredError
from vtok_lit.metrics.residual_use import ResidualUse
from vtok_lit.metrics.structural_similarity import StructuralSimilarity
from vtok_lit.metrics.temporal_quality import TemporalQuality

__all__ = [
    "AnswerAccuracy",
    "CategoryAccuracy",
    "ClipJudge",
    "MaskedMeanSquaredError",
    "ResidualUse",
    "StructuralSimilarity",
    "TemporalQuality",
    "is_correct",
    "judge_clips",
    "normalize_answer",
]

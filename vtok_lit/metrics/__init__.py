"""torchmetrics Metrics for the kit's benchmarks, and the rule-based MotionShapes judge."""

from vtok_lit.metrics.category_accuracy import CategoryAccuracy, normalize_answer
from vtok_lit.metrics.motionshapes_judge import MotionShapesJudge
from vtok_lit.metrics.residual_use import ResidualUse
from vtok_lit.metrics.temporal_quality import TemporalQuality

__all__ = ["CategoryAccuracy", "MotionShapesJudge", "ResidualUse", "TemporalQuality", "normalize_answer"]

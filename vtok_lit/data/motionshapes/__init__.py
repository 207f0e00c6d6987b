"""MotionShapes, the built-in benchmark: its corpus generator, its vocabulary and its judge."""

from vtok_lit.data.motionshapes.corpus import (
    CorpusFolderError,
    MotionShapesConfig,
    ensure_motionshapes,
    generate_motionshapes,
)
from vtok_lit.data.motionshapes.judge import MotionShapesJudge
from vtok_lit.data.motionshapes.vocabulary import (
    BACKGROUND,
    COLORS,
    QUESTION_CATEGORIES,
    SHAPES,
    shape_mask,
)

__all__ = [
    "BACKGROUND",
    "COLORS",
    "QUESTION_CATEGORIES",
    "SHAPES",
    "CorpusFolderError",
    "MotionShapesConfig",
    "MotionShapesJudge",
    "ensure_motionshapes",
    "generate_motionshapes",
    "shape_mask",
]

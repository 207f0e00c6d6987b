"""MotionShapes, the built-in benchmark: its corpus generator."""

from vtok_lit.data.motionshapes.corpus import (
    BACKGROUND,
    COLORS,
    QUESTION_CATEGORIES,
    SHAPES,
    MotionShapesConfig,
    ensure_motionshapes,
    generate_motionshapes,
    shape_mask,
)

__all__ = [
    "BACKGROUND",
    "COLORS",
    "QUESTION_CATEGORIES",
    "SHAPES",
    "MotionShapesConfig",
    "ensure_motionshapes",
    "generate_motionshapes",
    "shape_mask",
]

"""The MotionShapes vocabulary: its shapes, colours, sizes, motions, states and question categories.

The corpus draws clips from these words and the judge reads them back, so both take them from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (0.86, 0.16, 0.16),
    "green": (0.16, 0.71, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "yellow": (0.92, 0.82, 0.16),
}
# Half the extent of a shape (circle radius, half a square's side) as a fraction of the frame side.
SIZES = {"small": 0.07, "large": 0.12}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
STATES = ("grows", "fades", "unchanged")
QUESTION_CATEGORIES = ("counting", "direction", "relative_position", "size", "color", "state", "motion")
BACKGROUND = 0.5
# The question of each kind, ``{name}`` and ``{other}`` standing for an object's "<color> <shape>":
# the corpus asks them and the judge recognises them. Both relative-position kinds are of the
# "relative_position" category.
QUESTION_TEMPLATES = {
    "counting": "How many objects are there?",
    "direction": "Which way does the {name} move?",
    "horizontal": "At the end, is the {name} left of or right of the {other}?",
    "vertical": "At the end, is the {name} above or below the {other}?",
    "size": "What size is the {name}?",
    "color": "What color is the {shape}?",
    "state": "What happens to the {name}?",
    "motion": "Is the {name} moving or still?",
}


def shape_mask(shape: str, dx: Array, dy: Array, half: Array | float) -> Array:
    """Pixels inside ``shape``, from offsets to its centre and its half size (broadcast).

    Works on numpy arrays and torch tensors alike, so the judge draws the shapes the corpus draws.
    """
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (abs(dx) <= half) & (abs(dy) <= half)
    # An upward triangle: apex at dy = -half, base of width 2 * half at dy = +half.
    return (abs(dy) <= half) & (abs(dx) <= (dy + half) / 2)

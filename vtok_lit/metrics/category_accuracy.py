"""Exact-match accuracy per question category, as in TV-Align style benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

TV_ALIGN_CATEGORIES = ("counting", "direction", "relative_position", "size", "color", "state", "motion")


def normalize_answer(text: str) -> str:
    """Lower-case, trim, drop a trailing full stop and collapse spaces, so "Left." matches "left"."""
    return " ".join(text.strip().lower().rstrip(".").split())


class CategoryAccuracy(Metric):
    """Accuracy of predictions per category and overall; sums are reduced across processes.

    ``compute()`` returns ``{category: accuracy, ..., "overall": accuracy}`` for the categories that
    had at least one sample (an absent category would read as 0% and mislead).
    """

    full_state_update = False

    def __init__(self, categories: Sequence[str] = TV_ALIGN_CATEGORIES) -> None:
        super().__init__()
        self.categories = tuple(categories)
        self.add_state("correct", default=torch.zeros(len(self.categories)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.categories)), dist_reduce_fx="sum")

    def update(self, categories: Sequence[str], correct: Sequence[bool] | torch.Tensor) -> None:
        """Count samples: the category of each and whether its prediction was right."""
        for category, is_correct in zip(categories, correct, strict=True):
            if category not in self.categories:
                raise ValueError(f"Unknown category {category!r}; expected one of {list(self.categories)}.")
            index = self.categories.index(category)
            self.total[index] += 1
            self.correct[index] += float(is_correct)

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.total > 0
        result = {
            category: self.correct[index] / self.total[index]
            for index, category in enumerate(self.categories)
            if seen[index]
        }
        result["overall"] = self.correct.sum() / self.total.sum().clamp(min=1)
        return result

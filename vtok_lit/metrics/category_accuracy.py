"""Accuracy per question category and overall, for whatever categories a benchmark's data has."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class CategoryAccuracy(Metric):
    """Accuracy of predictions per category and overall; sums are reduced across processes.

    The categories are fixed when the metric is made (e.g. from the data at setup), so every
    process holds the same states. A sample without a category (None) counts in ``"overall"`` only.
    ``compute()`` returns ``{category: accuracy, ..., "overall": accuracy}`` for the categories that
    had at least one sample (an absent category would read as 0% and mislead).
    """

    full_state_update = False
    RESERVED: tuple[str, ...] = ("overall",)

    def __init__(self, categories: Sequence[str] = ()) -> None:
        """
        Args:
            categories: The categories to report.
        """
        super().__init__()
        self.categories = tuple(categories)
        reserved = [category for category in self.categories if category in self.RESERVED]
        if reserved:
            raise ValueError(
                f"question category {reserved[0]!r} is a name the accuracy reports itself "
                f"({', '.join(self.RESERVED)}): rename it in the data"
            )
        self.add_state("correct", default=torch.zeros(len(self.categories)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.categories)), dist_reduce_fx="sum")
        self.add_state("correct_all", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("total_all", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, categories: Sequence[str | None], correct: Sequence[bool] | torch.Tensor) -> None:
        """Count samples: the category of each (None for none) and whether its prediction was right."""
        for category, is_correct in zip(categories, correct, strict=True):
            if category is not None:
                if category not in self.categories:
                    raise ValueError(
                        f"Unknown category {category!r}; expected one of {list(self.categories)} "
                        "(the modules take them from their VideoTextDataModule at setup)."
                    )
                index = self.categories.index(category)
                self.total[index] += 1
                self.correct[index] += float(is_correct)
            self.total_all += 1
            self.correct_all += float(is_correct)

    def compute(self) -> dict[str, torch.Tensor]:
        result = {
            category: self.correct[index] / self.total[index]
            for index, category in enumerate(self.categories)
            if self.total[index] > 0
        }
        result["overall"] = self.correct_all / self.total_all.clamp(min=1)
        return result

"""torchmetrics Metrics for the kit's benchmarks."""

from vtok_lit.metrics.category_accuracy import CategoryAccuracy, normalize_answer

__all__ = ["CategoryAccuracy", "normalize_answer"]

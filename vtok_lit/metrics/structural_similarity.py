"""SSIM whose Gaussian window is two small matrix products a frame instead of a 2-D convolution, and
the Gaussian blur of its window."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """``(size,)`` weights of a sampled Gaussian of std ``sigma`` centred on the middle tap, summing to 1."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(..., H, W)`` images filtered in H and W by a Gaussian of std ``sigma`` pixels (window to 3
    sigma, edges repeated): how a softer reconstruction than the real frames looks."""
    radius = int(3 * sigma + 0.5)
    window = gaussian_window(2 * radius + 1, sigma).to(images)
    flat = images.reshape(-1, 1, *images.shape[-2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), window.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), window.view(1, 1, -1, 1))
    return flat.view_as(images)


def window_matrix(length: int, window: torch.Tensor) -> torch.Tensor:
    """``(length, length)`` ``M`` with ``M @ x`` = ``x`` (along one axis of ``length`` samples)
    reflection-padded by half the window, then filtered by it (valid positions only): the same
    length out as in."""
    half = len(window) // 2
    if half >= length:
        raise ValueError(
            f"an SSIM window of {len(window)} taps needs images larger than {half} pixels a side"
        )
    matrix = torch.zeros(length, length, dtype=torch.float64)
    for out in range(length):
        for tap, weight in enumerate(window):
            source = out + tap - half
            source = -source if source < 0 else source
            source = 2 * (length - 1) - source if source >= length else source
            matrix[out, source] += weight
    return matrix


class StructuralSimilarity(Metric):
    """The mean SSIM of image pairs (Wang et al. 2004), the values of torchmetrics'
    ``StructuralSimilarityIndexMeasure`` with its defaults (an 11-tap Gaussian window of std 1.5 on
    reflection-padded images, k1 = 0.01, k2 = 0.03, the map averaged over every pixel, then over the
    images).

    The window is separable, and with the padding folded in it is one ``(H, H)`` and one ``(W, W)``
    matrix, so each of the five local moments is two batched matrix products. On CPU the depthwise
    11x11 convolution torchmetrics runs took about half of a quickstart validation.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> None:
        """
        Args:
            data_range: The span of pixel values (1.0 for images in [0, 1]).
            window_size: Taps of the Gaussian window (odd).
            sigma: Standard deviation of the window, in pixels.
        """
        super().__init__()
        if window_size % 2 == 0 or window_size < 1:
            raise ValueError(f"window_size must be an odd positive number, got {window_size}")
        self.data_range = data_range
        self.window = gaussian_window(window_size, sigma)
        self._matrices: dict[tuple, torch.Tensor] = {}
        self.add_state("similarity_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def filter(self, images: torch.Tensor) -> torch.Tensor:
        """``(..., H, W)`` images, each filtered by the window along both axes."""
        height, width = images.shape[-2:]
        rows, columns = (self.matrix(length, images) for length in (height, width))
        return rows @ images @ columns.T

    def matrix(self, length: int, like: torch.Tensor) -> torch.Tensor:
        key = (length, like.device, like.dtype)
        if key not in self._matrices:
            self._matrices[key] = window_matrix(length, self.window).to(like)
        return self._matrices[key]

    def similarity(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N,)`` SSIM of each pair of ``(N, C, H, W)`` images."""
        if preds.shape != target.shape or preds.ndim != 4:
            raise ValueError(
                f"preds and target must be (N, C, H, W) of one shape, got {tuple(preds.shape)} and "
                f"{tuple(target.shape)}"
            )
        c1, c2 = (0.01 * self.data_range) ** 2, (0.03 * self.data_range) ** 2
        moments = self.filter(torch.stack([preds, target, preds * preds, target * target, preds * target]))
        mean_p, mean_t, square_p, square_t, product = moments
        variance_p = (square_p - mean_p**2).clamp(min=0)
        variance_t = (square_t - mean_t**2).clamp(min=0)
        covariance = product - mean_p * mean_t
        similarity_map = ((2 * mean_p * mean_t + c1) * (2 * covariance + c2)) / (
            (mean_p**2 + mean_t**2 + c1) * (variance_p + variance_t + c2)
        )
        return similarity_map.flatten(1).mean(-1)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Adds ``(N, C, H, W)`` image pairs."""
        similarity = self.similarity(preds, target)
        self.similarity_sum += similarity.sum().double()
        self.count += len(similarity)

    def compute(self) -> torch.Tensor:
        return (self.similarity_sum / self.count.clamp(min=1)).float()

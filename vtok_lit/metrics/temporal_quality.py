"""VBench-style temporal quality of clips, computed from pixels (and optionally frame features).

Four numbers in the spirit of VBench's temporal dimensions, each a plain function of a batch of
clips ``(B, T, 3, H, W)`` in ``[0, 1]`` and together the :class:`TemporalQuality` metric:

- temporal flicker: mean absolute difference of consecutive frames (lower is steadier); VBench
  reports ``1 - flicker`` on a 0-1 scale (its ``(255 - MAE) / 255``), given here as the score.
- motion smoothness: ``1 -`` the mean absolute error of predicting each middle frame as the average
  of its two neighbours; 1 for frames that change linearly in time (a still clip, a steady fade).
  VBench predicts the middle frame with a learned frame interpolator; the average is the
  weight-free stand-in, exact for linear change and close for slow motion.
- subject consistency: mean cosine similarity of every later frame's feature vector to the first
  frame's. VBench uses DINO features; pass any frame encoder's pooled features, or let the frames
  averaged over small cells stand in. Pixel vectors are all positive, so their cosines sit near 1
  for any two frames: compare the pixel-based value between models, do not read it absolutely.
- dynamic degree: fraction of clips that move. A clip's motion is, averaged over consecutive
  frame pairs, the largest change of any cell (a few pixels square) of the frames; averaging over
  a cell removes pixel noise that would make every clip look dynamic, while an edge moving
  across the cell still changes it. Cells of a fixed size in pixels keep noise and motion on the
  same footing at any resolution. VBench thresholds optical flow instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

MIN_FRAMES = 3  # motion smoothness needs a frame with a neighbour on each side


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[2] != 3 or video.shape[1] < MIN_FRAMES:
        raise ValueError(f"expected video (B, T, 3, H, W) with T >= {MIN_FRAMES}, got {tuple(video.shape)}")


def temporal_flicker(video: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of consecutive frames of each clip ``(B, T, 3, H, W)``; ``(B,)``."""
    _check_video(video)
    return (video[:, 1:] - video[:, :-1]).abs().flatten(1).mean(dim=1)


def motion_smoothness(video: torch.Tensor) -> torch.Tensor:
    """``1 -`` mean ``|x_t - (x_{t-1} + x_{t+1}) / 2|`` over the middle frames of each clip; ``(B,)``."""
    _check_video(video)
    midpoints = (video[:, :-2] + video[:, 2:]) / 2
    return 1 - (video[:, 1:-1] - midpoints).abs().flatten(1).mean(dim=1)


def coarse_frames(video: torch.Tensor, cell_size: int = 4) -> torch.Tensor:
    """Each frame of ``(B, T, 3, H, W)`` clips averaged over ``cell_size`` square cells.

    Returns:
        ``(B, T, 3 * (H // cell_size) * (W // cell_size))``.
    """
    _check_video(video)
    if min(video.shape[-2:]) < cell_size:
        raise ValueError(f"frames of {tuple(video.shape[-2:])} are smaller than a {cell_size} px cell")
    batch, frames = video.shape[:2]
    return F.avg_pool2d(video.flatten(0, 1), cell_size).reshape(batch, frames, -1)


def subject_consistency(frame_features: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of frames 2..T to frame 1, from ``(B, T, D)`` features; ``(B,)``."""
    if frame_features.ndim != 3 or frame_features.shape[1] < 2:
        raise ValueError(f"expected frame_features (B, T, D) with T >= 2, got {tuple(frame_features.shape)}")
    first = frame_features[:, :1]
    return F.cosine_similarity(frame_features[:, 1:], first, dim=-1).mean(dim=1)


def motion_magnitude(coarse: torch.Tensor) -> torch.Tensor:
    """Largest change of any cell between consecutive frames, averaged over the pairs; ``(B,)``.

    Args:
        coarse: ``(B, T, D)`` coarse frames, as :func:`coarse_frames` gives them.
    """
    return (coarse[:, 1:] - coarse[:, :-1]).abs().amax(dim=2).mean(dim=1)


class TemporalQuality(Metric):
    """Temporal flicker, motion smoothness, subject consistency and dynamic degree of clips.

    Sums over clips are reduced across processes, so the metric works under DDP. ``compute()``
    returns scalar tensors, means over the clips seen (NaN before any): ``"temporal_flicker"``
    (lower is steadier), ``"temporal_flicker_score"`` (VBench's ``1 - flicker``),
    ``"motion_smoothness"``, ``"subject_consistency"`` and ``"dynamic_degree"``. See the module
    docstring for what each measures.
    """

    full_state_update = False

    def __init__(self, dynamic_threshold: float = 0.05, cell_size: int = 4) -> None:
        """Create the metric.

        Args:
            dynamic_threshold: Motion (see :func:`motion_magnitude`, on the 0-1 intensity scale)
                above which a clip counts as dynamic. On 64 px MotionShapes clips with 4 px cells,
                clips with a moving object measure 0.058 and up, clips of still objects (with
                the corpus's pixel noise) 0.037 and below, and still ones that grow up to 0.06.
            cell_size: Side in pixels of the cells frames are averaged over, for the motion and
                for the pixel features that stand in when no frame features are given.
        """
        super().__init__()
        if dynamic_threshold < 0 or cell_size < 1:
            raise ValueError(
                f"need dynamic_threshold >= 0 and cell_size >= 1, got {dynamic_threshold} and {cell_size}"
            )
        self.dynamic_threshold = dynamic_threshold
        self.cell_size = cell_size
        for name in ("flicker", "smoothness", "consistency", "dynamic", "clips"):
            self.add_state(name, default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, video: torch.Tensor, frame_features: torch.Tensor | None = None) -> None:
        """Add a batch of clips.

        Args:
            video: ``(B, T, 3, H, W)`` clips in ``[0, 1]``, ``T >= 3``.
            frame_features: ``(B, T, D)`` per-frame features for subject consistency, e.g. a
                frame encoder's pooled output; None uses the frames averaged over cells.
        """
        _check_video(video)
        video = video.detach().float()
        coarse = coarse_frames(video, self.cell_size)
        features = coarse if frame_features is None else frame_features.detach().float()
        if features.shape[:2] != video.shape[:2]:
            raise ValueError(
                f"expected frame_features (B, T, D) = ({video.shape[0]}, {video.shape[1]}, D), "
                f"got {tuple(features.shape)}"
            )
        self.flicker += temporal_flicker(video).sum()
        self.smoothness += motion_smoothness(video).sum()
        self.consistency += subject_consistency(features).sum()
        self.dynamic += (motion_magnitude(coarse) > self.dynamic_threshold).sum()
        self.clips += video.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        flicker = self.flicker / self.clips
        return {
            "temporal_flicker": flicker,
            "temporal_flicker_score": 1 - flicker,
            "motion_smoothness": self.smoothness / self.clips,
            "subject_consistency": self.consistency / self.clips,
            "dynamic_degree": self.dynamic / self.clips,
        }

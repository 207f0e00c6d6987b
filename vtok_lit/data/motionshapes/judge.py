"""A judge that answers the MotionShapes questions from a clip's pixels, with no model weights.

In the text-to-video benchmark a model draws a clip from a MotionShapes caption; the judge answers
that caption's questions from the drawn frames, and its answers are scored against the corpus
answers (e.g. with :class:`~vtok_lit.metrics.AnswerAccuracy`).

How it reads a clip, looking only at the first and the last frame:

1. Colour: every pixel is modelled as the background blended toward one palette colour,
   ``pixel = background + alpha * (colour - background)``. Its ``alpha`` for each colour is the
   projection of ``pixel - background`` onto ``colour - background`` (after, from 64 px up, a
   small box blur that evens out noise), and the pixel goes to the colour that explains it best,
   if that colour leaves little unexplained and ``alpha`` is large enough. ``alpha`` follows a fading object's
   opacity down to the corpus's 0.2, so a faded object is still found, and its opacity is read too.
2. Objects: a colour with enough pixels in the first frame is one object (the corpus gives every
   object its own colour). Its area is its summed ``alpha`` over its opacity (the largest
   ``alpha``), so area and opacity do not mix when it fades.
3. Shape and size: each corpus shape is drawn at the size the object's area implies, with its
   centroid on the object's, the way the corpus draws it (see :func:`_fit_shape`); the one that
   matches the object's ``alpha`` map best is its shape, and that size (half the side of its
   bounding box) is its size.
4. Motion, state, position: the centre's displacement from the first to the last frame gives
   still/moving and the direction; the growth of the area and the fall of the opacity give the
   state; the centres in the last frame give the relative position along the axis the question
   names.

A question about an object the clip does not show (no such colour in the first frame, or that
colour in another shape) is answered :data:`UNKNOWN`, a word outside the corpus vocabulary, so it
always counts as wrong; so is a question about where an object that is gone from the last frame
ends up (such an object "fades"). A question that is none of the corpus templates raises
``ValueError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vtok_lit.data.motionshapes.vocabulary import COLORS, QUESTION_TEMPLATES, SHAPES, shape_mask
from vtok_lit.metrics.clip_judge import ClipJudge

UNKNOWN = "unknown"
# The corpus's default frame side: pixel counts are given for it, and shapes are drawn at it.
REFERENCE_SIDE = 64
MIN_SIDE = 32
# Area of each shape over its squared half size, and how far its centroid lies below its centre
# (in half sizes): the triangle points up, so its mass sits low.
_AREA_FACTOR = {"circle": math.pi, "square": 4.0, "triangle": 2.0}
_CENTROID_DROP = {"circle": 0.0, "square": 0.0, "triangle": 1 / 3}

_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES)
_NAME = rf"({_COLOR}) ({_SHAPE})"


def _pattern(template: str) -> re.Pattern:
    """A question template as a regex capturing each object's colour and shape (or the shape)."""
    pattern = re.escape(template)
    for field, group in (("name", _NAME), ("other", _NAME), ("shape", f"({_SHAPE})")):
        pattern = pattern.replace(re.escape("{" + field + "}"), group)
    return re.compile(pattern)


_TEMPLATES = {kind: _pattern(template) for kind, template in QUESTION_TEMPLATES.items()}


@dataclass(frozen=True)
class _Sighting:
    """One colour in one frame; lengths in pixels, ``centroid`` is ``(x, y)`` with y pointing down."""

    area: float
    opacity: float
    centroid: tuple[float, float]


@dataclass(frozen=True)
class _Object:
    """One object as the judge sees it; lengths are fractions of the frame side."""

    color: str
    shape: str
    fit_error: float  # of the shape template, per pixel of area
    half_size: float  # in the first frame
    start: tuple[float, float]
    end: tuple[float, float] | None  # None when the colour is gone from the last frame
    growth: float  # last-frame over first-frame half size
    fading: float  # last-frame over first-frame opacity


class MotionShapesJudge(ClipJudge):
    """Answers MotionShapes questions about a clip from its pixels, by rule.

    Each threshold is a fraction of the frame side (or, for pixel counts, given for a 64x64 frame
    and scaled with the frame area), so a 64-px clip resized to any square side from 32 px up is
    read the same way. Clips RENDERED small are not: objects drawn 4-5 px across at 32 px have their
    shapes read far less often (about 60% at 32 px and 80% at 48 px against 100% at 64 px, the
    200 held-out clips of each), so the judge's figures on such corpora are smoke checks.
    """

    def __init__(
        self,
        min_object_pixels: int = 20,
        min_alpha: float = 0.1,
        max_residual: float = 0.5,
        size_threshold: float = 0.095,
        still_threshold: float = 0.1,
        growth_threshold: float = 1.22,
        fade_threshold: float = 0.5,
        name_by_shape: bool = True,
    ) -> None:
        """Create the judge.

        Args:
            min_object_pixels: Fewest pixels of a colour, in a 64x64 frame, that make an object.
            min_alpha: Least blurred blend weight toward a colour for a pixel to show that colour
                (a faded corpus object keeps 0.2).
            max_residual: Largest share of a pixel's difference from the background that its
                colour may leave unexplained; more, and the pixel shows none of the palette.
            size_threshold: Half size (fraction of the side) from which an object is large; the
                corpus draws 0.07 (small) and 0.12 (large).
            still_threshold: Displacement of the centre from the first to the last frame
                (fraction of the side) below which an object is still; the corpus moves objects
                at least 0.16 (10 px of 64).
            growth_threshold: Last-frame over first-frame size from which an object grows; the
                corpus grows objects 1.5 times.
            fade_threshold: Last-frame over first-frame opacity below which an object fades; the
                corpus fades objects to 0.2.
            name_by_shape: Find the object a question names ("the red circle") by its colour and its
                fitted shape. False: by its colour alone (a clip's objects differ in colour), which
                reads what a clip shows of an object whose shape was drawn wrong: a diagnostic of how
                much of a score the shapes cost, not a benchmark reading.
        """
        if min_object_pixels < 1:
            raise ValueError(f"min_object_pixels must be at least 1, got {min_object_pixels}")
        if not 0 < min_alpha < 1 or not 0 < max_residual <= 1:
            raise ValueError(
                f"need 0 < min_alpha < 1 and 0 < max_residual <= 1, got {min_alpha}, {max_residual}"
            )
        self.min_object_pixels = min_object_pixels
        self.min_alpha = min_alpha
        self.max_residual = max_residual
        self.size_threshold = size_threshold
        self.still_threshold = still_threshold
        self.growth_threshold = growth_threshold
        self.fade_threshold = fade_threshold
        self.name_by_shape = name_by_shape
        self._palette = torch.tensor(list(COLORS.values()))  # (C, 3)

    def can_answer(self, question: str) -> bool:
        """Whether ``question`` is one of the MotionShapes question templates."""
        return any(template.fullmatch(question.strip()) for template in _TEMPLATES.values())

    def answer(self, video: torch.Tensor, question: str) -> str:
        """Answer one question about one clip.

        Args:
            video: ``(T, 3, H, W)`` frames in ``[0, 1]``, square, at least 32 px.
            question: One of the MotionShapes question templates.

        Returns:
            An answer in the corpus vocabulary, or :data:`UNKNOWN` when the object asked about
            is not in the clip.

        Raises:
            ValueError: The video has the wrong shape, or the question is no MotionShapes question.
        """
        kind, match = _parse(question)
        return self._answer(self._find_objects(video), kind, match)

    def answer_clips(self, videos: torch.Tensor, questions: Sequence[Sequence[str]]) -> list[list[str]]:
        """Answer each clip's questions, reading every clip once.

        Args:
            videos: ``(B, T, 3, H, W)`` frames in ``[0, 1]``.
            questions: For each clip, its questions.

        Returns:
            For each clip, the answers to its questions, as :meth:`answer` gives them.
        """
        if videos.ndim != 5 or len(videos) != len(questions):
            raise ValueError(
                f"expected videos (B, T, 3, H, W) and B lists of questions, got {tuple(videos.shape)} "
                f"and {len(questions)} lists"
            )
        answers = []
        for video, clip_questions in zip(videos, questions, strict=True):
            parsed = [_parse(question) for question in clip_questions]
            # A clip without questions (not a MotionShapes record) is not read at all.
            objects = self._find_objects(video) if parsed else []
            answers.append([self._answer(objects, kind, match) for kind, match in parsed])
        return answers

    def shapes(self, video: torch.Tensor) -> dict[str, str]:
        """The shape fitted to each colour found in a clip's first frame, e.g. ``{"red": "circle"}``.

        Args:
            video: ``(T, 3, H, W)`` frames in ``[0, 1]``, square, at least 32 px.
        """
        return {obj.color: obj.shape for obj in self._find_objects(video)}

    def _answer(self, objects: list[_Object], kind: str, match: re.Match) -> str:
        if kind == "counting":
            return str(len(objects))
        if kind == "color":
            candidates = [obj for obj in objects if obj.shape == match[1]]
            return min(candidates, key=lambda obj: obj.fit_error).color if candidates else UNKNOWN
        obj = self._named(objects, match[1], match[2])
        if kind in ("horizontal", "vertical"):
            other = self._named(objects, match[3], match[4])
            if obj is None or other is None or obj.end is None or other.end is None:
                return UNKNOWN
            if kind == "horizontal":
                return "left" if obj.end[0] < other.end[0] else "right"
            return "above" if obj.end[1] < other.end[1] else "below"
        if obj is None:
            return UNKNOWN
        if kind == "size":
            return "large" if obj.half_size >= self.size_threshold else "small"
        if kind == "state":
            if obj.growth >= self.growth_threshold:
                return "grows"
            return "fades" if obj.fading <= self.fade_threshold else "unchanged"
        if obj.end is None:
            return UNKNOWN
        dx, dy = (obj.end[axis] - obj.start[axis] for axis in (0, 1))
        if max(abs(dx), abs(dy)) < self.still_threshold:
            return "still"
        if kind == "motion":
            return "moving"
        if abs(dx) >= abs(dy):
            return "left" if dx < 0 else "right"
        return "up" if dy < 0 else "down"

    def _named(self, objects: list[_Object], color: str, shape: str) -> _Object | None:
        return next(
            (obj for obj in objects if obj.color == color and (obj.shape == shape or not self.name_by_shape)),
            None,
        )

    def _find_objects(self, video: torch.Tensor) -> list[_Object]:
        """The objects of a clip: the colours seen in its first frame."""
        if (
            video.ndim != 4
            or video.shape[1] != 3
            or video.shape[2] != video.shape[3]
            or video.shape[2] < MIN_SIDE
        ):
            raise ValueError(
                f"expected a video (T, 3, H, W) with H == W >= {MIN_SIDE}, got {tuple(video.shape)}"
            )
        side = video.shape[-1]
        frames = video[[0, -1]].detach().float().cpu()
        blur = _blur_size(side)
        first, last = (self._color_alpha(frame, blur) for frame in frames)
        min_pixels = self.min_object_pixels * (side / REFERENCE_SIDE) ** 2
        objects = []
        for index, color in enumerate(COLORS):
            start = _sight(first[index], min_pixels)
            if start is None:
                continue
            end = _sight(last[index], min_pixels)
            shape, half, fit_error = _fit_shape(first[index], start, blur)
            objects.append(
                _Object(
                    color=color,
                    shape=shape,
                    fit_error=fit_error,
                    half_size=half / side,
                    start=_centre(start, shape, side),
                    end=None if end is None else _centre(end, shape, side),
                    growth=0.0 if end is None else math.sqrt(end.area / start.area),
                    fading=0.0 if end is None else end.opacity / start.opacity,
                )
            )
        return objects

    def _color_alpha(self, frame: torch.Tensor, blur: int) -> torch.Tensor:
        """Blend weight of each palette colour at each pixel, zero where it is not the pixel's colour.

        Args:
            frame: ``(3, H, W)``.
            blur: Side of the box blur applied first.

        Returns:
            ``(C, H, W)`` in ``[0, 1]``, at most one colour nonzero at each pixel.
        """
        # The median of each channel is the background as long as objects cover under half the frame.
        background = frame.flatten(1).median(dim=1).values
        offset = F.avg_pool2d(
            (frame - background[:, None, None])[None],
            blur,
            stride=1,
            padding=blur // 2,
            count_include_pad=False,
        )[0]
        directions = self._palette - background  # (C, 3)
        # Clamped: a background of a palette colour would otherwise divide by zero.
        squared_norms = directions.square().sum(dim=1).clamp(min=1e-6)[:, None, None]
        dot = torch.einsum("khw,ck->chw", offset, directions)
        alpha = (dot / squared_norms).clamp(0.0, 1.0)
        offset_norm2 = offset.square().sum(dim=0)
        residual2 = offset_norm2 - 2 * alpha * dot + alpha.square() * squared_norms  # (C, H, W)
        best = residual2.argmin(dim=0, keepdim=True)
        explained = residual2.gather(0, best) <= self.max_residual**2 * offset_norm2
        keep = (
            (torch.arange(len(self._palette))[:, None, None] == best) & explained & (alpha >= self.min_alpha)
        )
        return torch.where(keep, alpha, 0.0)


def _sight(alpha: torch.Tensor, min_pixels: float) -> _Sighting | None:
    """Area, opacity and centroid of one colour's ``(H, W)`` blend weights; None if too few pixels."""
    if int((alpha > 0).sum()) < min_pixels:
        return None
    opacity = float(alpha.max())
    mass = float(alpha.sum())
    ys, xs = (torch.arange(n, dtype=alpha.dtype) + 0.5 for n in alpha.shape)
    centroid = (float((alpha.sum(0) * xs).sum()) / mass, float((alpha.sum(1) * ys).sum()) / mass)
    return _Sighting(area=mass / opacity, opacity=opacity, centroid=centroid)


def _parse(question: str) -> tuple[str, re.Match]:
    for kind, template in _TEMPLATES.items():
        match = template.fullmatch(question.strip())
        if match:
            return kind, match
    raise ValueError(f"not a MotionShapes question: {question!r}")


def _blur_size(side: int) -> int:
    """Side of the box blur that evens out pixel noise, growing with the frame.

    None below 64 px: resizing a clip down has already averaged its noise, and a blur would smear
    the few pixels a small shape has left.
    """
    return 2 * (side // REFERENCE_SIDE) + 1


def _fit_shape(alpha: torch.Tensor, sighting: _Sighting, blur: int) -> tuple[str, float, float]:
    """The corpus shape that best matches one colour's blend weights.

    Each shape is drawn the way the corpus draws it, at the half size its area implies and with
    its centroid on the sighting's: point-sampled on a 64 px grid, then resized to the frame like
    :class:`~vtok_lit.data.dataset.VideoTextDataset` resizes clips, and blurred like the frame.
    Small shapes on a pixel grid look much alike (a small circle is nearly square), so the drawing
    has to match the corpus's to tell them apart.

    Returns:
        The shape, its half size in pixels and its error: the summed absolute difference from the
        weights scaled to opacity 1, per pixel of area.
    """
    side = alpha.shape[-1]
    scale = REFERENCE_SIDE / side
    grid = torch.arange(REFERENCE_SIDE) + 0.5
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    observed = alpha / sighting.opacity
    x, y = sighting.centroid
    fits = []
    for shape in SHAPES:
        half = math.sqrt(sighting.area / _AREA_FACTOR[shape])
        centre_y = y - _CENTROID_DROP[shape] * half
        drawn = shape_mask(shape, xs - x * scale, ys - centre_y * scale, half * scale).float()[None, None]
        if side != REFERENCE_SIDE:
            drawn = F.interpolate(
                drawn, size=(side, side), mode="bilinear", antialias=True, align_corners=False
            )
        drawn = F.avg_pool2d(drawn[0], blur, stride=1, padding=blur // 2, count_include_pad=False)[0]
        fits.append((float((observed - drawn).abs().sum()) / sighting.area, shape, half))
    error, shape, half = min(fits)
    return shape, half, error


def _centre(sighting: _Sighting, shape: str, side: int) -> tuple[float, float]:
    """The centre of a shape (its bounding box's), as fractions of the frame side."""
    half = math.sqrt(sighting.area / _AREA_FACTOR[shape])
    x, y = sighting.centroid
    return x / side, (y - _CENTROID_DROP[shape] * half) / side

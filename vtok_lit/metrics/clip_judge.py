"""What a judge of generated clips is: it answers a benchmark's questions from a clip's pixels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch


class ClipJudge(ABC):
    """Answers questions about clips from their frames, for text-to-video alignment metrics.

    A judge knows the questions of its own benchmark (:meth:`can_answer`); the others, e.g. those of
    a user's data set, are skipped rather than scored wrong, so one judge applies to the records of
    its benchmark in any manifest.
    """

    @abstractmethod
    def can_answer(self, question: str) -> bool:
        """Whether ``question`` is one this judge reads off a clip."""

    @abstractmethod
    def answer_clips(self, videos: torch.Tensor, questions: Sequence[Sequence[str]]) -> list[list[str]]:
        """Answer each clip's questions.

        Args:
            videos: ``(B, T, 3, H, W)`` frames in ``[0, 1]``.
            questions: For each clip, questions :meth:`can_answer` accepts.

        Returns:
            For each clip, the answers to its questions.
        """


def judge_clips(
    judge: ClipJudge, videos: torch.Tensor, questions: Sequence[Sequence[Mapping[str, Any]]]
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The questions (manifest ``qa`` dicts) of each clip that ``judge`` reads, flattened, and its answers.

    Args:
        judge: The judge.
        videos: ``(B, T, 3, H, W)`` clips in ``[0, 1]``.
        questions: For each clip, its questions as dicts with ``"question"`` and ``"answer"``.
    """
    judged = [[qa for qa in clip if judge.can_answer(qa["question"])] for clip in questions]
    flat = [qa for clip in judged for qa in clip]
    if not flat:
        return [], []
    answers = judge.answer_clips(videos, [[qa["question"] for qa in clip] for clip in judged])
    return flat, [answer for clip in answers for answer in clip]

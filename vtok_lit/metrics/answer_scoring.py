"""Scoring answers to questions: normalised exact match, multiple choice, per-category accuracy.

Open-ended answers are compared the way VQA-style benchmarks (lmms-eval, lm-evaluation-harness)
do, after normalisation: lower case, punctuation and the articles "a", "an", "the" dropped, number
words written as digits ("Two." and "2" match). The raw match (the strings as written, only
surrounding whitespace ignored) is kept beside it, so a model that learns the format is told apart
from one that learns the content.

A multiple-choice question (``options`` in its record) is answered right when the generated text
names the right option, by its letter ("B", "(B)", "B) right") or by its text after
normalisation. Scoring by the option to which the LM gives the highest log-likelihood is the other
way (:func:`vtok_lit.core.sequences.answer_log_likelihood`, :func:`likelihood_choices`);
:class:`AnswerAccuracy` reports both.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vtok_lit.data.manifest import option_index
from vtok_lit.metrics.category_accuracy import CategoryAccuracy

_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_PUNCTUATION = str.maketrans({character: " " for character in string.punctuation})
# A letter alone or followed by ".", ")" or ":", optionally in brackets: "B", "(b)", "B. right";
# "a blue square" is text, not the letter A.
_LETTER = re.compile(r"\(?([A-Za-z])\s*(?:[.):]|\)?$)")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, number words as digits, single spaces."""
    words = text.lower().translate(_PUNCTUATION).split()
    return " ".join(_NUMBER_WORDS.get(word, word) for word in words if word not in _ARTICLES)


def question_prompt(question: str, options: Sequence[str] | None = None) -> str:
    """The question as the LM reads it: a multiple-choice question lists its options by letter,
    ``"Which way? (A) left (B) right"``, so an answer may name one by its letter."""
    if not options:
        return question
    return " ".join([question, *(f"({chr(ord('A') + i)}) {option}" for i, option in enumerate(options))])


def chosen_option(prediction: str, options: Sequence[str]) -> int | None:
    """The index of the option a generated answer names, by its text or its letter; None if none."""
    normalized = normalize_answer(prediction)
    for index, option in enumerate(options):
        if normalized == normalize_answer(option):
            return index
    letter = _LETTER.match(prediction.strip())
    if letter is None:
        return None
    index = ord(letter[1].upper()) - ord("A")
    return index if index < len(options) else None


def is_correct(prediction: str, answer: str, options: Sequence[str] | None = None) -> bool:
    """Whether a prediction answers right: the right option, or the answer after normalisation."""
    if options:
        return chosen_option(prediction, options) == option_index(answer, options)
    return normalize_answer(prediction) == normalize_answer(answer)


def likelihood_choices(log_likelihoods: Sequence[float], option_counts: Sequence[int]) -> list[int | None]:
    """Each question's most likely option from its options' log-likelihoods, laid out question after
    question; None for a question without options (count 0)."""
    if sum(option_counts) != len(log_likelihoods):
        raise ValueError(f"{len(log_likelihoods)} log-likelihoods for {sum(option_counts)} options")
    choices, start = [], 0
    for count in option_counts:
        scores = log_likelihoods[start : start + count]
        choices.append(max(range(count), key=scores.__getitem__) if count else None)
        start += count
    return choices


def prediction_rows(questions: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, list]:
    """Questions (manifest ``qa`` dicts) and their predictions as the columns a validation step returns
    for the prediction table: ``"questions"``, ``"answers"``, ``"options"``, ``"categories"`` ("" for
    none) and ``"predictions"``."""
    return {
        "questions": [qa["question"] for qa in questions],
        "answers": [qa["answer"] for qa in questions],
        "options": [qa.get("options") for qa in questions],
        "categories": [qa.get("category") or "" for qa in questions],
        "predictions": list(predictions),
    }


class AnswerAccuracy(CategoryAccuracy):
    """Normalised exact-match accuracy per category and overall, the raw match, and multiple choice.

    ``compute()`` adds to :class:`CategoryAccuracy`'s keys ``"overall_raw"`` (raw exact match) and,
    once a multiple-choice question was seen, ``"multiple_choice_generated"`` (its generated answer
    names the right option) and ``"multiple_choice_likelihood"`` (the LM's most likely option is
    the right one; only when likelihood choices are given).
    """

    RESERVED = ("overall", "overall_raw", "multiple_choice_generated", "multiple_choice_likelihood")

    def __init__(self, categories: Sequence[str] = ()) -> None:
        """
        Args:
            categories: The question categories to report, e.g. those of the data found at setup.
        """
        super().__init__(categories)
        for name in ("raw_correct", "choices", "choice_generated", "likelihood_choices", "choice_likelihood"):
            self.add_state(name, default=torch.zeros(()), dist_reduce_fx="sum")

    def update(
        self,
        questions: Sequence[Mapping[str, Any]],
        predictions: Sequence[str],
        choices: Sequence[int | None] | None = None,
    ) -> None:
        """Score predictions.

        Args:
            questions: Manifest ``qa`` dicts: ``"answer"``, optional ``"category"`` and ``"options"``.
            predictions: The generated answer to each.
            choices: The option each question's LM found most likely (None for open questions), or
                None when not scored by likelihood.
        """
        choices = [None] * len(questions) if choices is None else choices
        rows = zip(questions, predictions, choices, strict=True)
        correct = []
        for qa, prediction, choice in rows:
            options = qa.get("options")
            correct.append(is_correct(prediction, qa["answer"], options))
            self.raw_correct += float(prediction.strip() == qa["answer"].strip())
            if options:
                self.choices += 1
                self.choice_generated += float(correct[-1])
            if options and choice is not None:
                self.likelihood_choices += 1
                self.choice_likelihood += float(choice == option_index(qa["answer"], options))
        super().update([qa.get("category") for qa in questions], correct)

    def compute(self) -> dict[str, torch.Tensor]:
        result = super().compute()
        result["overall_raw"] = self.raw_correct / self.total_all.clamp(min=1)
        if self.choices > 0:
            result["multiple_choice_generated"] = self.choice_generated / self.choices
        if self.likelihood_choices > 0:
            result["multiple_choice_likelihood"] = self.choice_likelihood / self.likelihood_choices
        return result

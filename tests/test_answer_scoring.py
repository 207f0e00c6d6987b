"""Answer scoring: normalisation, multiple choice, likelihood choices, and accuracy per free-form category."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vtok_lit.callbacks.prediction_table import markdown_table
from vtok_lit.core.sequences import IGNORE_INDEX, answer_log_likelihood
from vtok_lit.data.manifest import ManifestError, option_index, read_manifest
from vtok_lit.metrics import AnswerAccuracy, CategoryAccuracy, is_correct, normalize_answer
from vtok_lit.metrics.answer_scoring import (
    chosen_option,
    likelihood_choices,
    question_prompt,
)

OPTIONS = ["left", "right", "a blue square"]


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Two.", "2"),
        ("  The LEFT!  ", "left"),
        ("an apple, a pear", "apple pear"),
        ("Twenty", "20"),
        ("it's 3", "it s 3"),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


def test_open_answers_match_after_normalisation_only() -> None:
    assert is_correct("Two.", "2")
    assert is_correct("the cat", "Cat")
    assert not is_correct("three", "2")


@pytest.mark.parametrize(
    ("prediction", "choice"),
    [
        ("B", 1),
        ("(b)", 1),
        ("B. right", 1),
        ("b)", 1),
        ("Right.", 1),
        ("A", 0),
        ("a blue square", 2),
        ("C: a blue square", 2),
        ("D", None),
        ("a red circle", None),
        ("Blue", None),
    ],
)
def test_generated_answer_names_an_option_by_letter_or_text(prediction: str, choice: int | None) -> None:
    assert chosen_option(prediction, OPTIONS) == choice


def test_a_multiple_choice_prompt_letters_its_options() -> None:
    assert question_prompt("Which way?", ["left", "right"]) == "Which way? (A) left (B) right"
    assert question_prompt("Which way?") == question_prompt("Which way?", []) == "Which way?"


def test_multiple_choice_answer_may_be_a_letter_or_the_text() -> None:
    assert option_index("B", OPTIONS) == option_index("Right", OPTIONS) == 1
    assert is_correct("(B)", "right", OPTIONS) and is_correct("right", "B", OPTIONS)
    assert not is_correct("A", "B", OPTIONS)
    with pytest.raises(ValueError, match=r"'up' is neither one of the options .* nor a letter A-C"):
        option_index("up", OPTIONS)


def test_manifest_names_the_line_of_a_bad_multiple_choice_question(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    good = {"question": "Which way?", "answer": "B", "options": ["left", "right"]}
    lines = [
        {"video": "a.mp4", "caption": "c", "qa": [good]},
        {"video": "b.mp4", "caption": "c", "qa": [{**good, "answer": "E"}]},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(ManifestError, match=r"line 2: qa\[0\]: answer 'E' is neither"):
        read_manifest(manifest)
    manifest.write_text(json.dumps({**lines[0], "qa": [{**good, "options": "left"}]}) + "\n")
    with pytest.raises(ManifestError, match="line 1: qa.0.: key 'options' must be a list"):
        read_manifest(manifest)
    manifest.write_text(json.dumps(lines[0]) + "\n")
    assert read_manifest(manifest)[0].qa[0].options == ("left", "right")


def test_log_likelihood_sums_the_labelled_next_tokens() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 3:] = torch.tensor([4, 1])
    labels[1, 4] = 6
    log_probs = logits.log_softmax(-1)
    expected = torch.stack([log_probs[0, 2, 4] + log_probs[0, 3, 1], log_probs[1, 3, 6]])
    torch.testing.assert_close(answer_log_likelihood(logits, labels), expected)


def test_likelihood_choices_pick_each_questions_best_option() -> None:
    assert likelihood_choices([-3.0, -1.0, -2.0, -0.5, -4.0], [3, 0, 2]) == [1, None, 0]
    with pytest.raises(ValueError, match="4 log-likelihoods for 5 options"):
        likelihood_choices([0.0] * 4, [3, 2])


def test_accuracy_per_free_form_category_with_raw_match_and_multiple_choice() -> None:
    metric = AnswerAccuracy(["action", "scene"])
    questions = [
        {"answer": "2", "category": "action"},
        {"answer": "kitchen", "category": "scene"},
        {"answer": "Jumping"},  # no category: overall only
        {"answer": "B", "category": "action", "options": ["sit", "run"]},
        {"answer": "sit", "options": ["sit", "run"]},
    ]
    predictions = ["two", "kitchen", "jumping.", "run", "B"]
    metric.update(questions, predictions, [None, None, None, 1, 1])
    result = {name: float(value) for name, value in metric.compute().items()}
    assert result == pytest.approx(
        {
            "action": 1.0,  # "two" == "2" and "run" is option B
            "scene": 1.0,
            "overall": 4 / 5,
            "overall_raw": 1 / 5,  # only "kitchen" as written
            "multiple_choice_generated": 1 / 2,
            "multiple_choice_likelihood": 1 / 2,
        }
    )


def test_category_accuracy_reports_seen_categories_and_refuses_unknown_or_reserved_ones() -> None:
    metric = CategoryAccuracy(["action", "scene"])
    metric.update(["action", None], [True, False])
    assert {name: float(value) for name, value in metric.compute().items()} == {"action": 1.0, "overall": 0.5}
    with pytest.raises(ValueError, match="Unknown category 'colour'"):
        metric.update(["colour"], [True])
    with pytest.raises(ValueError, match="question category 'overall_raw' is a name the accuracy reports"):
        AnswerAccuracy(["overall_raw"])


def test_prediction_table_scores_rows_as_the_metric_does() -> None:
    outputs = {
        "categories": ["", "action"],
        "questions": ["How many?", "Which way?"],
        "answers": ["2", "B"],
        "predictions": ["Two.", "(b)"],
        "options": [None, ["left", "right"]],
    }
    lines = markdown_table(outputs, num_rows=2).splitlines()
    assert lines[2] == "|  | How many? | 2 | Two. | yes |"
    assert lines[3] == "| action | Which way? (A) left (B) right | B | (b) | yes |"


QUESTIONS_BY_RANK = [
    [{"answer": "2", "category": "action"}, {"answer": "B", "options": ["sit", "run"]}],
    [
        {"answer": "kitchen", "category": "scene"},
        {"answer": "yes"},
        {"answer": "sit", "options": ["sit", "run"]},
    ],
]
PREDICTIONS_BY_RANK = [["two", "sit"], ["garden", "Yes", "A"]]
CHOICES_BY_RANK = [[None, 1], [None, None, 0]]


def _score_on_rank(rank: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    metric = AnswerAccuracy(["action", "scene"])
    metric.update(QUESTIONS_BY_RANK[rank], PREDICTIONS_BY_RANK[rank], CHOICES_BY_RANK[rank])
    results[rank] = {name: float(value) for name, value in metric.compute().items()}
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters: about a minute on 2 busy cores
def test_accuracy_sums_over_processes_that_saw_different_categories(tmp_path: Path) -> None:
    single = AnswerAccuracy(["action", "scene"])
    for rank in range(2):
        single.update(QUESTIONS_BY_RANK[rank], PREDICTIONS_BY_RANK[rank], CHOICES_BY_RANK[rank])
    expected = {name: float(value) for name, value in single.compute().items()}
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(_score_on_rank, args=(str(tmp_path / "init"), results), nprocs=2)
        assert results[0] == results[1] == pytest.approx(expected)
    assert expected["action"] == 1.0 and expected["scene"] == 0.0

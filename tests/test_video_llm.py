"""The understanding branch: sequence layout, label mask, generation, and the VideoLLM module."""

from __future__ import annotations

import pytest
import torch

from vtok_lit.core import ByteTokenizer, ConvFrameEncoder, TransformerLM, VTokTokenizer
from vtok_lit.core.generation import greedy_generate
from vtok_lit.core.language_models import LanguageModel, LMOutput
from vtok_lit.core.sequences import (
    IGNORE_INDEX,
    answer_log_likelihood,
    answer_logit_positions,
    build_lm_sequences,
    next_token_loss,
)
from vtok_lit.core.video_qa import QuestionRow
from vtok_lit.data.motionshapes import QUESTION_CATEGORIES
from vtok_lit.metrics import CategoryAccuracy
from vtok_lit.modules import VideoLLM
from vtok_lit.modules.video_llm import question_rows

HIDDEN = 32


def embed(ids: torch.Tensor) -> torch.Tensor:
    return ids[..., None].float().expand(*ids.shape, HIDDEN)


def test_labels_cover_exactly_the_answer() -> None:
    prefix = torch.randn(2, 5, HIDDEN)
    prompts = [[10, 11, 12], [20]]
    answers = [[30, 31, 2], [40, 2]]
    sequences = build_lm_sequences(prefix, prompts, answers, embed, max_length=64)
    length = 5 + 6
    assert sequences.labels.shape == (2, length)
    for row in range(2):
        labelled = sequences.labels[row] != IGNORE_INDEX
        assert labelled.sum() == len(answers[row])
        assert sequences.labels[row, labelled].tolist() == answers[row]
        assert labelled[-len(answers[row]) :].all()
    # Left padding: the short row starts later, and its video sits right before its prompt.
    assert sequences.attention_mask[1].tolist() == [False] * 3 + [True] * 8
    torch.testing.assert_close(sequences.inputs_embeds[1, 3:8], prefix[1])


def test_each_position_passes_its_gradient_to_its_own_video_token_or_text_embedding() -> None:
    prefix = torch.randn(2, 3, HIDDEN, requires_grad=True)
    embedding = torch.nn.Embedding(50, HIDDEN)
    sequences = build_lm_sequences(prefix, [[10, 11], [12]], [[13], [14]], embedding, max_length=64)
    weights = torch.randn_like(sequences.inputs_embeds)
    prefix_grad, table_grad = torch.autograd.grad(
        (sequences.inputs_embeds * weights).sum(), [prefix, embedding.weight]
    )
    # Row 0 holds 3 text tokens (video at 0-2, text at 3-5); row 1 holds 2 and is padded by one.
    torch.testing.assert_close(prefix_grad, torch.stack([weights[0, :3], weights[1, 1:4]]))
    for row, first_text, ids in [(0, 3, [10, 11, 13]), (1, 4, [12, 14])]:
        for position, token in enumerate(ids, start=first_text):
            torch.testing.assert_close(table_grad[token], weights[row, position])
    assert table_grad[[t for t in range(50) if t not in (10, 11, 12, 13, 14)]].abs().sum() == 0
    assert sequences.attention_mask.tolist() == [[True] * 6, [False] + [True] * 5]
    assert not sequences.inputs_embeds[1, 0].any()


def test_long_prompt_is_cut_from_its_start_never_the_video() -> None:
    prefix = torch.randn(1, 8, HIDDEN)
    with pytest.warns(UserWarning, match="first 4 tokens are dropped"):
        sequences = build_lm_sequences(prefix, [list(range(100, 110))], [[7, 2]], embed, max_length=16)
    assert sequences.attention_mask.sum() == 16
    torch.testing.assert_close(sequences.inputs_embeds[0, :8], prefix[0])
    assert sequences.inputs_embeds[0, 8, 0].item() == 104


@pytest.mark.parametrize(
    ("position", "layout"),
    [("before_video", ["prompt", "video"]), ("both", ["prompt", "video", "prompt"])],
)
def test_prompt_position_places_each_question_around_its_video(position: str, layout: list[str]) -> None:
    prefix = torch.randn(2, 5, HIDDEN)
    prompts = [[10, 11, 12], [20]]
    sequences = build_lm_sequences(prefix, prompts, [[30, 2], [40, 2]], embed, 64, prompt_position=position)
    for row in range(2):
        expected = torch.cat(
            [prefix[row] if piece == "video" else embed(torch.tensor(prompts[row])) for piece in layout]
            + [embed(torch.tensor([30 + 10 * row, 2]))]
        )
        real = sequences.attention_mask[row]
        assert real.sum() == len(expected) and real[-len(expected) :].all()
        torch.testing.assert_close(sequences.inputs_embeds[row, real], expected)
    assert sequences.labels[:, -2:].tolist() == [[30, 2], [40, 2]]
    assert (sequences.labels[:, :-2] == IGNORE_INDEX).all()


def test_video_that_cannot_fit_is_an_error() -> None:
    with pytest.raises(ValueError, match="do not fit the LM context of 8"):
        build_lm_sequences(torch.randn(1, 8, HIDDEN), [[1]], [[2]], embed, max_length=8)


class ScriptedLM(LanguageModel):
    """Writes a fixed script of ids, whatever it reads, then the end token."""

    def __init__(self, script: list[int], eos_id: int, vocab_size: int = 16) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size, self.max_seq_len = HIDDEN, vocab_size, 64
        self.script, self.eos_id = script, eos_id
        self.calls = 0
        self.kept: list[int] = []  # logits_to_keep of each call

    def forward(
        self, inputs_embeds, attention_mask=None, past_key_values=None, use_cache=False, logits_to_keep=0
    ) -> LMOutput:
        step = self.calls
        self.calls += 1
        self.kept.append(logits_to_keep)
        next_id = self.script[step] if step < len(self.script) else self.eos_id
        logits = torch.zeros(*inputs_embeds.shape[:2], self.vocab_size)
        logits[:, -1, next_id] = 1.0
        return LMOutput(inputs_embeds, logits, past_key_values=step)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return embed(ids)


def test_generation_stops_at_eos() -> None:
    lm = ScriptedLM(script=[5, 6, 7], eos_id=2)
    generated = greedy_generate(lm, torch.randn(3, 4, HIDDEN), torch.ones(3, 4, dtype=torch.bool), 2, 10)
    assert generated == [[5, 6, 7]] * 3
    assert lm.calls == 4, "generation went on after every row had ended"
    assert lm.kept[0] == 1, "the prompt's logits were asked for at every position, not its last"


def test_generation_respects_max_new_tokens() -> None:
    lm = ScriptedLM(script=[5] * 20, eos_id=2)
    generated = greedy_generate(lm, torch.randn(1, 4, HIDDEN), torch.ones(1, 4, dtype=torch.bool), 2, 6)
    assert generated == [[5] * 6]


def tiny_video_llm(**kwargs) -> VideoLLM:
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=32, grid_size=2)
    lm = TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=128)
    return VideoLLM(tokenizer, lm, projector_hidden_dim=32, **kwargs)


def test_video_tokens_reach_the_language_model() -> None:
    torch.manual_seed(0)
    model = tiny_video_llm()
    rows = [QuestionRow(0, "How many objects are there?", "2")]
    video = torch.rand(1, 4, 3, 32, 32)
    qa = model.model
    first = qa.sequences(qa.video_prefix(video), rows, with_answers=True)
    second = qa.sequences(qa.video_prefix(torch.rand(1, 4, 3, 32, 32)), rows, with_answers=True)
    logits_first = model.language_model(first.inputs_embeds, first.attention_mask).logits
    logits_second = model.language_model(second.inputs_embeds, second.attention_mask).logits
    assert not torch.allclose(logits_first[0, -3:], logits_second[0, -3:])


@pytest.mark.parametrize("position", ["after_video", "before_video", "both"])
def test_video_positions_see_the_question_only_when_it_comes_first(position: str) -> None:
    torch.manual_seed(0)
    model = tiny_video_llm(prompt_position=position)
    qa = model.model
    prefix = qa.video_prefix(torch.rand(1, 4, 3, 32, 32))
    question_length = len("Which way does the red circle move?")
    first = question_length if position != "after_video" else 0
    video = slice(first, first + prefix.shape[1])
    states = []
    for question in ("Which way does the red circle move?", "Which way does the red square move?"):
        sequences = qa.sequences(prefix, [QuestionRow(0, question)], with_answers=False)
        states.append(model.language_model(sequences.inputs_embeds, sequences.attention_mask).hidden_states)
    # Causal attention: video tokens before the question cannot depend on it; after it, they do.
    assert torch.allclose(states[0][0, video], states[1][0, video]) == (position == "after_video")


def test_unknown_prompt_position_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt_position='middle'; choose one of"):
        tiny_video_llm(prompt_position="middle")


def test_answer_logits_of_the_last_positions_give_the_loss_of_all_positions() -> None:
    torch.manual_seed(0)
    model = tiny_video_llm()
    qa = model.model
    # Answers of different lengths: the longest sets how many positions need logits.
    rows = [QuestionRow(0, "How many objects are there?", "2"), QuestionRow(1, "Which way?", "left")]
    prefix = qa.video_prefix(torch.rand(2, 4, 3, 32, 32))
    sequences = qa.sequences(prefix, rows, with_answers=True)
    assert answer_logit_positions(sequences.labels) == len("left") + 2  # the end token, the one before
    every = model.language_model(sequences.inputs_embeds, sequences.attention_mask).logits
    kept, labels = qa.logits(prefix, rows)
    assert kept.shape[1] == labels.shape[1] == len("left") + 2 < every.shape[1]
    torch.testing.assert_close(kept, every[:, -kept.shape[1] :])
    torch.testing.assert_close(qa.loss(prefix, rows), next_token_loss(every, sequences.labels))
    torch.testing.assert_close(
        qa.answer_log_likelihoods(prefix, rows), answer_log_likelihood(every, sequences.labels)
    )


def test_training_step_backpropagates_into_the_tokenizer() -> None:
    torch.manual_seed(0)
    model = tiny_video_llm()
    batch = {
        "video": torch.rand(2, 4, 3, 32, 32),
        "questions": [
            [{"question": "What color is the circle?", "answer": "red", "category": "color"}],
            [{"question": "How many objects are there?", "answer": "3", "category": "counting"}],
        ],
    }
    loss = model.model.loss(
        model.model.video_prefix(batch["video"]),
        question_rows(model.clip_questions(batch["questions"], sample=False)),
    )
    loss.backward()
    assert all(p.grad is not None for p in model.tokenizer.residual_mlp.parameters())
    assert all(p.grad is not None for p in model.tokenizer.frame_encoder.parameters())
    assert model.model.projector[0].weight.grad.abs().sum() > 0


def test_frozen_tokenizer_gets_no_gradient() -> None:
    model = tiny_video_llm(freeze_tokenizer=True)
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    assert all(p.requires_grad for p in model.model.projector.parameters())


def test_text_vocabulary_larger_than_the_lm_is_refused() -> None:
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=32, grid_size=2)
    lm = TransformerLM(vocab_size=100, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="260 ids but the language model only 100"):
        VideoLLM(tokenizer, lm, text_tokenizer=ByteTokenizer())


def test_category_accuracy_per_category_and_overall() -> None:
    metric = CategoryAccuracy(QUESTION_CATEGORIES)
    metric.update(["color", "color", "counting", "direction"], [True, False, True, True])
    result = metric.compute()
    assert result["color"] == 0.5 and result["counting"] == 1.0 and result["direction"] == 1.0
    assert "size" not in result
    assert result["overall"] == 0.75
    with pytest.raises(ValueError, match="Unknown category 'colour'"):
        metric.update(["colour"], [True])


class FavouriteBytesLM(ScriptedLM):
    """Gives the bytes of one word and the end token high probability at every position."""

    def __init__(self, word: str) -> None:
        super().__init__(script=[], eos_id=258, vocab_size=260)
        self.favourites = [*word.encode(), self.eos_id]

    def forward(
        self, inputs_embeds, attention_mask=None, past_key_values=None, use_cache=False, logits_to_keep=0
    ) -> LMOutput:
        logits = torch.zeros(
            inputs_embeds.shape[0], logits_to_keep or inputs_embeds.shape[1], self.vocab_size
        )
        logits[..., self.favourites] = 5.0
        return LMOutput(inputs_embeds, logits)


@pytest.mark.parametrize(("word", "choice"), [("right", 1), ("left", 0)])
def test_multiple_choice_is_scored_by_the_options_likelihood(word: str, choice: int) -> None:
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=32, grid_size=2)
    model = VideoLLM(tokenizer, FavouriteBytesLM(word), projector_hidden_dim=32)
    rows = [
        (0, {"question": "Which way?", "answer": "B", "options": ["left", "right"]}),
        (0, {"question": "How many?", "answer": "2"}),
    ]
    prefix = model.model.video_prefix(torch.rand(1, 4, 3, 32, 32))
    assert model.likelihood_choices(prefix, rows) == [choice, None]
    # The LM reads the options, lettered, after the question.
    prompt = model.model.sequences(prefix, question_rows(rows[:1]), with_answers=False)
    prompt = prompt.inputs_embeds[0, -22:, 0]
    assert bytes(prompt.long().tolist()).decode() == "Which way? (A) left (B) right"[-22:]

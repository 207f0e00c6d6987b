"""The two sequence layouts of the LM, both left-padded so that generation continues all rows in step.

- Understanding, ``[video tokens][prompt][answer]`` (:func:`build_lm_sequences`; the prompt may
  also come before the video, or on both sides of it): every row's answer ends at the last
  position; labels cover the answer alone.
- Generation, ``[caption][begin-of-video][v_1 .. v_{L-1}]`` (:func:`build_video_generation_sequences`):
  the hidden state at begin-of-video predicts the first video token ``v_1`` and the one at ``v_i``
  predicts ``v_{i+1}``, so a clip of L tokens takes L positions after its caption. Teacher forcing
  feeds ``v_1 .. v_{L-1}`` and reads the L predictions off the last L positions; generation feeds the
  caption and begin-of-video, then one sampled token at a time.

In both, a text too long for the LM context is cut from its start, never the video.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from vtok_lit.core.language_models import LanguageModel

IGNORE_INDEX = -100
# Where an understanding row's prompt goes: after its video tokens, before them (so that a causal LM's
# video positions see the question), or both (the video sees it and the answer follows it).
PromptPosition = Literal["after_video", "before_video", "both"]


@dataclass
class LMSequences:
    """A left-padded batch ready for a :class:`~vtok_lit.core.language_models.LanguageModel`.

    Attributes:
        inputs_embeds: ``(N, L, hidden)``.
        attention_mask: ``(N, L)`` bool, True on real positions.
        labels: ``(N, L)`` long, the token id at answer positions and ``IGNORE_INDEX`` elsewhere.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def fit_prompt(prompt: list[int], budget: int, row: int) -> list[int]:
    """Cut a prompt from its start to ``budget`` tokens, warning, so the video is never what is lost."""
    if len(prompt) <= budget:
        return prompt
    warnings.warn(
        f"Row {row}: the prompt has {len(prompt)} tokens but only {budget} fit beside the video tokens in "
        f"the LM context; its first {len(prompt) - budget} tokens are dropped.",
        stacklevel=3,
    )
    return prompt[len(prompt) - budget :]


def build_lm_sequences(
    prefix_embeds: torch.Tensor,
    prompts: Sequence[list[int]],
    answers: Sequence[list[int]] | None,
    embed_tokens: Callable[[torch.Tensor], torch.Tensor],
    max_length: int,
    prompt_position: PromptPosition = "after_video",
) -> LMSequences:
    """Assemble ``[prefix][prompt][answer]`` rows (``[prompt][prefix][answer]`` with the prompt
    ``"before_video"``, ``[prompt][prefix][prompt][answer]`` with ``"both"``), left-padded to the longest.

    Args:
        prefix_embeds: ``(N, Lv, hidden)`` the projected video tokens of each row.
        prompts: N lists of prompt token ids.
        answers: N lists of answer token ids (the end token included), or None for generation.
        embed_tokens: maps ids ``(1, L)`` to embeddings ``(1, L, hidden)``.
        max_length: the LM context; prompts are cut from their start to fit, never the video.
        prompt_position: where each row's prompt goes (:data:`PromptPosition`).
    """
    num_rows, prefix_length, hidden = prefix_embeds.shape
    if len(prompts) != num_rows or (answers is not None and len(answers) != num_rows):
        raise ValueError(f"{num_rows} videos but {len(prompts)} prompts / {len(answers or [])} answers.")
    copies = 2 if prompt_position == "both" else 1
    rows = []
    for row in range(num_rows):
        answer = list(answers[row]) if answers is not None else []
        budget = (max_length - prefix_length - len(answer)) // copies
        if budget < 1:
            raise ValueError(
                f"Row {row}: {prefix_length} video tokens and a {len(answer)}-token answer do not fit the LM "
                f"context of {max_length}; raise the LM's max_seq_len or use fewer frames."
            )
        rows.append((fit_prompt(list(prompts[row]), budget, row), answer))

    length = prefix_length + max(copies * len(prompt) + len(answer) for prompt, answer in rows)
    device = prefix_embeds.device
    texts = [prompt + answer for prompt, answer in rows]
    all_text = torch.tensor([token for text in texts for token in text], dtype=torch.long, device=device)
    # One gather from [padding | every row's video tokens | every row's text] lays the rows out: its
    # backward is one scatter, where writing row by row into a zero tensor costs a copy of the whole
    # batch per write.
    padding = prefix_embeds.new_zeros(1, hidden)
    text_embeds = embed_tokens(all_text[None])[0].to(prefix_embeds.dtype) if len(all_text) else padding[:0]
    source = torch.cat([padding, prefix_embeds.reshape(-1, hidden), text_embeds])
    gather = torch.zeros(num_rows, length, dtype=torch.long)
    labels = torch.full((num_rows, length), IGNORE_INDEX, dtype=torch.long)
    text_offset = 1 + num_rows * prefix_length
    for row, (prompt, answer) in enumerate(rows):
        video = torch.arange(prefix_length) + 1 + row * prefix_length
        prompt_ids = torch.arange(len(prompt)) + text_offset
        answer_ids = torch.arange(len(answer)) + text_offset + len(prompt)
        text_offset += len(prompt) + len(answer)
        pieces = {
            "after_video": (video, prompt_ids, answer_ids),
            "before_video": (prompt_ids, video, answer_ids),
            "both": (prompt_ids, video, prompt_ids, answer_ids),  # the prompt's embeddings gathered twice
        }[prompt_position]
        positions = torch.cat(pieces)
        gather[row, length - len(positions) :] = positions
        if answer:
            labels[row, length - len(answer) :] = torch.tensor(answer)
    gather = gather.to(device)
    return LMSequences(source[gather], gather > 0, labels.to(device))


def answer_logit_positions(labels: torch.Tensor) -> int:
    """How many of the last positions of ``(N, L)`` labels a next-token loss needs logits for: from
    the one before the earliest labelled position of any row (it predicts that label) to the end.
    The rows are left-padded, so every answer ends at the last position."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if len(labelled) == 0:
        return 1
    return min(labels.shape[1], labels.shape[1] - int(labelled[0]) + 1)


def answer_logits(language_model: LanguageModel, sequences: LMSequences) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM's ``(N, K, V)`` logits over the last K positions of ``sequences``, those their answers
    need (:func:`answer_logit_positions`), and the ``(N, K)`` labels of those positions."""
    keep = answer_logit_positions(sequences.labels)
    output = language_model(
        sequences.inputs_embeds, attention_mask=sequences.attention_mask, logits_to_keep=keep
    )
    return output.logits, sequences.labels[:, -keep:]


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's logits ``(N, L, V)`` against the next position's label ``(N, L)``."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def answer_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of each row's labelled tokens: ``(N, L, V)`` logits, ``(N, L)`` labels
    -> ``(N,)``.

    Position ``i``'s logits predict label ``i + 1``, as in training; ``IGNORE_INDEX`` labels count nothing.
    """
    targets = labels[:, 1:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return (picked * (targets != IGNORE_INDEX)).sum(dim=1)


def caption_budget(num_video_tokens: int, max_length: int) -> int:
    """Positions an LM context of ``max_length`` leaves for a caption beside L video tokens.

    Raises:
        ValueError: The video tokens alone do not fit.
    """
    if num_video_tokens > max_length:
        raise ValueError(
            f"{num_video_tokens} video tokens (begin-of-video included) do not fit the LM context of "
            f"{max_length}; raise the LM's max_seq_len (model.init_args.language_model.init_args."
            "max_seq_len) or generate fewer frames."
        )
    return max_length - num_video_tokens


def build_video_generation_sequences(
    captions: Sequence[list[int]],
    begin_of_video: torch.Tensor,
    video_embeds: torch.Tensor,
    num_video_tokens: int,
    embed_tokens: Callable[[torch.Tensor], torch.Tensor],
    max_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble ``[caption][begin-of-video][video]`` rows, left-padded to the longest.

    Args:
        captions: N lists of caption token ids; an empty list is an unconditional row.
        begin_of_video: ``(hidden,)`` the embedding that starts the video.
        video_embeds: ``(N, V, hidden)`` the embedded tokens fed after it: ``v_1 .. v_{L-1}`` for teacher
            forcing, none (V = 0) to start generation.
        num_video_tokens: L, the tokens each row will predict; their room is kept free of caption.
        embed_tokens: Maps ids ``(1, n)`` to embeddings ``(1, n, hidden)``.
        max_length: The LM context; captions are cut from their start to fit, never the video.

    Returns:
        ``(N, P, hidden)`` inputs and their ``(N, P)`` bool attention mask, True on real positions.
    """
    num_rows, num_fed, hidden = video_embeds.shape
    if len(captions) != num_rows:
        raise ValueError(f"{len(captions)} captions for {num_rows} rows of video tokens.")
    budget = caption_budget(num_video_tokens, max_length)
    captions = [fit_prompt(list(caption), budget, row) for row, caption in enumerate(captions)]
    video_length = 1 + num_fed
    length = video_length + max(map(len, captions))
    device = video_embeds.device
    inputs_embeds = video_embeds.new_zeros(num_rows, length, hidden)
    attention_mask = torch.zeros(num_rows, length, dtype=torch.bool, device=device)
    inputs_embeds[:, -video_length] = begin_of_video
    inputs_embeds[:, length - num_fed :] = video_embeds
    for row, caption in enumerate(captions):
        start = length - video_length - len(caption)
        if caption:
            ids = torch.tensor(caption, dtype=torch.long, device=device)
            inputs_embeds[row, start : start + len(caption)] = embed_tokens(ids[None])[0]
        attention_mask[row, start:] = True
    return inputs_embeds, attention_mask

"""Lay out ``[video tokens][prompt][answer]`` sequences for a causal LM, left-padded.

Training and generation share one layout: every row is left-padded, so the prompt of every row ends at
the last position and generation continues all rows in step. Labels cover the answer alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


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
) -> LMSequences:
    """Assemble ``[prefix][prompt][answer]`` rows, left-padded to the longest.

    Args:
        prefix_embeds: ``(N, Lv, hidden)`` the projected video tokens of each row.
        prompts: N lists of prompt token ids.
        answers: N lists of answer token ids (the end token included), or None for generation.
        embed_tokens: maps ids ``(1, L)`` to embeddings ``(1, L, hidden)``.
        max_length: the LM context; prompts are cut from their start to fit, never the video.
    """
    num_rows, prefix_length, hidden = prefix_embeds.shape
    if len(prompts) != num_rows or (answers is not None and len(answers) != num_rows):
        raise ValueError(f"{num_rows} videos but {len(prompts)} prompts / {len(answers or [])} answers.")
    rows = []
    for row in range(num_rows):
        answer = list(answers[row]) if answers is not None else []
        budget = max_length - prefix_length - len(answer)
        if budget < 1:
            raise ValueError(
                f"Row {row}: {prefix_length} video tokens and a {len(answer)}-token answer do not fit the LM "
                f"context of {max_length}; raise the LM's max_seq_len or use fewer frames."
            )
        rows.append((fit_prompt(list(prompts[row]), budget, row), answer))

    length = prefix_length + max(len(prompt) + len(answer) for prompt, answer in rows)
    device = prefix_embeds.device
    inputs_embeds = prefix_embeds.new_zeros(num_rows, length, hidden)
    attention_mask = torch.zeros(num_rows, length, dtype=torch.bool, device=device)
    labels = torch.full((num_rows, length), IGNORE_INDEX, dtype=torch.long, device=device)
    for row, (prompt, answer) in enumerate(rows):
        text = torch.tensor(prompt + answer, dtype=torch.long, device=device)
        start = length - prefix_length - len(text)
        inputs_embeds[row, start : start + prefix_length] = prefix_embeds[row]
        if len(text):
            inputs_embeds[row, start + prefix_length :] = embed_tokens(text[None])[0]
        attention_mask[row, start:] = True
        if answer:
            labels[row, length - len(answer) :] = text[len(prompt) :]
    return LMSequences(inputs_embeds, attention_mask, labels)


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's logits ``(N, L, V)`` against the next position's label ``(N, L)``."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )

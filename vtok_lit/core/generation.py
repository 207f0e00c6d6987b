"""Batched greedy decoding with a KV cache."""

from __future__ import annotations

import torch

from vtok_lit.core.language_models import LanguageModel


@torch.no_grad()
def greedy_generate(
    language_model: LanguageModel,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    eos_id: int,
    max_new_tokens: int,
) -> list[list[int]]:
    """Continue left-padded rows greedily until each has written ``eos_id`` or ``max_new_tokens``.

    Args:
        language_model: the LM.
        inputs_embeds: ``(N, L, hidden)`` left-padded prompts.
        attention_mask: ``(N, L)`` bool, True on real positions.
        eos_id: the end token; it is not part of the returned ids.
        max_new_tokens: a cap on the generated length.

    Returns:
        N lists of generated ids, without the end token.
    """
    num_rows = inputs_embeds.shape[0]
    generated: list[list[int]] = [[] for _ in range(num_rows)]
    finished = torch.zeros(num_rows, dtype=torch.bool, device=inputs_embeds.device)
    output = language_model(inputs_embeds, attention_mask=attention_mask, use_cache=True)
    for _ in range(max_new_tokens):
        next_ids = output.logits[:, -1].argmax(dim=-1)
        for row in (~finished).nonzero().flatten().tolist():
            if next_ids[row].item() != eos_id:
                generated[row].append(int(next_ids[row]))
        finished |= next_ids == eos_id
        if finished.all():
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        output = language_model(
            language_model.embed_tokens(next_ids[:, None]),
            attention_mask=attention_mask,
            past_key_values=output.past_key_values,
            use_cache=True,
        )
    return generated

"""Batched decoding with a KV cache: greedy text, and continuous video tokens from a token head."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.token_heads import TokenHead


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
    # The prompt's last position is the only one whose logits are read.
    output = language_model(inputs_embeds, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
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


@torch.no_grad()
def rollout_video_tokens(
    language_model: LanguageModel,
    token_head: TokenHead,
    embed_token: Callable[[torch.Tensor, int], torch.Tensor],
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    num_tokens: int,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Write ``num_tokens`` video tokens after left-padded prompts that end with begin-of-video.

    Each step samples a token from the head at the last hidden state, embeds it and feeds it through
    the KV cache; the last token is sampled but never fed.

    Classifier-free guidance mixes the head's INPUT: with ``guidance_scale`` other than 1 the rows come
    in two halves, the first conditioned on captions and the second the same clips without them, and
    each pair's token is sampled from ``h_u + guidance_scale * (h_c - h_u)`` of their hidden states,
    then fed to both rows. Mixing inputs works for every head, the sampling one included.

    Args:
        language_model: The LM.
        token_head: Samples a ``(N, D)`` token from ``(N, hidden)`` states.
        embed_token: Maps the ``(N, D)`` tokens at video position ``i`` to LM inputs ``(N, 1, hidden)``.
        inputs_embeds: ``(N, P, hidden)`` prompts (caption and begin-of-video).
        attention_mask: ``(N, P)`` bool, True on real positions.
        num_tokens: L, the tokens to write.
        guidance_scale: Classifier-free guidance scale; 1 uses the rows as they are.
        generator: Fixes the head's sampling noise (on the model's device).

    Returns:
        ``(N, L, D)`` tokens, or ``(N / 2, L, D)`` under guidance.
    """
    guided = guidance_scale != 1.0
    if guided and len(inputs_embeds) % 2:
        raise ValueError(
            f"guidance needs a conditional and an unconditional half, got {len(inputs_embeds)} rows"
        )
    tokens = []
    # The head reads hidden states; of the LM's logits none is read, so it is asked for one position.
    output = language_model(inputs_embeds, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
    for index in range(num_tokens):
        hidden = output.hidden_states[:, -1]
        if guided:
            conditional, unconditional = hidden.chunk(2)
            hidden = unconditional + guidance_scale * (conditional - unconditional)
        token = token_head.sample(hidden, generator=generator)
        tokens.append(token)
        if index == num_tokens - 1:
            break
        fed = token.repeat(2, 1) if guided else token
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        output = language_model(
            embed_token(fed, index),
            attention_mask=attention_mask,
            past_key_values=output.past_key_values,
            use_cache=True,
            logits_to_keep=1,
        )
    return torch.stack(tokens, dim=1)

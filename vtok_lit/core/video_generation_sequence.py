"""Lay out ``[caption][begin-of-video][v_1 .. v_{L-1}]`` sequences for an LM that writes video, left-padded.

The hidden state at begin-of-video predicts the first video token ``v_1`` and the one at ``v_i`` predicts
``v_{i+1}``, so a clip of L tokens takes L positions after its caption. Teacher forcing feeds
``v_1 .. v_{L-1}`` and reads the L predictions off the last L positions; generation feeds the caption
and begin-of-video, then one sampled token at a time. Rows are left-padded, so all continue in step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vtok_lit.core.multimodal_sequence import fit_prompt


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

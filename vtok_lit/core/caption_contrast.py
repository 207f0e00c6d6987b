"""Caption contrast: a clip's residual tokens must pick out its caption among the batch's.

Reconstruction gives the frame encoder no reason to keep objects apart: the decoder renders a change
from the key frame's tokens and a code of "this went there" that it alone can untangle, so after
pretraining the pooled residuals of a red and of a yellow square moving the same way are close. The
paper's frame encoder is a CLIP ViT, trained to match captions. This objective asks the same of the
residual tokens: their mean, through one linear map, must match a small text encoder's embedding of
the clip's caption against the other captions of the batch (CLIP's symmetric InfoNCE). A caption
that says which object moved which way ("a yellow square moves down; a red circle stays still") is
told from the batch's others only by tokens that keep which object made which change.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from vtok_lit.core.language_models import RotaryEmbedding, TransformerBlock, position_ids_from_mask
from vtok_lit.core.residual_objectives import ResidualObjective
from vtok_lit.core.text_tokenizers import ByteTokenizer
from vtok_lit.core.tokens import VideoTokens


class CaptionEncoder(nn.Module):
    """A small bidirectional transformer over a caption's bytes, averaged over its real positions."""

    def __init__(self, width: int, num_layers: int, num_heads: int, max_bytes: int) -> None:
        super().__init__()
        if width % num_heads or (width // num_heads) % 2:
            raise ValueError(
                f"text_width {width} must split into {num_heads} heads of even width (RoPE pairs)"
            )
        self.text_tokenizer = ByteTokenizer()
        self.max_bytes = max_bytes
        self.embedding = nn.Embedding(self.text_tokenizer.vocab_size, width)
        self.rotary = RotaryEmbedding(width // num_heads)
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads) for _ in range(num_layers))
        self.norm = nn.RMSNorm(width)

    def forward(self, captions: list[str]) -> torch.Tensor:
        """``(B, width)``: one vector a caption (its text cut to ``max_bytes``)."""
        ids, mask = self.text_tokenizer.batch_encode(captions, self.max_bytes + 2)
        device = self.embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        x = self.embedding(ids)
        rope = self.rotary(position_ids_from_mask(mask, ids.shape[1]))
        attend = mask[:, None, None, :]  # every position reads every real one, both ways
        for block in self.blocks:
            x, _ = block(x, rope, attend)
        x = self.norm(x)
        weights = mask.to(x.dtype)[..., None]
        return (x * weights).sum(dim=1) / weights.sum(dim=1)


def exchanged_words(
    caption: str, groups: list[list[str]], generator: torch.Generator | None = None
) -> str | None:
    """``caption`` with two different words of one group exchanged (of a group chosen at random among
    those with two different words in it, a random such pair); None when no group has any.

    With groups of colours and of opposite directions, "a yellow square moves down; a blue circle
    moves up" becomes "a blue square moves down; a yellow circle moves up" or "a yellow square moves
    up; a blue circle moves down": the same words, the same grammar, another clip. An exchange in a
    sentence that names the objects again ("At the end the yellow square is left of the red circle")
    can instead make a caption that contradicts itself, which a caption encoder may learn to spot
    without looking at the clip.
    """
    spans = [(match.span(), match.group().lower()) for match in re.finditer(r"\w+", caption)]
    pairs = []
    for group in groups:
        members = {word.lower() for word in group}
        found = [(span, word) for span, word in spans if word in members]
        pairs.append([(a, b) for i, a in enumerate(found) for b in found[i + 1 :] if a[1] != b[1]])
    pairs = [group_pairs for group_pairs in pairs if group_pairs]
    if not pairs:
        return None

    def pick(count: int) -> int:
        return int(torch.randint(count, (1,), generator=generator))

    candidates = pairs[pick(len(pairs))]
    ((start_a, end_a), _), ((start_b, end_b), _) = candidates[pick(len(candidates))]
    word_a, word_b = caption[start_a:end_a], caption[start_b:end_b]
    return caption[:start_a] + word_b + caption[end_a:start_b] + word_a + caption[end_b:]


class CaptionContrastObjective(ResidualObjective):
    """A clip's residual tokens must pick out its caption among the batch's, and its caption the clip.

    The clip's side is the mean of its unpadded residual tokens through one linear map: which object
    moved which way must then be in the tokens themselves, where the LM reads them, not in a reader's
    nonlinearity. The caption's side is :class:`CaptionEncoder` and a linear map. Both are normalised
    and compared by cosine times a learned scale (initialised to CLIP's 1 / 0.07); the error is the
    mean of the two cross-entropies, clip to caption and caption to clip.

    The other captions of a batch are mostly told apart by which colours and directions occur at all,
    which tokens that do not say which object made which change already manage. With ``swap_groups``
    each caption also gets a hard negative, itself with two words of one group exchanged
    (:func:`exchanged_words`), that every clip is scored against too: only tokens that bind each
    change to its object tell the two apart. Two clips of a batch with the
    same caption get the same caption embedding, so neither is pushed away from the other's: their
    error floors at ``log 2`` instead of 0. Chance is about ``log B``; 0 a perfect match.
    """

    metric_name = "caption_contrast"

    def __init__(
        self,
        token_dim: int = 128,
        embed_dim: int = 128,
        text_width: int = 128,
        text_layers: int = 2,
        text_heads: int = 4,
        max_caption_bytes: int = 256,
        swap_groups: list[list[str]] | None = None,
        weight: float = 0.01,
    ) -> None:
        """
        Args:
            token_dim: Size D of the tokens.
            embed_dim: Size of the space clips and captions are compared in.
            text_width: Width of the caption encoder.
            text_layers: Transformer blocks of the caption encoder.
            text_heads: Attention heads of the caption encoder (``text_width`` in heads of even width).
            max_caption_bytes: Captions are cut to this many UTF-8 bytes.
            swap_groups: Groups of interchangeable words (``[[red, green, blue, yellow], [left,
                right], [up, down]]``): each caption's hard negative exchanges two different words of
                one group in it. None or empty: the batch's other captions are the only negatives.
            weight: Weight of the contrastive error in the training loss.
        """
        super().__init__(token_dim, weight)
        if embed_dim < 1 or max_caption_bytes < 1:
            raise ValueError(
                f"embed_dim and max_caption_bytes must be positive, got {embed_dim} and {max_caption_bytes}"
            )
        self.clip_projection = nn.Linear(token_dim, embed_dim)
        self.caption_encoder = CaptionEncoder(text_width, text_layers, text_heads, max_caption_bytes)
        self.caption_projection = nn.Linear(text_width, embed_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.swap_groups = [list(group) for group in swap_groups or []]
        for group in self.swap_groups:
            if len({word.lower() for word in group}) < 2 or not all(re.fullmatch(r"\w+", w) for w in group):
                raise ValueError(
                    f"swap_groups: each group needs two or more different single words, got {group}"
                )

    def clip_embeddings(self, tokens: VideoTokens) -> torch.Tensor:
        """``(B, embed_dim)``, unit length: the mean of each clip's unpadded residual tokens, mapped."""
        positions = self.residual_positions(tokens).to(tokens.tokens.device)
        kept = self.kept(tokens).to(tokens.tokens)[..., None]
        mean = (tokens.tokens[:, positions] * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)
        return F.normalize(self.clip_projection(mean), dim=-1)

    def caption_embeddings(self, captions: list[str]) -> torch.Tensor:
        """``(B, embed_dim)``, unit length."""
        return F.normalize(self.caption_projection(self.caption_encoder(captions)), dim=-1)

    def forward(
        self, tokens: VideoTokens, video: torch.Tensor, captions: list[str] | None = None
    ) -> torch.Tensor:
        if captions is None:
            raise ValueError(
                "CaptionContrastObjective needs the clips' captions: the batch has no 'caption' list"
            )
        if len(captions) != tokens.tokens.shape[0]:
            raise ValueError(f"{len(captions)} captions for {tokens.tokens.shape[0]} clips")
        clips = self.clip_embeddings(tokens)
        texts = self.caption_embeddings(list(captions) + self.hard_negatives(captions)).to(clips.dtype)
        logits = self.log_scale.clamp(max=math.log(100)).exp() * clips @ texts.T  # (B, B + negatives)
        pairs = torch.arange(len(captions), device=logits.device)
        caption_to_clip = F.cross_entropy(logits[:, : len(captions)].T, pairs)
        return (F.cross_entropy(logits, pairs) + caption_to_clip) / 2

    def hard_negatives(self, captions: list[str]) -> list[str]:
        """One exchanged-words caption for each caption that has a pair to exchange (none without
        ``swap_groups``), leaving out any that is another clip's caption in the batch (a true
        caption, not a negative); drawn afresh in training, the same every time in evaluation."""
        generator = None if self.training else torch.Generator().manual_seed(0)
        negatives = (exchanged_words(caption, self.swap_groups, generator) for caption in captions)
        return [negative for negative in negatives if negative is not None and negative not in captions]

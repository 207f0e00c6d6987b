"""Decoder-only language models that read a sequence of embeddings and predict the next token.

Every backbone takes ``inputs_embeds`` rather than token ids, so video tokens and text embeddings can be
mixed freely before the first layer. Attention masks follow the Hugging Face convention: ``(B, P + L)``
with ``True`` on real tokens, where ``P`` is the length already held in the KV cache. Positions come from
the cumulative mask, so left-padded batches (as batched generation builds them) see the same positions as
unpadded ones.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

KeyValue = tuple[torch.Tensor, torch.Tensor]


@dataclass
class LMOutput:
    """What a language model returns.

    Attributes:
        hidden_states: ``(B, L, hidden)`` last hidden state, after the final norm.
        logits: ``(B, L, vocab)`` next-token logits.
        past_key_values: the KV cache to pass back for the next step; None unless ``use_cache``.
    """

    hidden_states: torch.Tensor
    logits: torch.Tensor
    past_key_values: Any = None


class LanguageModel(nn.Module, ABC):
    """A causal language model over embeddings.

    Attributes:
        hidden_size: width of the embeddings it reads and the hidden states it returns.
        vocab_size: number of logits per position.
        max_seq_len: the longest sequence (cache included) it is meant to see.
    """

    hidden_size: int
    vocab_size: int
    max_seq_len: int

    @abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> LMOutput:
        """Run the model.

        Args:
            inputs_embeds: ``(B, L, hidden)`` the new positions.
            attention_mask: ``(B, P + L)`` bool, True on real tokens, covering the ``P`` cached positions
                too; None when nothing is padded.
            past_key_values: the cache from the previous call, or None.
            use_cache: return a cache that extends ``past_key_values`` with these positions.
            logits_to_keep: Compute the logits of the last this many positions only (0: all of them);
                the hidden states cover every position either way. An answer loss needs the few
                positions at the end of its rows, and with a large vocabulary the head over every
                position is most of the LM's cost.
        """

    @abstractmethod
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Map token ids ``(B, L)`` to input embeddings ``(B, L, hidden)``."""


def position_ids_from_mask(attention_mask: torch.Tensor, query_len: int) -> torch.Tensor:
    """Positions of the last ``query_len`` tokens, counting only real tokens.

    Args:
        attention_mask: ``(B, P + L)`` True (or 1) on real tokens.
        query_len: ``L``, the number of new positions.

    Returns:
        ``(B, L)`` long; padding positions get 0 (they are masked anyway).
    """
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions[:, -query_len:].clamp(min=0)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates channel pairs of q and k by position-dependent angles.

    Args:
        head_dim: channels per attention head (even).
        theta: base of the geometric frequency ladder.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        inverse_frequency = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inverse_frequency", inverse_frequency, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines ``(B, 1, L, head_dim / 2)`` for positions ``(B, L)``.

        Kept in float32: bf16 angles lose whole turns at positions in the thousands.
        """
        angles = positions.float()[:, None, :, None] * self.inverse_frequency
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(B, heads, L, head_dim)``, pairing channel ``i`` with ``i + head_dim / 2``."""
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return rotated.type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with RoPE and an optional KV cache.

    Args:
        hidden_size: model width.
        num_heads: attention heads; must divide ``hidden_size``.
        dropout: attention-probability dropout while training.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        attn_mask: torch.Tensor | None,
        past: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """Attend from the new positions to the cached and new ones.

        Args:
            x: ``(B, L, hidden)`` normalised input.
            rope: cosines and sines ``(B, 1, L, head_dim / 2)`` for the new positions.
            attn_mask: bool, True where a query may attend, broadcastable to ``(B, heads, L, P + L)``;
                None means plain causal attention without a cache.
            past: keys and values ``(B, heads, P, head_dim)`` of earlier positions.

        Returns:
            ``(B, L, hidden)`` output and the keys and values ``(B, heads, P + L, head_dim)``.
        """
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None,
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden)), (k, v)


class TransformerBlock(nn.Module):
    """One pre-norm decoder block: ``x + attention(norm(x))`` then ``x + mlp(norm(x))``.

    Args:
        hidden_size: model width.
        num_heads: attention heads.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        dropout: dropout on attention probabilities and on each residual branch.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        mlp_size = int(hidden_size * mlp_ratio)
        self.attention_norm = nn.RMSNorm(hidden_size)
        self.attention = CausalSelfAttention(hidden_size, num_heads, dropout)
        self.attention_dropout = nn.Dropout(dropout)
        self.mlp_norm = nn.RMSNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_size, bias=False),
            nn.GELU(),
            nn.Linear(mlp_size, hidden_size, bias=False),
            nn.Dropout(dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        attn_mask: torch.Tensor | None,
        past: KeyValue | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """``x`` ``(B, L, hidden)`` -> ``(B, L, hidden)`` and this block's keys and values."""
        attended, key_value = self.attention(self.attention_norm(x), rope, attn_mask, past)
        x = x + self.attention_dropout(attended)
        x = x + self.mlp(self.mlp_norm(x))
        return x, key_value


class TransformerLM(LanguageModel):
    """A small built-in decoder-only transformer: pre-norm blocks, RoPE, SDPA attention, KV cache.

    Args:
        vocab_size: number of token ids (260 fits the byte tokenizer).
        hidden_size: model width.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide ``hidden_size`` into even head widths.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        max_seq_len: the longest sequence, cache included, the model accepts.
        dropout: dropout on attention probabilities, residual branches and input embeddings.
        rope_theta: RoPE base; larger values suit longer sequences.
        gradient_checkpointing: recompute each block in the backward pass to save activation memory.
        tie_embeddings: share the input embedding matrix with the output head.
    """

    def __init__(
        self,
        vocab_size: int = 260,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        max_seq_len: int = 512,
        dropout: float = 0.0,
        rope_theta: float = 10000.0,
        gradient_checkpointing: bool = False,
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(
                f"hidden_size {hidden_size} must split into {num_heads} heads of even width (RoPE pairs)"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_seq_len = max_seq_len
        self.gradient_checkpointing = gradient_checkpointing

        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.rotary = RotaryEmbedding(hidden_size // num_heads, rope_theta)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.RMSNorm(hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)
        self._init_weights(num_layers)
        if tie_embeddings:
            self.head.weight = self.token_embedding.weight

    def _init_weights(self, num_layers: int) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        # Each block adds two residual branches; shrinking their last projections keeps the residual
        # stream's variance from growing with depth (GPT-2's scheme).
        for block in self.blocks:
            for projection in (block.attention.out, block.mlp[2]):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * num_layers))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` -> embeddings ``(B, L, hidden)``."""
        return self.token_embedding(ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list[KeyValue] | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> LMOutput:
        """Run the blocks over new positions, continuing from ``past_key_values`` if given.

        Args:
            inputs_embeds: ``(B, L, hidden)``.
            attention_mask: ``(B, P + L)`` bool, True on real tokens (cached ones included), or None.
            past_key_values: one ``(keys, values)`` pair ``(B, heads, P, head_dim)`` per block.
            use_cache: also return the keys and values of all ``P + L`` positions.
            logits_to_keep: Logits of the last this many positions only (0: all).
        """
        batch, length, _ = inputs_embeds.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        total_len = past_len + length
        if total_len > self.max_seq_len:
            raise ValueError(f"sequence of {total_len} positions exceeds max_seq_len={self.max_seq_len}")
        if attention_mask is None:
            positions = torch.arange(past_len, total_len, device=inputs_embeds.device).expand(batch, length)
        else:
            if attention_mask.shape != (batch, total_len):
                expected, got = (batch, total_len), tuple(attention_mask.shape)
                raise ValueError(f"attention_mask must be (B, P + L) = {expected}, got {got}")
            attention_mask = attention_mask.bool()
            positions = position_ids_from_mask(attention_mask, length)
        rope = self.rotary(positions)
        attn_mask = self._attention_mask(attention_mask, past_len, length, inputs_embeds.device)

        x = self.embedding_dropout(inputs_embeds)
        new_cache = []
        for index, block in enumerate(self.blocks):
            past = None if past_key_values is None else past_key_values[index]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, key_value = checkpoint(block, x, rope, attn_mask, past, use_reentrant=False)
            else:
                x, key_value = block(x, rope, attn_mask, past)
            new_cache.append(key_value)
        hidden_states = self.final_norm(x)
        kept = hidden_states[:, -logits_to_keep:] if logits_to_keep else hidden_states
        return LMOutput(hidden_states, self.head(kept), new_cache if use_cache else None)

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None, past_len: int, length: int, device: torch.device
    ) -> torch.Tensor | None:
        """Bool ``(L, P + L)`` or ``(B, 1, L, P + L)``, True where a query may attend; None: plain causal."""
        if attention_mask is None and past_len == 0:
            return None
        key_positions = torch.arange(past_len + length, device=device)
        query_positions = torch.arange(past_len, past_len + length, device=device)[:, None]
        allowed = key_positions <= query_positions
        if attention_mask is None:
            return allowed
        allowed = allowed & attention_mask[:, None, None, :]
        # A left-padding query has no real key at or before it; letting it see itself keeps the softmax
        # finite (its output is never used).
        return allowed | (key_positions == query_positions)

"""Video question answering: ``[video tokens][question][answer]`` through a causal LM.

A clip's video tokens pass through an MLP projector into the LM's width, plus a learned embedding of
their kind (spatial / residual / frame), and stand before each question about the clip. Training is
the next-token loss on the answer; answering is greedy decoding after the question.

    model = VideoQuestionAnswering(VTokTokenizer(ConvFrameEncoder()), TransformerLM())
    prefix = model.video_prefix(video)                              # (B, L, hidden)
    loss = model.loss(prefix, [QuestionRow(0, "How many objects are there?", "2")])
    model.answer(video, [["How many objects are there?"]] * len(video))  # [["2"], ...]
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, NamedTuple

import torch
from torch import nn

from vtok_lit.core.feature_cache import FrameFeatureCache, encode_frames_cached
from vtok_lit.core.generation import greedy_generate
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.sequences import (
    LMSequences,
    PromptPosition,
    answer_log_likelihood,
    answer_logits,
    build_lm_sequences,
    next_token_loss,
)
from vtok_lit.core.text_tokenizers import TextTokenizer, text_tokenizer_for
from vtok_lit.core.token_standardizer import TokenStandardizer
from vtok_lit.core.tokenizers import VideoTokenizer, check_choice
from vtok_lit.core.tokens import TokenKind, VideoTokens


class QuestionRow(NamedTuple):
    """One question about one clip of a batch: a row of the LM's batch.

    Attributes:
        clip: The clip's index in the batch (its row of the video prefix).
        prompt: The question as the LM reads it.
        answer: The answer, for the loss and for scoring a given answer; unused in generation.
    """

    clip: int
    prompt: str
    answer: str = ""


class VideoQuestionAnswering(nn.Module):
    """Answers questions about clips ``(B, T, 3, H, W)`` from their video tokens."""

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        language_model: LanguageModel,
        text_tokenizer: TextTokenizer | None = None,
        projector_hidden_dim: int = 512,
        max_answer_tokens: int = 16,
        freeze_tokenizer: bool = False,
        feature_cache: FrameFeatureCache | None = None,
        task_marker: str = "",
        standardize_tokens: bool = True,
        prompt_position: PromptPosition = "after_video",
    ) -> None:
        """
        Args:
            tokenizer: Turns a clip into video tokens (VTok, naive frame sampling, key frame only).
            language_model: The autoregressive LM.
            text_tokenizer: Turns questions and answers into ids; the built-in byte tokenizer when unset.
            projector_hidden_dim: Hidden width of the MLP from video tokens to the LM.
            max_answer_tokens: Longest answer generated.
            freeze_tokenizer: Keep the tokenizer (and its frame encoder) fixed and out of autograd.
            feature_cache: Where the frozen frame encoder's features of a clip are read from once
                computed (see :meth:`video_prefix`); needs freeze_tokenizer.
            task_marker: Text that opens every row, before the video tokens: what tells an LM that also
                writes videos (:class:`~vtok_lit.core.unified.UnifiedVideoModel`) to answer. Empty: none.
            standardize_tokens: Z-score the video tokens per channel and token kind (running statistics
                of the training batches) before the projector, so the LM reads any tokenizer at one
                scale. Off: the projector reads the tokens as the tokenizer writes them.
            prompt_position: Where a row's question goes: "after_video" (``[video][prompt][answer]``),
                "before_video" (``[prompt][video][answer]``: a causal LM's video positions see the
                question, so each can pick out what it asks about) or "both"
                (``[prompt][video][prompt][answer]``). A task marker stays right before the video.
        """
        super().__init__()
        self.tokenizer = tokenizer
        self.language_model = language_model
        self.text_tokenizer = text_tokenizer_for(language_model, text_tokenizer)
        self.max_answer_tokens = max_answer_tokens
        self.freeze_tokenizer = freeze_tokenizer
        if freeze_tokenizer:
            tokenizer.requires_grad_(False)
        self.feature_cache = feature_cache
        hidden = language_model.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(tokenizer.token_dim, projector_hidden_dim),
            nn.GELU(),
            nn.Linear(projector_hidden_dim, hidden),
        )
        self.kind_embedding = nn.Embedding(len(TokenKind), hidden)
        self.standardizer = TokenStandardizer(tokenizer.token_dim) if standardize_tokens else None
        self.task_marker_ids = self.text_tokenizer.encode(task_marker) if task_marker else []
        check_choice("prompt_position", prompt_position, PromptPosition)
        self.prompt_position = prompt_position

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Weights of a model whose projector read the tokens unstandardised (written before
        # standardize_tokens) have a projector but no statistics: it keeps reading them that way.
        statistics = f"{prefix}standardizer."
        unstandardised = f"{prefix}projector.0.weight" in state_dict and not any(
            key.startswith(statistics) for key in state_dict
        )
        if self.standardizer is not None and unstandardised:
            warnings.warn(
                f"{prefix}projector: the weights loaded have no token statistics (written before the "
                "video tokens were standardised), so it reads the tokens unstandardised, as it was trained",
                stacklevel=2,
            )
            for name, value in self.standardizer.fixed_identity_state().items():
                state_dict[statistics + name] = value
        super()._load_from_state_dict(state_dict, prefix, *args)

    def video_prefix(
        self, video: torch.Tensor, paths: list[str] | None = None, frame_indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Video ``(B, T, 3, H, W)`` -> projected video tokens ``(B, L, hidden)``.

        With a feature cache, the clips' files ``paths`` and ``(B, T)`` ``frame_indices`` (a batch's
        ``"path"`` and ``"frame_indices"``) let the frame features be read from it; without both the
        tokenizer encodes the frames.
        """
        frozen = torch.no_grad() if self.freeze_tokenizer else contextlib.nullcontext()
        with frozen:
            if self.feature_cache is None or paths is None or frame_indices is None:
                tokens = self.tokenizer(video)
            else:
                cache = self.feature_cache
                features = encode_frames_cached(self.tokenizer, video, paths, frame_indices, cache)
                tokens = self.tokenizer.tokenize_features(features)
        return self.project_tokens(tokens)

    def project_tokens(self, tokens: VideoTokens) -> torch.Tensor:
        """Video tokens -> the LM's ``(B, L, hidden)`` prefix (projector plus kind embedding)."""
        values = tokens.tokens
        if self.standardizer is not None:
            if self.training:
                self.standardizer.update(values, tokens.kinds)
            values = self.standardizer(values, tokens.kinds)
        return self.projector(values) + self.kind_embedding(tokens.kinds)[None]

    def sequences(self, prefix: torch.Tensor, rows: list[QuestionRow], with_answers: bool) -> LMSequences:
        """``[marker][video][prompt]`` rows (the prompt placed by ``prompt_position``), and
        ``[answer][end]`` after them when ``with_answers``, left-padded."""
        text = self.text_tokenizer
        answers = [text.encode(row.answer) + [text.eos_id] for row in rows] if with_answers else None
        prompts = [text.encode(row.prompt) for row in rows]
        prefix = prefix[[row.clip for row in rows]]
        if self.task_marker_ids:
            ids = torch.tensor(self.task_marker_ids, device=prefix.device)[None]
            marker = self.language_model.embed_tokens(ids).to(prefix.dtype)
            prefix = torch.cat([marker.expand(len(rows), -1, -1), prefix], dim=1)
        return build_lm_sequences(
            prefix,
            prompts,
            answers,
            self.language_model.embed_tokens,
            # Generation appends up to max_answer_tokens positions, so leave room for them.
            self.language_model.max_seq_len - (0 if with_answers else self.max_answer_tokens),
            self.prompt_position,
        )

    def logits(self, prefix: torch.Tensor, rows: list[QuestionRow]) -> tuple[torch.Tensor, torch.Tensor]:
        """The LM's ``(N, K, V)`` logits over the last K positions of each row with its answer, those
        the answers need (:func:`~vtok_lit.core.sequences.answer_logits`), and their ``(N, K)`` labels."""
        return answer_logits(self.language_model, self.sequences(prefix, rows, with_answers=True))

    def loss(self, prefix: torch.Tensor, rows: list[QuestionRow]) -> torch.Tensor:
        """The next-token loss on the rows' answers (and end tokens) after their clips and prompts."""
        return next_token_loss(*self.logits(prefix, rows))

    def answer_log_likelihoods(self, prefix: torch.Tensor, rows: list[QuestionRow]) -> torch.Tensor:
        """``(N,)`` log-likelihood that each row's whole answer, end token included, follows its prompt."""
        return answer_log_likelihood(*self.logits(prefix, rows))

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, rows: list[QuestionRow]) -> list[str]:
        """Each row's greedy answer (at most ``max_answer_tokens`` tokens)."""
        sequences = self.sequences(prefix, rows, with_answers=False)
        generated = greedy_generate(
            self.language_model,
            sequences.inputs_embeds,
            sequences.attention_mask,
            eos_id=self.text_tokenizer.eos_id,
            max_new_tokens=self.max_answer_tokens,
        )
        return [self.text_tokenizer.decode(ids) for ids in generated]

    @torch.no_grad()
    def answer(self, video: torch.Tensor, questions: list[list[str]]) -> list[list[str]]:
        """Greedy answers to each clip's questions (prompts as the LM reads them)."""
        rows = [QuestionRow(clip, prompt) for clip, prompts in enumerate(questions) for prompt in prompts]
        predictions = iter(self.generate(self.video_prefix(video), rows))
        return [[next(predictions) for _ in prompts] for prompts in questions]

"""Text-to-video: an LM writes a clip's video tokens after its caption, and the video decoder renders them.

The sequence is ``[caption][begin-of-video][v_1 .. v_L]`` (:mod:`vtok_lit.core.sequences`). The targets
are the tokenizer's tokens of the real clip, standardised per channel and token kind with running
statistics (:class:`~vtok_lit.core.token_standardizer.TokenStandardizer`). A video token enters the LM through
a linear projection plus learned embeddings of its kind (spatial / residual / frame) and of its slot
(position in the clip's sequence); a token head reads each next token off the hidden states.

    model = TextToVideoModel(tokenizer, decoder, TransformerLM(), num_frames=16)
    model.losses(video, ["a red circle moves up."])["loss"].backward()
    clips = model.generate(["a red circle moves up."])  # (1, 16, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from vtok_lit.core.generation import rollout_video_tokens
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.sequences import build_video_generation_sequences, caption_budget
from vtok_lit.core.text_tokenizers import TextTokenizer, text_tokenizer_for
from vtok_lit.core.token_heads import TokenHeadName, build_token_head
from vtok_lit.core.token_standardizer import TokenStandardizer
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import VideoDecoder


class TextToVideoModel(nn.Module):
    """Writes clips ``(B, T, 3, H, W)`` from captions: a tokenizer fixes the tokens, an LM writes
    them, a decoder renders them."""

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        decoder: VideoDecoder,
        language_model: LanguageModel,
        text_tokenizer: TextTokenizer | None = None,
        num_frames: int = 16,
        token_head: TokenHeadName = "flow_matching",
        head_hidden_dim: int = 256,
        head_sampling_steps: int = 8,
        guidance_scale: float = 1.0,
        visual_loss_weight: float = 1.0,
        decoder_loss_weight: float = 0.0,
        freeze_tokenizer: bool = True,
        freeze_decoder: bool = True,
        task_marker: str = "",
    ) -> None:
        """
        Args:
            tokenizer: Turns the real clip into the target tokens; it fixes how many tokens the LM writes.
            decoder: Renders tokens as frames (regression or flow matching).
            language_model: The autoregressive LM.
            text_tokenizer: Turns captions into ids; the built-in byte tokenizer when unset.
            num_frames: Frames of a clip.
            token_head: How the next token is read off a hidden state: "regression" (MSE, the mean
                token) or "flow_matching" (a small rectified flow that samples it).
            head_hidden_dim: Hidden width of the token head.
            head_sampling_steps: Euler steps of the flow-matching head per token.
            guidance_scale: Classifier-free guidance on the token head's input at generation; 1 is off.
                Needs a model trained on some clips without their captions.
            visual_loss_weight: Weight of the LM's token loss (L_visLM).
            decoder_loss_weight: Weight of the decoder's own loss on the real clip (L_dec), for joint
                fine-tuning of tokenizer and decoder; needs freeze_decoder false.
            freeze_tokenizer: Keep the tokenizer (and its frame encoder) fixed. A trainable tokenizer
                learns from the decoder loss alone (needs decoder_loss_weight > 0): the LM's targets are
                detached, or the tokens would drift toward what is easy to predict.
            freeze_decoder: Keep the decoder fixed.
            task_marker: Text put before every caption (a dropped caption included): what tells an LM
                that also answers questions (:class:`~vtok_lit.core.unified.UnifiedVideoModel`) to write
                a video. Empty: none.
        """
        super().__init__()
        if decoder_loss_weight > 0 and freeze_decoder:
            raise ValueError("decoder_loss_weight > 0 trains the decoder: set freeze_decoder: false.")
        if not freeze_tokenizer and decoder_loss_weight <= 0:
            raise ValueError(
                "A trainable tokenizer learns from the decoder loss alone: set decoder_loss_weight > 0 "
                "(and freeze_decoder: false), or freeze_tokenizer: true."
            )
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.language_model = language_model
        self.text_tokenizer = text_tokenizer_for(language_model, text_tokenizer)
        self.freeze_tokenizer = freeze_tokenizer
        tokenizer.requires_grad_(not freeze_tokenizer)
        decoder.requires_grad_(not freeze_decoder)
        self.num_frames = num_frames
        self.guidance_scale = guidance_scale
        self.visual_loss_weight = visual_loss_weight
        self.decoder_loss_weight = decoder_loss_weight
        self.task_marker_ids = self.text_tokenizer.encode(task_marker) if task_marker else []

        self.num_video_tokens = tokenizer.num_tokens(num_frames)
        caption_budget(self.num_video_tokens, language_model.max_seq_len)
        self.register_buffer("token_kinds", tokenizer.token_layout(num_frames)[0], persistent=False)
        hidden = language_model.hidden_size
        self.begin_of_video = nn.Parameter(0.02 * torch.randn(hidden))
        self.token_projection = nn.Linear(tokenizer.token_dim, hidden)
        self.kind_embedding = nn.Embedding(len(TokenKind), hidden)
        self.slot_embedding = nn.Parameter(0.02 * torch.randn(self.num_video_tokens, hidden))
        self.standardizer = TokenStandardizer(tokenizer.token_dim)
        self.token_head = build_token_head(
            token_head, hidden, tokenizer.token_dim, head_hidden_dim, head_sampling_steps
        )

    def target_tokens(self, video: torch.Tensor) -> VideoTokens:
        """The tokenizer's tokens of real clips ``(B, T, 3, H, W)``, the LM's targets."""
        if video.shape[1] != self.num_frames:
            raise ValueError(
                f"clips of {video.shape[1]} frames, but model.init_args.num_frames={self.num_frames}"
            )
        frozen = torch.no_grad() if self.freeze_tokenizer else contextlib.nullcontext()
        with frozen:
            return self.tokenizer(video)

    def embed_video(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """LM inputs ``(B, n, hidden)`` of ``(B, n, D)`` video tokens at slots ``start .. start + n - 1``."""
        slots = slice(start, start + tokens.shape[1])
        return (
            self.token_projection(tokens)
            + self.kind_embedding(self.token_kinds[slots])
            + self.slot_embedding[slots]
        )

    def caption_ids(self, captions: list[str], dropout: float = 0.0) -> list[list[int]]:
        """Each caption's ids; with probability ``dropout`` a caption is replaced by nothing."""
        dropped = (torch.rand(len(captions)) < dropout).tolist() if dropout > 0 else [False] * len(captions)
        return [
            self.task_marker_ids + ([] if drop else self.text_tokenizer.encode(text))
            for text, drop in zip(captions, dropped, strict=True)
        ]

    def video_hidden_states(self, targets: torch.Tensor, caption_ids: list[list[int]]) -> torch.Tensor:
        """Teacher forcing: the ``(B, L, hidden)`` states that predict each of the ``(B, L, D)`` targets
        (standardised tokens)."""
        inputs_embeds, attention_mask = build_video_generation_sequences(
            caption_ids,
            self.begin_of_video,
            self.embed_video(targets[:, :-1]),
            self.num_video_tokens,
            self.language_model.embed_tokens,
            self.language_model.max_seq_len,
        )
        output = self.language_model(inputs_embeds, attention_mask=attention_mask)
        return output.hidden_states[:, -self.num_video_tokens :]

    def losses(
        self,
        video: torch.Tensor,
        captions: list[str],
        caption_dropout: float = 0.0,
        tokens: VideoTokens | None = None,
    ) -> dict[str, torch.Tensor]:
        """``loss``, ``visual_loss`` and (when weighted) ``decoder_loss`` of real clips and their captions.

        Args:
            video: ``(B, T, 3, H, W)`` real clips in [0, 1].
            captions: Their B captions.
            caption_dropout: Probability of training on a clip without its caption, which teaches the
                unconditional model that classifier-free guidance needs.
            tokens: The clips' tokens when already computed (:meth:`target_tokens`), so the frame
                encoder does not run again.
        """
        tokens = self.target_tokens(video) if tokens is None else tokens
        if self.training:
            self.standardizer.update(tokens.tokens, tokens.kinds)
        targets = self.standardizer(tokens.tokens.detach(), tokens.kinds)
        hidden = self.video_hidden_states(targets, self.caption_ids(captions, caption_dropout))
        visual_loss = self.token_head.loss(hidden.flatten(0, 1), targets.flatten(0, 1))
        losses = {"loss": self.visual_loss_weight * visual_loss, "visual_loss": visual_loss}
        if self.decoder_loss_weight > 0:
            losses["decoder_loss"] = self.decoder.loss(tokens, video)
            losses["loss"] = losses["loss"] + self.decoder_loss_weight * losses["decoder_loss"]
        return losses

    @torch.no_grad()
    def sample_tokens(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        """Roll out ``(B, L, D)`` video tokens for the captions, L = ``tokenizer.num_tokens(num_frames)``."""
        caption_ids = self.caption_ids(captions)
        if self.guidance_scale != 1.0:
            caption_ids += [list(self.task_marker_ids) for _ in captions]
        hidden = self.language_model.hidden_size
        inputs_embeds, attention_mask = build_video_generation_sequences(
            caption_ids,
            self.begin_of_video,
            self.begin_of_video.new_zeros(len(caption_ids), 0, hidden),
            self.num_video_tokens,
            self.language_model.embed_tokens,
            self.language_model.max_seq_len,
        )
        standardized = rollout_video_tokens(
            self.language_model,
            self.token_head,
            lambda token, slot: self.embed_video(token[:, None], slot),
            inputs_embeds,
            attention_mask,
            self.num_video_tokens,
            self.guidance_scale,
            generator,
        )
        return self.standardizer.inverse(standardized, self.token_kinds)

    @torch.no_grad()
    def generate(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` in [0, 1] for the captions; ``generator`` fixes all sampling noise."""
        tokens = self.tokenizer.video_tokens(self.sample_tokens(captions, generator), self.num_frames)
        return self.decode(tokens, generator)

    def decode(self, tokens: VideoTokens, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's ``(B, T, 3, H, W)`` clips in [0, 1] for generated or real tokens."""
        return self.decoder.decode(tokens, self.num_frames, generator).clamp(0, 1)

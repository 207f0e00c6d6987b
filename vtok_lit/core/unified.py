"""One LM that both understands and generates video through one tokenizer, as the paper trains it.

:class:`UnifiedVideoModel` holds a :class:`~vtok_lit.core.video_qa.VideoQuestionAnswering` and a
:class:`~vtok_lit.core.text_to_video.TextToVideoModel` that share their tokenizer, LM and text
tokenizer: the understanding projector reads video tokens into the LM, the generation token head
writes them out of it, the decoder renders what it writes. A row says which task it is by a short
text marker, before the video tokens of a question row and before the caption of a generation row,
so the one LM tells "answer about this video" from "make this video"; a generation row holds only
its caption and the tokens the LM writes itself.

The loss of a batch is ``understanding_loss_weight * L_under + visual_loss_weight * L_visLM +
decoder_loss_weight * L_dec``; the tokenizer runs once on the batch's clips for both tasks.

    model = UnifiedVideoModel(tokenizer, decoder, TransformerLM())
    losses = model.losses(video, rows, generation_clips=[2, 3], captions=["a red circle moves up."] * 2)
    losses["loss"].backward()
"""

from __future__ import annotations

import torch
from torch import nn

from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.text_to_video import TextToVideoModel
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.token_heads import TokenHeadName
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.video_decoders import VideoDecoder
from vtok_lit.core.video_qa import QuestionRow, VideoQuestionAnswering

# What opens each row of the unified LM: the task it is.
UNDERSTANDING_MARKER = "<answer>"
GENERATION_MARKER = "<generate>"


class UnifiedVideoModel(nn.Module):
    """Answers questions about clips and writes clips from captions with one LM and one tokenizer."""

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        decoder: VideoDecoder,
        language_model: LanguageModel,
        text_tokenizer: TextTokenizer | None = None,
        num_frames: int = 16,
        projector_hidden_dim: int = 512,
        standardize_tokens: bool = True,
        max_answer_tokens: int = 16,
        token_head: TokenHeadName = "flow_matching",
        head_hidden_dim: int = 256,
        head_sampling_steps: int = 8,
        guidance_scale: float = 1.0,
        understanding_loss_weight: float = 1.0,
        visual_loss_weight: float = 1.0,
        decoder_loss_weight: float = 0.0,
        freeze_tokenizer: bool = True,
        freeze_decoder: bool = True,
        task_markers: bool = True,
    ) -> None:
        """
        Args:
            tokenizer: Turns clips into the video tokens both tasks use.
            decoder: Renders written tokens as frames.
            language_model: The one autoregressive LM of both tasks.
            text_tokenizer: Turns questions, answers and captions into ids; the byte tokenizer when unset.
            num_frames: Frames of a clip.
            projector_hidden_dim: Hidden width of the understanding projector (video tokens -> LM).
            standardize_tokens: Z-score the video tokens per channel and token kind (running statistics
                of the training batches) before the projector, so the LM reads any tokenizer at one
                scale. Off: the projector reads the tokens as the tokenizer writes them.
            max_answer_tokens: Longest answer generated.
            token_head: How a written video token is read off a hidden state: "regression" or "flow_matching".
            head_hidden_dim: Hidden width of the token head.
            head_sampling_steps: Euler steps of the flow-matching head per token.
            guidance_scale: Classifier-free guidance of the token head at generation; 1 is off.
            understanding_loss_weight: Weight of the answers' next-token loss (L_under).
            visual_loss_weight: Weight of the written tokens' loss (L_visLM).
            decoder_loss_weight: Weight of the decoder's loss on the generation rows' real clips (L_dec);
                needs freeze_decoder false.
            freeze_tokenizer: Keep the tokenizer fixed. A trainable one learns from the answers and the
                decoder's loss (needs decoder_loss_weight > 0, so the decoder follows its tokens).
            freeze_decoder: Keep the decoder fixed.
            task_markers: Open question rows with ``UNDERSTANDING_MARKER`` and captions with
                ``GENERATION_MARKER``; false leaves the rows as the single-task models build them.
        """
        super().__init__()
        if understanding_loss_weight < 0:
            raise ValueError(
                f"understanding_loss_weight must not be negative, got {understanding_loss_weight}"
            )
        self.understanding = VideoQuestionAnswering(
            tokenizer,
            language_model,
            text_tokenizer,
            projector_hidden_dim,
            max_answer_tokens,
            freeze_tokenizer,
            task_marker=UNDERSTANDING_MARKER if task_markers else "",
            standardize_tokens=standardize_tokens,
        )
        self.generation = TextToVideoModel(
            tokenizer,
            decoder,
            language_model,
            self.understanding.text_tokenizer,
            num_frames,
            token_head,
            head_hidden_dim,
            head_sampling_steps,
            guidance_scale,
            visual_loss_weight,
            decoder_loss_weight,
            freeze_tokenizer,
            freeze_decoder,
            task_marker=GENERATION_MARKER if task_markers else "",
        )
        self.understanding_loss_weight = understanding_loss_weight

    @property
    def tokenizer(self) -> VideoTokenizer:
        return self.generation.tokenizer

    @property
    def decoder(self) -> VideoDecoder:
        return self.generation.decoder

    @property
    def language_model(self) -> LanguageModel:
        return self.generation.language_model

    def losses(
        self,
        video: torch.Tensor,
        rows: list[QuestionRow],
        generation_clips: list[int],
        captions: list[str],
        caption_dropout: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """The weighted ``loss`` and its parts on one batch of clips ``(B, T, 3, H, W)``.

        Args:
            video: The batch's clips; the tokenizer encodes each once for both tasks.
            rows: Question rows; ``row.clip`` indexes ``video``. Empty: no understanding loss.
            generation_clips: The clips (indices into ``video``) written from their captions.
            captions: One caption per generation clip, in the same order.
            caption_dropout: Probability of training a generation row without its caption.

        Returns:
            ``loss``; ``understanding_loss`` when there are question rows; ``visual_loss`` (and
            ``decoder_loss`` when weighted) when there are generation clips.
        """
        if len(captions) != len(generation_clips):
            raise ValueError(f"{len(generation_clips)} generation clips but {len(captions)} captions")
        if not rows and not generation_clips:
            raise ValueError("a batch needs question rows or generation clips")
        tokens = self.generation.target_tokens(video)
        losses: dict[str, torch.Tensor] = {}
        total = video.new_zeros(())
        if rows:
            # Only the clips asked about go through the projector; the rows then index those.
            asked = sorted({row.clip for row in rows})
            position = {clip: index for index, clip in enumerate(asked)}
            prefix = self.understanding.project_tokens(tokens.select(asked))
            rows = [row._replace(clip=position[row.clip]) for row in rows]
            losses["understanding_loss"] = self.understanding.loss(prefix, rows)
            total = total + self.understanding_loss_weight * losses["understanding_loss"]
        if generation_clips:
            written = self.generation.losses(
                video[generation_clips], captions, caption_dropout, tokens=tokens.select(generation_clips)
            )
            total = total + written.pop("loss")
            losses.update(written)
        return {"loss": total, **losses}

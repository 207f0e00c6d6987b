"""Text-to-video: an LM writes a clip's video tokens after its caption and the video decoder renders them."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio

from vtok_lit.core.generation import rollout_video_tokens
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.token_heads import TokenHeadName, TokenStandardizer, build_token_head
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.tokens import TokenKind, VideoTokens
from vtok_lit.core.video_decoders import VideoDecoder
from vtok_lit.core.video_generation_sequence import build_video_generation_sequences, caption_budget
from vtok_lit.metrics import AnswerAccuracy, ClipJudge, TemporalQuality, judge_clips
from vtok_lit.metrics.answer_scoring import prediction_rows
from vtok_lit.modules.base import VTokModule, checked_text_tokenizer
from vtok_lit.modules.pretrained_parts import pretrained_parts


class TextToVideo(VTokModule):
    """Writes videos from captions: ``[caption][begin-of-video][v_1 .. v_L]``, then decodes the tokens.

    The targets are the tokenizer's tokens of the real clip, standardised per channel with running
    statistics. A video token enters the LM through a linear projection plus learned embeddings of its
    kind (spatial / residual / frame) and of its slot (position in the clip's sequence); a token head
    reads each next token off the hidden states.
    Validation generates a clip per caption of any data; temporal quality is scored VBench-style
    (``val/vbench/<name>``) and the clip is compared with the real one (``val/psnr_vs_real``). With a
    ``judge``, the questions it can read (those of its benchmark) are answered from the generated
    frames and scored like answers (``val/<benchmark>/<category>``); other records are not judged.
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer | None = None,
        decoder: VideoDecoder | None = None,
        language_model: LanguageModel | None = None,
        text_tokenizer: TextTokenizer | None = None,
        tokenizer_checkpoint: str | None = None,
        freeze_tokenizer: bool = True,
        freeze_decoder: bool = True,
        token_head: TokenHeadName = "flow_matching",
        head_hidden_dim: int = 256,
        head_sampling_steps: int = 8,
        visual_loss_weight: float = 1.0,
        decoder_loss_weight: float = 0.0,
        caption_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        num_frames: int = 16,
        benchmark: str = "motionshapes",
        judge: ClipJudge | None = None,
        judge_reconstructions: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
    ) -> None:
        """
        Args:
            tokenizer: Turns the real clip into the target tokens (VTok, naive frame sampling, key frame
                only); it fixes how many tokens the LM writes. Unset: built as tokenizer_checkpoint saved it.
            decoder: Renders generated tokens as frames (regression or flow matching). Unset: built as
                tokenizer_checkpoint saved it.
            language_model: The autoregressive LM (built-in transformer or a Hugging Face causal LM);
                required (None only so that it may follow the optional tokenizer and decoder).
            text_tokenizer: Turns captions into ids; the built-in byte tokenizer when unset.
            tokenizer_checkpoint: A tokenizer-pretraining checkpoint whose tokenizer and decoder
                weights initialise these (and whose saved configs build them when they are unset).
            freeze_tokenizer: Keep the tokenizer (and its frame encoder) fixed. A trainable tokenizer
                learns from the decoder loss alone (needs decoder_loss_weight > 0): the LM's targets are
                detached, or the tokens would drift toward what is easy to predict.
            freeze_decoder: Keep the decoder fixed.
            token_head: How the next token is read off a hidden state: "regression" (MSE, the mean
                token) or "flow_matching" (a small rectified flow that samples it).
            head_hidden_dim: Hidden width of the token head.
            head_sampling_steps: Euler steps of the flow-matching head per token.
            visual_loss_weight: Weight of the LM's token loss (L_visLM).
            decoder_loss_weight: Weight of the decoder's own loss on the real clip (L_dec), for joint
                fine-tuning of tokenizer and decoder; needs freeze_decoder false.
            caption_dropout: Probability of training on a clip without its caption, which teaches the
                unconditional model that classifier-free guidance needs.
            guidance_scale: Classifier-free guidance on the token head's input at generation; 1 is off.
            num_frames: Frames of a generated clip; must match the data's num_frames (at least 3 for
                the temporal scores).
            benchmark: Name in the alignment metric keys, ``val/<benchmark>/<category>``.
            judge: Answers the questions of its benchmark from generated frames, e.g.
                ``vtok_lit.data.motionshapes.MotionShapesJudge``; None logs no alignment metrics.
            judge_reconstructions: Also judge the decoder's rendering of the real clip's own tokens,
                logged as ``val/<benchmark>_reconstructed/<category>``: what a perfect LM would reach
                with this tokenizer and decoder, the ceiling of the generated clips' alignment.
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval)
        self.save_hyperparameters()
        if decoder_loss_weight > 0 and freeze_decoder:
            raise ValueError("decoder_loss_weight > 0 trains the decoder: set freeze_decoder: false.")
        if not freeze_tokenizer and decoder_loss_weight <= 0:
            raise ValueError(
                "A trainable tokenizer learns from the decoder loss alone: set decoder_loss_weight > 0 "
                "(and freeze_decoder: false), or freeze_tokenizer: true."
            )
        if not 0 <= caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {caption_dropout}")
        if guidance_scale != 1.0 and caption_dropout == 0:
            raise ValueError("guidance_scale needs an unconditional model: set caption_dropout > 0.")
        tokenizer, decoder = pretrained_parts(
            self, tokenizer_checkpoint, tokenizer=tokenizer, decoder=decoder
        )
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.language_model = language_model
        self.text_tokenizer = checked_text_tokenizer(text_tokenizer, language_model)
        if tokenizer_checkpoint is None and freeze_tokenizer:
            warnings.warn(
                "TextToVideo: no tokenizer_checkpoint, so the frozen tokenizer keeps its random weights "
                "(unless a checkpoint of this module is loaded into it next).",
                stacklevel=2,
            )
        self.freeze_tokenizer = freeze_tokenizer
        tokenizer.requires_grad_(not freeze_tokenizer)
        decoder.requires_grad_(not freeze_decoder)
        self.visual_loss_weight = visual_loss_weight
        self.decoder_loss_weight = decoder_loss_weight
        self.caption_dropout = caption_dropout
        self.guidance_scale = guidance_scale
        self.num_frames = num_frames
        self.benchmark = benchmark
        self.judge = judge
        self.judge_reconstructions = judge_reconstructions

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
        for stage in ("val", "test"):
            setattr(self, f"{stage}_alignment", AnswerAccuracy())
            setattr(self, f"{stage}_reconstructed_alignment", AnswerAccuracy())
            setattr(self, f"{stage}_temporal", TemporalQuality())
            setattr(self, f"{stage}_psnr", PeakSignalNoiseRatio(data_range=1.0))

    def checkpoint_identity(self) -> dict[str, str]:
        return {
            **super().checkpoint_identity(),
            "tokenizer": type(self.tokenizer).__name__,
            "frame_encoder": type(self.tokenizer.frame_encoder).__name__,
            "decoder": type(self.decoder).__name__,
            "language_model": type(self.language_model).__name__,
        }

    def setup(self, stage: str) -> None:
        for key, model_key, value in (
            ("num_frames", "num_frames", self.num_frames),
            ("image_size", "decoder.init_args.image_size", self.decoder.image_size),
        ):
            if self.data_setting(key) is not None:
                self.check_data_matches(key, self.data_setting(key), model_key, value)
        self.check_frames_fit(self.tokenizer)
        categories = self.data_question_categories()
        for evaluation in ("val", "test"):
            for suffix in ("", "_reconstructed"):
                setattr(self, f"{evaluation}{suffix}_alignment", AnswerAccuracy(categories).to(self.device))

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
            [] if drop else self.text_tokenizer.encode(text)
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
        self, video: torch.Tensor, captions: list[str], caption_dropout: float = 0.0
    ) -> dict[str, torch.Tensor]:
        """``loss``, ``visual_loss`` and (when weighted) ``decoder_loss`` of real clips and their captions."""
        tokens = self.target_tokens(video)
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
            caption_ids += [[] for _ in captions]
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
        kinds = self.tokenizer.video_tokens(standardized, self.num_frames).kinds
        return self.standardizer.inverse(standardized, kinds)

    @torch.no_grad()
    def generate(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        """Clips ``(B, T, 3, H, W)`` in [0, 1] for the captions; ``generator`` fixes all sampling noise."""
        tokens = self.tokenizer.video_tokens(self.sample_tokens(captions, generator), self.num_frames)
        return self.decode(tokens, generator)

    def decode(self, tokens: VideoTokens, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's ``(B, T, 3, H, W)`` clips in [0, 1] for generated or real tokens."""
        return self.decoder.decode(tokens, self.num_frames, generator).clamp(0, 1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        losses = self.losses(batch["video"], batch["caption"], self.caption_dropout)
        self._log_losses(losses, "train", len(batch["caption"]))
        return losses["loss"]

    def _log_losses(self, losses: dict[str, torch.Tensor], stage: str, batch_size: int) -> None:
        self.log(
            f"{stage}/loss",
            losses["loss"],
            prog_bar=stage == "train",
            batch_size=batch_size,
            sync_dist=stage != "train",
        )
        parts = {f"{stage}/{name}": value for name, value in losses.items() if name != "loss"}
        self.log_dict(parts, batch_size=batch_size, sync_dist=stage != "train")

    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> dict[str, Any] | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        video, captions, questions = batch["video"], batch["caption"], batch["questions"]
        batch_size = len(captions)
        self._log_losses(self.losses(video, captions), stage, batch_size)

        # The same noise at every validation, so clips of successive checkpoints compare.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        start = time.perf_counter()
        generated = self.generate(captions, generator)
        if generated.is_cuda:
            torch.cuda.synchronize(generated.device)
        seconds = (time.perf_counter() - start) / batch_size
        self.log(f"{stage}/generation_seconds_per_clip", seconds, batch_size=batch_size, sync_dist=True)

        frame_features = self.tokenizer.encode_frames(generated).mean(dim=(-2, -1))  # (B, T, C)
        generated = generated.float()
        with self.full_precision():
            psnr = getattr(self, f"{stage}_psnr")
            psnr.update(generated.flatten(0, 1), video.flatten(0, 1).float())
            temporal = getattr(self, f"{stage}_temporal")
            temporal.update(generated, frame_features=frame_features.float())
        self.log(f"{stage}/psnr_vs_real", psnr, batch_size=batch_size)

        judged, predictions = (
            ([], []) if self.judge is None else judge_clips(self.judge, generated, questions)
        )
        getattr(self, f"{stage}_alignment").update(judged, predictions)
        if judged and self.judge_reconstructions:
            reconstructed = self.decode(self.tokenizer(video), generator)
            getattr(self, f"{stage}_reconstructed_alignment").update(
                *judge_clips(self.judge, reconstructed, questions)
            )
        return {"captions": captions, "generated": generated, **prediction_rows(judged, predictions)}

    def _log_epoch_metrics(self, stage: str) -> None:
        temporal = getattr(self, f"{stage}_temporal")
        for suffix in ("", "_reconstructed"):
            alignment = getattr(self, f"{stage}{suffix}_alignment")
            # No judged question (no judge, or captions of another benchmark) is nothing to report, not 0%.
            if alignment.total_all > 0:
                prefix = f"{stage}/{self.benchmark}{suffix}"
                self.log_dict({f"{prefix}/{k}": v for k, v in alignment.compute().items()})
            alignment.reset()
        self.log_dict({f"{stage}/vbench/{k}": v for k, v in temporal.compute().items()})
        temporal.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        return {"captions": batch["caption"], "generated": self.generate(batch["caption"], generator)}

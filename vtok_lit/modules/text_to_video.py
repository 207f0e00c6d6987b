"""Text-to-video: an LM writes a clip's video tokens after its caption and the video decoder renders them."""

from __future__ import annotations

import time
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio

from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.text_to_video import TextToVideoModel
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.token_heads import TokenHeadName
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.tokens import VideoTokens
from vtok_lit.core.video_decoders import VideoDecoder
from vtok_lit.metrics import AnswerAccuracy, ClipJudge, TemporalQuality, judge_clips
from vtok_lit.metrics.answer_scoring import prediction_rows
from vtok_lit.modules.base import TaskModule, VTokModule, check_token_dims, required_language_model
from vtok_lit.modules.pretrained_parts import task_parts


class TextToVideo(TaskModule):
    """Writes videos from captions: trains and scores a :class:`~vtok_lit.core.text_to_video.TextToVideoModel`
    (``self.model``).

    Validation generates a clip per caption of any data; temporal quality is scored VBench-style
    (``val/vbench/<name>``) and the clip is compared with the real one (``val/psnr_vs_real``). With a
    ``judge``, the questions it can read (those of its benchmark) are answered from the generated
    frames and scored like answers (``val/<benchmark>/<category>``); other records are not judged.
    """

    TASK_PREFIXES = {"generation": "model."}

    def __init__(
        self,
        tokenizer: VideoTokenizer | None = None,
        decoder: VideoDecoder | None = None,
        language_model: LanguageModel | None = None,
        text_tokenizer: TextTokenizer | None = None,
        tokenizer_checkpoint: str | None = None,
        init_checkpoint: str | None = None,
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
        task_marker: str = "",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scales: dict[str, float] | None = None,
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
            init_checkpoint: A TextToVideo, UnifiedVideoLM or VideoLLM checkpoint to start from: its
                tokenizer and LM, and its generation parts (decoder, token head) where it has them.
                Same sizes needed.
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
            task_marker: Text put before every caption: "<generate>" for an LM trained by
                UnifiedVideoLM (init_checkpoint), so it reads its rows as it was trained.
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
            lr_scales: Learning rates of parts as multiples of the optimizer's, ``{part: scale}`` by
                attribute path (``model.tokenizer: 0.3`` for a pretrained tokenizer under a new LM).
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, lr_scales)
        self.save_hyperparameters()
        check_guidance(caption_dropout, guidance_scale)
        tokenizer, decoder = task_parts(
            self, tokenizer_checkpoint, init_checkpoint, tokenizer=tokenizer, decoder=decoder
        )
        check_token_dims(tokenizer, decoder=decoder)
        self.model = TextToVideoModel(
            tokenizer,
            decoder,
            required_language_model(language_model),
            text_tokenizer,
            num_frames,
            token_head,
            head_hidden_dim,
            head_sampling_steps,
            guidance_scale,
            visual_loss_weight,
            decoder_loss_weight,
            freeze_tokenizer,
            freeze_decoder,
            task_marker,
        )
        self.initialise_from(init_checkpoint)
        if tokenizer_checkpoint is None and init_checkpoint is None and freeze_tokenizer:
            warnings.warn(
                "TextToVideo: no tokenizer_checkpoint, so the frozen tokenizer keeps its random weights "
                "(unless a checkpoint of this module is loaded into it next).",
                stacklevel=2,
            )
        self.caption_dropout = caption_dropout
        self.benchmark = benchmark
        self.judge = judge
        self.judge_reconstructions = judge_reconstructions

    @property
    def decoder(self) -> VideoDecoder:
        return self.model.decoder

    def stage_metrics(self, stage: str, categories: list[str]) -> dict[str, Metric]:
        return generation_metrics(categories)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_generation_data(self, self.model)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        losses = self.model.losses(batch["video"], batch["caption"], self.caption_dropout)
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

    def evaluate(
        self, batch: dict[str, Any], batch_idx: int, stage: str, metrics: nn.ModuleDict
    ) -> dict[str, Any] | None:
        """Scores the clips generated for a batch's captions against the real ones; the frame encoder
        runs once on the real clips (their tokens serve the loss and the reconstruction) and once on
        the generated ones (their features serve the temporal scores)."""
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        video, captions = batch["video"], batch["caption"]
        tokens = self.model.target_tokens(video)
        self._log_losses(self.model.losses(video, captions, tokens=tokens), stage, len(captions))
        return score_generation(
            self, self.model, batch, tokens, metrics, stage, batch_idx, self.judge, self.judge_reconstructions
        )

    def log_epoch_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        log_generation_metrics(
            self, metrics, stage, f"{stage}/{self.benchmark}", f"{stage}/{self.benchmark}_reconstructed"
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        return {"captions": batch["caption"], "generated": self.model.generate(batch["caption"], generator)}


def check_guidance(caption_dropout: float, guidance_scale: float) -> None:
    """Refuse a caption dropout outside [0, 1), and guidance without an unconditional model."""
    if not 0 <= caption_dropout < 1:
        raise ValueError(f"caption_dropout must be in [0, 1), got {caption_dropout}")
    if guidance_scale != 1.0 and caption_dropout == 0:
        raise ValueError("guidance_scale needs an unconditional model: set caption_dropout > 0.")


def check_generation_data(module: VTokModule, model: TextToVideoModel) -> None:
    """Refuse data whose clip length or frame size the model does not write (names both keys)."""
    for key, model_key, value in (
        ("num_frames", "num_frames", model.num_frames),
        ("image_size", "decoder.init_args.image_size", model.decoder.image_size),
    ):
        if module.data_setting(key) is not None:
            module.check_data_matches(key, module.data_setting(key), model_key, value)
    module.check_frames_fit(model.tokenizer)


def generation_metrics(categories: list[str]) -> dict[str, Metric]:
    """Fresh metrics of the clips generated at one evaluation stage (see :func:`score_generation`)."""
    return {
        "alignment": AnswerAccuracy(categories),
        "reconstructed_alignment": AnswerAccuracy(categories),
        "temporal": TemporalQuality(),
        "psnr": PeakSignalNoiseRatio(data_range=1.0),
    }


def score_generation(
    module: VTokModule,
    model: TextToVideoModel,
    batch: dict[str, Any],
    tokens: VideoTokens,
    metrics: nn.ModuleDict,
    stage: str,
    batch_idx: int,
    judge: ClipJudge | None,
    judge_reconstructions: bool,
) -> dict[str, Any]:
    """Generates a clip for each caption of ``batch`` and scores it into :func:`generation_metrics`.

    Logs the seconds a clip took; the real clips' ``tokens`` give the judged reconstructions. Returns
    the prediction table's rows with the captions and generated clips.
    """
    video, captions, questions = batch["video"], batch["caption"], batch["questions"]
    # The same noise at every validation, so clips of successive checkpoints compare.
    generator = torch.Generator(device=module.device).manual_seed(batch_idx)
    start = time.perf_counter()
    generated = model.generate(captions, generator)
    if generated.is_cuda:
        torch.cuda.synchronize(generated.device)
    seconds = (time.perf_counter() - start) / len(captions)
    module.log(f"{stage}/generation_seconds_per_clip", seconds, batch_size=len(captions), sync_dist=True)

    frame_features = model.tokenizer.encode_frames(generated).mean(dim=(-2, -1))  # (B, T, C)
    generated = generated.float()
    with module.full_precision():
        metrics["psnr"].update(generated.flatten(0, 1), video.flatten(0, 1).float())
        metrics["temporal"].update(generated, frame_features=frame_features.float())

    judged, predictions = ([], []) if judge is None else judge_clips(judge, generated, questions)
    metrics["alignment"].update(judged, predictions)
    if judged and judge_reconstructions:
        reconstructed = model.decode(tokens, generator)
        metrics["reconstructed_alignment"].update(*judge_clips(judge, reconstructed, questions))
    return {"captions": captions, "generated": generated, **prediction_rows(judged, predictions)}


def log_generation_metrics(
    module: VTokModule, metrics: nn.ModuleDict, stage: str, alignment_prefix: str, reconstructed_prefix: str
) -> None:
    """Logs and resets an epoch of :func:`generation_metrics`: the judge's per-category alignment of
    generated clips under ``alignment_prefix`` and of reconstructions under ``reconstructed_prefix``,
    ``<stage>/psnr_vs_real`` and ``<stage>/vbench/<name>``."""
    for prefix, alignment in (
        (alignment_prefix, metrics["alignment"]),
        (reconstructed_prefix, metrics["reconstructed_alignment"]),
    ):
        # No judged question (no judge, or captions of another benchmark) is nothing to report, not 0%.
        if alignment.total_all > 0:
            module.log_dict({f"{prefix}/{k}": v for k, v in alignment.compute().items()})
        alignment.reset()
    if metrics["psnr"].update_called:
        module.log(f"{stage}/psnr_vs_real", metrics["psnr"].compute())
    module.log_dict({f"{stage}/vbench/{k}": v for k, v in metrics["temporal"].compute().items()})
    metrics["psnr"].reset()
    metrics["temporal"].reset()

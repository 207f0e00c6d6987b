"""Unified training: one LM answers questions about videos and writes videos, every step both."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import Metric

from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.token_heads import TokenHeadName
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.unified import UnifiedVideoModel
from vtok_lit.core.video_decoders import VideoDecoder
from vtok_lit.metrics import AnswerAccuracy, ClipJudge
from vtok_lit.modules.base import TaskModule, check_token_dims, required_language_model
from vtok_lit.modules.pretrained_parts import task_parts
from vtok_lit.modules.text_to_video import (
    check_generation_data,
    check_guidance,
    generation_metrics,
    log_generation_metrics,
    score_generation,
)
from vtok_lit.modules.video_llm import (
    draw_clip_questions,
    log_answer_accuracy,
    question_rows,
    require_questions,
    score_answers,
)


class UnifiedVideoLM(TaskModule):
    """Trains and scores a :class:`~vtok_lit.core.unified.UnifiedVideoModel` (``self.model``): one
    tokenizer, one LM, the understanding projector and the generation token head.

    Every training step splits its batch: ``generation_share`` of the clips are written from their
    captions, the others are asked ``questions_per_video`` of their questions. The loss is
    ``understanding_loss_weight * L_under + visual_loss_weight * L_visLM + decoder_loss_weight * L_dec``,
    each part logged as ``train/understanding_loss``, ``train/visual_loss``, ``train/decoder_loss``.

    Validation runs both benchmark loops on every clip: greedy answers scored per category as
    ``val/<benchmark>/understanding/<category>``; a clip generated from its caption, judged per
    category as ``val/<benchmark>/generation/<category>`` (the decoded real tokens, the ceiling, as
    ``val/<benchmark>/generation_reconstructed/<category>``), with ``val/psnr_vs_real``,
    ``val/vbench/<name>`` and ``val/generation_seconds_per_clip``. ``val/accuracy`` is the
    understanding overall, ``val/alignment`` the generation overall.
    """

    TASK_PREFIXES = {"understanding": "model.understanding.", "generation": "model.generation."}

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
        generation_share: float = 0.5,
        questions_per_video: int = 3,
        understanding_loss_weight: float = 1.0,
        visual_loss_weight: float = 1.0,
        decoder_loss_weight: float = 0.0,
        task_markers: bool = True,
        projector_hidden_dim: int = 512,
        standardize_tokens: bool = True,
        max_answer_tokens: int = 16,
        token_head: TokenHeadName = "flow_matching",
        head_hidden_dim: int = 256,
        head_sampling_steps: int = 8,
        caption_dropout: float = 0.1,
        guidance_scale: float = 1.0,
        num_frames: int = 16,
        benchmark: str = "motionshapes",
        judge: ClipJudge | None = None,
        judge_reconstructions: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scales: dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            tokenizer: Turns clips into the video tokens both tasks read and write. Unset: built as
                tokenizer_checkpoint saved it.
            decoder: Renders written tokens as frames. Unset: built as tokenizer_checkpoint saved it.
            language_model: The one autoregressive LM of both tasks; required (None only so that it may
                follow the optional tokenizer and decoder).
            text_tokenizer: Turns questions, answers and captions into ids; the byte tokenizer when unset.
            tokenizer_checkpoint: A tokenizer-pretraining checkpoint whose tokenizer and decoder
                weights initialise these (and whose saved configs build them when they are unset).
            init_checkpoint: A UnifiedVideoLM, VideoLLM or TextToVideo checkpoint to start from: each task
                model it holds whole, the tokenizer and LM for a task it does not. Same sizes needed.
            freeze_tokenizer: Keep the tokenizer fixed. A trainable one learns from the answers and
                the decoder's loss (needs decoder_loss_weight > 0).
            freeze_decoder: Keep the decoder fixed.
            generation_share: Share of each training batch's clips written from their captions; the
                others are asked questions. Both tasks get at least one clip of a batch of two or more
                unless the share is 0 or 1.
            questions_per_video: Questions drawn per understanding clip and step (0 = all of them).
            understanding_loss_weight: Weight of the answers' next-token loss (L_under).
            visual_loss_weight: Weight of the written tokens' loss (L_visLM).
            decoder_loss_weight: Weight of the decoder's loss on the generation clips (L_dec); needs
                freeze_decoder false.
            task_markers: Open question rows with "<answer>" and captions with "<generate>", so the LM
                knows which task a row is.
            projector_hidden_dim: Hidden width of the MLP from video tokens to the LM.
            standardize_tokens: Z-score the video tokens per channel and token kind (running statistics
                of the training batches) before the projector, so the LM reads any tokenizer at one
                scale. Off: the projector reads the tokens as the tokenizer writes them.
            max_answer_tokens: Longest answer generated at validation.
            token_head: How a written token is read off a hidden state: "regression" or "flow_matching".
            head_hidden_dim: Hidden width of the token head.
            head_sampling_steps: Euler steps of the flow-matching head per token.
            caption_dropout: Probability of training a generation clip without its caption (for guidance).
            guidance_scale: Classifier-free guidance of the token head at generation; 1 is off.
            num_frames: Frames of a clip; must match the data's num_frames.
            benchmark: Name of the data in the metric keys, ``val/<benchmark>/understanding/<category>``.
            judge: Answers the questions of its benchmark from generated frames, e.g.
                ``vtok_lit.data.motionshapes.MotionShapesJudge``; None logs no alignment metrics.
            judge_reconstructions: Also judge the decoder's rendering of the real clips' tokens.
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
            lr_scales: Learning rates of parts as multiples of the optimizer's, ``{part: scale}`` by
                attribute path (``model.understanding.tokenizer: 0.3``, or its other name
                ``model.generation.tokenizer``, for a pretrained tokenizer under a new LM).
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, lr_scales)
        self.save_hyperparameters()
        if not 0 <= generation_share <= 1:
            raise ValueError(f"generation_share must be in [0, 1], got {generation_share}")
        check_guidance(caption_dropout, guidance_scale)
        tokenizer, decoder = task_parts(
            self, tokenizer_checkpoint, init_checkpoint, tokenizer=tokenizer, decoder=decoder
        )
        check_token_dims(tokenizer, decoder=decoder)
        if tokenizer_checkpoint is None and init_checkpoint is None and freeze_tokenizer:
            warnings.warn(
                "UnifiedVideoLM: no tokenizer_checkpoint, so the frozen tokenizer keeps its random weights "
                "(unless a checkpoint of this module is loaded into it next).",
                stacklevel=2,
            )
        self.model = UnifiedVideoModel(
            tokenizer,
            decoder,
            required_language_model(language_model),
            text_tokenizer,
            num_frames,
            projector_hidden_dim,
            standardize_tokens,
            max_answer_tokens,
            token_head,
            head_hidden_dim,
            head_sampling_steps,
            guidance_scale,
            understanding_loss_weight,
            visual_loss_weight,
            decoder_loss_weight,
            freeze_tokenizer,
            freeze_decoder,
            task_markers,
        )
        self.initialise_from(init_checkpoint)
        self.generation_share = generation_share
        self.questions_per_video = questions_per_video
        self.caption_dropout = caption_dropout
        self.benchmark = benchmark
        self.judge = judge
        self.judge_reconstructions = judge_reconstructions

    @property
    def decoder(self) -> VideoDecoder:
        return self.model.decoder

    def stage_metrics(self, stage: str, categories: list[str]) -> dict[str, Metric]:
        return {"accuracy": AnswerAccuracy(categories), **generation_metrics(categories)}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_generation_data(self, self.model.generation)
        if self.generation_share < 1:
            require_questions(self)

    def split_clips(self, batch_size: int) -> tuple[list[int], list[int]]:
        """The clips of a batch asked questions and those written from captions (the last ones)."""
        written = round(self.generation_share * batch_size)
        if batch_size >= 2 and 0 < self.generation_share < 1:
            written = min(max(written, 1), batch_size - 1)
        asked = batch_size - written
        return list(range(asked)), list(range(asked, batch_size))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        asked, written = self.split_clips(len(batch["caption"]))
        questions = draw_clip_questions(
            [batch["questions"][i] for i in asked], self.questions_per_video, True
        )
        losses = self.model.losses(
            batch["video"],
            question_rows(questions),
            written,
            [batch["caption"][i] for i in written],
            self.caption_dropout,
        )
        loss = losses.pop("loss")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        self.log_dict(
            {f"train/{name}": value for name, value in losses.items()}, batch_size=len(batch["caption"])
        )
        return loss

    def evaluate(
        self, batch: dict[str, Any], batch_idx: int, stage: str, metrics: nn.ModuleDict
    ) -> dict[str, Any] | None:
        """Both loops on every clip of the batch: its questions answered and scored, its caption
        written, judged and compared with the real clip."""
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        video = batch["video"]
        tokens = self.model.generation.target_tokens(video)
        questions = draw_clip_questions(batch["questions"], 0, sample=False)
        answered: dict[str, list] = {}
        written = self.model.generation.losses(video, batch["caption"], tokens=tokens)
        loss = written.pop("loss")
        if questions:
            prefix = self.model.understanding.project_tokens(tokens)
            understanding_loss, answered = score_answers(
                self.model.understanding, prefix, questions, metrics["accuracy"]
            )
            written["understanding_loss"] = understanding_loss
            loss = loss + self.model.understanding_loss_weight * understanding_loss
        # Every clip is both asked and written here, so this sums both tasks over the same clips.
        self.log(f"{stage}/loss", loss, batch_size=len(video), sync_dist=True)
        self.log_dict(
            {f"{stage}/{name}": value for name, value in written.items()},
            batch_size=len(video),
            sync_dist=True,
        )
        generated = score_generation(
            self,
            self.model.generation,
            batch,
            tokens,
            metrics,
            stage,
            batch_idx,
            self.judge,
            self.judge_reconstructions,
        )
        return {**generated, **table_of_both(answered, generated)}

    def log_epoch_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        prefix = f"{stage}/{self.benchmark}"
        if metrics["accuracy"].total_all > 0:
            self.log(
                f"{stage}/accuracy", log_answer_accuracy(self, metrics["accuracy"], f"{prefix}/understanding")
            )
        alignment = metrics["alignment"]
        if alignment.total_all > 0:
            self.log(f"{stage}/alignment", alignment.compute()["overall"])
        log_generation_metrics(
            self, metrics, stage, f"{prefix}/generation", f"{prefix}/generation_reconstructed"
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        return {
            "path": batch["path"],
            "captions": batch["caption"],
            "generated": self.model.generation.generate(batch["caption"], generator),
        }


def table_of_both(answered: dict[str, list], judged: dict[str, Any]) -> dict[str, list]:
    """One prediction table of a batch's answered questions and of the judge's answers about its
    generated clips, the category saying which (``understanding/color``, ``generation/color``)."""
    columns = ("questions", "answers", "options", "categories", "predictions")
    table = {column: list(answered.get(column, [])) + list(judged.get(column, [])) for column in columns}
    tasks = ["understanding"] * len(answered.get("questions", [])) + ["generation"] * len(
        judged.get("questions", [])
    )
    table["categories"] = [
        f"{task}/{category}" for task, category in zip(tasks, table["categories"], strict=True)
    ]
    return table

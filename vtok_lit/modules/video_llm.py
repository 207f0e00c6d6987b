"""Video-LLM understanding: video tokens through a projector into an LM that answers questions."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from vtok_lit.core.feature_cache import FrameFeatureCache
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.sequences import PromptPosition
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.video_qa import QuestionRow, VideoQuestionAnswering
from vtok_lit.metrics import AnswerAccuracy
from vtok_lit.metrics.answer_scoring import likelihood_choices, prediction_rows, question_prompt
from vtok_lit.modules.base import TaskModule, VTokModule, required_language_model
from vtok_lit.modules.pretrained_parts import task_parts

# A question of the data about one clip of a batch: the clip's index and its manifest ``qa`` record.
ClipQuestion = tuple[int, dict[str, Any]]


class VideoLLM(TaskModule):
    """Answers questions about videos: trains and scores a
    :class:`~vtok_lit.core.video_qa.VideoQuestionAnswering` model (``self.model``).

    Training is the next-token loss on the answers of the data's questions. Validation generates
    answers greedily and reports exact-match accuracy after normalisation
    (:mod:`vtok_lit.metrics.answer_scoring`) per question category of the data as
    ``val/<benchmark>/<category>`` and ``val/<benchmark>/overall``, the raw match as
    ``val/<benchmark>/overall_raw``, and for multiple-choice questions the generated and the
    likelihood-chosen option as ``val/<benchmark>/multiple_choice_generated`` and ``..._likelihood``.
    ``val/accuracy`` is ``val/<benchmark>/overall`` under a name that stays the same for any data,
    which the shipped configs' checkpoint callback monitors.
    """

    TASK_PREFIXES = {"understanding": "model."}

    def __init__(
        self,
        tokenizer: VideoTokenizer | None = None,
        language_model: LanguageModel | None = None,
        text_tokenizer: TextTokenizer | None = None,
        tokenizer_checkpoint: str | None = None,
        init_checkpoint: str | None = None,
        freeze_tokenizer: bool = False,
        feature_cache_dir: str | None = None,
        projector_hidden_dim: int = 512,
        standardize_tokens: bool = True,
        prompt_position: PromptPosition = "after_video",
        questions_per_video: int = 0,
        max_answer_tokens: int = 16,
        benchmark: str = "motionshapes",
        task_marker: str = "",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scales: dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            tokenizer: Turns a clip into video tokens (VTok, naive frame sampling, key frame only).
                Unset: built as tokenizer_checkpoint saved it.
            language_model: The autoregressive LM (built-in transformer or a Hugging Face causal LM);
                required (None only so that it may follow the optional tokenizer).
            text_tokenizer: Turns questions and answers into ids; the built-in byte tokenizer when unset.
            tokenizer_checkpoint: A tokenizer-pretraining checkpoint whose tokenizer weights initialise
                this one (and whose saved config builds it when it is unset).
            init_checkpoint: A VideoLLM, TextToVideo or UnifiedVideoLM checkpoint to start from: its
                tokenizer and LM, and its projector where it has one (the tokenizer is built as it saved
                it when tokenizer and tokenizer_checkpoint are unset). Same sizes needed.
            freeze_tokenizer: Keep the tokenizer (and its frame encoder) fixed.
            feature_cache_dir: Cache frame-encoder features here when freeze_tokenizer is true: each
                clip's features are computed in the first epoch and read back in later ones (keyed by
                video file, frame indices, frame size and encoder weights). Needs freeze_tokenizer.
            projector_hidden_dim: Hidden width of the MLP from video tokens to the LM.
            standardize_tokens: Z-score the video tokens per channel and token kind (running statistics
                of the training batches) before the projector, so the LM reads any tokenizer at one
                scale. Off: the projector reads the tokens as the tokenizer writes them.
            prompt_position: Where each question goes in its LM row: after the video tokens
                ("after_video"), before them ("before_video": the LM's video positions then see what
                is asked) or on both sides ("both").
            questions_per_video: Questions drawn per clip and training step (0 = all of them).
            max_answer_tokens: Longest answer generated at validation.
            benchmark: Name of the data in the metric keys, ``val/<benchmark>/<category>``, for every
                category the data's questions name.
            task_marker: Text that opens every question row, before the video: "<answer>" for an LM
                trained by UnifiedVideoLM (init_checkpoint), so it reads its rows as it was trained.
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
            lr_scales: Learning rates of parts as multiples of the optimizer's, ``{part: scale}`` by
                attribute path (``model.tokenizer: 0.3`` for a pretrained tokenizer under a new LM).
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, lr_scales)
        self.save_hyperparameters()
        (tokenizer,) = task_parts(self, tokenizer_checkpoint, init_checkpoint, tokenizer=tokenizer)
        if feature_cache_dir is not None and not freeze_tokenizer:
            raise ValueError(
                "feature_cache_dir caches the frame encoder's features, which a trainable tokenizer would "
                "make stale: set model.init_args.freeze_tokenizer: true, or unset feature_cache_dir"
            )
        self.model = VideoQuestionAnswering(
            tokenizer,
            required_language_model(language_model),
            text_tokenizer,
            projector_hidden_dim,
            max_answer_tokens,
            freeze_tokenizer,
            None if feature_cache_dir is None else FrameFeatureCache(feature_cache_dir),
            task_marker,
            standardize_tokens,
            prompt_position,
        )
        self.initialise_from(init_checkpoint)
        self.questions_per_video = questions_per_video
        self.benchmark = benchmark

    def stage_metrics(self, stage: str, categories: list[str]) -> dict[str, AnswerAccuracy]:
        return {"accuracy": AnswerAccuracy(categories)}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.check_frames_fit(self.tokenizer)
        require_questions(self)

    def clip_questions(self, questions: list[list[dict[str, Any]]], sample: bool) -> list[ClipQuestion]:
        """The questions of a batch (``questions_per_video`` drawn per clip when ``sample``)."""
        return draw_clip_questions(questions, self.questions_per_video, sample)

    def video_prefix(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's projected video tokens, read from the feature cache where it has them."""
        return self.model.video_prefix(batch["video"], batch.get("path"), batch.get("frame_indices"))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        rows = question_rows(self.clip_questions(batch["questions"], sample=True))
        if not rows:
            return None
        loss = self.model.loss(self.video_prefix(batch), rows)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(rows))
        return loss

    def evaluate(
        self, batch: dict[str, Any], batch_idx: int, stage: str, metrics: nn.ModuleDict
    ) -> dict[str, list[str]] | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        questions = self.clip_questions(batch["questions"], sample=False)
        if not questions:
            return None
        loss, rows = score_answers(self.model, self.video_prefix(batch), questions, metrics["accuracy"])
        self.log(f"{stage}/loss", loss, batch_size=len(questions), sync_dist=True)
        return rows

    def likelihood_choices(self, prefix: torch.Tensor, questions: list[ClipQuestion]) -> list[int | None]:
        """Each multiple-choice question's option of highest log-likelihood (:func:`option_choices`)."""
        return option_choices(self.model, prefix, questions)

    def log_epoch_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        overall = log_answer_accuracy(self, metrics["accuracy"], f"{stage}/{self.benchmark}")
        # The headline again under a name that no benchmark changes: what checkpoints are chosen by.
        self.log(f"{stage}/accuracy", overall)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        questions = [
            [question_prompt(qa["question"], qa.get("options")) for qa in clip] for clip in batch["questions"]
        ]
        return {
            "path": batch["path"],
            "questions": questions,
            "answers": self.model.answer(batch["video"], questions),
        }


def draw_clip_questions(
    questions: list[list[dict[str, Any]]], per_video: int, sample: bool
) -> list[ClipQuestion]:
    """A batch's questions as (clip, record) pairs: all of them, or ``per_video`` drawn per clip
    (0: all) when ``sample``."""
    chosen = []
    for clip, records in enumerate(questions):
        order = range(len(records))
        if sample and 0 < per_video < len(records):
            order = torch.randperm(len(records))[:per_video].tolist()
        chosen += [(clip, records[i]) for i in order]
    return chosen


def question_rows(questions: list[ClipQuestion]) -> list[QuestionRow]:
    """The LM rows of questions: a multiple-choice question lists its options after it."""
    return [
        QuestionRow(clip, question_prompt(qa["question"], qa.get("options")), qa["answer"])
        for clip, qa in questions
    ]


def option_choices(
    model: VideoQuestionAnswering, prefix: torch.Tensor, questions: list[ClipQuestion]
) -> list[int | None]:
    """Each multiple-choice question's option of highest log-likelihood, None for open questions.

    An option is scored with the end token after it, as answers are trained: the likelihood that
    the whole answer is that option, not a longer text beginning with it.
    """
    counts = [len(qa.get("options") or []) for _, qa in questions]
    option_rows = [
        row._replace(answer=option)
        for row, (_, qa) in zip(question_rows(questions), questions, strict=True)
        for option in qa.get("options") or []
    ]
    if not option_rows:
        return [None] * len(questions)
    log_likelihoods = model.answer_log_likelihoods(prefix, option_rows)
    return likelihood_choices(log_likelihoods.tolist(), counts)


def score_answers(
    model: VideoQuestionAnswering,
    prefix: torch.Tensor,
    questions: list[ClipQuestion],
    accuracy: AnswerAccuracy,
) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """The answer loss of ``questions`` about the clips of ``prefix`` (projected video tokens), with
    their greedy answers scored into ``accuracy``; returns the loss and the prediction table's rows."""
    rows = question_rows(questions)
    loss = model.loss(prefix, rows)
    predictions = model.generate(prefix, rows)
    records = [qa for _, qa in questions]
    accuracy.update(records, predictions, option_choices(model, prefix, questions))
    return loss, prediction_rows(records, predictions)


def log_answer_accuracy(module: VTokModule, accuracy: AnswerAccuracy, prefix: str) -> torch.Tensor:
    """Logs an epoch's accuracy per category as ``<prefix>/<category>``, resets it, returns the overall."""
    figures = accuracy.compute()
    module.log_dict({f"{prefix}/{name}": value for name, value in figures.items()})
    accuracy.reset()
    return figures["overall"]


def require_questions(module: VTokModule) -> None:
    """Refuse data of which a split the trainer uses has no question at all, naming the split and file."""
    datamodule = module._datamodule()
    for role, dataset in getattr(datamodule, "datasets", {}).items():
        if not any(record.qa for record in dataset.records):
            split = datamodule.splits.get(role, role)
            raise ValueError(
                f"{type(module).__name__} learns from, is scored on and answers questions, but no clip of "
                f"split {split!r} (for {role}) in {datamodule.manifest_path} has any: add 'qa' to its "
                "manifest lines."
            )

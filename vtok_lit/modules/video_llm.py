"""Video-LLM understanding: video tokens through a projector into an LM that answers questions."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from vtok_lit.core.feature_cache import FrameFeatureCache, encode_frames_cached
from vtok_lit.core.generation import greedy_generate
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.multimodal_sequence import LMSequences, build_lm_sequences, next_token_loss
from vtok_lit.core.text_tokenizers import TextTokenizer
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.tokens import TokenKind
from vtok_lit.metrics import AnswerAccuracy
from vtok_lit.metrics.answer_scoring import (
    answer_log_likelihood,
    likelihood_choices,
    prediction_rows,
    question_prompt,
)
from vtok_lit.modules.base import VTokModule, checked_text_tokenizer
from vtok_lit.modules.pretrained_parts import pretrained_parts


class VideoLLM(VTokModule):
    """Answers questions about videos: ``[video tokens][question][answer]``, next-token loss on the answer.

    Video tokens pass through an MLP projector into the LM's width, plus a learned embedding of their
    kind (spatial / residual / frame). Validation generates answers greedily and reports exact-match
    accuracy after normalisation (:mod:`vtok_lit.metrics.answer_scoring`) per question category of the
    data as ``val/<benchmark>/<category>`` and ``val/<benchmark>/overall``, the raw match as
    ``val/<benchmark>/overall_raw``, and for multiple-choice questions the generated and the
    likelihood-chosen option as ``val/<benchmark>/multiple_choice_generated`` and ``..._likelihood``.
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer | None = None,
        language_model: LanguageModel | None = None,
        text_tokenizer: TextTokenizer | None = None,
        tokenizer_checkpoint: str | None = None,
        freeze_tokenizer: bool = False,
        feature_cache_dir: str | None = None,
        projector_hidden_dim: int = 512,
        questions_per_video: int = 0,
        max_answer_tokens: int = 16,
        benchmark: str = "motionshapes",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
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
            freeze_tokenizer: Keep the tokenizer (and its frame encoder) fixed.
            feature_cache_dir: Cache frame-encoder features here when freeze_tokenizer is true: each
                clip's features are computed in the first epoch and read back in later ones (keyed by
                video file, frame indices, frame size and encoder weights). Needs freeze_tokenizer.
            projector_hidden_dim: Hidden width of the MLP from video tokens to the LM.
            questions_per_video: Questions drawn per clip and training step (0 = all of them).
            max_answer_tokens: Longest answer generated at validation.
            benchmark: Name of the data in the metric keys, ``val/<benchmark>/<category>``, for every
                category the data's questions name.
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval)
        self.save_hyperparameters()
        (tokenizer,) = pretrained_parts(self, tokenizer_checkpoint, tokenizer=tokenizer)
        self.tokenizer = tokenizer
        self.language_model = language_model
        self.text_tokenizer = checked_text_tokenizer(text_tokenizer, language_model)
        self.freeze_tokenizer = freeze_tokenizer
        if freeze_tokenizer:
            tokenizer.requires_grad_(False)
        if feature_cache_dir is not None and not freeze_tokenizer:
            raise ValueError(
                "feature_cache_dir caches the frame encoder's features, which a trainable tokenizer would "
                "make stale: set model.init_args.freeze_tokenizer: true, or unset feature_cache_dir"
            )
        self.feature_cache = None if feature_cache_dir is None else FrameFeatureCache(feature_cache_dir)
        hidden = language_model.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(tokenizer.token_dim, projector_hidden_dim),
            nn.GELU(),
            nn.Linear(projector_hidden_dim, hidden),
        )
        self.kind_embedding = nn.Embedding(len(TokenKind), hidden)
        self.questions_per_video = questions_per_video
        self.max_answer_tokens = max_answer_tokens
        self.benchmark = benchmark
        self.val_accuracy = AnswerAccuracy()
        self.test_accuracy = AnswerAccuracy()

    def checkpoint_identity(self) -> dict[str, str]:
        return {
            **super().checkpoint_identity(),
            "tokenizer": type(self.tokenizer).__name__,
            "frame_encoder": type(self.tokenizer.frame_encoder).__name__,
            "language_model": type(self.language_model).__name__,
        }

    def setup(self, stage: str) -> None:
        self.check_frames_fit(self.tokenizer)
        datamodule = self._datamodule()
        for role, dataset in getattr(datamodule, "datasets", {}).items():
            if not any(record.qa for record in dataset.records):
                split = datamodule.splits.get(role, role)
                raise ValueError(
                    f"VideoLLM learns from, is scored on and answers questions, but no clip of split "
                    f"{split!r} "
                    f"(for {role}) in {datamodule.manifest_path} has any: add 'qa' to its manifest lines."
                )
        categories = self.data_question_categories()
        self.val_accuracy = AnswerAccuracy(categories).to(self.device)
        self.test_accuracy = AnswerAccuracy(categories).to(self.device)

    def video_prefix(
        self, video: torch.Tensor, paths: list[str] | None = None, frame_indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Video ``(B, T, 3, H, W)`` -> projected video tokens ``(B, L, hidden)``.

        With a feature cache, the clips' files ``paths`` and ``(B, T)`` ``frame_indices`` (a batch's
        ``"path"`` and ``"frame_indices"``) let the frame features be read from it; without both the
        frame encoder runs.
        """
        frozen = torch.no_grad() if self.freeze_tokenizer else contextlib.nullcontext()
        with frozen:
            if self.feature_cache is None or paths is None or frame_indices is None:
                features = self.tokenizer.encode_frames(video)
            else:
                cache = self.feature_cache
                features = encode_frames_cached(self.tokenizer, video, paths, frame_indices, cache)
            tokens = self.tokenizer.tokenize_features(features)
        return self.projector(tokens.tokens) + self.kind_embedding(tokens.kinds)[None]

    def _question_rows(self, questions: list[list[dict[str, str]]], sample: bool) -> list[tuple[int, dict]]:
        rows = []
        for video_index, clip_questions in enumerate(questions):
            order = range(len(clip_questions))
            if sample and 0 < self.questions_per_video < len(clip_questions):
                order = torch.randperm(len(clip_questions))[: self.questions_per_video].tolist()
            rows += [(video_index, clip_questions[i]) for i in order]
        return rows

    def _sequences(
        self, prefix: torch.Tensor, rows: list[tuple[int, dict]], with_answers: bool
    ) -> LMSequences:
        text = self.text_tokenizer
        prompts = [text.encode(question_prompt(qa["question"], qa.get("options"))) for _, qa in rows]
        answers = [text.encode(qa["answer"]) + [text.eos_id] for _, qa in rows] if with_answers else None
        return build_lm_sequences(
            prefix[[video_index for video_index, _ in rows]],
            prompts,
            answers,
            self.language_model.embed_tokens,
            # Generation appends up to max_answer_tokens positions, so leave room for them.
            self.language_model.max_seq_len - (0 if with_answers else self.max_answer_tokens),
        )

    def _answer_loss(self, prefix: torch.Tensor, rows: list[tuple[int, dict]]) -> torch.Tensor:
        sequences = self._sequences(prefix, rows, with_answers=True)
        output = self.language_model(sequences.inputs_embeds, attention_mask=sequences.attention_mask)
        return next_token_loss(output.logits, sequences.labels)

    def answer(self, video: torch.Tensor, questions: list[list[str]]) -> list[list[str]]:
        """Greedy answers to each clip's questions."""
        rows = [(v, {"question": q}) for v, clip in enumerate(questions) for q in clip]
        predictions = iter(self._generate(self.video_prefix(video), rows))
        return [[next(predictions) for _ in clip] for clip in questions]

    def _generate(self, prefix: torch.Tensor, rows: list[tuple[int, dict]]) -> list[str]:
        sequences = self._sequences(prefix, rows, with_answers=False)
        generated = greedy_generate(
            self.language_model,
            sequences.inputs_embeds,
            sequences.attention_mask,
            eos_id=self.text_tokenizer.eos_id,
            max_new_tokens=self.max_answer_tokens,
        )
        return [self.text_tokenizer.decode(ids) for ids in generated]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        rows = self._question_rows(batch["questions"], sample=True)
        if not rows:
            return None
        prefix = self.video_prefix(batch["video"], batch.get("path"), batch.get("frame_indices"))
        loss = self._answer_loss(prefix, rows)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(rows))
        return loss

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, list[str]] | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        rows = self._question_rows(batch["questions"], sample=False)
        if not rows:
            return None
        prefix = self.video_prefix(batch["video"], batch.get("path"), batch.get("frame_indices"))
        self.log(f"{stage}/loss", self._answer_loss(prefix, rows), batch_size=len(rows), sync_dist=True)
        predictions = self._generate(prefix, rows)
        questions = [qa for _, qa in rows]
        choices = self._likelihood_choices(prefix, rows)
        getattr(self, f"{stage}_accuracy").update(questions, predictions, choices)
        return prediction_rows(questions, predictions)

    def _likelihood_choices(self, prefix: torch.Tensor, rows: list[tuple[int, dict]]) -> list[int | None]:
        """Each multiple-choice row's option of highest log-likelihood, None for open questions.

        An option is scored with the end token after it, as answers are trained: the likelihood that
        the whole answer is that option, not a longer text beginning with it.
        """
        counts = [len(qa.get("options") or []) for _, qa in rows]
        option_rows = [(v, {**qa, "answer": option}) for v, qa in rows for option in qa.get("options") or []]
        if not option_rows:
            return [None] * len(rows)
        sequences = self._sequences(prefix, option_rows, with_answers=True)
        logits = self.language_model(sequences.inputs_embeds, attention_mask=sequences.attention_mask).logits
        return likelihood_choices(answer_log_likelihood(logits, sequences.labels).tolist(), counts)

    def _log_accuracy(self, stage: str) -> None:
        accuracy = getattr(self, f"{stage}_accuracy")
        self.log_dict(
            {f"{stage}/{self.benchmark}/{name}": value for name, value in accuracy.compute().items()}
        )
        accuracy.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[str]] | None:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, list[str]] | None:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        questions = [
            [question_prompt(qa["question"], qa.get("options")) for qa in clip] for clip in batch["questions"]
        ]
        return {
            "path": batch["path"],
            "questions": questions,
            "answers": self.answer(batch["video"], questions),
        }

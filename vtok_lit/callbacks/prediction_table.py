"""A TensorBoard text table of sample questions, reference answers and the model's predictions."""

from __future__ import annotations

from typing import Any

from lightning import Callback, LightningModule, Trainer

from vtok_lit.callbacks.video_logging import logs_this_validation_batch, tensorboard_writers
from vtok_lit.metrics.answer_scoring import is_correct, question_prompt


def markdown_table(outputs: dict[str, list], num_rows: int) -> str:
    """Render the first rows of ``{"categories", "questions", "answers", "predictions"}`` (and, for
    multiple choice, ``"options"``) as markdown, scored as the accuracy metrics score them."""
    lines = ["| category | question | answer | prediction | ok |", "| --- | --- | --- | --- | --- |"]
    options = outputs.get("options") or [None] * len(outputs["questions"])
    rows = zip(
        outputs["categories"],
        outputs["questions"],
        outputs["answers"],
        outputs["predictions"],
        options,
        strict=True,
    )
    for index, (category, question, answer, prediction, choices) in enumerate(rows):
        if index == num_rows:
            break
        ok = "yes" if is_correct(prediction, answer, choices) else "no"
        cells = [category, question_prompt(question, choices), answer, prediction, ok]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


class PredictionTableLogger(Callback):
    """Writes the first validation batch's questions, answers and predictions as a table, each validation.

    Works with any module whose ``validation_step`` returns ``questions``, ``answers``, ``predictions``
    and ``categories`` lists (and optionally ``options``, each None or a multiple-choice question's options).
    """

    def __init__(self, num_rows: int = 16) -> None:
        """
        Args:
            num_rows: Rows written per validation.
        """
        self.num_rows = num_rows

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not outputs or not logs_this_validation_batch(trainer, batch_idx):
            return
        table = markdown_table(outputs, self.num_rows)
        for writer in tensorboard_writers(trainer):
            writer.add_text("val/predictions", table, global_step=trainer.global_step)

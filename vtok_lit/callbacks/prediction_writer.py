"""``vtok-lit predict`` writes its predictions to files: a JSONL table and mp4 clips."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from vtok_lit.data.video_io import write_video


def video_frames(clip: torch.Tensor) -> torch.Tensor:
    """A clip ``(T, 3, H, W)`` in [0, 1] as the ``(T, H, W, 3)`` uint8 frames :func:`write_video` takes."""
    return clip.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted batch under ``output_dir`` (default ``<log_dir>/predictions``).

    ``predictions.jsonl`` holds one line per clip: the video-LLM's questions and answers, or the file
    names of the clips written beside it as mp4 (``<video>_reconstructed.mp4`` from tokenizer
    pretraining, ``generated_<n>.mp4`` with its caption from text-to-video). The folder is printed at
    the end. VTokCLI adds this callback to every run; it acts in ``predict`` only.
    """

    def __init__(self, output_dir: str | None = None, fps: float = 8.0) -> None:
        """
        Args:
            output_dir: Folder of the predictions; None writes ``predictions/`` in the run's log folder.
            fps: Frame rate of the mp4 clips written.
        """
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.fps = fps
        self.directory: Path | None = None
        self.num_rows = 0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.directory = Path(self.output_dir) if self.output_dir else run_dir / "predictions"
        self.directory.mkdir(parents=True, exist_ok=True)
        # One table per process, so DDP ranks never write the same file.
        name = (
            "predictions.jsonl" if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.jsonl"
        )
        self.table = self.directory / name
        self.table.write_text("", encoding="utf-8")
        self.num_rows = 0

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows = self._rows(prediction, trainer.global_rank)
        with open(self.table, "a", encoding="utf-8") as table:
            for row in rows:
                table.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.num_rows += len(rows)

    def _rows(self, prediction: dict[str, Any], rank: int) -> list[dict[str, Any]]:
        if "answers" in prediction:
            return [
                {"video": path, "questions": questions, "answers": answers}
                for path, questions, answers in zip(
                    prediction["path"], prediction["questions"], prediction["answers"], strict=True
                )
            ]
        if "reconstruction" in prediction:
            names = [f"{Path(path).stem}_reconstructed.mp4" for path in prediction["path"]]
            self._write_clips(names, prediction["reconstruction"])
            return [
                {"video": path, "reconstruction": name}
                for path, name in zip(prediction["path"], names, strict=True)
            ]
        if "generated" in prediction:
            names = [
                f"generated_{rank}_{self.num_rows + i:05d}.mp4" for i in range(len(prediction["captions"]))
            ]
            self._write_clips(names, prediction["generated"])
            return [
                {"caption": text, "generated": name}
                for text, name in zip(prediction["captions"], names, strict=True)
            ]
        raise ValueError(
            f"PredictionWriter cannot write a prediction with keys {sorted(prediction)}: expected 'answers', "
            "'reconstruction' or 'generated'."
        )

    def _write_clips(self, names: list[str], clips: torch.Tensor) -> None:
        for name, clip in zip(names, clips, strict=True):
            write_video(self.directory / name, video_frames(clip), fps=self.fps)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        print(f"Predictions: {self.num_rows} rows in {self.table}, clips beside it.", file=sys.stderr)

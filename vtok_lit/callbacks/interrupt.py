"""Ctrl+C and a scheduler's SIGTERM end a fit with a checkpoint and a non-zero exit status."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

# Shell convention for a process ended by a signal: 128 + the signal's number.
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class RunInterrupted(SystemExit):
    """A fit stopped by SIGINT or SIGTERM after saving a checkpoint; exits with 128 + the signal."""


class InterruptCheckpoint(Callback):
    """Saves a checkpoint when a fit is interrupted, then exits with status 130 (SIGINT) or 143 (SIGTERM).

    The first Ctrl+C (SIGINT) or SIGTERM lets the running optimizer step finish; the checkpoint is then
    written at that step boundary, the same state a periodic checkpoint holds, so a resumed run
    (``--ckpt_path last``) ends exactly where one that never stopped would. A second Ctrl+C stops at
    once, still saving what there is. The checkpoint goes next to the run's other checkpoints as
    ``interrupted-step=N.ckpt``. VTokCLI adds this callback to every run.
    """

    def __init__(self, filename: str = "interrupted-step={step}") -> None:
        """
        Args:
            filename: Name of the checkpoint written on interrupt, without ``.ckpt``; ``{step}`` is
                replaced by the global step.
        """
        super().__init__()
        self.filename = filename
        self._signal: int | None = None
        self._previous_handler: Any = None
        self.saved_path: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal, self.saved_path = None, None
        self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:
            raise KeyboardInterrupt
        self._signal = signum
        print(
            "\nCtrl+C: stopping after this step and saving a checkpoint (again to stop at once).",
            file=sys.stderr,
        )

    def _restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # Lightning records SIGTERM in received_sigterm; every process stops if any was signalled.
        local = self._signal is not None or trainer.received_sigterm
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            code = EXIT_SIGINT if self._signal is not None else EXIT_SIGTERM
            self._save(trainer)
            raise RunInterrupted(code)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A second Ctrl+C, or SIGTERM during validation (Lightning raises SIGTERMException there).
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and self.saved_path is None:
            self._save(trainer)
        self._restore_handler()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()

    def _save(self, trainer: L.Trainer) -> None:
        directory = checkpoint_directory(trainer)
        path = directory / (self.filename.format(step=trainer.global_step) + ".ckpt")
        trainer.save_checkpoint(path)
        self.saved_path = path
        if trainer.is_global_zero:
            print(
                f"Interrupted at step {trainer.global_step}: saved {path}\n"
                "Resume this run with the same command plus --ckpt_path last",
                file=sys.stderr,
            )


def checkpoint_directory(trainer: L.Trainer) -> Path:
    """Where the run's checkpoints go: its ModelCheckpoint's folder, else ``<log_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"

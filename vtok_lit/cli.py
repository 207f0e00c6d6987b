"""The ``vtok-lit`` command: LightningCLI over every vtok-lit module and the one DataModule."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from vtok_lit import __version__
from vtok_lit.callbacks.interrupt import EXIT_SIGTERM, InterruptCheckpoint, RunInterrupted
from vtok_lit.callbacks.prediction_writer import PredictionWriter
from vtok_lit.data.datamodule import VideoTextDataModule
from vtok_lit.modules.base import VTokModule
from vtok_lit.modules.checkpoints import (
    CheckpointMismatchError,
    find_last_checkpoint,
    identity_differences,
    read_checkpoint,
)

# Training choices a checkpoint's own hyperparameters may replace without changing what it holds.
_NOT_COMPONENTS = ("optimizer", "lr_scheduler")
# --ckpt_path values that Lightning itself resolves within one process.
_LIGHTNING_CKPT_NAMES = ("best", "hpc", "registry")


def component_classes(model: Any, key: str = "model") -> dict[str, str]:
    """``{"model": ..., "model.tokenizer": ..., "model.tokenizer.frame_encoder": ...}``: the class of
    every component of a model config (a jsonargparse Namespace or dict with ``class_path``)."""
    node = model.as_dict() if hasattr(model, "as_dict") else model
    if not isinstance(node, dict) or "class_path" not in node:
        return {}
    classes = {key: node["class_path"]}
    for name, value in (node.get("init_args") or {}).items():
        if name not in _NOT_COMPONENTS:
            classes |= component_classes(value, f"{key}.{name}")
    return classes


class VTokCLI(LightningCLI):
    """LightningCLI that resolves ``--ckpt_path last`` to the run's latest checkpoint, refuses a checkpoint
    whose components differ from the config's, saves a checkpoint when a fit is interrupted and writes
    what ``predict`` returns to files."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        section = self.config.get(subcommand) if subcommand else None
        if section is None or not section.get("ckpt_path"):
            super()._parse_ckpt_path()
            return
        if section.ckpt_path == "last":
            section.ckpt_path, version = find_last_checkpoint(section.trainer)
            # Continue in the run's own folder: its TensorBoard curves and checkpoints go on there.
            if version is not None:
                section.trainer.logger.init_args.version = version
            rank_zero_info(f"--ckpt_path last: resuming from {section.ckpt_path}")
        if section.ckpt_path.split(":")[0] in _LIGHTNING_CKPT_NAMES:
            super()._parse_ckpt_path()
            return
        read_checkpoint(section.ckpt_path)
        # LightningCLI replaces the model section with the checkpoint's own hyperparameters; compare
        # the two so a checkpoint of other components is not run under this config's name.
        configured = component_classes(section.get("model"))
        super()._parse_ckpt_path()
        saved = component_classes(self.config[subcommand].get("model"))
        differences = identity_differences(saved, configured, "config")
        if differences:
            raise CheckpointMismatchError(
                f"--ckpt_path {section.ckpt_path} holds other components than the config asks for ("
                + "; ".join(differences)
                + "). Use the config the checkpoint was trained with."
            )


def main(args: Sequence[str] | dict[str, Any] | None = None, run: bool = True) -> VTokCLI:
    """Run ``vtok-lit fit|validate|test|predict --config experiments/....yaml``; returns the finished CLI.

    With ``run=False`` the arguments name no subcommand and the CLI only builds the model, the
    DataModule and the Trainer of the config (what a benchmark script needs to rebuild a run).

    Raises:
        RunInterrupted: a fit was stopped by SIGINT or SIGTERM (after saving a checkpoint); its exit
            status is 130 or 143.
    """
    try:
        return VTokCLI(
            VTokModule,
            VideoTextDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_kwargs={
                "version": f"vtok-lit {__version__}",
                "epilog": "Import a data set into a manifest: vtok-lit import --help",
            },
            args=args,
            run=run,
        )
    except SIGTERMException as stop:
        # Lightning's SIGTERMException exits with status 0, which a scheduler takes for success.
        raise RunInterrupted(EXIT_SIGTERM) from stop


def console_main() -> None:
    """Entry point of the ``vtok-lit`` script and ``python -m vtok_lit`` (exit status 0 on success).

    ``vtok-lit import FORMAT ...`` imports a data set into a manifest
    (:mod:`vtok_lit.data.importers`); it is no Trainer method, so it is dispatched before
    LightningCLI parses the command line.
    """
    if sys.argv[1:2] == ["import"]:
        from vtok_lit.data.importers import main as import_main

        sys.exit(import_main(sys.argv[2:], prog="vtok-lit import"))
    main()

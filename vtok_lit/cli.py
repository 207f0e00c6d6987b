"""The ``vtok-lit`` command: LightningCLI over every vtok-lit module and the one DataModule."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningCLI

from vtok_lit import __version__
from vtok_lit.data.datamodule import VideoTextDataModule
from vtok_lit.modules.base import CheckpointMismatchError, VTokModule


class VTokCLI(LightningCLI):
    """LightningCLI that refuses a ``--ckpt_path`` written by another module than the config names."""

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI later overwrites the model section with the checkpoint's own hyperparameters;
        # remember what the config asked for so a checkpoint of another module is caught.
        self.configured_model_class = self._model_class_path()

    def _model_class_path(self) -> str | None:
        subcommand = self.config.get("subcommand")
        section = self.config.get(subcommand) if subcommand else self.config
        model = section.get("model") if section is not None else None
        return getattr(model, "class_path", None) if model is not None else None

    def before_instantiate_classes(self) -> None:
        checkpoint_model = self._model_class_path()
        if self.configured_model_class and checkpoint_model != self.configured_model_class:
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
            raise CheckpointMismatchError(
                f"--ckpt_path {ckpt_path} was written by {checkpoint_model}, "
                f"but the config's model is {self.configured_model_class}."
            )


def main(args: Sequence[str] | dict[str, Any] | None = None, run: bool = True) -> VTokCLI:
    """Run ``vtok-lit fit|validate|test|predict --config experiments/....yaml``; returns the finished CLI.

    With ``run=False`` the arguments name no subcommand and the CLI only builds the model, the
    DataModule and the Trainer of the config (what a benchmark script needs to rebuild a run).
    """
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

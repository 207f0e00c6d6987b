"""Parts of a module (a tokenizer, a decoder) built and initialised from a tokenizer-pretraining checkpoint.

A task config names the pretraining run's checkpoint and leaves out the parts it holds: their classes
and sizes come from the checkpoint's saved hyperparameters (what LightningCLI saved for its
``model.init_args``), their weights from its ``state_dict``, and the module stores their configs in its
own hyperparameters, so its checkpoints rebuild the same parts without the config.
"""

from __future__ import annotations

from typing import Any, TypeVar

from jsonargparse import ArgumentParser
from lightning import LightningModule
from torch import nn

from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.video_decoders import VideoDecoder
from vtok_lit.modules.checkpoints import CheckpointMismatchError, load_part_weights, read_checkpoint
from vtok_lit.modules.task_weights import module_task_prefixes

# The parts a pretraining checkpoint holds, by their attribute and init-argument name.
PART_TYPES: dict[str, type[nn.Module]] = {"tokenizer": VideoTokenizer, "decoder": VideoDecoder}
Component = TypeVar("Component")


def build_component(config: dict[str, Any], base_class: type[Component]) -> Component:
    """An object built from its ``{"class_path": ..., "init_args": {...}}`` config, as LightningCLI
    builds it (nested components included), refused unless it is a ``base_class``."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--component", type=base_class)
    return parser.instantiate_classes(parser.parse_object({"component": config})).component


def pretrained_parts(
    module: LightningModule, checkpoint_path: str | None, **parts: nn.Module | None
) -> list[nn.Module]:
    """The parts ``module`` was given (``tokenizer=..., decoder=...``), those left as None built from
    the checkpoint's hyperparameters, all with the checkpoint's weights loaded.

    The configs of the built parts replace the None in ``module.hparams`` and its
    ``tokenizer_checkpoint`` is cleared there, so the module's own checkpoints are self-contained: they
    rebuild the parts without the config and without the pretraining file (the run's ``config.yaml``
    keeps where they came from). Without a checkpoint the given parts are returned as they are.

    Args:
        module: The LightningModule whose ``__init__`` calls this, after ``save_hyperparameters()``.
        checkpoint_path: A tokenizer-pretraining ``.ckpt`` (``model.init_args.tokenizer_checkpoint``).
        **parts: Each part by its init-argument name (a key of :data:`PART_TYPES`), None to build it.

    Returns:
        The parts, in the order given.

    Raises:
        ValueError: a part is None and there is no checkpoint to build it from.
        CheckpointMismatchError: the checkpoint saved no config for a part left out, holds a part of
            another class, or weights of other shapes than a part the config gives; the message names
            the checkpoint and the keys.
    """
    if checkpoint_path is None:
        for name, part in parts.items():
            if part is None:
                raise ValueError(
                    f"model.init_args.{name} is not set and there is no model.init_args.tokenizer_checkpoint "
                    f"to build it from: set one of them."
                )
        return list(parts.values())
    try:
        checkpoint = read_checkpoint(checkpoint_path)
    except FileNotFoundError as missing:
        raise FileNotFoundError(
            f"model.init_args.tokenizer_checkpoint: no file at {checkpoint_path}. This module's tokenizer "
            f"comes from a tokenizer-pretraining run (the first stage): run it first (vtok-lit fit -c "
            f"experiments/quickstart.yaml, plus experiments/tokenizer/<name>.yaml for another tokenizer) or "
            f"point tokenizer_checkpoint at one."
        ) from missing
    saved = checkpoint.get("hyper_parameters") or {}
    built, result = {}, []
    for name, part in parts.items():
        if part is None:
            config = saved.get(name)
            if not isinstance(config, dict) or "class_path" not in config:
                raise CheckpointMismatchError(
                    f"{checkpoint_path} has no saved hyper_parameters.{name} (a class_path and init_args) "
                    f"to build model.init_args.{name} from: set model.init_args.{name} in the config, or "
                    "give the checkpoint of a tokenizer-pretraining run of vtok-lit fit."
                )
            part = build_component(config, PART_TYPES[name])
            # Under LightningCLI the hyperparameters hold configs; built directly, they hold the parts.
            built[name] = config if "_instantiator" in module.hparams else part
        try:
            load_part_weights(part, checkpoint_path, stored_prefix(checkpoint, name), checkpoint)
        except CheckpointMismatchError as error:
            differences = config_differences(
                module.hparams.get(name), saved.get(name), f"model.init_args.{name}"
            )
            if not differences:
                raise
            raise CheckpointMismatchError(
                f"{error}\nThe config and hyper_parameters.{name} of {checkpoint_path} differ in: "
                + "; ".join(differences)
                + f". Leave model.init_args.{name} out of the config to build it as the checkpoint saved it."
            ) from error
        result.append(part)
    module.save_hyperparameters({**module.hparams, **built, "tokenizer_checkpoint": None})
    return result


def task_parts(
    module: LightningModule,
    tokenizer_checkpoint: str | None,
    init_checkpoint: str | None,
    **parts: nn.Module | None,
) -> list[nn.Module]:
    """The parts of a task module: as :func:`pretrained_parts` gives them from a ``tokenizer_checkpoint``;
    without one, those left as None built from ``init_checkpoint`` (another task module's checkpoint,
    whose weights the module loads next) and the others as given."""
    if tokenizer_checkpoint is not None or init_checkpoint is None:
        return pretrained_parts(module, tokenizer_checkpoint, **parts)
    unset = [name for name, part in parts.items() if part is None]
    built = dict(zip(unset, pretrained_parts(module, init_checkpoint, **dict.fromkeys(unset)), strict=True))
    return [built.get(name, part) for name, part in parts.items()]


def config_differences(config: Any, saved: Any, key: str) -> list[str]:
    """``["model.init_args.tokenizer.init_args.token_dim: config 64, checkpoint 128", ...]``: where two
    ``class_path``/``init_args`` configs differ (none when either is no config)."""
    if not isinstance(config, dict) or not isinstance(saved, dict):
        return []
    differences = []
    for name in sorted(set(config) | set(saved)):
        mine, theirs = config.get(name), saved.get(name)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            differences += config_differences(mine, theirs, f"{key}.{name}")
        elif mine != theirs:
            differences.append(f"{key}.{name}: config {mine!r}, checkpoint {theirs!r}")
    return differences


def stored_prefix(checkpoint: dict[str, Any], name: str) -> str:
    """Where a checkpoint keeps the weights of the part ``name``: at the top in a tokenizer-pretraining
    checkpoint, inside a task model (its module's ``TASK_PREFIXES``) in a task module's one."""
    state = checkpoint.get("state_dict", {})
    task_prefixes = module_task_prefixes(checkpoint.get("vtok_lit", {}).get("module", "")) or {}
    for prefix in (name, *(task_prefix + name for task_prefix in task_prefixes.values())):
        if any(key.startswith(prefix + ".") for key in state):
            return prefix
    return name

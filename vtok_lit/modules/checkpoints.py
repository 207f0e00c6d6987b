"""Read checkpoint files safely, say what a checkpoint must match, and initialise one part of a module (a
tokenizer, a decoder) from one."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by another module or another tokenizer than the one loading it."""


def component_class_names(module: nn.Module) -> dict[str, str]:
    """``{"tokenizer": "VTokTokenizer", "frame_encoder": "ConvFrameEncoder", ...}``: the class of every
    ``nn.Module`` argument of ``module``'s ``__init__`` (held as the attribute of that name), and of
    theirs in turn."""
    classes = {}
    for name in inspect.signature(type(module).__init__).parameters:
        part = getattr(module, name, None)
        if isinstance(part, nn.Module):
            classes[name] = type(part).__name__
            classes |= component_class_names(part)
    return classes


def identity_differences(saved: dict[str, Any], expected: dict[str, str], here: str) -> list[str]:
    """``"tokenizer: checkpoint VTokTokenizer, <here> KeyFrameTokenizer"`` for every entry of
    ``expected`` that the checkpoint's ``saved`` identity holds otherwise."""
    return [
        f"{key}: checkpoint {saved.get(key)}, {here} {value}"
        for key, value in expected.items()
        if saved.get(key) != value
    ]


class NotACheckpointError(ValueError):
    """A file given as a checkpoint is empty, is no PyTorch checkpoint, or holds no model weights."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU with ``weights_only=True`` (no code runs from the file).

    Raises:
        FileNotFoundError: there is no such file.
        NotACheckpointError: the file is empty, cannot be read as a checkpoint, or has no ``state_dict``;
            the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise NotACheckpointError(f"{path} is empty: it is not a checkpoint.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler fails on garbage in many ways (IndexError, EOFError, ...)
        # torch's own message proposes weights_only=False, which would run code from a file of
        # unknown origin: only the kind of failure is kept.
        raise NotACheckpointError(
            f"{path} is not a checkpoint that can be loaded safely ({type(error).__name__}); "
            "give the .ckpt file a vtok-lit run wrote."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise NotACheckpointError(f"{path} is not a Lightning checkpoint: it holds no 'state_dict'.")
    return checkpoint


def find_last_checkpoint(trainer: Any) -> tuple[str, str | None]:
    """Resolve ``--ckpt_path last``: the newest ``.ckpt`` of the run a trainer config logs to.

    A run logged by a TensorBoard or CSV logger keeps its checkpoints in
    ``<save_dir>/<name>/version_N/checkpoints/``; every version is searched, since a resumed run is
    given a new one unless told otherwise.

    Args:
        trainer: the ``trainer`` section of a parsed config (a jsonargparse Namespace).

    Returns:
        The checkpoint's path, and its version folder's name (None without a logger).

    Raises:
        FileNotFoundError: the run has no checkpoint; the message names where it looked.
    """
    logger = trainer.get("logger")
    root_dir = Path(trainer.get("default_root_dir") or ".")
    init_args = getattr(logger, "init_args", None)
    if logger is False:
        pattern, root = "*.ckpt", root_dir / "checkpoints"
    elif init_args is not None and init_args.get("save_dir") is not None:
        root = Path(init_args.save_dir) / (init_args.get("name") or "")
        version = init_args.get("version")
        folder = (
            "version_*"
            if version is None
            else (version if isinstance(version, str) else f"version_{version}")
        )
        pattern = f"{folder}/checkpoints/*.ckpt"
    else:
        pattern, root = "version_*/checkpoints/*.ckpt", root_dir / "lightning_logs"
    found = [path for path in root.glob(pattern) if path.is_file()]
    places = [str(root / pattern)]
    # A ModelCheckpoint given its own dirpath keeps the run's checkpoints there instead.
    for callback in trainer.get("callbacks") or []:
        dirpath = getattr(getattr(callback, "init_args", None), "dirpath", None)
        if dirpath is not None:
            found += [path for path in Path(dirpath).glob("*.ckpt") if path.is_file()]
            places.append(str(Path(dirpath) / "*.ckpt"))
    if not found:
        raise FileNotFoundError(
            f"--ckpt_path last: this run has no checkpoint yet ({', '.join(places)} match nothing). "
            "Start it without --ckpt_path, or give the path of a .ckpt file."
        )
    newest = max(found, key=lambda path: path.stat().st_mtime_ns)
    in_version_folder = newest.parent.name == "checkpoints" and newest.parent.parent.parent == root
    return str(newest), newest.parent.parent.name if in_version_folder and init_args is not None else None


def load_part_weights(
    part: nn.Module, checkpoint_path: str, prefix: str, checkpoint: dict[str, Any] | None = None
) -> None:
    """Load the weights stored under ``prefix.`` in a vtok-lit checkpoint into ``part``.

    Args:
        part: the module to fill, e.g. a VideoTokenizer.
        checkpoint_path: a ``.ckpt`` written by a vtok-lit run (tokenizer pretraining, say).
        prefix: the attribute name of the part in the module that wrote the checkpoint (``tokenizer``).
        checkpoint: the file's contents when already read (:func:`read_checkpoint`).

    Raises:
        FileNotFoundError: the file does not exist.
        NotACheckpointError: the file is not a checkpoint.
        CheckpointMismatchError: the checkpoint holds no such part, a part of another class, or weights
            of other shapes.
    """
    checkpoint = read_checkpoint(checkpoint_path) if checkpoint is None else checkpoint
    identity = checkpoint.get("vtok_lit", {})
    saved_class = identity.get(prefix)
    if saved_class is not None and saved_class != type(part).__name__:
        raise CheckpointMismatchError(
            f"{checkpoint_path} holds a {prefix} of class {saved_class}, but this run's {prefix} is "
            f"{type(part).__name__}."
        )
    state = {
        key[len(prefix) + 1 :]: value
        for key, value in checkpoint.get("state_dict", {}).items()
        if key.startswith(prefix + ".")
    }
    if not state:
        raise CheckpointMismatchError(f"{checkpoint_path} has no '{prefix}.*' weights to initialise from.")
    try:
        part.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointMismatchError(
            f"The {prefix} weights in {checkpoint_path} do not fit this run's {type(part).__name__} "
            f"(was it trained with other sizes?):\n{error}"
        ) from error
    rank_zero_info(f"{prefix} weights loaded from {Path(checkpoint_path).resolve()}: {describe(checkpoint)}")


def describe(checkpoint: dict[str, Any]) -> str:
    """``"step 900, epoch 7; val/psnr=27.31, ..."``: how far the checkpoint's run had trained and its
    validation figures, with ``"(from the validation at step 450; ...)"`` after them where they come from
    a validation before its step."""
    where = f"step {checkpoint.get('global_step', '?')}, epoch {checkpoint.get('epoch', '?')}"
    metrics = checkpoint.get("vtok_lit", {}).get("val_metrics")
    if not metrics:
        return f"{where}; no validation metrics recorded with it"
    figures = ", ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items()))
    validated = checkpoint["vtok_lit"].get("val_metrics_step")
    if validated is not None and validated != checkpoint.get("global_step"):
        # A periodic checkpoint saved between validations (or just before one at its own step: the
        # run's last.ckpt) carries the previous validation's figures; the weights are its step's.
        figures += f" (from the validation at step {validated}; the run's logs have any later one)"
    return f"{where}; {figures}"

"""Initialise one part of a module (a tokenizer, a decoder) from another run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vtok_lit.modules.base import CheckpointMismatchError


def load_part_weights(part: nn.Module, checkpoint_path: str, prefix: str) -> None:
    """Load the weights stored under ``prefix.`` in a vtok-lit checkpoint into ``part``.

    Args:
        part: the module to fill, e.g. a VideoTokenizer.
        checkpoint_path: a ``.ckpt`` written by a vtok-lit run (tokenizer pretraining, say).
        prefix: the attribute name of the part in the module that wrote the checkpoint (``tokenizer``).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointMismatchError: the checkpoint holds no such part, a part of another class, or weights
            of other shapes.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint for '{prefix}' not found: {checkpoint_path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
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

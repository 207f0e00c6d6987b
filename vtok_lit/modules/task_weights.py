"""Weights that move between task modules: VideoLLM, TextToVideo and UnifiedVideoLM.

Each task module holds one or both task models of :mod:`vtok_lit.core` (understanding: a
:class:`~vtok_lit.core.video_qa.VideoQuestionAnswering`; generation: a
:class:`~vtok_lit.core.text_to_video.TextToVideoModel`) under the prefixes its ``TASK_PREFIXES``
names. A checkpoint of any of them can initialise any other: a task model the checkpoint holds is
loaded whole; one it does not hold takes the parts both tasks share (tokenizer and LM) from the
task it does hold, and keeps its own task parts (projector, token head) as built.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from vtok_lit.modules.checkpoints import CheckpointMismatchError, describe, read_checkpoint

if TYPE_CHECKING:
    from vtok_lit.modules.base import TaskModule

# The parts of a task model that both tasks have and mean the same in each.
SHARED_PARTS = ("tokenizer.", "language_model.")


def module_task_prefixes(module_name: str) -> dict[str, str] | None:
    """``{"understanding": "model.", ...}`` of the task module class named (``module.Class``), None if
    it is no task module of the kit."""
    from vtok_lit.modules.base import TaskModule

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    for cls in subclasses(TaskModule):
        if f"{cls.__module__}.{cls.__qualname__}" == module_name and cls.TASK_PREFIXES:
            return dict(cls.TASK_PREFIXES)
    return None


def load_task_weights(module: TaskModule, path: str) -> None:
    """Initialise ``module``'s task models from the checkpoint of a task module at ``path``.

    Raises:
        CheckpointMismatchError: the checkpoint is of no task module (a tokenizer-pretraining one goes
            to ``tokenizer_checkpoint``), or its weights do not fit (names the keys).
    """
    checkpoint = read_checkpoint(path)
    source = checkpoint.get("vtok_lit", {}).get("module")
    prefixes = None if source is None else module_task_prefixes(source)
    if prefixes is None:
        raise CheckpointMismatchError(
            f"model.init_args.init_checkpoint: {path} is a checkpoint of {source or 'no vtok-lit module'}, "
            "not of VideoLLM, TextToVideo or UnifiedVideoLM (a tokenizer-pretraining checkpoint goes to "
            "model.init_args.tokenizer_checkpoint)."
        )
    state = checkpoint.get("state_dict", {})
    held = {
        task: {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        for task, prefix in prefixes.items()
    }
    shared = {
        key: value
        for weights in held.values()
        for key, value in weights.items()
        if key.startswith(SHARED_PARTS)
    }
    loaded = []
    for task, prefix in type(module).TASK_PREFIXES.items():
        target = module.get_submodule(prefix.rstrip("."))
        whole = task in held
        load_into(target, held[task] if whole else shared, whole, path, f"{task} ({prefix})")
        loaded.append(f"{task}: {'all of it' if whole else 'tokenizer and LM'}")
    rank_zero_info(f"weights loaded from {path} ({source}; {describe(checkpoint)}): " + ", ".join(loaded))


def load_into(target: nn.Module, weights: dict[str, Any], whole: bool, path: str, what: str) -> None:
    """Load ``weights`` into ``target``: all of its weights when ``whole``, else those given (each of
    which it must have), raising a :class:`CheckpointMismatchError` that names the keys at fault.

    A part that fills in state an older checkpoint lacks (an understanding model's token statistics)
    does so here; only what is still missing after that counts as missing."""
    own = target.state_dict()
    unexpected = sorted(set(weights) - set(own))
    misshapen = [
        f"{key}: checkpoint {tuple(value.shape)}, this run {tuple(own[key].shape)}"
        for key, value in weights.items()
        if key in own and value.shape != own[key].shape
    ]
    missing: list[str] = []
    if not unexpected and not misshapen:
        missing = sorted(target.load_state_dict(weights, strict=False).missing_keys) if whole else []
        if not missing:
            return
    elif whole:
        # What the fitting weights leave unfilled, on a copy: the parts' own filling-in counts here too.
        shaped = {key for key in weights if key in own}
        fitting = {key: weights[key] for key in shaped if weights[key].shape == own[key].shape}
        with warnings.catch_warnings():  # the copy's notes on what it filled in are not this load's
            warnings.simplefilter("ignore")
            left = copy.deepcopy(target).load_state_dict(fitting, strict=False).missing_keys
        missing = sorted(set(left) - shaped)
    problems = [
        f"{label}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
        for label, keys in (
            ("not in this run", unexpected),
            ("not in the checkpoint", missing),
            ("other shapes", misshapen),
        )
        if keys
    ]
    raise CheckpointMismatchError(
        f"The {what} weights of {path} do not fit this run (another tokenizer, LM or size?); "
        + "; ".join(problems)
    )

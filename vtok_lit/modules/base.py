"""What every vtok-lit LightningModule shares: injected optimizers, data checks, checkpoint identity."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import Metric, MetricCollection

from vtok_lit import __version__
from vtok_lit.callbacks.data_guard import RequireUsableData
from vtok_lit.core.language_models import LanguageModel
from vtok_lit.core.token_standardizer import TokenStandardizer
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.modules.checkpoints import (
    CheckpointMismatchError,
    component_class_names,
    identity_differences,
)
from vtok_lit.modules.task_weights import load_task_weights


class VTokModule(LightningModule):
    """Base class: builds the injected optimizer after the strategy has wrapped the model, and the
    metrics of each evaluation stage in one place.

    A module is identified by its class and the classes of its components (:meth:`checkpoint_identity`);
    a checkpoint whose identity differs from the module loading it is refused with an error naming
    both, before any weight is touched.

    Validation and test share one :meth:`evaluate` and one :meth:`log_epoch_metrics`, given the stage's
    metrics: ``val_metrics`` and ``test_metrics``, an ``nn.ModuleDict`` each of :meth:`stage_metrics`.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scales: dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            optimizer: Builds the optimizer from the trainable parameters (``class_path``/``init_args`` in
                YAML, e.g. ``torch.optim.AdamW`` with ``lr``).
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
            lr_scales: Learning rates of parts, as multiples of the optimizer's: ``{part: scale}``, a part
                named by its attribute path in the module (``model.tokenizer``), each of its parameters
                at ``scale`` times the rate (the most specific part wins); the schedule scales every
                rate alike. E.g. a pretrained tokenizer fine-tuned slower than a new LM learns.
        """
        super().__init__()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_scales = dict(lr_scales or {})
        for part, scale in self.lr_scales.items():
            if not scale > 0:
                raise ValueError(
                    f"model.init_args.lr_scales.{part}={scale}: a scale must be > 0 (freeze a part instead)"
                )
        # The global step of the last validation (not the sanity check), saved with its figures.
        self.validated_at_step: int | None = None
        self.configure_metrics([])

    def stage_metrics(self, stage: str, categories: list[str]) -> dict[str, Metric | MetricCollection]:
        """Fresh metrics of one evaluation stage (``"val"`` or ``"test"``), by name; ``categories`` are
        the question categories of the data."""
        return {}

    def configure_metrics(self, categories: list[str]) -> None:
        """Builds ``val_metrics`` and ``test_metrics`` for data of the question ``categories``."""
        self.metric_categories = categories
        self.val_metrics = nn.ModuleDict(self.stage_metrics("val", categories)).to(self.device)
        self.test_metrics = nn.ModuleDict(self.stage_metrics("test", categories)).to(self.device)

    def setup(self, stage: str) -> None:
        # Rebuilt only for other categories: Lightning remembers which attribute holds a logged Metric.
        categories = self.data_question_categories()
        if categories != self.metric_categories:
            self.configure_metrics(categories)

    def evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str, metrics: nn.ModuleDict) -> Any:
        """A validation or test step; ``stage`` names the logged keys (``val/...``)."""
        raise NotImplementedError

    def log_epoch_metrics(self, stage: str, metrics: nn.ModuleDict) -> None:
        """Logs what :meth:`evaluate` left to the end of an evaluation epoch; nothing by default."""

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        return self.evaluate(batch, batch_idx, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_metrics("val", self.val_metrics)
        if not self.trainer.sanity_checking:
            # A checkpoint saved later (every N steps) carries these figures: it says from when.
            self.validated_at_step = self.global_step

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        return self.evaluate(batch, batch_idx, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self.log_epoch_metrics("test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        groups = self.parameter_groups()
        if not groups:
            raise ValueError(f"{type(self).__name__} has no trainable parameters: everything is frozen.")
        optimizer = self.optimizer_factory(groups if self.lr_scales else groups[0]["params"])
        for group in optimizer.param_groups:
            # Before the scheduler is built: it takes each group's rate as that group's base rate.
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval},
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters by learning-rate scale (:attr:`lr_scales`): one group for each scale
        in use, ``{"params": [...], "lr_scale": scale}``; an error names a part that is not one.

        A part shared by two parents (one tokenizer in both of a unified model's tasks) has both names:
        either may be given a scale."""
        parts = {unwrapped_name(name): module for name, module in self.named_modules(remove_duplicate=False)}
        for part in self.lr_scales:
            if part not in parts:
                # The parts two levels down that hold parameters: what a config most often names.
                shallow = sorted(
                    name
                    for name, module in parts.items()
                    if name and name.count(".") < 2 and next(module.parameters(), None) is not None
                )
                raise ValueError(
                    f"model.init_args.lr_scales names {part!r}, which is not a part of {type(self).__name__} "
                    f"(its parts include {', '.join(shallow)}; deeper ones by dotted path)"
                )
        names: dict[nn.Parameter, list[str]] = {}
        for name, parameter in self.named_parameters(remove_duplicate=False):
            if parameter.requires_grad:
                names.setdefault(parameter, []).append(name)
        by_scale: dict[float, list[nn.Parameter]] = {}
        for parameter, aliases in names.items():
            by_scale.setdefault(self.lr_scale_of(aliases), []).append(parameter)
        return [{"params": params, "lr_scale": scale} for scale, params in by_scale.items()]

    def lr_scale_of(self, parameter_names: list[str]) -> float:
        """The learning-rate scale of a parameter of these names: that of the most specific part of
        :attr:`lr_scales` holding it, else 1."""
        paths = [unwrapped_name(name) for name in parameter_names]
        holders = [part for part in self.lr_scales if any(path.startswith(part + ".") for path in paths)]
        return self.lr_scales[max(holders, key=len)] if holders else 1.0

    def configure_callbacks(self) -> list[Callback]:
        # Part of every module: an epoch of data it cannot use stops the run with an error.
        return [RequireUsableData()]

    def checkpoint_identity(self) -> dict[str, str]:
        """What a checkpoint must match to be loaded into this module: its class, and the class names of
        its components (:func:`component_class_names`)."""
        return {"module": f"{type(self).__module__}.{type(self).__qualname__}", **component_class_names(self)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vtok_lit"] = {"version": __version__, **self.checkpoint_identity()}
        # What the weights were worth when saved, so a run that loads them can say so.
        checkpoint["vtok_lit"]["val_metrics"] = self.validation_figures()
        checkpoint["vtok_lit"]["val_metrics_step"] = self.validated_at_step
        # Lightning saves no RNG state, yet frame subsets, flow-matching noise and question sampling
        # draw from torch's global RNG: a resumed fit restores it to continue the same draws (under
        # DDP every rank takes rank 0's state; all ranks start from the same seed).
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def validation_figures(self) -> dict[str, float]:
        """The latest ``val/...`` scalars the trainer holds (empty without a trainer or a validation)."""
        metrics = self.trainer.callback_metrics if self._trainer is not None else {}
        return {
            name: float(value)
            for name, value in metrics.items()
            if name.startswith("val/") and value.numel() == 1
        }

    def on_train_end(self) -> None:
        # TensorBoard's HPARAMS tab shows a run's hyperparameters only next to metrics: a finished run
        # writes them with its last validation figures, as hp/val/... (step 0).
        figures = {f"hp/{name}": value for name, value in self.validation_figures().items()}
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger) and figures:
                logger.log_hyperparams(self.hparams, metrics=figures)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("vtok_lit")
        if saved is None:
            raise CheckpointMismatchError(
                f"This checkpoint was not written by vtok-lit (no 'vtok_lit' entry); "
                f"{type(self).__name__} cannot load it."
            )
        expected = self.checkpoint_identity()
        differences = identity_differences(saved, expected, "this run")
        if differences:
            raise CheckpointMismatchError(
                "The checkpoint belongs to another model; " + "; ".join(differences)
            )
        rng_states = checkpoint.get("rng_states")
        resuming_fit = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if resuming_fit and "optimizer_states" in checkpoint:
            self.check_lr_scales_match(checkpoint.get("hyper_parameters", {}).get("lr_scales"))
        if rng_states is not None and resuming_fit:
            torch.set_rng_state(rng_states["torch"])
            if "cuda" in rng_states and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng_states["cuda"])

    def check_lr_scales_match(self, saved: dict[str, float] | None) -> None:
        """Refuse to resume a fit under other :attr:`lr_scales` than the checkpoint's: the optimizer's
        state it restores holds each group's learning rate, so new scales would silently not apply."""
        saved_scales = {part: float(scale) for part, scale in (saved or {}).items()}
        if saved_scales != {part: float(scale) for part, scale in self.lr_scales.items()}:
            raise ValueError(
                f"model.init_args.lr_scales is {self.lr_scales} but the checkpoint resumed was trained "
                f"with {saved_scales}: a resumed fit restores the optimizer's learning rates as saved, so "
                "other scales would not take effect. Resume with the checkpoint's lr_scales, or start a "
                "new fit (no --ckpt_path) from its weights."
            )

    def full_precision(self) -> torch.autocast:
        """A context that turns autocast off, so metrics (SSIM's convolutions, PSNR's sums) are
        computed in float32 under ``bf16-mixed`` and ``16-mixed`` too; cast their inputs with ``.float()``."""
        return torch.autocast(self.device.type, enabled=False)

    def log_skipped_videos(self, batch: dict[str, Any]) -> None:
        """Count the clips the data loader dropped under the ``skip`` policy, so no loss goes unseen."""
        self.log(
            "data/skipped_videos",
            float(batch.get("num_skipped", 0)),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            batch_size=1,
            sync_dist=True,  # the total over all processes
        )

    def data_question_categories(self) -> list[str]:
        """The question categories of the trainer's data, for per-category metrics built at setup;
        none without a :class:`~vtok_lit.data.VideoTextDataModule`."""
        datamodule = self._datamodule()
        return datamodule.question_categories() if hasattr(datamodule, "question_categories") else []

    def check_frames_fit(self, tokenizer: VideoTokenizer) -> None:
        """Refuse frames (the data's ``image_size``) that the frame encoder's patches do not tile, or
        whose feature map is smaller than the tokenizer's grid (pooling would repeat cells)."""
        image_size = self.data_setting("image_size")
        if image_size is None:
            return
        key = "model.init_args.tokenizer.init_args"
        encoder = tokenizer.frame_encoder
        patch_size = getattr(encoder, "patch_size", None)
        if isinstance(patch_size, int) and image_size % patch_size:
            raise ValueError(
                f"{key}.frame_encoder.init_args.patch_size={patch_size} does not divide the frame side "
                f"data.init_args.image_size={image_size}."
            )
        was_training = encoder.training
        with torch.no_grad():
            height, width = encoder.eval()(torch.zeros(1, 3, image_size, image_size)).shape[-2:]
        encoder.train(was_training)
        if tokenizer.grid_size > min(height, width):
            raise ValueError(
                f"{key}.grid_size={tokenizer.grid_size} is larger than the {height}x{width} feature map the "
                f"frame encoder makes of data.init_args.image_size={image_size} frames."
            )

    def data_setting(self, key: str) -> Any:
        """A hyperparameter of the trainer's datamodule (``image_size``, ``num_frames``), None if unknown."""
        return getattr(self._datamodule(), "hparams", {}).get(key)

    def _datamodule(self) -> Any:
        """The trainer's datamodule, None outside a Trainer or without one."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def check_data_matches(self, key: str, data_value: Any, model_key: str, model_value: Any) -> None:
        """Raise a clear error when a data setting disagrees with the model's (e.g. the frame size)."""
        if data_value != model_value:
            raise ValueError(
                f"data.init_args.{key} is {data_value!r} but model.init_args.{model_key} is {model_value!r}; "
                "set them to the same value in the config."
            )


class TaskModule(VTokModule):
    """A module that trains and scores one task model of :mod:`vtok_lit.core`, ``self.model``.

    The model's tokenizer and LM, given to this module's ``__init__``, read as the module's own
    (``module.tokenizer``): for :meth:`checkpoint_identity` and for scripts that inspect a run.
    """

    model: nn.Module
    # Where each task model it holds sits in its state (``{"understanding": "model."}``): what lets the
    # weights of one task module initialise another (:mod:`vtok_lit.modules.task_weights`).
    TASK_PREFIXES: ClassVar[dict[str, str]] = {}

    def initialise_from(self, init_checkpoint: str | None) -> None:
        """Load the task models' weights from another task module's checkpoint, if one is given, and
        forget its path in the hyperparameters (this module's own checkpoints then hold the weights)."""
        if init_checkpoint is None:
            return
        load_task_weights(self, init_checkpoint)
        self.save_hyperparameters({**self.hparams, "init_checkpoint": None})

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Token statistics are those of the whole batch, however many processes share it.
        self._hand_standardizers(self.sum_across_processes)

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        self._hand_standardizers(None)  # outside a run, nothing refers back to it

    def _hand_standardizers(self, sum_across_processes: Any) -> None:
        for module in self.modules():
            if isinstance(module, TokenStandardizer):
                module.sum_across_processes = sum_across_processes

    def sum_across_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the run's processes by its strategy (itself on one device)."""
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # VideoLLM and TextToVideo checkpoints written before the task models moved into core hold the
        # same weights without the ``model.`` prefix: they load as they are.
        state = checkpoint["state_dict"]
        if state and not any(name.startswith("model.") for name in state):
            own = self.state_dict().keys()
            checkpoint["state_dict"] = {
                f"model.{name}" if f"model.{name}" in own else name: value for name, value in state.items()
            }

    @property
    def tokenizer(self) -> VideoTokenizer:
        return self.model.tokenizer

    @property
    def language_model(self) -> LanguageModel:
        return self.model.language_model


def unwrapped_name(name: str) -> str:
    """A submodule's or parameter's name without the wrappers FSDP and activation checkpointing put
    between a part and its children: the attribute path a config names."""
    for wrapper in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module."):
        name = name.replace(wrapper, "")
    return name.removesuffix("._fsdp_wrapped_module").removesuffix("._checkpoint_wrapped_module")


def check_token_dims(tokenizer: VideoTokenizer, **readers: nn.Module | None) -> None:
    """Refuse a part that reads the tokenizer's tokens (``decoder=...``, ``residual_objective=...``,
    named as the module's argument) but was built for tokens of another size: the error names both
    settings, where the first step would fail on a bare matrix product."""
    for name, reader in readers.items():
        if reader is not None and reader.token_dim != tokenizer.token_dim:
            raise ValueError(
                f"model.init_args.{name}.init_args.token_dim={reader.token_dim} does not match "
                f"model.init_args.tokenizer.init_args.token_dim={tokenizer.token_dim}: the {name} reads "
                "the tokenizer's tokens, so set both to the same value."
            )


def required_language_model(language_model: LanguageModel | None) -> LanguageModel:
    """The module's LM; None only where a signature lets the LM follow optional parts, an error."""
    if language_model is None:
        raise ValueError("The module needs a language model: set model.init_args.language_model.")
    return language_model

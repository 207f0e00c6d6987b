"""Tokenizer pretraining: learn VTok tokens by reconstructing the clip from them."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio

from vtok_lit.core.residual_objectives import ResidualObjective
from vtok_lit.core.tokenizers import VideoTokenizer
from vtok_lit.core.tokens import TokenKind
from vtok_lit.core.video_decoders import VideoDecoder, changed_pixels
from vtok_lit.metrics.masked_error import MaskedMeanSquaredError
from vtok_lit.metrics.residual_use import ResidualUse
from vtok_lit.metrics.structural_similarity import StructuralSimilarity
from vtok_lit.modules.base import VTokModule, check_token_dims


class TokenizerPretraining(VTokModule):
    """Trains a video tokenizer jointly with a video decoder that rebuilds the clip from its tokens.

    Validation reports PSNR/SSIM of the reconstruction next to those of the trivial reconstruction
    that repeats the key frame: the gap is what the residual tokens carry about motion. For a
    tokenizer with residual tokens it also reports ``residual_use``: the error on the pixels that
    changed since the key frame when every clip is decoded with another clip's residual tokens, over
    the error with its own (1.0: the decoder ignores them). ``mse_changed_pixels``,
    ``mse_static_pixels`` and ``mse_key_frame`` tell where the error lives: on the pixels of later
    frames that changed since the key frame, on the rest of them, and on the key frame itself.
    """

    def __init__(
        self,
        tokenizer: VideoTokenizer,
        decoder: VideoDecoder,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scales: dict[str, float] | None = None,
        residual_objective: ResidualObjective | None = None,
        still_frames_per_clip: int = 0,
    ) -> None:
        """
        Args:
            tokenizer: Turns a clip ``(B, T, 3, H, W)`` into tokens (VTok, naive frame sampling, key
                frame only), with its frame encoder inside.
            decoder: Rebuilds the clip from the tokens (regression or flow matching).
            optimizer: Builds the optimizer from the trainable parameters.
            lr_scheduler: Builds an optional learning-rate scheduler from the optimizer.
            lr_scheduler_interval: Whether the scheduler steps every optimizer step or every epoch.
            lr_scales: Learning rates of parts as multiples of the optimizer's, ``{part: scale}`` by
                attribute path (``tokenizer.frame_encoder: 0.1`` for a pretrained frame encoder).
            residual_objective: An optional auxiliary objective the residual tokens must meet on
                their own (:class:`ForegroundMotionObjective`, :class:`ChangeMapObjective`,
                :class:`CaptionContrastObjective`, which reads the batch's captions), added to
                the loss with its ``weight``, its error logged under its ``metric_name``; the
                tokenizer must make residual tokens. None: the reconstruction loss alone.
            still_frames_per_clip: In training, also rebuild this many other random frames of each
                clip as one-frame clips, each from its own tokens (for VTok: the frame's own spatial
                tokens, as if it were the key frame), their loss added to the clip's and logged as
                ``train/still_frame_loss``. A VTok clip trains its spatial tokens and their decoding
                on one frame, its key frame, where naive frame sampling trains them on every frame it
                decodes, so VTok's key frame learns the detail that draws an object's shape about half
                as fast (after the quickstart: key-frame MSE 0.0027 against naive's 0.0016); this
                gives its spatial path more frames a step. The tokens of a clip, and validation, are
                unchanged. 0: off.
        """
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, lr_scales)
        self.save_hyperparameters()
        check_token_dims(tokenizer, decoder=decoder, residual_objective=residual_objective)
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.residual_objective = residual_objective
        if still_frames_per_clip < 0:
            raise ValueError(
                f"model.init_args.still_frames_per_clip must not be negative, got {still_frames_per_clip}"
            )
        self.still_frames_per_clip = still_frames_per_clip

    def stage_metrics(self, stage: str, categories: list[str]) -> dict[str, MetricCollection | Metric]:
        reconstruction = MetricCollection(
            {
                "psnr": PeakSignalNoiseRatio(data_range=1.0),
                "ssim": StructuralSimilarity(data_range=1.0),
            }
        )
        return {
            "reconstruction": reconstruction.clone(prefix=f"{stage}/"),
            "repeat_key": reconstruction.clone(prefix=f"{stage}/", postfix="_repeat_key"),
            "residual_use": ResidualUse(),
            "mse_changed_pixels": MaskedMeanSquaredError(),
            "mse_static_pixels": MaskedMeanSquaredError(),
            "mse_key_frame": MaskedMeanSquaredError(),
        }

    def setup(self, stage: str) -> None:
        super().setup(stage)
        image_size = self.data_setting("image_size")
        if image_size is not None:
            self.check_data_matches(
                "image_size", image_size, "decoder.init_args.image_size", self.decoder.image_size
            )
        self.check_frames_fit(self.tokenizer)
        if self.residual_objective is not None and not self.makes_residual_tokens():
            raise ValueError(
                f"model.init_args.residual_objective ({type(self.residual_objective).__name__}) needs "
                f"residual tokens, and {type(self.tokenizer).__name__} makes none: set it to null"
            )

    def makes_residual_tokens(self) -> bool:
        kinds = self.tokenizer.token_layout(self.tokenizer.max_frames)[0]
        return bool((kinds == TokenKind.RESIDUAL).any())

    def reconstruct(self, video: torch.Tensor) -> torch.Tensor:
        """Tokenize and decode a clip ``(B, T, 3, H, W)`` in [0, 1]; returns the same shape."""
        return self.decoder.decode(self.tokenizer(video), num_frames=video.shape[1])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        self.log_skipped_videos(batch)
        video = batch["video"]
        loss, parts = self.training_loss(video, batch.get("caption"))
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=video.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=video.shape[0])
        return loss

    def training_loss(
        self, video: torch.Tensor, captions: list[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of clips ``(B, T, 3, H, W)`` in [0, 1] (captioned by ``captions`` for a
        residual objective that reads them): the decoder's, plus the residual
        objective's (times its weight) and the still frames' when they are on; and those two terms
        by the names they are logged under (``train/<name>``)."""
        tokens = self.tokenizer(video)
        loss = self.decoder.loss(tokens, video)
        parts = {}
        if self.residual_objective is not None:
            objective = self.residual_objective
            parts[objective.metric_name] = error = objective(tokens, video, captions)
            loss = loss + objective.weight * error
        if self.still_frames_per_clip:
            parts["still_frame_loss"] = still_loss = self.still_frame_loss(video)
            loss = loss + still_loss
        return loss, parts

    def still_frame_loss(self, video: torch.Tensor) -> torch.Tensor:
        """The decoder's loss on ``still_frames_per_clip`` random frames of each clip other than its
        key frame (all of them when a clip has fewer; the key frame of a one-frame clip), each
        tokenized and decoded as a clip of one frame."""
        batch_size, num_frames = video.shape[:2]
        key = self.tokenizer.key_frame_index(num_frames)
        others = torch.tensor([t for t in range(num_frames) if t != key] or [key], device=video.device)
        choice = torch.rand(batch_size, len(others), device=video.device).argsort(dim=1)
        frames = others[choice[:, : self.still_frames_per_clip]]  # (B, k), without repeats while they last
        stills = video[torch.arange(batch_size, device=video.device)[:, None], frames].flatten(0, 1)[:, None]
        return self.decoder.loss(self.tokenizer(stills), stills)

    def evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str, metrics: nn.ModuleDict) -> None:
        if batch is None:
            return
        self.log_skipped_videos(batch)
        video = batch["video"]
        batch_size, num_frames = video.shape[:2]
        tokens = self.tokenizer(video)
        loss, reconstruction = self.decoder.loss_and_decode(tokens, video, self._noise(batch_idx))
        self.log(f"{stage}/loss", loss, batch_size=batch_size, sync_dist=True)
        if self.residual_objective is not None:
            error = self.residual_objective(tokens, video, batch.get("caption"))
            self.log(
                f"{stage}/{self.residual_objective.metric_name}", error, batch_size=batch_size, sync_dist=True
            )
        key = self.tokenizer.key_frame_index(num_frames)
        with self.full_precision():
            target, rendered = video.float(), reconstruction.float()
            repeat_key = target[:, key : key + 1].expand_as(target)
            frames = target.flatten(0, 1)
            metrics["reconstruction"].update(rendered.flatten(0, 1), frames)
            metrics["repeat_key"].update(repeat_key.flatten(0, 1), frames)
            changed = changed_pixels(target, key)
            later = torch.ones_like(changed)
            later[:, key] = False
            masks = {
                "mse_changed_pixels": changed,
                "mse_static_pixels": later & ~changed,
                "mse_key_frame": ~later,
            }
            for name, mask in masks.items():
                metrics[name].update(rendered, target, mask)
                self.log(f"{stage}/{name}", metrics[name], batch_size=batch_size)
        self.log_dict(metrics["reconstruction"], batch_size=batch_size)
        self.log_dict(metrics["repeat_key"], batch_size=batch_size)
        if batch_size > 1 and (tokens.kinds == TokenKind.RESIDUAL).any():
            swapped = tokens.with_residuals_from_other_clips()
            other = self.decoder.decode(swapped, num_frames, self._noise(batch_idx)).clamp(0, 1)
            residual_use = metrics["residual_use"]
            with self.full_precision():
                residual_use.update(rendered, other.float(), target, changed)
            self.log(f"{stage}/residual_use", residual_use, batch_size=batch_size)

    def _noise(self, batch_idx: int) -> torch.Generator:
        """The same sampling noise for every decode of one batch, and for every run."""
        return torch.Generator(self.device).manual_seed(batch_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        video = batch["video"]
        tokens = self.tokenizer(video)
        return {
            "path": batch["path"],
            "tokens": tokens,
            "reconstruction": self.decoder.decode(tokens, video.shape[1]),
        }

"""The vision tower of an open_clip model as a frame encoder (patch tokens as a feature map)."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vtok_lit.core.frame_encoders import FrameEncoder


class OpenCLIPFrameEncoder(FrameEncoder):
    """An open_clip ViT vision tower; its patch tokens (not the CLS token) form the feature map.

    Frames are resized to the model's image size and normalised with the model's own mean and std,
    so callers pass plain frames in [0, 1]. Nothing is ever downloaded on purpose: a pretrained tag
    works where its weights are already in the local cache, a file path is read from disk.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        model_config_path: str | None = None,
        freeze: bool = True,
    ) -> None:
        """
        Args:
            model_name: An open_clip model name (``open_clip.list_models()``), or the file stem of
                ``model_config_path``.
            pretrained: An open_clip pretrained tag such as ``"openai"`` (read from the local cache;
                offline, set HF_HUB_OFFLINE=1 or the Hub client retries for about a minute first), a
                local checkpoint file of the whole CLIP model, or None for random weights.
            model_config_path: A JSON open_clip model config to register first, for custom or tiny
                models; it registers the model named after the file's stem.
            freeze: Keep the weights fixed and the tower in eval mode, even under ``.train()``.
        """
        import open_clip
        from open_clip.transformer import VisionTransformer

        super().__init__()
        if model_config_path is not None:
            config_path = Path(model_config_path)
            if not config_path.is_file():
                raise FileNotFoundError(f"open_clip model config not found: {config_path}")
            if config_path.stem != model_name:
                raise ValueError(
                    f"model_config_path registers the model '{config_path.stem}', "
                    f"but model_name is '{model_name}': set model_name='{config_path.stem}'"
                )
            open_clip.add_model_config(config_path)
        known_models = open_clip.list_models()
        if model_name not in known_models:
            suggestions = difflib.get_close_matches(model_name, known_models, n=5, cutoff=0.4)
            raise ValueError(
                f"unknown open_clip model '{model_name}'; known names include "
                f"{', '.join(suggestions or known_models[:5])} (see open_clip.list_models())"
            )

        checkpoint, weights_source = _resolve_pretrained(model_name, pretrained)
        try:
            model = open_clip.create_model(model_name, pretrained=checkpoint, pretrained_text=False)
        except RuntimeError as error:
            if not weights_source.startswith("tag:"):
                raise
            raise RuntimeError(
                f"could not load open_clip weights '{pretrained}' for '{model_name}' offline (they are "
                f"not in the local cache: {error}); pass a local checkpoint path as `pretrained` instead "
                "(and set HF_HUB_OFFLINE=1 on offline machines to skip the Hub's network retries)"
            ) from error
        visual = model.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(
                f"'{model_name}' has a {type(visual).__name__} vision tower; "
                "only ViT towers give a patch grid"
            )

        self.visual = visual
        self.out_channels = visual.conv1.out_channels
        self.image_size = tuple(visual.image_size)
        preprocess = open_clip.get_model_preprocess_cfg(model)
        self.interpolation = "bilinear" if preprocess.get("interpolation") == "bilinear" else "bicubic"
        self.register_buffer("mean", torch.tensor(preprocess["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess["std"]).view(1, 3, 1, 1), persistent=False)
        # The attentional pooler of CoCa-style towers has its own width, so its final norm does not fit.
        self.normalize_patch_tokens = visual.attn_pool is None

        config = json.dumps(open_clip.get_model_config(model_name), sort_keys=True)
        config_hash = hashlib.sha1(config.encode()).hexdigest()[:12]
        self._config_identity = f"open_clip/{model_name}/config={config_hash}/weights={weights_source}"

        self.freeze = freeze
        if freeze:
            self.visual.requires_grad_(False)
            self.train(False)

    @property
    def config_identity(self) -> str:
        return self._config_identity

    def train(self, mode: bool = True) -> OpenCLIPFrameEncoder:
        return super().train(mode and not self.freeze)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Maps ``(N, 3, H, W)`` frames in [0, 1] to ``(N, width, gh, gw)`` patch features."""
        if tuple(frames.shape[-2:]) != self.image_size:
            frames = F.interpolate(
                frames, size=self.image_size, mode=self.interpolation, align_corners=False, antialias=True
            )
        frames = (frames - self.mean) / self.std
        output = self.visual.forward_intermediates(
            frames,
            indices=1,
            stop_early=True,
            normalize_intermediates=self.normalize_patch_tokens,
            intermediates_only=True,
            output_fmt="NCHW",
        )
        return output["image_intermediates"][-1]


def _resolve_pretrained(model_name: str, pretrained: str | None) -> tuple[str | None, str]:
    """Returns the ``pretrained`` argument for open_clip and where the weights come from (for the identity).

    Raises:
        FileNotFoundError: ``pretrained`` is neither a tag of the model nor an existing file.
    """
    from open_clip import get_pretrained_cfg, list_pretrained_tags_by_model

    if pretrained is None:
        return None, "random-init"
    if get_pretrained_cfg(model_name, pretrained):
        return pretrained, f"tag:{pretrained}"
    path = Path(pretrained).expanduser().resolve()
    if not path.is_file():
        tags = list_pretrained_tags_by_model(model_name)
        raise FileNotFoundError(
            f"pretrained checkpoint not found: {path} (nor is '{pretrained}' an open_clip tag of "
            f"'{model_name}'; its tags are {tags})"
        )
    return str(path), f"file:{path}@{path.stat().st_mtime_ns}"

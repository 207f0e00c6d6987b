"""A Hugging Face ``transformers`` causal LM behind the :class:`LanguageModel` interface (optional extra)."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from vtok_lit.core.language_models import LanguageModel, LMOutput, position_ids_from_mask

LORA_TARGETS = ("q_proj", "v_proj")


def import_transformers() -> ModuleType:
    """Import ``transformers``, or say which extra installs it."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError('Hugging Face models need transformers: pip install "vtok-lit[hf]"') from error
    return transformers


def load_causal_lm(model_path: str | None, config: dict | None, dtype: torch.dtype) -> nn.Module:
    """A ``transformers`` causal LM from a local directory, or randomly initialised from config kwargs."""
    transformers = import_transformers()
    from packaging.version import Version

    # transformers 4.56 renamed the loaders' torch_dtype to dtype and warns on the old name.
    dtype_argument = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    if model_path is not None:
        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"no model directory at {model_path}")
        return transformers.AutoModelForCausalLM.from_pretrained(
            model_path, local_files_only=True, **{dtype_argument: dtype}
        )
    if "model_type" not in config:
        raise ValueError(f"config needs a model_type (e.g. 'qwen2'), got keys {sorted(config)}")
    model_config = transformers.AutoConfig.for_model(**config)
    return transformers.AutoModelForCausalLM.from_config(model_config, **{dtype_argument: dtype})


class LoRALinear(nn.Module):
    """A linear layer plus a trainable low-rank update: ``base(x) + scale * up(down(x))``.

    ``up`` starts at zero, so wrapping a layer leaves its output unchanged until training moves it.

    Args:
        base: the layer to adapt; its own parameters are left as they are.
        rank: width of the low-rank bottleneck.
        alpha: the update is scaled by ``alpha / rank``, so changing the rank keeps its size comparable.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_down = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        return self.base(x) + self.scale * self.lora_up(self.lora_down(x))


class HFCausalLM(LanguageModel):
    """Any ``AutoModelForCausalLM`` (Qwen2, Llama, Mistral, ...) as a :class:`LanguageModel`.

    The base model trains in full unless ``freeze``, ``trainable_layers`` or ``lora_rank`` says otherwise;
    LoRA adapters always train.

    Args:
        model_path: local directory with a saved model (``config.json`` and weights); nothing is downloaded.
        config: keyword arguments of ``AutoConfig.for_model`` (``model_type`` included) for a randomly
            initialised model, e.g. a tiny one for tests. Give exactly one of ``model_path`` and ``config``.
        torch_dtype: dtype the weights are loaded in.
        freeze: train none of the base model's parameters.
        trainable_layers: train only the last N decoder blocks, the final norm and the output head (and
            with it the input embeddings when the model ties them).
        lora_rank: rank of LoRA adapters on the attention q and v projections; 0 turns LoRA off. LoRA
            freezes the base model unless ``trainable_layers`` opens some of it.
        lora_alpha: LoRA scale numerator: the update is multiplied by ``lora_alpha / lora_rank``.
        gradient_checkpointing: recompute decoder blocks in the backward pass to save activation memory.
    """

    def __init__(
        self,
        model_path: str | None = None,
        config: dict | None = None,
        torch_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        freeze: bool = False,
        trainable_layers: int | None = None,
        lora_rank: int = 0,
        lora_alpha: float = 16.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if (model_path is None) == (config is None):
            raise ValueError("give exactly one of model_path (saved weights) and config (random init)")
        if freeze and trainable_layers is not None:
            raise ValueError("freeze trains nothing and trainable_layers trains some blocks: choose one")
        if lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {lora_rank}")
        self.model = load_causal_lm(model_path, config, getattr(torch, torch_dtype))
        self.hidden_size = self.model.config.hidden_size
        self.vocab_size = self.model.config.vocab_size
        self.max_seq_len = self.model.config.max_position_embeddings
        # transformers 5 renamed the forward argument and output field past_key_values to cache.
        forward_parameters = inspect.signature(self.model.forward).parameters
        self._cache_name = "cache" if "cache" in forward_parameters else "past_key_values"
        # Recent transformers compute the logits of the last positions only when asked.
        self._keeps_logits = "logits_to_keep" in forward_parameters

        self._set_trainable(freeze or lora_rank > 0, trainable_layers)
        if lora_rank > 0:
            self._add_lora(lora_rank, lora_alpha)
        if gradient_checkpointing:
            self._enable_gradient_checkpointing()

    def decoder_layers(self) -> nn.ModuleList:
        """The base model's list of decoder blocks (``model.layers`` in Llama-style models)."""
        lists = [child for child in self.model.base_model.children() if isinstance(child, nn.ModuleList)]
        if len(lists) != 1:
            raise ValueError(f"cannot tell the decoder blocks of {type(self.model).__name__}")
        return lists[0]

    def _set_trainable(self, freeze_base: bool, trainable_layers: int | None) -> None:
        self.model.requires_grad_(not freeze_base and trainable_layers is None)
        if trainable_layers is None:
            return
        layers = self.decoder_layers()
        if not 0 <= trainable_layers <= len(layers):
            raise ValueError(f"trainable_layers must be in [0, {len(layers)}], got {trainable_layers}")
        for layer in layers[len(layers) - trainable_layers :]:
            layer.requires_grad_(True)
        # Beside the blocks and the embeddings, a base model holds only its final norm (norm, ln_f, ...).
        for child in self.model.base_model.children():
            if child is not layers and not isinstance(child, nn.Embedding):
                child.requires_grad_(True)
        self.model.get_output_embeddings().requires_grad_(True)

    def _add_lora(self, rank: int, alpha: float) -> None:
        wrapped = 0
        for layer in self.decoder_layers():
            for name, module in list(layer.named_modules()):
                parent_name, _, attribute = name.rpartition(".")
                if attribute in LORA_TARGETS and isinstance(module, nn.Linear):
                    setattr(layer.get_submodule(parent_name), attribute, LoRALinear(module, rank, alpha))
                    wrapped += 1
        if not wrapped:
            raise ValueError(f"{type(self.model).__name__} has no {' or '.join(LORA_TARGETS)} linear layers")

    def _enable_gradient_checkpointing(self) -> None:
        # Non-reentrant checkpointing still gives gradients to adapters when the inputs and every base
        # weight around them are frozen.
        options = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # the name since transformers 5
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` -> embeddings ``(B, L, hidden)``."""
        return self.model.get_input_embeddings()(ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> LMOutput:
        """Run the wrapped model.

        Args:
            inputs_embeds: ``(B, L, hidden)``.
            attention_mask: ``(B, P + L)`` bool, True on real tokens (cached ones included), or None.
            past_key_values: the ``transformers`` cache from the previous call.
            use_cache: return the extended cache.
            logits_to_keep: Logits of the last this many positions only (0: all); a model whose
                forward has no such argument computes them all, and the last ones are returned.
        """
        position_ids = None
        if attention_mask is not None:
            # Left to itself the model counts positions from the first column, padding included.
            position_ids = position_ids_from_mask(attention_mask, inputs_embeds.shape[1])
            attention_mask = attention_mask.long()
        output = self.model(
            # Video features often arrive in float32 while the LM runs in bf16.
            inputs_embeds=inputs_embeds.to(self.model.dtype),
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            output_hidden_states=True,
            **{self._cache_name: past_key_values},
            **({"logits_to_keep": logits_to_keep} if logits_to_keep and self._keeps_logits else {}),
        )
        cache = getattr(output, self._cache_name) if use_cache else None
        logits = output.logits[:, -logits_to_keep:] if logits_to_keep else output.logits
        return LMOutput(output.hidden_states[-1], logits, cache)

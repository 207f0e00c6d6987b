import math

import pytest
import torch
from test_video_llm import tiny_video_llm

from vtok_lit.core import (
    ConvFrameEncoder,
    RegressionVideoDecoder,
    TransformerLM,
    VTokTokenizer,
    WarmupCosineSchedule,
)
from vtok_lit.modules import TokenizerPretraining, UnifiedVideoLM
from vtok_lit.modules.base import unwrapped_name


def rates(schedule: WarmupCosineSchedule, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return seen


def test_warmup_rises_linearly_then_the_cosine_decays_to_its_end():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    schedule = WarmupCosineSchedule(optimizer, warmup_steps=10, total_steps=110, start_factor=0.0)
    seen = rates(schedule, optimizer, 130)
    assert seen[0] == 0.0
    assert seen[5] == pytest.approx(0.25)
    assert seen[10] == pytest.approx(0.5)
    assert seen[60] == pytest.approx(0.25)  # half way through the cosine
    assert seen[35] == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert seen[110] == pytest.approx(0.0, abs=1e-12)
    assert seen[129] == pytest.approx(0.0, abs=1e-12)  # stays at the end after total_steps
    assert all(a >= b for a, b in zip(seen[10:-1], seen[11:], strict=True))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"warmup_steps": 100, "total_steps": 100}, "warmup_steps=100, total_steps=100"),
        ({"warmup_steps": -1, "total_steps": 100}, "warmup_steps=-1"),
        ({"warmup_steps": 1, "total_steps": 100, "end_factor": 2.0}, "end_factor=2.0"),
    ],
)
def test_settings_that_cannot_work_are_named(kwargs, named):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    with pytest.raises(ValueError, match=named):
        WarmupCosineSchedule(optimizer, **kwargs)


def warmup_cosine(optimizer: torch.optim.Optimizer) -> WarmupCosineSchedule:
    return WarmupCosineSchedule(optimizer, warmup_steps=2, total_steps=10)


def rate_of(optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter) -> float:
    (group,) = [group for group in optimizer.param_groups if any(p is parameter for p in group["params"])]
    return group["lr"]


def test_a_part_learns_at_its_scale_of_the_scheduled_rate():
    module = tiny_video_llm(
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.01),
        lr_scheduler=warmup_cosine,
        lr_scales={"model.tokenizer": 0.1, "model.tokenizer.residual_mlp": 0.5},
    )
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    encoder = next(module.tokenizer.frame_encoder.parameters())
    residual_map = next(module.tokenizer.residual_mlp.parameters())
    projector = next(module.model.projector.parameters())
    language_model = next(module.language_model.parameters())
    counted = sum(len(group["params"]) for group in optimizer.param_groups)
    assert counted == len(list(module.parameters()))
    for _ in range(5):  # through the warmup into the cosine: every rate keeps its ratio
        optimizer.step()
        schedule.step()
        assert rate_of(optimizer, projector) == rate_of(optimizer, language_model) > 0
        assert rate_of(optimizer, encoder) == pytest.approx(0.1 * rate_of(optimizer, projector))
        assert rate_of(optimizer, residual_map) == pytest.approx(0.5 * rate_of(optimizer, projector))


def test_without_scales_one_group_at_the_optimizers_rate():
    module = tiny_video_llm(optimizer=lambda params: torch.optim.SGD(params, lr=0.2))
    (group,) = module.configure_optimizers().param_groups
    assert group["lr"] == 0.2
    assert len(group["params"]) == len(list(module.parameters()))


def test_a_frozen_part_is_left_out_whatever_its_scale():
    module = tiny_video_llm(freeze_tokenizer=True, lr_scales={"model.tokenizer": 0.1})
    optimizer = module.configure_optimizers()
    assert [group["lr_scale"] for group in optimizer.param_groups] == [1.0]
    assert not any(
        p is q
        for group in optimizer.param_groups
        for p in group["params"]
        for q in module.tokenizer.parameters()
    )


@pytest.mark.parametrize(
    ("scales", "named"),
    [
        ({"model.tokeniser": 0.1}, r"lr_scales names 'model.tokeniser', which is not a part of VideoLLM"),
        ({"model.tokenizer": 0.0}, r"lr_scales.model.tokenizer=0.0: a scale must be > 0"),
    ],
)
def test_a_scale_that_cannot_work_is_named(scales, named):
    with pytest.raises(ValueError, match=named):
        tiny_video_llm(lr_scales=scales).configure_optimizers()


@pytest.mark.parametrize("name", ["model.understanding.tokenizer", "model.generation.tokenizer"])
def test_a_shared_part_takes_its_scale_under_either_name(name):
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    module = UnifiedVideoLM(
        tokenizer,
        RegressionVideoDecoder(token_dim=16, image_size=16, patch_size=4, width=16, depth=1),
        TransformerLM(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=128),
        num_frames=4,
        head_hidden_dim=16,
        projector_hidden_dim=16,
        freeze_tokenizer=False,
        freeze_decoder=False,
        decoder_loss_weight=1.0,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        lr_scales={name: 0.5},
    )
    optimizer = module.configure_optimizers()
    encoder = next(tokenizer.frame_encoder.parameters())
    assert rate_of(optimizer, encoder) == pytest.approx(0.05)
    assert rate_of(optimizer, next(module.language_model.parameters())) == pytest.approx(0.1)
    # Each parameter once, though the tokenizer sits in both tasks.
    counted = [p for group in optimizer.param_groups for p in group["params"]]
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert len(counted) == len({id(p) for p in counted}) == len(trainable)


def test_a_part_is_found_under_fsdps_and_checkpointings_wrappers():
    module = tiny_video_llm(lr_scales={"model.language_model.blocks.0": 0.5})
    wrapped = "model.language_model.blocks.0._fsdp_wrapped_module._checkpoint_wrapped_module.attn.weight"
    assert unwrapped_name(wrapped) == "model.language_model.blocks.0.attn.weight"
    assert (
        unwrapped_name("model.language_model.blocks.0._fsdp_wrapped_module")
        == "model.language_model.blocks.0"
    )
    assert module.lr_scale_of([wrapped]) == 0.5
    assert module.lr_scale_of(["model.language_model.blocks.1._fsdp_wrapped_module.attn.weight"]) == 1.0


def test_an_unknown_part_is_named_beside_the_modules_own_parts():
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    decoder = RegressionVideoDecoder(token_dim=16, image_size=16, patch_size=4, width=16, depth=1)
    module = TokenizerPretraining(tokenizer, decoder, lr_scales={"model.tokenizer": 0.5})
    with pytest.raises(
        ValueError, match=r"'model.tokenizer', which is not a part of TokenizerPretraining"
    ) as error:
        module.configure_optimizers()
    assert "tokenizer.frame_encoder" in str(error.value) and "model." not in str(error.value).split("(")[1]

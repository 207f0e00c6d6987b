import math

import pytest
import torch

from vtok_lit.core import WarmupCosineSchedule


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

"""WarmupMultiStepLR: known learning rates at known optimizer steps."""

import pytest
import torch

from sgdetr_hf.training.schedule import (
    build_warmup_multistep_scheduler,
    epochs_to_steps,
    warmup_multistep_factor,
)


def test_factor_at_known_steps():
    # QVHighlights: 45 warm-up steps from 0.001, milestones at epochs 100 and 125 with 56 steps per epoch.
    milestones = epochs_to_steps([100, 125], 56)
    assert milestones == [5600, 7000]

    def factor(step):
        return warmup_multistep_factor(step, 45, 0.001, milestones, 0.5)

    assert factor(0) == pytest.approx(0.001)
    assert factor(9) == pytest.approx(0.001 * 0.8 + 0.2)  # alpha = 9/45 = 0.2
    assert factor(44) == pytest.approx(0.001 / 45 + 44 / 45)
    assert factor(45) == 1.0
    assert factor(5599) == 1.0
    assert factor(5600) == 0.5
    assert factor(6999) == 0.5
    assert factor(7000) == 0.25
    assert factor(8400) == 0.25


def test_scheduler_learning_rates_follow_optimizer_steps():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=5e-4)
    scheduler = build_warmup_multistep_scheduler(
        optimizer, warmup_iters=4, warmup_factor=0.001, milestones=[6, 8], gamma=0.5
    )
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [
        0.001,
        0.25075,
        0.5005,
        0.75025,
        1,
        1,
        0.5,
        0.5,
        0.25,
        0.25,
    ]  # 0.001 (1 - s/4) + s/4, then halvings
    assert lrs == pytest.approx([5e-4 * f for f in expected])


def test_no_warmup_no_milestones_is_constant():
    assert [warmup_multistep_factor(s, 0, 0.001, [], 0.5) for s in (0, 10, 10_000)] == [1.0, 1.0, 1.0]

"""The paper's learning-rate schedule: WarmupMultiStepLR (detectron2 convention), stepped per optimizer step."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch


def warmup_multistep_factor(
    step: int, warmup_iters: int, warmup_factor: float, milestones: Sequence[int], gamma: float
) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps.

    Linear warm-up from ``warmup_factor`` at step 0 to 1 at step ``warmup_iters``, times
    ``gamma ** (number of milestones <= step)``; ``milestones`` are in optimizer steps.
    E.g. warm-up 45 from 0.001: step 0 -> 0.001, step 9 -> 0.2008, step 45 -> 1.
    """
    warmup = 1.0
    if step < warmup_iters:
        alpha = step / warmup_iters
        warmup = warmup_factor * (1.0 - alpha) + alpha
    return warmup * gamma ** bisect.bisect_right(milestones, step)


def epochs_to_steps(milestones_in_epochs: Sequence[int], steps_per_epoch: int) -> list[int]:
    """Milestones given in epochs (recipes) -> optimizer steps (the scheduler's unit)."""
    return [int(m) * steps_per_epoch for m in milestones_in_epochs]


def build_warmup_multistep_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_iters: int,
    warmup_factor: float,
    milestones: Sequence[int],
    gamma: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` implementing :func:`warmup_multistep_factor`; call ``step()`` after each optimizer step.

    ``milestones`` are in optimizer steps (see :func:`epochs_to_steps`).
    """
    milestones = list(milestones)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_multistep_factor(step, warmup_iters, warmup_factor, milestones, gamma),
    )

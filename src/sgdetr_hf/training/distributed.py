"""Accelerator construction and the process-group life cycle of a training or evaluation run."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

logger = logging.getLogger(__name__)


def resolve_mixed_precision(requested: str) -> str | None:
    """The ``mixed_precision`` argument for :class:`~accelerate.Accelerator`.

    ``"auto"`` returns ``None`` under ``accelerate launch`` (it exports ``ACCELERATE_MIXED_PRECISION``),
    so the launcher's ``--mixed_precision`` decides; elsewhere (``python``, ``torchrun``) it picks bf16
    on a GPU that supports it and fp32 otherwise. Any other value is used as given.
    """
    if requested != "auto":
        return requested
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return None
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def build_accelerator(
    output_dir: str | Path,
    mixed_precision: str = "auto",
    gradient_accumulation_steps: int = 1,
    seed: int = 0,
    log_with: str | None = "tensorboard",
) -> Accelerator:
    """An Accelerator for one run; raise if the launcher started processes accelerate cannot see.

    ``split_batches=True``: the DataLoader's batch is the global batch, split across processes, so a
    recipe's ``batch_size`` and its steps per epoch do not depend on the number of processes (and
    the scheduler steps once per optimizer step). The seedable sampler makes resume exact.
    """
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(mixed_precision),
        log_with=log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(
            split_batches=True, use_seedable_sampler=True, data_seed=seed
        ),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        # torchrun / accelerate launch --multi_gpu on a CPU-only machine without ACCELERATE_USE_CPU: every
        # process would silently train the whole model alone.
        raise RuntimeError(
            f"launched with WORLD_SIZE={launched} processes but accelerate sees 1 (no GPU?): every process "
            "would train alone. On CPU-only machines set ACCELERATE_USE_CPU=1, e.g. "
            "`ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 scripts/train.py ...`"
        )
    return accelerator


@contextlib.contextmanager
def process_group_teardown() -> Iterator[None]:
    """Destroy the default process group on the way out, also after an error.

    A multi-process run that exits with the group alive can abort in a C++ destructor
    ("terminate called without an active exception").
    """
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

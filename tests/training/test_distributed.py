"""Accelerator set-up: who decides mixed precision, and the guard against silently duplicated training."""

import pytest
from accelerate.state import AcceleratorState

from sgdetr_hf.training.distributed import build_accelerator, resolve_mixed_precision


def test_mixed_precision_auto_defers_to_accelerate_launch(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert (
        resolve_mixed_precision("auto") is None
    )  # Accelerator(mixed_precision=None) reads the launcher's value
    assert resolve_mixed_precision("no") == "no"  # an explicit recipe value wins
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert resolve_mixed_precision("auto") == "no"  # python / torchrun on a CPU-only machine


def test_several_launched_processes_that_accelerate_sees_as_one_are_refused(monkeypatch, tmp_path):
    # What plain `torchrun --nproc_per_node 2` gives on a CPU-only machine without ACCELERATE_USE_CPU.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    try:
        with pytest.raises(
            RuntimeError, match="WORLD_SIZE=2 processes but accelerate sees 1.*ACCELERATE_USE_CPU=1"
        ):
            build_accelerator(tmp_path, mixed_precision="no", log_with=None)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)

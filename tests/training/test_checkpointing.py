"""Crash-safe checkpoints: folder swaps, rotation, and a save/load round trip (atomic files: test_files.py)."""

import pytest
import torch
from accelerate.state import AcceleratorState

from sgdetr_hf.training.checkpointing import (
    TRAINER_STATE_NAME,
    CheckpointManager,
    TrainerState,
    recover_dir,
    replace_dir,
)
from sgdetr_hf.training.distributed import build_accelerator


@pytest.fixture
def accelerator(tmp_path):
    accelerator = build_accelerator(tmp_path, mixed_precision="no", log_with=None)
    yield accelerator
    AcceleratorState._reset_state(reset_partial_state=True)


def test_replace_dir_and_recovery_after_a_crash_between_the_renames(tmp_path):
    destination, staged = tmp_path / "best_model", tmp_path / ".staged"
    for folder, text in ((destination, "old"), (staged, "new")):
        folder.mkdir()
        (folder / "weights").write_text(text)
    replace_dir(staged, destination)
    assert (destination / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model"]

    # Crash after parking the old folder, before the new one moved in: recovery restores the old one.
    destination.rename(tmp_path / ".best_model.old")
    recover_dir(destination)
    assert (destination / "weights").read_text() == "new"
    # Crash after the new folder moved in, before the parked one was deleted: recovery drops the parked one.
    (tmp_path / ".best_model.old").mkdir()
    recover_dir(destination)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model"]


def test_trainer_state_round_trip_and_bad_file(tmp_path):
    state = TrainerState(epoch=3, batches_done=5, global_step=41, best_metric=12.5, best_step=40,
                         history=[{"step": 40, "eval": {"MR-full-mAP": 12.5}}])  # fmt: skip
    state.save(tmp_path / TRAINER_STATE_NAME)
    assert TrainerState.load(tmp_path / TRAINER_STATE_NAME) == state
    (tmp_path / "broken.json").write_text('{"epoch": 1, "unknown": 2}')
    with pytest.raises(ValueError, match="not a valid trainer_state.json"):
        TrainerState.load(tmp_path / "broken.json")


def test_save_rotate_and_restore_everything(accelerator, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    manager = CheckpointManager(accelerator, tmp_path, total_limit=2)

    def train_step():
        model(torch.ones(4, 3)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()

    for step in (1, 2, 3):
        train_step()
        saved = manager.save(TrainerState(epoch=0, batches_done=step, global_step=step))
    assert [p.name for p in manager.step_dirs()] == ["step_00000002", "step_00000003"]  # rotated
    assert (saved / "model.safetensors").is_file()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected_global_draw = torch.rand(3)

    # A crash mid-save leaves a .partial folder and maybe a step folder without trainer_state.json:
    # neither counts as a checkpoint, and recover() removes the partial one.
    (tmp_path / "checkpoints" / ".partial-step_00000004").mkdir()
    (tmp_path / "checkpoints" / "step_00000005").mkdir()
    manager.recover()
    assert manager.latest() == saved
    assert not (tmp_path / "checkpoints" / ".partial-step_00000004").exists()

    train_step()  # move weights, optimizer moments and the RNG away from the checkpoint
    torch.rand(5)
    state = manager.load(manager.latest())
    assert (state.epoch, state.batches_done, state.global_step) == (0, 3, 3)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name])
    assert torch.equal(torch.rand(3), expected_global_draw)

    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        manager.load(tmp_path / "checkpoints" / "step_00000005")

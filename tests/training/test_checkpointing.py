"""Crash-safe checkpoints: folder swaps, rotation, and a save/load round trip (atomic files: test_files.py)."""

import logging

import pytest
import torch
from accelerate.state import AcceleratorState

from sgdetr_hf.training.checkpointing import (
    TRAINER_STATE_NAME,
    CheckpointManager,
    InexactResumeError,
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


@pytest.fixture
def saved_checkpoints(accelerator, tmp_path):
    """Two checkpoints of a tiny model, and the manager that wrote them."""
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    manager = CheckpointManager(accelerator, tmp_path, total_limit=2)
    first = manager.save(TrainerState(global_step=1))
    torch.rand(7)  # the second checkpoint holds other random states
    second = manager.save(TrainerState(global_step=2))
    return manager, model, first, second


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda rng, other: rng.write_bytes(b"\x80\x04 not a pickle"), "is not the file saved with this checkpoint"),
        (lambda rng, other: rng.write_bytes(other.read_bytes()), "is not the file saved with this checkpoint"),
        (lambda rng, other: rng.unlink(), "random_states_0.pkl is missing"),
    ],
    ids=["garbage", "another-checkpoints-states", "missing"],
)  # fmt: skip
def test_a_damaged_rng_file_refuses_the_resume_unless_allowed(saved_checkpoints, damage, message, caplog):
    manager, model, first, second = saved_checkpoints
    damage(second / "random_states_0.pkl", first / "random_states_0.pkl")
    # before: accelerate caught the failure, logged it at INFO and resumed with the current random state
    with pytest.raises(InexactResumeError, match=message) as error:
        manager.load(second)
    assert "--allow-inexact-resume" in str(error.value) and "step_00000001" in str(error.value)
    with caplog.at_level(logging.WARNING, logger="sgdetr_hf.training.checkpointing"):
        assert manager.load(second, allow_inexact_resume=True).global_step == 2
    assert "cannot resume" in caplog.text and "--allow-inexact-resume" in caplog.text
    assert manager.load(first).global_step == 1  # an intact checkpoint still resumes


def test_an_unreadable_rng_file_is_refused_without_a_recorded_checksum(saved_checkpoints):
    manager, model, first, second = saved_checkpoints
    state = TrainerState.load(second / TRAINER_STATE_NAME)
    assert set(state.rng_state_sha256) == {"random_states_0.pkl"}
    state.rng_state_sha256 = {}  # a checkpoint written before checksums were recorded
    state.save(second / TRAINER_STATE_NAME)
    assert manager.load(second).global_step == 2  # intact: resumes
    (second / "random_states_0.pkl").write_bytes(b"tampered")
    with pytest.raises(InexactResumeError, match="random_states_0.pkl cannot be read as random states"):
        manager.load(second)

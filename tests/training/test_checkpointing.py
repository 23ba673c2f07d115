"""Crash-safe checkpoints: folder swaps, rotation, and a save/load round trip (atomic files: test_files.py)."""

import json
import logging
import re

import pytest
import torch
from accelerate.state import AcceleratorState

from pipeline_testing import damage_file
from sgdetr_hf.training.checkpointing import (
    TRAINER_STATE_NAME,
    CheckpointManager,
    InexactResumeError,
    TrainerState,
    recover_dir,
    replace_dir,
)
from sgdetr_hf.training.distributed import build_accelerator
from sgdetr_hf.training.errors import DamagedCheckpointError, RunInputError


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


def test_trainer_state_fields_of_the_wrong_type_are_named(tmp_path):
    """before: "epoch": "x" loaded, and the loop failed with a TypeError deep inside"""
    TrainerState(epoch=1, global_step=6).save(tmp_path / TRAINER_STATE_NAME)
    for field, value, expected in [
        ("epoch", "x", "'epoch' must be a count >= 0, got 'x'"),
        ("global_step", -1, "'global_step' must be a count >= 0"),
        ("batches_done", True, "'batches_done' must be a count >= 0"),
        ("best_metric", "high", "'best_metric' must be a number or null"),
        ("history", {"step": 1}, "'history' must be a list of objects"),
        ("files", {"model.safetensors": "big"}, "'files' must be an object of file names to sizes"),
    ]:
        values = json.loads((tmp_path / TRAINER_STATE_NAME).read_text())
        (tmp_path / "bad.json").write_text(json.dumps({**values, field: value}))
        with pytest.raises(
            DamagedCheckpointError, match=f"not a valid trainer_state.json: {re.escape(expected)}"
        ):
            TrainerState.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DamagedCheckpointError, match="expected a JSON object"):
        TrainerState.load(tmp_path / "bad.json")


@pytest.fixture
def trained_checkpoints(accelerator, tmp_path):
    """Two checkpoints of a model with an optimizer and a scheduler (the files a training run's have)."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    manager = CheckpointManager(accelerator, tmp_path, total_limit=2)
    first = manager.save(TrainerState(global_step=1))
    second = manager.save(TrainerState(global_step=2))
    return manager, first, second


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: damage_file(c / "model.safetensors", "truncated"), r"model.safetensors is \d+ bytes, not the \d+ saved"),
        (lambda c: (c / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda c: damage_file(c / "model.safetensors", "bad-header"), "model.safetensors is not a readable safetensors file"),
        (lambda c: damage_file(c / "optimizer.bin", "zero-byte"), r"optimizer.bin is 0 bytes, not the \d+ saved"),
        (lambda c: (c / "scheduler.bin").unlink(), "scheduler.bin is missing"),
        (lambda c: (c / "optimizer.bin").write_bytes(b"x" * (c / "optimizer.bin").stat().st_size), "optimizer.bin is not a readable torch.save file"),
    ],
    ids=["truncated-model", "deleted-model", "bad-header", "empty-optimizer", "missing-scheduler", "same-size-garbage"],
)  # fmt: skip
def test_a_damaged_checkpoint_file_is_named_before_accelerate_reads_it(trained_checkpoints, damage, message):
    """before: SafetensorError (invalid header length), FileNotFoundError for pytorch_model.bin (a file never
    written), a bare EOFError, FileNotFoundError; never bypassed by allow_inexact_resume."""
    manager, first, second = trained_checkpoints
    damage(second)
    for allow in (False, True):
        with pytest.raises(DamagedCheckpointError, match=message) as error:
            manager.load(second, allow_inexact_resume=allow)
        assert str(error.value).startswith(f"cannot resume {second}: the checkpoint is damaged")
        assert f"another checkpoint of the run (step_00000001; e.g. --resume {first})" in str(error.value)
    assert manager.load(first).global_step == 1


def test_a_checkpoint_without_the_file_record_still_checks_accelerate_s_files(trained_checkpoints):
    manager, first, second = trained_checkpoints
    state = TrainerState.load(second / TRAINER_STATE_NAME)
    assert set(state.files) == {"model.safetensors", "optimizer.bin", "scheduler.bin"}
    state.files = {}  # written before the sizes were recorded
    state.save(second / TRAINER_STATE_NAME)
    assert manager.load(second).global_step == 2
    damage_file(second / "optimizer.bin", "zero-byte")
    with pytest.raises(DamagedCheckpointError, match="optimizer.bin is empty"):
        manager.load(second)


def test_the_checkpoints_folder_is_not_a_checkpoint_and_the_message_lists_them(trained_checkpoints):
    manager, first, second = trained_checkpoints
    with pytest.raises(RunInputError, match=r"checkpoints is not a complete training checkpoint .*"
                       r"it holds the checkpoints \['step_00000001', 'step_00000002'\]"):  # fmt: skip
        manager.load(manager.root)

"""Crash-safe checkpoints: resumable training states and the selected model folder.

A resumable state is ``<output_dir>/checkpoints/step_<global step>/``: accelerate's ``save_state``
files (model safetensors, optimizer, scheduler, sampler, one RNG file per process) plus our
``trainer_state.json`` (epoch, batches consumed in that epoch, global step, history). Nothing else holds
random state: the objective is stateless and the collator's draws are a function of (seed, epoch, sample).
A checkpoint is written into a ``.partial-*`` folder and renamed into place only when complete, and
``trainer_state.json`` is written last, so a crash at any moment leaves either a complete checkpoint or none.
(``trainer_state.json`` stays our own JSON file rather than an ``accelerator.register_for_checkpointing``
object, which accelerate would pickle and which could not mark the checkpoint complete.)

``trainer_state.json`` also records the run's resolved recipe (a resume with other settings is refused,
:func:`~sgdetr_hf.training.recipe.recipe_differences`) and the size of every other file of the checkpoint, so
that a file missing, truncated or emptied is a :class:`DamagedCheckpointError` naming it before accelerate
reads anything (accelerate would fail on it with a bare ``EOFError``, or look for ``pytorch_model.bin``).

Exact resume needs the RNG files: accelerate's ``load_state`` catches any failure to read them, logs it at
INFO level and carries on with the current random state, so a damaged or replaced ``random_states_<rank>.pkl``
would silently give another run. ``trainer_state.json`` records their SHA-256 at save time, and
:meth:`CheckpointManager.load` checks them (and that they load as random states) before accelerate does:
a problem is an :class:`InexactResumeError` unless ``allow_inexact_resume`` (``--allow-inexact-resume``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from ..files import atomic_write_json, atomic_write_text
from .errors import DamagedCheckpointError, RunInputError

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
STEP_DIR_PATTERN = re.compile(r"^step_(\d+)$")
#: accelerate's per-process RNG file (``RNG_STATE_NAME``) and the states it must hold to restore the run
RNG_STATE_FILE = "random_states_{rank}.pkl"
RNG_STATE_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")
#: what the trainer's accelerator writes besides the RNG files (one model with safetensors, one optimizer, one
#: scheduler): checked in checkpoints written before the files' sizes were recorded
ACCELERATE_STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin")


class InexactResumeError(RunInputError):
    """A checkpoint whose random states cannot be restored: resuming it would not continue the run exactly."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rng_state_problem(path: Path, recorded_sha256: str | None) -> str | None:
    """Why accelerate could not restore the RNG file ``path`` (or restore other states than were saved),
    or ``None``. Read as accelerate reads it: ``torch.load(weights_only=True)``, so nothing is executed."""
    from accelerate.utils import load

    if not path.is_file():
        return f"{path.name} is missing"
    if recorded_sha256 is not None and _sha256(path) != recorded_sha256:
        return f"{path.name} is not the file saved with this checkpoint (its SHA-256 differs from {TRAINER_STATE_NAME}'s)"
    try:
        states = load(path)
    except Exception as error:  # noqa: BLE001 (any failure is what accelerate would swallow)
        return f"{path.name} cannot be read as random states ({type(error).__name__}: {str(error)[:200]})"
    missing = [key for key in RNG_STATE_KEYS if not isinstance(states, dict) or key not in states]
    return f"{path.name} lacks the random states {missing}" if missing else None


def replace_dir(staged: Path, destination: Path) -> None:
    """Move the complete folder ``staged`` to ``destination``, replacing an existing one.

    A folder cannot be swapped in one ``rename``: the old one is first parked as ``.<name>.old``;
    :func:`recover_dir` puts it back if a crash happened between the two renames.
    """
    parked = destination.with_name(f".{destination.name}.old")
    if parked.exists():
        shutil.rmtree(parked)
    if destination.exists():
        os.replace(destination, parked)
    os.replace(staged, destination)
    if parked.exists():
        shutil.rmtree(parked)


def recover_dir(destination: Path) -> None:
    """Finish a :func:`replace_dir` that a crash interrupted: put the parked folder back, or drop it."""
    parked = destination.with_name(f".{destination.name}.old")
    if parked.exists():
        if destination.exists():
            shutil.rmtree(parked)
        else:
            os.replace(parked, destination)


@dataclasses.dataclass
class TrainerState:
    """Loop position and history, saved next to accelerate's state.

    ``epoch`` is the epoch in progress (0-based) and ``batches_done`` the training DataLoader
    batches of it already consumed, so resuming skips exactly those. ``history`` holds one record
    per log step (``{"step", "epoch", "lr", "loss", ...}``) and per evaluation (``{"step", "epoch",
    "eval": {brief metrics}}``).
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: RNG file name -> SHA-256 at save time (empty in checkpoints written before it was recorded)
    rng_state_sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the run's resolved recipe (``TrainingRecipe.to_dict()``; empty in checkpoints written before it was
    #: recorded): a resume compares its own recipe with it
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: every other file of the checkpoint (path relative to it) -> its size in bytes at save time (empty in
    #: checkpoints written before it was recorded); the RNG files have their SHA-256 instead
    files: dict[str, int] = dataclasses.field(default_factory=dict)
    #: the loss terms' running sums of the logging interval in progress, one object per process, over
    #: ``loss_steps`` steps: a resume continues that interval, so it logs what the uninterrupted run logs
    loss_sums: list[dict[str, float]] = dataclasses.field(default_factory=list)
    loss_steps: int = 0
    #: :func:`~sgdetr_hf.training.data.dataset_fingerprint` of the run's dataset folder (None for a Hub dataset
    #: and in checkpoints written before it was recorded): a resume accepts that folder moved elsewhere
    dataset_fingerprint: str | None = None

    @classmethod
    def load(cls, path: Path) -> TrainerState:
        """Read ``path``; a file that is not JSON or holds a field of the wrong type is a
        :class:`DamagedCheckpointError` naming the field (the loop would fail on it much later)."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DamagedCheckpointError(f"{path} is not a valid {TRAINER_STATE_NAME}: {error}") from error
        problem = _trainer_state_problem(values)
        if problem is not None:
            raise DamagedCheckpointError(f"{path} is not a valid {TRAINER_STATE_NAME}: {problem}")
        return cls(**values)

    def save(self, path: Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _trainer_state_problem(values: Any) -> str | None:
    """What is wrong with the JSON ``values`` of a ``trainer_state.json``, or ``None``."""
    if not isinstance(values, dict):
        return f"expected a JSON object, got {type(values).__name__}"
    fields = {field.name for field in dataclasses.fields(TrainerState)}
    unknown = sorted(set(values) - fields)
    if unknown:
        return f"unknown field(s) {unknown}"
    checks = {
        "epoch": (_is_count, "a count >= 0"),
        "batches_done": (_is_count, "a count >= 0"),
        "global_step": (_is_count, "a count >= 0"),
        "best_metric": (lambda v: v is None or _is_number(v), "a number or null"),
        "best_step": (lambda v: v is None or _is_count(v), "a count >= 0 or null"),
        "history": (
            lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
            "a list of objects",
        ),
        "rng_state_sha256": (
            lambda v: isinstance(v, dict) and all(isinstance(h, str) for h in v.values()),
            "an object of file names to SHA-256 strings",
        ),
        "recipe": (lambda v: isinstance(v, dict), "an object (the recipe)"),
        "files": (
            lambda v: isinstance(v, dict) and all(_is_count(size) for size in v.values()),
            "an object of file names to sizes",
        ),
        "loss_sums": (
            lambda v: (
                isinstance(v, list)
                and all(isinstance(s, dict) and all(map(_is_number, s.values())) for s in v)
            ),
            "a list of objects of loss names to numbers",
        ),
        "loss_steps": (_is_count, "a count >= 0"),
        "dataset_fingerprint": (lambda v: v is None or isinstance(v, str), "a SHA-256 string or null"),
    }
    for key, (valid, expected) in checks.items():
        if key in values and not valid(values[key]):
            return f"{key!r} must be {expected}, got {values[key]!r}"[:300]
    return None


def complete_step_dirs(root: Path) -> list[Path]:
    """The complete checkpoints in ``root`` (``step_*`` folders with a ``trainer_state.json``), oldest first."""
    if not root.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := STEP_DIR_PATTERN.match(path.name)) and (path / TRAINER_STATE_NAME).is_file()
    ]
    return [path for _, path in sorted(found)]


def _state_files(folder: Path) -> dict[str, int]:
    """The size of every file of a checkpoint folder but its RNG files and ``trainer_state.json``."""
    rng = re.compile(RNG_STATE_FILE.format(rank=r"\d+").replace(".", r"\."))
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != TRAINER_STATE_NAME and not rng.fullmatch(path.name)
    }


def _content_problem(file: Path) -> str | None:
    """Why a checkpoint file of the same size as saved still cannot be read, from its cheap-to-read parts:
    a safetensors header, the zip directory at the end of a ``torch.save`` file; or ``None``."""
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt"):  # parses the header and checks the data's extent
                pass
        except (SafetensorError, OSError) as error:
            return f"{file.name} is not a readable safetensors file ({error})"
    elif file.suffix == ".bin" and not zipfile.is_zipfile(file):  # torch.save writes zip archives
        return f"{file.name} is not a readable torch.save file (no zip directory)"
    return None


def state_file_problems(path: Path, state: TrainerState) -> list[str]:
    """The files of checkpoint ``path`` that are missing, not the size saved in ``state.files`` or unreadable
    (in a checkpoint that predates the record: accelerate's files that are missing, empty or unreadable)."""
    expected = state.files or dict.fromkeys(ACCELERATE_STATE_FILES)
    problems = []
    for name, size in expected.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif size is not None and file.stat().st_size != size:
            problems.append(
                f"{name} is {file.stat().st_size} bytes, not the {size} saved (truncated or replaced)"
            )
        elif size is None and file.stat().st_size == 0:
            problems.append(f"{name} is empty")
        elif (problem := _content_problem(file)) is not None:
            problems.append(problem)
    return problems


class CheckpointManager:
    """Save, list, rotate and restore resumable states under ``<output_dir>/checkpoints``.

    Every method is collective: all processes call it (accelerate writes one RNG file per rank).

    Args:
        accelerator: the run's Accelerator.
        output_dir: the run folder.
        total_limit: complete checkpoints kept; older ones are deleted after each save.
    """

    def __init__(self, accelerator, output_dir: str | Path, total_limit: int = 2):
        self.accelerator = accelerator
        self.root = Path(output_dir) / "checkpoints"
        self.total_limit = total_limit

    def step_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a folder without trainer_state.json is not one)."""
        return complete_step_dirs(self.root)

    def recover(self) -> None:
        """Finish what a crash interrupted: restore parked step folders, drop partial ones. Collective."""
        if self.accelerator.is_main_process and self.root.is_dir():
            for path in self.root.iterdir():
                if path.name.startswith(".partial-"):
                    shutil.rmtree(path)
                elif path.name.startswith(".step_") and path.name.endswith(".old"):
                    recover_dir(self.root / path.name[1 : -len(".old")])
        self.accelerator.wait_for_everyone()

    def latest(self) -> Path | None:
        dirs = self.step_dirs()
        return dirs[-1] if dirs else None

    def save(self, state: TrainerState) -> Path:
        """Write the accelerator state and ``state`` as ``checkpoints/step_<global_step>``; return that path."""
        accelerator = self.accelerator
        # A step checkpoint may coincide with the end of an epoch: the newer one (after the evaluation,
        # whose data loader also draws from the RNG) replaces it.
        final = self.root / f"step_{state.global_step:08d}"
        staged = self.root / f".partial-{final.name}"
        if accelerator.is_main_process:
            if staged.exists():  # left over by a crash
                shutil.rmtree(staged)
            staged.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(output_dir=str(staged), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state.rng_state_sha256 = {
                path.name: _sha256(path) for path in sorted(staged.glob(RNG_STATE_FILE.format(rank="*")))
            }
            state.files = _state_files(staged)
            state.save(staged / TRAINER_STATE_NAME)
            replace_dir(staged, final)
            for old in self.step_dirs()[: -self.total_limit]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
        logger.info("saved training state to %s", final)
        return final

    def way_on(self, path: Path) -> str:
        """What to do instead of resuming the checkpoint ``path``: another checkpoint of its run, or a fresh run."""
        others = [p.name for p in complete_step_dirs(path.parent) if p.name != path.name]
        fresh = "start a fresh run in another --output_dir"
        if not others:
            return fresh[0].upper() + fresh[1:]
        return (
            f"Resume from another checkpoint of the run ({', '.join(others)}; e.g. --resume "
            f"{path.parent / others[-1]}) or {fresh}"
        )

    def read(self, path: str | Path) -> TrainerState:
        """The training position saved in checkpoint ``path``, checked; nothing is restored yet.

        Raises:
            RunInputError: ``path`` is no complete checkpoint (e.g. the ``checkpoints`` folder itself).
            DamagedCheckpointError: its ``trainer_state.json`` is unreadable or holds a wrong field.
        """
        path = Path(path)
        if not (path / TRAINER_STATE_NAME).is_file():
            inside = [p.name for p in complete_step_dirs(path)]
            hint = (
                f"it holds the checkpoints {inside}: pass one of them, or --resume alone for the newest one of "
                "--output_dir"
                if inside
                else f"complete ones are the step_* folders under {self.root}"
            )
            raise RunInputError(
                f"{path} is not a complete training checkpoint (no {TRAINER_STATE_NAME}); {hint}"
            )
        try:
            return TrainerState.load(path / TRAINER_STATE_NAME)
        except DamagedCheckpointError as error:
            raise DamagedCheckpointError(f"cannot resume {path}: {error}. {self.way_on(path)}") from None

    def restore(self, path: str | Path, state: TrainerState, allow_inexact_resume: bool = False) -> None:
        """Restore model, optimizer, scheduler, sampler and RNG states from checkpoint ``path`` (whose
        position :meth:`read` gave ``state``).

        Every file is checked first, on every process (so that all take the same decision): one that is
        missing, not the size saved or unreadable is a :class:`DamagedCheckpointError` (never bypassed by
        ``allow_inexact_resume``); an RNG file that is missing,
        unreadable, or not the file saved with the checkpoint raises :class:`InexactResumeError`, or only
        warns when ``allow_inexact_resume``.
        """
        path = Path(path)
        damaged = state_file_problems(path, state)
        if damaged:
            raise DamagedCheckpointError(
                f"cannot resume {path}: the checkpoint is damaged: {'; '.join(damaged)}. {self.way_on(path)}"
            )
        names = [RNG_STATE_FILE.format(rank=rank) for rank in range(self.accelerator.num_processes)]
        problems = [
            problem
            for name in names
            if (problem := rng_state_problem(path / name, state.rng_state_sha256.get(name))) is not None
        ]
        if problems:
            message = (
                f"cannot resume {path} exactly: {'; '.join(problems)}. accelerate would skip the random "
                "states and the run would go on with other random draws (dropout, noise, sampling) than the "
                "uninterrupted run"
            )
            if not allow_inexact_resume:
                others = [p.name for p in complete_step_dirs(path.parent) if p.name != path.name]
                raise InexactResumeError(
                    f"{message}. Restore the file, resume from another checkpoint"
                    f"{f' ({others})' if others else ''}, or pass --allow-inexact-resume to continue anyway"
                )
            logger.warning("%s; continuing as --allow-inexact-resume asks", message)
        self.accelerator.load_state(str(path))

    def load(self, path: str | Path, allow_inexact_resume: bool = False) -> TrainerState:
        """:meth:`read` then :meth:`restore` checkpoint ``path``; return its position."""
        state = self.read(path)
        self.restore(path, state, allow_inexact_resume=allow_inexact_resume)
        return state


def save_model_dir(
    accelerator,
    model,
    destination: Path,
    metrics: dict[str, Any] | None = None,
    processor=None,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Save the unwrapped model with ``save_pretrained`` (safetensors + config) as ``destination``.

    Also the processor (when one is configured), ``eval_results.json`` (``metrics``) and
    ``extra_files`` (``{name: text}``). The folder is staged and swapped in whole by the main
    process, so readers never see a half-written model. Collective (all processes call it).
    """
    destination = Path(destination)
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP / DeepSpeed
    if accelerator.is_main_process:
        staged = destination.with_name(f".{destination.name}.partial")
        if staged.exists():
            shutil.rmtree(staged)
        accelerator.unwrap_model(model).save_pretrained(staged, state_dict=state_dict)
        if processor is not None:
            processor.save_pretrained(staged)
        if metrics is not None:
            atomic_write_json(staged / "eval_results.json", metrics)
        for name, text in (extra_files or {}).items():
            atomic_write_text(staged / name, text)
        replace_dir(staged, destination)
        logger.info("saved model to %s", destination)
    accelerator.wait_for_everyone()

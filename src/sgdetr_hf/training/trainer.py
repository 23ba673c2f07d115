"""The Accelerate training loop of SG-DETR (paper §4.4): :func:`train` runs a :class:`Trainer` for a recipe.

Data flow: ``datasets`` folder or Hub repo -> :class:`~sgdetr_hf.data.MomentRetrievalDataset` ->
:class:`~sgdetr_hf.data.MomentRetrievalCollator` -> ``model(..., labels)`` -> loss -> AdamW step with
the WarmupMultiStepLR schedule. Every ``eval_every_epochs`` (or ``eval_every_steps``) the model predicts
the evaluation split, the metrics module scores it, and the best model (by the recipe's main metric) is
saved. Training lasts ``epochs``, or ``max_steps`` optimizer steps when set.

Processes and gradient accumulation: the DataLoader batch is the recipe's global batch of one optimizer
step, split across processes (``split_batches``), and each process splits its share into
``gradient_accumulation_steps`` micro-batches. Every forward gets the global batch's context
(:mod:`~sgdetr_hf.training.global_batch`: its negative pairs, alignment pool and loss normalisers), so its
loss is exactly its share of the global batch's loss: W processes x A micro-batches make the same updates as
one process with the whole batch (up to floating-point order, and dropout, whose random streams are per
process). Resume is exact: model, optimizer, scheduler, sampler and RNG states come from the
checkpoint, and the interrupted epoch skips the batches already consumed (``skip_first_batches``): the
collator's random choices are a function of (seed, epoch, sample), so skipped batches need no replay. So a
resume refuses what would make it another run: a recipe other than the one the checkpoint records (but for
:data:`~sgdetr_hf.training.recipe.RESUME_FREE_KEYS`, and a ``dataset_path`` whose files are the run's: a moved
folder), a damaged checkpoint, a position that does not fit the
data. ``max_steps`` is a hard stop. What a run is given that cannot work is a
:class:`~sgdetr_hf.training.errors.RunInputError` naming it (``sgdetr train`` prints it on one line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from huggingface_hub.errors import HFValidationError
from tqdm.auto import tqdm

from ..configuration_sgdetr import SGDetrConfig
from ..cpu_memory import retain_freed_memory
from ..modeling_sgdetr import SGDetrForMomentRetrieval
from ..processing_sgdetr import SGDetrProcessor
from ..visualization import plot_learning_curves
from .checkpointing import CheckpointManager, TrainerState, recover_dir, save_model_dir
from .data import (
    build_collator,
    check_disjoint_videos,
    check_matches_data,
    dataset_fingerprint,
    dataset_properties,
    load_split,
)
from .distributed import build_accelerator
from .errors import DamagedCheckpointError, RecipeMismatchError, RunInputError, TrainingDivergedError
from .evaluation import evaluate_predictions, predict, references_of
from .global_batch import build_batch_contexts, split_micro_batches
from .recipe import TrainingRecipe, recipe_differences, save_recipe
from .schedule import build_warmup_multistep_scheduler, epochs_to_steps

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingResult:
    """What a finished run produced."""

    output_dir: Path
    model_dir: Path  # the selected model: best_model (select_best) or final_model
    metrics: dict[str, Any] | None  # the evaluation of that model, None when never evaluated
    global_step: int


# -------------------------------------------------------------------------------------------- model
def missing_source(key: str, value: str) -> RunInputError | None:
    """The error for a recipe's model or processor source (``key``: ``init_from``, ``processor_path``) that
    is a local path that does not exist, or ``None`` (a folder, or possibly a Hub id: owner/name or name).

    Without it, Hugging Face reads "/nonexistent" as a malformed Hub id ("Repo id must be in the form ...").
    """
    if Path(value).expanduser().exists():
        return None
    if Path(value).is_absolute() or value.startswith((".", "~")) or value.count("/") > 1:
        return RunInputError(f"{key} {value!r} does not exist (a local folder, or a Hub repo id owner/name)")
    return None


def build_model(recipe: TrainingRecipe, data_properties: dict[str, Any]) -> SGDetrForMomentRetrieval:
    """The model of the recipe: fresh, or from ``init_from`` (fine-tuning), with its config overrides.

    Feature widths and clip length come from the data; a recipe value that contradicts them is an error.

    Raises:
        RunInputError: the model section contradicts the data or is no valid config, or ``init_from`` does
            not exist or cannot be read (the loader's reason included).
        CheckpointError: ``init_from`` is no folder of this model's weights (what it lacks, named).
    """
    check_matches_data(
        recipe.model, data_properties, "the recipe's model section", advice=": drop those model keys"
    )
    overrides = {**recipe.model, **data_properties}
    if recipe.init_from:
        if (error := missing_source("init_from", recipe.init_from)) is not None:
            raise error
        logger.info("initialising every weight from %s", recipe.init_from)
        try:
            return SGDetrForMomentRetrieval.from_pretrained(
                recipe.init_from, allow_missing_weights=recipe.allow_missing_weights, **overrides
            )
        except OSError as error:  # CheckpointError already names the folder and what it lacks
            raise RunInputError(
                f"init_from {recipe.init_from!r} cannot initialise the model: {error}"
            ) from error
    try:
        config = SGDetrConfig(**overrides)
    except ValueError as error:  # the config's own checks, naming the key
        raise RunInputError(
            f"the recipe's model section (model.<key>) is not a valid config: {error}"
        ) from error
    return SGDetrForMomentRetrieval(config)


def _load_processor(recipe: TrainingRecipe) -> SGDetrProcessor:
    """The processor of ``recipe.processor_path``, with the recipe's query-length cap."""
    if (error := missing_source("processor_path", recipe.processor_path)) is not None:
        raise error
    try:
        processor = SGDetrProcessor.from_pretrained(recipe.processor_path)
    except (OSError, HFValidationError) as error:  # CheckpointError already names the folder and its lack
        raise RunInputError(
            f"processor_path {recipe.processor_path!r} gives no processor: {error}"
        ) from error
    processor.max_query_length = recipe.max_query_tokens
    return processor


# --------------------------------------------------------------------------------------------- loop
class _LossMeter:
    """Running sums of the loss terms over a logging interval.

    A forward's loss (and each term) is its share of the global batch's, so a step's value is the sum over
    its micro-batches and processes; :meth:`read` gives the mean over the interval's steps.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self.steps = 0

    def add(self, loss: torch.Tensor, loss_dict: dict[str, torch.Tensor]) -> None:
        """Add one forward's terms. Detached device tensors: no host synchronisation per batch."""
        for name, value in {"loss": loss, **loss_dict}.items():
            self.sums[name] = self.sums[name].to(value.device) + value.detach().float()

    def end_step(self) -> None:
        self.steps += 1

    def read(self) -> dict[str, float]:
        """Each term of the global batch, averaged over the interval's steps (collective); resets the meter."""
        local = {name: (total / max(self.steps, 1)).item() for name, total in self.sums.items()}
        per_process = gather_object([local])
        names = sorted({name for values in per_process for name in values})
        self.sums.clear()
        self.steps = 0
        return {name: sum(v.get(name, 0.0) for v in per_process) for name in names}

    def save(self, state: TrainerState) -> None:
        """Record the interval in progress in ``state``: every process's sums (collective)."""
        local = {name: total.item() for name, total in self.sums.items()}  # float32 values: exact in JSON
        state.loss_sums, state.loss_steps = gather_object([local]), self.steps

    def restore(self, state: TrainerState, process_index: int, num_processes: int) -> None:
        """Continue the interval that ``state`` recorded. Process p takes the sums of the processes p, p + W,
        ... of the saved run, so that :meth:`read` counts each once whatever the number of processes W."""
        self.sums.clear()
        for sums in state.loss_sums[process_index::num_processes]:
            for name, value in sums.items():
                self.sums[name] = self.sums[name] + value
        self.steps = state.loss_steps


def _oom_hint(recipe: TrainingRecipe, num_processes: int) -> str:
    per_process = recipe.micro_batch_size // num_processes
    return (
        f"out of GPU memory with {per_process} samples per process and forward pass (batch_size="
        f"{recipe.batch_size}, gradient_accumulation_steps={recipe.gradient_accumulation_steps}, "
        f"{num_processes} process(es)). Keep the global batch and raise --gradient_accumulation_steps "
        f"(e.g. {recipe.gradient_accumulation_steps * 2}), or lower --batch_size (changes the recipe), "
        "or use --mixed_precision bf16"
    )


class Trainer:
    """One training run: everything prepared by accelerate, the loop, evaluation and checkpoints.

    Build it on every process of the launch (the constructor and the methods are collective), then call
    :meth:`resume` (optional) and :meth:`run`.

    Files under ``recipe.output_dir``: ``recipe.yaml`` (the resolved recipe), ``checkpoints/step_*``
    (resumable states), ``best_model/`` and ``final_model/`` (``save_pretrained`` folders with
    ``eval_results.json`` and ``training_recipe.yaml``), ``logs/`` (tensorboard) and
    ``learning_curves.png``.
    """

    def __init__(self, recipe: TrainingRecipe):
        self.recipe = recipe
        self.output_dir = Path(recipe.output_dir)
        # Gradient accumulation is the trainer's own (_train_step): accelerate's would divide each
        # micro-batch's loss by the steps, and its sync points follow the DataLoader's batches.
        self.accelerator = accelerator = build_accelerator(
            self.output_dir, recipe.mixed_precision, 1, recipe.seed
        )
        if recipe.micro_batch_size % accelerator.num_processes:
            raise RunInputError(
                f"batch_size / gradient_accumulation_steps = {recipe.micro_batch_size} samples per forward "
                f"pass cannot be split evenly over {accelerator.num_processes} processes"
            )
        if accelerator.device.type == "cpu" and recipe.retain_cpu_memory and retain_freed_memory():
            logger.info("CPU run: freed host memory is kept for reuse (recipe key retain_cpu_memory)")
        set_seed(recipe.seed)
        with accelerator.main_process_first():  # the first load writes the datasets cache
            self.train_set = load_split(recipe, recipe.train_split, recipe.max_train_samples)
            self.eval_set = (
                load_split(recipe, recipe.eval_split, recipe.max_eval_samples) if recipe.eval_split else None
            )
        if self.eval_set is not None:
            check_disjoint_videos(recipe, self.train_set, self.eval_set)
        if len(self.train_set) < recipe.batch_size:
            raise RunInputError(
                f"the training split has {len(self.train_set)} samples, fewer than one batch of "
                f"{recipe.batch_size} (training drops incomplete batches): lower --batch_size"
            )
        model = build_model(recipe, dataset_properties(self.train_set))
        if recipe.torch_compile:
            model.compile()  # in place: parameter names, checkpoints and save_pretrained are unchanged
        self.collator = build_collator(model.config, recipe.seed, recipe.max_query_tokens)
        # Saved next to the model so that the folder also serves raw videos (pipeline, Space), with the
        # query-length cap of the training data: the model then sees at inference what it was trained on.
        self.processor = _load_processor(recipe) if recipe.processor_path else None
        loader_options = {"num_workers": recipe.num_workers, "pin_memory": torch.cuda.is_available()}
        # One batch per optimizer step (split into micro-batches by _train_step). drop_last: every step sees
        # the recipe's batch, and in-batch negative pairs need 2+ samples.
        train_loader = torch.utils.data.DataLoader(
            self.train_set, recipe.batch_size, shuffle=True, drop_last=True, collate_fn=self.collator,
            **loader_options,
        )  # fmt: skip
        self.steps_per_epoch = len(train_loader)
        self.total_steps = recipe.max_steps or self.steps_per_epoch * recipe.epochs
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)  # the last one may be cut short
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=recipe.learning_rate,
            betas=(recipe.adam_beta1, recipe.adam_beta2),
            eps=recipe.adam_epsilon,
            weight_decay=recipe.weight_decay,
            fused=True,  # one kernel over all parameters, on CPU and GPU, instead of ~10 small ops per tensor
        )
        milestones = epochs_to_steps(recipe.milestones, self.steps_per_epoch)
        scheduler = build_warmup_multistep_scheduler(
            optimizer, recipe.warmup_iters, recipe.warmup_factor, milestones, recipe.gamma
        )
        self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
            model, optimizer, train_loader, scheduler
        )
        self.eval_loader = self.references = None
        if self.eval_set is not None:
            self.eval_loader = accelerator.prepare(
                torch.utils.data.DataLoader(
                    self.eval_set,
                    recipe.micro_batch_size,
                    collate_fn=build_collator(model.config, recipe.seed, recipe.max_query_tokens),
                    **loader_options,
                )  # fmt: skip
            )
            self.references = references_of(self.eval_set) if accelerator.is_main_process else None
        self.checkpoints = CheckpointManager(accelerator, self.output_dir, recipe.checkpoints_total_limit)
        self.checkpoints.recover()
        self.state = TrainerState(recipe=recipe.to_dict())
        self.meter = _LossMeter()
        self.best_dir, self.final_dir = self.output_dir / "best_model", self.output_dir / "final_model"
        if accelerator.is_main_process:
            recover_dir(self.best_dir)
            recover_dir(self.final_dir)
        accelerator.wait_for_everyone()  # every process sees the recovered folders
        self._resume_checked = False  # run() checks the output folder when resume() was not called

    # ------------------------------------------------------------------------------------- resume
    def _run_products(self) -> list[str]:
        """What in the output folder belongs to a run: its complete checkpoints, best_model, final_model."""
        products = ["checkpoints/"] if self.checkpoints.latest() is not None else []
        return products + [d.name for d in (self.best_dir, self.final_dir) if d.is_dir()]

    def resume(self, resume: str | None, allow_inexact_resume: bool = False) -> None:
        """Continue from a checkpoint: ``"latest"`` (in the output folder, if any) or a checkpoint path.

        ``None`` refuses an output folder that already holds a run (checkpoints, ``best_model`` or
        ``final_model``), so a run is never overwritten; so does a resume from another folder's checkpoint.
        The checkpoint must be complete and undamaged, its recipe the same as ``self.recipe`` (but for
        :data:`~sgdetr_hf.training.recipe.RESUME_FREE_KEYS`) and its position one of this run; a checkpoint
        whose random states cannot be restored is refused unless ``allow_inexact_resume``
        (:meth:`CheckpointManager.restore`). Everything is checked before anything is restored.

        Raises:
            RunInputError: one of those refusals, naming the folder, file or settings and what to do.
        """
        self._resume_checked = True
        latest = self.checkpoints.latest()
        products = self._run_products()
        if resume is None or (resume == "latest" and latest is None):
            if latest is not None:
                raise RunInputError(
                    f"{self.output_dir} already holds checkpoints: pass --resume to continue that run, "
                    "or another --output_dir"
                )
            if products:  # a finished run whose checkpoints were deleted
                raise RunInputError(
                    f"{self.output_dir} already holds {' and '.join(products)} of a run, and no checkpoint to "
                    "resume it from: pass another --output_dir (or remove those folders to start over)"
                )
            self.state.dataset_fingerprint = self._dataset_fingerprint()
            if resume is not None:
                logger.info("no checkpoint in %s: starting a new run", self.output_dir)
            return
        path = latest if resume == "latest" else Path(resume)
        state = self.checkpoints.read(path)
        if products and path.resolve().parent != self.checkpoints.root.resolve():
            raise RunInputError(
                f"cannot resume {path} into {self.output_dir}: that folder holds {' and '.join(products)} of "
                "another run; pass --output_dir with the checkpoint's own run folder or a new one"
            )
        self._check_recipe(path, state)
        self._check_position(path, state)
        self.checkpoints.restore(path, state, allow_inexact_resume=allow_inexact_resume)
        state.recipe = self.recipe.to_dict()  # the same but for the free keys: their values from now on
        self.state = state
        self.meter.restore(state, self.accelerator.process_index, self.accelerator.num_processes)
        logger.info(
            "resumed from %s: epoch %d, batch %d, step %d",
            path, self.state.epoch, self.state.batches_done, self.state.global_step,
        )  # fmt: skip

    def _check_recipe(self, path: Path, state: TrainerState) -> None:
        """Refuse a resume whose recipe differs from the one recorded with the checkpoint (or, for a checkpoint
        written before recipes were recorded there, in its run folder's recipe.yaml)."""
        run_recipe = path.parent.parent / "recipe.yaml"
        recorded = state.recipe
        if not recorded and run_recipe.is_file():
            try:
                recorded = yaml.safe_load(run_recipe.read_text()) or {}
            except yaml.YAMLError:
                recorded = {}
        if not isinstance(recorded, dict) or not recorded:
            logger.warning(
                "%s records no recipe: cannot check that this resume trains with the run's settings", path
            )
            return
        # the data is the run's when its files are the ones the run read (a moved or copied folder included)
        current = self._dataset_fingerprint() if state.dataset_fingerprint is not None else None
        same_data = current is not None and current == state.dataset_fingerprint
        moved = recorded.get("dataset_path") != self.recipe.dataset_path and same_data
        differences = recipe_differences(recorded, self.recipe, same=("dataset_path",) if moved else ())
        if not differences and current is not None and not same_data:
            raise RecipeMismatchError(
                f"cannot resume {path}: the files of dataset {self.recipe.dataset_path!r} changed since the run "
                "started (their SHA-256 is not the one the run recorded), so the resumed run would train on "
                "other data. Resume with the data the run read, or start a new run in another --output_dir"
            )
        if differences:
            run = path.parent.parent
            own = f"--recipe {run_recipe}, " if run_recipe.is_file() else ""
            models = [d for d in (run / "final_model", run / "best_model") if d.is_dir()]
            weights = f" (--init-from {models[0]} to start from its weights)" if models else ""
            data = ""
            if any(difference.startswith("dataset_path: ") for difference in differences):
                why = (
                    "this checkpoint records no fingerprint of them"
                    if state.dataset_fingerprint is None
                    else f"those of {self.recipe.dataset_path!r} differ"
                )
                data = f" A moved dataset folder may resume when it holds the files the run read: {why}."
            raise RecipeMismatchError(
                f"cannot resume {path}: the recipe differs from the run's in {len(differences)} setting(s) "
                f"that change what it computes: {'; '.join(differences)}.{data} Resume with the run's own "
                f"recipe ({own}or the command line that started it), or start a new run in another "
                f"--output_dir{weights}"
            )

    def _dataset_fingerprint(self) -> str | None:
        """:func:`dataset_fingerprint` of the recipe's dataset, computed once by the main process (collective)."""
        fingerprint = dataset_fingerprint(self.recipe) if self.accelerator.is_main_process else None
        return broadcast_object_list([fingerprint])[0]

    def _check_position(self, path: Path, state: TrainerState) -> None:
        """Refuse a checkpoint whose position is not one of this run's: an edited trainer_state.json, or a
        training split that changed (its steps per epoch with it) since the checkpoint."""
        steps, epoch, done = state.global_step, state.epoch, state.batches_done
        # a step checkpoint at an epoch's last batch has batches_done == steps_per_epoch
        inside = done <= self.steps_per_epoch and steps == epoch * self.steps_per_epoch + done
        finished = done == 0 and steps == self.total_steps and epoch == self.num_epochs
        if steps > self.total_steps or not (inside or finished):
            raise DamagedCheckpointError(
                f"cannot resume {path}: its trainer_state.json position (epoch {epoch}, batch {done}, step "
                f"{steps}) is not one of this run ({self.steps_per_epoch} steps per epoch, {self.total_steps} "
                f"in all): the training split changed since the checkpoint ({len(self.train_set)} samples now) "
                f"or the file was edited. {self.checkpoints.way_on(path)}"
            )

    # ------------------------------------------------------------------------------------ training
    def _batches(self, epoch: int):
        """The epoch's batch iterator, positioned after the batches a resumed run already consumed."""
        self.collator.set_epoch(epoch)
        self.train_loader.set_epoch(epoch)
        skip = self.state.batches_done if epoch == self.state.epoch else 0
        if not skip:
            return enumerate(self.train_loader)
        batches = iter(self.accelerator.skip_first_batches(self.train_loader, skip))
        # Starting an epoch's iteration draws the DataLoader's base seed from the global RNG, a draw the
        # uninterrupted run made before the checkpoint: keep it out of the RNG state restored from there.
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            first = next(batches, None)
        return enumerate(itertools.chain([] if first is None else [first], batches), start=skip)

    def _train_step(self, batch: dict[str, Any]) -> None:
        """One optimizer step on this process's share of the global batch, in micro-batches."""
        accelerator, recipe = self.accelerator, self.recipe
        micro_batches = split_micro_batches(batch, recipe.gradient_accumulation_steps)
        config = accelerator.unwrap_model(self.model).config
        contexts = build_batch_contexts(accelerator, config, micro_batches)
        for index, (micro_batch, context) in enumerate(zip(micro_batches, contexts)):
            last = index == len(micro_batches) - 1
            # gradients are all-reduced once, after the last micro-batch
            with contextlib.nullcontext() if last else accelerator.no_sync(self.model):
                try:
                    outputs = self.model(**micro_batch, batch_context=context)
                except ValueError as error:  # e.g. the matcher's "Non-finite matching cost"
                    if self._weights_are_finite():
                        raise
                    raise self._diverged(
                        self.state.global_step + 1, "the weights hold NaN or Inf after the last update"
                    ) from error
                # the losses of the parts add up to the global one; DDP averages over the processes
                accelerator.backward(outputs.loss * accelerator.num_processes)
            self.meter.add(outputs.loss, outputs.loss_dict)
        if recipe.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.model.parameters(), recipe.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.meter.end_step()

    def _weights_are_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def _diverged(self, step: int, what: str) -> TrainingDivergedError:
        recipe = self.recipe
        return TrainingDivergedError(
            f"training diverged at step {step}: {what} (learning_rate "
            f"{recipe.learning_rate:g}, now {self.scheduler.get_last_lr()[0]:g} in the schedule; max_grad_norm "
            f"{recipe.max_grad_norm:g}). Lower --learning_rate (or the warm-up's end, or set --max_grad_norm), "
            "in a new --output_dir"
        )

    def _train_epoch(self, epoch: int, progress: tqdm) -> None:
        accelerator, recipe, state = self.accelerator, self.recipe, self.state
        self.model.train()
        for batch_index, batch in self._batches(epoch):
            if state.global_step >= self.total_steps:  # max_steps is a hard stop, whatever the epoch
                break
            batch.pop("meta")
            self._train_step(batch)
            state.global_step += 1
            progress.update(1)
            last_step = state.global_step >= self.total_steps
            fraction = epoch + (batch_index + 1) / len(self.train_loader)
            # The last step logs too, so that the loss of a last, shorter interval is not lost.
            if state.global_step % recipe.logging_steps == 0 or last_step:
                terms = self.meter.read()
                # fp16's loss scaling skips a step with an overflow: only weights gone non-finite end a run
                if not math.isfinite(terms["loss"]) and not self._weights_are_finite():
                    raise self._diverged(
                        state.global_step, f"the loss is {terms['loss']} and the weights NaN/Inf"
                    )
                lr = self.scheduler.get_last_lr()[0]
                accelerator.log(
                    {**{f"train/{k}": v for k, v in terms.items()}, "train/lr": lr}, step=state.global_step
                )
                progress.set_postfix(loss=f"{terms['loss']:.3f}")
                state.history.append(
                    {"step": state.global_step, "epoch": fraction, "lr": lr, "loss": terms["loss"]}
                )
            # The last step's evaluation is the end of training's (_end_of_epoch).
            every_steps = recipe.eval_every_steps and state.global_step % recipe.eval_every_steps == 0
            if self.eval_loader is not None and every_steps and not last_step:
                self._evaluate_and_select(fraction)
            if recipe.save_every_steps and state.global_step % recipe.save_every_steps == 0:
                state.epoch, state.batches_done = epoch, batch_index + 1
                self._save_checkpoint()
            if last_step:
                break

    # ---------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, Any]:
        """Metrics of the current model on the evaluation split, identical on every process."""
        recipe = self.recipe
        predictions = predict(
            self.model, self.eval_loader, self.accelerator, recipe.eval_top_k, recipe.window_round_seconds
        )
        outcome: dict[str, Any] | Exception | None = None
        if self.accelerator.is_main_process:
            try:
                outcome = evaluate_predictions(recipe.dataset_name, predictions, self.references)
                outcome["num_predictions"] = len(predictions)
            except (ValueError, RuntimeError) as error:  # raised on every process below, not only here
                outcome = error
        # Every process takes the same decisions (best model, errors); none waits for a failed one.
        outcome = broadcast_object_list([outcome])[0]
        if isinstance(outcome, Exception):
            raise outcome
        if recipe.main_metric not in outcome["brief"]:  # e.g. a length bucket without windows in the split
            raise RunInputError(
                f"main_metric {recipe.main_metric!r} is not among the {recipe.dataset_name} metrics of split "
                f"{recipe.eval_split!r}: {sorted(outcome['brief'])}; choose one of those"
            )
        return outcome

    def save_model(self, destination: Path, metrics: dict[str, Any] | None) -> None:
        recipe_text = (
            (self.output_dir / "recipe.yaml").read_text() if self.accelerator.is_main_process else ""
        )
        save_model_dir(
            self.accelerator,
            self.model,
            destination,
            metrics,
            processor=self.processor,
            extra_files={"training_recipe.yaml": recipe_text},
        )

    def _evaluate_and_select(self, epoch: float) -> dict[str, Any]:
        """Evaluate, record the metrics (tracker and history) and save the model when it is the best yet."""
        recipe, state = self.recipe, self.state
        metrics = self.evaluate()
        brief = metrics["brief"]
        self.accelerator.log({f"eval/{k}": v for k, v in brief.items()}, step=state.global_step)
        state.history.append({"step": state.global_step, "epoch": epoch, "eval": brief})
        score = brief[recipe.main_metric]
        logger.info("epoch %g (step %d): %s = %.2f", epoch, state.global_step, recipe.main_metric, score)
        if recipe.select_best and (state.best_metric is None or score > state.best_metric):
            state.best_metric, state.best_step = score, state.global_step
            self.save_model(self.best_dir, metrics)
        return metrics

    def _end_of_epoch(self, epoch: int) -> None:
        """Evaluate when due, keep the best and the final model, then save the resumable state."""
        recipe, state = self.recipe, self.state
        state.epoch, state.batches_done = epoch + 1, 0
        last_epoch = epoch + 1 == self.num_epochs or state.global_step >= self.total_steps
        every_epochs = not recipe.eval_every_steps and (epoch + 1) % recipe.eval_every_epochs == 0
        metrics = None
        if self.eval_loader is not None and (every_epochs or last_epoch):
            # a fraction when max_steps cut the last epoch short
            metrics = self._evaluate_and_select(state.global_step / self.steps_per_epoch)
        if last_epoch:  # before the last checkpoint, so that a crash never leaves a run without it
            self.save_model(self.final_dir, metrics)
        self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        self.meter.save(self.state)  # a logging interval the checkpoint cuts goes on after a resume
        self.checkpoints.save(self.state)

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> TrainingResult:
        """Train from the current state to the end of the recipe; return the selected model."""
        accelerator, recipe = self.accelerator, self.recipe
        if not self._resume_checked:  # never train over another run's folder
            self.resume(None)
        # After resume()'s check, the recipe is the run's but for keys that change nothing it computes.
        if accelerator.is_main_process:
            save_recipe(recipe, self.output_dir / "recipe.yaml")
        hyper_parameters = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in recipe.to_dict().items()
        }
        accelerator.init_trackers(recipe.name, config=hyper_parameters)
        logger.info(
            "training on %d samples: %d steps (%d/epoch), %d process(es) x %d samples per forward",
            len(self.train_set), self.total_steps, self.steps_per_epoch, accelerator.num_processes,
            recipe.micro_batch_size // accelerator.num_processes,
        )  # fmt: skip
        progress = tqdm(
            total=self.total_steps,
            initial=self.state.global_step,
            desc="training",
            disable=not accelerator.is_local_main_process,
        )
        if self.state.global_step >= self.total_steps:
            logger.info("the run had already ended at step %d: nothing to train", self.state.global_step)
        try:
            for epoch in range(self.state.epoch, self.num_epochs):
                if self.state.global_step >= self.total_steps:
                    break
                self._train_epoch(epoch, progress)
                self._end_of_epoch(epoch)
        except torch.OutOfMemoryError as error:
            raise RuntimeError(_oom_hint(recipe, accelerator.num_processes)) from error
        finally:
            progress.close()
        if accelerator.is_main_process and self.state.history:
            plot_learning_curves(
                self.state.history, self.output_dir / "learning_curves.png", recipe.main_metric
            )
        accelerator.end_training()
        model_dir = self.best_dir if recipe.select_best and self.eval_loader is not None else self.final_dir
        if not model_dir.is_dir():  # a resumed, finished run whose model folder was removed since
            raise RunInputError(
                f"{model_dir} does not exist: the run ended at step {self.state.global_step} (its last checkpoint "
                f"is {self.checkpoints.latest()}), and that folder was removed or moved since. Restore it, or "
                "train again in another --output_dir"
            )
        results = model_dir / "eval_results.json"  # the best model may come from an earlier, resumed session
        metrics = json.loads(results.read_text()) if results.is_file() else None
        return TrainingResult(self.output_dir, model_dir, metrics, self.state.global_step)


def train(
    recipe: TrainingRecipe, resume: str | None = None, allow_inexact_resume: bool = False
) -> TrainingResult:
    """Train (or fine-tune, with ``recipe.init_from``) SG-DETR as the recipe says.

    Args:
        recipe: the resolved recipe (see :func:`~sgdetr_hf.training.recipe.load_recipe`).
        resume: ``None`` starts a new run (an output folder that already holds checkpoints is an
            error); ``"latest"`` continues from the newest checkpoint in ``recipe.output_dir`` (or starts
            when there is none); a path continues from that checkpoint folder.
        allow_inexact_resume: resume even when the checkpoint's random states cannot be restored (the
            run then differs from an uninterrupted one); by default that is an ``InexactResumeError``.

    Returns:
        a :class:`TrainingResult`. Collective: every process of the launch calls it.
    """
    trainer = Trainer(recipe)
    trainer.resume(resume, allow_inexact_resume=allow_inexact_resume)
    return trainer.run()

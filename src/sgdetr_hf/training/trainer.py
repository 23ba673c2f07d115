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
collator's random choices are a function of (seed, epoch, sample), so skipped batches need no replay.
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
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from tqdm.auto import tqdm

from ..configuration_sgdetr import SGDetrConfig
from ..cpu_memory import retain_freed_memory
from ..modeling_sgdetr import SGDetrForMomentRetrieval
from ..processing_sgdetr import SGDetrProcessor
from ..visualization import plot_learning_curves
from .checkpointing import CheckpointManager, TrainerState, recover_dir, save_model_dir
from .data import build_collator, check_matches_data, dataset_properties, load_split
from .distributed import build_accelerator
from .evaluation import evaluate_predictions, predict, references_of
from .global_batch import build_batch_contexts, split_micro_batches
from .recipe import TrainingRecipe, save_recipe
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
def build_model(recipe: TrainingRecipe, data_properties: dict[str, Any]) -> SGDetrForMomentRetrieval:
    """The model of the recipe: fresh, or from ``init_from`` (fine-tuning), with its config overrides.

    Feature widths and clip length come from the data; a recipe value that contradicts them is an error.
    """
    check_matches_data(recipe.model, data_properties, "the recipe's model section")
    overrides = {**recipe.model, **data_properties}
    if recipe.init_from:
        logger.info("initialising every weight from %s", recipe.init_from)
        return SGDetrForMomentRetrieval.from_pretrained(
            recipe.init_from, allow_missing_weights=recipe.allow_missing_weights, **overrides
        )
    return SGDetrForMomentRetrieval(SGDetrConfig(**overrides))


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
            raise ValueError(
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
        if len(self.train_set) < recipe.batch_size:
            raise ValueError(
                f"the training split has {len(self.train_set)} samples, fewer than one batch of "
                f"{recipe.batch_size} (training drops incomplete batches): lower --batch_size"
            )
        model = build_model(recipe, dataset_properties(self.train_set))
        if recipe.torch_compile:
            model.compile()  # in place: parameter names, checkpoints and save_pretrained are unchanged
        self.collator = build_collator(model.config, recipe.seed, recipe.max_query_tokens)
        # Saved next to the model so that the folder also serves raw videos (pipeline, Space), with the
        # query-length cap of the training data: the model then sees at inference what it was trained on.
        self.processor = None
        if recipe.processor_path:
            self.processor = SGDetrProcessor.from_pretrained(recipe.processor_path)
            self.processor.max_query_length = recipe.max_query_tokens
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
        self.state = TrainerState()
        self.best_dir, self.final_dir = self.output_dir / "best_model", self.output_dir / "final_model"
        if accelerator.is_main_process:
            recover_dir(self.best_dir)
            recover_dir(self.final_dir)

    # ------------------------------------------------------------------------------------- resume
    def resume(self, resume: str | None, allow_inexact_resume: bool = False) -> None:
        """Continue from a checkpoint: ``"latest"`` (in the output folder, if any) or a checkpoint path.

        ``None`` refuses an output folder that already holds checkpoints, so a run is never overwritten.
        A checkpoint whose random states cannot be restored is refused unless ``allow_inexact_resume``
        (:meth:`CheckpointManager.load`).
        """
        latest = self.checkpoints.latest()
        if resume is None:
            if latest is not None:
                raise ValueError(
                    f"{self.output_dir} already holds checkpoints: pass --resume to continue that run, "
                    "or another --output_dir"
                )
            return
        path = latest if resume == "latest" else Path(resume)
        if path is None:
            logger.info("no checkpoint in %s: starting a new run", self.output_dir)
            return
        self.state = self.checkpoints.load(path, allow_inexact_resume=allow_inexact_resume)
        logger.info(
            "resumed from %s: epoch %d, batch %d, step %d",
            path, self.state.epoch, self.state.batches_done, self.state.global_step,
        )  # fmt: skip

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

    def _train_step(self, batch: dict[str, Any], meter: _LossMeter) -> None:
        """One optimizer step on this process's share of the global batch, in micro-batches."""
        accelerator, recipe = self.accelerator, self.recipe
        micro_batches = split_micro_batches(batch, recipe.gradient_accumulation_steps)
        config = accelerator.unwrap_model(self.model).config
        contexts = build_batch_contexts(accelerator, config, micro_batches)
        for index, (micro_batch, context) in enumerate(zip(micro_batches, contexts)):
            last = index == len(micro_batches) - 1
            # gradients are all-reduced once, after the last micro-batch
            with contextlib.nullcontext() if last else accelerator.no_sync(self.model):
                outputs = self.model(**micro_batch, batch_context=context)
                # the losses of the parts add up to the global one; DDP averages over the processes
                accelerator.backward(outputs.loss * accelerator.num_processes)
            meter.add(outputs.loss, outputs.loss_dict)
        if recipe.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.model.parameters(), recipe.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        meter.end_step()

    def _train_epoch(self, epoch: int, meter: _LossMeter, progress: tqdm) -> None:
        accelerator, recipe, state = self.accelerator, self.recipe, self.state
        self.model.train()
        for batch_index, batch in self._batches(epoch):
            batch.pop("meta")
            self._train_step(batch, meter)
            state.global_step += 1
            progress.update(1)
            last_step = state.global_step == self.total_steps
            fraction = epoch + (batch_index + 1) / len(self.train_loader)
            # The last step logs too, so that the loss of a last, shorter interval is not lost.
            if state.global_step % recipe.logging_steps == 0 or last_step:
                terms = meter.read()
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
                self.checkpoints.save(state)
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
        if recipe.main_metric not in outcome["brief"]:
            raise ValueError(
                f"main_metric {recipe.main_metric!r} is not among the {recipe.dataset_name} metrics: "
                f"{sorted(outcome['brief'])}"
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
        last_epoch = epoch + 1 == self.num_epochs
        every_epochs = not recipe.eval_every_steps and (epoch + 1) % recipe.eval_every_epochs == 0
        metrics = None
        if self.eval_loader is not None and (every_epochs or last_epoch):
            # a fraction when max_steps cut the last epoch short
            metrics = self._evaluate_and_select(state.global_step / self.steps_per_epoch)
        if last_epoch:  # before the last checkpoint, so that a crash never leaves a run without it
            self.save_model(self.final_dir, metrics)
        self.checkpoints.save(state)

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> TrainingResult:
        """Train from the current state to the end of the recipe; return the selected model."""
        accelerator, recipe = self.accelerator, self.recipe
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
        meter = _LossMeter()
        progress = tqdm(
            total=self.total_steps,
            initial=self.state.global_step,
            desc="training",
            disable=not accelerator.is_local_main_process,
        )
        try:
            for epoch in range(self.state.epoch, self.num_epochs):
                self._train_epoch(epoch, meter, progress)
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

"""The Accelerate training loop of SG-DETR (paper §4.4): one function, :func:`train`, driven by a recipe.

Data flow: ``datasets`` folder or Hub repo -> :class:`~sgdetr_hf.data.MomentRetrievalDataset` ->
:class:`~sgdetr_hf.data.MomentRetrievalCollator` -> ``model(..., labels)`` -> loss -> AdamW step with
the WarmupMultiStepLR schedule. Every ``eval_every_epochs`` the model predicts the evaluation split,
the metrics module scores it, and the best model (by the recipe's main metric) is saved.

Processes: the DataLoader batch is the recipe's global batch, split across processes
(``split_batches``), so 1 or 8 processes see the same samples per optimizer step, and the schedule
is identical. Resume is exact: model, optimizer, scheduler, sampler, RNG and extra generator states
come from the checkpoint, and the interrupted epoch replays (without training) the batches already
consumed so that the collator's own random stream is where it was.
"""

from __future__ import annotations

import dataclasses
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
from ..modeling_sgdetr import SGDetrForMomentRetrieval
from ..visualization import plot_learning_curves
from .checkpointing import CheckpointManager, TrainerState, recover_dir, save_model_dir
from .data import build_collator, check_matches_data, dataset_properties, load_split
from .distributed import build_accelerator
from .evaluation import evaluate_predictions, predict, references_of
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
    overrides.setdefault("saliency_pair_seed", recipe.seed)
    if recipe.init_from:
        logger.info("initialising every weight from %s", recipe.init_from)
        return SGDetrForMomentRetrieval.from_pretrained(recipe.init_from, **overrides)
    return SGDetrForMomentRetrieval(SGDetrConfig(**overrides))


def module_generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` held by a sub-module (e.g. the criterion's margin-pair sampler), by path."""
    return {
        f"{name}.{attribute}" if name else attribute: value
        for name, module in model.named_modules()
        for attribute, value in vars(module).items()
        if isinstance(value, torch.Generator)
    }


# --------------------------------------------------------------------------------------------- loop
class _LossMeter:
    """Running sums of the loss terms over a logging interval, averaged over processes when read."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self.count = 0

    def add(self, loss: torch.Tensor, loss_dict: dict[str, torch.Tensor]) -> None:
        # Detached device tensors: no host synchronisation per batch.
        for name, value in {"loss": loss, **loss_dict}.items():
            self.sums[name] = self.sums[name].to(value.device) + value.detach().float()
        self.count += 1

    def read(self) -> dict[str, float]:
        """Mean of each term over the interval and over processes (collective); resets the meter."""
        local = {name: (total / max(self.count, 1)).item() for name, total in self.sums.items()}
        per_process = gather_object([local])
        names = sorted({name for values in per_process for name in values})
        self.sums.clear()
        self.count = 0
        return {
            name: sum(v[name] for v in per_process if name in v) / sum(name in v for v in per_process)
            for name in names
        }


def _oom_hint(recipe: TrainingRecipe, num_processes: int) -> str:
    per_process = recipe.micro_batch_size // num_processes
    return (
        f"out of GPU memory with {per_process} samples per process and forward pass (batch_size="
        f"{recipe.batch_size}, gradient_accumulation_steps={recipe.gradient_accumulation_steps}, "
        f"{num_processes} process(es)). Keep the global batch and raise --gradient_accumulation_steps "
        f"(e.g. {recipe.gradient_accumulation_steps * 2}), or lower --batch_size (changes the recipe), "
        "or use --mixed_precision bf16"
    )


def train(recipe: TrainingRecipe, resume: str | None = None) -> TrainingResult:
    """Train (or fine-tune, with ``recipe.init_from``) SG-DETR as the recipe says.

    Args:
        recipe: the resolved recipe (see :func:`~sgdetr_hf.training.recipe.load_recipe`).
        resume: ``None`` starts a new run (an output folder that already holds checkpoints is an
            error); ``"latest"`` continues from the newest checkpoint in ``recipe.output_dir`` (or starts
            when there is none); a path continues from that checkpoint folder.

    Returns:
        a :class:`TrainingResult`. Collective: every process of the launch calls it.
    """
    output_dir = Path(recipe.output_dir)
    accelerator = build_accelerator(
        output_dir, recipe.mixed_precision, recipe.gradient_accumulation_steps, recipe.seed
    )
    if recipe.micro_batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size / gradient_accumulation_steps = {recipe.micro_batch_size} samples per forward pass "
            f"cannot be split evenly over {accelerator.num_processes} processes"
        )
    set_seed(recipe.seed)

    with accelerator.main_process_first():  # the first load writes the datasets cache
        train_set = load_split(recipe, recipe.train_split, recipe.max_train_samples)
        eval_set = load_split(recipe, recipe.eval_split, recipe.max_eval_samples) if recipe.eval_split else None
    if len(train_set) < recipe.micro_batch_size:
        raise ValueError(
            f"the training split has {len(train_set)} samples, fewer than one batch of {recipe.micro_batch_size} "
            "(training drops incomplete batches): lower --batch_size"
        )
    model = build_model(recipe, dataset_properties(train_set))
    config = model.config

    train_collator = build_collator(config, recipe.seed)
    loader_options = {"num_workers": recipe.num_workers, "pin_memory": torch.cuda.is_available()}
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=recipe.micro_batch_size,
        shuffle=True,
        drop_last=True,  # in-batch negatives and BatchNorm-free statistics want full batches
        collate_fn=train_collator,
        **loader_options,
    )
    eval_loader = None
    if eval_set is not None:
        eval_loader = torch.utils.data.DataLoader(
            eval_set, batch_size=recipe.micro_batch_size, collate_fn=build_collator(config, recipe.seed), **loader_options
        )
    steps_per_epoch = math.ceil(len(train_loader) / recipe.gradient_accumulation_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=recipe.learning_rate,
        betas=(recipe.adam_beta1, recipe.adam_beta2),
        eps=recipe.adam_epsilon,
        weight_decay=recipe.weight_decay,
    )
    scheduler = build_warmup_multistep_scheduler(
        optimizer,
        recipe.warmup_iters,
        recipe.warmup_factor,
        epochs_to_steps(recipe.milestones, steps_per_epoch),
        recipe.gamma,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    checkpoints = CheckpointManager(
        accelerator,
        output_dir,
        recipe.checkpoints_total_limit,
        generators=module_generators(accelerator.unwrap_model(model)),
    )
    checkpoints.recover()
    state = TrainerState()
    resume_from = checkpoints.latest() if resume == "latest" else (Path(resume) if resume else None)
    if resume is None and checkpoints.latest() is not None:
        raise ValueError(
            f"{output_dir} already holds checkpoints: pass --resume to continue that run, or another --output_dir"
        )
    if resume_from is not None:
        state = checkpoints.load(resume_from)
        logger.info("resumed from %s: epoch %d, batch %d, step %d", resume_from, state.epoch, state.batches_done,
                    state.global_step)
    references = references_of(eval_set) if eval_set is not None and accelerator.is_main_process else None
    best_dir, final_dir = output_dir / "best_model", output_dir / "final_model"
    if accelerator.is_main_process:
        recover_dir(best_dir)
        save_recipe(recipe, output_dir / "recipe.yaml")
    accelerator.init_trackers(
        recipe.name, config={k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in
                             recipe.to_dict().items()}
    )
    logger.info(
        "training %d samples, %d steps/epoch x %d epochs, %d process(es), %d samples per process per forward",
        len(train_set), steps_per_epoch, recipe.epochs, accelerator.num_processes,
        recipe.micro_batch_size // accelerator.num_processes,
    )

    def evaluate() -> dict[str, Any]:
        predictions = predict(model, eval_loader, accelerator, recipe.eval_top_k)
        metrics = None
        if accelerator.is_main_process:
            metrics = evaluate_predictions(recipe.dataset_name, predictions, references)
            metrics["num_predictions"] = len(predictions)
        return broadcast_object_list([metrics])[0]  # every process takes the same decisions

    def save_model(destination: Path, metrics: dict[str, Any] | None) -> None:
        save_model_dir(accelerator, model, destination, metrics, extra_files={"training_recipe.yaml":
                       (output_dir / "recipe.yaml").read_text()} if accelerator.is_main_process else None)

    meter = _LossMeter()
    last_metrics: dict[str, Any] | None = None
    progress = tqdm(
        total=steps_per_epoch * recipe.epochs,
        initial=state.global_step,
        desc="training",
        disable=not accelerator.is_local_main_process,
    )
    rng_devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    try:
        for epoch in range(state.epoch, recipe.epochs):
            train_collator.set_epoch(epoch)
            train_loader.set_epoch(epoch)
            batches = iter(train_loader)
            skip = state.batches_done if epoch == state.epoch else 0
            if skip:
                # Replay the consumed batches through the collator (its window-subset stream advances per
                # batch), without letting the iteration move the restored RNG.
                with torch.random.fork_rng(devices=rng_devices):
                    for _ in range(skip):
                        next(batches)
            model.train()
            for batch_index, batch in enumerate(batches, start=skip):
                batch.pop("meta")
                with accelerator.accumulate(model):
                    outputs = model(**batch)
                    accelerator.backward(outputs.loss)
                    if accelerator.sync_gradients and recipe.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                meter.add(outputs.loss, outputs.loss_dict)
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                if state.global_step % recipe.logging_steps == 0:
                    record = {f"train/{k}": v for k, v in meter.read().items()}
                    record["train/lr"] = scheduler.get_last_lr()[0]
                    accelerator.log(record, step=state.global_step)
                    progress.set_postfix(loss=f"{record['train/loss']:.3f}")
                    state.history.append(
                        {"step": state.global_step, "epoch": epoch + (batch_index + 1) / len(train_loader),
                         "lr": record["train/lr"], "loss": record["train/loss"]}
                    )
                if recipe.save_every_steps and state.global_step % recipe.save_every_steps == 0:
                    state.epoch, state.batches_done = epoch, batch_index + 1
                    checkpoints.save(state)

            state.epoch, state.batches_done = epoch + 1, 0
            last_epoch = epoch + 1 == recipe.epochs
            if eval_loader is not None and ((epoch + 1) % recipe.eval_every_epochs == 0 or last_epoch):
                last_metrics = evaluate()
                brief = last_metrics["brief"]
                if recipe.main_metric not in brief:
                    raise ValueError(
                        f"main_metric {recipe.main_metric!r} is not among the {recipe.dataset_name} metrics: "
                        f"{sorted(brief)}"
                    )
                accelerator.log({f"eval/{k}": v for k, v in brief.items()}, step=state.global_step)
                state.history.append({"step": state.global_step, "epoch": epoch + 1, "eval": brief})
                logger.info("epoch %d: %s = %.2f", epoch + 1, recipe.main_metric, brief[recipe.main_metric])
                if recipe.select_best and (state.best_metric is None or brief[recipe.main_metric] > state.best_metric):
                    state.best_metric, state.best_step = brief[recipe.main_metric], state.global_step
                    save_model(best_dir, last_metrics)
            checkpoints.save(state)
    except torch.OutOfMemoryError as error:
        raise RuntimeError(_oom_hint(recipe, accelerator.num_processes)) from error
    finally:
        progress.close()

    save_model(final_dir, last_metrics)
    if accelerator.is_main_process and state.history:
        plot_learning_curves(state.history, output_dir / "learning_curves.png", recipe.main_metric)
    accelerator.end_training()
    if recipe.select_best and eval_loader is not None:
        # The best model may come from an earlier session of a resumed run: read its metrics from disk.
        metrics = json.loads((best_dir / "eval_results.json").read_text())
        return TrainingResult(output_dir, best_dir, metrics, state.global_step)
    return TrainingResult(output_dir, final_dir, last_metrics, state.global_step)

"""Evaluate a saved model on one split: predictions JSON Lines, metrics JSON and timeline plots.

This is also the zero-shot evaluation of a pre-trained model (paper Table 3 "ZS"): point ``--model``
at the pre-training output and ``--dataset`` at the target benchmark.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write_json, write_qvhighlights_predictions
from ..modeling_sgdetr import SGDetrForMomentRetrieval
from ..visualization import plot_timeline
from .data import build_collator, check_matches_data, dataset_properties, load_split
from .distributed import build_accelerator
from .errors import RunInputError
from .evaluation import evaluate_predictions, predict, references_of
from .recipe import TrainingRecipe

logger = logging.getLogger(__name__)


def evaluate_model(
    model_path: str, recipe: TrainingRecipe, predict_only: bool = False, num_plots: int = 0
) -> dict[str, Any] | None:
    """Predict ``recipe.eval_split`` of ``recipe.dataset_path`` with the model at ``model_path``.

    Writes into ``recipe.output_dir``: ``predictions_<split>.jsonl`` (QVHighlights JSON Lines),
    ``metrics_<split>.json`` (unless ``predict_only``) and ``plots/<qid>.png`` for the first
    ``num_plots`` queries. Collective: every process of the launch calls it.

    Returns:
        the metrics (``{"brief": ..., ...}``), or None with ``predict_only``.
    """
    split = recipe.eval_split
    output_dir = Path(recipe.output_dir)
    accelerator = build_accelerator(output_dir, recipe.mixed_precision, seed=recipe.seed, log_with=None)
    if recipe.micro_batch_size % accelerator.num_processes:
        raise RunInputError(
            f"--batch-size {recipe.micro_batch_size} must be divisible by {accelerator.num_processes} processes"
        )
    model = SGDetrForMomentRetrieval.from_pretrained(model_path)
    config = model.config
    with accelerator.main_process_first():
        dataset = load_split(recipe, split, recipe.max_eval_samples)
    check_matches_data(
        config.to_dict(),
        dataset_properties(dataset),
        f"model {model_path}",
        advice=": evaluate it on a dataset with the features (and clip length) it was trained on",
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=recipe.micro_batch_size,
        collate_fn=build_collator(config, recipe.seed, recipe.max_query_tokens),
    )
    model, loader = accelerator.prepare(model, loader)
    predictions = predict(
        model,
        loader,
        accelerator,
        recipe.eval_top_k,
        recipe.window_round_seconds,
        description=f"predicting {split}",
    )

    metrics = None
    if accelerator.is_main_process:
        write_qvhighlights_predictions(output_dir / f"predictions_{split}.jsonl", predictions)
        references = references_of(dataset)
        if not predict_only:
            metrics = evaluate_predictions(recipe.dataset_name, predictions, references)
            metrics["num_predictions"] = len(predictions)
            atomic_write_json(output_dir / f"metrics_{split}.json", metrics)
        truth = {str(r["qid"]): r for r in references}
        for prediction in predictions[:num_plots]:
            reference = truth[prediction["qid"]]
            item = {
                **prediction,
                "relevant_windows": reference["relevant_windows"],
                "duration": reference["duration"],
            }
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", prediction["qid"])
            path = plot_timeline(item, output_dir / "plots" / f"{name}.png", clip_length=config.clip_length)
            logger.info("timeline of query %s: %s", prediction["qid"], path)
        logger.info("wrote %d predictions to %s", len(predictions), output_dir / f"predictions_{split}.jsonl")
    accelerator.wait_for_everyone()
    return metrics

"""``sgdetr evaluate-model`` (also ``scripts/evaluate.py``): run a trained (or pre-trained: zero-shot) SG-DETR
over a dataset split; write the prediction JSON Lines and the metrics JSON, print the metrics table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import yaml

from . import CommandLineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained) or Hub id")
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id (datasets.load_dataset)")
    parser.add_argument("--split", default="validation", help="split to evaluate (default: validation)")
    parser.add_argument(
        "--dataset-config", help="config name in the dataset (default: the model's training recipe's)"
    )
    parser.add_argument(
        "--dataset-name",
        help="evaluation protocol: qvhighlights, charades_sta, tacos, youtube_highlights, tvsum "
        "(default: the model's training recipe's)",
    )
    parser.add_argument("--domain", help="YouTube Highlights / TVSum: evaluate one domain")
    parser.add_argument("--output-dir", required=True, help="where predictions_<split>.jsonl and metrics go")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=10, help="windows per query (default: 10)")
    parser.add_argument(
        "--round-seconds",
        type=float,
        help="round window endpoints to this grid, e.g. 2 for QVHighlights (default: the model's training "
        "recipe's window_round_seconds, else none)",
    )
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N queries")
    parser.add_argument(
        "--predict-only", action="store_true", help="no metrics (e.g. a split without labels)"
    )
    parser.add_argument(
        "--plot", type=int, default=0, metavar="N", help="timeline PNGs of the first N queries"
    )


def _recipe_defaults(model: str) -> dict:
    """``dataset_config``/``dataset_name``/``domain``/``window_round_seconds`` of the recipe a local model was
    trained with, if any."""
    path = Path(model) / "training_recipe.yaml"
    if not path.is_file():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    keys = ("dataset_config", "dataset_name", "domain", "window_round_seconds")
    return {k: values[k] for k in keys if values.get(k) is not None}


def run(args: argparse.Namespace) -> int:
    from ..loading_sgdetr import CheckpointError
    from ..metrics import format_metrics_table
    from ..training.distributed import process_group_teardown
    from ..training.errors import RunInputError
    from ..training.evaluate_model import evaluate_model
    from ..training.recipe import TrainingRecipe

    defaults = _recipe_defaults(args.model)
    settings = {
        "dataset_config": args.dataset_config or defaults.get("dataset_config"),
        "dataset_name": args.dataset_name or defaults.get("dataset_name"),
        "domain": args.domain or defaults.get("domain"),
        "window_round_seconds": (
            args.round_seconds if args.round_seconds is not None else defaults.get("window_round_seconds")
        ),
    }
    for key in ("dataset_config", "dataset_name"):
        if settings[key] is None:
            raise CommandLineError(
                f"--{key.replace('_', '-')} is required: {args.model} has no training_recipe.yaml to take it from"
            )
    if (
        args.batch_size < 1
        or args.top_k < 1
        or args.plot < 0
        or (args.round_seconds is not None and not 0 < args.round_seconds < math.inf)
        or (args.max_samples is not None and args.max_samples < 1)
    ):
        raise CommandLineError(
            "--batch-size, --top-k and --max-samples must be >= 1, --plot >= 0 and --round-seconds a finite "
            "number > 0"
        )
    try:
        recipe = TrainingRecipe(
            name="evaluate",
            dataset_path=args.dataset,
            eval_split=args.split,
            max_eval_samples=args.max_samples,
            batch_size=args.batch_size,
            eval_top_k=args.top_k,
            output_dir=args.output_dir,
            **settings,
        )
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    with process_group_teardown():
        try:
            metrics = evaluate_model(args.model, recipe, predict_only=args.predict_only, num_plots=args.plot)
        # A model folder that cannot give the model (which file, what was expected), or none there; a dataset,
        # config or split that cannot be loaded, or a model that does not fit the data: no trace.
        except (CheckpointError, OSError, RunInputError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if metrics is not None and int(os.environ.get("RANK", "0")) == 0:
        print(format_metrics_table(metrics["brief"], f"{recipe.dataset_name} {args.split}"))
    return 0

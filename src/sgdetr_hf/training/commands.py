"""Command lines of ``scripts/train.py`` and ``scripts/evaluate.py`` (the scripts only call these)."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..configuration_sgdetr import SGDetrConfig
from .distributed import process_group_teardown
from .evaluation import format_metrics_table
from .recipe import TrainingRecipe, available_recipes, load_recipe, parse_override_tokens

logger = logging.getLogger(__name__)

TRAIN_EPILOG = """\
Every recipe key can be overridden: --key value, --key=value or --set key=value [key=value ...];
model config keys as --model.KEY value (e.g. --model.hidden_size 128). Values are YAML
(--milestones "[2, 3]"). Recipes: {recipes}.

examples:
  accelerate launch scripts/train.py --recipe qvhighlights --dataset_path data/qvhighlights
  accelerate launch --multi_gpu --num_processes 8 --mixed_precision bf16 scripts/train.py \\
      --recipe intervid_mr --dataset_path data/intervid-mr --output_dir outputs/pretrain
  accelerate launch scripts/train.py --recipe qvhighlights --dataset_path data/qvhighlights \\
      --init-from outputs/pretrain/final_model --output_dir outputs/qvh-ft
  accelerate launch scripts/train.py --recipe qvhighlights ... --resume     # continue after a crash
"""


def _configure_logging(level: str) -> None:
    # One process speaks; the others only warn.
    main = int(os.environ.get("LOCAL_RANK", "0")) == 0
    logging.basicConfig(
        level=level.upper() if main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint is ours
    if not main:
        import datasets

        datasets.disable_progress_bars()


def model_config_keys() -> list[str]:
    """The SGDetrConfig arguments a recipe's ``model`` section may set."""
    parameters = inspect.signature(SGDetrConfig.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train or fine-tune SG-DETR with a recipe (run it with `accelerate launch`).",
        epilog=TRAIN_EPILOG.format(recipes=", ".join(available_recipes())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # unknown options are recipe keys; never expand them into ours
    )
    parser.add_argument("--recipe", required=True, help="a packaged recipe name or a path to a .yaml recipe")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: from the newest checkpoint in output_dir (no value) or from CHECKPOINT",
    )
    parser.add_argument(
        "--init-from", help="fine-tune: a model folder or Hub id whose weights initialise the model"
    )
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--log-level", default="INFO")
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/train.py``: parse the recipe and overrides, train, print the selected model's metrics."""
    from .trainer import train  # imports accelerate and the model; keep --help fast

    parser = build_train_parser()
    args, rest = parser.parse_known_args(argv)
    _configure_logging(args.log_level)
    try:
        overrides = parse_override_tokens(rest)
        if args.init_from:
            overrides["init_from"] = args.init_from
        recipe = load_recipe(args.recipe, overrides, valid_model_keys=model_config_keys())
    except ValueError as error:
        parser.error(str(error))
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
        return 0
    with process_group_teardown():
        result = train(recipe, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\nmodel: {result.model_dir}  (steps: {result.global_step}, run folder: {result.output_dir})")
        if result.metrics is not None:
            print(format_metrics_table(result.metrics["brief"], f"{recipe.dataset_name} {recipe.eval_split}"))
    return 0


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Run a trained (or pre-trained: zero-shot) SG-DETR over a dataset split; write the "
        "prediction JSON Lines and the metrics JSON.",
    )
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
    parser.add_argument("--max-samples", type=int, help="evaluate only the first N queries")
    parser.add_argument(
        "--predict-only", action="store_true", help="no metrics (e.g. a split without labels)"
    )
    parser.add_argument(
        "--plot", type=int, default=0, metavar="N", help="timeline PNGs of the first N queries"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _recipe_defaults(model: str) -> dict:
    """``dataset_config``/``dataset_name``/``domain`` of the recipe a local model was trained with, if any."""
    path = Path(model) / "training_recipe.yaml"
    if not path.is_file():
        return {}
    values = yaml.safe_load(path.read_text()) or {}
    return {k: values[k] for k in ("dataset_config", "dataset_name", "domain") if values.get(k) is not None}


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``scripts/evaluate.py``: predictions and metrics of a model on one split."""
    from .evaluate_model import evaluate_model

    parser = build_evaluate_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    defaults = _recipe_defaults(args.model)
    settings = {
        "dataset_config": args.dataset_config or defaults.get("dataset_config"),
        "dataset_name": args.dataset_name or defaults.get("dataset_name"),
        "domain": args.domain or defaults.get("domain"),
    }
    for key in ("dataset_config", "dataset_name"):
        if settings[key] is None:
            parser.error(
                f"--{key.replace('_', '-')} is required: {args.model} has no training_recipe.yaml to take it from"
            )
    if args.batch_size < 1 or args.top_k < 1 or args.plot < 0:
        parser.error("--batch-size and --top-k must be >= 1 and --plot >= 0")
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
        parser.error(str(error))
    with process_group_teardown():
        metrics = evaluate_model(args.model, recipe, predict_only=args.predict_only, num_plots=args.plot)
    if metrics is not None and int(os.environ.get("RANK", "0")) == 0:
        print(format_metrics_table(metrics["brief"], f"{recipe.dataset_name} {args.split}"))
    return 0

"""``sgdetr train`` (also ``scripts/train.py``): train or fine-tune SG-DETR with a recipe, then print the
selected model's metrics. Run it under ``accelerate launch`` for several processes or mixed precision."""

from __future__ import annotations

import argparse
import inspect
import os
import sys

import yaml

from ..training.recipe import available_recipes, load_recipe, parse_override_tokens
from . import CommandLineError

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

PARSER_OPTIONS = {
    "epilog": TRAIN_EPILOG.format(recipes=", ".join(available_recipes())),
    "formatter_class": argparse.RawDescriptionHelpFormatter,
    "allow_abbrev": False,  # unknown options are recipe keys; never expand them into ours
}
TAKES_OVERRIDES = True


def model_config_keys() -> list[str]:
    """The SGDetrConfig arguments a recipe's ``model`` section may set."""
    from ..configuration_sgdetr import SGDetrConfig

    parameters = inspect.signature(SGDetrConfig.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--allow-inexact-resume",
        action="store_true",
        help="with --resume: continue even when the checkpoint's random states cannot be restored "
        "(missing, unreadable or changed random_states_*.pkl); the run then differs from an uninterrupted one",
    )
    parser.add_argument(
        "--init-from", help="fine-tune: a model folder or Hub id whose weights initialise the model"
    )
    parser.add_argument(
        "--allow-missing-weights",
        action="store_true",
        help="with --init-from: weights the model has and the folder lacks (new heads) start fresh, weights the "
        "folder has and the model lacks are dropped, with a warning (default: an error)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (the recipe's torch_compile=true)"
    )
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")


def run(args: argparse.Namespace) -> int:
    from ..metrics import format_metrics_table
    from ..training.distributed import process_group_teardown
    from ..training.trainer import train  # accelerate and the model: not needed for --help

    if args.allow_inexact_resume and args.resume is None:
        raise CommandLineError("--allow-inexact-resume goes with --resume")
    try:
        overrides = parse_override_tokens(args.overrides)
        if args.init_from:
            overrides["init_from"] = args.init_from
        if args.allow_missing_weights:
            overrides["allow_missing_weights"] = True
        if args.compile:
            overrides["torch_compile"] = True
        recipe = load_recipe(args.recipe, overrides, valid_model_keys=model_config_keys())
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False), end="")
        return 0
    from ..loading_sgdetr import CheckpointError
    from ..training.errors import RunInputError

    try:
        with process_group_teardown():
            result = train(recipe, resume=args.resume, allow_inexact_resume=args.allow_inexact_resume)
    # What the run was given cannot work (data, model or processor source, output folder, checkpoint, a
    # diverging learning rate): the message names it and what to do. Any other error keeps its traceback.
    except (RunInputError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\nmodel: {result.model_dir}  (steps: {result.global_step}, run folder: {result.output_dir})")
        if result.metrics is not None:
            print(format_metrics_table(result.metrics["brief"], f"{recipe.dataset_name} {recipe.eval_split}"))
    return 0

"""Training SG-DETR with Accelerate: recipes, the loop, resumable checkpoints and evaluation.

This sub-package is never shipped as Hub remote code. Entry points: ``sgdetr train`` and
``sgdetr evaluate-model`` (:mod:`sgdetr_hf.commands`, also ``scripts/train.py`` and ``scripts/evaluate.py``);
from Python::

    from sgdetr_hf.training import load_recipe, train

    result = train(load_recipe("qvhighlights", {"dataset_path": "data/qvhighlights"}))
"""

from .errors import RunInputError
from .recipe import DATASET_MAIN_METRICS, TrainingRecipe, available_recipes, load_recipe
from .schedule import build_warmup_multistep_scheduler, warmup_multistep_factor


def __getattr__(name: str):
    # The loop imports accelerate and the model; load it on first use so that recipes stay light.
    if name in ("train", "TrainingResult"):
        from . import trainer

        return getattr(trainer, name)
    if name == "evaluate_model":
        from .evaluate_model import evaluate_model

        return evaluate_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASET_MAIN_METRICS",
    "RunInputError",
    "TrainingRecipe",
    "TrainingResult",
    "available_recipes",
    "build_warmup_multistep_scheduler",
    "evaluate_model",
    "load_recipe",
    "train",
    "warmup_multistep_factor",
]

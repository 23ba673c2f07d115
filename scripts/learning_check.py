"""Learning check: SG-DETR learns the SYNTHETIC toy grounding task, and does not learn shuffled labels.

Trains with the project's :class:`~sgdetr_hf.training.trainer.Trainer` (same model, data order and seed
for every run) on a ``datasets`` folder built from the toy task:

- ``real``: the toy task's training split (:mod:`sgdetr_hf.data.synthetic`);
- ``shuffled`` (full check only): the same videos and queries with the annotations (windows and saliency)
  moved to other samples, so that the features carry no information about the labels.

The Trainer evaluates each run on the held-out validation split with the QVHighlights metric
(:func:`sgdetr_hf.metrics.compute_metrics`) every ``eval_every`` steps. The real run's final predictions
are also scored against the held-out annotations moved to other samples: the chance level of that very
model (what it gets for knowing only where windows usually are). The full check passes when the real run
reaches MR mAP@avg >= 60 while the shuffled run and the chance level stay below 10; the quick check (under
a minute, for the test suite) trains the real run only, with lower bars. Results (``results.json``) and
the learning curves (``learning_curve.png``) are written to ``--output-dir``; the data and the runs'
folders are temporary.

    python scripts/learning_check.py --output-dir runs/learning_check          # full check, minutes
    python scripts/learning_check.py --output-dir /tmp/lc --quick              # < 1 minute, lower bars

Exit status 0 when the check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgdetr_hf.benchmarking import peak_rss_mib
from sgdetr_hf.data.builder import ArrayFeatures, build_dataset
from sgdetr_hf.data.synthetic import ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.files import atomic_write_json
from sgdetr_hf.metrics import format_metrics_table
from sgdetr_hf.training.evaluation import evaluate_predictions, predict
from sgdetr_hf.training.recipe import TrainingRecipe
from sgdetr_hf.training.trainer import Trainer
from sgdetr_hf.visualization import plot_learning_curves

#: Annotation columns moved to other samples by the shuffled-labels control and the chance level.
LABEL_COLUMNS = ("relevant_windows", "relevant_clip_ids", "saliency_scores")
MAP_KEY = "MR-full-mAP"
#: Held-out metrics recorded on the learning curve besides MR mAP@avg.
CURVE_KEYS = {"R1@0.7": "MR-full-R1@0.7", "HL-mAP": "HL-min-VeryGood-mAP"}


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """One learning check: data size, model size, optimisation and the pass bars.

    Every video has ``num_clips`` clips, so that moved labels stay valid for every video. Pass: the real
    run's held-out MR mAP@avg >= ``min_real_map``; its chance level and (``train_shuffled``) the shuffled
    run's mAP < ``max_chance_map``.
    """

    train_samples: int = 1024
    eval_samples: int = 128
    num_clips: int = 75
    max_window_clips: int = 8
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    eval_every: int = 250
    hidden_size: int = 64
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    # 0.5 in the paper's projections (512-d InternVideo2 features) slows learning a lot on 64-d toy features
    input_dropout: float = 0.1
    seed: int = 0
    train_shuffled: bool = True
    min_real_map: float = 60.0
    max_chance_map: float = 10.0

    def __post_init__(self):
        not_counts = ("input_dropout", "seed", "train_shuffled", "min_real_map", "max_chance_map")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in not_counts and not value > 0:
                raise ValueError(f"CheckSettings.{field.name} must be > 0, got {value!r}")
        if not 0 <= self.input_dropout < 1:
            raise ValueError(f"CheckSettings.input_dropout must be in [0, 1), got {self.input_dropout}")
        if self.batch_size < 2:
            raise ValueError(
                "CheckSettings.batch_size must be >= 2 (in-batch negative pairs need two samples)"
            )


#: The shortened check of the test suite: under a minute on a 2-core CPU, with a lower bar.
QUICK_SETTINGS = CheckSettings(
    train_samples=512,
    eval_samples=64,
    num_clips=48,
    steps=400,
    batch_size=16,
    learning_rate=3e-3,
    eval_every=100,
    hidden_size=32,
    num_encoder_layers=1,
    num_decoder_layers=2,
    train_shuffled=False,
    min_real_map=25.0,
    max_chance_map=15.0,  # 48-clip videos: predicting only typical windows scores ~9 (~6 with 75 clips)
)


def toy_task(settings: CheckSettings) -> ToyGroundingTask:
    """The toy task with fixed-length videos (``settings.num_clips`` clips of 2 s)."""
    return ToyGroundingTask(
        ToyTaskConfig(
            min_clips=settings.num_clips,
            max_clips=settings.num_clips,
            max_window_clips=settings.max_window_clips,
        ),
        seed=settings.seed,
    )


def model_overrides(settings: CheckSettings, task: ToyGroundingTask) -> dict[str, Any]:
    """A narrow SG-DETR with every part of the full model (all Table 2 switches on).

    The recipe's ``model`` section: the Trainer takes the feature widths and the clip length from the data.
    """
    return dict(
        hidden_size=settings.hidden_size,
        num_encoder_layers=settings.num_encoder_layers,
        num_decoder_layers=settings.num_decoder_layers,
        num_attention_heads=4,
        ffn_dim=2 * settings.hidden_size,
        group_norm_groups=8,
        num_queries=10,
        input_dropout=settings.input_dropout,
        max_num_clips=settings.num_clips,
    )


def shuffle_labels(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The rows with their annotation columns moved to other samples (features and queries stay).

    A random cyclic order makes the move a derangement: no sample keeps its own labels (needs >= 2 rows).
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    source = np.empty_like(order)
    source[order] = np.roll(order, -1)
    return [{**row, **{column: rows[j][column] for column in LABEL_COLUMNS}} for row, j in zip(rows, source)]


def build_toy_dataset(settings: CheckSettings, folder: Path) -> None:
    """The toy task as a ``datasets`` folder with one config per run: ``real`` and (``train_shuffled``)
    ``shuffled``, whose training annotations are moved to other samples; both share the validation split."""
    task = toy_task(settings)
    train_rows = task.samples(settings.train_samples, "train")
    eval_rows = task.samples(settings.eval_samples, "validation")
    features = ArrayFeatures(
        {row["vid"]: row["video_features"] for row in train_rows + eval_rows},
        {row["qid"]: row["text_features"] for row in train_rows + eval_rows},
    )
    build_dataset(folder, "real", {"train": train_rows, "validation": eval_rows}, features)
    if settings.train_shuffled:
        shuffled = shuffle_labels(train_rows, settings.seed)
        build_dataset(folder, "shuffled", {"train": shuffled, "validation": eval_rows}, features)


def check_recipe(
    settings: CheckSettings,
    run: str,
    data_dir: Path,
    output_dir: Path,
    model_switches: Mapping[str, bool] | None = None,
) -> TrainingRecipe:
    """The training recipe of one run: ``settings.steps`` steps, evaluated every ``settings.eval_every``.
    ``model_switches``: config switches (e.g. the Table 2 ones) set on top of :func:`model_overrides`."""
    epochs = settings.steps / (settings.train_samples // settings.batch_size)
    return TrainingRecipe(
        name=f"learning-check-{run}",
        dataset_path=str(data_dir),
        dataset_config=run,
        epochs=math.ceil(epochs),
        max_steps=settings.steps,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=1e-4,
        # the paper's schedule shape (§4.4): warm-up, then halve at about 2/3 and 5/6 of
        # training (recipe milestones are whole epochs)
        warmup_iters=45,
        warmup_factor=0.001,
        milestones=[max(1, round(epochs * 2 / 3)), max(1, round(epochs * 5 / 6))],
        gamma=0.5,
        max_grad_norm=1.0,
        mixed_precision="no",
        seed=settings.seed,
        eval_every_steps=settings.eval_every,
        logging_steps=settings.eval_every,  # so that each curve point's loss is the mean since the last one
        main_metric=MAP_KEY,
        select_best=False,
        # the toy windows lie on the clip grid, as QVHighlights' do: round predictions to it (§4.4)
        window_round_seconds=toy_task(settings).config.clip_length,
        output_dir=str(output_dir),
        checkpoints_total_limit=1,
        model={**model_overrides(settings, toy_task(settings)), **(model_switches or {})},
    )


def train_and_evaluate(
    settings: CheckSettings,
    run: str,
    data_dir: Path,
    output_dir: Path,
    model_switches: Mapping[str, bool] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one run with the Trainer, which evaluates it on the held-out split every ``eval_every`` steps.

    Returns:
        ``({"curve": [{"step", "train_loss", "mAP", "R1@0.7", "HL-mAP"}, ...], "metrics": {...},
        "chance_mAP": float, "seconds": float, "model_switches": {...}}, history)``: the training loss is
        averaged over the steps since the previous evaluation; ``metrics`` are the final QVHighlights brief
        metrics on the held-out split and ``chance_mAP`` the final predictions' MR mAP@avg against the
        held-out labels of other samples; ``model_switches`` the trained model's values of the requested
        ``model_switches`` (read back from its config); ``history`` is the Trainer's (loss, lr and
        evaluation records).
    """
    start = time.perf_counter()
    trainer = Trainer(check_recipe(settings, run, data_dir, output_dir, model_switches))
    trainer.run()
    history = trainer.state.history
    losses = {record["step"]: record["loss"] for record in history if "loss" in record}
    evaluations = [record for record in history if "eval" in record]
    curve = [
        {
            "step": record["step"],
            "train_loss": losses[record["step"]],
            "mAP": record["eval"][MAP_KEY],
            **{name: record["eval"][key] for name, key in CURVE_KEYS.items()},
        }
        for record in evaluations
    ]
    recipe = trainer.recipe
    predictions = predict(
        trainer.model,
        trainer.eval_loader,
        trainer.accelerator,
        recipe.eval_top_k,
        recipe.window_round_seconds,
    )
    config = trainer.accelerator.unwrap_model(trainer.model).config
    chance = evaluate_predictions(
        "qvhighlights", predictions, shuffle_labels(trainer.references, settings.seed)
    )
    result = {
        "curve": curve,
        "metrics": evaluations[-1]["eval"],
        "chance_mAP": chance["brief"][MAP_KEY],
        "seconds": time.perf_counter() - start,
        "model_switches": {name: getattr(config, name) for name in model_switches or {}},
    }
    return result, history


def run_check(settings: CheckSettings, output_dir: Path) -> dict[str, Any]:
    """The runs, the verdict, ``results.json`` and ``learning_curve.png`` in ``output_dir``."""
    names = ("real", "shuffled") if settings.train_shuffled else ("real",)
    with tempfile.TemporaryDirectory(prefix="learning-check-") as workdir:
        build_toy_dataset(settings, Path(workdir) / "data")
        outcomes = {
            name: train_and_evaluate(settings, name, Path(workdir) / "data", Path(workdir) / name)
            for name in names
        }
    results = {name: result for name, (result, _) in outcomes.items()}
    scores = {"real_mAP": results["real"]["metrics"][MAP_KEY], "chance_mAP": results["real"]["chance_mAP"]}
    if settings.train_shuffled:
        scores["shuffled_mAP"] = results["shuffled"]["metrics"][MAP_KEY]
    passed = scores["real_mAP"] >= settings.min_real_map and all(
        value < settings.max_chance_map for name, value in scores.items() if name != "real_mAP"
    )
    summary = {
        "passed": passed,
        **scores,
        "settings": dataclasses.asdict(settings),
        "peak_rss_mib": peak_rss_mib(),
        "torch_threads": torch.get_num_threads(),
        "runs": results,
    }
    atomic_write_json(output_dir / "results.json", summary)
    histories = {name: history for name, (_, history) in outcomes.items()}
    # the real run's final predictions against other samples' labels
    histories["chance"] = [{"step": settings.steps, "eval": {MAP_KEY: scores["chance_mAP"]}}]
    plot_learning_curves(
        histories,
        output_dir / "learning_curve.png",
        MAP_KEY,
        reference_lines={"real: pass >=": settings.min_real_map, "chance: pass <": settings.max_chance_map},
        title="SG-DETR on the SYNTHETIC toy grounding task",
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for results.json and the PNG")
    parser.add_argument("--quick", action="store_true", help="the shortened check of the test suite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads (default 1, as the recorded figures: the thread count changes the summation order of the "
        "CPU kernels, and so the trajectory of the run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # seven lines per epoch-end checkpoint

    settings = dataclasses.replace(QUICK_SETTINGS if args.quick else CheckSettings(), seed=args.seed)
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        summary = run_check(settings, args.output_dir)
    finally:
        torch.set_num_threads(threads)  # main() also runs inside the test suite
    for name, run in summary["runs"].items():
        print(format_metrics_table(run["metrics"], title=f"{name} labels ({run['seconds']:.0f} s)"))
    others = ", ".join(
        f"{name} {value:.2f}" for name, value in summary.items() if name in ("shuffled_mAP", "chance_mAP")
    )
    print(
        f"{'PASSED' if summary['passed'] else 'FAILED'}: real mAP@avg {summary['real_mAP']:.2f} (needs >= "
        f"{settings.min_real_map}); {others} (need < {settings.max_chance_map}); peak RSS "
        f"{summary['peak_rss_mib']:.0f} MiB; results in {args.output_dir}"
    )
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

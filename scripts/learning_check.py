"""Learning check: SG-DETR learns the SYNTHETIC toy grounding task, and does not learn shuffled labels.

Runs with the same model, data order and seed, trained on CPU:

- ``real``: the toy task's training split (:mod:`sgdetr_hf.data.synthetic`);
- ``shuffled`` (full check only): the same videos and queries with the annotations (windows and saliency)
  moved to other samples, so that the features carry no information about the labels.

Each run is evaluated on the held-out validation split with the QVHighlights metric
(:func:`sgdetr_hf.metrics.compute_metrics`). The real run's final predictions are also scored against
the held-out annotations moved to other samples: the chance level of that very model (what it gets
for knowing only where windows usually are). The full check passes when the real run reaches MR
mAP@avg >= 60 while the shuffled run and the chance level stay below 10; the quick check (under a
minute, for the test suite) trains the real run only, with lower bars. Results (``results.json``) and
the learning curves (``learning_curve.png``) are written to ``--output-dir``.

    python scripts/learning_check.py --output-dir runs/learning_check          # full check, minutes
    python scripts/learning_check.py --output-dir /tmp/lc --quick              # < 1 minute, lower bars

Exit status 0 when the check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from sgdetr_hf.configuration_sgdetr import SGDetrConfig
from sgdetr_hf.data.collator import MomentRetrievalCollator
from sgdetr_hf.data.synthetic import ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.files import atomic_write_bytes, atomic_write_json
from sgdetr_hf.metrics import format_metrics_table
from sgdetr_hf.modeling_sgdetr import SGDetrForMomentRetrieval
from sgdetr_hf.training.evaluation import evaluate_predictions, predict
from sgdetr_hf.training.schedule import build_warmup_multistep_scheduler

logger = logging.getLogger("learning_check")

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


def model_config(settings: CheckSettings, task: ToyGroundingTask) -> SGDetrConfig:
    """A narrow SG-DETR with every part of the full model (all Table 2 switches on)."""
    return SGDetrConfig(
        video_feature_dim=task.config.video_dim,
        text_feature_dim=task.config.text_dim,
        hidden_size=settings.hidden_size,
        num_encoder_layers=settings.num_encoder_layers,
        num_decoder_layers=settings.num_decoder_layers,
        num_attention_heads=4,
        ffn_dim=2 * settings.hidden_size,
        group_norm_groups=8,
        num_queries=10,
        input_dropout=settings.input_dropout,
        clip_length=task.config.clip_length,
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


def train_and_evaluate(settings: CheckSettings, shuffled: bool) -> dict[str, Any]:
    """Train one run and evaluate it on the held-out split every ``eval_every`` steps.

    Returns:
        ``{"curve": [{"step", "train_loss", "mAP", "R1@0.7", "HL-mAP"}, ...], "metrics": {...},
        "chance_mAP": float, "seconds": float}``: the training loss is averaged over the steps since the
        previous evaluation; ``metrics`` are the final QVHighlights brief metrics on the held-out split and
        ``chance_mAP`` the final predictions' MR mAP@avg against the held-out labels of other samples.
    """
    torch.manual_seed(settings.seed)
    task = toy_task(settings)
    train_rows = task.samples(settings.train_samples, "train")
    if shuffled:
        train_rows = shuffle_labels(train_rows, settings.seed)
    eval_rows = task.samples(settings.eval_samples, "validation")
    collator = MomentRetrievalCollator(seed=settings.seed)
    eval_batches = [collator(eval_rows[i : i + 32]) for i in range(0, len(eval_rows), 32)]
    references = [{k: v for k, v in row.items() if not k.endswith("_features")} for row in eval_rows]

    model = SGDetrForMomentRetrieval(model_config(settings, task))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    # the paper's schedule shape (sg-detr.md §5.1): warm-up, then halve at 2/3 and 5/6 of training
    milestones = [round(settings.steps * 2 / 3), round(settings.steps * 5 / 6)]
    scheduler = build_warmup_multistep_scheduler(optimizer, 45, 0.001, milestones, 0.5)
    accelerator = Accelerator(cpu=True)
    order = torch.Generator().manual_seed(settings.seed)

    curve, window_losses, step, start = [], [], 0, time.perf_counter()
    model.train()
    while step < settings.steps:
        permutation = torch.randperm(len(train_rows), generator=order).tolist()
        for first in range(0, len(permutation) - settings.batch_size + 1, settings.batch_size):  # drop_last
            batch = collator([train_rows[i] for i in permutation[first : first + settings.batch_size]])
            outputs = model(
                batch["video_features"],
                batch["video_mask"],
                batch["text_features"],
                batch["text_mask"],
                labels=batch["labels"],
            )
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            window_losses.append(outputs.loss.item())
            step += 1
            if step % settings.eval_every == 0 or step == settings.steps:
                # the toy windows lie on the clip grid, as QVHighlights' do: round predictions to it (§4.4)
                predictions = predict(
                    model, eval_batches, accelerator, round_to=task.config.clip_length, description="held-out"
                )
                metrics = evaluate_predictions("qvhighlights", predictions, references)["brief"]
                point = {"step": step, "train_loss": float(np.mean(window_losses)), "mAP": metrics[MAP_KEY]}
                point.update({name: metrics[key] for name, key in CURVE_KEYS.items()})
                curve.append(point)
                logger.info("%s labels, %s", "shuffled" if shuffled else "real", point)
                window_losses = []
            if step == settings.steps:
                break
    chance = evaluate_predictions("qvhighlights", predictions, shuffle_labels(references, settings.seed))
    seconds = time.perf_counter() - start
    return {"curve": curve, "metrics": metrics, "chance_mAP": chance["brief"][MAP_KEY], "seconds": seconds}


def plot_learning_curves(results: dict[str, dict[str, Any]], settings: CheckSettings, path: Path) -> None:
    """Training loss and held-out MR mAP@avg against the step, for every run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for name, run in results.items():
        steps = [point["step"] for point in run["curve"]]
        loss_axis.plot(steps, [point["train_loss"] for point in run["curve"]], marker="o", label=name)
        map_axis.plot(steps, [point["mAP"] for point in run["curve"]], marker="o", label=name)
    map_axis.axhline(settings.min_real_map, color="green", linestyle="--", linewidth=1, label="real: pass >=")
    map_axis.axhline(
        settings.max_chance_map, color="red", linestyle="--", linewidth=1, label="chance: pass <"
    )
    map_axis.plot(  # the real run's final predictions against other samples' labels
        [settings.steps],
        [results["real"]["chance_mAP"]],
        marker="x",
        color="black",
        linestyle="",
        label="chance",
    )
    loss_axis.set(
        xlabel="training step", ylabel="training loss (eq. 15)", yscale="log", title="training loss"
    )
    map_axis.set(xlabel="training step", ylabel="MR mAP@avg (%)", ylim=(0, 100), title="held-out MR mAP@avg")
    for axis in (loss_axis, map_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("SG-DETR on the SYNTHETIC toy grounding task (CPU)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def run_check(settings: CheckSettings, output_dir: Path) -> dict[str, Any]:
    """The runs, the verdict, ``results.json`` and ``learning_curve.png`` in ``output_dir``."""
    names = ("real", "shuffled") if settings.train_shuffled else ("real",)
    results = {name: train_and_evaluate(settings, shuffled=name == "shuffled") for name in names}
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
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "runs": results,
    }
    atomic_write_json(output_dir / "results.json", summary)
    plot_learning_curves(results, settings, output_dir / "learning_curve.png")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for results.json and the PNG")
    parser.add_argument("--quick", action="store_true", help="the shortened check of the test suite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    settings = dataclasses.replace(QUICK_SETTINGS if args.quick else CheckSettings(), seed=args.seed)
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    summary = run_check(settings, args.output_dir)
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

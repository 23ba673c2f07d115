"""``sgdetr evaluate``: score a prediction file against an annotation file.

    sgdetr evaluate --predictions P.jsonl --annotations G.jsonl --dataset qvhighlights [--output M.json]

Prints the ``brief`` metrics as a table and writes the full metrics JSON (the official QVHighlights
layout for ``qvhighlights``) atomically to ``--output``.
"""

import argparse
import logging
from collections.abc import Mapping

from .sgdetr_eval.mr_hd_metrics import DATASETS, compute_metrics, read_jsonl, write_json

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="predictions, JSON Lines (one object per query)")
    parser.add_argument(
        "--annotations", required=True, help="ground truth, JSON Lines (the dataset's release file)"
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="evaluation protocol")
    parser.add_argument("--output", help="write the full metrics JSON here (atomically)")


def format_table(metrics: Mapping[str, float]) -> str:
    """A two-column text table of ``name -> value`` (percent)."""
    width = max(map(len, metrics), default=0)
    lines = [f"{'metric':<{width}}  {'value':>6}", f"{'-' * width}  {'-' * 6}"]
    lines += [f"{name:<{width}}  {value:>6.2f}" for name, value in metrics.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        predictions = read_jsonl(args.predictions)
        references = read_jsonl(args.annotations)
        metrics = compute_metrics(args.dataset, predictions, references)
        if args.output:
            write_json(args.output, metrics)
    except (OSError, ValueError) as error:
        logger.error(
            "evaluation failed (predictions %s, annotations %s): %s",
            args.predictions,
            args.annotations,
            error,
        )
        return 1
    print(format_table(metrics["brief"]))
    if args.output:
        logger.info("wrote %s", args.output)
    return 0

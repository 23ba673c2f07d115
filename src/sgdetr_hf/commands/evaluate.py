"""``sgdetr evaluate``: score a prediction file against an annotation file.

    sgdetr evaluate --predictions P.jsonl --annotations G.jsonl --dataset qvhighlights [--output M.json]

Prints the ``brief`` metrics as a table and writes the full metrics JSON (the official QVHighlights
layout for ``qvhighlights``) atomically to ``--output``.
"""

import argparse
import logging

from ..files import atomic_write_json
from ..metrics import DATASETS, compute_metrics, format_metrics_table, read_jsonl

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, help="predictions, JSON Lines (one object per query)")
    parser.add_argument(
        "--annotations", required=True, help="ground truth, JSON Lines (the dataset's release file)"
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="evaluation protocol")
    parser.add_argument("--output", help="write the full metrics JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    try:
        predictions = read_jsonl(args.predictions)
        references = read_jsonl(args.annotations)
        metrics = compute_metrics(args.dataset, predictions, references)
        if args.output:
            atomic_write_json(args.output, metrics, indent=4)  # the official evaluator's layout
    except (OSError, ValueError) as error:
        logger.error(
            "evaluation failed (predictions %s, annotations %s): %s",
            args.predictions,
            args.annotations,
            error,
        )
        return 1
    print(format_metrics_table(metrics["brief"]))
    if args.output:
        logger.info("wrote %s", args.output)
    return 0

"""Evaluation metrics of SG-DETR: moment retrieval and highlight detection (numpy only, no torch).

The plain function API is the primary one::

    from sgdetr_hf.metrics import compute_metrics, read_jsonl

    metrics = compute_metrics("qvhighlights", read_jsonl("preds.jsonl"), read_jsonl("gt.jsonl"))
    metrics["brief"]["MR-full-mAP"]

The same code is an ``evaluate`` module (``evaluate.load(str(EVALUATE_MODULE_PATH))``) and the command
``sgdetr evaluate``; :func:`format_metrics_table` prints the ``brief`` metrics for every command. The logic lives once, in ``sgdetr_eval/mr_hd_metrics.py``: that folder is also the
metric's Hub repository, so it must not import this package.
"""

from pathlib import Path

from .sgdetr_eval.mr_hd_metrics import (
    DATASETS,
    MAP_IOU_THRESHOLDS,
    SINGLE_MOMENT_R1_THRESHOLDS,
    TVSUM_DOMAINS,
    YOUTUBE_DOMAINS,
    compute_metrics,
    evaluate_charades_sta,
    evaluate_qvhighlights,
    evaluate_tacos,
    evaluate_tvsum,
    evaluate_youtube_highlights,
    parse_jsonl,
    read_jsonl,
    write_json,
)
from .table import format_metrics_table

#: The ``evaluate`` module folder (``evaluate.load(str(EVALUATE_MODULE_PATH))``); uploaded as the metric Space.
EVALUATE_MODULE_PATH = Path(__file__).resolve().parent / "sgdetr_eval"

__all__ = [
    "DATASETS",
    "EVALUATE_MODULE_PATH",
    "MAP_IOU_THRESHOLDS",
    "SINGLE_MOMENT_R1_THRESHOLDS",
    "TVSUM_DOMAINS",
    "YOUTUBE_DOMAINS",
    "compute_metrics",
    "evaluate_charades_sta",
    "evaluate_qvhighlights",
    "evaluate_tacos",
    "evaluate_tvsum",
    "evaluate_youtube_highlights",
    "format_metrics_table",
    "parse_jsonl",
    "read_jsonl",
    "write_json",
]

"""SG-DETR moment retrieval and highlight detection metrics as an ``evaluate`` module.

A thin wrapper: the metrics live in ``mr_hd_metrics.py`` beside this file (numpy only), which
``evaluate.load`` copies with it through the relative import below, so the module works where the
``sgdetr_hf`` package is not installed (the Hub). Keep one import per line: ``evaluate`` finds the
module's dependencies by scanning its import lines.
"""

# ruff: noqa: I001 (a scripts/evaluate.py in the checkout makes ruff take `evaluate` for first-party;
# no comment may follow an import line: evaluate's dependency scan would read it as an install hint)
import datasets
import evaluate

from .mr_hd_metrics import compute_metrics

_DESCRIPTION = """\
Moment retrieval (MR) and highlight detection (HD) metrics of SG-DETR, identical at 2 decimals to the
official evaluation code of each benchmark: QVHighlights (Moment-DETR's standalone_eval: MR R1 and mAP
at IoU 0.5:0.05:0.95 for the full/long/middle/short buckets, HL mAP and Hit@1 at the Fair/Good/VeryGood
levels), Charades-STA and TACoS (R1@0.3:0.05:0.95, mAP, mIoU), YouTube Highlights (mAP per domain) and
TVSum (top-5 mAP per domain). Every value is a percentage rounded to 2 decimals.
"""

_KWARGS_DESCRIPTION = """\
Rows may be the JSON Lines objects as they are: only the fields below are kept, a missing field counts
as absent, and qids are converted with str() (in predictions and references alike, so the int 5 and
the string "5" match here, unlike in the plain function API). Rows are matched by qid, not by position.

Args:
    predictions: one dict per query: qid, pred_relevant_windows ([[start_s, end_s, score], ...], best
        first), pred_saliency_scores ([score per clip]).
    references: one dict per query: qid, duration (seconds), relevant_windows ([[start_s, end_s], ...]),
        relevant_clip_ids ([int]), saliency_scores ([[a1, a2, a3], ...]), label ([[...] per clip],
        YouTube Highlights / TVSum), domain (str).
    dataset: one of "qvhighlights" (default), "charades_sta", "tacos", "youtube_highlights", "tvsum"
        (mr_hd_metrics.DATASETS).
Returns:
    The nested metrics: {"brief": {...}, <sections>}; for "qvhighlights" the layout and key names of
    the official evaluation ("brief", "HL-min-Fair", ..., "full", "long", "middle", "short").
Examples:
    >>> metric = evaluate.load("sgdetr_eval")
    >>> metric.compute(
    ...     predictions=[{"qid": 1, "pred_relevant_windows": [[40.0, 80.0, 0.9]]}],
    ...     references=[{"qid": 1, "duration": 150.0, "relevant_windows": [[40.0, 80.0]]}],
    ... )["brief"]["MR-full-mAP"]
    100.0
"""

_CITATION = """\
@article{gordeev2024sgdetr,
  title   = {Saliency-Guided DETR for Moment Retrieval and Highlight Detection},
  author  = {Gordeev, Aleksandr and Dokholyan, Vladimir and Tolstykh, Irina and Kuprashevich, Maksim},
  journal = {arXiv preprint arXiv:2410.01615},
  year    = {2024}
}
@inproceedings{lei2021qvhighlights,
  title     = {QVHighlights: Detecting Moments and Highlights in Videos via Natural Language Queries},
  author    = {Lei, Jie and Berg, Tamara L. and Bansal, Mohit},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2021}
}
"""

_FLOAT = datasets.Value("float64")  # float32 would move IoUs that sit exactly on a threshold

_PREDICTION_FEATURES = {
    "qid": datasets.Value("string"),
    "pred_relevant_windows": datasets.List(datasets.List(_FLOAT)),
    "pred_saliency_scores": datasets.List(_FLOAT),
}
_REFERENCE_FEATURES = {
    "qid": datasets.Value("string"),
    "duration": _FLOAT,
    "relevant_windows": datasets.List(datasets.List(_FLOAT)),
    "relevant_clip_ids": datasets.List(datasets.Value("int64")),
    "saliency_scores": datasets.List(datasets.List(_FLOAT)),
    "label": datasets.List(datasets.List(_FLOAT)),
    "domain": datasets.Value("string"),
}


def _feature_value(row, name, feature):
    """The value of field ``name`` of a row as ``evaluate`` accepts it: qids as strings, and an empty
    string for a missing string field (``evaluate`` refuses None there; a missing qid stays None and is
    rejected)."""
    value = row.get(name)
    if name == "qid":
        return None if value is None else str(value)
    if value is None and feature == datasets.Value("string"):
        return ""
    return value


def _as_features(rows, features):
    """Rows restricted to the declared fields (JSON Lines objects may carry others, e.g. "query")."""
    if rows is None:
        return None
    return [{name: _feature_value(row, name, feature) for name, feature in features.items()} for row in rows]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SgdetrEval(evaluate.Metric):
    """Moment retrieval and highlight detection metrics (QVHighlights, Charades-STA, TACoS, YouTube
    Highlights, TVSum)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": _PREDICTION_FEATURES, "references": _REFERENCE_FEATURES}
            ),
            reference_urls=["https://arxiv.org/abs/2410.01615", "https://arxiv.org/abs/2107.09609"],
        )

    # evaluate appends the inputs description to these two docstrings, so they must exist.
    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add rows (JSON Lines objects) of predictions and references."""
        predictions = _as_features(predictions, _PREDICTION_FEATURES)
        references = _as_features(references, _REFERENCE_FEATURES)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction row and one reference row."""
        prediction = None if prediction is None else _as_features([prediction], _PREDICTION_FEATURES)[0]
        reference = None if reference is None else _as_features([reference], _REFERENCE_FEATURES)[0]
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, dataset="qvhighlights"):
        return compute_metrics(dataset, predictions, references)

"""Moment retrieval (MR) and highlight detection (HD) metrics, vectorised with numpy.

The single implementation of every metric of the project, equal to the official evaluation code:

- QVHighlights: the official Moment-DETR ``standalone_eval`` metric set and JSON layout (MR R1 and mAP
  per IoU threshold 0.5:0.05:0.95 for the full/long/middle/short buckets, HL mAP and Hit@1 for the
  Fair/Good/VeryGood levels), equal to the official numbers at 2 decimals;
- Charades-STA and TACoS: R1@{0.3, ..., 0.95}, mAP and mIoU of the ``full`` bucket (CG-DETR's variant);
- YouTube Highlights: trapezoid mAP per domain and their average;
- TVSum: top-5 trapezoid mAP per domain and their average.

This file needs only the standard library and numpy: it is imported by the ``sgdetr_hf.metrics``
package, copied by ``evaluate.load`` next to the ``sgdetr_eval.py`` wrapper (its relative import), and
run as the reference-style command line::

    python mr_hd_metrics.py --submission_path PRED.jsonl --gt_path GT.jsonl --save_path OUT.json

Units: windows are ``[start, end]`` in seconds with start < end (predictions add a score, ``[start, end,
score]``, and may have start == end); a QVHighlights saliency clip ``i`` covers seconds ``[2i, 2i + 2)``.
Every reported number is a percentage rounded once to 2 decimals from double-precision intermediate values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

logger = logging.getLogger(__name__)

DATASETS = ("qvhighlights", "charades_sta", "tacos", "youtube_highlights", "tvsum")

#: IoU thresholds of MR mAP and QVHighlights R1: the doubles nearest to 0.5, 0.55, ..., 0.95.
MAP_IOU_THRESHOLDS = tuple(percent / 100 for percent in range(50, 100, 5))
#: R1 thresholds of Charades-STA and TACoS (CG-DETR): 0.3, 0.35, ..., 0.95.
SINGLE_MOMENT_R1_THRESHOLDS = tuple(percent / 100 for percent in range(30, 100, 5))
#: Only the first windows of a prediction row (in list order, before sorting by score) enter mAP.
MAX_PREDICTED_WINDOWS = 10
#: QVHighlights GT-window length buckets in seconds, (low, high]; ``full`` keeps every window.
LENGTH_BUCKETS = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0), "full": None}
#: Length of a QVHighlights saliency clip in seconds.
CLIP_SECONDS = 2.0
#: HL levels: a clip is positive for an annotator whose score (0..4) is >= the level's minimum.
HIGHLIGHT_LEVELS = (("Fair", 2), ("Good", 3), ("VeryGood", 4))
YOUTUBE_DOMAINS = ("dog", "gymnastics", "parkour", "skating", "skiing", "surfing")
#: TVSum domains in the column order of the SG-DETR paper (Table 6).
TVSUM_DOMAINS = ("VT", "VU", "GA", "MS", "PK", "PR", "FM", "BK", "BT", "DS")
TVSUM_TOP_K = 5

# What each input field must hold (completes the error messages).
_EXPECTED = {
    "qid": "an int or a string identifying the query",
    "pred_relevant_windows": (
        "a non-empty list of [start, end, score] windows (seconds, start <= end), best first"
    ),
    "pred_saliency_scores": "a non-empty list of numbers, one score per clip",
    "relevant_windows": "a non-empty list of [start, end] windows in seconds, start < end",
    "duration": "the video length in seconds, a number >= 2 (one 2-second clip at least)",
    "relevant_clip_ids": "a non-empty list of integer clip ids (clip i covers seconds [2i, 2i + 2))",
    "saliency_scores": "one [score, score, score] row (three annotators, 0..4) per relevant clip id",
    "label": "one row per clip: [0 or 1] (YouTube Highlights) or every annotator's score (TVSum)",
    "domain": "the domain name",
}
_SEQUENCE_TYPES = (list, tuple, np.ndarray)
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_INTEGER_TYPES = (int, np.integer)
#: Largest accepted QVHighlights ``duration`` (s): 2 s x 2**53 clips, the largest exact float64 integer.
_MAX_DURATION = CLIP_SECONDS * 2.0**53


# ------------------------------------------------------------------------------------------ input checks
class _BadItem(Exception):
    """Internal: item ``index`` of a flattened input is invalid; translated into a ValueError naming the row."""

    def __init__(self, index: int, problem: str):
        super().__init__(problem)
        self.index = index
        self.problem = problem


def _owner(flat_index: int, counts: np.ndarray) -> tuple[int, int]:
    """(sequence index, position inside it) of item ``flat_index`` of the concatenation of sequences."""
    ends = np.cumsum(counts)
    owner = int(np.searchsorted(ends, flat_index, side="right"))
    return owner, int(flat_index - (ends[owner] - counts[owner]))


def _float_array(items: list, *, integer: bool = False) -> np.ndarray:
    """float64 array of a flat list of finite JSON numbers (ints or floats; bools are rejected)."""
    allowed = _INTEGER_TYPES if integer else _NUMBER_TYPES
    if not all(kind is not bool and issubclass(kind, allowed) for kind in set(map(type, items))):
        index = next(i for i, x in enumerate(items) if isinstance(x, bool) or not isinstance(x, allowed))
        raise _BadItem(
            index, f"holds {items[index]!r}, which is not {'an integer' if integer else 'a number'}"
        )
    try:
        array = np.array(items, dtype=np.float64)
    except OverflowError:  # an int beyond the float64 range
        index = next(i for i, x in enumerate(items) if abs(x) > sys.float_info.max)
        raise _BadItem(index, f"holds {items[index]}, which is too large") from None
    if not np.isfinite(array).all():
        index = int(np.argmin(np.isfinite(array)))
        raise _BadItem(index, f"holds {items[index]!r}, which is not a finite number")
    return array


def _ragged(sequences: list, *, integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a list of number lists: (values (total,) float64, counts (n,) int)."""
    for index, sequence in enumerate(sequences):
        if not isinstance(sequence, _SEQUENCE_TYPES):
            raise _BadItem(index, f"is {sequence!r}, not a list")
    counts = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    try:
        values = _float_array(list(chain.from_iterable(sequences)), integer=integer)
    except _BadItem as bad:
        index, position = _owner(bad.index, counts)
        raise _BadItem(index, f"{bad.problem} (element {position})") from None
    return values, counts


class _Rows:
    """Prediction or reference rows (JSON objects) with errors that name the row, the qid and the field.

    A field whose value is ``None`` counts as absent (``evaluate`` fills undeclared fields with ``None``).
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], kind: str):
        if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
            raise ValueError(
                f"{kind}s must be a list of JSON objects (one per query), got {type(rows).__name__}"
            )
        if not rows:
            raise ValueError(f"no {kind} rows given: expected one JSON object per query")
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"{kind} row {index + 1} is {row!r}; expected a JSON object with a 'qid'")
        self.rows = rows
        self.kind = kind
        self.qids = [row.get("qid") for row in rows]
        for index, qid in enumerate(self.qids):
            if isinstance(qid, np.integer):  # e.g. ids gathered from numpy arrays
                self.qids[index] = qid = int(qid)
            if isinstance(qid, bool) or not isinstance(qid, (int, str)):
                raise ValueError(f"{kind} row {index + 1}: 'qid' is {qid!r}; expected {_EXPECTED['qid']}")

    def has(self, index: int, field: str) -> bool:
        return self.rows[index].get(field) is not None

    def fail(self, index: int, field: str, problem: str) -> NoReturn:
        raise ValueError(
            f"{self.kind} row {index + 1} (qid {self.qids[index]!r}): '{field}' {problem}; "
            f"expected {_EXPECTED[field]}"
        )

    def require_entries(self, field: str, rows: np.ndarray, counts: np.ndarray, min_count: int) -> None:
        """Fail on the first of ``rows`` whose list ``field`` has fewer than ``min_count`` entries."""
        short = np.flatnonzero(counts < min_count)
        if short.size:
            self.fail(rows[short[0]], field, f"has {counts[short[0]]} entries")

    def values(self, field: str, rows: np.ndarray) -> list:
        """The field of each of ``rows`` (row indices), which must all have it."""
        values = [self.rows[index].get(field) for index in rows]
        for index, value in zip(rows, values):
            if value is None:
                self.fail(index, field, "is missing")
        return values

    def numbers(self, field: str, rows: np.ndarray) -> np.ndarray:
        """One finite number per row: (len(rows),) float64."""
        try:
            return _float_array(self.values(field, rows))
        except _BadItem as bad:
            self.fail(rows[bad.index], field, bad.problem)

    def number_lists(
        self, field: str, rows: np.ndarray, *, integer: bool = False, min_count: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """A list of numbers per row: (values (total,) float64, counts (len(rows),) int)."""
        try:
            values, counts = _ragged(self.values(field, rows), integer=integer)
        except _BadItem as bad:
            self.fail(rows[bad.index], field, bad.problem)
        self.require_entries(field, rows, counts, min_count)
        return values, counts

    def number_rows(
        self,
        field: str,
        rows: np.ndarray,
        *,
        width: int | None,
        exact: bool,
        limit: int | None = None,
        min_count: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A list of number rows (windows, annotator scores) per row.

        Only the first ``limit`` rows of each list are read. Each read row must hold ``width`` numbers
        (``exact``) or at least ``width`` (only the first ``width`` are kept); ``width=None`` takes the
        width of the first row and requires it everywhere. Returns (values (total, width) float64,
        counts (len(rows),) int).
        """
        lists = self.values(field, rows)
        try:
            for index, value in enumerate(lists):
                if not isinstance(value, _SEQUENCE_TYPES):
                    raise _BadItem(index, f"is {value!r}, not a list")
            if limit is not None:
                lists = [value[:limit] for value in lists]
            counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            inner = list(chain.from_iterable(lists))
            try:
                values, sizes = _ragged(inner)
            except _BadItem as bad:
                index, position = _owner(bad.index, counts)
                raise _BadItem(index, f"entry {position} {bad.problem}") from None
        except _BadItem as bad:
            self.fail(rows[bad.index], field, bad.problem)
        self.require_entries(field, rows, counts, min_count)
        if width is None:
            width = int(sizes[0]) if sizes.size else 0
            exact = True
        wrong = np.flatnonzero(sizes != width if exact else sizes < width)
        if wrong.size:
            index, position = _owner(wrong[0], counts)
            self.fail(
                rows[index],
                field,
                f"entry {position} is {inner[wrong[0]]!r}, with {sizes[wrong[0]]} number(s)",
            )
        starts = np.cumsum(sizes) - sizes
        return values[starts[:, None] + np.arange(width)], counts

    def strings(self, field: str, rows: np.ndarray, allowed: Sequence[str]) -> list[str]:
        values = self.values(field, rows)
        for index, value in zip(rows, values):
            if value not in allowed:
                self.fail(index, field, f"is {value!r}, not one of {', '.join(allowed)}")
        return values


@dataclass(frozen=True)
class _Matching:
    """How prediction rows map onto the annotated queries.

    Queries are numbered in the order of their first prediction row (the order of the reference code).
    """

    row_query: np.ndarray  # (num_prediction_rows,) query number of each prediction row
    last_row: np.ndarray  # (num_queries,) last prediction row of each query (R1 and HL use it)
    reference_row: np.ndarray  # (num_queries,) reference row of each query


def _match_queries(predictions: _Rows, references: _Rows) -> _Matching:
    """Check that predictions and references cover the same qids (compared by value and type)."""
    reference_row: dict[Any, int] = {}
    for index, qid in enumerate(references.qids):
        if (qid, type(qid)) in reference_row:
            raise ValueError(
                f"reference row {index + 1}: qid {qid!r} already appears on reference row "
                f"{reference_row[qid, type(qid)] + 1}; expected one annotation row per query"
            )
        reference_row[qid, type(qid)] = index
    keys = [(qid, type(qid)) for qid in predictions.qids]
    unknown = [index for index, key in enumerate(keys) if key not in reference_row]
    if unknown:
        qid = predictions.qids[unknown[0]]
        hint = ""
        if isinstance(qid, str) and qid.lstrip("-").isdigit() and (int(qid), int) in reference_row:
            hint = f" (the annotations have the int qid {int(qid)}; qids are compared by value and type)"
        elif isinstance(qid, int) and (str(qid), str) in reference_row:
            hint = f" (the annotations have the string qid {str(qid)!r}; qids are compared by value and type)"
        raise ValueError(
            f"prediction row {unknown[0] + 1}: qid {qid!r} is not annotated{hint}; "
            f"{len(unknown)} prediction row(s) have qids missing from the references"
        )
    queries = list(dict.fromkeys(keys))
    predicted = set(queries)
    missing = [key[0] for key in reference_row if key not in predicted]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} annotated qid(s) have no prediction row ({shown}); "
            "expected at least one prediction row per annotated query"
        )
    position = {key: number for number, key in enumerate(queries)}
    row_query = np.array([position[key] for key in keys], dtype=np.int64)
    last_row = np.zeros(len(queries), dtype=np.int64)
    np.maximum.at(last_row, row_query, np.arange(len(keys)))
    return _Matching(row_query, last_row, np.array([reference_row[key] for key in queries], dtype=np.int64))


def _pad(values: np.ndarray, counts: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Ragged rows -> (padded (n, max_count, *values.shape[1:]), mask (n, max_count))."""
    mask = np.arange(int(counts.max(initial=0))) < counts[:, None]
    padded = np.full(mask.shape + values.shape[1:], fill, dtype=values.dtype)
    padded[mask] = values
    return padded, mask


def _percent(fraction: float) -> float:
    """100 x fraction, correctly rounded to 2 decimals (what the reference's ``f"{:.2f}"`` does)."""
    return float(f"{100 * fraction:.2f}")


# ------------------------------------------------------------------------------------- moment retrieval
@dataclass(frozen=True)
class _Moments:
    """Windows of every query, padded (seconds)."""

    predicted: np.ndarray  # (Q, P, 3) [start, end, score]: the first 10 windows of each prediction row of
    #                         the query, rows in file order (duplicate rows are pooled, as the reference does)
    predicted_mask: np.ndarray  # (Q, P)
    top1: np.ndarray  # (Q, 2) first listed window of the query's last prediction row
    truth: np.ndarray  # (Q, G, 2) [start, end] GT windows
    truth_mask: np.ndarray  # (Q, G)


def _refuse_bad_windows(
    rows: _Rows, field: str, row_indices: np.ndarray, windows: np.ndarray, counts: np.ndarray, bad: np.ndarray
) -> None:
    """Fail on the first window flagged in ``bad`` ((total,) over ``windows``: the windows of the rows
    ``row_indices``, ``counts`` per row)."""
    if not bad.any():
        return
    flat = int(np.argmax(bad))
    index, position = _owner(flat, counts)
    entry = rows.rows[row_indices[index]][field][position]
    shown = np.asarray(entry).tolist() if isinstance(entry, np.ndarray) else entry
    start, end = windows[flat, 0], windows[flat, 1]
    problem = "is after its end" if start > end else "equals its end (a zero-length window)"
    rows.fail(row_indices[index], field, f"entry {position} is {shown!r}, whose start {problem}")


def _read_moments(predictions: _Rows, references: _Rows, matching: _Matching) -> _Moments:
    """The windows of every query. Refused: a predicted window whose start is after its end, and a GT
    window that does not have start < end (with start <= end for predictions and start < end for GT,
    every IoU has a positive denominator). The reference code takes such windows and scores a reversed
    window as a mAP hit (a 0 / 0 = NaN IoU); a zero-length prediction is kept, its IoU is 0."""
    rows = np.argsort(matching.row_query, kind="stable")  # rows grouped by query, file order inside a query
    windows, counts = predictions.number_rows(
        "pred_relevant_windows", rows, width=3, exact=False, limit=MAX_PREDICTED_WINDOWS
    )
    _refuse_bad_windows(
        predictions, "pred_relevant_windows", rows, windows, counts, windows[:, 0] > windows[:, 1]
    )
    num_queries = len(matching.last_row)
    per_query = np.bincount(matching.row_query[rows], weights=counts, minlength=num_queries).astype(np.int64)
    predicted, predicted_mask = _pad(windows, per_query, 0.0)
    first_window = np.cumsum(counts) - counts  # of each row of `rows`, in `windows`
    rank_of_row = np.empty_like(rows)
    rank_of_row[rows] = np.arange(len(rows))
    top1 = windows[first_window[rank_of_row[matching.last_row]], :2]
    truth, truth_counts = references.number_rows(
        "relevant_windows", matching.reference_row, width=2, exact=False
    )
    _refuse_bad_windows(
        references,
        "relevant_windows",
        matching.reference_row,
        truth,
        truth_counts,
        truth[:, 0] >= truth[:, 1],
    )
    truth, truth_mask = _pad(truth, truth_counts, 0.0)
    return _Moments(predicted, predicted_mask, top1, truth, truth_mask)


def _pairwise_iou(windows: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of (Q, P, 2) windows with (Q, G, 2) GT windows -> (Q, P, G).

    union = sum of the lengths - intersection, no clipping, as the reference. The denominator is at least
    the GT window's length, so it is positive for the windows that :func:`_read_moments` accepts (start <=
    end, GT start < end); the reference would give 0 / 0 = NaN for a reversed window whose length
    magnitude equals a GT window's, and count it as a hit.
    """
    start = np.maximum(windows[:, :, None, 0], truth[:, None, :, 0])
    end = np.minimum(windows[:, :, None, 1], truth[:, None, :, 1])
    intersection = np.clip(end - start, 0.0, None)
    union = (windows[:, :, None, 1] - windows[:, :, None, 0]) + (truth[:, None, :, 1] - truth[:, None, :, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / (union - intersection)


def _hull_iou(windows: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of paired (Q, 2) windows with the hull as union (the reference's R1 formula); 0 if the hull is 0."""
    intersection = np.maximum(
        0.0, np.minimum(windows[:, 1], truth[:, 1]) - np.maximum(windows[:, 0], truth[:, 0])
    )
    hull = np.maximum(windows[:, 1], truth[:, 1]) - np.minimum(windows[:, 0], truth[:, 0])
    return np.divide(intersection, hull, out=np.zeros_like(intersection), where=hull != 0)


def _detection_average_precision(
    moments: _Moments, truth_mask: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """AP of each query at each IoU threshold -> (Q, T).

    Predictions are sorted by descending score with a stable sort (tied scores keep list order) and
    matched greedily, independently per threshold: each takes the free GT window of highest IoU if that
    IoU is >= t, otherwise it is a false positive (IoUs are never NaN: see :func:`_pairwise_iou`). AP is
    VOC all-point interpolated over the query's GT windows in ``truth_mask``.
    """
    order = np.argsort(
        np.where(moments.predicted_mask, -moments.predicted[..., 2], np.inf), axis=1, kind="stable"
    )
    predicted = np.take_along_axis(moments.predicted, order[..., None], axis=1)
    predicted_mask = np.take_along_axis(moments.predicted_mask, order, axis=1)
    iou = _pairwise_iou(predicted[..., :2], moments.truth)  # (Q, P, G)
    match_key = np.where(truth_mask[:, None, :] & predicted_mask[:, :, None], iou, -np.inf)

    num_queries, num_predicted, num_truth = iou.shape
    taken = np.zeros((num_queries, len(thresholds), num_truth), dtype=bool)
    true_positive = np.zeros((num_queries, len(thresholds), num_predicted), dtype=bool)
    query_index = np.arange(num_queries)[:, None]
    threshold_index = np.arange(len(thresholds))[None, :]
    for rank in range(num_predicted):  # greedy matching is sequential in score order
        key = np.where(taken, -np.inf, match_key[:, None, rank, :])  # (Q, T, G)
        # Among equal IoUs the later GT window wins (the order of the reference's argsort()[::-1]).
        best = num_truth - 1 - np.argmax(key[..., ::-1], axis=-1)  # (Q, T)
        hit = np.take_along_axis(key, best[..., None], axis=-1)[..., 0] >= thresholds
        true_positive[:, :, rank] = hit
        taken[query_index, threshold_index, best] |= hit

    hits = np.cumsum(true_positive, axis=-1, dtype=np.float64)
    precision = np.where(predicted_mask[:, None, :], hits / np.arange(1, num_predicted + 1), 0.0)
    precision = np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]  # best precision at >= recall
    recall = hits / truth_mask.sum(axis=1)[:, None, None]
    return (np.diff(recall, axis=-1, prepend=0.0) * precision).sum(axis=-1)


def _top1_iou(moments: _Moments, truth_mask: np.ndarray) -> np.ndarray:
    """Hull IoU of each query's first listed window with its best GT window (first of equal IoUs) -> (Q,)."""
    iou = np.where(truth_mask, _pairwise_iou(moments.top1[:, None, :], moments.truth)[:, 0, :], -np.inf)
    best = np.argmax(iou, axis=1)
    return _hull_iou(moments.top1, moments.truth[np.arange(len(best)), best])


def _select(moments: _Moments, queries: np.ndarray) -> _Moments:
    return _Moments(*(getattr(moments, field)[queries] for field in _Moments.__dataclass_fields__))


def _retrieval_section(
    moments: _Moments, truth_mask: np.ndarray, r1_thresholds: Sequence[float], with_miou: bool = False
) -> dict[str, Any] | None:
    """``{"MR-mAP": {t: .., "average": ..}, "MR-R1": {t: ..}}`` over the queries with a window in
    ``truth_mask`` (others are left out), or None when no query has one."""
    queries = truth_mask.any(axis=1)
    if not queries.any():
        return None
    moments, truth_mask = _select(moments, queries), truth_mask[queries]
    average_precision = _detection_average_precision(moments, truth_mask, np.asarray(MAP_IOU_THRESHOLDS))
    mean_ap = average_precision.mean(axis=0)
    top1_iou = _top1_iou(moments, truth_mask)
    section: dict[str, Any] = {"MR-mIoU": _percent(top1_iou.mean())} if with_miou else {}
    section["MR-mAP"] = {str(t): _percent(ap) for t, ap in zip(MAP_IOU_THRESHOLDS, mean_ap)}
    section["MR-mAP"]["average"] = _percent(mean_ap.mean())
    section["MR-R1"] = {str(t): _percent(np.mean(top1_iou >= t)) for t in r1_thresholds}
    return section


def _bucket_mask(moments: _Moments, bucket: tuple[float, float] | None) -> np.ndarray:
    if bucket is None:
        return moments.truth_mask
    length = moments.truth[..., 1] - moments.truth[..., 0]
    return moments.truth_mask & (length > bucket[0]) & (length <= bucket[1])


# ---------------------------------------------------------------------------------- highlight detection
def _ranked(scores: np.ndarray, valid: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort the clips (axis 1) of each row by descending score, stable, invalid clips last.

    Returns the sorted scores, validity mask and each of ``arrays`` ((n, clips, ...)) in that order.
    """
    order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")

    def take(array: np.ndarray) -> np.ndarray:
        return np.take_along_axis(array, order.reshape(order.shape + (1,) * (array.ndim - 2)), axis=1)

    return take(scores), take(valid), *(take(array) for array in arrays)


def _tied_block_average_precision(
    scores: np.ndarray, valid: np.ndarray, labels: np.ndarray, multiplicity: np.ndarray
) -> np.ndarray:
    """Interpolated AP of binary clip labels, tied scores forming one block (the reference's sklearn AP).

    scores, valid, multiplicity: (Q, N) predicted clip scores, which columns exist and how many identical
    clips (same score, same labels) each column stands for (1 for an ordinary clip); labels: (levels, Q,
    N, A) binary, one column per annotator. For each distinct recall level reached at a cut between
    distinct scores, take the best precision at that recall or higher; AP is the plain mean over the
    levels. A column without positives gives 0, an all-positive one 1. Returns (levels, Q, A).

    Only block ends are scored, so a column standing for k tied clips gives exactly the AP of k columns.
    """
    multiplicity = np.where(valid, multiplicity, 0)
    scores, valid, labels, multiplicity = _ranked(
        scores, valid, labels.transpose(1, 2, 0, 3), multiplicity
    )  # clips on axis 1
    labels = labels.transpose(2, 0, 1, 3).astype(np.float64)
    block_end = valid.copy()  # last clip of a block of tied scores
    block_end[:, :-1] &= (scores[:, 1:] != scores[:, :-1]) | ~valid[:, 1:]
    block_end = block_end[..., None]  # (Q, N, 1)
    hits = np.cumsum(labels * multiplicity[..., None], axis=-2)
    rank = np.maximum(np.cumsum(multiplicity, axis=1), 1)[..., None]  # clips up to here (>= 1 if valid)
    precision = np.where(block_end, hits / rank, 0.0)
    precision = np.flip(np.maximum.accumulate(np.flip(precision, -2), axis=-2), -2)
    hits_before = np.maximum.accumulate(np.where(block_end, hits, 0.0), axis=-2)  # at the previous block end
    hits_before = np.concatenate([np.zeros_like(hits_before[..., :1, :]), hits_before[..., :-1, :]], axis=-2)
    new_level = block_end & (hits > hits_before)
    average_precision = np.where(new_level, precision, 0.0).sum(axis=-2) / np.maximum(
        new_level.sum(axis=-2), 1
    )
    positives = hits[..., -1, :]
    num_clips = multiplicity.sum(axis=1)[:, None]
    return np.where(positives == 0, 0.0, np.where(positives == num_clips, 1.0, average_precision))


def _highlight_sections(
    predictions: _Rows, references: _Rows, matching: _Matching
) -> dict[str, dict[str, float]]:
    """``{"HL-min-<level>": {"HL-mAP": .., "HL-Hit1": ..}}`` for QVHighlights (last row of each query).

    As the reference: a video has int(duration / 2) clips, the clips without a rating score 0 for every
    annotator, a score list longer than the video is cut and a shorter one padded with 0.0 (a warning
    says how many queries have a list of another length). Memory grows with the score lists and the
    clip ids, not with the duration.
    """
    scores, score_counts = predictions.number_lists("pred_saliency_scores", matching.last_row)
    rows = matching.reference_row
    duration = references.numbers("duration", rows)
    if (duration < CLIP_SECONDS).any():
        references.fail(rows[np.argmax(duration < CLIP_SECONDS)], "duration", "is below 2 seconds")
    if (duration > _MAX_DURATION).any():  # its clip count would not be an exact integer
        index = int(np.argmax(duration > _MAX_DURATION))
        references.fail(rows[index], "duration", f"is {duration[index]:g}, above {_MAX_DURATION:g} seconds")
    num_clips = np.trunc(duration / CLIP_SECONDS).astype(np.int64)  # the reference's int(duration / 2)
    clip_ids, id_counts = references.number_lists("relevant_clip_ids", rows, integer=True)
    ratings, rating_counts = references.number_rows("saliency_scores", rows, width=3, exact=True)
    if (id_counts != rating_counts).any():
        index = int(np.argmax(id_counts != rating_counts))
        references.fail(
            rows[index],
            "saliency_scores",
            f"has {rating_counts[index]} rows for {id_counts[index]} relevant clip ids",
        )
    query_of_id = np.repeat(np.arange(len(rows)), id_counts)
    outside = (clip_ids < 0) | (clip_ids >= num_clips[query_of_id])
    if outside.any():
        index = query_of_id[np.argmax(outside)]
        references.fail(
            rows[index],
            "relevant_clip_ids",
            f"holds {clip_ids[np.argmax(outside)]:.0f}, outside the {num_clips[index]} clips of the video",
        )
    mismatched = int((score_counts != num_clips).sum())
    if mismatched:
        logger.warning(
            "%d of %d queries have a number of 'pred_saliency_scores' other than the clip count of their "
            "video (int(duration / 2)); as in the official evaluation, longer lists are cut and shorter "
            "ones padded with 0.0",
            mismatched,
            len(rows),
        )

    # The clips past both the score list and the last annotated clip all score 0.0 (padding) and have no
    # rating: one column stands for all of them (the "tail"), so memory follows the input and not the
    # duration. Columns: the `explicit` clips, then the tail column if the tail is not empty.
    last_id = np.full(len(rows), -1, dtype=np.int64)
    np.maximum.at(last_id, query_of_id, clip_ids.astype(np.int64))
    explicit = np.minimum(num_clips, np.maximum(score_counts, last_id + 1))  # (Q,)
    tail = num_clips - explicit
    columns = int(explicit.max()) + 1
    column = np.arange(columns)
    valid = column < (explicit + (tail > 0))[:, None]
    multiplicity = np.where(column == explicit[:, None], tail[:, None], 1)
    ratings_per_clip = np.zeros((len(rows), columns, 3))  # unannotated clips score 0
    ratings_per_clip[query_of_id, clip_ids.astype(np.int64)] = ratings

    # Scores, without padding the lists to the longest one: the arg-max of each list (first maximum), and
    # the scores of its explicit clips (a list longer than the video is cut, a shorter one padded with 0.0).
    starts = np.cumsum(score_counts) - score_counts  # every list has a score
    query_of_score = np.repeat(np.arange(len(rows)), score_counts)
    position = np.arange(len(scores)) - starts[query_of_score]
    is_maximum = scores == np.repeat(np.maximum.reduceat(scores, starts), score_counts)
    best_clip = np.minimum.reduceat(np.where(is_maximum, position, np.iinfo(np.int64).max), starts)
    aligned = np.zeros((len(rows), columns))
    kept = position < explicit[query_of_score]
    aligned[query_of_score[kept], position[kept]] = scores[kept]

    minimum = np.array([level for _, level in HIGHLIGHT_LEVELS])[:, None, None, None]
    positive = ratings_per_clip[None] >= minimum  # (levels, Q, clips, 3 annotators)
    average_precision = _tied_block_average_precision(
        aligned, valid, positive, multiplicity
    )  # (levels, Q, 3)
    # On the raw list: an arg-max beyond the video is a miss; one inside it is an explicit clip.
    best_clip_positive = positive[:, np.arange(len(rows)), np.minimum(best_clip, columns - 1)].any(axis=-1)
    hit = best_clip_positive & (best_clip < num_clips)  # any annotator
    return {
        f"HL-min-{name}": {
            "HL-mAP": _percent(average_precision[level].mean()),
            "HL-Hit1": _percent(hit[level].mean()),
        }
        for level, (name, _) in enumerate(HIGHLIGHT_LEVELS)
    }


def _trapezoid_average_precision(ranked_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid AP of binary labels in rank order (…, K) (lighthouse / UMT highlight AP).

    AP = sum_j (R_j - R_(j-1)) * (P_(j-1) + P_j) / 2 with P_0 = 1, R_0 = 0, summed in rank order.
    Returns (AP (…), number of positives (…)); AP is 0 where there is no positive.
    """
    hits = np.cumsum(ranked_labels, axis=-1, dtype=np.float64)
    positives = hits[..., -1:]
    precision = hits / np.arange(1, ranked_labels.shape[-1] + 1)
    recall = np.divide(hits, positives, out=np.zeros_like(hits), where=positives > 0)
    previous_precision = np.concatenate([np.ones_like(precision[..., :1]), precision[..., :-1]], axis=-1)
    terms = np.diff(recall, axis=-1, prepend=0.0) * (previous_precision + precision) / 2
    return np.cumsum(terms, axis=-1)[..., -1], positives[..., 0]


@dataclass(frozen=True)
class _ClipLabels:
    """Per-clip predictions and labels of videos (YouTube Highlights, TVSum), padded."""

    ranked_labels: np.ndarray  # (V, K, A) labels of the predicted clips in descending-score order
    ranked_valid: np.ndarray  # (V, K) which ranks hold a clip (the first min(len(scores), L) clips)
    labels: np.ndarray  # (V, L, A) label rows as given (A: annotators)
    label_valid: np.ndarray  # (V, L)
    domains: list[str]  # (V,)
    reference_row: np.ndarray  # (V,) reference row of each video


def _read_clip_labels(
    predictions: _Rows, references: _Rows, domains: Sequence[str], label_width: int | None
) -> _ClipLabels:
    """Match videos by qid (last prediction row wins) and rank their clips; ``label_width`` is the number
    of values per label row (None: any, the same for every row)."""
    matching = _match_queries(predictions, references)
    rows = matching.reference_row
    scores, score_counts = predictions.number_lists("pred_saliency_scores", matching.last_row)
    labels, label_counts = references.number_rows("label", rows, width=label_width, exact=True)
    labels, label_valid = _pad(labels, label_counts, 0.0)
    scores, _ = _pad(scores, score_counts, 0.0)
    clips = max(scores.shape[1], labels.shape[1])
    scores = np.pad(scores, ((0, 0), (0, clips - scores.shape[1])))
    # Only the first min(len(scores), L) clips are ranked: longer score lists are cut, the labels of
    # clips without a score are ignored.
    valid = np.arange(clips) < np.minimum(score_counts, label_counts)[:, None]
    labels_wide = np.pad(labels, ((0, 0), (0, clips - labels.shape[1]), (0, 0)))
    _, ranked_valid, ranked_labels = _ranked(scores, valid, labels_wide)
    ranked_labels = np.where(ranked_valid[..., None], ranked_labels, 0.0)
    domain_names = references.strings("domain", rows, domains)
    return _ClipLabels(ranked_labels, ranked_valid, labels, label_valid, domain_names, rows)


def _domain_report(
    video_ap: np.ndarray, counted: np.ndarray, domains: list[str], order: Sequence[str], brief_key: str
) -> dict[str, Any]:
    """``{"brief": {key: average, key-<domain>: ..}, "per_domain": {domain: {"mAP", "num_videos"}}}``.

    Domain mAP is the mean over its counted videos; the average is the unweighted mean over domains.
    """
    domains = np.asarray(domains)
    per_domain: dict[str, float] = {}
    counts: dict[str, int] = {}
    for domain in order:  # a handful of fixed domains
        videos = (domains == domain) & counted
        if (domains == domain).any() and not videos.any():
            raise ValueError(
                f"no video of domain {domain!r} has a positive clip among its predicted clips, so its mAP is "
                "undefined; expected labels with at least one positive clip per domain"
            )
        if videos.any():
            per_domain[domain], counts[domain] = video_ap[videos].mean(), int(videos.sum())
    brief = {brief_key: _percent(np.mean(list(per_domain.values())))}
    brief.update({f"{brief_key}-{domain}": _percent(value) for domain, value in per_domain.items()})
    return {
        "brief": brief,
        "per_domain": {d: {"mAP": _percent(v), "num_videos": counts[d]} for d, v in per_domain.items()},
    }


# ---------------------------------------------------------------------------------------- public API
def evaluate_qvhighlights(
    predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """QVHighlights MR + HL metrics, identical to Moment-DETR's ``standalone_eval`` (keys, order, values).

    Args:
        predictions: one JSON object per query: ``qid``, ``pred_relevant_windows`` ([[start_s, end_s,
            score], ...], best first: R1 uses the first listed window, mAP the first 10 sorted by score)
            and/or ``pred_saliency_scores`` (one score per 2-second clip). Which parts are evaluated is
            decided by the keys of the first row, as in the reference. Several rows for one qid: mAP pools
            their windows, R1 and HL use the last row.
        references: the annotation rows: ``qid``, ``relevant_windows`` ([[start_s, end_s], ...]) for MR;
            ``duration`` (s), ``relevant_clip_ids`` and ``saliency_scores`` ([[a1, a2, a3], ...], 0..4)
            for HL.

    Returns:
        ``{"brief": {...}, "HL-min-Fair": .., "HL-min-Good": .., "HL-min-VeryGood": .., "full": ..,
        "long": .., "middle": .., "short": ..}`` in percent (2 decimals); a length bucket without GT
        windows is left out (the reference crashes on it).

    Raises:
        ValueError: naming the row, qid and field of the first invalid input.
    """
    predictions, references = _Rows(predictions, "prediction"), _Rows(references, "reference")
    matching = _match_queries(predictions, references)
    evaluate_mr = predictions.has(0, "pred_relevant_windows")
    evaluate_hl = predictions.has(0, "pred_saliency_scores")
    if not (evaluate_mr or evaluate_hl):
        raise ValueError(
            f"prediction row 1 (qid {predictions.qids[0]!r}) has neither 'pred_relevant_windows' nor "
            "'pred_saliency_scores'; the first row decides what is evaluated (as in the reference)"
        )
    brief: dict[str, float] = {}
    sections: dict[str, Any] = {}
    if evaluate_mr:
        moments = _read_moments(predictions, references, matching)
        for name, bucket in LENGTH_BUCKETS.items():
            section = _retrieval_section(moments, _bucket_mask(moments, bucket), MAP_IOU_THRESHOLDS)
            if section is not None:
                sections[name] = section
        mr_brief = {f"MR-{name}-mAP": s["MR-mAP"]["average"] for name, s in sections.items()}
        if "full" in sections:
            mr_brief.update({f"MR-full-mAP@{t}": sections["full"]["MR-mAP"][t] for t in ("0.5", "0.75")})
            mr_brief.update({f"MR-full-R1@{t}": sections["full"]["MR-R1"][t] for t in ("0.5", "0.7")})
        brief.update(sorted(mr_brief.items()))
    if evaluate_hl:
        highlights = _highlight_sections(predictions, references, matching)
        sections.update(highlights)
        brief.update(
            {f"{name}-{key[3:]}": value for name, s in highlights.items() for key, value in s.items()}
        )
    return {"brief": brief, **dict(sorted(sections.items()))}


def evaluate_single_moment(
    predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Charades-STA / TACoS metrics (paper Table 4): R1@{0.3, ..., 0.95}, mAP and mIoU, no length buckets.

    Same inputs and MR semantics as :func:`evaluate_qvhighlights` (``pred_saliency_scores`` is ignored);
    mIoU is the mean hull IoU of the first listed window with the best GT window.

    Returns:
        ``{"brief": {"MR-full-R1@0.3", "MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP",
        "MR-full-mAP@0.5", "MR-full-mAP@0.75", "MR-full-mIoU"}, "full": {"MR-mIoU", "MR-mAP", "MR-R1"}}``.
    """
    predictions, references = _Rows(predictions, "prediction"), _Rows(references, "reference")
    moments = _read_moments(predictions, references, _match_queries(predictions, references))
    full = _retrieval_section(moments, moments.truth_mask, SINGLE_MOMENT_R1_THRESHOLDS, with_miou=True)
    brief = {f"MR-full-R1@{t}": full["MR-R1"][t] for t in ("0.3", "0.5", "0.7")}
    brief["MR-full-mAP"] = full["MR-mAP"]["average"]
    brief.update({f"MR-full-mAP@{t}": full["MR-mAP"][t] for t in ("0.5", "0.75")})
    brief["MR-full-mIoU"] = full["MR-mIoU"]
    return {"brief": brief, "full": full}


evaluate_charades_sta = evaluate_single_moment
evaluate_tacos = evaluate_single_moment


def evaluate_youtube_highlights(
    predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """YouTube Highlights mAP per domain and their average (paper Table 5).

    Args:
        predictions: ``qid`` (the video id) and ``pred_saliency_scores`` (score ``i`` for label row ``i``).
        references: ``qid``, ``label`` ([[0 or 1], ...] one row per clip) and ``domain``.

    Per video, the first min(len(scores), L) clips are ranked by score (stable) and scored with the
    trapezoid AP; a video with no positive among them is skipped, as in the reference.

    Returns:
        ``{"brief": {"YT-mAP", "YT-mAP-<domain>", ...}, "per_domain": {domain: {"mAP", "num_videos"}}}``.
    """
    predictions, references = _Rows(predictions, "prediction"), _Rows(references, "reference")
    videos = _read_clip_labels(predictions, references, YOUTUBE_DOMAINS, label_width=1)
    not_binary = np.flatnonzero(((videos.labels != 0) & (videos.labels != 1)).any(axis=(1, 2)))
    if not_binary.size:
        references.fail(videos.reference_row[not_binary[0]], "label", "holds a value other than 0 and 1")
    video_ap, positives = _trapezoid_average_precision(videos.ranked_labels[..., 0])
    if (positives == 0).any():
        logger.warning(
            "%d video(s) without a positive predicted clip are skipped", int((positives == 0).sum())
        )
    return _domain_report(video_ap, positives > 0, videos.domains, YOUTUBE_DOMAINS, "YT-mAP")


def evaluate_tvsum(
    predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """TVSum top-5 mAP per domain and their average (paper Table 6).

    Args:
        predictions: ``qid`` (the video id) and ``pred_saliency_scores`` (score ``i`` for label row ``i``).
        references: ``qid``, ``label`` (one row per clip with every annotator's importance score, 20 in
            TVSum) and ``domain``.

    For each annotator, a clip is positive iff its score is > the annotator's lower median over the
    video; the 5 best-scored of the first min(len(scores), L) clips get the trapezoid AP (0 when none is
    positive). A video's AP is the mean over annotators.

    Returns:
        ``{"brief": {"TVSum-top5-mAP", "TVSum-top5-mAP-<domain>", ...}, "per_domain": {...}}``.
    """
    predictions, references = _Rows(predictions, "prediction"), _Rows(references, "reference")
    videos = _read_clip_labels(predictions, references, TVSUM_DOMAINS, label_width=None)
    num_clips = videos.label_valid.sum(axis=1)
    sorted_labels = np.sort(np.where(videos.label_valid[..., None], videos.labels, np.inf), axis=1)
    lower_median = np.take_along_axis(
        sorted_labels, ((num_clips - 1) // 2)[:, None, None], axis=1
    )  # (V, 1, A)
    top = videos.ranked_labels[:, :TVSUM_TOP_K] > lower_median  # positive: above the annotator's median
    top &= videos.ranked_valid[:, :TVSUM_TOP_K, None]
    annotator_ap, _ = _trapezoid_average_precision(np.moveaxis(top, 1, -1))  # (V, A)
    video_ap = annotator_ap.mean(axis=1)
    return _domain_report(
        video_ap, np.ones(len(video_ap), dtype=bool), videos.domains, TVSUM_DOMAINS, "TVSum-top5-mAP"
    )


_EVALUATORS = {
    "qvhighlights": evaluate_qvhighlights,
    "charades_sta": evaluate_charades_sta,
    "tacos": evaluate_tacos,
    "youtube_highlights": evaluate_youtube_highlights,
    "tvsum": evaluate_tvsum,
}


def compute_metrics(
    dataset: str, predictions: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The metrics of ``dataset`` (one of :data:`DATASETS`) for prediction and reference rows.

    Rows are matched by ``qid`` (value and type), never by position. See the ``evaluate_<dataset>``
    functions for the fields and the returned layout; every value is a percentage rounded to 2 decimals.
    """
    if dataset not in _EVALUATORS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return _EVALUATORS[dataset](predictions, references)


# --------------------------------------------------------------------------------------------- files
def parse_jsonl(lines: Iterable[str | bytes], source: str = "<text>") -> list[dict[str, Any]]:
    """The JSON objects of JSON Lines (an open file or ``text.splitlines()``); blank lines are skipped.

    Raises:
        ValueError: ``"<source>:<line>: ..."`` for a line that is not one JSON object.
    """
    rows = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(
                f"{source}:{line_number}: not valid JSON ({error}); expected one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(
                f"{source}:{line_number}: {type(row).__name__} found; expected one JSON object per line"
            )
        rows.append(row)
    return rows


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; errors name ``<path>:<line>`` (see :func:`parse_jsonl`)."""
    with open(path, "rb") as file:
        return parse_jsonl(file, str(path))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON with 4-space indentation, atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    try:  # strict JSON, as the package's files.strict_json (which this self-contained folder cannot import)
        text = json.dumps(data, indent=4, allow_nan=False) + "\n"
    except ValueError as error:
        raise ValueError(f"cannot write {path}: {error} (NaN or Infinity has no JSON form)") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """The reference-style command line (``--submission_path --gt_path --save_path [--dataset]``)."""
    parser = argparse.ArgumentParser(description="Moment retrieval and highlight detection evaluation")
    parser.add_argument("--submission_path", required=True, help="predictions, JSON Lines")
    parser.add_argument("--gt_path", required=True, help="annotations, JSON Lines")
    parser.add_argument("--save_path", required=True, help="where to write the metrics JSON")
    parser.add_argument("--dataset", default="qvhighlights", choices=DATASETS)
    args = parser.parse_args(argv)
    try:
        metrics = compute_metrics(args.dataset, read_jsonl(args.submission_path), read_jsonl(args.gt_path))
        write_json(args.save_path, metrics)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=4, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Readers for the five annotation formats (lighthouse-style JSON Lines) into schema rows.

Each reader turns one file into a list of rows in the shared schema (:mod:`sgdetr_hf.data.schema`),
without features. A malformed line raises ``ValueError("<file>:<line>: <what is wrong>")``.

=====================  ================================================================================
format                 fields read
=====================  ================================================================================
``qvhighlights``       qid, query, vid, duration, and (train/val) relevant_windows, relevant_clip_ids,
                       saliency_scores (3 annotators, 0..4); the test split has no labels
``charades-sta``,      qid, query, vid, duration, relevant_windows; binary saliency: the clips more than
``tacos``              half inside a window, or the window's centre clip (``binary_clip_saliency``)
``tvsum``              qid, query, vid, duration, domain, label (clips x 20 annotators, 1..5); saliency
                       ``sum(label - 1) / 80 * 12`` per clip, one column
``youtube-highlights`` qid, query, vid, duration, domain, label (clips x 1, binary)
=====================  ================================================================================

InterVid-MR files are written in the QVHighlights format and read with ``qvhighlights``.

Every reader refuses impossible labels, naming the line: a blank ``qid``, ``vid`` or ``query``; a duration
that is not a finite number of seconds in (0, 24 h]; a window that starts at or after the video's end or ends
more than one clip past it (ends up to one clip past the duration are clamped to it: no real annotation in
``../shared/data`` ends past its duration, its converters clamped them, as Charades' authors advise); clip
ids past the video's ``num_clips(duration, clip_length)`` clips or repeated; saliency scores that are not
finite or outside the format's scale (QVHighlights / InterVid-MR: 0..4).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .schema import CLIP_LENGTHS, binary_clip_saliency, num_clips

logger = logging.getLogger(__name__)

#: The longest video a duration may describe, in seconds (24 h: the longest real annotation, TACoS, is
#: 1,402 s; a larger number is a unit or parsing error, and ``num_clips`` of 1e300 s cannot be allocated).
MAX_DURATION = 86_400.0
#: Per-clip annotator scores of the QVHighlights format (InterVid-MR writes its grades 1..4 in it).
QVHIGHLIGHTS_SALIENCY_RANGE = (0.0, 4.0)


class _LineError(ValueError):
    """A problem with one line; the reader prefixes it with ``file:line``."""


def _require(record: dict, key: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in record:
        raise _LineError(f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise _LineError(f"field {key!r} has type {type(value).__name__}, expected {kinds}")
    return value


def _text(record: dict, key: str) -> str:
    value = _require(record, key, str)
    if not value.strip():
        raise _LineError(f"field {key!r} is blank; every {key} needs text")
    return value


def _windows(record: dict, row: dict[str, Any], notes: Counter) -> np.ndarray:
    """(K, 2) float64 windows in seconds, checked: finite, 0 <= start < end, inside the video.

    A window must start before the video's end (``duration``); an end up to one clip past it is clamped to
    the duration (counted in ``notes["clamped_ends"]``), a later one is refused.
    """
    try:
        windows = np.asarray(record.get("relevant_windows") or [], dtype=np.float64).reshape(-1, 2)
    except ValueError as error:
        raise _LineError(f"relevant_windows must be a list of [start, end] pairs: {error}") from None
    if not np.isfinite(windows).all() or (windows[:, 0] < 0).any() or (windows[:, 1] <= windows[:, 0]).any():
        raise _LineError(f"relevant_windows must hold 0 <= start < end seconds, got {windows.tolist()}")
    duration, clip_length = row["duration"], row["clip_length"]
    late = windows[:, 0] >= duration
    if late.any():
        raise _LineError(
            f"relevant window {windows[late][0].tolist()} starts at or after the video's end (duration "
            f"{duration:g} s); is the duration (or the vid) right?"
        )
    far = windows[:, 1] > duration + clip_length
    if far.any():
        raise _LineError(
            f"relevant window {windows[far][0].tolist()} ends {windows[far][0, 1] - duration:g} s past the "
            f"video's end (duration {duration:g} s; ends up to one clip, {clip_length:g} s, past it are "
            "clamped); is the duration (or the vid) right?"
        )
    clamped = windows[:, 1] > duration
    if clamped.any():
        notes["clamped_ends"] += int(clamped.sum())
        notes["max_clamped_seconds"] = max(
            notes["max_clamped_seconds"], float((windows[:, 1] - duration).max())
        )
        windows[:, 1] = np.minimum(windows[:, 1], duration)
    return windows


def _common(record: dict, clip_length: float) -> dict[str, Any]:
    qid = _require(record, "qid", (int, str))
    if not str(qid).strip():
        raise _LineError("field 'qid' is blank; every query needs an id")
    duration = float(_require(record, "duration", (int, float)))
    if not np.isfinite(duration) or not 0 < duration <= MAX_DURATION:
        raise _LineError(
            f"duration must be a finite number of seconds in (0, {MAX_DURATION:g}] (24 h), got {duration}"
        )
    return {
        "qid": str(qid),
        "vid": _text(record, "vid"),
        "query": _text(record, "query"),
        "duration": duration,
        "clip_length": clip_length,
        "relevant_windows": [],
        "relevant_clip_ids": [],
        "saliency_scores": [],
        "domain": "",
        "label": [],
    }


def _qvhighlights(record: dict, clip_length: float, notes: Counter) -> dict[str, Any]:
    row = _common(record, clip_length)
    windows = _windows(record, row, notes)
    try:
        clip_ids = np.asarray(record.get("relevant_clip_ids") or [], dtype=np.float64)
        scores = np.asarray(record.get("saliency_scores") or [], dtype=np.float64)
    except ValueError:
        raise _LineError(
            "relevant_clip_ids / saliency_scores must be a list of ints / of equal-length rows"
        ) from None
    if clip_ids.ndim != 1 or (clip_ids < 0).any() or (clip_ids != np.round(clip_ids)).any():
        raise _LineError(f"relevant_clip_ids must be a list of integers >= 0, got {clip_ids.tolist()}")
    length = num_clips(row["duration"], clip_length)
    if (clip_ids >= length).any():
        raise _LineError(
            f"relevant_clip_ids {clip_ids[clip_ids >= length].astype(np.int64).tolist()[:10]} lie past the "
            f"video's {length} clips (duration {row['duration']:g} s, {clip_length:g}-s clips: ids 0..{length - 1})"
        )
    if len(np.unique(clip_ids)) != len(clip_ids):
        raise _LineError(f"relevant_clip_ids repeat a clip: {clip_ids.astype(np.int64).tolist()}")
    if (
        scores.size
        and (scores.ndim != 2 or scores.shape[0] != len(clip_ids))
        or len(clip_ids)
        and not scores.size
    ):
        raise _LineError(
            f"saliency_scores must hold one score row per relevant clip id: {len(clip_ids)} ids, "
            f"scores of shape {scores.shape}"
        )
    low, high = QVHIGHLIGHTS_SALIENCY_RANGE
    if scores.size and (not np.isfinite(scores).all() or scores.min() < low or scores.max() > high):
        bad = scores[~(np.isfinite(scores) & (scores >= low) & (scores <= high))]
        raise _LineError(
            f"saliency_scores must be finite annotator scores {low:g}..{high:g} (the QVHighlights scale), got "
            f"{bad.tolist()[:5]}"
        )
    row.update(
        relevant_windows=windows.tolist(),
        relevant_clip_ids=clip_ids.astype(np.int64).tolist(),
        saliency_scores=scores.tolist(),
    )
    return row


def _binary_moments(record: dict, clip_length: float, notes: Counter) -> dict[str, Any]:
    row = _common(record, clip_length)
    windows = _windows(record, row, notes)
    if len(windows) == 0:
        raise _LineError("relevant_windows is empty; moment-retrieval datasets need at least one window")
    clip_ids = binary_clip_saliency(windows, clip_length, num_clips(row["duration"], clip_length))
    row.update(
        relevant_windows=windows.tolist(),
        relevant_clip_ids=clip_ids.tolist(),
        saliency_scores=np.ones((len(clip_ids), 1)).tolist(),
    )
    return row


def _per_clip_labels(record: dict, clip_length: float) -> tuple[dict[str, Any], np.ndarray]:
    row = _common(record, clip_length)
    row["domain"] = _require(record, "domain", str)
    try:
        label = np.asarray(_require(record, "label", list), dtype=np.float64)
    except ValueError:
        raise _LineError("label must be a (clips x annotators) list of numbers") from None
    if label.ndim != 2 or label.shape[0] == 0 or not np.isfinite(label).all():
        raise _LineError(f"label must be a non-empty (clips x annotators) matrix, got shape {label.shape}")
    row["label"] = label.tolist()
    return row, label


def _tvsum(record: dict, clip_length: float, notes: Counter) -> dict[str, Any]:
    row, label = _per_clip_labels(record, clip_length)
    if label.min() < 1 or label.max() > 5:
        raise _LineError(f"TVSum labels must be 1..5, got range [{label.min()}, {label.max()}]")
    # CG-DETR: sum over the annotators of (score - 1), out of 4 per annotator, rescaled to 0..12.
    saliency = (label - 1).sum(axis=1) / (4 * label.shape[1]) * 12
    clip_ids = np.flatnonzero(saliency > 0)
    row.update(relevant_clip_ids=clip_ids.tolist(), saliency_scores=saliency[clip_ids, None].tolist())
    return row


def _youtube_highlights(record: dict, clip_length: float, notes: Counter) -> dict[str, Any]:
    row, label = _per_clip_labels(record, clip_length)
    if label.shape[1] != 1 or not np.isin(label, (0, 1)).all():
        raise _LineError(f"YouTube Highlights labels must be one 0/1 column, got shape {label.shape}")
    clip_ids = np.flatnonzero(label[:, 0] > 0)
    row.update(relevant_clip_ids=clip_ids.tolist(), saliency_scores=np.ones((len(clip_ids), 1)).tolist())
    return row


_READERS: dict[str, Callable[[dict, float, Counter], dict[str, Any]]] = {
    "qvhighlights": _qvhighlights,
    "intervid-mr": _qvhighlights,
    "charades-sta": _binary_moments,
    "tacos": _binary_moments,
    "tvsum": _tvsum,
    "youtube-highlights": _youtube_highlights,
}


def read_annotations(
    path: str | Path, dataset: str, clip_length: float | None = None
) -> list[dict[str, Any]]:
    """Read one JSON Lines annotation file into schema rows.

    Args:
        path: the ``.jsonl`` file.
        dataset: its format, one of ``qvhighlights, intervid-mr, charades-sta, tacos, tvsum,
            youtube-highlights``.
        clip_length: seconds per feature row; default: the dataset's (:data:`~sgdetr_hf.data.schema.CLIP_LENGTHS`).

    Returns:
        one dict per non-blank line, with the schema's annotation columns.

    Raises:
        ValueError: an unknown dataset, or ``"<path>:<line>: <reason>"`` for a malformed line, an
            impossible label (module docstring) or a duplicate qid.
    """
    if dataset not in _READERS:
        raise ValueError(f"unknown annotation format {dataset!r}; expected one of {sorted(_READERS)}")
    clip_length = CLIP_LENGTHS[dataset] if clip_length is None else float(clip_length)
    if not np.isfinite(clip_length) or clip_length <= 0:
        raise ValueError(f"clip_length must be a finite number of seconds > 0, got {clip_length}")
    reader = _READERS[dataset]
    notes: Counter = Counter()
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise _LineError(f"expected a JSON object, got {type(record).__name__}")
                row = reader(record, clip_length, notes)
                if row["qid"] in first_line:
                    raise _LineError(f"duplicate qid {row['qid']!r} (first on line {first_line[row['qid']]})")
            except (json.JSONDecodeError, _LineError) as error:
                raise ValueError(f"{path}:{line_number}: {error}") from None
            first_line[row["qid"]] = line_number
            rows.append(row)
    if notes["clamped_ends"]:
        logger.info(
            "%s: %d window ends past their video's duration (by at most %.3g s) clamped to it",
            path,
            notes["clamped_ends"],
            notes["max_clamped_seconds"],
        )
    return rows

"""The one row schema shared by every moment-retrieval / highlight-detection dataset.

Every dataset (QVHighlights, Charades-STA, TACoS, TVSum, YouTube Highlights, InterVid-MR, the demo and
toy data) is stored with the same annotation columns, so one collator serves all of them:

=====================  ==================================  ==================================================
column                 type                                meaning
=====================  ==================================  ==================================================
``qid``                string                              query id (QVHighlights' integer ids as strings)
``vid``                string                              video id; the key of the ``features`` config
``query``              string                              the query text
``duration``           float32                             video (or InterVid-MR window) length, seconds
``clip_length``        float32                             seconds per feature row (clip ``i`` = [i c, (i+1) c))
``relevant_windows``   list of [start, end] float32        ground-truth moments, seconds; empty for HD-only sets
``relevant_clip_ids``  list of int32                       clips with a non-zero highlight target
``saliency_scores``    list of list of float32             per relevant clip, one score per annotator; the
                                                           collator's per-clip target is the row sum
``domain``             string                              TVSum / YouTube-HL domain, "" elsewhere
``label``              list of list of float32             raw per-clip HD labels (clips x annotators) of TVSum
                                                           / YouTube-HL, kept for their metrics; empty elsewhere
=====================  ==================================  ==================================================

Per-clip highlight targets (``saliency_scores`` summed over annotators), all on one 0..12 scale:

- QVHighlights / InterVid-MR: the three annotators' 0..4 scores (InterVid-MR: ``[g, g, g]`` for grade g).
- Charades-STA / TACoS: binary ``[[1.0]]`` for each clip that lies more than half inside a window
  (paper §4.4), or, when no clip does, the clip holding the window centre.
- TVSum: one column ``sum_annotators(score - 1) / 80 * 12`` (CG-DETR's rescaling of its 20 x 1..5 scores).
- YouTube Highlights: binary ``[[1.0]]`` for clips labelled 1.

Features: ``video_features`` (L, d) and ``text_features`` (N, d) float16. The text features of a
query live in its row; the video features live in a separate ``features`` config keyed by ``vid``
(measured with ``scripts/benchmark_data.py layout``: see the builder's docstring for the numbers).
"""

from __future__ import annotations

import math
import re

import datasets
import numpy as np

#: Annotation columns, in storage order.
ANNOTATION_COLUMNS = (
    "qid",
    "vid",
    "query",
    "duration",
    "clip_length",
    "relevant_windows",
    "relevant_clip_ids",
    "saliency_scores",
    "domain",
    "label",
)

#: Datasets (config names) the builder knows, with their clip length in seconds.
CLIP_LENGTHS = {
    "qvhighlights": 2.0,
    "charades-sta": 1.0,
    "tacos": 2.0,
    "tvsum": 2.0,
    "youtube-highlights": 1.0,
    "intervid-mr": 2.0,
}


def annotation_features(text_dim: int | None) -> datasets.Features:
    """The ``datasets.Features`` of the default (query) config.

    Args:
        text_dim: d of the ``text_features`` column, an ``Array2D((None, d), float16)`` holding the (N, d)
            token features of the query; ``None`` for annotations without features.
    """
    features = {
        "qid": datasets.Value("string"),
        "vid": datasets.Value("string"),
        "query": datasets.Value("string"),
        "duration": datasets.Value("float32"),
        "clip_length": datasets.Value("float32"),
        "relevant_windows": datasets.List(datasets.List(datasets.Value("float32"), length=2)),
        "relevant_clip_ids": datasets.List(datasets.Value("int32")),
        "saliency_scores": datasets.List(datasets.List(datasets.Value("float32"))),
        "domain": datasets.Value("string"),
        "label": datasets.List(datasets.List(datasets.Value("float32"))),
    }
    if text_dim is not None:
        features["text_features"] = datasets.Array2D(shape=(None, text_dim), dtype="float16")
    return datasets.Features(features)


def video_features_features(video_dim: int) -> datasets.Features:
    """The ``datasets.Features`` of the ``features`` config: one row per video, (L, video_dim) float16."""
    return datasets.Features(
        {
            "vid": datasets.Value("string"),
            "video_features": datasets.Array2D(shape=(None, video_dim), dtype="float16"),
        }
    )


_WINDOWED_VID = re.compile(r"^(?P<source>.+)_\d+(?:\.\d+)?_\d+(?:\.\d+)?$")


def source_video_id(vid: str) -> str:
    """The source video of ``vid``, used to keep same-video pairs out of the in-batch negatives.

    QVHighlights (``"j7rJstUseKg_360.0_510.0"``) and InterVid-MR (``"{ytid}_{start}_{end}"``) ids end
    with two numeric ``_start_end`` fields, which are removed; every other id is its own source.
    """
    match = _WINDOWED_VID.match(vid)
    return match.group("source") if match else vid


#: How many clips a video's feature length L may differ from ``num_clips(duration, clip_length)`` (and the
#: feature types of one ``.npz`` release from each other): published feature sets differ by a clip or two
#: (QVHighlights' SlowFast + CLIP features of ``B3yOejNbNks_210.0_360.0``, duration 142 s: 71 rows, its audio
#: features 70, TencentARC/UMT issue #29; SlowFast is often one clip longer than CLIP). More means features of
#: another video, or of another clip length, whose targets would be missing or rescaled.
MAX_CLIP_MISMATCH = 2


def num_clips(duration: float, clip_length: float) -> int:
    """Number of feature rows of a video: ``ceil(duration / clip_length)``, the last clip may be short.

    A 1e-6 tolerance keeps float round-off (e.g. 150.00000001 s) from adding an empty clip.
    """
    return max(1, math.ceil(duration / clip_length - 1e-6))


def binary_clip_saliency(windows: np.ndarray, clip_length: float, num_clips: int) -> np.ndarray:
    """Clips that lie more than half inside any window (paper §4.4), with the centre-clip fallback.

    Args:
        windows: (K, 2) float, [start, end] in seconds.
        clip_length: seconds per clip; clip ``i`` covers ``[i c, (i + 1) c)``.
        num_clips: L.

    Returns:
        (R,) int64 sorted relevant clip ids. When no clip passes the overlap rule for a window (a window
        shorter than half a clip), the clip that holds that window's centre is used.
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    clip_start = np.arange(num_clips, dtype=np.float64) * clip_length
    overlap = np.minimum(clip_start + clip_length, windows[:, 1:2]) - np.maximum(clip_start, windows[:, 0:1])
    relevant = overlap > clip_length / 2  # (K, L)
    centre_clip = np.clip(
        ((windows[:, 0] + windows[:, 1]) / 2 // clip_length).astype(np.int64), 0, num_clips - 1
    )
    fallback = np.zeros_like(relevant)
    fallback[np.arange(len(windows)), centre_clip] = True
    relevant = np.where(relevant.any(axis=1, keepdims=True), relevant, fallback)
    return np.flatnonzero(relevant.any(axis=0))

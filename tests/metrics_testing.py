"""Hand-checkable rows shared by the metric tests."""

import copy

# One QVHighlights query with one GT window per length bucket: [0, 10] short (10 s), [40, 80] long
# (40 s), [130, 150] middle (20 s). Saliency is annotated on clips 20..24 (seconds 40..50).
QVH_REFERENCE = {
    "qid": 1,
    "query": "q",
    "duration": 150,
    "vid": "v",
    "relevant_windows": [[0, 10], [40, 80], [130, 150]],
    "relevant_clip_ids": [20, 21, 22, 23, 24],
    "saliency_scores": [[4, 4, 4], [4, 2, 0], [2, 3, 1], [1, 1, 1], [0, 0, 4]],
}


def qvh_prediction(windows=None, saliency=None, qid=1):
    """A QVHighlights prediction row; a part given as None is left out (so it is not evaluated)."""
    row = {"qid": qid}
    if windows is not None:
        row["pred_relevant_windows"] = copy.deepcopy(windows)
    if saliency is not None:
        row["pred_saliency_scores"] = list(saliency)
    return row


def clip_scores(num_clips, default=0.0, **clips):
    """``num_clips`` saliency scores equal to ``default`` except ``c<index>=value`` ones."""
    scores = [default] * num_clips
    for name, value in clips.items():
        scores[int(name[1:])] = value
    return scores


# Charades-STA: four queries, one GT window each.
CHARADES_REFERENCES = [
    {"qid": 10, "query": "a", "duration": 30.96, "vid": "A", "relevant_windows": [[24.3, 30.4]]},
    {"qid": 11, "query": "b", "duration": 33.67, "vid": "B", "relevant_windows": [[0.0, 6.9]]},
    {"qid": 12, "query": "c", "duration": 29.42, "vid": "C", "relevant_windows": [[7.3, 17.3]]},
    {"qid": 13, "query": "d", "duration": 29.42, "vid": "C", "relevant_windows": [[20.8, 29.42]]},
]
CHARADES_PREDICTIONS = [
    {"qid": 10, "pred_relevant_windows": [[24.0, 30.0, 0.91], [0.0, 8.0, 0.40]]},
    {"qid": 11, "pred_relevant_windows": [[2.0, 10.0, 0.62], [0.0, 6.0, 0.88]]},
    {"qid": 12, "pred_relevant_windows": [[9.0, 13.0, 0.77]]},
    {"qid": 13, "pred_relevant_windows": [[0.0, 4.0, 0.95], [20.0, 30.0, 0.3]]},
]

# YouTube Highlights (§8.4): positives at clips 1, 3, 4.
YOUTUBE_LABELS = [[0], [1], [0], [1], [1], [0]]
# TVSum (§8.4): 7 clips x 3 annotators; lower medians 2, 2, 2.
TVSUM_LABELS = [[1, 2, 5], [3, 3, 4], [2, 5, 1], [4, 1, 1], [5, 2, 3], [1, 4, 2], [2, 2, 2]]
DESCENDING = [0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
ASCENDING = DESCENDING[::-1]


def highlight_rows(videos):
    """(predictions, references) for YouTube Highlights / TVSum from ``(qid, domain, labels, scores)``."""
    predictions = [{"qid": qid, "pred_saliency_scores": list(scores)} for qid, _, _, scores in videos]
    references = [{"qid": qid, "domain": domain, "label": labels} for qid, domain, labels, _ in videos]
    return predictions, references

"""The numpy metrics: official QVHighlights conformance, hand-computed cases for every dataset, edge
cases and bad input. "Official" below means Moment-DETR's standalone_eval
(QVHighlights, Charades-STA / TACoS via CG-DETR's copy) or lighthouse's highlight AP (YouTube, TVSum);
every QVHighlights case here was also checked against the official code outside the repository."""

import ast
import json
import logging
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import sgdetr_hf.metrics
from metrics_testing import (
    ASCENDING,
    CHARADES_PREDICTIONS,
    CHARADES_REFERENCES,
    DESCENDING,
    QVH_REFERENCE,
    TVSUM_LABELS,
    YOUTUBE_LABELS,
    clip_scores,
    highlight_rows,
    qvh_prediction,
)
from sgdetr_hf.metrics import compute_metrics, parse_jsonl, read_jsonl, write_json
from sgdetr_hf.metrics.sgdetr_eval import mr_hd_metrics

CONFORMANCE = "qvhighlights_eval_conformance"


def qvh(*rows, references=(QVH_REFERENCE,)):
    return compute_metrics("qvhighlights", list(rows), list(references))


# ------------------------------------------------------------------------------ official conformance
@pytest.fixture(scope="module")
def official_sample(shared_data):
    predictions = read_jsonl(shared_data / CONFORMANCE / "sample_val_preds.jsonl")
    references = read_jsonl(shared_data / "qvhighlights" / "highlight_val_release.jsonl")
    expected = json.loads((shared_data / CONFORMANCE / "sample_val_preds_metrics_raw.json").read_text())
    return predictions, references, expected


def test_official_sample_reproduced_exactly(official_sample):
    predictions, references, expected = official_sample
    metrics = compute_metrics("qvhighlights", predictions, references)
    # All 104 numbers, the keys, the nesting and the key order (compared through the serialised JSON).
    assert json.dumps(metrics, indent=4) == json.dumps(expected, indent=4)
    assert metrics["brief"]["MR-full-mAP"] == 32.2 and metrics["brief"]["HL-min-VeryGood-Hit1"] == 55.55


def without(rows, field):
    return [{key: value for key, value in row.items() if key != field} for row in rows]


def only(metrics, prefix):
    """The sections and brief keys of ``metrics`` that start with ``prefix`` ("MR-" or "HL-")."""
    buckets = ("full", "long", "middle", "short")
    sections = {
        k: v for k, v in metrics.items() if k.startswith(prefix) or (prefix == "MR-" and k in buckets)
    }
    return {"brief": {k: v for k, v in metrics["brief"].items() if k.startswith(prefix)}, **sections}


def test_official_sample_derived_inputs(official_sample):
    predictions, references, expected = official_sample
    shuffled_references = list(references)
    random.Random(0).shuffle(shuffled_references)
    # the order of the rows does not matter
    assert compute_metrics("qvhighlights", predictions[::-1], shuffled_references) == expected

    mr_only = compute_metrics("qvhighlights", without(predictions, "pred_saliency_scores"), references)
    assert list(mr_only) == ["brief", "full", "long", "middle", "short"] and mr_only == only(expected, "MR-")
    hl_only = compute_metrics("qvhighlights", without(predictions, "pred_relevant_windows"), references)
    assert list(hl_only) == ["brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood"]
    assert hl_only == only(expected, "HL-")

    # Official: only the first row's keys decide what is evaluated.
    first_without_saliency = [without(predictions[:1], "pred_saliency_scores")[0], *predictions[1:]]
    assert compute_metrics("qvhighlights", first_without_saliency, references) == mr_only


# ------------------------------------------------------------------------------- hand-checked MR cases
# (R1@0.5, R1@0.7, mAP@0.5, mAP@0.75, full mAP, short mAP, middle mAP, long mAP).
MR_CASES = {
    "tied scores keep list order, FP first": (
        [[100, 110, 0.5], [40, 80, 0.5]],
        (0, 0, 16.67, 16.67, 16.67, 0, 0, 50),
    ),
    "tied scores keep list order, TP first": (
        [[40, 80, 0.5], [100, 110, 0.5]],
        (100, 100, 33.33, 33.33, 33.33, 0, 0, 100),
    ),
    "R1 uses the first listed window": (
        [[100, 110, 0.1], [40, 80, 0.9]],
        (0, 0, 33.33, 33.33, 33.33, 0, 0, 100),
    ),
    "more than 10 windows: the 11th is ignored": (
        [[100 + 4 * i, 102 + 4 * i, 0.9] for i in range(10)] + [[40, 80, 1.0]],
        (0, 0, 0, 0, 0, 0, 0, 0),
    ),
    "cut to 10 windows before sorting": (
        [[100 + 4 * i, 102 + 4 * i, 0.9] for i in range(9)] + [[40, 80, 0.1], [0, 10, 1.0]],
        (0, 0, 3.33, 3.33, 3.33, 0, 0, 10),
    ),
    "window past the video end is not clipped": ([[130, 170, 0.9]], (100, 0, 33.33, 0, 3.33, 0, 10, 0)),
    "zero-length window: IoU 0, a false positive": (
        [[60, 60, 0.9], [40, 80, 0.5]],
        (0, 0, 16.67, 16.67, 16.67, 0, 0, 50),
    ),
    "duplicate window is a false positive": (
        [[40, 80, 0.9], [40, 80, 0.8], [0, 10, 0.7]],
        (100, 100, 55.56, 55.56, 55.56, 33.33, 0, 100),
    ),
    "without the duplicate": ([[40, 80, 0.9], [0, 10, 0.7]], (100, 100, 66.67, 66.67, 66.67, 50, 0, 100)),
    "IoU exactly 0.7 counts": ([[40, 68, 0.9]], (100, 100, 33.33, 0, 16.67, 0, 0, 50)),
    "IoU exactly 0.5 counts": ([[0, 10, 0.9], [40, 60, 0.8]], (100, 100, 66.67, 33.33, 36.67, 100, 0, 5)),
}


@pytest.mark.parametrize("windows, expected", MR_CASES.values(), ids=MR_CASES.keys())
def test_moment_retrieval_hand_cases(windows, expected):
    metrics = qvh(qvh_prediction(windows))
    full = metrics["full"]
    measured = (
        full["MR-R1"]["0.5"],
        full["MR-R1"]["0.7"],
        full["MR-mAP"]["0.5"],
        full["MR-mAP"]["0.75"],
        full["MR-mAP"]["average"],
        metrics["short"]["MR-mAP"]["average"],
        metrics["middle"]["MR-mAP"]["average"],
        metrics["long"]["MR-mAP"]["average"],
    )
    assert measured == expected
    assert [k for k in metrics if k.startswith("HL")] == []  # no saliency on the first row: no HL


def test_thresholds_per_key():
    thresholds = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]
    unclipped = qvh(qvh_prediction([[130, 170, 0.9]]))["full"]  # IoU 20 / 40 = 0.5 exactly
    assert list(unclipped["MR-R1"]) == thresholds and list(unclipped["MR-mAP"]) == [*thresholds, "average"]
    assert list(unclipped["MR-R1"].values()) == [100.0] + [0.0] * 9
    assert list(unclipped["MR-mAP"].values()) == [33.33] + [0.0] * 9 + [3.33]
    on_07 = qvh(qvh_prediction([[40, 68, 0.9]]))["full"]  # IoU 28 / 40 = 0.7 exactly
    assert list(on_07["MR-R1"].values()) == [100.0] * 5 + [0.0] * 5
    assert list(on_07["MR-mAP"].values()) == [33.33] * 5 + [0.0] * 5 + [16.67]


def test_empty_length_bucket_is_left_out():
    # Official code crashes on an empty bucket; we leave the bucket and its brief key out.
    reference = {**QVH_REFERENCE, "relevant_windows": [[40, 80]]}
    metrics = qvh(qvh_prediction([[40, 80, 0.9]]), references=[reference])
    assert list(metrics) == ["brief", "full", "long"]
    assert metrics["brief"] == {
        "MR-full-R1@0.5": 100.0,
        "MR-full-R1@0.7": 100.0,
        "MR-full-mAP": 100.0,
        "MR-full-mAP@0.5": 100.0,
        "MR-full-mAP@0.75": 100.0,
        "MR-long-mAP": 100.0,
    }


def test_more_gt_windows_than_predictions_cap_recall():
    # 12 disjoint GT windows, 10 exact predictions: recall reaches only 10/12 -> AP = 10/12.
    reference = {**QVH_REFERENCE, "relevant_windows": [[4 * i, 4 * i + 2] for i in range(12)]}
    windows = [[4 * i, 4 * i + 2, 1 - i / 100] for i in range(12)]
    metrics = qvh(qvh_prediction(windows), references=[reference])
    assert metrics["full"]["MR-mAP"]["average"] == 83.33 and metrics["full"]["MR-R1"]["0.95"] == 100.0


def test_duplicate_prediction_rows_pool_windows_for_map_and_use_the_last_row_for_r1():
    # Official: mAP pools the rows' windows (each cut to 10), R1 and HL use the last row of the qid.
    # Pooled and sorted: [100, 110] (0.9) is a false positive, [40, 80] (0.5) a true positive -> AP 1/3 x 1/2.
    miss, hit = qvh_prediction([[100, 110, 0.9]]), qvh_prediction([[40, 80, 0.5]])
    miss_then_hit, hit_then_miss = qvh(miss, hit), qvh(hit, miss)
    assert miss_then_hit["full"]["MR-mAP"]["average"] == hit_then_miss["full"]["MR-mAP"]["average"] == 16.67
    assert miss_then_hit["long"]["MR-mAP"]["average"] == 50.0
    assert miss_then_hit["full"]["MR-R1"]["0.5"] == 100.0 and hit_then_miss["full"]["MR-R1"]["0.5"] == 0.0

    perfect = clip_scores(75, c20=5.0, c21=4.0, c22=3.0, c23=2.0, c24=1.0)
    flat = qvh(qvh_prediction(saliency=[0.5] * 75), qvh_prediction(saliency=perfect))
    assert flat == qvh(qvh_prediction(saliency=perfect))


# ------------------------------------------------------------------------------- hand-checked HL cases
# mAP / Hit1 for Fair, Good, VeryGood (N = 75 clips).
HL_CASES = {
    "per-annotator AP": (
        clip_scores(75, c20=5.0, c21=4.0, c22=3.0, c23=2.0, c24=1.0),
        [(90.0, 100.0), (84.44, 100.0), (90.0, 100.0)],
    ),
    "short list padded with 0.0": ([-1.0] * 10, [(4.1, 0.0), (3.08, 0.0), (2.56, 0.0)]),
    "arg-max beyond the video misses; tail dropped": (
        clip_scores(80, c77=9.0, c20=5.0),
        [(51.78, 0.0), (51.33, 0.0), (67.56, 0.0)],
    ),
    "all tied: one block, Hit@1 on clip 0": ([0.5] * 75, [(3.56, 0.0), (2.67, 0.0), (2.22, 0.0)]),
    "first maximum wins Hit@1": (
        clip_scores(75, c10=3.0, c20=3.0),
        [(26.78, 0.0), (26.33, 0.0), (34.22, 0.0)],
    ),
    "tied block with a negative": (
        clip_scores(75, c20=1.0, c21=1.0, c30=1.0, c22=0.5),
        [(56.0, 100.0), (44.89, 100.0), (39.33, 100.0)],
    ),
}


@pytest.mark.parametrize("saliency, expected", HL_CASES.values(), ids=HL_CASES.keys())
def test_highlight_hand_cases(saliency, expected):
    metrics = qvh(qvh_prediction(saliency=saliency))
    levels = ["HL-min-Fair", "HL-min-Good", "HL-min-VeryGood"]
    assert list(metrics) == ["brief", *levels]
    assert [(metrics[level]["HL-mAP"], metrics[level]["HL-Hit1"]) for level in levels] == expected
    assert list(metrics["brief"]) == [f"{level}-{key}" for level in levels for key in ("mAP", "Hit1")]


def test_highlight_worked_example_fair_level():
    # Fair (score >= 2): annotators 1 and 2 rank their positives {20, 21, 22} first -> AP 1; annotator 3's
    # positives {20, 24} sit at ranks 1 and 5 -> (1 + 2/5) / 2 = 0.7. Mean 0.9.
    metrics = qvh(qvh_prediction(saliency=clip_scores(75, c20=5.0, c21=4.0, c22=3.0, c23=2.0, c24=1.0)))
    assert metrics["HL-min-Fair"]["HL-mAP"] == 90.0


def official_highlight_metrics(scores, reference):
    """HL mAP and Hit@1 (fractions, per level) of one query, computed as the official code does: dense
    arrays of int(duration / 2) clips, scores cut or padded with 0.0, sklearn's precision_recall_curve
    (re-written in numpy) and the official interpolated AP."""
    num_clips = int(reference["duration"] / 2)
    ratings = np.zeros((num_clips, 3))
    ratings[reference["relevant_clip_ids"]] = reference["saliency_scores"]
    predicted = np.zeros(num_clips)
    predicted[: min(len(scores), num_clips)] = scores[:num_clips]
    best_clip = int(np.argmax(scores))
    results = []
    for minimum in (2, 3, 4):
        binary = (ratings >= minimum).astype(float)
        average_precisions = []
        for truth in binary.T:
            if len(set(truth)) == 1:
                average_precisions.append(float(truth[0]))
                continue
            order = np.argsort(-predicted, kind="mergesort")
            ends = np.r_[np.flatnonzero(np.diff(predicted[order])), num_clips - 1]
            true_positives = np.cumsum(truth[order])[ends]
            precision = np.r_[(true_positives / (ends + 1))[::-1], 1.0]
            recall = np.r_[(true_positives / true_positives[-1])[::-1], 0.0].astype(np.float32)
            precision = np.maximum.accumulate(precision)
            average_precisions.append(np.mean(precision[np.flatnonzero(np.diff(recall))]))
        hit = binary[best_clip].max() if best_clip < num_clips else 0.0
        results.append((np.mean(average_precisions), hit))
    return results


def test_dense_official_computation_reproduces_the_official_sample(official_sample):
    # The oracle of the tests below is itself checked against the numbers the official code printed.
    predictions, references, expected = official_sample
    by_qid = {row["qid"]: row for row in references}
    dense = np.array(
        [official_highlight_metrics(p["pred_saliency_scores"], by_qid[p["qid"]]) for p in predictions]
    )
    for level, name in enumerate(("Fair", "Good", "VeryGood")):
        ap, hit = dense[:, level].mean(axis=0)
        assert expected[f"HL-min-{name}"] == {
            "HL-mAP": float(f"{100 * ap:.2f}"),
            "HL-Hit1": float(f"{100 * hit:.2f}"),
        }


def test_highlights_equal_the_dense_official_computation():
    # Clips past the score list and the annotations are one "tail" column inside the metric: check it
    # against dense arrays for short, long and tied lists, negative scores and long videos.
    rng = np.random.default_rng(0)
    for case in range(150):
        duration = int(rng.choice([20, 75, 150, 151, 1000, 20000]))
        num_clips = duration // 2
        clip_ids = sorted(
            rng.choice(num_clips, size=int(rng.integers(1, min(num_clips, 8) + 1)), replace=False)
        )
        reference = {
            **QVH_REFERENCE,
            "duration": duration,
            "relevant_clip_ids": [int(i) for i in clip_ids],
            "saliency_scores": rng.integers(0, 5, size=(len(clip_ids), 3)).tolist(),
        }
        length = int(rng.choice([1, 3, num_clips // 2 or 1, num_clips, num_clips + 5, 300]))
        scores = np.round(rng.normal(size=length), int(rng.choice([0, 1, 6]))).tolist()  # ties, negatives
        metrics = qvh(qvh_prediction(saliency=scores), references=[reference])
        measured = [
            (metrics[f"HL-min-{name}"]["HL-mAP"], metrics[f"HL-min-{name}"]["HL-Hit1"])
            for name in ("Fair", "Good", "VeryGood")
        ]
        expected = [
            (float(f"{100 * ap:.2f}"), float(f"{100 * hit:.2f}"))
            for ap, hit in official_highlight_metrics(scores, reference)
        ]
        assert measured == expected, (case, duration, length)


def test_huge_duration_allocates_only_what_the_input_needs():
    # duration 1e9 s is 5e8 clips: the reference would allocate (5e8, 3) arrays; the clips past the
    # scores and the annotations cost nothing here, and the numbers stay those of the dense computation.
    prediction = qvh_prediction(saliency=clip_scores(75, default=0.5, c20=5.0, c21=4.0, c22=3.0))
    tracemalloc.start()
    try:
        long_video = qvh(prediction, references=[{**QVH_REFERENCE, "duration": 1e7}])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB for one 75-score query"
    # All predicted scores are above the tail's 0.0: the tail only adds negatives after the last positive.
    assert long_video == qvh(prediction) == qvh(prediction, references=[{**QVH_REFERENCE, "duration": 1e9}])
    # Scores below the tail's 0.0: the 1000 - 10 clips scored 0.0 (tied, the positives among them) rank
    # first; the Fair positives of the 3 annotators are 3, 3 and 2.
    below = qvh(qvh_prediction(saliency=[-1.0] * 10), references=[{**QVH_REFERENCE, "duration": 2e3}])
    expected_fair = np.mean([3, 3, 2]) / (1000 - 10)
    assert below["HL-min-Fair"] == {"HL-mAP": float(f"{100 * expected_fair:.2f}"), "HL-Hit1": 0.0}
    with pytest.raises(ValueError, match=r"reference row 1 \(qid 1\): 'duration' is 1e\+300, above"):
        qvh(prediction, references=[{**QVH_REFERENCE, "duration": 1e300}])


def test_saliency_lists_of_another_length_keep_the_official_numbers_and_warn(caplog):
    second = {**QVH_REFERENCE, "qid": 2}
    references = [QVH_REFERENCE, second]
    short = qvh_prediction(saliency=[0.9, 0.1, 0.5])  # 3 scores for 75 clips: padded with 0.0
    long = qvh_prediction(saliency=clip_scores(300, c20=5.0, c100=9.0), qid=2)  # cut to 75 clips
    with caplog.at_level(logging.WARNING, logger=mr_hd_metrics.__name__):
        metrics = qvh(short, long, references=references)
    messages = [r.getMessage() for r in caplog.records if r.name == mr_hd_metrics.__name__]
    assert len(messages) == 1 and messages[0].startswith(
        "2 of 2 queries have a number of 'pred_saliency_scores'"
    )
    dense = [official_highlight_metrics(row["pred_saliency_scores"], QVH_REFERENCE) for row in (short, long)]
    for level, name in enumerate(("Fair", "Good", "VeryGood")):
        ap, hit = np.mean([d[level] for d in dense], axis=0)
        assert metrics[f"HL-min-{name}"] == {
            "HL-mAP": float(f"{100 * ap:.2f}"),
            "HL-Hit1": float(f"{100 * hit:.2f}"),
        }
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=mr_hd_metrics.__name__):
        qvh(qvh_prediction(saliency=[0.5] * 75))
    assert [r for r in caplog.records if r.name == mr_hd_metrics.__name__] == []


def test_mr_and_hl_together_have_the_official_layout():
    metrics = qvh(qvh_prediction([[40, 80, 0.9]], saliency=[0.5] * 75))
    assert list(metrics) == [
        "brief",
        "HL-min-Fair",
        "HL-min-Good",
        "HL-min-VeryGood",
        "full",
        "long",
        "middle",
        "short",
    ]
    assert list(metrics["brief"])[:8] == sorted(list(metrics["brief"])[:8])  # MR keys in string order


# ----------------------------------------------------------------------------------------- bad input
QVH_ERRORS = {
    "empty window list": ([qvh_prediction([])], r"row 1 \(qid 1\): 'pred_relevant_windows' has 0 entries"),
    "string qid for an int qid": (
        [qvh_prediction([[0, 10, 1.0]], qid="1")],
        r"qid '1' is not annotated \(the annotations have the int qid 1",
    ),
    "unknown qid": (
        [qvh_prediction([[0, 10, 1.0]]), qvh_prediction([[0, 10, 1.0]], qid=7)],
        r"row 2: qid 7 is not annotated",
    ),
    "window with two numbers": (
        [qvh_prediction([[0, 10, 0.5], [20, 30]])],
        r"'pred_relevant_windows' entry 1 is \[20, 30\], with 2 number\(s\)",
    ),
    "text in a window": ([qvh_prediction([[0, "10", 0.5]])], r"holds '10', which is not a number"),
    "bool score": ([qvh_prediction([[0, 10, True]])], r"holds True, which is not a number"),
    "NaN score": ([qvh_prediction([[0, 10, float("nan")]])], r"holds nan, which is not a finite number"),
    "empty saliency": ([qvh_prediction(saliency=[])], r"'pred_saliency_scores' has 0 entries"),
    "saliency not a list": (
        [{"qid": 1, "pred_saliency_scores": 0.5}],
        r"'pred_saliency_scores' is 0.5, not a list",
    ),
    "first row with nothing to evaluate": ([{"qid": 1, "query": "q"}], r"first row decides"),
    "later row without windows": (
        [qvh_prediction([[0, 10, 1.0]]), qvh_prediction(saliency=[1.0])],
        r"prediction row 2 \(qid 1\): 'pred_relevant_windows' is missing",
    ),
    "qid missing": ([{"pred_relevant_windows": [[0, 10, 1.0]]}], r"prediction row 1: 'qid' is None"),
}


@pytest.mark.parametrize("predictions, message", QVH_ERRORS.values(), ids=QVH_ERRORS.keys())
def test_qvhighlights_bad_predictions(predictions, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics("qvhighlights", predictions, [QVH_REFERENCE])


# The official code scores a reversed window as a mAP hit (its IoU is 0 / 0 = NaN) and a reversed or
# zero-length GT window is garbage: all are refused, naming the row, qid and window.
BAD_WINDOWS = {
    "reversed prediction": (
        "qvhighlights",
        [qvh_prediction([[80, 40, 0.9]])],
        [QVH_REFERENCE],
        r"prediction row 1 \(qid 1\): 'pred_relevant_windows' entry 0 is \[80, 40, 0.9\], whose start is "
        r"after its end; expected .*start <= end",
    ),
    "reversed prediction after a good one, from numpy": (
        "qvhighlights",
        [{"qid": np.int64(1), "pred_relevant_windows": np.array([[0, 10, 0.9], [30.5, 20, 0.5]])}],
        [QVH_REFERENCE],
        r"prediction row 1 \(qid 1\): 'pred_relevant_windows' entry 1 is \[30.5, 20.0, 0.5\], whose start",
    ),
    "reversed prediction on a later row": (
        "qvhighlights",
        [qvh_prediction([[0, 10, 0.9]]), qvh_prediction([[0, 10, 0.9], [40, 80, 0.5], [81, 80, 0.1]])],
        [QVH_REFERENCE],
        r"prediction row 2 \(qid 1\): 'pred_relevant_windows' entry 2 is \[81, 80, 0.1\]",
    ),
    "reversed GT window": (
        "qvhighlights",
        [qvh_prediction([[40, 80, 0.9]])],
        [{**QVH_REFERENCE, "relevant_windows": [[0, 10], [80, 40]]}],
        r"reference row 1 \(qid 1\): 'relevant_windows' entry 1 is \[80, 40\], whose start is after its "
        r"end; expected .*start < end",
    ),
    "zero-length GT window": (
        "qvhighlights",
        [qvh_prediction([[40, 80, 0.9]])],
        [{**QVH_REFERENCE, "relevant_windows": [[40, 40]]}],
        r"'relevant_windows' entry 0 is \[40, 40\], whose start equals its end \(a zero-length window\)",
    ),
    "Charades-STA reversed prediction": (
        "charades_sta",
        [{"qid": 5, "pred_relevant_windows": [[10, 5, 0.9]]}],
        [{"qid": 5, "duration": 30, "relevant_windows": [[5, 10]]}],
        r"prediction row 1 \(qid 5\): 'pred_relevant_windows' entry 0 is \[10, 5, 0.9\], whose start is",
    ),
    "Charades-STA reversed GT window": (
        "charades_sta",
        [{"qid": 5, "pred_relevant_windows": [[5, 10, 0.9]]}],
        [{"qid": 5, "duration": 30, "relevant_windows": [[10, 5]]}],
        r"reference row 1 \(qid 5\): 'relevant_windows' entry 0 is \[10, 5\], whose start is after",
    ),
}


@pytest.mark.parametrize("dataset, predictions, references, message", BAD_WINDOWS.values(), ids=BAD_WINDOWS)
def test_reversed_and_zero_length_gt_windows_are_refused(dataset, predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(dataset, predictions, references)


def test_reversed_window_fails_the_command_line(tmp_path, capsys):
    predictions, references = tmp_path / "rev.jsonl", tmp_path / "refs.jsonl"
    predictions.write_text(json.dumps(qvh_prediction([[80, 40, 0.9]])) + "\n")
    references.write_text(json.dumps(QVH_REFERENCE) + "\n")
    output = tmp_path / "rev.json"
    argv = ["--submission_path", str(predictions), "--gt_path", str(references), "--save_path", str(output)]
    assert mr_hd_metrics.main(argv) == 1 and not output.exists()
    assert "'pred_relevant_windows' entry 0 is [80, 40, 0.9], whose start is after its end" in (
        capsys.readouterr().err
    )


def test_zero_length_predictions_score_zero():
    # A zero-length predicted window has IoU 0 with every (positive-length) GT window: a miss, not an error.
    assert qvh(qvh_prediction([[40, 40, 0.9]]))["brief"] == dict.fromkeys(
        qvh(qvh_prediction([[100, 110, 0.9]]))["brief"], 0.0
    )
    single = compute_metrics(
        "charades_sta",
        [{"qid": 5, "pred_relevant_windows": [[7, 7, 0.9]]}],
        [{"qid": 5, "duration": 30, "relevant_windows": [[5, 10]]}],
    )
    assert set(single["brief"].values()) == {0.0}


def test_missing_and_duplicate_reference_qids():
    second = {**QVH_REFERENCE, "qid": 2}
    with pytest.raises(ValueError, match=r"1 annotated qid\(s\) have no prediction row \(2\)"):
        qvh(qvh_prediction([[0, 10, 1.0]]), references=[QVH_REFERENCE, second])
    with pytest.raises(ValueError, match=r"reference row 2: qid 1 already appears on reference row 1"):
        qvh(qvh_prediction([[0, 10, 1.0]]), references=[QVH_REFERENCE, QVH_REFERENCE])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"relevant_windows": []}, r"reference row 1 \(qid 1\): 'relevant_windows' has 0 entries"),
        ({"relevant_clip_ids": [20, 21, 22, 23, 75]}, r"'relevant_clip_ids' holds 75, outside the 75 clips"),
        ({"relevant_clip_ids": [20, 21, 22, 23, 24.0]}, r"holds 24.0, which is not an integer"),
        ({"saliency_scores": [[4, 4, 4]]}, r"'saliency_scores' has 1 rows for 5 relevant clip ids"),
        ({"saliency_scores": [[4, 4]] * 5}, r"'saliency_scores' entry 0 is \[4, 4\], with 2 number\(s\)"),
        ({"duration": 1}, r"'duration' is below 2 seconds"),
        ({"duration": None}, r"'duration' is missing; expected the video length in seconds"),
    ],
)
def test_qvhighlights_bad_references(change, message):
    with pytest.raises(ValueError, match=message):
        qvh(qvh_prediction([[0, 10, 1.0]], saliency=[1.0] * 75), references=[{**QVH_REFERENCE, **change}])


def test_bad_containers_and_dataset():
    with pytest.raises(ValueError, match="no prediction rows given"):
        compute_metrics("qvhighlights", [], [QVH_REFERENCE])
    with pytest.raises(ValueError, match="predictions must be a list of JSON objects"):
        compute_metrics("qvhighlights", {"qid": 1}, [QVH_REFERENCE])
    with pytest.raises(ValueError, match="reference row 1 is 5; expected a JSON object"):
        compute_metrics("qvhighlights", [qvh_prediction([[0, 10, 1.0]])], [5])
    with pytest.raises(ValueError, match="unknown dataset 'qvh'; expected one of qvhighlights, charades_sta"):
        compute_metrics("qvh", [qvh_prediction([[0, 10, 1.0]])], [QVH_REFERENCE])


def test_numpy_inputs_are_accepted():
    # Predictions assembled from arrays (e.g. in a training loop) give the same numbers as lists.
    windows = [[40, 80, 0.9], [40, 80, 0.8], [0, 10, 0.7]]
    row = {"qid": np.int64(1), "pred_relevant_windows": np.array(windows, dtype=np.float32)}
    assert qvh(row) == qvh(qvh_prediction(windows))


# ------------------------------------------------------------------------------ Charades-STA and TACoS
def test_charades_sta_hand_case():
    metrics = compute_metrics("charades_sta", CHARADES_PREDICTIONS, CHARADES_REFERENCES)
    assert metrics["brief"] == {
        "MR-full-R1@0.3": 75.0,
        "MR-full-R1@0.5": 25.0,
        "MR-full-R1@0.7": 25.0,
        "MR-full-mAP": 50.0,
        "MR-full-mAP@0.5": 62.5,
        "MR-full-mAP@0.75": 62.5,
        # top-1 hull IoUs 5.7/6.4, 4.9/10 (first listed window, not the best scored), 4/10, 0
        "MR-full-mIoU": 44.52,
    }
    full = metrics["full"]
    assert list(full) == ["MR-mIoU", "MR-mAP", "MR-R1"]
    assert list(full["MR-R1"].values()) == [75.0, 75.0, 75.0, 50.0] + [25.0] * 8 + [0.0, 0.0]
    assert list(full["MR-R1"])[:4] == ["0.3", "0.35", "0.4", "0.45"]
    assert list(full["MR-mAP"].values()) == [62.5] * 8 + [0.0, 0.0, 50.0]


def test_tacos_string_qids_and_saliency_ignored():
    to_str = {10: "s30-d52_0", 11: "s30-d52_1", 12: "s13-d21_0", 13: "s13-d21_1"}
    predictions = [
        {**row, "qid": to_str[row["qid"]], "pred_saliency_scores": [1.0]} for row in CHARADES_PREDICTIONS
    ]
    references = [{**row, "qid": to_str[row["qid"]]} for row in CHARADES_REFERENCES]
    assert compute_metrics("tacos", predictions, references) == compute_metrics(
        "charades_sta", CHARADES_PREDICTIONS, CHARADES_REFERENCES
    )


# --------------------------------------------------------------------------------- YouTube Highlights
@pytest.mark.parametrize(
    "scores, expected",
    [
        (DESCENDING[:6], 40.56),  # ranks -, +, -, +, +, -: (1/3)[(0 + 1/2) + (1/3 + 1/2) + (1/2 + 3/5)] / 2
        ([0.1, 0.9, 0.2, 0.8, 0.7, 0.3], 100.0),
        ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.99, 0.98], 40.56),  # scores beyond the video are dropped
        ([0.9, 0.1, 0.8], 16.67),  # only 3 clips ranked, one positive at rank 3: (0 + 1/3) / 2
    ],
)
def test_youtube_highlights_hand_cases(scores, expected):
    metrics = compute_metrics("youtube_highlights", *highlight_rows([("v", "dog", YOUTUBE_LABELS, scores)]))
    assert metrics == {
        "brief": {"YT-mAP": expected, "YT-mAP-dog": expected},
        "per_domain": {"dog": {"mAP": expected, "num_videos": 1}},
    }


def test_youtube_highlights_domains_and_skipped_videos():
    # Official (lighthouse): a video without a positive clip is skipped, not counted as 0.
    videos = [
        ("a", "surfing", YOUTUBE_LABELS, [0.1, 0.9, 0.2, 0.8, 0.7, 0.3]),  # AP 1
        ("b", "dog", YOUTUBE_LABELS, DESCENDING[:6]),  # AP 0.405556
        ("c", "dog", [[0]] * 6, DESCENDING[:6]),  # skipped
    ]
    metrics = compute_metrics("youtube_highlights", *highlight_rows(videos))
    assert metrics["brief"] == {"YT-mAP": 70.28, "YT-mAP-dog": 40.56, "YT-mAP-surfing": 100.0}
    assert metrics["per_domain"]["dog"] == {"mAP": 40.56, "num_videos": 1}
    with pytest.raises(ValueError, match="no video of domain 'dog' has a positive clip"):
        compute_metrics("youtube_highlights", *highlight_rows(videos[2:]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"label": [[0], [2]]}, r"'label' holds a value other than 0 and 1"),
        ({"label": [[0, 1], [1, 0]]}, r"'label' entry 0 is \[0, 1\], with 2 number\(s\)"),
        ({"domain": "cats"}, r"'domain' is 'cats', not one of dog, gymnastics"),
    ],
)
def test_youtube_highlights_bad_references(change, message):
    predictions, references = highlight_rows([("v", "dog", YOUTUBE_LABELS, DESCENDING[:6])])
    with pytest.raises(ValueError, match=message):
        compute_metrics("youtube_highlights", predictions, [{**references[0], **change}])


# ---------------------------------------------------------------------------------------------- TVSum
def test_tvsum_hand_cases():
    # Per-annotator top-5 APs: descending scores 0.405556, 0.416667, 0.85 (mean 0.557407);
    # ascending 0.291667, 0.2875, 0.166667 (mean 0.248611). Lower medians 2, 2, 2; positives are > 2.
    videos = [("a", "VT", TVSUM_LABELS, DESCENDING), ("b", "BK", TVSUM_LABELS, ASCENDING)]
    metrics = compute_metrics("tvsum", *highlight_rows(videos))
    assert metrics["brief"] == {
        "TVSum-top5-mAP": 40.3,
        "TVSum-top5-mAP-VT": 55.74,
        "TVSum-top5-mAP-BK": 24.86,
    }
    assert metrics["per_domain"] == {
        "VT": {"mAP": 55.74, "num_videos": 1},
        "BK": {"mAP": 24.86, "num_videos": 1},
    }


def test_tvsum_no_positive_in_top5_counts_as_zero():
    # Official (lighthouse/UMT): an annotator without a positive among the top 5 adds AP 0 (counted).
    labels = [[1, 3], [1, 3], [1, 3], [1, 3], [1, 3], [5, 1], [5, 1]]  # column 1 positives: clips 5, 6
    metrics = compute_metrics("tvsum", *highlight_rows([("a", "GA", labels, DESCENDING)]))
    # column 2: lower median 3, no clip > 3 -> 0 as well
    assert metrics["brief"] == {"TVSum-top5-mAP": 0.0, "TVSum-top5-mAP-GA": 0.0}
    short_list = compute_metrics("tvsum", *highlight_rows([("a", "GA", TVSUM_LABELS, DESCENDING[:3])]))
    # only 3 clips ranked: column 1 ranks -, +, - -> (0 + 1/2)/2 / 1 = 0.25; column 2: -, +, + ->
    # (1/2)(0 + 1/2)/2 + (1/2)(1/2 + 2/3)/2 = 0.416667; column 3: +, +, - -> 1. Mean 0.555556.
    assert short_list["brief"]["TVSum-top5-mAP"] == 55.56


# ------------------------------------------------------------------------------------------ real data
def test_perfect_predictions_on_release_files(shared_data):
    for dataset, path in [
        ("charades_sta", "charades_sta/charades_test_release.jsonl"),
        ("tacos", "tacos/tacos_test_release.jsonl"),
    ]:
        references = read_jsonl(shared_data / path)
        predictions = [
            {"qid": r["qid"], "pred_relevant_windows": [[*r["relevant_windows"][0], 1.0]]} for r in references
        ]
        brief = compute_metrics(dataset, predictions, references)["brief"]
        assert set(brief.values()) == {100.0}, dataset
    for dataset, path in [
        ("youtube_highlights", "youtube_highlights/youtube_highlight_val_release.jsonl"),
        ("tvsum", "tvsum/tvsum_val_release.jsonl"),
    ]:
        references = read_jsonl(shared_data / path)
        predictions = [
            {"qid": r["qid"], "pred_saliency_scores": np.mean(r["label"], axis=1).tolist()}
            for r in references
        ]
        metrics = compute_metrics(dataset, predictions, references)
        assert len(metrics["per_domain"]) == (6 if dataset == "youtube_highlights" else 10)
        if dataset == "youtube_highlights":  # ranking by the labels themselves is perfect
            assert set(metrics["brief"].values()) == {100.0}


# ---------------------------------------------------------------------------------------------- files
def test_parse_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"qid": 1}\n\n{"qid": 2\n')
    with pytest.raises(ValueError, match=rf"{path}:3: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"qid": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=rf"{path}:2: list found; expected one JSON object per line"):
        read_jsonl(path)
    path.write_bytes(b'{"qid": 1}\n{"qid": "\xff"}')
    with pytest.raises(ValueError, match=rf"{path}:2: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"qid": 1}\n\n{"qid": 2}')  # blank lines skipped, last line without newline
    assert read_jsonl(path) == [{"qid": 1}, {"qid": 2}]
    assert parse_jsonl(['{"qid": 1}', "  "]) == [{"qid": 1}]


def test_write_json_is_atomic_and_indented(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_json(path, {"brief": {"a": 1.5}})
    write_json(path, {"brief": {"a": 2.5}})
    assert path.read_text() == '{\n    "brief": {\n        "a": 2.5\n    }\n}\n'
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"brief": {"a": 2.5}}  # a failed write leaves the old file
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(ValueError, match=r"cannot write .*metrics\.json.*NaN or Infinity"):
        write_json(path, {"brief": {"a": float("nan")}})  # strict JSON: NaN is not JSON
    assert json.loads(path.read_text()) == {"brief": {"a": 2.5}}


def test_metrics_package_imports_no_torch():
    """The metrics are numpy only, and the Hub folder never imports the sgdetr_hf package."""
    package = Path(sgdetr_hf.metrics.__file__).parent
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
        }
        assert "torch" not in imported, path
        if path.parent.name == "sgdetr_eval":
            assert "sgdetr_hf" not in imported, path

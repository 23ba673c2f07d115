"""Scoring gathered predictions: one prediction per reference, the metrics, the console table."""

import pytest

from sgdetr_hf.metrics import format_metrics_table
from sgdetr_hf.training.evaluation import evaluate_predictions

REFERENCES = [
    {"qid": 1, "duration": 150.0, "relevant_windows": [[10.0, 20.0]], "relevant_clip_ids": [5, 6],
     "saliency_scores": [[4, 4, 4], [2, 2, 2]]},
    {"qid": 2, "duration": 150.0, "relevant_windows": [[100.0, 130.0]], "relevant_clip_ids": [50, 51],
     "saliency_scores": [[1, 1, 1], [4, 3, 4]]},
]  # fmt: skip


def _prediction(qid, window):
    return {"qid": str(qid), "pred_relevant_windows": [[*window, 0.9]], "pred_saliency_scores": [0.0] * 75}


def test_exact_windows_score_100_and_qids_match_as_strings():
    predictions = [_prediction(2, [100.0, 130.0]), _prediction(1, [10.0, 20.0])]  # any order
    brief = evaluate_predictions("qvhighlights", predictions, REFERENCES)["brief"]
    assert brief["MR-full-mAP"] == 100.0 and brief["MR-full-R1@0.7"] == 100.0


@pytest.mark.parametrize(
    "predictions",
    [
        [_prediction(1, [10.0, 20.0])],  # a query lost
        [_prediction(1, [10.0, 20.0]), _prediction(1, [10.0, 20.0]), _prediction(2, [0.0, 2.0])],  # repeated
    ],
)
def test_lost_or_repeated_queries_are_errors(predictions):
    with pytest.raises(RuntimeError, match="expected exactly one for each of the 2 references"):
        evaluate_predictions("qvhighlights", predictions, REFERENCES)


def test_metrics_table():
    table = format_metrics_table({"MR-full-mAP": 48.153, "HL-min-VeryGood-Hit1": 76.0}, "demo validation")
    assert table.splitlines() == [
        "demo validation       value",
        "--------------------  -----",
        "MR-full-mAP            48.15",
        "HL-min-VeryGood-Hit1   76.00",
    ]

"""QVHighlights MR-mAP where ground-truth windows tie: the official evaluation (Moment-DETR ``standalone_eval``)
visits the ground-truth windows of a prediction in ``argsort()[::-1]`` order of their IoU, so among windows of
equal IoU the later one is matched first. On the 2-second grid equal IoUs are common; which window a
prediction takes decides which later predictions are hits."""

from sgdetr_hf.metrics import compute_metrics


def _mr_map(gt_windows, pred_windows):
    predictions = [{"qid": 0, "pred_relevant_windows": pred_windows}]
    references = [{"qid": 0, "query": "q", "vid": "v0", "duration": 150, "relevant_windows": gt_windows}]
    return list(compute_metrics("qvhighlights", predictions, references)["full"]["MR-mAP"].values())


def test_a_prediction_tied_between_two_windows_takes_the_later_one():
    """[0, 20] has IoU 0.5 with both [0, 10] and [10, 20]. By hand, at IoU 0.5 it takes [10, 20] and the next
    prediction [0, 10] is a hit too: AP 100 (had it taken [0, 10], the second would miss: AP 50). At 0.55-0.95
    [0, 20] misses and [0, 10] hits: precision 1/2 at recall 1/2, AP 25; the mean of the ten is 32.5."""
    assert _mr_map([[0, 10], [10, 20]], [[0, 20, 0.9], [0, 10, 0.8]]) == [100.0] + [25.0] * 9 + [32.5]


def test_the_earlier_window_is_taken_when_it_is_the_better_match():
    # no tie: [0, 12] overlaps [0, 10] more (IoU 10/12) than [10, 20] (2/20), so it takes [0, 10] at every
    # threshold up to 0.8, and [10, 20] is left for the second prediction
    assert _mr_map([[0, 10], [10, 20]], [[0, 12, 0.9], [10, 20, 0.8]])[:7] == [100.0] * 7

"""The learning check script: SG-DETR learns the SYNTHETIC toy task and does not learn shuffled labels."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scripts_testing import load_script


@pytest.fixture(scope="module")
def learning_check():
    return load_script("learning_check")


def test_shuffled_labels_move_annotations_and_keep_features(learning_check):
    task = learning_check.toy_task(learning_check.QUICK_SETTINGS)
    rows = task.samples(6)
    shuffled = learning_check.shuffle_labels(rows, seed=0)
    for column in ("qid", "video_features", "text_features", "duration"):
        assert all(a[column] is b[column] for a, b in zip(rows, shuffled))
    moved = [
        next(i for i, row in enumerate(rows) if row["relevant_windows"] == s["relevant_windows"])
        for s in shuffled
    ]
    assert sorted(moved) == list(range(6)) and all(
        source != i for i, source in enumerate(moved)
    )  # derangement
    for row in shuffled:  # the annotations of one sample travel together
        source = rows[moved[shuffled.index(row)]]
        assert row["saliency_scores"] == source["saliency_scores"]
        assert row["relevant_clip_ids"] == source["relevant_clip_ids"]


def test_settings_reject_bad_values(learning_check):
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(learning_check.CheckSettings(), steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(learning_check.CheckSettings(), batch_size=1)


@pytest.mark.slow
def test_quick_check_separates_learning_from_chance(learning_check, tmp_path):
    """The shortened check (< 1 minute on 2 CPU cores): the held-out mAP clears a bar that the same predictions
    scored against other samples' labels (chance) stay far below."""
    assert learning_check.main(["--output-dir", str(tmp_path), "--quick"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    settings = learning_check.QUICK_SETTINGS
    assert results["passed"] is True and "shuffled_mAP" not in results
    assert results["real_mAP"] >= settings.min_real_map > settings.max_chance_map > results["chance_mAP"]
    curve = results["runs"]["real"]["curve"]
    # the Trainer evaluates every eval_every steps, the last at the end of training
    assert [point["step"] for point in curve] == list(
        range(settings.eval_every, settings.steps + 1, settings.eval_every)
    )
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert curve[-1]["mAP"] == results["real_mAP"] > curve[0]["mAP"]
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

import json

import numpy as np
from huggingface_hub import DatasetCard

from sgdetr_hf.data import MomentRetrievalCollator
from sgdetr_hf.data.dataset import load_moment_retrieval
from sgdetr_hf.data.demo import (
    DEMO_ANNOTATIONS,
    build_demo_dataset,
    demo_annotations,
    select_demo_annotations,
)


def test_build_and_load_the_demo_dataset(tmp_path):
    report = build_demo_dataset(tmp_path / "a", num_train=40, num_validation=10, seed=1)
    assert report.queries == {"train": 40, "validation": 10} and report.video_dim == 64
    card = DatasetCard.load(tmp_path / "a" / "README.md")
    assert "synthetic" in card.text.lower() and card.data.license == "cc-by-nc-sa-4.0"
    assert "CC BY-NC-SA 4.0" in card.text

    train = load_moment_retrieval(tmp_path / "a", "demo", "train", cache_dir=str(tmp_path / "cache"))
    shipped = demo_annotations()["train"][:40]
    rows = train.__getitems__(list(range(len(train))))
    for row, original in zip(rows, shipped):
        assert row["qid"] == original["qid"] and row["query"] == original["query"]
        assert row["relevant_windows"] == original["relevant_windows"]
        # The annotated clips are where the query was planted: they match its sentence token best.
        video = row["video_features"].astype(np.float32)
        sentence = row["text_features"][0].astype(np.float32)
        cosine = video @ sentence / np.linalg.norm(video, axis=1) / np.linalg.norm(sentence)
        relevant = np.zeros(len(video), bool)
        relevant[row["relevant_clip_ids"]] = True
        if (~relevant).any():
            assert cosine[relevant].mean() > np.median(cosine[~relevant]) + 0.4
    batch = MomentRetrievalCollator(max_clips=75)(rows[:8])
    assert batch["video_features"].shape[-1] == 64 and len(batch["labels"]) == 8

    # Deterministic: the same seed gives the same features.
    build_demo_dataset(tmp_path / "b", num_train=40, num_validation=10, seed=1)
    again = load_moment_retrieval(tmp_path / "b", "demo", "train", cache_dir=str(tmp_path / "cache_b"))
    np.testing.assert_array_equal(again[5]["video_features"], rows[5]["video_features"])


def test_shipped_subset_is_the_real_annotations(shared_data):
    assert DEMO_ANNOTATIONS.read_text() == select_demo_annotations(shared_data / "qvhighlights")
    by_qid = {}
    for line in (shared_data / "qvhighlights" / "highlight_val_release.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_qid[str(record["qid"])] = record
    for row in demo_annotations()["validation"]:
        original = by_qid[row["qid"]]
        assert row["relevant_windows"] == original["relevant_windows"]
        assert row["saliency_scores"] == original["saliency_scores"]

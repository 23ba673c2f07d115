import numpy as np
import pytest
import torch

from sgdetr_hf.data import MomentRetrievalCollator, ToyGroundingTask, ToyTaskConfig, binary_clip_saliency


def _cosines(row):
    video = row["video_features"].astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    sentence = row["text_features"][0].astype(np.float32)
    return video[:, : sentence.shape[0]] @ (sentence / np.linalg.norm(sentence))


def test_deterministic_per_seed_and_independent_of_count():
    a = ToyGroundingTask(seed=3).samples(5)
    b = ToyGroundingTask(seed=3).samples(8)[:5]
    c = ToyGroundingTask(seed=4).samples(5)
    for x, y in zip(a, b):
        assert x["relevant_windows"] == y["relevant_windows"] and x["saliency_scores"] == y["saliency_scores"]
        np.testing.assert_array_equal(x["video_features"], y["video_features"])
        np.testing.assert_array_equal(x["text_features"], y["text_features"])
    assert not np.array_equal(a[0]["text_features"], c[0]["text_features"])
    # Splits share the vocabulary but not their samples.
    val = ToyGroundingTask(seed=3).sample(0, "validation")
    assert val["qid"] == "toy-validation-0" and val["relevant_windows"] != a[0]["relevant_windows"]


def test_rows_follow_the_schema():
    cfg = ToyTaskConfig(video_dim=96, text_dim=32, clip_length=1.0)
    for row in ToyGroundingTask(cfg, seed=1).samples(20):
        num_clips = row["video_features"].shape[0]
        assert row["video_features"].dtype == np.float16 and row["video_features"].shape[1] == 96
        assert row["text_features"].dtype == np.float16 and row["text_features"].shape[1] == 32
        assert cfg.min_clips <= num_clips <= cfg.max_clips and row["duration"] == num_clips * 1.0
        assert row["text_features"].shape[0] == len(row["query"].split()) + 1  # sentence token + words
        windows = np.array(row["relevant_windows"])
        assert (np.diff(windows, axis=1) > 0).all() and (windows[1:, 0] > windows[:-1, 1]).all()
        # Windows lie on clip boundaries, so the binary rule recovers exactly the relevant clips.
        np.testing.assert_array_equal(binary_clip_saliency(windows, 1.0, num_clips), row["relevant_clip_ids"])
        scores = np.array(row["saliency_scores"])
        assert scores.shape == (len(row["relevant_clip_ids"]), 3) and scores.min() >= 0 and scores.max() <= 4


def test_queries_are_planted_in_their_moments_amid_distractors():
    rows = ToyGroundingTask(seed=0).samples(100)
    moment, best_outside, median_outside, high, low = [], [], [], [], []
    for row in rows:
        cos = _cosines(row)
        relevant = np.zeros(len(cos), bool)
        relevant[row["relevant_clip_ids"]] = True
        moment.append(cos[relevant].mean())
        best_outside.append(np.sort(cos[~relevant])[-3:].mean())
        median_outside.append(np.median(cos[~relevant]))
        saliency = np.array(row["saliency_scores"]).sum(axis=1)
        high.extend(cos[row["relevant_clip_ids"]][saliency >= 9])
        low.extend(cos[row["relevant_clip_ids"]][saliency <= 6])
    # Measured with the default config: ~0.85 in moments, ~0.66 for the best distractors, ~0.05 elsewhere.
    assert np.mean(moment) > 0.75
    assert 0.45 < np.mean(best_outside) < np.mean(moment) - 0.1
    assert abs(np.mean(median_outside)) < 0.15
    # Higher annotated saliency = stronger planting.
    assert np.mean(high) > np.mean(low) + 0.05


def test_batches_are_collated_model_inputs():
    task = ToyGroundingTask(seed=2)
    rows = task.samples(6)
    batches = list(task.batches(6, batch_size=4))
    assert [b["video_features"].shape[0] for b in batches] == [4, 2]
    first = batches[0]
    lengths = [r["video_features"].shape[0] for r in rows[:4]]
    assert first["video_mask"].sum(1).tolist() == lengths
    assert first["video_features"].dtype == torch.float32 and first["video_features"].shape[1] == max(lengths)
    for row, label in zip(rows, first["labels"]):
        windows = torch.tensor(row["relevant_windows"]) / row["duration"]
        expected = torch.stack([windows.mean(1), windows[:, 1] - windows[:, 0]], 1)
        torch.testing.assert_close(label["spans"], expected)
        sums = torch.tensor(row["saliency_scores"], dtype=torch.float32).sum(1)
        torch.testing.assert_close(label["saliency_scores"][row["relevant_clip_ids"]], sums)
        assert label["saliency_scores"].sum() == sums.sum()
    assert first["meta"]["qid"] == ["toy-train-0", "toy-train-1", "toy-train-2", "toy-train-3"]
    assert (
        next(task.batches(2, 2, collator=MomentRetrievalCollator(max_clips=10)))["video_features"].shape[1]
        == 10
    )


def test_real_query_words_hash_stably():
    task = ToyGroundingTask(seed=0)
    ids = task.hash_words("The man cooks the pasta, then the man eats.")
    assert len(ids) == 5  # man, cooks, pasta, then, eats: "the" dropped, the repeated "man" kept once
    np.testing.assert_array_equal(ids, ToyGroundingTask(seed=9).hash_words("man cooks pasta then eats"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_clips": 4}, "max_window_clips"),
        ({"video_dim": 16, "text_dim": 32}, "video_dim"),
        ({"distractor_fraction": 1.5}, "distractor_fraction"),
        ({"min_query_words": 9}, "min_query_words"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyTaskConfig(**kwargs)

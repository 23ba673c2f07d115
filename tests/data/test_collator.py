import numpy as np
import pytest
import torch

from sgdetr_hf.data import MomentRetrievalCollator, source_video_id


def _row(qid, num_clips, windows, clip_ids, scores, clip_length=2.0, vid=None, dim=4, tokens=3):
    return {
        "qid": qid,
        "vid": vid or f"video{qid}",
        "query": f"query {qid}",
        "duration": num_clips * clip_length,
        "clip_length": clip_length,
        "relevant_windows": windows,
        "relevant_clip_ids": clip_ids,
        "saliency_scores": scores,
        "video_features": np.full((num_clips, dim), float(qid), dtype=np.float16),
        "text_features": np.ones((tokens, dim), dtype=np.float16),
    }


def test_hand_checked_batch():
    qvh = _row(1, 5, [[2.0, 6.0]], [1, 2], [[1, 2, 3], [4, 4, 4]], vid="j7rJstUseKg_360.0_510.0")
    binary = _row(2, 3, [[0.0, 1.5]], [0], [[1.0]], clip_length=1.0, tokens=2)
    hd_only = _row(3, 2, None, [0, 1], [[6.0], [1.5]])
    batch = MomentRetrievalCollator()([qvh, binary, hd_only])

    assert batch["video_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert batch["text_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    assert batch["video_features"].dtype == torch.float32
    assert batch["video_features"][1, :, 0].tolist() == [2, 2, 2, 0, 0]
    # [2 s, 6 s] of T = 5 clips * 2 s = 10 s -> (center 0.4, width 0.4); [0, 1.5] of 3 s -> (0.25, 0.5).
    torch.testing.assert_close(batch["labels"][0]["spans"], torch.tensor([[0.4, 0.4]]))
    torch.testing.assert_close(batch["labels"][1]["spans"], torch.tensor([[0.25, 0.5]]))
    assert batch["labels"][2]["spans"].shape == (0, 2)
    assert batch["labels"][0]["saliency_scores"].tolist() == [0, 6, 12, 0, 0]
    assert batch["labels"][1]["saliency_scores"].tolist() == [1, 0, 0]
    assert batch["labels"][2]["saliency_scores"].tolist() == [6, 1.5]
    assert [label["video_id"] for label in batch["labels"]] == ["j7rJstUseKg", "video2", "video3"]
    assert batch["meta"]["qid"] == ["1", "2", "3"]
    assert batch["meta"]["duration"].tolist() == [10.0, 3.0, 4.0]
    assert batch["meta"]["clip_length"].tolist() == [2.0, 1.0, 2.0]


def test_max_clips_clips_windows_and_saliency():
    row = _row(1, 100, [[140.0, 160.0], [170.0, 180.0]], [70, 80], [[4, 4, 4], [4, 4, 4]])
    batch = MomentRetrievalCollator(max_clips=75, max_text_tokens=2)([row])
    assert batch["video_features"].shape == (1, 75, 4) and batch["text_features"].shape == (1, 2, 4)
    # T = 75 * 2 = 150 s: [140, 160] becomes [140, 150]; [170, 180] is past the end and vanishes.
    torch.testing.assert_close(batch["labels"][0]["spans"], torch.tensor([[145 / 150, 10 / 150]]))
    saliency = batch["labels"][0]["saliency_scores"]
    assert saliency.shape == (75,) and saliency[70] == 12 and saliency.sum() == 12


def test_at_most_five_windows_a_seeded_subset_in_time_order():
    windows = [[2.0 * i, 2.0 * i + 1] for i in range(8)]
    rows = [_row(1, 20, windows, [], []), _row(2, 20, windows[:2], [], [])]
    collator = MomentRetrievalCollator(max_windows=5, seed=7)
    first = collator(rows)["labels"][0]["spans"]
    assert first.shape == (5, 2)
    assert (first[1:, 0] > first[:-1, 0]).all()  # time order kept
    starts = set((first[:, 0] - first[:, 1] / 2).mul(40).round().int().tolist())  # back to seconds
    assert starts <= {2 * i for i in range(8)}
    assert collator(rows)["labels"][1]["spans"].shape == (2, 2)
    again = MomentRetrievalCollator(max_windows=5, seed=7)(rows)["labels"][0]["spans"]
    torch.testing.assert_close(first, again)
    subsets = set()
    for epoch in range(6):
        collator.set_epoch(epoch)
        subsets.add(tuple(collator(rows)["labels"][0]["spans"][:, 0].tolist()))
    assert len(subsets) > 1


def test_random_choices_are_a_function_of_seed_epoch_and_qid():
    """A sample's window subset, margin pairs and sampling seed do not depend on its batch (so resume skips
    batches without replaying them, and any number of processes sees the same targets)."""
    windows = [[2.0 * i, 2.0 * i + 1] for i in range(8)]
    graded = [[i % 3, i % 3, i % 3] for i in range(10)]
    rows = [_row(q, 20, windows, list(range(10)), graded) for q in (1, 2, 3)]
    collator = MomentRetrievalCollator(max_windows=5, num_margin_pairs=3, seed=7)
    keys = ("spans", "saliency_pos_idx", "saliency_neg_idx", "sampling_seed")

    def draws(batch_rows, qid):
        label = collator(batch_rows)["labels"][[int(r["qid"]) for r in batch_rows].index(qid)]
        return [torch.as_tensor(label[key]) for key in keys]

    alone = draws(rows[1:2], 2)
    for batch_rows in (rows, rows[::-1], rows[1:]):  # other company, other order, other padding
        assert all(torch.equal(a, b) for a, b in zip(alone, draws(batch_rows, 2)))
    assert not torch.equal(alone[0], draws(rows, 1)[0])  # another qid draws another subset
    pos, neg = alone[1], alone[2]
    assert pos.shape == neg.shape == (3,) and set(pos.tolist()) <= {1, 2, 4, 5, 7, 8}  # relevant clips
    assert pos[0] in (2, 5, 8) and neg[0] in (1, 4, 7)  # the hard pair: highest vs lowest relevant score
    assert 0 <= float(alone[3]) < 1000
    collator.set_epoch(1)
    assert any(not torch.equal(a, b) for a, b in zip(alone, draws(rows[1:2], 2)))  # a new epoch, new draws


def test_source_video_id():
    assert source_video_id("j7rJstUseKg_360.0_510.0") == "j7rJstUseKg"
    assert source_video_id("_6hnl_BrFvs_60_210") == "_6hnl_BrFvs"
    assert source_video_id("_6hnl_BrFvs") == "_6hnl_BrFvs"
    assert source_video_id("s17-d69") == "s17-d69"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"relevant_clip_ids": [0, 1]}, "2 relevant_clip_ids but 1 saliency_scores"),
        ({"relevant_windows": [[4.0, 2.0]]}, "end < start"),
        ({"video_features": np.zeros((0, 4))}, "non-empty"),
        ({"text_features": np.zeros(4)}, "non-empty"),
        ({"clip_length": 0.0}, "clip_length"),
        (
            {"video_features": np.array([[0.0] * 4, [0.0, np.nan, 0.0, 0.0], [np.inf] * 4])},
            r"sample '1': video_features hold NaN or Inf in 2 rows \(the first: row 1\)",
        ),
        ({"text_features": np.full((3, 4), 1e39)}, r"sample '1': text_features hold NaN or Inf in 3 rows"),
    ],
)
def test_bad_rows_raise(change, message):
    row = {**_row(1, 4, [[0.0, 2.0]], [0], [[1.0]]), **change}
    with pytest.raises(ValueError, match=message):
        MomentRetrievalCollator()([row])


def test_mixed_feature_widths_raise():
    with pytest.raises(ValueError, match="widths differ"):
        MomentRetrievalCollator()([_row(1, 3, [], [], []), _row(2, 3, [], [], [], dim=5)])

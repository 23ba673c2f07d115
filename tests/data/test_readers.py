import json

import numpy as np
import pytest

from sgdetr_hf.data import binary_clip_saliency, num_clips
from sgdetr_hf.data.readers import read_annotations


def _write(tmp_path, records, name="ann.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_binary_clip_saliency_hand_checked():
    # [1.4, 3.0] with 1-s clips: clip 1 holds 0.6 s (> half), clip 2 all of it; clip 3 none.
    assert binary_clip_saliency(np.array([[1.4, 3.0]]), 1.0, 4).tolist() == [1, 2]
    # [0.2, 0.6] covers no clip by more than half: the clip of its centre (0.4 s) is used.
    assert binary_clip_saliency(np.array([[0.2, 0.6]]), 1.0, 3).tolist() == [0]
    # Two windows, one too short for the rule: union of the rule and the fallback; exactly half is not enough.
    assert binary_clip_saliency(np.array([[0.0, 3.0], [7.1, 7.4]]), 2.0, 5).tolist() == [0, 3]
    # A window past the last clip falls back to the last clip.
    assert binary_clip_saliency(np.array([[9.9, 10.2]]), 2.0, 5).tolist() == [4]
    assert num_clips(150.0, 2.0) == 75 and num_clips(150.000001, 2.0) == 75 and num_clips(33.67, 1.0) == 34


def test_shared_data_all_formats(shared_data):
    qvh = read_annotations(shared_data / "qvhighlights/highlight_train_release.jsonl", "qvhighlights")
    assert len(qvh) == 7218
    first = qvh[0]
    assert (
        first["qid"] == "9769" and first["vid"] == "j7rJstUseKg_360.0_510.0" and first["clip_length"] == 2.0
    )
    assert first["relevant_clip_ids"][:3] == [36, 37, 38] and first["saliency_scores"][0] == [4, 3, 2]
    assert first["relevant_windows"][0] == [72, 82]
    test = read_annotations(shared_data / "qvhighlights/highlight_test_release.jsonl", "qvhighlights")
    assert len(test) == 1542 and test[0]["relevant_windows"] == [] and test[0]["saliency_scores"] == []

    charades = read_annotations(shared_data / "charades_sta/charades_train_release.jsonl", "charades-sta")
    assert len(charades) == 12404 and charades[0]["clip_length"] == 1.0
    # "AO8RW" [0, 6.9] s with 1-s clips: clip 6 = [6, 7] holds 0.9 s, so clips 0..6.
    assert (
        charades[0]["relevant_clip_ids"] == list(range(7)) and charades[0]["saliency_scores"] == [[1.0]] * 7
    )

    tacos = read_annotations(shared_data / "tacos/tacos_test_release.jsonl", "tacos")
    assert len(tacos) == 4001 and isinstance(tacos[0]["qid"], str)
    short = next(r for r in tacos if r["relevant_windows"][0][1] - r["relevant_windows"][0][0] < 1.0)
    (start, end) = short["relevant_windows"][0]
    assert short["relevant_clip_ids"] == [int((start + end) / 2 // 2)]

    tvsum = read_annotations(shared_data / "tvsum/tvsum_val_release.jsonl", "tvsum")
    label = np.array(tvsum[0]["label"])
    assert len(tvsum) == 10 and label.shape[1] == 20 and tvsum[0]["domain"]
    expected = (label - 1).sum(1) / 80 * 12
    ids = tvsum[0]["relevant_clip_ids"]
    np.testing.assert_allclose(np.array(tvsum[0]["saliency_scores"])[:, 0], expected[ids])
    assert (expected[np.setdiff1d(np.arange(len(label)), ids)] == 0).all()

    youtube = read_annotations(
        shared_data / "youtube_highlights/youtube_highlight_val_release.jsonl", "youtube-highlights"
    )
    assert len(youtube) == 152 and youtube[0]["domain"] in {
        "dog",
        "gymnastics",
        "parkour",
        "skating",
        "skiing",
        "surfing",
    }
    assert youtube[0]["relevant_clip_ids"] == np.flatnonzero(np.array(youtube[0]["label"])[:, 0]).tolist()


def test_tvsum_rescaling_hand_checked(tmp_path):
    record = {"qid": "a", "vid": "a", "query": "q", "duration": 4, "domain": "VT", "label": [[1, 1], [3, 5]]}
    (row,) = read_annotations(_write(tmp_path, [record]), "tvsum")
    # clip 1: ((3 - 1) + (5 - 1)) / (4 * 2 annotators) * 12 = 9; clip 0 scores 0 and is not relevant.
    assert row["relevant_clip_ids"] == [1] and row["saliency_scores"] == [[9.0]]


GOOD = {
    "qid": 1,
    "query": "q",
    "vid": "v_0.0_150.0",
    "duration": 150,
    "relevant_windows": [[0, 4]],
    "domain": "dog",
    "label": [[1]],
}


@pytest.mark.parametrize(
    "bad, dataset, message",
    [
        ("{not json", "charades-sta", "Expecting property name"),
        ({k: v for k, v in GOOD.items() if k != "vid"}, "charades-sta", "missing field 'vid'"),
        ({**GOOD, "duration": "150"}, "charades-sta", "field 'duration' has type str"),
        ({**GOOD, "relevant_windows": [[5, 2]]}, "tacos", "0 <= start < end"),
        ({**GOOD, "relevant_windows": []}, "tacos", "relevant_windows is empty"),
        (
            {**GOOD, "relevant_clip_ids": [0, 1], "saliency_scores": [[1, 2, 3]]},
            "qvhighlights",
            "one score row per",
        ),
        ({**GOOD, "qid": 0}, "charades-sta", "duplicate qid '0'"),
        ({**GOOD, "label": [[0], [2]]}, "youtube-highlights", "one 0/1 column"),
        ("[1, 2]", "qvhighlights", "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, dataset, message):
    path = _write(tmp_path, [{**GOOD, "qid": 0}, "", bad])
    with pytest.raises(ValueError, match=message) as error:
        read_annotations(path, dataset)
    assert str(error.value).startswith(f"{path}:3: ")


def test_unknown_format_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown annotation format"):
        read_annotations(_write(tmp_path, [GOOD]), "kinetics")

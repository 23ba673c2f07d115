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


QVH = {
    "qid": 5,
    "query": "a man rides a bike",
    "vid": "v_0.0_20.0",
    "duration": 20,
    "relevant_windows": [[10, 14]],
    "relevant_clip_ids": [5, 6],
    "saliency_scores": [[4, 3, 2], [1, 0, 2]],
}
CHARADES = {
    "qid": 5,
    "query": "a person opens a door",
    "vid": "AO8RW",
    "duration": 20.0,
    "relevant_windows": [[2, 6]],
}


@pytest.mark.parametrize(
    "bad, dataset, message",
    [
        ({**QVH, "relevant_windows": [[10, 300]]}, "qvhighlights", r"\[10.0, 300.0\] ends 280 s past the video's end \(duration 20 s"),
        ({**QVH, "relevant_clip_ids": [100, 101]}, "qvhighlights", r"relevant_clip_ids \[100, 101\] lie past the video's 10 clips"),
        ({**QVH, "relevant_clip_ids": [5, 5]}, "qvhighlights", "repeat a clip"),
        ('{"qid": 5, "query": "q", "vid": "v", "duration": 20, "relevant_clip_ids": [5], "saliency_scores": [[NaN, 1, 1]]}',
         "qvhighlights", r"saliency_scores must be finite annotator scores 0..4 .*got \[nan\]"),
        ({**QVH, "saliency_scores": [[4, 3, 2], [-5, 0, 99]]}, "qvhighlights", r"0..4 \(the QVHighlights scale\), got \[-5.0, 99.0\]"),
        ({**QVH, "saliency_scores": [[4, 3, 2], [1, 0, 5]]}, "intervid-mr", "0..4"),
        ({**QVH, "query": ""}, "qvhighlights", "field 'query' is blank"),
        ({**QVH, "query": "  \t "}, "qvhighlights", "field 'query' is blank"),
        ({**QVH, "vid": ""}, "qvhighlights", "field 'vid' is blank"),
        ({**QVH, "qid": " "}, "qvhighlights", "field 'qid' is blank"),
        ({**QVH, "duration": 1e300}, "qvhighlights", r"duration must be a finite number of seconds in \(0, 86400\]"),
        ('{"qid": 5, "query": "q", "vid": "v", "duration": NaN}', "qvhighlights", "duration must be a finite"),
        ({**CHARADES, "relevant_windows": [[30, 40]]}, "charades-sta", r"\[30.0, 40.0\] starts at or after the video's end"),
        ({**CHARADES, "relevant_windows": [[2, 21.5]]}, "charades-sta", r"ends 1.5 s past .*up to one clip, 1 s"),
        ({**CHARADES, "duration": 0}, "tacos", "duration must be"),
        ({**CHARADES, "query": ""}, "tacos", "blank"),
        ({**GOOD, "query": " "}, "tvsum", "blank"),
    ],
)  # fmt: skip
def test_impossible_labels_name_file_line_and_what_is_wrong(tmp_path, bad, dataset, message):
    path = _write(tmp_path, [{**GOOD, "qid": 0}, bad])
    with pytest.raises(ValueError, match=message) as error:
        read_annotations(path, dataset)
    assert str(error.value).startswith(f"{path}:2: ")


def test_window_ends_up_to_one_clip_past_the_duration_are_clamped(tmp_path, caplog):
    path = _write(
        tmp_path, [{**CHARADES, "relevant_windows": [[15, 20.6]]}, {**QVH, "qid": 6, "duration": 19.5}]
    )
    with caplog.at_level("INFO"):
        first, second = read_annotations(path, "charades-sta")
    assert first["relevant_windows"] == [[15.0, 20.0]] and first["relevant_clip_ids"] == list(range(15, 20))
    assert second["relevant_windows"] == [[10.0, 14.0]]  # inside: unchanged
    assert "1 window ends past their video's duration (by at most 0.6 s) clamped" in caplog.text
    # QVHighlights: the last clip of a 19.5-s video is clip 9; an end 2 s past it is clamped too.
    (row,) = read_annotations(_write(tmp_path, [{**QVH, "duration": 19.5, "relevant_windows": [[16, 21.5]],
                                                "relevant_clip_ids": [9], "saliency_scores": [[1, 1, 1]]}]), "qvhighlights")  # fmt: skip
    assert row["relevant_windows"] == [[16.0, 19.5]]


SHARED_FILES = {
    "qvhighlights/highlight_train_release.jsonl": "qvhighlights",
    "qvhighlights/highlight_val_release.jsonl": "qvhighlights",
    "qvhighlights/highlight_test_release.jsonl": "qvhighlights",
    "charades_sta/charades_train_release.jsonl": "charades-sta",
    "charades_sta/charades_test_release.jsonl": "charades-sta",
    "tacos/tacos_train_release.jsonl": "tacos",
    "tacos/tacos_val_release.jsonl": "tacos",
    "tacos/tacos_test_release.jsonl": "tacos",
    "tvsum/tvsum_train_release.jsonl": "tvsum",
    "tvsum/tvsum_val_release.jsonl": "tvsum",
    "youtube_highlights/youtube_highlight_train_release.jsonl": "youtube-highlights",
    "youtube_highlights/youtube_highlight_val_release.jsonl": "youtube-highlights",
}


def test_every_real_annotation_passes_the_label_rules_unchanged(shared_data, caplog):
    """All 45,096 real annotations are accepted, none of their windows clamped, every clip id inside."""
    total = 0
    with caplog.at_level("INFO"):
        for name, dataset in SHARED_FILES.items():
            path = shared_data / name
            rows = read_annotations(path, dataset)
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            assert len(rows) == len(records), name
            for row, record in zip(rows, records):
                assert row["relevant_windows"] == (record.get("relevant_windows") or []), (name, row["qid"])
            total += len(rows)
    assert total == 45_096 and "clamped" not in caplog.text


def test_unknown_format_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown annotation format"):
        read_annotations(_write(tmp_path, [GOOD]), "kinetics")

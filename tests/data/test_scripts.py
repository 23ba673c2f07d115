import json

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from safetensors.numpy import save_file

from scripts_testing import load_script


def _save(folder, kind, key, name, array):
    (folder / kind).mkdir(parents=True, exist_ok=True)
    save_file({key: np.asarray(array, np.float32)}, folder / kind / f"{name}.safetensors")


def test_build_benchmark_dataset_script(tmp_path, capsys):
    records = [
        {
            "qid": 0,
            "query": "a person opens a door",
            "duration": 10.0,
            "vid": "AAA",
            "relevant_windows": [[1.0, 4.0]],
        },
        {
            "qid": 1,
            "query": "a person sits down",
            "duration": 10.0,
            "vid": "AAA",
            "relevant_windows": [[5.0, 9.5]],
        },
        {
            "qid": 2,
            "query": "a person drinks",
            "duration": 6.0,
            "vid": "BBB",
            "relevant_windows": [[0.0, 2.0]],
        },
    ]
    annotations = tmp_path / "train.jsonl"
    annotations.write_text("".join(json.dumps(r) + "\n" for r in records))
    features = tmp_path / "features"
    _save(features, "videos", "video_features", "AAA", np.ones((10, 8)))
    for qid in ("0", "1", "2"):
        _save(features, "queries", "text_features", qid, np.ones((4, 8)))
    argv = ["--dataset", "charades-sta", "--split", f"train={annotations}", "--features", str(features)]
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:  # bad input: one "error:" line, exit code 2
        load_script("build_benchmark_dataset").main(argv + ["--output", str(output)])
    assert stopped.value.code == 2
    assert "error: missing features for 1 videos ['BBB']" in capsys.readouterr().err
    load_script("build_benchmark_dataset").main(argv + ["--output", str(output), "--skip-missing"])
    assert json.loads(capsys.readouterr().out)["missing_videos"] == ["BBB"]
    rows = datasets.load_dataset(str(output), "charades-sta", split="train", cache_dir=str(tmp_path / "c"))
    assert list(rows["qid"]) == ["0", "1"] and rows[1]["relevant_clip_ids"] == [
        5,
        6,
        7,
        8,
    ]  # clip 9 is only half inside [5, 9.5]
    card = DatasetCard.load(output / "README.md")  # prose and licence from hub/datasets/charades-sta
    assert card.data.license == "other" and "Charades-STA" in card.text


def test_build_intervid_mr_script(tmp_path, capsys):
    flt = [
        {
            "YoutubeID": "yt1",
            "Start_timestamp": "00:00:10.000",
            "End_timestamp": "00:00:16.000",
            "Caption": "a man rides a red bike",
        },
        {
            "YoutubeID": "yt1",
            "Start_timestamp": "00:00:30.000",
            "End_timestamp": "00:00:36.000",
            "Caption": "subscribe to the channel now",
        },
        {
            "YoutubeID": "yt2",
            "Start_timestamp": "00:00:02.000",
            "End_timestamp": "00:00:08.000",
            "Caption": "a woman paints a wall",
        },
    ]
    source = tmp_path / "flt.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in flt))
    work, features = tmp_path / "work", tmp_path / "features"
    script = load_script("build_intervid_mr")
    script.main(["filter", "--input", str(source), "--output", str(work)])
    assert json.loads(capsys.readouterr().out) == {"kept": 2, "dropped": {"blacklist": 1}}
    captions = [json.loads(line) for line in (work / "captions.jsonl").read_text().splitlines()]
    assert [(c["qid"], c["ytid"], c["query"]) for c in captions] == [
        ("0", "yt1", "a man rides a red bike"),
        ("1", "yt2", "a woman paints a wall"),
    ]
    rng = np.random.default_rng(0)
    for ytid, hit in (("yt1", slice(5, 8)), ("yt2", slice(1, 4))):
        video = rng.normal(0, 0.1, (40, 8))
        video[hit, 0] += 1.0
        _save(features, "videos", "video_features", ytid, video)
    for qid in ("0", "1"):
        _save(features, "queries", "text_features", qid, np.eye(8)[:3])
    generate = ["generate", "--output", str(work), "--features", str(features), "--validation-size", "0"]
    script.main(generate + ["--dataset-dir", str(tmp_path / "ds")])
    summary = json.loads((work / "summary.json").read_text())
    assert summary["samples"] == 2 and summary["caption_filter_reasons"] == {"blacklist": 1}
    assert (work / "window_lengths.png").is_file()
    rows = datasets.load_dataset(
        str(tmp_path / "ds"), "intervid-mr", split="train", cache_dir=str(tmp_path / "c")
    )
    assert sorted(rows["qid"]) == ["0", "1"] and list(rows["duration"]) == [80.0, 80.0]

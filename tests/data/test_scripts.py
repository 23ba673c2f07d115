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


def test_build_benchmark_dataset_refuses_a_split_given_twice(tmp_path, capsys):
    record = {
        "qid": 0,
        "query": "a person sits",
        "duration": 4.0,
        "vid": "AAA",
        "relevant_windows": [[1.0, 3.0]],
    }
    first, second = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"
    first.write_text(json.dumps(record) + "\n")
    second.write_text(json.dumps({**record, "qid": 1}) + "\n")
    features = tmp_path / "features"
    _save(features, "videos", "video_features", "AAA", np.ones((4, 8)))
    for qid in ("0", "1"):
        _save(features, "queries", "text_features", qid, np.ones((2, 8)))
    argv = ["--dataset", "charades-sta", "--features", str(features), "--output", str(tmp_path / "out"),
            "--split", f"train={first}", "--split", f"train={second}"]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        load_script("build_benchmark_dataset").main(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]  # usage, then one "error:" line
    assert stopped.value.code == 2
    assert f"error: --split train= is given twice ({first} and {second}); one file per split" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--max-shard-mib", "0"], "--max-shard-mib must be > 0, got 0"),  # not a ZeroDivisionError
        (["--max-shard-mib", "-5"], "--max-shard-mib must be > 0, got -5"),  # not silently accepted
        # not a dataset built with a card without licence or prose, ready to publish
        (["--card", "{tmp}/no-card.md"], "--card {tmp}/no-card.md is not a file: give a dataset card (README.md) to take its licence from"),
    ],
)  # fmt: skip
def test_build_benchmark_dataset_refuses_bad_options_before_building(tmp_path, capsys, options, message):
    annotations = tmp_path / "train.jsonl"
    annotations.write_text(json.dumps({"qid": 0, "query": "a person sits", "duration": 4.0, "vid": "AAA",
                                       "relevant_windows": [[1.0, 3.0]]}) + "\n")  # fmt: skip
    _save(tmp_path / "features", "videos", "video_features", "AAA", np.ones((4, 8)))
    _save(tmp_path / "features", "queries", "text_features", "0", np.ones((2, 8)))
    argv = ["--dataset", "charades-sta", "--features", str(tmp_path / "features"), "--split", f"train={annotations}",
            "--output", str(tmp_path / "out"), *(option.format(tmp=tmp_path) for option in options)]  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        load_script("build_benchmark_dataset").main(argv)
    assert stopped.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1].endswith(f" error: {message.format(tmp=tmp_path)}")
    )
    assert not (tmp_path / "out").exists()


def _intervid_inputs(tmp_path, num_videos=2, captions_per_video=4):
    """InternVid rows and whole-video features whose clips 5-7 match every caption ([10, 16] s)."""
    rng = np.random.default_rng(0)
    flt, features = [], tmp_path / "features"
    for v in range(num_videos):
        video = rng.normal(0, 0.1, (40, 8))
        video[5:8, 0] += 1.0
        _save(features, "videos", "video_features", f"yt{v}", video)
        for k in range(captions_per_video):
            flt.append({"YoutubeID": f"yt{v}", "Start_timestamp": 10, "End_timestamp": 16,
                        "Caption": f"a man rides a red bike number {'abcdefgh'[k]} {'xyz'[v]}"})  # fmt: skip
    for qid in range(len(flt)):
        text = np.eye(8)[[0, 1 + qid % 7]] + rng.normal(0, 0.3, (2, 8))
        _save(features, "queries", "text_features", str(qid), text)
    source = tmp_path / "flt.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in flt))
    return source, features


def _error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]  # argparse: usage, then one "error:" line


def test_build_intervid_mr_rerun_with_other_settings_matches_a_fresh_run(tmp_path, capsys):
    source, features = _intervid_inputs(tmp_path)
    script = load_script("build_intervid_mr")
    for work in ("work", "fresh"):
        script.main(["filter", "--input", str(source), "--output", str(tmp_path / work)])
    generate = ["generate", "--features", str(features), "--shard-size", "4", "--validation-size", "0"]
    script.main(generate + ["--output", str(tmp_path / "work")])
    default = json.loads((tmp_path / "work" / "summary.json").read_text())
    script.main(
        generate + ["--output", str(tmp_path / "work"), "--threshold-sigmas", "0.3", "--grade-sigmas", "0.1"]
    )
    script.main(
        generate + ["--output", str(tmp_path / "fresh"), "--threshold-sigmas", "0.3", "--grade-sigmas", "0.1"]
    )
    capsys.readouterr()
    summaries = [json.loads((tmp_path / w / "summary.json").read_text()) for w in ("work", "fresh")]
    assert summaries[0] == summaries[1] and summaries[0]["config"]["threshold_sigmas"] == 0.3
    assert {k: v for k, v in default.items() if k != "config"} != {
        k: v for k, v in summaries[0].items() if k != "config"
    }
    assert (tmp_path / "work" / "train.jsonl").read_text() == (tmp_path / "fresh" / "train.jsonl").read_text()


def test_build_intervid_mr_bad_input_is_one_error_line(tmp_path, capsys):
    source, features = _intervid_inputs(tmp_path, num_videos=1, captions_per_video=2)
    script = load_script("build_intervid_mr")
    work = tmp_path / "work"
    generate = ["generate", "--output", str(work), "--features", str(features), "--validation-size", "0"]

    def fails(argv) -> str:
        with pytest.raises(SystemExit) as stopped:
            script.main(argv)
        assert stopped.value.code == 2
        return _error_line(capsys)

    assert f"error: {work / 'captions.jsonl'} not found: run `build_intervid_mr.py filter" in fails(generate)
    lines = source.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        lines[0] + "\n\n" + json.dumps({"YoutubeID": "yt0", "Start_timestamp": 1, "Caption": "x"}) + "\n"
    )
    assert f"error: {bad}:3: missing field 'End_timestamp' (or 'end')" in fails(["filter", "--input", str(bad), "--output", str(work)])  # fmt: skip
    script.main(["filter", "--input", str(source), "--output", str(work)])
    durations = tmp_path / "durations.json"
    durations.write_text('{"yt0": NaN}')
    assert f"error: {durations}: video 'yt0' has duration nan" in fails(
        generate + ["--durations", str(durations)]
    )
    empty = tmp_path / "empty"
    (empty / "videos").mkdir(parents=True)
    message = fails(
        ["generate", "--output", str(work), "--features", str(empty), "--dataset-dir", str(tmp_path / "ds")]
    )
    assert (
        f"error: no InterVid-MR sample to build into {tmp_path / 'ds'}: the 2 captions were all dropped "
        f"({{'missing_features': 2}}); 2 lack features in {empty} (videos/<ytid>.safetensors, "
        "queries/<qid>.safetensors), e.g. video 'yt0': extract them"
    ) in message
    assert not (tmp_path / "ds").exists()
    nan = np.full((40, 8), np.nan)
    _save(features, "videos", "video_features", "yt0", nan)
    assert (
        f"error: {features / 'videos' / 'yt0.safetensors'}: tensor 'video_features' holds 320 NaN"
        in fails(generate)
    )

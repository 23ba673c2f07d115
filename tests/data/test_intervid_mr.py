import json

import numpy as np
import pytest

from sgdetr_hf.data import intervid_mr
from sgdetr_hf.data.builder import ArrayFeatures
from sgdetr_hf.data.intervid_mr import (
    InterVidMRConfig,
    annotate_moments,
    caption_rejection,
    filter_captions,
    generate_intervid_mr,
    generate_sample,
    parse_internvid_record,
    trim_window,
)

CONFIG = InterVidMRConfig()


def test_known_intervals_and_grades():
    # Interval [4, 10] s -> original clips {2, 3, 4}: mean 0.6, std 0.0816, S_min = 0.355.
    similarity = np.array([0.1, 0.2, 0.5, 0.6, 0.7, 0.1, 0.1, 0.65, 0.2, 0.1])
    result = annotate_moments(similarity, (4.0, 10.0), 20.0, CONFIG)
    assert result["s_min"] == pytest.approx(0.6 - 3 * np.sqrt(0.02 / 3))
    # Clip 7 (0.65) joins as a second moment; the 2-clip gap 5-6 stays open.
    assert result["relevant_windows"] == [[4.0, 10.0], [14.0, 16.0]]
    assert result["relevant_clip_ids"] == [2, 3, 4, 7]
    # Over {0.5, 0.6, 0.7, 0.65}: mean 0.6125, std 0.0740 -> bounds 0.5016 / 0.6125 / 0.7234.
    assert result["saliency_scores"] == [[1, 1, 1], [2, 2, 2], [3, 3, 3], [3, 3, 3]]


def test_one_clip_gap_is_filled_and_graded_one():
    similarity = np.array([0.1, 0.1, 0.5, 0.6, 0.7, 0.1, 0.65, 0.1, 0.1, 0.1])
    result = annotate_moments(similarity, (4.0, 10.0), 20.0, CONFIG)
    assert result["relevant_windows"] == [[4.0, 14.0]] and result["relevant_clip_ids"] == [2, 3, 4, 5, 6]
    # Over {0.5, 0.6, 0.7, 0.1, 0.65}: mean 0.51, std 0.2154 -> bounds 0.187 / 0.51 / 0.833.
    assert [g[0] for g in result["saliency_scores"]] == [2, 3, 3, 1, 3]


def test_one_clip_positive_std_zero():
    similarity = np.full(10, 0.1)
    similarity[3] = 0.8
    # Interval [6, 7.5] s covers 1.5 s of clip 3 only: S_min = 0.8, ">=" keeps it; the sole positive gets 4.
    single = annotate_moments(similarity, (6.0, 7.5), 20.0, CONFIG)
    assert single["s_min"] == pytest.approx(0.8)
    assert single["relevant_windows"] == [[6.0, 8.0]] and single["saliency_scores"] == [[4, 4, 4]]
    similarity[8] = 0.9  # at least as similar as the annotated clip: a new moment
    double = annotate_moments(similarity, (6.0, 7.5), 20.0, CONFIG)
    assert double["relevant_windows"] == [[6.0, 8.0], [16.0, 18.0]]
    assert [g[0] for g in double["saliency_scores"]] == [2, 3]  # mean 0.85, std 0.05


def test_every_clip_above_s_min_is_dropped_for_coverage():
    assert annotate_moments(np.full(10, 0.5), (4.0, 10.0), 20.0, CONFIG) == "coverage"
    zigzag = np.tile([0.9, 0.0, 0.0], 20)[:60]
    assert annotate_moments(zigzag, (0.0, 2.0), 120.0, CONFIG) == "fragmented"


def test_window_at_the_video_edges():
    rng = np.random.default_rng(0)
    assert trim_window(0.0, 10.0, 300.0, rng, CONFIG) == (0, 150.0)  # interval at the start
    assert trim_window(290.0, 300.0, 300.0, rng, CONFIG) == (150, 150.0)  # interval at the end
    # Short video: W = 2 * floor(47.3 / 2) = 46 s, so the window is the whole (clip-aligned) video.
    assert trim_window(5.0, 20.0, 47.3, rng, CONFIG) == (0, 46.0)
    starts = {trim_window(100.0, 110.0, 600.0, np.random.default_rng(s), CONFIG)[0] for s in range(40)}
    assert min(starts) >= 0 and max(starts) <= 100 and all(u % 2 == 0 for u in starts) and len(starts) > 10
    # No aligned start keeps [1, 150.5] inside 150 s: u = 0 and the interval is clipped by half a clip.
    assert trim_window(1.0, 150.5, 152.0, rng, CONFIG) == (0, 150.0)


def test_rejections():
    rng = np.random.default_rng(0)
    assert trim_window(0.0, 1.0, 1.5, rng, CONFIG) == "video_shorter_than_a_clip"
    assert trim_window(3.0, 3.5, 100.0, rng, CONFIG) == "interval_invalid"  # shorter than 1 s
    assert trim_window(90.0, 120.0, 100.0, rng, CONFIG) == "interval_invalid"  # past the video's end
    assert trim_window(0.5, 47.0, 47.3, rng, CONFIG) == "interval_longer_than_window"


def test_generate_sample_end_to_end_in_the_qvhighlights_format():
    video = np.zeros((150, 4), np.float32)
    video[:, 1] = 1.0
    video[148:150, 0] = 3.0  # the caption's direction, inside its interval [296, 300] s at the video's end
    text = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    caption = {"qid": "7", "ytid": "abc", "start": 296.0, "end": 300.0, "query": "a dog runs"}
    row = generate_sample(caption, video, text, 300.0, CONFIG)
    assert row["vid"] == "abc_150.0_300.0" and row["duration"] == 150.0
    assert row["relevant_windows"] == [[146.0, 150.0]] and row["relevant_clip_ids"] == [73, 74]
    assert row["saliency_scores"] == [[4, 4, 4], [4, 4, 4]]
    tiny = generate_sample({**caption, "start": 0.0, "end": 1.2}, video[:1], text, 1.3, CONFIG)
    assert tiny == "video_shorter_than_a_clip"


def test_caption_filter_rules():
    assert caption_rejection("a man is slicing onions in a kitchen", CONFIG) is None
    assert caption_rejection("a close up of a plate of food", CONFIG) is None
    assert caption_rejection("dog", CONFIG) == "word_count"
    assert caption_rejection("visit www.example.com for more cool videos", CONFIG) == "characters"
    assert caption_rejection("the cat cat cat sits on a mat", CONFIG) == "repetition"
    assert caption_rejection("it is what it is", CONFIG) == "content_words"
    assert caption_rejection("a black screen with white letters", CONFIG) == "blacklist"
    assert caption_rejection("please subscribe to my cooking channel today", CONFIG) == "blacklist"
    rows = [
        {
            "YoutubeID": "v1",
            "Start_timestamp": "00:00:01.500",
            "End_timestamp": "00:00:09.000",
            "Caption": "a man rides a horse",
        },
        {
            "YoutubeID": "v1",
            "Start_timestamp": "00:00:20.000",
            "End_timestamp": "00:00:29.000",
            "Caption": "A man rides a horse",
        },
        {"YoutubeID": "v2", "Start_timestamp": 3, "End_timestamp": 9, "Caption": "dog"},
        *[{"ytid": "v3", "start": i, "end": i + 2, "query": "a chef cooks pasta"} for i in range(4)],
    ]
    kept, reasons = filter_captions(rows)
    assert [(c["qid"], c["ytid"], c["start"], c["end"]) for c in kept] == [("0", "v1", 1.5, 9.0)]
    assert reasons == {"duplicate": 5, "word_count": 1}
    with pytest.raises(ValueError, match="Caption"):
        parse_internvid_record({"YoutubeID": "v", "start": 0, "end": 1})
    with pytest.raises(ValueError, match="HH:MM:SS"):
        parse_internvid_record({"ytid": "v", "start": "1 min", "end": 1, "query": "x"})


def _toy_inputs(num_videos=6, captions_per_video=5):
    """Videos whose clips 10-14 match their captions' direction; captions cover clips 10-12."""
    rng = np.random.default_rng(0)
    videos, texts, captions = {}, {}, []
    for v in range(num_videos):
        clips = rng.normal(0, 0.1, size=(80 + 10 * v, 8))
        clips[10:15, 0] += 1.0
        videos[f"yt{v}"] = clips.astype(np.float16)
        for k in range(captions_per_video):
            qid = str(len(captions))
            texts[qid] = np.eye(8, dtype=np.float16)[[0, 1 + k % 7]]
            captions.append(
                {"qid": qid, "ytid": f"yt{v}", "start": 20.0, "end": 26.0, "query": f"caption {qid}"}
            )
    return captions, ArrayFeatures(videos, texts)


def _outputs(folder):
    return {name: (folder / name).read_text() for name in ("train.jsonl", "validation.jsonl")}


def test_resumable_after_a_kill_between_and_within_shards(tmp_path, monkeypatch):
    captions, features = _toy_inputs()
    config = InterVidMRConfig(validation_size=10)
    summary = generate_intervid_mr(captions, features, tmp_path / "clean", config=config, shard_size=8)
    assert summary["samples"] == 30 and summary["splits"] == {"train": 20, "validation": 10}
    assert (tmp_path / "clean" / "window_lengths.png").read_bytes()[:4] == b"\x89PNG"
    clean = _outputs(tmp_path / "clean")
    first = json.loads(clean["train.jsonl"].splitlines()[0])
    assert set(first) == {
        "qid",
        "query",
        "vid",
        "duration",
        "relevant_windows",
        "relevant_clip_ids",
        "saliency_scores",
    }

    calls = {"count": 0}
    original = intervid_mr.generate_sample

    def dies_in_shard_two(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 20:  # the 4th caption of shard 2 (0-based), after shards 0 and 1
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(intervid_mr, "generate_sample", dies_in_shard_two)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        generate_intervid_mr(captions, features, run, config=config, shard_size=8)
    assert sorted(p.name for p in (run / "shards").iterdir()) == [
        "shard-00000-of-00004.jsonl",
        "shard-00001-of-00004.jsonl",
    ]
    # A kill during a shard's write leaves only a temporary file, which the next run removes.
    (run / "shards" / ".shard-00002-of-00004.jsonl.abc.tmp").write_text('{"qid": "half')
    finished = {p: p.stat().st_mtime_ns for p in (run / "shards").glob("shard-*")}

    calls["count"] = -1000  # no more kills; count the captions the re-run processes
    generate_intervid_mr(captions, features, run, config=config, shard_size=8)
    assert calls["count"] == -1000 + 14  # only shards 2 (8) and 3 (6) ran again
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert not list((run / "shards").glob(".*.tmp"))
    assert _outputs(run) == clean


def test_missing_features_are_counted(tmp_path):
    captions, features = _toy_inputs(num_videos=2)
    del features.videos["yt1"]
    summary = generate_intervid_mr(
        captions, features, tmp_path, shard_size=100, caption_reasons={"word_count": 3}
    )
    assert summary["sample_filter_reasons"] == {"missing_features": 5}
    assert summary["input_rows"] == 13 and summary["captions_after_filter"] == 10 and summary["samples"] == 5


def test_generated_rows_build_into_a_dataset(tmp_path):
    from sgdetr_hf.data.builder import build_dataset
    from sgdetr_hf.data.dataset import load_moment_retrieval
    from sgdetr_hf.data.intervid_mr import WindowFeatures
    from sgdetr_hf.data.readers import read_annotations

    captions, features = _toy_inputs(num_videos=2, captions_per_video=2)
    generate_intervid_mr(captions, features, tmp_path / "gen", config=InterVidMRConfig(validation_size=0))
    rows = read_annotations(tmp_path / "gen" / "train.jsonl", "intervid-mr")
    build_dataset(tmp_path / "ds", "intervid-mr", {"train": rows}, WindowFeatures(features))
    loaded = load_moment_retrieval(tmp_path / "ds", "intervid-mr", "train", cache_dir=str(tmp_path / "c"))
    row = loaded[0]
    ytid, start, end = row["vid"].rsplit("_", 2)
    expected = features.videos[ytid][round(float(start) / 2) : round(float(end) / 2)]
    np.testing.assert_array_equal(row["video_features"], expected)
    assert row["duration"] == float(end) - float(start) == len(expected) * 2


def test_a_rebuild_from_the_same_feature_files_keeps_its_shards(tmp_path):
    from safetensors.numpy import save_file

    from sgdetr_hf.data.builder import FeatureFolder, build_dataset
    from sgdetr_hf.data.intervid_mr import WindowFeatures
    from sgdetr_hf.data.readers import read_annotations

    captions, arrays = _toy_inputs(num_videos=2, captions_per_video=2)
    for kind, key, items in (
        ("videos", "video_features", arrays.videos),
        ("queries", "text_features", arrays.texts),
    ):
        (tmp_path / "feats" / kind).mkdir(parents=True, exist_ok=True)
        for name, array in items.items():
            save_file({key: array}, tmp_path / "feats" / kind / f"{name}.safetensors")
    folder = FeatureFolder(tmp_path / "feats")
    generate_intervid_mr(captions, folder, tmp_path / "gen", config=InterVidMRConfig(validation_size=0))
    rows = {"train": read_annotations(tmp_path / "gen" / "train.jsonl", "intervid-mr")}
    first = build_dataset(tmp_path / "ds", "intervid-mr", rows, WindowFeatures(folder))
    again = build_dataset(tmp_path / "ds", "intervid-mr", rows, WindowFeatures(folder))
    assert first.reused_files == [] and again.reused_files == again.files == first.files  # were all rewritten
    save_file({"video_features": arrays.videos["yt1"] + 1}, tmp_path / "feats" / "videos" / "yt1.safetensors")
    changed = build_dataset(tmp_path / "ds", "intervid-mr", rows, WindowFeatures(folder))
    rewritten = sorted(set(changed.files) - set(changed.reused_files))
    video_shards = [name for name in first.files if name.startswith("intervid-mr-features/")]
    assert rewritten == video_shards and len(changed.reused_files) == len(first.files) - len(video_shards) > 0


class _CountingSamples:
    """Counts the captions a run processes (generate_sample calls)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = intervid_mr.generate_sample

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(intervid_mr, "generate_sample", counted)

    def take(self):
        count, self.count = self.count, 0
        return count


def test_a_rerun_with_other_settings_captions_durations_or_features_redoes_their_shards(
    tmp_path, monkeypatch
):
    captions, features = _toy_inputs()  # 30 captions of 6 videos: shards of 8 = 4 shards
    run, calls = tmp_path / "run", _CountingSamples(monkeypatch)
    default = generate_intervid_mr(captions, features, run, shard_size=8)
    assert calls.take() == 30
    # Other settings: every shard is redone, and the result is that of a fresh run with them.
    loose = InterVidMRConfig(threshold_sigmas=0.3)
    rerun = generate_intervid_mr(captions, features, run, config=loose, shard_size=8)
    assert calls.take() == 30
    fresh = generate_intervid_mr(captions, features, tmp_path / "fresh", config=loose, shard_size=8)
    calls.take()
    assert (
        rerun == fresh
        and rerun["grades"] != default["grades"]
        and _outputs(run) == _outputs(tmp_path / "fresh")
    )
    # validation_size only splits the finished rows: every shard is kept.
    generate_intervid_mr(captions, features, run, config=InterVidMRConfig(threshold_sigmas=0.3, validation_size=5), shard_size=8)  # fmt: skip
    assert calls.take() == 0
    # One caption changed (in shard 1): that shard only.
    edited = [dict(c) for c in captions]
    edited[9]["query"] = "another caption"
    generate_intervid_mr(edited, features, run, config=loose, shard_size=8)
    assert calls.take() == 8
    # Other features for video yt5 (shard 3 only), or another duration for yt0 (shard 0 only).
    features.videos["yt5"] = features.videos["yt5"] * 2
    generate_intervid_mr(edited, features, run, config=loose, shard_size=8)
    assert calls.take() == 6
    generate_intervid_mr(edited, features, run, config=loose, shard_size=8, durations={"yt0": 170.0})
    assert calls.take() == 8
    # Another shard size: the old shards are deleted, not left beside the new ones.
    generate_intervid_mr(edited, features, run, config=loose, shard_size=16)
    assert sorted(p.name for p in (run / "shards").iterdir()) == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]  # fmt: skip


def test_a_rerun_sees_re_extracted_and_newly_extracted_feature_files(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from sgdetr_hf.data.builder import FeatureFolder

    captions, arrays = _toy_inputs(num_videos=2)
    root = tmp_path / "feats"
    (root / "videos").mkdir(parents=True)
    (root / "queries").mkdir()
    for qid, text in arrays.texts.items():
        save_file({"text_features": text}, root / "queries" / f"{qid}.safetensors")
    save_file({"video_features": arrays.videos["yt0"]}, root / "videos" / "yt0.safetensors")
    calls = _CountingSamples(monkeypatch)
    first = generate_intervid_mr(captions, FeatureFolder(root), tmp_path / "run", shard_size=5)
    assert first["samples"] == 5 and first["sample_filter_reasons"] == {"missing_features": 5}
    assert first["missing_features_examples"] == ["video 'yt1'"]
    calls.take()
    # yt1 extracted afterwards: its shard is redone, yt0's kept.
    save_file({"video_features": arrays.videos["yt1"]}, root / "videos" / "yt1.safetensors")
    second = generate_intervid_mr(captions, FeatureFolder(root), tmp_path / "run", shard_size=5)
    assert second["samples"] == 10 and calls.take() == 5
    # yt0 re-extracted (a new file): its shard is redone.
    save_file({"video_features": arrays.videos["yt0"][::-1].copy()}, root / "videos" / "yt0.safetensors")
    generate_intervid_mr(captions, FeatureFolder(root), tmp_path / "run", shard_size=5)
    assert calls.take() == 5


def test_non_finite_features_and_durations_are_errors_naming_the_video(tmp_path):
    captions, features = _toy_inputs(num_videos=2, captions_per_video=2)
    nan_video = features.videos["yt1"].copy()
    nan_video[:] = np.nan
    bad = ArrayFeatures({**features.videos, "yt1": nan_video}, features.texts)
    with pytest.raises(ValueError, match=r"caption '2': the features of video 'yt1' \(its window's clips \d+..\d+\) hold \d+ NaN"):  # fmt: skip
        generate_intervid_mr(captions, bad, tmp_path / "a")
    texts = {**features.texts, "1": np.full((2, 8), np.inf, np.float32)}
    with pytest.raises(ValueError, match=r"caption '1': the features of its text features \(row 0"):
        generate_intervid_mr(captions, ArrayFeatures(features.videos, texts), tmp_path / "b")
    with pytest.raises(
        ValueError, match=r"durations: video 'yt1' has duration nan; durations must be finite"
    ):
        generate_intervid_mr(
            captions, features, tmp_path / "c", durations={"yt0": 160.0, "yt1": float("nan")}
        )
    with pytest.raises(ValueError, match=r"caption '7': the duration of video 'v' is nan"):
        generate_sample({"qid": "7", "ytid": "v", "start": 0.0, "end": 4.0, "query": "q"}, np.ones((9, 2)), np.ones((1, 2)), float("nan"), CONFIG)  # fmt: skip
    with pytest.raises(ValueError, match=r"setting threshold_sigmas must be a finite number, got nan"):
        InterVidMRConfig(threshold_sigmas=float("nan"))
    with pytest.raises(ValueError, match=r"max_coverage = 0 \(must be in \(0, 1\]\)"):
        InterVidMRConfig(max_coverage=0)


def test_bad_caption_records_name_their_location(tmp_path):
    rows = [{"ytid": "v1", "start": 0, "end": 5, "query": "a man rides a horse"},
            {"YoutubeID": "v1", "Start_timestamp": "00:00:01.000", "Caption": "a dog runs"}]  # fmt: skip
    with pytest.raises(ValueError, match=r"^flt.jsonl:7: missing field 'End_timestamp' \(or 'end'\)$"):
        filter_captions(rows, locations=["flt.jsonl:3", "flt.jsonl:7"])
    with pytest.raises(ValueError, match=r"^record 2: missing field 'End_timestamp'"):
        filter_captions(rows)
    with pytest.raises(ValueError, match=r"^record 1: expected a JSON object, got list"):
        filter_captions([[1, 2]])
    captions, features = _toy_inputs(num_videos=1, captions_per_video=3)
    broken = [*captions[:2], {k: v for k, v in captions[2].items() if k != "end"}]
    with pytest.raises(ValueError, match=r"^captions.jsonl:3: caption lacks \['end'\]"):
        generate_intervid_mr(broken, features, tmp_path, locations=["captions.jsonl:1", "captions.jsonl:2", "captions.jsonl:3"])  # fmt: skip
    twice = [*captions[:2], {**captions[2], "qid": captions[0]["qid"]}]
    with pytest.raises(ValueError, match=r"^record 3: qid '0' repeats record 1"):
        generate_intervid_mr(twice, features, tmp_path)
    with pytest.raises(ValueError, match=r"^record 1: start nan must be a finite number"):
        generate_intervid_mr([{**captions[0], "start": float("nan")}], features, tmp_path)

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from huggingface_hub import DatasetCard
from safetensors.numpy import save_file

from sgdetr_hf.data import MomentRetrievalCollator, ToyGroundingTask, ToyTaskConfig
from sgdetr_hf.data import builder as builder_module
from sgdetr_hf.data.builder import ArrayFeatures, FeatureFolder, build_dataset, write_parquet_shard
from sgdetr_hf.data.dataset import MomentRetrievalDataset, load_moment_retrieval
from sgdetr_hf.data.schema import ANNOTATION_COLUMNS, video_features_features

TASK = ToyGroundingTask(
    ToyTaskConfig(video_dim=24, text_dim=16, min_clips=12, max_clips=30, max_window_clips=6), seed=5
)


def _annotations(rows):
    return [{k: v for k, v in row.items() if k in ANNOTATION_COLUMNS} for row in rows]


def _feature_folder(root, rows):
    for row in rows:
        save_file(
            {"video_features": row["video_features"].astype(np.float32)},
            root / "videos" / f"{row['vid']}.safetensors",
        )
        save_file({"text_features": row["text_features"]}, root / "queries" / f"{row['qid']}.safetensors")
    return FeatureFolder(root)


@pytest.fixture
def toy_rows():
    return {"train": TASK.samples(12), "validation": TASK.samples(4, "validation")}


def test_round_trip_through_load_dataset(tmp_path, toy_rows):
    (tmp_path / "feats" / "videos").mkdir(parents=True)
    (tmp_path / "feats" / "queries").mkdir()
    source = _feature_folder(tmp_path / "feats", toy_rows["train"] + toy_rows["validation"])
    out = tmp_path / "repo"
    splits = {split: _annotations(rows) for split, rows in toy_rows.items()}
    report = build_dataset(
        out, "toy", splits, source, max_shard_bytes=4000, card_body="# Toy\n\nSYNTHETIC.\n"
    )
    assert report.queries == {"train": 12, "validation": 4} and (report.video_dim, report.text_dim) == (
        24,
        16,
    )
    assert len([f for f in report.files if f.startswith("toy-features/train-")]) > 1  # several shards
    assert sorted(datasets.get_dataset_config_names(str(out))) == ["toy", "toy-features"]
    card = DatasetCard.load(out / "README.md")
    assert "SYNTHETIC." in card.text and card.data.configs[0]["config_name"] == "toy"

    for split, rows in toy_rows.items():
        loaded = load_moment_retrieval(out, "toy", split, cache_dir=str(tmp_path / "cache"))
        assert len(loaded) == len(rows)
        for original, back in zip(rows, loaded.__getitems__(list(range(len(rows))))):
            assert back["qid"] == original["qid"] and back["vid"] == original["vid"]
            np.testing.assert_array_equal(
                back["video_features"], original["video_features"].astype(np.float32)
            )
            np.testing.assert_array_equal(back["text_features"], original["text_features"].astype(np.float32))
            np.testing.assert_allclose(back["relevant_windows"], original["relevant_windows"])
            np.testing.assert_array_equal(back["saliency_scores"], original["saliency_scores"])
        ours = MomentRetrievalCollator()(loaded.__getitems__([0, 1, 2]))
        theirs = MomentRetrievalCollator()(rows[:3])
        torch.testing.assert_close(ours["video_features"], theirs["video_features"])
        for a, b in zip(ours["labels"], theirs["labels"]):
            torch.testing.assert_close(a["spans"], b["spans"])
            torch.testing.assert_close(a["saliency_scores"], b["saliency_scores"])


def test_second_dataset_and_rebuild_keep_the_folder_consistent(tmp_path, toy_rows):
    rows = toy_rows["train"]
    source = ArrayFeatures(
        {r["vid"]: r["video_features"] for r in rows}, {r["qid"]: r["text_features"] for r in rows}
    )
    build_dataset(tmp_path, "first", {"train": _annotations(rows)}, source, max_shard_bytes=2000)
    build_dataset(
        tmp_path, "second", {"train": _annotations(rows[:3])}, source, card_metadata={"license": "mit"}
    )
    # Rebuilding "first" with one shard deletes its older shards and keeps "second".
    report = build_dataset(tmp_path, "first", {"train": _annotations(rows[:5])}, source)
    assert sorted(p.name for p in (tmp_path / "first-features").iterdir()) == ["train-00000-of-00001.parquet"]
    assert report.files == [
        "first/train-00000-of-00001.parquet",
        "first-features/train-00000-of-00001.parquet",
    ]
    assert sorted(datasets.get_dataset_config_names(str(tmp_path))) == [
        "first",
        "first-features",
        "second",
        "second-features",
    ]
    assert (
        len(datasets.load_dataset(str(tmp_path), "first", split="train", cache_dir=str(tmp_path / "c"))) == 5
    )
    assert DatasetCard.load(tmp_path / "README.md").data.license == "mit"


def test_missing_features_stop_with_the_list_or_are_skipped(tmp_path, toy_rows):
    rows = toy_rows["train"]
    source = ArrayFeatures(
        {r["vid"]: r["video_features"] for r in rows[2:]},
        {r["qid"]: r["text_features"] for r in rows if r["qid"] != rows[5]["qid"]},
    )
    with pytest.raises(
        ValueError, match=r"missing features for 2 videos \['toy-train-0', 'toy-train-1'\] and 1 queries"
    ):
        build_dataset(tmp_path, "toy", {"train": _annotations(rows)}, source)
    assert not (tmp_path / "toy").exists()  # nothing written
    report = build_dataset(tmp_path, "toy", {"train": _annotations(rows)}, source, skip_missing=True)
    assert report.missing_videos == ["toy-train-0", "toy-train-1"] and report.missing_queries == [
        "toy-train-5"
    ]
    assert report.queries == {"train": 9}


def test_inconsistent_dims_raise(tmp_path, toy_rows):
    rows = toy_rows["train"][:3]
    videos = {r["vid"]: r["video_features"] for r in rows}
    videos[rows[1]["vid"]] = np.zeros((5, 7), np.float16)
    source = ArrayFeatures(videos, {r["qid"]: r["text_features"] for r in rows})
    with pytest.raises(
        ValueError, match=r"inconsistent video features dims \(d=7: 1 e.g. \['toy-train-1'\]; d=24"
    ):
        build_dataset(tmp_path, "toy", {"train": _annotations(rows)}, source)
    videos[rows[1]["vid"]] = np.zeros(24, np.float16)
    with pytest.raises(ValueError, match="non-empty \\(rows, d\\) matrices"):
        build_dataset(tmp_path, "toy", {"train": _annotations(rows)}, source)


def test_shard_write_is_atomic(tmp_path, monkeypatch):
    features = video_features_features(4)
    columns = {"vid": ["a"], "video_features": [np.ones((2, 4), np.float16)]}
    target = tmp_path / "train-00000-of-00001.parquet"
    write_parquet_shard(target, columns, features)
    before = target.read_bytes()

    def killed(table, path, **options):  # dies half-way through writing the temporary file
        Path(path).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(builder_module.pq, "write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        write_parquet_shard(
            target, {"vid": ["b"], "video_features": [np.zeros((3, 4), np.float16)]}, features
        )
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_bad_names_raise(tmp_path, toy_rows):
    source = ArrayFeatures({}, {})
    with pytest.raises(ValueError, match="dataset name"):
        build_dataset(tmp_path, "Bad Name", {"train": []}, source)
    with pytest.raises(ValueError, match="lacks columns"):
        build_dataset(tmp_path, "toy", {"train": [{"qid": "1"}]}, source)
    with pytest.raises(ValueError, match="does not exist"):
        FeatureFolder(tmp_path / "nowhere")


def test_dataset_join_respects_selections_and_checks_videos(tmp_path, toy_rows):
    rows = toy_rows["train"][:4]
    source = ArrayFeatures(
        {r["vid"]: r["video_features"] for r in rows}, {r["qid"]: r["text_features"] for r in rows}
    )
    build_dataset(tmp_path, "toy", {"train": _annotations(rows)}, source)
    loaded = load_moment_retrieval(tmp_path, "toy", "train", cache_dir=str(tmp_path / "c"))
    picked = MomentRetrievalDataset(loaded.queries.select([3, 1]), loaded.videos)
    assert [r["qid"] for r in picked.__getitems__([0, 1])] == ["toy-train-3", "toy-train-1"]
    np.testing.assert_array_equal(picked[0]["video_features"], rows[3]["video_features"])
    with pytest.raises(ValueError, match=r"3 queries' videos have no features"):
        MomentRetrievalDataset(loaded.queries, loaded.videos.select([0]))


def _row(qid, vid, duration, windows=((0.0, 2.0),), clip_ids=(0,), **extra):
    return {
        "qid": qid, "vid": vid, "query": "a query", "duration": duration, "clip_length": 2.0,
        "relevant_windows": [list(w) for w in windows], "relevant_clip_ids": list(clip_ids),
        "saliency_scores": [[2.0, 2.0, 2.0]] * len(clip_ids), "domain": "", "label": [], **extra,
    }  # fmt: skip


def _save_folder(root, videos, texts):
    for kind, key, arrays in (("videos", "video_features", videos), ("queries", "text_features", texts)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            save_file({key: np.asarray(array)}, root / kind / f"{name}.safetensors")
    return FeatureFolder(root)


def test_feature_length_must_match_the_annotated_duration(tmp_path):
    rng = np.random.default_rng(0)
    text = {q: rng.normal(size=(3, 4)).astype(np.float32) for q in ("q1", "q2", "q3")}
    # 'good' has 3 clips (6 s) of features, but the annotation says 150 s, window [100, 110], clips 50, 51.
    source = _save_folder(tmp_path / "feats", {"good": np.ones((3, 4), np.float32)}, text)
    rows = [_row("q1", "good", 150.0, [(100.0, 110.0)], (50, 51))]
    with pytest.raises(
        ValueError,
        match=r"the video features of 1 videos do not match their annotated durations \(more than 2 clips "
        r"apart\): video 'good' has L=3 feature clips, but query 'q1' says duration 150 s, i\.e\. 75 clips "
        r"of 2 s\. .*another clip length .*max_clip_mismatch \(--max-clip-mismatch\)",
    ):
        build_dataset(tmp_path / "out", "toy", {"train": rows}, source)
    assert not (tmp_path / "out").exists()
    # 500 clips for a 20-s video (window [0, 4] would become a 0.004-wide span): refused too.
    many = ArrayFeatures({"long": np.ones((500, 4), np.float32)}, text)
    with pytest.raises(
        ValueError, match=r"'long' has L=500 feature clips, but query 'q2' says duration 20 s"
    ):
        build_dataset(tmp_path / "out", "toy", {"train": [_row("q2", "long", 20.0, [(0.0, 4.0)])]}, many)
    # Published sets differ by a clip or two: 73 and 77 clips for 150 s (75) are kept; 72 is not.
    near = ArrayFeatures({"a": np.ones((73, 4)), "b": np.ones((77, 4)), "c": np.ones((72, 4))}, text)
    report = build_dataset(
        tmp_path / "ok", "toy", {"train": [_row("q1", "a", 150.0), _row("q2", "b", 150.0)]}, near
    )
    assert report.queries == {"train": 2}
    with pytest.raises(ValueError, match=r"'c' has L=72 feature clips"):
        build_dataset(tmp_path / "ok", "toy", {"train": [_row("q3", "c", 150.0)]}, near)
    report = build_dataset(
        tmp_path / "ok", "toy", {"train": [_row("q3", "c", 150.0)]}, near, max_clip_mismatch=3
    )
    assert report.queries == {"train": 1}
    # Per-clip label rows (TVSum, YouTube Highlights) are not compared: their duration is not clips x seconds.
    tvsum = _row("q1", "a", 73.0, (), (), label=[[1.0]] * 73)
    assert build_dataset(tmp_path / "tv", "toy", {"train": [tvsum]}, near).queries == {"train": 1}
    with pytest.raises(
        ValueError, match=r"query 'q1' \(video 'a'\): duration nan and clip_length 2.0 must be"
    ):
        build_dataset(tmp_path / "bad", "toy", {"train": [_row("q1", "a", float("nan"))]}, near)


def test_non_finite_and_float16_overflowing_features_are_errors_naming_vid_qid_and_file(tmp_path):
    rows = [_row("q1", "v1", 6.0)]
    text = {"q1": np.ones((2, 4), np.float32)}
    nan = np.ones((3, 4), np.float32)
    nan[1, 2] = np.nan
    folder = _save_folder(tmp_path / "nan", {"v1": nan}, text)
    path = tmp_path / "nan" / "videos" / "v1.safetensors"
    with pytest.raises(
        ValueError, match=rf"{path}: tensor 'video_features' holds 1 NaN or infinite values of 12"
    ):
        build_dataset(tmp_path / "out", "toy", {"train": rows}, folder)
    for name, values in (
        ("big", np.full((3, 4), 1e6)),
        ("normal", np.random.default_rng(0).normal(size=(3, 4)) * 6e4),
    ):
        folder = _save_folder(tmp_path / name, {"v1": values.astype(np.float32)}, text)
        path = tmp_path / name / "videos" / "v1.safetensors"
        with pytest.raises(
            ValueError,
            match=rf"video 'v1' \({path}\): \d+ of 12 feature values are beyond float16's range \(\|x\| up to "
            r".* > 65504; first in row \d\), and the dataset stores float16; normalise or rescale",
        ):
            build_dataset(tmp_path / "out", "toy", {"train": rows}, folder)
    # In-memory features: the vid / qid is named; text features are checked the same way.
    with pytest.raises(
        ValueError, match=r"video 'v1': 1 of 12 feature values are NaN or infinite \(first in row 1\)"
    ):
        build_dataset(tmp_path / "out", "toy", {"train": rows}, ArrayFeatures({"v1": nan}, text))
    with pytest.raises(ValueError, match=r"query 'q1': 8 of 8 feature values are beyond float16's range"):
        build_dataset(
            tmp_path / "out",
            "toy",
            {"train": rows},
            ArrayFeatures({"v1": np.ones((3, 4))}, {"q1": np.full((2, 4), -7e4)}),
        )
    # 65504 itself is float16's largest value and is stored.
    edge = ArrayFeatures({"v1": np.full((3, 4), 65504.0)}, text)
    assert build_dataset(tmp_path / "edge", "toy", {"train": rows}, edge).queries == {"train": 1}

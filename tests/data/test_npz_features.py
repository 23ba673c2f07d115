"""Published .npz feature releases (Moment-DETR / CG-DETR / lighthouse layout): read, build, load, train.

The releases are generated here in exactly the published layout: ``clip_features/<vid>.npz`` and
``slowfast_features/<vid>.npz`` holding ``features`` float16 (the HERO extractor's ``np.savez`` output),
SlowFast one clip longer than CLIP for some videos, ``clip_text_features/qid<qid>.npz`` holding
``last_hidden_state`` (N, 512) and ``pooler_output`` (512,).
"""

import json
import math
import os

import datasets
import numpy as np
import pytest

from scripts_testing import load_script
from sgdetr_hf.data import MomentRetrievalCollator, read_annotations
from sgdetr_hf.data.builder import build_dataset
from sgdetr_hf.data.dataset import load_moment_retrieval
from sgdetr_hf.data.npz_features import (
    PUBLISHED_LAYOUTS,
    NpzFeatures,
    NpzLayout,
    l2_normalize,
    save_npz,
    temporal_endpoint_features,
)
from sgdetr_hf.training.recipe import load_recipe
from sgdetr_hf.training.trainer import Trainer

CLIP_DIM, SLOWFAST_DIM, TEXT_DIM = 512, 2304, 512


def _row(qid, vid, duration=10.0, clip_length=2.0):
    return {
        "qid": qid, "vid": vid, "query": "q", "duration": duration, "clip_length": clip_length,
        "relevant_windows": [[0.0, 2.0]], "relevant_clip_ids": [0], "saliency_scores": [[1.0]],
        "domain": "", "label": [],
    }  # fmt: skip


def write_release(root, rows, *, video_folders=("clip_features", "slowfast_features"), text_folder="clip_text_features",
                  query_file="qid{qid}.npz", text_dtype=np.float32, seed=0):  # fmt: skip
    """A release for ``rows`` (schema rows): random features, SlowFast one clip longer for every third video."""
    rng = np.random.default_rng(seed)
    vids = list(dict.fromkeys(row["vid"] for row in rows))
    for index, vid in enumerate(vids):
        duration = next(row for row in rows if row["vid"] == vid)["duration"]
        clip_length = next(row for row in rows if row["vid"] == vid)["clip_length"]
        length = math.ceil(duration / clip_length)
        for folder, dim, extra in zip(video_folders, (CLIP_DIM, SLOWFAST_DIM), (0, int(index % 3 == 0))):
            features = rng.standard_normal((length + extra, dim), dtype=np.float32).astype(np.float16)
            save_npz(root / folder / f"{vid}.npz", features=features)
    for row in rows:
        tokens = rng.standard_normal((len(row["query"].split()) + 2, TEXT_DIM)).astype(text_dtype)
        pooled = rng.standard_normal(TEXT_DIM).astype(text_dtype)
        save_npz(
            root / text_folder / query_file.format(qid=row["qid"]),
            last_hidden_state=tokens,
            pooler_output=pooled,
        )
    return vids


# ------------------------------------------------------------------------------------ hand-computed
def test_l2_normalisation_and_tef_by_hand():
    # x / (||x|| + 1e-5), the reference loaders' formula; a zero row stays zero.
    np.testing.assert_allclose(
        l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[3 / 5.00001, 4 / 5.00001], [0.0, 0.0]], rtol=1e-7
    )
    np.testing.assert_allclose(
        temporal_endpoint_features(4), [[0.0, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]
    )


def _tiny_release(tmp_path):
    """Two types of widths 2 and 3; SlowFast of video A one clip longer; known rows."""
    clip_a = np.array([[3, 4], [0, 2], [1, 0]], np.float16)
    slowfast_a = np.array([[0, 0, 2], [1, 1, 1], [6, 0, 8], [5, 5, 5]], np.float16)  # 4 clips: one too many
    save_npz(tmp_path / "clip_features" / "A.npz", features=clip_a)
    save_npz(tmp_path / "slowfast_features" / "A.npz", features=slowfast_a)
    save_npz(tmp_path / "clip_text_features" / "qid7.npz",
             last_hidden_state=np.array([[0, 5], [12, 5]], np.float32), pooler_output=np.array([8, 6], np.float32))  # fmt: skip
    return tmp_path


def test_types_are_normalised_apart_cut_to_the_shortest_and_concatenated_in_order(tmp_path):
    source = NpzFeatures(
        _tiny_release(tmp_path), ["clip_features", "slowfast_features"], "clip_text_features"
    )
    assert source.video_shape("A") == (3, 5)
    e = 1e-5
    expected = [
        [3 / (5 + e), 4 / (5 + e), 0, 0, 2 / (2 + e)],
        [0, 2 / (2 + e), 1 / (3**0.5 + e), 1 / (3**0.5 + e), 1 / (3**0.5 + e)],
        [1 / (1 + e), 0, 6 / (10 + e), 0, 8 / (10 + e)],
    ]
    np.testing.assert_allclose(source.video("A"), expected, rtol=1e-6)
    assert source.report()["truncated_videos"] == 1 and source.report()["truncated_clips"] == {1: 1}
    # The other order, TEF appended after normalisation, no normalisation.
    raw = NpzFeatures(tmp_path, ["slowfast_features", "clip_features"], "clip_text_features",
                      NpzLayout(normalize_video=False), tef=True)  # fmt: skip
    assert raw.video_shape("A") == (3, 7)
    np.testing.assert_allclose(raw.video("A")[2], [6, 0, 8, 1, 0, 2 / 3, 1.0], rtol=1e-7)


def test_query_tokens_with_and_without_the_pooled_vector(tmp_path):
    _tiny_release(tmp_path)
    e = 1e-5
    tokens = NpzFeatures(tmp_path, ["clip_features"], "clip_text_features")
    assert tokens.text_shape("7") == (2, 2)
    np.testing.assert_allclose(tokens.text("7"), [[0, 5 / (5 + e)], [12 / (13 + e), 5 / (13 + e)]], rtol=1e-6)
    prepended = NpzFeatures(tmp_path, ["clip_features"], "clip_text_features", pooled_token="prepend")
    assert prepended.text_shape("7") == (3, 2)
    np.testing.assert_allclose(prepended.text("7")[0], [8 / (10 + e), 6 / (10 + e)], rtol=1e-6)
    only = NpzFeatures(tmp_path, ["clip_features"], "clip_text_features", NpzLayout(normalize_text=False),
                       pooled_token="only")  # fmt: skip
    assert only.text_shape("7") == (1, 2)
    np.testing.assert_array_equal(only.text("7"), [[8, 6]])


def test_published_layouts_per_dataset():
    assert PUBLISHED_LAYOUTS["qvhighlights"].query_file == "qid{qid}.npz"
    assert PUBLISHED_LAYOUTS["charades-sta"].query_file == "qid{qid}.npz"
    assert PUBLISHED_LAYOUTS["tacos"].query_file == "{qid}.npz"  # lighthouse / CG-DETR TACoS
    assert PUBLISHED_LAYOUTS["tvsum"].text_key == "token" and not PUBLISHED_LAYOUTS["tvsum"].normalize_text


# ----------------------------------------------------------------------------------------- errors
def test_bad_files_are_errors_naming_the_file(tmp_path):
    rows = [_row("7", "A", duration=6.0)]
    _tiny_release(tmp_path)
    folders = (["clip_features", "slowfast_features"], "clip_text_features")

    def build(source=None, **kwargs):
        return build_dataset(tmp_path / "out", "qvhighlights", {"train": rows}, source or NpzFeatures(tmp_path, *folders), **kwargs)  # fmt: skip

    with pytest.raises(ValueError, match=r"feature folder .*i3d does not exist .*holds \['clip_features'"):
        NpzFeatures(tmp_path, ["i3d"], "clip_text_features")
    with pytest.raises(ValueError, match=r"qid7.npz has no array 'token' \(it holds \['last_hidden_state', 'pooler_output'\]\)"):  # fmt: skip
        build(NpzFeatures(tmp_path, *folders, NpzLayout(text_key="token")))
    # A query whose video has no features (here: no SlowFast file): the error names the absent file.
    os.remove(tmp_path / "slowfast_features" / "A.npz")
    with pytest.raises(ValueError, match=r"missing features for 1 videos \['A'\].*1 queries have no video.*slowfast_features/A.npz"):  # fmt: skip
        build()
    save_npz(tmp_path / "slowfast_features" / "A.npz", features=np.ones((3, 3, 1), np.float16))  # ragged: 3-D
    with pytest.raises(ValueError, match=r"slowfast_features/A.npz: array 'features' has shape \(3, 3, 1\)"):
        build()
    save_npz(tmp_path / "slowfast_features" / "A.npz", features=np.ones((3, 3), np.int64))
    with pytest.raises(ValueError, match=r"A.npz: array 'features' has dtype int64, expected floating"):
        build()
    (tmp_path / "slowfast_features" / "A.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"A.npz is not a readable .npz archive"):
        build()
    nan = np.ones((3, 3), np.float16)
    nan[1, 2] = np.nan
    save_npz(tmp_path / "slowfast_features" / "A.npz", features=nan)
    with pytest.raises(ValueError, match=r"slowfast_features/A.npz: array 'features' holds 1 NaN"):
        build()


def test_a_folder_of_mixed_widths_is_an_error_naming_both_files(tmp_path):
    save_npz(tmp_path / "clip" / "A.npz", features=np.ones((3, 4), np.float16))
    save_npz(tmp_path / "clip" / "B.npz", features=np.ones((3, 5), np.float16))
    (tmp_path / "text").mkdir()
    source = NpzFeatures(tmp_path, ["clip"], "text")
    source.video_shape("A")
    with pytest.raises(
        ValueError, match=r"clip/B.npz: 'features' has 5 features per row, but .*clip/A.npz .* has 4"
    ):
        source.video_shape("B")


def test_skip_missing_reports_the_dropped_queries_and_the_truncations(tmp_path, capsys):
    annotations = tmp_path / "train.jsonl"
    records = [{"qid": q, "query": "a man talks", "duration": 20.0, "vid": v, "relevant_windows": [[2.0, 6.0]]}
               for q, v in ((0, "V0"), (1, "V1"), (2, "V2"))]  # fmt: skip
    annotations.write_text("".join(json.dumps(r) + "\n" for r in records))
    release = tmp_path / "release"
    write_release(release, read_annotations(annotations, "charades-sta"), video_folders=("clip", "slowfast"),
                  text_folder="clip_text")  # fmt: skip
    os.remove(release / "clip" / "V2.npz")
    argv = ["--dataset", "charades-sta", "--features-format", "moment_detr", "--features", str(release),
            "--video-features", "clip,slowfast", "--text-features", "clip_text", "--split", f"train={annotations}",
            "--output", str(tmp_path / "out")]  # fmt: skip
    script = load_script("build_benchmark_dataset")
    with pytest.raises(SystemExit) as stopped:
        script.main(argv)
    assert stopped.value.code == 2 and "clip/V2.npz" in capsys.readouterr().err
    script.main(argv + ["--skip-missing"])
    report = json.loads(capsys.readouterr().out)
    assert report["missing_videos"] == ["V2"] and report["queries"] == {"train": 2}
    assert report["feature_source"]["missing_files_examples"] == [str(release / "clip" / "V2.npz")]
    assert report["video_dim"] == CLIP_DIM + SLOWFAST_DIM and report["text_dim"] == TEXT_DIM
    # V0 (every third video) has one SlowFast clip more than CLIP.
    assert report["feature_source"]["truncated_videos"] == 1 and report["feature_source"][
        "truncated_clips"
    ] == {"1": 1}
    with pytest.raises(SystemExit):
        script.main(
            argv[:-6] + ["--output", str(tmp_path / "o2"), "--split", f"train={annotations}"]
        )  # no --text-features
    assert "needs --video-features and --text-features" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--dataset", "charades-sta", "--features", str(release), "--tef", "--split", f"train={annotations}",
                     "--output", str(tmp_path / "o3")])  # fmt: skip
    assert "--tef apply to --features-format moment_detr only" in capsys.readouterr().err


def test_a_rerun_keeps_the_shards_whose_files_did_not_change(tmp_path):
    rows = [_row(str(i), f"V{i // 2}") for i in range(8)]
    write_release(tmp_path / "release", rows)

    def build(**options):
        source = NpzFeatures(
            tmp_path / "release", ["clip_features", "slowfast_features"], "clip_text_features", **options
        )
        return build_dataset(
            tmp_path / "out", "qvhighlights", {"train": rows}, source, max_shard_bytes=20_000
        )

    first = build()
    video_shards = [f for f in first.files if f.startswith("qvhighlights-features/")]
    assert len(video_shards) == 4 and len(first.files) > 4 and first.reused_files == []  # 1 video a shard
    again = build()
    assert again.files == first.files and again.reused_files == first.files
    # A re-extracted video file (new mtime) rewrites its shard only.
    path = tmp_path / "release" / "slowfast_features" / "V1.npz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = build()
    assert sorted(set(third.files) - set(third.reused_files)) == [
        "qvhighlights-features/train-00001-of-00004.parquet"
    ]
    # The same files with other options (TEF): nothing is reused.
    tef = build(tef=True)
    assert tef.reused_files == [f for f in tef.files if not f.startswith("qvhighlights-features")]
    assert tef.video_dim == CLIP_DIM + SLOWFAST_DIM + 2


# ------------------------------------------------------------------ real annotations, end to end
def _subset(source, target, count):
    target.write_text("".join(source.read_text().splitlines(keepends=True)[:count]))
    return target


def test_qvhighlights_release_builds_loads_collates_and_trains(shared_data, tmp_path, capsys):
    qvh = shared_data / "qvhighlights"
    train = _subset(qvh / "highlight_train_release.jsonl", tmp_path / "train.jsonl", 16)
    val = _subset(qvh / "highlight_val_release.jsonl", tmp_path / "val.jsonl", 6)
    release = tmp_path / "moment_detr_features"
    rows = read_annotations(train, "qvhighlights") + read_annotations(val, "qvhighlights")
    vids = write_release(release, rows)
    # One known row: clip 0 of the first video, [3, 4, 0...] in CLIP and [0..., 2] in SlowFast.
    first = release / "clip_features" / f"{vids[0]}.npz"
    clip = np.load(first)["features"].copy()
    clip[0] = 0
    clip[0, :2] = (3, 4)
    save_npz(first, features=clip)
    slowfast = np.load(release / "slowfast_features" / f"{vids[0]}.npz")["features"].copy()
    slowfast[0] = 0
    slowfast[0, -1] = 2
    save_npz(release / "slowfast_features" / f"{vids[0]}.npz", features=slowfast)
    assert np.load(first)["features"].dtype == np.float16  # as published

    output = tmp_path / "dataset"
    load_script("build_benchmark_dataset").main([
        "--dataset", "qvhighlights", "--features-format", "moment_detr", "--features", str(release),
        "--video-features", "clip_features,slowfast_features", "--text-features", "clip_text_features",
        "--split", f"train={train}", "--split", f"validation={val}", "--output", str(output),
    ])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == {"train": 16, "validation": 6} and report["video_dim"] == 2816
    assert report["feature_source"]["truncated_videos"] == len(vids[::3])

    videos = datasets.load_dataset(
        str(output), "qvhighlights-features", split="train", cache_dir=str(tmp_path / "c")
    )
    row = np.asarray(videos.with_format("numpy")[0]["video_features"], np.float32)
    assert row.shape == (75, 2816)  # the SlowFast extra clip is cut
    expected = np.zeros(2816)
    expected[:2] = 3 / 5.00001, 4 / 5.00001
    expected[-1] = 2 / 2.00001
    np.testing.assert_allclose(row[0], expected, atol=1e-3)  # float16 storage
    np.testing.assert_allclose(np.linalg.norm(row[1:, :512], axis=1), 1.0, atol=2e-3)

    dataset = load_moment_retrieval(output, "qvhighlights", "train", cache_dir=str(tmp_path / "c"))
    batch = MomentRetrievalCollator(max_clips=75)(dataset.__getitems__([0, 1, 2]))
    assert batch["video_features"].shape[-1] == 2816 and batch["text_features"].shape[-1] == 512

    overrides = {
        "dataset_path": str(output), "output_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 2,
        "eval_every_steps": 2, "logging_steps": 1, "milestones": [1], "checkpoints_total_limit": 1,
        "mixed_precision": "no", "model.hidden_size": 32, "model.num_attention_heads": 4, "model.ffn_dim": 64,
        "model.num_dn_groups": 1,
    }  # fmt: skip
    trainer = Trainer(load_recipe("qvhighlights_clip_slowfast", overrides))
    result = trainer.run()
    losses = [record["loss"] for record in trainer.state.history if "loss" in record]
    assert result.global_step == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert (saved["video_feature_dim"], saved["text_feature_dim"], saved["use_tef"]) == (2816, 512, True)
    assert saved["normalize_features"] is False  # the builder normalised each feature type already


def test_charades_sta_lighthouse_release_has_one_second_clips(shared_data, tmp_path, capsys):
    source = shared_data / "charades_sta" / "charades_test_release.jsonl"
    test = _subset(source, tmp_path / "test.jsonl", 12)
    rows = read_annotations(test, "charades-sta")
    release = tmp_path / "charades"
    write_release(
        release, rows, video_folders=("clip", "slowfast"), text_folder="clip_text", text_dtype=np.float16
    )
    output = tmp_path / "dataset"
    load_script("build_benchmark_dataset").main([
        "--dataset", "charades-sta", "--features-format", "moment_detr", "--features", str(release),
        "--video-features", "clip,slowfast", "--text-features", "clip_text", "--pooled-token", "prepend",
        "--split", f"test={test}", "--output", str(output),
    ])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    dataset = load_moment_retrieval(output, "charades-sta", "test", cache_dir=str(tmp_path / "c"))
    assert set(dataset.queries["clip_length"]) == {1.0}
    for query in dataset.__getitems__(list(range(len(dataset)))):
        assert len(query["video_features"]) == math.ceil(query["duration"])  # one feature per second
        assert len(query["text_features"]) == len(query["query"].split()) + 3  # tokens + the pooled one
    assert report["text_dim"] == 512 and report["video_dim"] == 2816
    recipe = load_recipe("charades_sta_clip_slowfast")
    assert recipe.model["clip_length"] == 1.0 and recipe.model["video_feature_dim"] == 2816
    assert np.isfinite(np.asarray(dataset[0]["text_features"], np.float32)).all()


def test_types_at_different_clip_rates_are_refused_unless_allowed_and_bad_patterns_refused(tmp_path, caplog):
    save_npz(tmp_path / "clip" / "A.npz", features=np.ones((75, 4), np.float16))
    save_npz(tmp_path / "slowfast" / "A.npz", features=np.ones((38, 4), np.float16))  # 4 s clips
    save_npz(tmp_path / "clip" / "B.npz", features=np.ones((75, 4), np.float16))
    save_npz(tmp_path / "slowfast" / "B.npz", features=np.ones((77, 4), np.float16))  # 2 more: rounding
    (tmp_path / "text").mkdir()
    source = NpzFeatures(tmp_path, ["clip", "slowfast"], "text")
    with pytest.raises(
        ValueError,
        match=r"video 'A': its feature types differ by 37 clips \(more than 2\): .*clip/A.npz: 75 clips, "
        r".*slowfast/A.npz: 38 clips; were they extracted at different clip lengths",
    ):
        source.video_shape("A")
    assert source.video_shape("B") == (75, 8) and source.report()["truncated_clips"] == {2: 1}
    allowed = NpzFeatures(tmp_path, ["clip", "slowfast"], "text", max_clip_mismatch=40)
    with caplog.at_level("WARNING"):
        assert allowed.video_shape("A") == (38, 8)
    assert "cutting 37 clips to the shortest" in caplog.text and allowed.report()["truncated_max_clips"] == 37
    with pytest.raises(ValueError, match="must contain {qid} and no other field"):
        NpzFeatures(tmp_path, ["clip"], "text", NpzLayout(query_file="{vid}_{qid}.npz"))


def test_npz_values_beyond_float16_and_lengths_off_the_duration_are_errors(tmp_path, capsys):
    annotations = tmp_path / "train.jsonl"
    record = {
        "qid": 0,
        "query": "a man talks",
        "duration": 10.0,
        "vid": "V0",
        "relevant_windows": [[2.0, 6.0]],
    }
    annotations.write_text(json.dumps(record) + "\n")
    release = tmp_path / "release"
    rng = np.random.default_rng(0)
    save_npz(release / "clip" / "V0.npz", features=(rng.standard_normal((10, 8)) * 1e5).astype(np.float32))
    save_npz(release / "clip_text" / "qid0.npz", last_hidden_state=np.ones((3, 8), np.float32),
             pooler_output=np.ones(8, np.float32))  # fmt: skip
    argv = ["--dataset", "charades-sta", "--features-format", "moment_detr", "--features", str(release),
            "--video-features", "clip", "--text-features", "clip_text", "--split", f"train={annotations}",
            "--output", str(tmp_path / "out")]  # fmt: skip
    script = load_script("build_benchmark_dataset")
    with pytest.raises(SystemExit) as stopped:
        script.main(argv + ["--no-normalize-video"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and f"video 'V0' ({release / 'clip' / 'V0.npz'}): " in error
    assert "feature values are beyond float16's range" in error and "leave --normalize-video" in error
    script.main(argv)  # normalised (the default), the same file builds
    assert json.loads(capsys.readouterr().out)["queries"] == {"train": 1}
    # 10 s of 1-s clips is 10 clips: 14 are refused, naming the video; --max-clip-mismatch 4 allows them.
    save_npz(release / "clip" / "V0.npz", features=rng.standard_normal((14, 8)).astype(np.float32))
    with pytest.raises(SystemExit) as stopped:
        script.main(argv)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2
    assert (
        "video 'V0' has L=14 feature clips, but query '0' says duration 10 s, i.e. 10 clips of 1 s" in error
    )
    script.main(argv + ["--max-clip-mismatch", "4"])
    assert json.loads(capsys.readouterr().out)["queries"] == {"train": 1}

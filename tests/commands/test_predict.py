"""``sgdetr predict``: the moments table, the JSON file, the timeline PNG, and clear errors."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import pipeline

from internvideo2_testing import write_video
from pipeline_testing import damage_file, edit_weights, save_tiny_model_repo
from sgdetr_hf import SGDetrFeatureExtractor, VideoMomentRetrievalPipeline
from sgdetr_hf.commands import main
from sgdetr_hf.commands import predict as predict_command
from sgdetr_hf.commands.extract_features import extract_features

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return save_tiny_model_repo(tmp_path_factory.mktemp("tiny-sgdetr"))


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=250, size=(32, 32))  # 10 s


def test_predict_prints_the_table_and_writes_json_and_plot(repo, video_file, tmp_path, capsys):
    out_json, out_png = tmp_path / "moments.json", tmp_path / "timeline.png"
    argv = ["predict", str(video_file), "a man rides a bike", "a dog", "--model", str(repo), "--top-k", "3"]
    code = main(argv + ["--json", str(out_json), "--plot", str(out_png), "--ground-truth", "2", "6"])
    assert code == 0
    written = json.loads(out_json.read_text())
    # the JSON is exactly what the pipeline returns for the same call
    expected = pipeline(
        "video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo)
    )(str(video_file), queries=["a man rides a bike", "a dog"], top_k=3)
    assert written == json.loads(json.dumps(expected))
    table = capsys.readouterr().out
    assert 'query: "a man rides a bike"' in table and 'query: "a dog"' in table
    for result in written:
        assert len(result["pred_relevant_windows"]) >= 1 and len(result["pred_saliency_scores"]) == 5
        for rank, (start, end, score) in enumerate(result["pred_relevant_windows"], start=1):
            assert f"  {rank:>4}  {start:>10.2f}  {end:>10.2f}  {score:>7.4f}" in table
    image = out_png.read_bytes()
    assert image.startswith(PNG_MAGIC) and len(image) > 10_000


def test_predict_reads_feature_files(repo, tmp_path, capsys):
    generator = torch.Generator().manual_seed(0)
    features = tmp_path / "video.safetensors"
    save_file({"video_features": torch.randn(90, 16, generator=generator)}, features)  # 180 s: two windows
    out_json = tmp_path / "moments.json"
    assert main(["predict", str(features), "a dog", "--model", str(repo), "--json", str(out_json)]) == 0
    (result,) = json.loads(out_json.read_text())
    assert result["query"] == "a dog" and len(result["pred_saliency_scores"]) == 90
    assert len(result["pred_relevant_windows"]) == 5  # the default --top-k
    assert max(end for _, end, _ in result["pred_relevant_windows"]) <= 180.0


def test_a_feature_file_of_extract_features_answers_as_its_video(repo, tmp_path):
    """A 7.32-s video's features file was answered as an 8-s video (4 clips x 2 s), a window ending at 7.71 s,
    after the video; its clip_timestamps hold the video's end, as the video file's decoding does."""
    # 7.32 s: 4 clips, the last one partial
    video = write_video(tmp_path / "clip.mp4", num_frames=183, size=(32, 32))
    extractor = SGDetrFeatureExtractor.from_pretrained(repo / "encoder", device="cpu")
    extract_features(extractor, {"clip": video}, {}, tmp_path / "features")
    answers = []
    for source in (video, tmp_path / "features" / "videos" / "clip.safetensors"):
        out_json = tmp_path / f"{source.stem}{source.suffix}.json"
        assert main(["predict", str(source), "a dog", "--model", str(repo), "--json", str(out_json)]) == 0
        answers.append(json.loads(out_json.read_text()))
    from_video, from_features = answers
    assert from_features[0]["duration"] == from_video[0]["duration"] == 7.32
    # the features are stored in float16: the same windows to 1e-2 s
    windows_video, windows_features = (np.array(a[0]["pred_relevant_windows"]) for a in answers)
    np.testing.assert_allclose(windows_features, windows_video, atol=1e-2)
    assert windows_features[:, 1].max() <= 7.32


def test_a_feature_file_of_other_clips_than_the_models_is_refused(repo, tmp_path, capsys):
    # 1-s clips read by a 2-s model: every second of the answer would be off by 2x
    video = write_video(tmp_path / "clip.mp4", num_frames=183, size=(32, 32))
    extractor = SGDetrFeatureExtractor.from_pretrained(repo / "encoder", device="cpu")
    extractor.processor.video_processor.clip_length = 1.0
    extract_features(extractor, {"clip": video}, {}, tmp_path / "features")
    features = tmp_path / "features" / "videos" / "clip.safetensors"
    assert main(["predict", str(features), "a dog", "--model", str(repo)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {features} holds features of 1-s clips, but the model takes 2-s clips: extract them again "
        "with --clip-length 2"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--ground-truth", "5", "3"], "0 <= START < END"),
        (["--model", "/nonexistent/model-folder"], "error:"),
    ],
)
def test_bad_arguments_give_a_message_and_exit_code_2(repo, video_file, extra, message, capsys):
    argv = ["predict", str(video_file), "a dog", "--model", str(repo)] + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_inputs_give_the_pipeline_message(repo, video_file, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert main(["predict", str(missing), "a dog", "--model", str(repo)]) == 2
    assert "is not a file" in capsys.readouterr().err
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    assert main(["predict", str(not_a_video), "a dog", "--model", str(repo)]) == 2
    assert "error:" in capsys.readouterr().err
    wrong = tmp_path / "wrong.safetensors"
    save_file({"features": torch.zeros(3, 16)}, wrong)
    assert main(["predict", str(wrong), "a dog", "--model", str(repo)]) == 2
    assert "not 'video_features'" in capsys.readouterr().err
    assert main(["predict", str(video_file), " ", "--model", str(repo)]) == 2
    assert "query 0 must be a non-empty string" in capsys.readouterr().err


@pytest.fixture
def damaged_repo(repo, tmp_path):
    """A copy of the tiny repository for a test to damage."""
    return shutil.copytree(repo, tmp_path / "repo")


def _damage(folder, damage):
    if damage == "a missing weight":
        return edit_weights(folder, drop=1)[0]
    if damage == "pickle only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
        return "only pickled weights (pytorch_model.bin)"
    if damage == "no config.json":
        (folder / "config.json").unlink()
        return f"{folder} has no config.json"
    return f"{damage_file(folder / 'model.safetensors', damage)} is not a readable safetensors file"


def _error_line(capsys) -> str:
    """The last line on stderr (transformers' progress bars come before it); no traceback anywhere."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


DAMAGES = ["a missing weight", "pickle only", "zero-byte", "truncated", "bad-header"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_model_folder_is_a_one_line_error(damaged_repo, video_file, damage, capsys):
    named = _damage(damaged_repo, damage)
    assert main(["predict", str(video_file), "a dog", "--model", str(damaged_repo)]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: ") and named in line


@pytest.mark.parametrize("damage", [*DAMAGES, "no config.json", "an SG-DETR folder"])
def test_a_wrong_or_damaged_encoder_is_a_one_line_error(damaged_repo, video_file, damage, capsys):
    if damage == "an SG-DETR folder":
        encoder, named = damaged_repo, "model_type='sg-detr', but InternVideo2Config expects 'internvideo2'"
    else:
        encoder = damaged_repo / "encoder"
        named = _damage(encoder, damage)
    argv = ["predict", str(video_file), "a dog", "--model", str(damaged_repo), "--encoder", str(encoder)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("error: ") and named in line


def test_a_cuda_device_without_cuda_is_a_one_line_error(repo, video_file, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", str(video_file), "a dog", "--model", str(repo), "--device", "cuda:0"]) == 2
    assert _error_line(capsys).startswith("error: device cuda:0 asked for, but this torch")


def test_nan_weights_are_an_error_not_a_nan_json(tmp_path, capsys):
    repo = save_tiny_model_repo(tmp_path / "corrupt")
    weights = load_file(repo / "model.safetensors")
    weights["sg_detr.video_projection.linear1.weight"][0, 0] = float("nan")  # a corrupted payload
    save_file(weights, repo / "model.safetensors", metadata={"format": "pt"})
    features, out_json = tmp_path / "video.safetensors", tmp_path / "moments.json"
    save_file({"video_features": torch.randn(10, 16)}, features)
    assert main(["predict", str(features), "a dog", "--model", str(repo), "--json", str(out_json)]) == 2
    error = capsys.readouterr().err
    assert "\nerror: the weights in" in f"\n{error}" and "(sg_detr.video_projection.linear1.weight)" in error
    assert "the file is damaged" in error and not out_json.exists()


def test_predict_says_why_a_query_gets_fewer_windows_than_top_k(repo, video_file, tmp_path, caplog):
    out_json = tmp_path / "moments.json"
    with caplog.at_level(logging.WARNING, logger="sgdetr_hf.commands.predict"):
        argv = ["predict", str(video_file), "a dog", "--model", str(repo), "--top-k", "500"]
        assert main([*argv, "--json", str(out_json)]) == 0
    (result,) = json.loads(out_json.read_text())
    assert result["duration"] == pytest.approx(10.0)  # the video's end: the plot's time axis stops there
    found = len(result["pred_relevant_windows"])
    assert 1 <= found < 500
    (record,) = [r for r in caplog.records if "asked for" in r.getMessage()]
    message = record.getMessage()
    assert f"{found} window(s), not the 500 asked for (--top-k)" in message
    assert "1-D NMS" in message and "10.0-s video (5 clips of 2 s)" in message


@pytest.mark.parametrize(
    "option, where, message",
    [
        (
            "--json",
            "folder",
            "--json {tmp}: it is a folder, not a file; give a file path, e.g. {tmp}/moments.json",
        ),
        (
            "--plot",
            "folder",
            "--plot {tmp}: it is a folder, not a file; give a file path, e.g. {tmp}/timeline.png",
        ),
        (
            "--json",
            "under a file",
            "--json {tmp}/a_file/moments.json: {tmp}/a_file is a file, not a folder",
        ),
    ],
)
def test_an_output_path_that_cannot_be_a_file_is_refused_before_the_work(
    repo, video_file, tmp_path, option, where, message, monkeypatch, capsys
):
    (tmp_path / "a_file").write_text("a file")
    path = tmp_path if where == "folder" else tmp_path / "a_file" / "moments.json"
    monkeypatch.setattr(predict_command, "load_retriever", lambda args: pytest.fail("the model was loaded"))
    assert main(["predict", str(video_file), "a dog", "--model", str(repo), option, str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table: nothing was predicted
    assert _error_line_of(captured.err).startswith(f"error: {message.format(tmp=tmp_path)}")


def _error_line_of(err: str) -> str:
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_an_impossible_file_name_is_refused_before_the_work(repo, video_file, tmp_path, capsys):
    too_long = tmp_path / ("m" * 300 + ".json")  # longer than a file system's 255 bytes: stat() fails
    assert main(["predict", str(video_file), "a dog", "--model", str(repo), "--json", str(too_long)]) == 2
    captured = capsys.readouterr()
    assert (
        captured.out == ""
        and _error_line_of(captured.err)
        == f"error: --json {too_long}: it cannot be written (File name too long)"
    )


def test_a_write_the_disk_refuses_is_a_one_line_error(repo, tmp_path, monkeypatch, capsys):
    features, out_json = tmp_path / "video.safetensors", tmp_path / "moments.json"
    save_file({"video_features": torch.randn(10, 16)}, features)

    def refused(path, obj):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(
        predict_command, "atomic_write_json", refused
    )  # as a read-only folder does (not to root)
    assert main(["predict", str(features), "a dog", "--model", str(repo), "--json", str(out_json)]) == 2
    captured = capsys.readouterr()
    assert 'query: "a dog"' in captured.out
    assert _error_line_of(captured.err) == f"error: cannot write --json {out_json} (Permission denied)"

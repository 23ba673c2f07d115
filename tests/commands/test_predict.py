"""``sgdetr predict``: the moments table, the JSON file, the timeline PNG, and clear errors."""

import json
import logging

import pytest
import torch
from safetensors.torch import save_file
from transformers import pipeline

from internvideo2_testing import write_video
from pipeline_testing import save_tiny_model_repo
from sgdetr_hf.commands import main

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
    expected = pipeline("video-moment-retrieval", model=str(repo))(
        str(video_file), queries=["a man rides a bike", "a dog"], top_k=3
    )
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

"""``sgdetr build-tiny-repo``: a complete tiny random-weight repository that the README's pipeline example,
``sgdetr predict`` and the remote code run on; and ``sgdetr predict``'s advice when there is no usable model."""

import json
import re
import shlex
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from internvideo2_testing import write_video
from sgdetr_hf.commands import main
from sgdetr_hf.hub_ids import DEFAULT_MODEL_REPO
from sgdetr_hf.tiny_repo import build_tiny_repo, tiny_sgdetr_model

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    output = tmp_path_factory.mktemp("built") / "tiny-sgdetr"
    assert main(["build-tiny-repo", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "video.mp4", num_frames=200, size=(32, 32))  # 8 s


def test_the_folder_is_a_complete_pipeline_repository(tiny_repo):
    config = json.loads((tiny_repo / "config.json").read_text())
    assert config["custom_pipelines"]["video-moment-retrieval"]["impl"] == (
        "pipeline_sgdetr.VideoMomentRetrievalPipeline"
    )
    assert config["auto_map"]["AutoModel"] == "modeling_sgdetr.SGDetrForMomentRetrieval"
    assert (tiny_repo / "pipeline_sgdetr.py").is_file() and (tiny_repo / "model.safetensors").is_file()
    assert json.loads((tiny_repo / "encoder" / "config.json").read_text())["model_type"] == "internvideo2"
    # a real BERT WordPiece tokenizer: words and ## pieces, lower-cased, [CLS] ... [SEP]
    tokenizer = AutoTokenizer.from_pretrained(tiny_repo / "encoder")
    assert tokenizer.tokenize("A man rides a big red bike.") == [
        "a",
        "man",
        "rides",
        "a",
        "big",
        "red",
        "bike",
        ".",
    ]
    assert tokenizer.tokenize("butterfly") == ["butter", "##fly"]
    assert tokenizer("a dog")["input_ids"][0] == tokenizer.cls_token_id
    modes = {stat.S_IMODE(path.stat().st_mode) for path in (tiny_repo, *tiny_repo.rglob("*"))}
    assert modes == {0o755, 0o644}
    assert not list(tiny_repo.parent.glob(".*.tmp"))  # built beside and renamed into place


def test_the_readme_pipeline_example_runs_on_it_as_written(tiny_repo, video_file, monkeypatch):
    """The README's pipeline snippet, with the tiny repository for the Hub id and a 16-d tiny feature array."""
    readme = README.read_text(encoding="utf-8")
    (snippet,) = [
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "pipeline(model=" in block
    ]
    model_id = re.search(r'pipeline\(model="([^"]+)"', snippet).group(1)
    monkeypatch.chdir(video_file.parent)  # the snippet reads "video.mp4"
    namespace = {"feats": torch.randn(75, 16)}
    lines = snippet.replace(model_id, str(tiny_repo)).splitlines()
    answers = []
    for line in lines:  # each bare call's value is kept, as an interactive session shows it
        code = line.split("  #")[0].strip()
        if code.startswith("retriever("):
            answers.append(eval(code, namespace))
        elif code:
            exec(code, namespace)
    by_video, by_features = answers
    assert [answer["query"] for answer in by_video] == ["a man rides a bike", "a dog runs"]
    assert all(1 <= len(answer["pred_relevant_windows"]) <= 5 for answer in by_video)
    assert len(by_video[0]["pred_saliency_scores"]) == 4 and by_video[0]["clip_length"] == 2.0
    assert by_features["query"] == "a man rides a bike" and len(by_features["pred_saliency_scores"]) == 75
    # trust_remote_code ran the repository's own modules, not the installed package
    assert type(namespace["retriever"]).__module__.startswith("transformers_modules.")


def test_the_readme_commands_run_as_written(video_file, tmp_path, monkeypatch):
    """Every ``sgdetr build-tiny-repo`` / ``sgdetr predict`` line of the README, in order, in a folder with a
    video.mp4 (``DIR_OR_ID`` is the folder the README's build-tiny-repo line writes)."""
    lines = [
        line.split("  #")[0]
        for line in README.read_text(encoding="utf-8").splitlines()
        if line.startswith(("sgdetr build-tiny-repo ", "sgdetr predict "))
    ]
    builds = [line for line in lines if line.startswith("sgdetr build-tiny-repo ")]
    assert len(builds) == 1 and len(lines) == 3, lines
    monkeypatch.chdir(tmp_path)
    (tmp_path / "video.mp4").write_bytes(video_file.read_bytes())
    built = shlex.split(builds[0])[2]
    for line in builds + [line for line in lines if line not in builds]:
        assert main([built if arg == "DIR_OR_ID" else arg for arg in shlex.split(line)[1:]]) == 0, line
    (answer,) = json.loads((tmp_path / "out.json").read_text())
    assert answer["query"] == "a man rides a bike" and (tmp_path / "timeline.png").stat().st_size > 1000


def test_same_seed_same_weights_and_another_seed_other_weights(tiny_repo, tmp_path):
    again, other = build_tiny_repo(tmp_path / "again"), build_tiny_repo(tmp_path / "other", seed=1)
    for file in ("model.safetensors", "encoder/model.safetensors"):
        first, second, third = (load_file(folder / file) for folder in (tiny_repo, again, other))
        assert all(torch.equal(first[name], second[name]) for name in first)
        assert not all(torch.equal(first[name], third[name]) for name in first)
    state = torch.get_rng_state()
    tiny_sgdetr_model(seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left alone


def test_an_existing_output_is_refused(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        main(["build-tiny-repo", str(tmp_path / "taken")])
    assert exit_.value.code == 2
    assert "taken already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # nothing half-built left beside it
    assert main(["build-tiny-repo", str(tmp_path / "empty")]) == 0  # a new folder
    (tmp_path / "made-empty").mkdir()
    assert main(["build-tiny-repo", str(tmp_path / "made-empty")]) == 0  # an empty one
    assert (tmp_path / "made-empty" / "encoder" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/a-file/tiny"], "cannot write {tmp}/a-file/tiny: [Errno 17] File exists: '{tmp}/a-file'"),
        (["{tmp}/tiny", "--seed", str(2**64)], f"argument --seed: the seed must be an integer from 0 to 2**64 - 1, got '{2**64}'"),
        (["{tmp}/tiny", "--seed", "-1"], "argument --seed: the seed must be an integer from 0 to 2**64 - 1, got '-1'"),
    ],
)  # fmt: skip
def test_an_unusable_output_or_seed_is_a_usage_error(tmp_path, capsys, argv, message):
    """Not a traceback: a file where a parent folder would go, a seed torch.manual_seed cannot take."""
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["build-tiny-repo", *(arg.format(tmp=tmp_path) for arg in argv)])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"sgdetr build-tiny-repo: error: {message.format(tmp=tmp_path)}"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


# ------------------------------------------------------------- sgdetr predict without a usable model
@pytest.mark.parametrize(
    "model", [None, "/nonexistent/model-folder"], ids=["default-placeholder", "missing-folder"]
)
def test_predict_without_a_model_says_how_to_get_one(model, video_file, capsys):
    argv = ["predict", str(video_file), "a dog"] + (["--model", model] if model else [])
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"error: cannot load the model '{model or DEFAULT_MODEL_REPO}'" in error
    assert f"{DEFAULT_MODEL_REPO} is a placeholder id" in error
    assert "sgdetr build-tiny-repo tiny-sgdetr" in error and "sgdetr train" in error


def test_predict_with_a_features_only_model_asks_for_an_encoder(video_file, tmp_path, capsys):
    tiny_sgdetr_model().save_pretrained(tmp_path / "best_model")  # what sgdetr train writes: no encoder/
    assert main(["predict", str(video_file), "a dog", "--model", str(tmp_path / "best_model")]) == 2
    error = capsys.readouterr().err
    assert "best_model has no InternVideo2 encoder (no encoder/ folder)" in error and "--encoder DIR" in error

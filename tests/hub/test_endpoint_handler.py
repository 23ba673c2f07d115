"""hub/model/handler.py, called the way Inference Endpoints call it: ``EndpointHandler(path=repo)`` once, then
one JSON request (a dict) per call, and the answer must serialise to JSON, errors included."""

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import torch
from transformers import pipeline

from internvideo2_testing import write_video
from pipeline_testing import edit_weights


def _load_handler_class(repo):
    spec = importlib.util.spec_from_file_location("endpoint_handler", repo / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler


@pytest.fixture(scope="module")
def handler(built_model_repo):
    return _load_handler_class(built_model_repo)(path=str(built_model_repo))


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory):
    path = write_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=150, size=(32, 32))  # 6 s
    return path.read_bytes()


def _call(handler, request):
    """One request through a JSON round trip each way, as over HTTP."""
    answer = handler(
        json.loads(json.dumps(request)) if not isinstance(request.get("inputs"), bytes) else request
    )
    return json.loads(json.dumps(answer))


FEATURES = torch.randn(12, 16, generator=torch.Generator().manual_seed(0)).tolist()
TEXT = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1)).tolist()


def test_features_request_matches_the_pipeline(handler, built_model_repo):
    answer = _call(
        handler, {"inputs": {"video_features": FEATURES, "text_features": TEXT}, "parameters": {"top_k": 3}}
    )
    expected = pipeline(model=str(built_model_repo), trust_remote_code=True)(
        {"video_features": FEATURES}, text_features=TEXT, top_k=3
    )
    assert answer == {"results": json.loads(json.dumps(expected))}
    assert [len(r["pred_relevant_windows"]) for r in answer["results"]] == [3, 3]


def test_a_text_mask_in_json_masks_the_tokens(handler):
    mask = [[1, 1, 1, 0, 0], [True] * 5]
    masked = _call(
        handler, {"inputs": {"video_features": FEATURES, "text_features": TEXT, "text_mask": mask}}
    )
    trimmed = _call(
        handler, {"inputs": {"video_features": FEATURES, "text_features": [TEXT[0][:3], TEXT[1]]}}
    )
    assert masked == trimmed and "error" not in masked


def test_video_request_base64_and_raw_body(handler, video_bytes):
    encoded = base64.b64encode(video_bytes).decode()
    answer = _call(
        handler, {"inputs": {"video": encoded, "queries": ["a red car", "a dog"]}, "parameters": {"top_k": 2}}
    )
    assert [r["query"] for r in answer["results"]] == ["a red car", "a dog"]
    for result in answer["results"]:
        assert len(result["pred_saliency_scores"]) == 3  # 6 s of 2-s clips
        assert all(0 <= s < e <= 6.0 for s, e, _ in result["pred_relevant_windows"])
    raw = _call(
        handler, {"inputs": video_bytes, "parameters": {"queries": ["a red car", "a dog"], "top_k": 2}}
    )
    assert raw == answer
    # what encoders write besides plain base64: line-wrapped (the `base64` tool), a data URL, URL-safe
    for other in (
        base64.encodebytes(video_bytes).decode(),
        "data:video/mp4;base64," + encoded,
        base64.urlsafe_b64encode(video_bytes).decode(),
    ):
        request_ = {"inputs": {"video": other, "queries": ["a red car", "a dog"]}, "parameters": {"top_k": 2}}
        assert _call(handler, request_) == answer


@pytest.mark.parametrize(
    "request_, message",
    [
        (["not", "a", "dict"], "must be a JSON object"),
        ({"parameters": {"top_k": 2}}, "inputs must be a JSON object"),
        ({"inputs": {"video": "AAAA", "video_features": FEATURES, "queries": "a"}}, "exactly one of"),
        ({"inputs": {"video": "not base64!", "queries": "a"}}, "base64 encoding"),
        ({"inputs": {"video": "", "queries": "a"}}, "is empty"),
        (
            {"inputs": {"video_features": FEATURES, "queries": "a"}, "parameters": {"queries": "b"}},
            "queries are given twice",  # "b" was dropped
        ),
        ({"inputs": {"video": base64.b64encode(b"not a video").decode(), "queries": "a"}}, "video"),
        ({"inputs": {"video_features": FEATURES, "query": "a"}}, "unknown input keys \\['query'\\]"),
        (
            {"inputs": {"video_features": FEATURES, "queries": "a"}, "parameters": {"k": 1}},
            "unknown arguments \\['k'\\]",
        ),
        ({"inputs": {"video_features": [1.0, 2.0], "text_features": TEXT}}, "2 dimensions"),
        ({"inputs": {"video_features": [[1.0, "x"]], "text_features": TEXT}}, "array of numbers"),
        (
            {"inputs": {"video_features": FEATURES, "text_features": TEXT}, "parameters": {"top_k": 0}},
            "top_k",
        ),
        ({"inputs": {"video_features": FEATURES, "queries": [""]}}, "non-empty string"),
        ({"inputs": {"video_features": [[0.0] * 8], "text_features": TEXT}}, "feature dim 8"),
        (
            {"inputs": {"video_features": FEATURES, "text_features": TEXT, "text_mask": [[1] * 5]}},
            "text_mask has 1 masks for 2 text_features",
        ),
        (
            {"inputs": {"video_features": FEATURES, "text_features": TEXT, "text_mask": [[1] * 4, [1] * 5]}},
            r"text_mask\[0\] must have one 0/1 entry per token, shape \(5,\), got \(4,\)",
        ),
        (
            {"inputs": {"video_features": FEATURES, "text_features": TEXT, "text_mask": [[0.5] * 5] * 2}},
            "only 0/1 or True/False",
        ),
    ],
)
def test_bad_requests_get_a_json_error(handler, request_, message):
    answer = (
        _call(handler, request_) if isinstance(request_, dict) else json.loads(json.dumps(handler(request_)))
    )
    assert set(answer) == {"error", "error_type"} and answer["error_type"] in (
        "ValueError",
        "VideoDecodingError",
    )
    assert re.search(message, answer["error"]), answer["error"]
    assert "Traceback" not in answer["error"]


def test_unexpected_failures_are_answered_in_json(handler, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(handler, "pipeline", broken)
    answer = _call(handler, {"inputs": {"video_features": FEATURES, "queries": "a"}})
    assert answer == {
        "error": "the request could not be processed: CUDA out of memory",
        "error_type": "RuntimeError",
    }


@pytest.mark.slow
def test_handler_runs_without_the_package(built_model_repo, handler, tmp_path):
    """The endpoint has no ``sgdetr_hf``: everything must come from the repository's remote code."""
    request = {"inputs": {"video_features": FEATURES, "text_features": TEXT}, "parameters": {"top_k": 3}}
    answers = tmp_path / "answers.json"
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        sys.modules["sgdetr_hf"] = None  # importing the package now fails, as on a bare endpoint
        spec = importlib.util.spec_from_file_location("handler", {str(built_model_repo / "handler.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handler = module.EndpointHandler(path={str(built_model_repo)!r})
        good = handler(json.loads({json.dumps(json.dumps(request))}))
        bad = handler({{"inputs": {{"video_features": [[1.0]], "queries": "a"}}}})
        open({str(answers)!r}, "w").write(json.dumps([good, bad]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    good, bad = json.loads(answers.read_text())
    assert good == _call(handler, request)
    assert bad["error_type"] == "ValueError" and "feature dim 1" in bad["error"]


@pytest.mark.parametrize("folder", ["", "encoder"])
def test_a_repository_with_a_missing_weight_does_not_start(built_model_repo, tmp_path, folder):
    """The endpoint must not serve a model (or encoder) with a randomly initialised head: the handler refuses to
    start, with the repository's own (remote-code) CheckpointError naming the weight."""
    repo = shutil.copytree(built_model_repo, tmp_path / "repo")
    (dropped,) = edit_weights(repo / folder, drop=1)
    with pytest.raises(Exception, match=f"1 missing, randomly initialised \\({dropped}\\)") as error:
        _load_handler_class(repo)(path=str(repo))
    assert type(error.value).__name__ == "CheckpointError" and "Traceback" not in str(error.value)


def test_nan_weights_are_not_served(built_model_repo, tmp_path):
    """A model whose weights hold NaN is refused as the endpoint starts, naming the tensor, instead of answering
    every request with an error."""
    import shutil

    from safetensors.torch import load_file, save_file

    repo = shutil.copytree(built_model_repo, tmp_path / "corrupt")
    weights = load_file(repo / "model.safetensors")
    weights["sg_detr.video_projection.linear1.weight"][0, 0] = float("nan")
    save_file(weights, repo / "model.safetensors", metadata={"format": "pt"})
    # the repository's own (remote code) CheckpointError, not the installed package's class
    with pytest.raises(Exception, match=r"hold NaN.*\(sg_detr\.video_projection\.linear1\.weight\)") as error:
        _load_handler_class(repo)(path=str(repo))
    assert type(error.value).__name__ == "CheckpointError"


def test_errors_do_not_name_the_servers_temporary_files(handler, tmp_path):
    broken = base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4).decode()
    answer = _call(handler, {"inputs": {"video": broken, "queries": "a dog"}})
    assert answer["error_type"] == "ValueError" and "the uploaded video" in answer["error"]
    assert tempfile.gettempdir() not in answer["error"] and "/video" not in answer["error"], answer["error"]


@pytest.mark.parametrize(
    "duration, message",
    [
        (float("inf"), "duration must be a finite, positive number of seconds"),
        (1000.0, "duration 1000.0 s is too long for 12 clips of 2.0 s"),
        (True, "duration must be a finite, positive number of seconds"),
    ],
)
def test_a_bad_duration_is_a_json_error_not_an_infinite_answer(handler, duration, message):
    """Python's json reads ``Infinity``; the answer was ``"duration": Infinity``, which is no JSON."""
    request = {"inputs": {"video_features": FEATURES, "text_features": TEXT, "duration": duration}}
    answer = handler(json.loads(json.dumps(request)))
    assert answer["error_type"] == "ValueError" and re.search(message, answer["error"]), answer
    json.dumps(answer, allow_nan=False)


def test_a_duration_in_json_is_answered(handler):
    answer = _call(handler, {"inputs": {"video_features": FEATURES, "text_features": TEXT, "duration": 23.5}})
    assert [r["duration"] for r in answer["results"]] == [23.5, 23.5]
    assert all(e <= 23.5 + 1e-5 for r in answer["results"] for _, e, _ in r["pred_relevant_windows"])


def test_an_answer_that_is_not_strict_json_becomes_an_error(handler, monkeypatch):
    monkeypatch.setattr(handler, "pipeline", lambda *a, **k: [{"query": "a", "duration": float("nan")}])
    answer = handler({"inputs": {"video_features": FEATURES, "queries": "a"}})
    assert answer["error_type"] == "ValueError" and "not strict JSON" in answer["error"], answer
    json.dumps(answer, allow_nan=False)

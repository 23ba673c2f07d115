"""Raw video + queries -> features for SG-DETR, and the resumable, sharded feature-folder extraction."""

import json
import os
import re
import subprocess
import sys
import threading

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from internvideo2_testing import save_tiny_checkpoint, tiny_model, tiny_processor, write_video
from pipeline_testing import save_tiny_model_repo
from sgdetr_hf import SGDetrFeatureExtractor
from sgdetr_hf.commands import extract_features as extract_features_module
from sgdetr_hf.commands import main
from sgdetr_hf.commands.extract_features import (
    SourceError,
    extract_features,
    list_videos,
    read_queries,
    weights_checksum,
)
from sgdetr_hf.data.builder import FeatureFolder
from sgdetr_hf.feature_extraction_sgdetr import ExtractorSettingsError
from sgdetr_hf.loading_sgdetr import CheckpointError
from sgdetr_hf.modeling_internvideo2 import InternVideo2Model
from sgdetr_hf.postprocessing_sgdetr import NonFiniteOutputError
from sgdetr_hf.processing_sgdetr import SGDetrProcessor
from sgdetr_hf.video_io_sgdetr import prefetch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("internvideo2"))


@pytest.fixture(scope="module")
def extractor(checkpoint) -> SGDetrFeatureExtractor:
    return SGDetrFeatureExtractor.from_pretrained(checkpoint, clips_per_batch=3)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=250)  # 10 s: 5 clips


@torch.no_grad()
def test_inputs_for_sgdetr_encode_the_video_once_for_all_queries(extractor, video):
    queries = ["a man rides a bike", "the dog runs in the park with a red ball"]
    inputs = extractor(video, queries)
    assert inputs["video_features"].shape == (2, 5, 16) and inputs["video_mask"].tolist() == [[1] * 5] * 2
    assert inputs["video_features"].stride(0) == 0  # one encoding, expanded without a copy
    assert inputs["text_features"].shape == (2, 12, 16)
    assert inputs["text_mask"].sum(1).tolist() == [7, 12]
    assert (inputs["text_features"][0, 7:] == 0).all()
    # the same numbers as running the processor and the model by hand, in one batch
    by_hand = extractor.processor(videos=video, text=queries)
    model = extractor.model
    expected_video = model.get_video_features(by_hand["pixel_values"]).pooler_output
    torch.testing.assert_close(inputs["video_features"][1], expected_video)
    expected_text = model.get_text_features(by_hand["input_ids"], by_hand["attention_mask"]).token_embeds
    torch.testing.assert_close(inputs["text_features"][0, :7], expected_text[0, :7])
    torch.testing.assert_close(inputs["clip_timestamps"][-1], torch.tensor([8.0, 10.0], dtype=torch.float64))


@torch.no_grad()
def test_other_feature_variants(checkpoint, video):
    extractor = SGDetrFeatureExtractor.from_pretrained(
        checkpoint, video_feature="pooled", text_feature="hidden"
    )
    assert (extractor.video_dim, extractor.text_dim) == (32, 32)
    assert extractor.encode_video(video, start=2.0, end=5.0).features.shape == (2, 32)
    queries = extractor.encode_queries(["a dog", "a man rides a bike"])
    assert [rows.shape for rows in queries.unpadded()] == [(4, 32), (7, 32)]
    with pytest.raises(ValueError, match="video_feature"):
        SGDetrFeatureExtractor(extractor.model, extractor.processor, video_feature="cls")


def test_charades_clip_length_and_query_length_overrides(checkpoint, video):
    extractor = SGDetrFeatureExtractor.from_pretrained(
        checkpoint, max_query_length=5, video_processor_kwargs={"clip_length": 1.0}
    )
    assert extractor.encode_video(video).features.shape == (10, 16)
    assert extractor.encode_queries("a man rides a big red bike").mask.sum().item() == 5
    with pytest.raises(ValueError, match="exceeds the text encoder"):
        SGDetrFeatureExtractor.from_pretrained(checkpoint, max_query_length=65)


@pytest.mark.parametrize("wrong", ["an SG-DETR folder", "no config.json", "no tokenizer"])
def test_a_wrong_encoder_folder_is_refused_before_the_encoder_is_built(tmp_path, wrong, monkeypatch):
    repo = save_tiny_model_repo(tmp_path / "repo")
    folder = {"an SG-DETR folder": repo}.get(wrong, repo / "encoder")
    (folder / {"no config.json": "config.json", "no tokenizer": "tokenizer.json"}.get(wrong, "none")).unlink(
        missing_ok=True
    )
    message = {
        "an SG-DETR folder": "model_type='sg-detr', but InternVideo2Config expects 'internvideo2'",
        "no config.json": "has no config.json",
        "no tokenizer": "has no tokenizer vocabulary",
    }[wrong]
    monkeypatch.setattr(InternVideo2Model, "__init__", lambda *a, **k: pytest.fail("the encoder was built"))
    with pytest.raises(CheckpointError, match=f"{folder}.*{message}.*convert-internvideo2"):
        SGDetrFeatureExtractor.from_pretrained(folder)


def test_extract_features_refuses_an_sgdetr_folder_as_the_encoder_in_one_line(tmp_path, video, capsys):
    repo = save_tiny_model_repo(tmp_path / "repo")
    argv = [
        "extract-features",
        "--model",
        str(repo),
        "--videos",
        str(video),
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {repo}/config.json has model_type='sg-detr'")


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"max_query_length": 0},
            r"max_query_length must be an int >= 3 \(room for \[CLS\] word \[SEP\]\), got 0",
        ),
        ({"max_query_length": 2}, "max_query_length must be an int >= 3"),
        ({"max_query_length": 5.0}, "max_query_length must be an int >= 3"),
        ({"max_query_length": True}, "max_query_length must be an int >= 3"),
        ({"max_query_length": 65}, "max_query_length=65 exceeds the text encoder's 64 positions"),
        ({"clips_per_batch": 0}, "clips_per_batch must be an int >= 1"),
        ({"video_feature": "cls"}, "video_feature must be one of"),
    ],
)
def test_settings_are_refused_before_the_encoder_is_built(checkpoint, settings, message, monkeypatch):
    """Only ``None`` means the processor's query length: 0 was silently taken as the default (32)."""
    monkeypatch.setattr(InternVideo2Model, "__init__", lambda *a, **k: pytest.fail("the encoder was built"))
    with pytest.raises(ExtractorSettingsError, match=message):
        SGDetrFeatureExtractor.from_pretrained(checkpoint, **settings)


def test_max_query_length_none_is_the_processors(checkpoint):
    saved = SGDetrProcessor.from_pretrained(checkpoint).max_query_length
    extractor = SGDetrFeatureExtractor.from_pretrained(checkpoint, max_query_length=None)
    assert extractor.processor.max_query_length == saved
    assert (
        SGDetrFeatureExtractor.from_pretrained(checkpoint, max_query_length=3).processor.max_query_length == 3
    )


def test_a_device_this_torch_cannot_use_is_refused(checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device cuda:0 asked for"):
        SGDetrFeatureExtractor.from_pretrained(checkpoint, device="cuda:0")


def test_prefetch_keeps_order_and_reraises():
    # threads of this test only: earlier tests in the process may leave pools running (Inductor's compile
    # workers after a cold-cache torch.compile)
    threads_before = set(threading.enumerate())
    assert list(prefetch(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise ValueError("bad video")

    with pytest.raises(ValueError, match="bad video"):
        list(prefetch(failing()))
    consumer = prefetch(iter(range(100)), depth=1)
    assert next(consumer) == 0
    consumer.close()  # an abandoned consumer does not leave the producer blocked
    assert [thread for thread in threading.enumerate() if thread not in threads_before] == []


@pytest.fixture
def corpus(tmp_path, video):
    folder = tmp_path / "videos"
    folder.mkdir()
    os.link(video, folder / "vid_a.mp4")
    write_video(folder / "vid_b.webm", num_frames=30, codec="libvpx-vp9")
    (folder / "broken.mp4").write_text("not a video")
    (folder / "notes.txt").write_text("ignored")
    annotations = tmp_path / "val.jsonl"
    rows = [
        {"qid": 1, "query": "a man rides a bike", "vid": "vid_a"},
        {"qid": 7, "query": "a dog", "vid": "vid_b"},
    ]
    annotations.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return folder, annotations


def test_feature_folder_is_complete_resumable_and_readable_by_the_builder(extractor, corpus, tmp_path):
    folder, annotations = corpus
    videos, queries = list_videos([str(folder)]), read_queries([str(annotations)])
    assert sorted(videos) == ["broken", "vid_a", "vid_b"] and queries == {
        "1": "a man rides a bike",
        "7": "a dog",
    }
    output = tmp_path / "features"
    failed = extract_features(extractor, videos, queries, output, model_name="tiny")
    assert failed == ["broken"]
    features = load_file(output / "videos" / "vid_a.safetensors")
    assert features["video_features"].dtype == torch.float16 and features["video_features"].shape == (5, 16)
    torch.testing.assert_close(
        features["video_features"].float(),
        extractor.encode_video(videos["vid_a"]).features,
        atol=2e-3,
        rtol=2e-3,
    )
    with safe_open(output / "videos" / "vid_b.safetensors", framework="pt") as file:
        metadata = file.metadata()
    assert metadata["clip_length"] == "2.0" and metadata["duration"] == "1.2" and metadata["model"] == "tiny"
    builder_view = FeatureFolder(output)
    assert builder_view.video_shape("vid_b") == (1, 16) and builder_view.text_shape("7") == (4, 16)

    written = {path: path.stat().st_mtime_ns for path in output.glob("*/*.safetensors")}
    (output / "videos" / ".vid_a.safetensors.x1.tmp").write_bytes(b"left by a killed run")
    assert extract_features(extractor, videos, queries, output, model_name="tiny") == ["broken"]
    assert {path: path.stat().st_mtime_ns for path in output.glob("*/*.safetensors")} == written
    assert not list(output.glob("*/.*.tmp"))
    # the same encoder under another folder name is the same features: nothing is redone
    assert extract_features(extractor, videos, queries, output, model_name="another-name") == ["broken"]
    assert {path: path.stat().st_mtime_ns for path in output.glob("*/*.safetensors")} == written


def test_bad_sources(tmp_path, video):
    with pytest.raises(SourceError, match="video source not found"):
        list_videos([str(tmp_path / "nowhere")])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.link(video, tmp_path / "a" / "x.mp4")
    os.link(video, tmp_path / "b" / "x.mp4")
    with pytest.raises(SourceError, match="two videos share the id 'x'"):
        list_videos([str(tmp_path / "a"), str(tmp_path / "b")])
    (tmp_path / "bad.jsonl").write_text('{"vid": "x"}\n')
    with pytest.raises(SourceError, match="bad.jsonl:1 has no 'qid'"):
        read_queries([str(tmp_path / "bad.jsonl")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here")
    with pytest.raises(
        SourceError, match=r"nothing to extract: the folder .*empty holds no video file \(read: .mp4"
    ):
        list_videos([str(tmp_path / "a"), str(tmp_path / "empty")])
    (tmp_path / "list.txt").write_text("# only a comment\n\n")
    with pytest.raises(SourceError, match="list.txt names no video"):
        list_videos([str(tmp_path / "list.txt")])


def _jsonl(path, *lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"qid": 1, "query": "a dog"}', '{"qid": 2, "query": "a cat"'], r"x.jsonl:2 is not valid JSON \(Expecting"),
        (['{"qid": 1, "query": "a dog"}', '{"qid": 9, "query": "  "}'], r"x.jsonl:2: the query of qid '9' is empty"),
        (['{"qid": 9, "query": null}'], r"x.jsonl:1: the query of qid '9' is a NoneType, not a string"),
        (['{"qid": null, "query": "a dog"}'], r"x.jsonl:1: the qid None is a NoneType"),
        (['{"qid": "a/b", "query": "a dog"}'], r"x.jsonl:1: the qid 'a/b' cannot name a file"),
        (['[1, "a dog"]'], r"x.jsonl:1 is a JSON list, not an object"),
        (
            ['{"qid": 1, "query": "a dog"}', "", '{"qid": "1", "query": "a cat"}'],
            r"x.jsonl:3: qid '1' has the query 'a cat', but 'a dog' at .*x.jsonl:1",
        ),
        ([""], r"nothing to extract: the annotations file .*x.jsonl holds no query"),
        (['{"qid": 3, "query": "a dog \\ud800"}'], r"x.jsonl:1: the query of qid '3' is not valid Unicode text \(it holds a lone surrogate\)"),
    ],
)  # fmt: skip
def test_annotations_are_checked_when_read_naming_file_line_and_qid(tmp_path, lines, message):
    with pytest.raises(SourceError, match=message):
        read_queries([_jsonl(tmp_path / "x.jsonl", *lines)])


def test_a_qid_repeated_with_the_same_query_is_read_once(tmp_path):
    file = _jsonl(tmp_path / "x.jsonl", '{"qid": 1, "query": "a dog"}', '{"qid": 1, "query": "a dog"}')
    assert read_queries([file, file]) == {"1": "a dog"}  # the same file given twice, a repeated line


def test_unreadable_annotation_files_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="annotations file not found: .*missing.jsonl"):
        read_queries([str(tmp_path / "missing.jsonl")])
    with pytest.raises(SourceError, match="is a folder, not an annotations file"):
        read_queries([str(tmp_path)])
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"qid": 1, "query": "a dog"}\n{"qid": 2, "query": "caf\xe9"}\n'.encode("latin-1")
    )
    with pytest.raises(SourceError, match="latin1.jsonl:2 is not UTF-8 text"):
        read_queries([str(tmp_path / "latin1.jsonl")])


def test_an_empty_query_is_named_by_qid_before_anything_is_written(extractor, tmp_path):
    output = tmp_path / "features"
    with pytest.raises(ValueError, match="the query of qid 'q7' is empty"):
        extract_features(extractor, {}, {"q1": "a dog", "q7": " "}, output)
    assert not output.exists()


def test_a_query_without_a_word_is_a_one_line_error_naming_its_qid(checkpoint, tmp_path, capsys):
    annotations = _jsonl(
        tmp_path / "x.jsonl", '{"qid": 1, "query": "a dog"}', '{"qid": 9, "query": "\\u200b"}'
    )
    output = tmp_path / "features"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "extract-features",
                "--model",
                str(checkpoint),
                "--annotations",
                annotations,
                "--output",
                str(output),
            ]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "sgdetr extract-features: error: the query of qid '9' ('\\u200b') has no word: the tokenizer drops all "
        "its characters (control, zero-width or combining ones); every query needs at least one word"
    )
    assert not list(output.glob("*/*"))  # refused before anything is written


@pytest.fixture
def bad_inputs(tmp_path):
    """Paths the command-line cases below refer to as ``{name}``."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    return {
        "tmp": str(tmp_path),
        "good": _jsonl(tmp_path / "good.jsonl", '{"qid": 1, "query": "a dog"}'),
        "bad": _jsonl(tmp_path / "bad.jsonl", '{"qid": 1, "query": "a dog"}', "{oops"),
        "empty_query": _jsonl(tmp_path / "empty_query.jsonl", '{"qid": 1, "query": "a dog"}', '{"qid": 5, "query": ""}'),
        "twice": _jsonl(tmp_path / "twice.jsonl", '{"qid": 1, "query": "a dog"}', '{"qid": 1, "query": "a cat"}'),
    }  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing to extract: give --videos (video files, folders of videos, .txt lists of paths) and/or --annotations"),
        (["--videos", "{tmp}/nowhere"], "video source not found: {tmp}/nowhere"),
        (["--videos", "{tmp}/empty"], "nothing to extract: the folder {tmp}/empty holds no video file"),
        (["--annotations", "{tmp}/missing.jsonl"], "annotations file not found: {tmp}/missing.jsonl"),
        (["--annotations", "{bad}"], "{bad}:2 is not valid JSON (Expecting property name"),
        (["--annotations", "{empty_query}"], "{empty_query}:2: the query of qid '5' is empty"),
        (["--annotations", "{twice}"], "{twice}:2: qid '1' has the query 'a cat', but 'a dog' at {twice}:1"),
        (["--annotations", "{good}", "--clip-length", "0"], "--clip-length must be a finite number of seconds > 0, got 0.0"),
        (["--annotations", "{good}", "--clip-length", "nan"], "--clip-length must be a finite number of seconds > 0, got nan"),
        (["--annotations", "{good}", "--clip-length", "inf"], "--clip-length must be a finite number of seconds > 0, got inf"),
        (["--annotations", "{good}", "--frames-per-clip", "0"], "--frames-per-clip must be >= 1, got 0"),
        (["--annotations", "{good}", "--clips-per-batch", "0"], "--clips-per-batch must be >= 1, got 0"),
        (["--annotations", "{good}", "--max-query-length", "0"], "--max-query-length must be >= 3 (room for [CLS], a word and [SEP]), got 0"),
        (["--annotations", "{good}", "--max-query-length", "2"], "--max-query-length must be >= 3"),
        (["--annotations", "{good}", "--max-query-length", "65"], "max_query_length=65 exceeds the text encoder's 64 positions"),
        (["--annotations", "{good}", "--output", "{tmp}/a_file"], "--output {tmp}/a_file: it is a file, not a folder; give the feature folder"),
        (["--annotations", "{good}", "--output", "{tmp}/a_file/sub"], "--output {tmp}/a_file/sub: {tmp}/a_file is a file, not a folder"),
        (["--annotations", "{good}", "--output", "{tmp}/" + "o" * 300], "it cannot be written (File name too long)"),
    ],
)  # fmt: skip
def test_bad_inputs_are_one_line_errors_before_the_encoder_is_built(
    checkpoint, bad_inputs, extra, message, monkeypatch, capsys
):
    monkeypatch.setattr(InternVideo2Model, "__init__", lambda *a, **k: pytest.fail("the encoder was built"))
    argv = ["extract-features", "--model", str(checkpoint), "--output", f"{bad_inputs['tmp']}/out"]
    argv += [argument.format(**bad_inputs) for argument in extra]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("sgdetr extract-features: error: ") and message.format(**bad_inputs) in line, err
    assert not os.path.exists(f"{bad_inputs['tmp']}/out")


@pytest.mark.slow
def test_two_processes_share_the_work(checkpoint, corpus, tmp_path):
    """ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 scripts/extract_features.py (the CPU form of a multi-GPU
    run) writes the files one process writes, byte for byte."""
    folder, annotations = corpus
    output = tmp_path / "features"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # float32: the last bits of a query's features, which float16 would mostly round away, must agree too
    script = ["scripts/extract_features.py", "--model", str(checkpoint), "--videos", str(folder), "--dtype"]
    script += ["float32", "--annotations", str(annotations), "--output"]
    result = subprocess.run(
        command + script + [str(output)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 1, result.stderr[-3000:]  # 1: one video could not be decoded
    assert "2/3 videos and 2 queries" in result.stdout
    assert (output / "failed_videos.txt").read_text() == "broken\n"
    assert sorted(path.name for path in output.glob("*/*.safetensors")) == [
        "1.safetensors",
        "7.safetensors",
        "vid_a.safetensors",
        "vid_b.safetensors",
    ]
    assert result.stderr.count("skipping broken") == 1  # each video went to exactly one process
    one_process = tmp_path / "one_process"
    subprocess.run([sys.executable] + script + [str(one_process)], capture_output=True, timeout=300, env=env)
    files = sorted(path.relative_to(output) for path in output.glob("*/*.safetensors"))
    assert [path for path in files if (output / path).read_bytes() != (one_process / path).read_bytes()] == []


# ------------------------------------------------------------------ resuming keyed on a fingerprint
def _mtimes(folder):
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*/*.safetensors")}


def test_resume_is_keyed_on_what_made_the_features_not_the_folder_name(tmp_path, video):
    """Two different tiny encoders, both saved as ``encoder/``: the second never passes for the first."""
    first, second = save_tiny_checkpoint(tmp_path / "a" / "encoder"), tmp_path / "b" / "encoder"
    tiny_model(seed=1).save_pretrained(second)
    tiny_processor().save_pretrained(second)
    extractors = [SGDetrFeatureExtractor.from_pretrained(path) for path in (first, second)]
    videos, queries, output = {"clip": video}, {"q1": "a man rides a bike"}, tmp_path / "features"
    assert extract_features(extractors[0], videos, queries, output, model_name="encoder") == []
    stored = json.loads((output / "fingerprint.json").read_text())
    assert stored["videos"]["weights_sha256"] == weights_checksum(extractors[0].model)
    assert stored["videos"]["video_processor"]["clip_length"] == 2.0 and stored["queries"]["max_query_length"]
    old_video = (output / "videos" / "clip.safetensors").read_bytes()

    with pytest.raises(
        ValueError, match=r"features of another encoder .*weights_sha256: \w+\.\.\. -> \w+\.\.\..*--overwrite"
    ):
        extract_features(extractors[1], videos, queries, output, model_name="encoder")

    extract_features(extractors[1], videos, queries, output, model_name="encoder", overwrite=True)
    torch.testing.assert_close(
        load_file(output / "videos" / "clip.safetensors")["video_features"],
        extractors[1].encode_video(video).features.half(),
    )
    assert json.loads((output / "fingerprint.json").read_text())["videos"][
        "weights_sha256"
    ] == weights_checksum(extractors[1].model)
    # an --overwrite run killed half-way leaves files of the old encoder: resuming without --overwrite redoes them
    (output / "videos" / "clip.safetensors").write_bytes(old_video)
    before = _mtimes(output)
    extract_features(extractors[1], videos, queries, output, model_name="encoder")
    after = _mtimes(output)
    assert (
        after["q1.safetensors"] == before["q1.safetensors"]
        and after["clip.safetensors"] != before["clip.safetensors"]
    )
    torch.testing.assert_close(
        load_file(output / "videos" / "clip.safetensors")["video_features"],
        extractors[1].encode_video(video).features.half(),
    )

    charades = SGDetrFeatureExtractor.from_pretrained(second, video_processor_kwargs={"clip_length": 1.0})
    with pytest.raises(ValueError, match=r"video_processor\.clip_length: 2\.0 -> 1\.0"):
        extract_features(charades, videos, queries, output)
    with pytest.raises(ValueError, match=r"storage_dtype: torch\.float16 -> torch\.float32"):
        extract_features(extractors[1], videos, queries, output, storage_dtype=torch.float32)


def test_the_command_refuses_another_encoders_folder_with_exit_code_2(tmp_path, video, capsys):
    first, second = save_tiny_checkpoint(tmp_path / "a" / "encoder"), tmp_path / "b" / "encoder"
    tiny_model(seed=1).save_pretrained(second)
    tiny_processor().save_pretrained(second)
    output = tmp_path / "features"
    assert (
        main(["extract-features", "--model", str(first), "--videos", str(video), "--output", str(output)])
        == 0
    )
    with pytest.raises(SystemExit) as exit_:
        main(["extract-features", "--model", str(second), "--videos", str(video), "--output", str(output)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert re.search(r"error: .*features holds features of another encoder .*weights_sha256: ", error), error


def test_a_killed_run_resumed_writes_the_files_of_an_uninterrupted_one(
    checkpoint, video, tmp_path, monkeypatch
):
    """Byte for byte, in float32, where a query's last bits depend on the batch it was encoded in."""
    extractor = SGDetrFeatureExtractor.from_pretrained(checkpoint)
    texts = ["a dog", "a man rides a bike", "a big red bike", "the dog runs on the road with a man", "a man"]
    texts += ["a red bike on the road", "the man rides a big red bike with a dog"]
    queries = {f"q{i}": text for i, text in enumerate(texts)}
    videos = {"clip": video}

    def run(output):
        extract_features(extractor, videos, queries, output, storage_dtype=torch.float32, query_batch_size=3)
        return {path.relative_to(output): path.read_bytes() for path in output.glob("*/*.safetensors")}

    uninterrupted = run(tmp_path / "uninterrupted")
    write, written = extract_features_module._write, []

    def killed_after_four_files(path, *args):
        if len(written) == 4:
            raise KeyboardInterrupt
        written.append(path.name)
        write(path, *args)

    monkeypatch.setattr(extract_features_module, "_write", killed_after_four_files)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.undo()
    assert written == ["q0.safetensors", "q1.safetensors", "q2.safetensors", "q3.safetensors"]
    assert run(tmp_path / "resumed") == uninterrupted


def test_a_qid_whose_query_changed_is_refused_not_kept(extractor, tmp_path):
    output = tmp_path / "features"
    extract_features(extractor, {}, {"5": "a dog", "6": "a man"}, output)
    with pytest.raises(
        ValueError,
        match=r"5\.safetensors holds the features of the query 'a dog', but the annotations give its qid the "
        r"query 'a red bike': delete the file to recompute it, or use another --output",
    ):
        extract_features(extractor, {}, {"5": "a red bike", "6": "a man"}, output)
    extract_features(extractor, {}, {"5": "a red bike"}, output, overwrite=True)
    with safe_open(output / "queries" / "5.safetensors", framework="pt") as file:
        assert file.metadata()["query"] == "a red bike"
        torch.testing.assert_close(
            file.get_tensor("text_features"), extractor.encode_queries("a red bike").unpadded()[0].half()
        )


def test_cpu_0_gives_the_features_of_cpu(checkpoint, tmp_path):
    """Accelerate's device in a multi-process CPU run is "cpu:0": the same bits as a run on "cpu"."""
    video = write_video(tmp_path / "one_clip.mp4", num_frames=30)
    features = [
        SGDetrFeatureExtractor.from_pretrained(checkpoint, device=device).encode_video(video).features
        for device in ("cpu", "cpu:0")
    ]
    assert torch.equal(*features)


def test_features_beyond_float16_are_refused_not_stored_as_inf(tmp_path, video):
    model = tiny_model()
    with torch.no_grad():
        for projection in (model.visual_projection, model.text_projection):
            projection.weight.mul_(1e6)  # finite features up to about 1e6
    extractor = SGDetrFeatureExtractor(model, tiny_processor())
    for videos, queries, what in (({}, {"q1": "a dog"}, "query 'q1'"), ({"clip": video}, {}, "video 'clip'")):
        with pytest.raises(
            extract_features_module.StorageRangeError,
            match=rf"the features of {what} reach \d+(\.\d+)?e\+0\d, beyond torch.float16's range \(\+-65504\): "
            r"they would be stored as Inf; pass --dtype float32",
        ):
            extract_features(extractor, videos, queries, tmp_path / "f16")
    extract_features(
        extractor, {"clip": video}, {"q1": "a dog"}, tmp_path / "f32", storage_dtype=torch.float32
    )
    stored = load_file(tmp_path / "f32" / "videos" / "clip.safetensors")["video_features"]
    assert torch.isfinite(stored).all() and stored.abs().max() > 65504


def test_an_encoder_that_overflows_stops_the_run_instead_of_failing_every_video(
    extractor, tmp_path, video, monkeypatch
):
    # it was caught as the video's failure: every video of the run listed in failed_videos.txt
    def overflow(path):
        raise NonFiniteOutputError(
            "the InternVideo2 encoder gave NaN or Inf video features with finite weights"
        )

    monkeypatch.setattr(extractor, "encode_video", overflow)
    with pytest.raises(NonFiniteOutputError, match="finite weights"):
        extract_features(extractor, {"clip": video, "other": video}, {}, tmp_path / "features")


def test_the_encoder_dtype_is_chosen_on_the_command_line(checkpoint, video, tmp_path):
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        output = tmp_path / dtype
        argv = [
            "extract-features",
            "--model",
            str(checkpoint),
            "--videos",
            str(video),
            "--output",
            str(output),
        ]
        assert main([*argv, "--encoder-dtype", dtype, "--dtype", "float32"]) == 0
        assert (
            json.loads((output / "fingerprint.json").read_text())["videos"]["encoder_dtype"]
            == f"torch.{dtype}"
        )
        outputs[dtype] = load_file(output / "videos" / "clip.safetensors")["video_features"]
    assert not torch.equal(outputs["float32"], outputs["bfloat16"])
    torch.testing.assert_close(outputs["bfloat16"], outputs["float32"], rtol=0.05, atol=0.05)


def test_files_of_an_older_version_are_refused(tmp_path, video, extractor):
    output = tmp_path / "features"
    (output / "videos").mkdir(parents=True)
    save_file(
        {"video_features": torch.zeros(5, 16)},
        output / "videos" / "clip.safetensors",
        metadata={"model": "encoder"},
    )
    with pytest.raises(
        ValueError, match=r"clip\.safetensors was extracted by an older version \(no fingerprint\)"
    ):
        extract_features(extractor, {"clip": video}, {}, output)
    assert not (output / "fingerprint.json").exists()


def test_weights_checksum():
    model = tiny_model()
    assert weights_checksum(model) == weights_checksum(tiny_model())  # the same weights, rebuilt
    with torch.no_grad():
        model.text_projection.weight[0, 0] += 1e-3
    assert weights_checksum(model) != weights_checksum(tiny_model())
    assert weights_checksum(tiny_model().to(torch.bfloat16)) != weights_checksum(tiny_model())

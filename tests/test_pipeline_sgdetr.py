"""The "video-moment-retrieval" pipeline and its long-video machinery (windows, span and saliency fusion)."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import pipeline

from internvideo2_testing import write_video
from pipeline_testing import ToyConcepts, save_tiny_model_repo, train_toy_model
from sgdetr_hf import VideoMomentRetrievalPipeline, post_process_moment_retrieval
from sgdetr_hf.loading_sgdetr import CheckpointError
from sgdetr_hf.long_video_sgdetr import (
    fuse_window_saliency,
    fuse_window_spans,
    mean_clip_relevance,
    retrieve_moments,
    sliding_windows,
)
from sgdetr_hf.postprocessing_sgdetr import NonFiniteOutputError
from sgdetr_hf.tiny_repo import tiny_sgdetr_model
from sgdetr_hf.video_io_sgdetr import VideoDecodingError


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return save_tiny_model_repo(tmp_path_factory.mktemp("tiny-sgdetr"))


@pytest.fixture(scope="module")
def retriever(repo):
    return pipeline("video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo))


@pytest.fixture(scope="module")
def video_file(tmp_path_factory):
    # 8 s at 25 fps: 4 clips of 2 s
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=200, size=(32, 32))


def _features(num_clips, num_tokens=(4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_clips, 16, generator=g), [torch.randn(n, 16, generator=g) for n in num_tokens]


# --------------------------------------------------------------------------------------- windows
def test_sliding_windows_by_hand():
    # 10 clips, windows of 4 overlapping by 1: starts 0, 3, 6 (the last one ends at the last clip)
    assert sliding_windows(10, 4, 1).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    # 11 clips: starts 0, 3, 6, then 7 so that clip 10 is covered
    assert sliding_windows(11, 4, 1)[:, 0].tolist() == [0, 3, 6, 7]
    # a video no longer than a window is one window of its own length
    assert sliding_windows(3, 75, 25).tolist() == [[0, 1, 2]]


def test_sliding_windows_of_a_20_minute_video():
    windows = sliding_windows(600, 75, 25)  # 1200 s of 2-s clips, 150-s windows every 100 s
    assert windows[:, 0].tolist() == list(range(0, 501, 50)) + [525]
    assert torch.equal(torch.unique(windows), torch.arange(600))  # every clip covered
    assert (windows[1:, 0] - windows[:-1, -1] <= 0).all()  # consecutive windows overlap


@pytest.mark.parametrize("args", [(0, 4, 1), (5, 0, 0), (5, 4, 4), (5, 4, -1)])
def test_sliding_windows_rejects_bad_sizes(args):
    with pytest.raises(ValueError, match="num_clips|window_clips|overlap_clips"):
        sliding_windows(*args)


def test_mean_clip_relevance_by_hand():
    relevance = torch.tensor([[1.0, 0.0, 0.5, 0.5, 0.0]])  # 5 clips of 2 s
    spans = torch.tensor([[[0.0, 4.0], [3.0, 3.5], [4.0, 10.0], [9.0, 9.0], [5.0, 7.0]]])
    # [0,4): clips 0,1; [3,3.5): clip 1; [4,10): clips 2,3,4; [9,9]: clip 4 (at least one); [5,7): clips 2,3
    expected = torch.tensor([[0.5, 0.0, 1.0 / 3.0, 0.0, 0.5]])
    torch.testing.assert_close(mean_clip_relevance(spans, relevance, 2.0), expected)


def test_fuse_window_saliency_by_hand():
    windows = torch.tensor([[0, 1, 2], [2, 3, 4]])  # position weights 1, 2, 1
    saliency = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]]])
    # clip 2 is the last position of window 0 and the first of window 1: (3 * 1 + 5 * 1) / 2
    expected = torch.tensor([[1.0, 2.0, 4.0, 6.0, 7.0]])
    torch.testing.assert_close(fuse_window_saliency(saliency, windows, 5), expected)
    # weights matter where a middle position meets an edge one: clip 1 is window 0's middle (weight 2)
    windows = torch.tensor([[0, 1, 2], [1, 2, 3]])
    saliency = torch.tensor([[[0.0, 3.0, 0.0], [0.0, 6.0, 6.0]]])
    fused = fuse_window_saliency(saliency, windows, 4)
    torch.testing.assert_close(fused[0, 1], torch.tensor((3.0 * 2 + 0.0 * 1) / 3))
    torch.testing.assert_close(fused[0, 2], torch.tensor((0.0 * 1 + 6.0 * 2) / 3))


def test_fuse_window_spans_shifts_rescores_and_removes_duplicates():
    # one query, two windows starting at 0 s and 10 s, two spans each (seconds within the window)
    spans = torch.tensor([[[[2.0, 6.0], [0.0, 1.0]], [[0.0, 4.0], [1.0, 2.0]]]])
    scores = torch.tensor([[[0.9, 0.2], [0.8, 0.5]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    offsets = torch.tensor([0.0, 10.0])
    relevance = torch.full((1, 10), 0.5)  # 20 s of 2-s clips
    relevance[0, 5:7] = 1.0  # clips of [10, 14) are fully relevant
    top_spans, top_scores, top_valid = fuse_window_spans(
        spans, scores, valid, offsets, relevance, 2.0, 0.5, 3
    )
    # [10, 14] keeps 0.8 * 1.0 and overtakes [2, 6] (0.9 * 0.5); the invalid [11, 12] never appears
    torch.testing.assert_close(top_spans[0], torch.tensor([[10.0, 14.0], [2.0, 6.0], [0.0, 1.0]]))
    torch.testing.assert_close(top_scores[0], torch.tensor([0.8, 0.45, 0.1]))
    assert top_valid.all()

    # a duplicate from an overlapping window is removed: [2, 6] again from a window starting at 1 s
    spans = torch.tensor([[[[2.0, 6.0]], [[1.0, 5.0]]]])
    top_spans, top_scores, top_valid = fuse_window_spans(
        spans, torch.tensor([[[0.9], [0.7]]]), torch.ones(1, 2, 1, dtype=torch.bool), torch.tensor([0.0, 1.0]),
        torch.ones(1, 4), 2.0, 0.5, 2,
    )  # fmt: skip
    assert top_valid.tolist() == [[True, False]] and top_scores[0, 0] == pytest.approx(0.9)


# ------------------------------------------------------------------------------- pipeline on features
def test_short_video_is_one_forward_pass(retriever):
    video, texts = _features(30)
    results = retriever({"video_features": video}, text_features=texts, queries=["one", "two"], top_k=4)
    model = retriever.model
    text = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True)
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        outputs = model(video.expand(2, -1, -1), torch.ones(2, 30), text, text_mask)
    expected = post_process_moment_retrieval(outputs, None, top_k=4, config=model.config)
    assert [r["query"] for r in results] == ["one", "two"]
    for result, reference in zip(results, expected):
        assert result["pred_relevant_windows"] == reference["pred_relevant_windows"]
        assert result["pred_saliency_scores"] == reference["pred_saliency_scores"]
        assert result["clip_length"] == 2.0 and len(result["pred_relevant_windows"]) == 4


def test_input_forms_agree(retriever):
    video, texts = _features(20, num_tokens=(5,))
    reference = retriever({"video_features": video}, text_features=texts, top_k=3)
    assert isinstance(reference, list) and reference[0]["query"] == "query 0"
    # right-padded features with a mask, and a padded (Q, N, d) text array with its mask
    padded = torch.cat([video, torch.randn(7, 16)])
    mask = torch.cat([torch.ones(20), torch.zeros(7)])
    text = torch.cat([texts[0], torch.zeros(2, 16)])[None]
    other = retriever(
        {
            "video_features": padded.numpy(),
            "video_mask": mask.tolist(),
            "text_features": text,
            "text_mask": [[1] * 5 + [0] * 2],
        },
        top_k=3,
    )
    assert other[0]["pred_relevant_windows"] == reference[0]["pred_relevant_windows"]
    assert other[0]["pred_saliency_scores"] == pytest.approx(reference[0]["pred_saliency_scores"], abs=1e-5)
    # one query string -> one dict; a list of inputs -> a list of answers
    single = retriever({"video_features": video}, queries="a dog", text_features=texts, top_k=3)
    assert isinstance(single, dict) and single["query"] == "a dog"
    assert (
        len(retriever([{"video_features": video}, {"video_features": video[:5]}], text_features=texts)) == 2
    )


def test_a_batch_size_answers_as_without_it_with_a_warning(retriever, repo, caplog):
    # was transformers' "Pipeline without tokenizer or feature_extractor cannot do batching"
    video, texts = _features(12)
    inputs = [{"video_features": video}, {"video_features": video[:5]}, {"video_features": video[3:]}]
    expected = retriever(inputs, text_features=texts)
    with caplog.at_level("WARNING", logger="sgdetr_hf.pipeline_sgdetr"):
        assert retriever(inputs, text_features=texts, batch_size=2) == expected
        batched = pipeline(
            "video-moment-retrieval",
            pipeline_class=VideoMomentRetrievalPipeline,
            model=str(repo),
            batch_size=4,
        )
        assert batched(inputs, text_features=texts) == expected
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["batch_size is ignored"] * 2


def _same_answers(got, expected):
    for one, other in zip(got, expected, strict=True):
        np.testing.assert_allclose(one["pred_relevant_windows"], other["pred_relevant_windows"], atol=1e-5)
        assert one["pred_saliency_scores"] == pytest.approx(other["pred_saliency_scores"], abs=1e-5)


def test_text_mask_with_a_list_of_features_masks_each_query(retriever):
    video, texts = _features(20, num_tokens=(4, 6))
    reference = retriever({"video_features": video}, text_features=[texts[0][:3], texts[1][:5]], top_k=3)
    masks = [[1, 1, 1, 0], [True, True, True, True, True, False]]  # a 0/1 list and a bool list
    _same_answers(
        retriever({"video_features": video}, text_features=texts, text_mask=masks, top_k=3), reference
    )
    # a (Q, N) mask of one length for queries of one length, as JSON sends it
    equal = [texts[0], texts[1][:4]]
    padded_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    _same_answers(
        retriever(
            {"video_features": video, "text_features": equal, "text_mask": padded_mask.tolist()}, top_k=3
        ),
        retriever({"video_features": video}, text_features=[texts[0][:3], texts[1][:4]], top_k=3),
    )


def test_bf16_features_are_cast_to_the_models_dtype(retriever):
    video, texts = _features(20, num_tokens=(4, 6))
    video, texts = video.bfloat16(), [t.bfloat16() for t in texts]
    reference = retriever(
        {"video_features": video.float()}, text_features=[t.float() for t in texts], top_k=3
    )
    _same_answers(retriever({"video_features": video}, text_features=texts, top_k=3), reference)
    padded = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    _same_answers(
        retriever({"video_features": video}, text_features=padded, text_mask=mask, top_k=3), reference
    )


def test_bad_masks_are_refused_with_the_reason(retriever, video_file):
    video, texts = _features(10, num_tokens=(4, 6))
    cases = [
        ({"text_features": texts, "text_mask": [[1, 1, 1, 1]]}, "text_mask has 1 masks for 2 text_features"),
        (
            {"text_features": texts, "text_mask": [[1, 1, 1], [1] * 6]},
            r"text_mask\[0\] must have one 0/1 entry per",
        ),
        ({"text_features": texts, "text_mask": [[1, 0.5, 1, 1], [1] * 6]}, "only 0/1 or True/False.*got 0.5"),
        ({"text_features": texts, "text_mask": [[0] * 4, [1] * 6]}, r"text_mask\[0\] has no 1"),
        ({"text_features": texts, "text_mask": 1}, "one 0/1 mask per query"),
        ({"text_features": torch.stack([texts[1]] * 2), "text_mask": [[0.5] * 6] * 2}, "got 0.5"),
        (
            {"text_features": torch.stack([texts[1]] * 2), "text_mask": [[1] * 6, [0] * 6]},
            "text_mask has no 1",
        ),
        ({"queries": "a dog", "text_mask": [[1, 1]]}, "text_mask goes with text_features"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            retriever({"video_features": video}, **kwargs)
    with pytest.raises(ValueError, match="got 0.5"):
        retriever({"video_features": video, "video_mask": [1] * 9 + [0.5]}, text_features=texts)
    with pytest.raises(ValueError, match="video_mask goes with video_features"):
        retriever({"video": str(video_file), "video_mask": [1, 1, 1, 1]}, queries="a dog")


def test_a_wrong_encoder_folder_or_device_is_refused_naming_it(repo, monkeypatch):
    with pytest.raises(
        CheckpointError, match=f"{repo}/config.json has model_type='sg-detr', but InternVideo2Config"
    ):
        pipeline(
            "video-moment-retrieval",
            pipeline_class=VideoMomentRetrievalPipeline,
            model=str(repo),
            encoder=str(repo),
        )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device cuda:0 asked for, but this torch"):
        pipeline(
            "video-moment-retrieval",
            pipeline_class=VideoMomentRetrievalPipeline,
            model=str(repo),
            device="cuda:0",
        )


def test_long_features_use_windows(retriever):
    video, texts = _features(200)  # 400 s > 150 s: windows starting at 0, 50, 100, 125 clips
    result = retriever({"video_features": video, "duration": 399.0}, text_features=texts[:1], top_k=6)[0]
    assert len(result["pred_saliency_scores"]) == 200
    windows = np.array(result["pred_relevant_windows"])
    assert windows.shape == (6, 3) and (windows[:, 0] < windows[:, 1]).all() and windows[:, 1].max() <= 399.0
    assert (np.diff(windows[:, 2]) <= 0).all()  # best first
    assert windows[:, 0].max() > 150.0  # windows beyond the first 150 s are reached


def test_long_video_windows_end_at_the_videos_end_not_after_it():
    # 81 clips of 0.7 s: the last window starts at 6 * 0.7 = 4.199999999999999 s, and a window at its end (the
    # video's end minus that start, plus it) came out 7e-15 s after the video's end (in float32, 4e-6 s)
    model = tiny_sgdetr_model(clip_length=0.7)
    video, texts = _features(81, num_tokens=(5,), seed=1)
    duration = 56.42816959249733
    (answer,) = retrieve_moments(model, video, texts[0][None], torch.ones(1, 5), duration=duration, top_k=50)
    assert max(end for _, end, _ in answer["pred_relevant_windows"]) == duration


# ------------------------------------------------------------------------------------ pipeline on videos
def test_video_is_encoded_once_for_all_queries(retriever, video_file, monkeypatch):
    calls = []
    encode_video = retriever.encoder.encode_video
    monkeypatch.setattr(
        retriever.encoder, "encode_video", lambda *a, **k: calls.append(a) or encode_video(*a, **k)
    )
    both = retriever(str(video_file), queries=["a red car", "two dogs"], top_k=2)
    assert len(calls) == 1
    assert [len(r["pred_saliency_scores"]) for r in both] == [4, 4]  # 8 s = 4 clips of 2 s
    # each query's answer does not depend on the other queries asked with it
    alone = retriever(str(video_file), queries="two dogs", top_k=2)
    np.testing.assert_allclose(alone["pred_relevant_windows"], both[1]["pred_relevant_windows"], atol=1e-4)
    assert all(0 <= s < e <= 8.0 for s, e, _ in alone["pred_relevant_windows"])


def test_real_video(retriever, shared_data):
    result = retriever(str(shared_data / "videos" / "bikes.mp4"), queries="a man rides a bike", top_k=3)
    assert len(result["pred_saliency_scores"]) == 5  # 10.0 s
    assert all(0 <= s < e <= 10.0 for s, e, _ in result["pred_relevant_windows"])


def _bad_cases(video_file):
    video, texts = _features(10)
    return [
        ({"video_features": torch.randn(10, 7)}, {"text_features": texts}, "feature dim 7"),
        ({"video_features": video.tolist() + [[math.nan] * 16]}, {"text_features": texts}, "NaN"),
        ({"video_features": torch.zeros(0, 16)}, {"text_features": texts}, "no clip"),
        ({"video_features": video, "video_mask": [1, 0] * 5}, {"text_features": texts}, "valid rows first"),
        ({"video_features": video, "vdeo": 1}, {"text_features": texts}, "unknown input keys"),
        ({"video_features": video}, {}, "no query"),
        ({"video_features": video}, {"queries": []}, "queries is empty"),
        ({"video_features": video}, {"queries": 5}, "a string or a list of strings"),
        ({"video_features": video}, {"queries": ["ok", "  "], "text_features": texts}, "query 1"),
        ({"video_features": video}, {"queries": ["one"], "text_features": texts}, "1 queries but 2"),
        ({"video_features": video}, {"text_features": texts, "top_k": 0}, "top_k"),
        ({"video_features": video}, {"text_features": texts, "window_overlap": 1.0}, "window_overlap"),
        ({"video_features": video, "duration": 15.0}, {"text_features": texts}, "too short for 10 clips"),
        ({"video_features": video, "duration": -1}, {"text_features": texts}, "positive number of seconds"),
        ({"video_features": video}, {"text_features": texts, "topk": 3}, "unknown arguments"),
        (42, {"text_features": texts}, "video file path or a dict"),
        ({"video": str(video_file), "video_features": video}, {"queries": "a"}, "exactly one"),
        (str(video_file.parent / "missing.mp4"), {"queries": "a"}, "not found"),
    ]


def test_bad_input_raises_clear_errors(retriever, video_file):
    for inputs, kwargs, message in _bad_cases(video_file):
        with pytest.raises(ValueError, match=message):
            retriever(inputs, **kwargs)


def test_without_encoder_videos_and_query_strings_are_refused(repo, video_file):
    features_only = pipeline(
        "video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo), encoder=False
    )
    assert features_only.encoder is None
    with pytest.raises(ValueError, match="needs the InternVideo2 encoder"):
        features_only(str(video_file), text_features=_features(4)[1])
    with pytest.raises(ValueError, match="needs the InternVideo2 encoder"):
        features_only({"video_features": _features(4)[0]}, queries="a dog")
    with pytest.raises(VideoDecodingError):
        pipeline("video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo))(
            str(video_file.parent), queries="a"
        )


def test_mismatched_encoder_is_refused(tmp_path):
    repo = save_tiny_model_repo(tmp_path, video_feature_dim=32)  # the tiny encoder gives 16-d features
    with pytest.raises(ValueError, match="use the matching encoder"):
        pipeline("video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo))


def test_pipeline_class_is_registered():
    from transformers.pipelines import PIPELINE_REGISTRY

    assert PIPELINE_REGISTRY.supported_tasks["video-moment-retrieval"]["impl"] is VideoMomentRetrievalPipeline


# ------------------------------------------------------------------------------ long video, trained model
@pytest.fixture(scope="module")
def toy():
    concepts = ToyConcepts(num_concepts=4, seed=0)
    return concepts, train_toy_model(concepts, steps=64)


@pytest.mark.slow
def test_moment_at_minute_15_of_a_20_minute_video_is_found(toy):
    """A tiny SG-DETR trained 64 steps on videos of at most 150 s (4 fixed toy queries, so it learns in
    seconds) must find a 10-s moment planted at 15:00 of a 20-minute video: 12 overlapping windows of
    150 s, each query's spans shifted to video time, rescored by clip relevance and de-duplicated. The fused
    top window must overlap the moment with IoU >= 0.5 and the fused saliency must peak inside it."""
    concepts, model = toy
    rng = np.random.default_rng(7)
    first, length = 450, 5  # clips 450..454 = 900..910 s
    for concept in range(4):
        video = torch.from_numpy(concepts.video(concept, 600, first, length, rng)).float()
        text = torch.from_numpy(concepts.query(concept, rng)).float()[None]
        result = retrieve_moments(model, video, text, torch.ones(1, text.shape[1]), top_k=5)[0]
        start, end, _ = result["pred_relevant_windows"][0]
        iou = max(0.0, min(end, 910.0) - max(start, 900.0)) / (max(end, 910.0) - min(start, 900.0))
        assert iou >= 0.5, (concept, result["pred_relevant_windows"][:3])
        assert first <= int(np.argmax(result["pred_saliency_scores"])) < first + length


# ------------------------------------------------------------------------------ non-finite weights
def _corrupt(folder, parameter: str):
    """Set one element of ``parameter`` in ``folder/model.safetensors`` to NaN (a corrupted payload)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights[parameter].view(-1)[0] = math.nan
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_nan_weights_are_named_not_turned_into_nan_windows(tmp_path):
    # a folder's NaN weights are refused as it loads (model and encoder alike), naming the tensor
    repo = save_tiny_model_repo(tmp_path / "repo")
    _corrupt(repo, "sg_detr.video_projection.linear1.weight")
    with pytest.raises(
        CheckpointError, match=r"weights in .*repo hold NaN.*\(sg_detr\.video_projection\.linear1\.weight\)"
    ):
        pipeline("video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(repo))
    encoder_repo = save_tiny_model_repo(tmp_path / "encoder-repo")
    _corrupt(encoder_repo / "encoder", "vision_model.embeddings.cls_token")
    with pytest.raises(
        CheckpointError, match=r"weights in .*encoder hold NaN.*\(vision_model\.embeddings\.cls_token\)"
    ):
        pipeline(
            "video-moment-retrieval", pipeline_class=VideoMomentRetrievalPipeline, model=str(encoder_repo)
        )
    # weights that are NaN in memory are named once the outputs are NaN
    model = tiny_sgdetr_model()
    with torch.no_grad():
        model.sg_detr.video_projection.linear1.weight.view(-1)[0] = math.nan
    retriever = VideoMomentRetrievalPipeline(model=model, encoder=False)
    video, texts = _features(10)
    with pytest.raises(
        NonFiniteOutputError,
        match=r"weights of the model hold NaN or Inf \(sg_detr\.video_projection\.linear1\.weight\)",
    ):
        retriever({"video_features": video}, text_features=texts)


def test_non_finite_outputs_of_finite_weights_blame_the_forward_pass(retriever, monkeypatch):
    def overflowing_model(*args, **kwargs):
        outputs = real_forward(*args, **kwargs)
        outputs.det_scores = torch.full_like(outputs.det_scores, math.inf)
        return outputs

    real_forward = retriever.model.forward
    monkeypatch.setattr(retriever.model, "forward", overflowing_model)
    video, texts = _features(10)
    with pytest.raises(
        NonFiniteOutputError, match=r"det_scores \(10 of 10 values\).*overflowed in torch.float32"
    ):
        retriever({"video_features": video}, text_features=texts)


# ------------------------------------------------------------------------------ duration and window settings
@pytest.mark.parametrize(
    "duration, message",
    [
        (math.inf, "duration must be a finite, positive number of seconds"),  # answered as non-JSON Infinity
        (math.nan, "duration must be a finite, positive number of seconds"),
        (True, "duration must be a finite, positive number of seconds"),  # was taken as 1 s
        ("20", "duration must be a finite, positive number of seconds"),
        (1000.0, r"duration 1000.0 s is too long for 10 clips of 2.0 s: they cover 20 s of video"),
        (1e300, "too long for 10 clips"),
        (22.0, r"too long for 10 clips of 2.0 s.*a duration below 22 s"),  # ceil(22 / 2) = 11 clips
        (18.0, "too short for 10 clips"),
    ],
)
def test_a_duration_the_features_cannot_have_is_refused(retriever, duration, message):
    """10 clips of 2 s are a video of (18, 20] s, or (18, 22) s for an extractor that drops a partial last clip:
    the too-short check refuses 18 s and less; its mirror refuses 22 s and more (1000 s was accepted)."""
    video, texts = _features(10)
    with pytest.raises(ValueError, match=message):
        retriever({"video_features": video, "duration": duration}, text_features=texts)


def test_a_duration_may_be_any_real_number_type(retriever):
    """np.float32(20.0) was refused ("must be a positive number") while np.float64(20.0) was accepted."""
    video, texts = _features(10)
    reference = retriever({"video_features": video, "duration": 20.0}, text_features=texts, top_k=3)
    for duration in (np.float32(20.0), np.float64(20.0), 20, np.int64(20)):
        answer = retriever({"video_features": video, "duration": duration}, text_features=texts, top_k=3)
        assert answer == reference and type(answer[0]["duration"]) is float
    # the ends of the accepted range: the last clip nearly empty, or one clip missing from the features
    for duration in (18.01, 21.99):
        (answer,) = retriever({"video_features": video, "duration": duration}, text_features=texts[:1])
        assert answer["duration"] == duration
        # (the post-processing clips windows to the duration in float32)
        assert max(end for _, end, _ in answer["pred_relevant_windows"]) <= duration + 1e-5


def test_every_real_dataset_duration_fits_its_features(shared_data):
    """Every QVHighlights, Charades-STA and TACoS duration passes with the features of its video, cut by the
    project's convention (ceil(duration / clip_length) clips) or by an extractor that floors instead."""
    from sgdetr_hf.data.schema import CLIP_LENGTHS, num_clips
    from sgdetr_hf.long_video_sgdetr import checked_duration

    files = {
        "qvhighlights": "qvhighlights/highlight_*_release.jsonl",
        "charades-sta": "charades_sta/charades_*_release.jsonl",
        "tacos": "tacos/tacos_*_release.jsonl",
    }
    checked = 0
    for dataset, pattern in files.items():
        clip_length = CLIP_LENGTHS[dataset]
        durations = {
            json.loads(line)["duration"] for path in shared_data.glob(pattern) for line in path.open()
        }
        for duration in durations:
            ceil = num_clips(duration, clip_length)
            for clips in {ceil, max(1, math.floor(duration / clip_length + 1e-6))}:
                assert checked_duration(duration, clips, clip_length) == duration, (dataset, duration, clips)
            with pytest.raises(ValueError, match="too long"):  # features two clips short
                checked_duration(duration, ceil - 2, clip_length)
            checked += 1
    assert checked > 1000


def test_retrieve_moments_checks_its_own_arguments(retriever):
    video, texts = _features(10, num_tokens=(4,))
    args = (retriever.model, video, texts[0][None], torch.ones(1, 4))
    with pytest.raises(ValueError, match="duration must be a finite number of seconds, got nan"):
        retrieve_moments(*args, duration=math.nan)  # nan <= x and nan >= x are both False
    with pytest.raises(ValueError, match=r"window_batch_size must be an integer >= 1, got 2.7"):
        retrieve_moments(*args, window_batch_size=2.7)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"window_batch_size": "x"}, r"window_batch_size must be a positive integer .*got 'x'"),
        (
            {"window_batch_size": 2.7},
            r"window_batch_size must be a positive integer .*got 2.7",
        ),  # was cut to 2
        ({"window_batch_size": True}, "window_batch_size must be a positive integer"),
        ({"window_batch_size": 0}, "window_batch_size must be a positive integer"),
        ({"window_overlap": "x"}, r"window_overlap must be a fraction in \[0, 1\) .*got 'x'"),
        ({"window_overlap": math.nan}, r"window_overlap must be a fraction in \[0, 1\)"),
        ({"window_overlap": True}, r"window_overlap must be a fraction in \[0, 1\)"),
        ({"top_k": 2.5}, r"top_k must be a positive integer \(windows per query\), got 2.5"),
        ({"top_k": True}, "top_k must be a positive integer"),
        ({"top_k": "3"}, "top_k must be a positive integer"),
    ],
)
def test_window_settings_that_are_no_numbers_in_range_are_refused_naming_them(retriever, settings, message):
    video, texts = _features(10)
    with pytest.raises(ValueError, match=message):
        retriever({"video_features": video}, text_features=texts, **settings)


def test_window_settings_of_any_numeric_type_give_the_same_answer(retriever):
    video, texts = _features(200, num_tokens=(4,))  # 400 s: windows, so both settings are used
    reference = retriever(
        {"video_features": video}, text_features=texts, window_batch_size=2, window_overlap=0.5, top_k=3
    )
    assert len(reference[0]["pred_relevant_windows"]) == 3
    # a NumPy int or JSON's 3.0 (the endpoint's parameters) is a top_k as well: both were refused
    for batch_size, overlap, top_k in (
        (np.int64(2), np.float32(0.5), np.int64(3)),
        (2.0, np.float64(0.5), 3.0),
    ):
        answer = retriever(
            {"video_features": video},
            text_features=texts,
            window_batch_size=batch_size,
            window_overlap=overlap,
            top_k=top_k,
        )
        assert answer == reference

"""Post-processing: ATSS NMS, DETR/ATSS fusion, seconds, clipping, rounding, saliency, the processor method,
jsonl writer."""

import json
import math
import re

import pytest
import torch

from internvideo2_testing import tiny_processor
from sgdetr_hf import (
    SGDetrConfig,
    SGDetrForMomentRetrieval,
    post_process_moment_retrieval,
    write_qvhighlights_predictions,
)
from sgdetr_hf.postprocessing_sgdetr import NonFiniteOutputError


def _close(got, want, abs=1e-5):
    assert torch.allclose(
        torch.tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64), atol=abs
    ), got


def _logit(p):
    return math.log(p / (1 - p))


def _hand_outputs():
    """One query, 10 clips of 2 s (T_b = 20 s), a 19-s video. DETR: two queries; ATSS: three anchors."""
    return {
        "pred_spans": torch.tensor([[[0.5, 0.2], [0.1, 0.05]]]),
        "det_scores": torch.tensor([[0.8, 0.1]]),
        "atss_spans": torch.tensor([[[0.5, 0.2], [0.52, 0.2], [0.9, 0.1]]]),
        "atss_logits": torch.tensor([[_logit(0.6), _logit(0.5), _logit(0.3)]]),
        "atss_centerness": torch.tensor([[_logit(0.6), _logit(0.5), _logit(0.3)]]),
        "anchor_mask": torch.ones(1, 3, dtype=torch.bool),
        "video_mask": torch.ones(1, 10, dtype=torch.bool),
        "global_saliency": torch.arange(10.0)[None],
    }


def test_hand_computed_fusion():
    # ATSS scores sqrt(p * p) = 0.6, 0.5, 0.3; anchor 1 overlaps anchor 0 with IoU 0.82 > 0.6 -> removed by NMS.
    # WBF: {DETR 0.8, ATSS 0.6} on [0.4, 0.6] -> mean 0.7 x 2/2; ATSS 0.3 alone -> 0.15; DETR 0.1 alone -> 0.05
    out = post_process_moment_retrieval(_hand_outputs(), [19.0])
    _close(out[0]["pred_relevant_windows"], [[8.0, 12.0, 0.7], [17.0, 19.0, 0.15], [1.5, 2.5, 0.05]])
    assert out[0]["pred_saliency_scores"] == [float(i) for i in range(10)]


def test_single_head_modes():
    detr = post_process_moment_retrieval(_hand_outputs(), [19.0], fusion_mode="detr")[0][
        "pred_relevant_windows"
    ]
    _close(detr, [[8.0, 12.0, 0.8], [1.5, 2.5, 0.1]])
    atss = post_process_moment_retrieval(_hand_outputs(), [19.0], fusion_mode="atss")[0][
        "pred_relevant_windows"
    ]
    _close(atss, [[8.0, 12.0, 0.6], [17.0, 19.0, 0.3]])
    top1 = post_process_moment_retrieval(_hand_outputs(), [19.0], top_k=1)[0]["pred_relevant_windows"]
    _close(top1, [[8.0, 12.0, 0.7]])


def test_atss_span_decoded_past_the_video_end_is_no_candidate():
    """A 150-s video (75 clips). The strongest ATSS anchor (score 0.9) decoded its span entirely past the end,
    [1.0, 1.04]: clipped, it has zero length, and it used to come out on top of WBF as the window
    [148, 150] s at 0.9 x 1/2 = 0.45. Spans shorter than one clip once clipped are no candidates, so the
    window both heads agree on is first; a span of exactly one clip at the border still counts."""
    outputs = {
        "pred_spans": torch.tensor([[[0.5, 0.1]]]),
        "det_scores": torch.tensor([[0.4]]),
        "atss_spans": torch.tensor([[[1.02, 0.04], [0.5, 0.1], [1.005, 0.02], [1 - 0.5 / 75, 1 / 75]]]),
        "atss_logits": torch.tensor([[_logit(0.9), _logit(0.3), _logit(0.8), _logit(0.1)]]),
        "atss_centerness": torch.tensor([[_logit(0.9), _logit(0.3), _logit(0.8), _logit(0.1)]]),
        "anchor_mask": torch.ones(1, 4, dtype=torch.bool),
        "video_mask": torch.ones(1, 75, dtype=torch.bool),
        "global_saliency": torch.zeros(1, 75),
    }
    # WBF: {DETR 0.4, ATSS 0.3} on [67.5, 82.5] s -> 0.35; the one-clip ATSS window [148, 150] s -> 0.05;
    # anchor 2 ([0.995, 1.0] once clipped: 0.375 clip) is left out like anchor 0
    windows = post_process_moment_retrieval(outputs, [150.0])[0]["pred_relevant_windows"]
    _close(windows, [[67.5, 82.5, 0.35], [148.0, 150.0, 0.05]], abs=1e-4)
    atss = post_process_moment_retrieval(outputs, [150.0], fusion_mode="atss")[0]["pred_relevant_windows"]
    _close(atss, [[67.5, 82.5, 0.3], [148.0, 150.0, 0.1]], abs=1e-4)


def test_rounding_and_collapsed_windows():
    outputs = {
        # [3.2, 3.6] s, [19.2, 19.9] s and [0.9, 5.1] s on a 20-s video of 10 clips
        "pred_spans": torch.tensor([[[0.17, 0.02], [0.9775, 0.035], [0.15, 0.21]]]),
        "det_scores": torch.tensor([[0.9, 0.8, 0.7]]),
        "video_mask": torch.ones(1, 10, dtype=torch.bool),
        "local_saliency": torch.zeros(1, 10),
    }
    raw = post_process_moment_retrieval(outputs, [20.0], fusion_mode="detr")[0]["pred_relevant_windows"]
    _close(raw, [[3.2, 3.6, 0.9], [19.2, 19.9, 0.8], [0.9, 5.1, 0.7]], abs=1e-4)
    rounded = post_process_moment_retrieval(outputs, [20.0], fusion_mode="detr", round_to=2.0)[0]
    # [4, 4] collapses -> end + 2 s; [20, 20] at the video end -> start - 2 s
    _close(rounded["pred_relevant_windows"], [[4.0, 6.0, 0.9], [18.0, 20.0, 0.8], [0.0, 6.0, 0.7]])
    # a window entirely past the duration collapses onto it and is widened backwards by one clip
    beyond = dict(outputs, pred_spans=torch.tensor([[[0.99, 0.01], [0.5, 0.2], [0.1, 0.1]]]))
    windows = post_process_moment_retrieval(beyond, [18.0], fusion_mode="detr")[0]["pred_relevant_windows"]
    _close(windows[0], [16.0, 18.0, 0.9])


def test_windows_end_at_the_duration_and_scores_have_four_decimals_exactly():
    # float32 holds 19.1 s as 19.100000381 s and 0.8 as 0.800000011: the window clipped to the video's end ended
    # after it, and the score was not the 4-decimal number JSON should carry
    outputs = dict(_hand_outputs(), pred_spans=torch.tensor([[[0.5, 1.0], [0.125, 0.0625]]]))
    (answer,) = post_process_moment_retrieval(outputs, [19.1], fusion_mode="detr")
    assert answer["pred_relevant_windows"] == [[0.0, 19.1, 0.8], [1.875, 3.125, 0.1]]


@pytest.fixture(scope="module")
def tiny_outputs():
    torch.manual_seed(0)
    config = SGDetrConfig(
        hidden_size=32, num_attention_heads=4, ffn_dim=64, group_norm_groups=8, video_feature_dim=16,
        text_feature_dim=16,
    )  # fmt: skip
    model = SGDetrForMomentRetrieval(config).eval()
    lengths = torch.tensor([75, 31, 1, 8])
    video_mask = torch.arange(75)[None] < lengths[:, None]
    with torch.no_grad():
        out = model(torch.randn(4, 75, 16), video_mask, torch.randn(4, 5, 16), torch.ones(4, 5))
    return config, out, lengths


@pytest.mark.parametrize("mode", ["wbf", "detr", "atss"])
def test_model_predictions_are_valid_windows(tiny_outputs, mode):
    config, out, lengths = tiny_outputs
    durations = [149.0, 61.3, 1.5, 16.0]
    results = post_process_moment_retrieval(
        out, durations, out.video_mask, top_k=10, config=config, fusion_mode=mode
    )
    assert len(results) == 4
    for result, duration, length in zip(results, durations, lengths.tolist()):
        windows = result["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10
        for start, end, score in windows:
            assert 0 <= start < end <= duration and 0 <= score <= 1
        scores = [w[2] for w in windows]
        assert scores == sorted(scores, reverse=True)
        assert len(result["pred_saliency_scores"]) == length
    assert results[0]["pred_saliency_scores"] == pytest.approx(out.global_saliency[0].tolist())


def test_detr_only_model_and_bad_arguments(tiny_outputs):
    config, out, _ = tiny_outputs
    no_atss = dict(out)
    for key in ("atss_logits", "atss_spans", "atss_centerness"):
        no_atss[key] = None
    with pytest.raises(ValueError, match="no ATSS head"):
        post_process_moment_retrieval(no_atss, [10.0] * 4, fusion_mode="wbf")
    assert post_process_moment_retrieval(no_atss, None, fusion_mode="detr")[2]["pred_relevant_windows"]
    with pytest.raises(ValueError, match="durations"):
        post_process_moment_retrieval(out, [10.0, -1.0, 3.0, 4.0], config=config)
    with pytest.raises(ValueError, match="one value per sample"):
        post_process_moment_retrieval(out, [10.0, 3.0], config=config)
    # the fusion mode follows the outputs: WBF with the ATSS head, the DETR windows without it
    assert post_process_moment_retrieval(no_atss, None) == post_process_moment_retrieval(
        no_atss, None, fusion_mode="detr"
    )
    assert post_process_moment_retrieval(out, None) == post_process_moment_retrieval(
        out, None, fusion_mode="wbf"
    )
    for bad, message in (
        (dict(wbf_weights=(1.0,)), "wbf_weights"),
        (dict(atss_nms_iou=1.5), "atss_nms_iou"),
        (dict(atss_post_nms_topk=0), "atss_post_nms_topk"),
        (dict(round_to=0.0), "round_to"),
    ):
        with pytest.raises(ValueError, match=message):
            post_process_moment_retrieval(out, None, **bad)


def test_post_processing_settings_change_the_windows(tiny_outputs):
    """The §4.4 settings are arguments: a stricter NMS / fewer ATSS candidates / DETR-only weights change the
    fused windows, the defaults reproduce the paper's values."""
    config, out, _ = tiny_outputs
    default = post_process_moment_retrieval(out, None, config=config)
    explicit = post_process_moment_retrieval(
        out, None, config=config, atss_pre_nms_topk=100, atss_nms_iou=0.6, atss_post_nms_topk=25,
        wbf_iou_thr=0.55, wbf_weights=(1.0, 1.0), wbf_skip_thr=0.0,
    )  # fmt: skip
    assert default == explicit
    for settings in (dict(atss_post_nms_topk=1), dict(wbf_weights=(1.0, 1e-6)), dict(wbf_iou_thr=0.05)):
        changed = post_process_moment_retrieval(out, None, config=config, **settings)
        assert changed != default, settings


def test_processor_method_is_the_function(tiny_outputs):
    config, out, _ = tiny_outputs
    durations = [149.0, 61.3, 1.5, 16.0]
    processor = tiny_processor()
    expected = post_process_moment_retrieval(out, durations, top_k=5, config=config, fusion_mode="detr")
    got = processor.post_process_moment_retrieval(out, durations, top_k=5, config=config, fusion_mode="detr")
    assert got == expected and len(got) == 4


def test_processor_method_counts_in_its_own_clips(tiny_outputs):
    # Without a config, the windows are in the seconds of the processor's clips (1 s here, not the default 2 s).
    _, out, _ = tiny_outputs
    one_second = tiny_processor(clip_length=1.0).post_process_moment_retrieval(out, None, top_k=3)
    assert one_second == post_process_moment_retrieval(out, None, top_k=3, clip_length=1.0)
    two_seconds = post_process_moment_retrieval(out, None, top_k=3)
    for short, long in zip(one_second, two_seconds):
        _close(
            [w[:2] for w in short["pred_relevant_windows"]],
            [[s / 2, e / 2] for s, e, _ in long["pred_relevant_windows"]],
        )


def test_write_predictions_jsonl(tmp_path, tiny_outputs):
    config, out, _ = tiny_outputs
    results = post_process_moment_retrieval(out, [149.0, 61.3, 1.5, 16.0], config=config)
    records = [{"qid": i, "query": f"q{i}", "vid": f"v{i}", **r} for i, r in enumerate(results)]
    path = tmp_path / "sub" / "preds.jsonl"
    path.parent.mkdir()
    path.write_text("old content\n")
    write_qvhighlights_predictions(path, records)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and [p.name for p in path.parent.iterdir()] == ["preds.jsonl"]
    first = json.loads(lines[0])
    assert list(first) == ["qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"]
    assert first == json.loads(json.dumps(records[0]))
    with pytest.raises(ValueError, match="qid"):
        write_qvhighlights_predictions(path, [{"pred_relevant_windows": []}])
    assert path.read_text().splitlines() == lines  # a failed write leaves the old file
    with pytest.raises(ValueError, match=r"record 0 \(qid 0\).*NaN or Infinity"):
        write_qvhighlights_predictions(path, [{**records[0], "pred_saliency_scores": [math.nan]}])
    assert path.read_text().splitlines() == lines
    assert [p.name for p in path.parent.iterdir()] == ["preds.jsonl"]


def test_format_matches_the_official_sample(shared_data, tmp_path, tiny_outputs):
    sample = json.loads(
        (shared_data / "qvhighlights_eval_conformance" / "sample_val_preds.jsonl").open().readline()
    )
    config, out, _ = tiny_outputs
    result = post_process_moment_retrieval(out, [150.0] * 4, config=config, round_to=2.0)[0]
    record = {"qid": sample["qid"], "query": sample["query"], "vid": sample["vid"], **result}
    path = write_qvhighlights_predictions(tmp_path / "p.jsonl", [record])
    written = json.loads(path.read_text())
    assert list(written) == list(sample)
    assert len(written["pred_saliency_scores"]) == len(sample["pred_saliency_scores"]) == 75
    assert all(len(w) == 3 and w[0] % 2 == 0 and w[1] % 2 == 0 for w in written["pred_relevant_windows"])


@pytest.mark.parametrize("name", ["pred_spans", "det_scores", "atss_logits", "atss_spans", "global_saliency"])
def test_non_finite_outputs_are_refused_not_turned_into_windows(name):
    outputs = _hand_outputs()
    outputs[name].view(-1)[1] = math.nan
    with pytest.raises(
        NonFiniteOutputError,
        match=rf"NaN or Inf in {name if name != 'global_saliency' else 'saliency'} \(1 of",
    ):
        post_process_moment_retrieval(outputs, [19.0])


def test_what_post_processing_does_not_read_may_be_anything():
    outputs = _hand_outputs()
    outputs["video_mask"] = torch.tensor([[True] * 8 + [False] * 2])
    outputs["global_saliency"][0, 9] = -math.inf  # a padding clip
    outputs["anchor_mask"] = torch.tensor([[True, True, False]])
    outputs["atss_logits"][0, 2] = math.nan  # a padding anchor
    (prediction,) = post_process_moment_retrieval(outputs, [16.0])
    assert len(prediction["pred_saliency_scores"]) == 8
    json.dumps(prediction, allow_nan=False)


@pytest.mark.parametrize("clip_length", [0.0, -2.0, math.nan, math.inf, True, "2.0"])
def test_a_clip_length_that_is_no_finite_positive_number_is_refused(clip_length):
    """0 s made start == end, -2 s inverted windows, NaN NaN windows: all refused, naming the argument."""
    with pytest.raises(
        ValueError, match=r"clip_length must be a finite number > 0 \(seconds per clip\), got"
    ):
        post_process_moment_retrieval(_hand_outputs(), [19.0], clip_length=clip_length)


@pytest.mark.parametrize("round_to", [math.inf, math.nan, -2.0, True, "2"])
def test_round_to_must_be_a_finite_positive_number(round_to):
    with pytest.raises(
        ValueError, match="round_to must be None or a finite number > 0"
    ):  # inf: 0 * inf = NaN
        post_process_moment_retrieval(_hand_outputs(), [19.0], round_to=round_to)


def test_numpy_and_python_numbers_are_one_setting():
    import numpy as np

    reference = post_process_moment_retrieval(_hand_outputs(), [19.0], clip_length=2.0, round_to=2.0)
    assert reference == post_process_moment_retrieval(
        _hand_outputs(), [19.0], clip_length=np.float32(2.0), round_to=np.float64(2.0),
        wbf_weights=np.array([1.0, 1.0]),
    )  # fmt: skip


@pytest.mark.parametrize(
    "weights", [(math.inf, 1.0), (1.0, math.nan), (1.0, -1.0), (0.0, 1.0), ("1", 1.0), (True, 1.0), 1.0, "11"]
)
def test_wbf_weights_must_be_two_finite_positive_numbers(weights):
    with pytest.raises(ValueError, match=r"wbf_weights must be two finite numbers > 0 \(DETR, ATSS\), got"):
        post_process_moment_retrieval(_hand_outputs(), [19.0], wbf_weights=weights)


def test_wbf_windows_depend_on_the_ratio_of_the_weights_only(tiny_outputs):
    """(1e39, 1) overflowed float32 into NaN windows and scores, (1e-45, 1e-45) underflowed to denormals (top
    score 1.0, the others 0.0): the weights are rescaled first, so only their ratio matters."""
    equal = [[8.0, 12.0, 0.7], [17.0, 19.0, 0.15], [1.5, 2.5, 0.05]]
    for weights in ((1e-45, 1e-45), (1e39, 1e39), (3e-30, 3e-30)):
        windows = post_process_moment_retrieval(_hand_outputs(), [19.0], wbf_weights=weights)
        _close(windows[0]["pred_relevant_windows"], equal)
    # a huge ratio: the DETR windows and scores, the ATSS-only one at (almost) nothing; no NaN
    (lopsided,) = post_process_moment_retrieval(_hand_outputs(), [19.0], wbf_weights=(1e39, 1.0))
    json.dumps(lopsided, allow_nan=False)
    _close(lopsided["pred_relevant_windows"], [[8.0, 12.0, 0.8], [1.5, 2.5, 0.1], [17.0, 19.0, 0.0]])
    # a power of two is exact in floating point: the same windows to the last bit, on a real model's outputs
    config, out, _ = tiny_outputs
    for weights in ((1.0, 1.0), (3.0, 1.0)):
        reference = post_process_moment_retrieval(out, None, config=config, wbf_weights=weights)
        for power in (-140, -20, 20, 120):
            scaled = tuple(w * 2.0**power for w in weights)
            assert post_process_moment_retrieval(out, None, config=config, wbf_weights=scaled) == reference


def test_a_video_without_clips_is_refused():
    """An all-zero mask gave windows [0, 0] (or [0, duration]) of a video that has no clip, with no saliency."""
    outputs = _hand_outputs()
    outputs["video_mask"] = torch.zeros(1, 10, dtype=torch.bool)
    for durations in (None, [19.0]):
        with pytest.raises(
            ValueError, match=r"video_mask is all zero for sample\(s\) \[0\]: a video without"
        ):
            post_process_moment_retrieval(outputs, durations)


def test_one_empty_sample_of_a_batch_is_named(tiny_outputs):
    config, out, lengths = tiny_outputs
    mask = torch.arange(75)[None] < lengths[:, None]
    mask[2] = False
    with pytest.raises(ValueError, match=r"all zero for sample\(s\) \[2\]"):
        post_process_moment_retrieval(out, None, mask, config=config)


@pytest.mark.parametrize("mask", [[0] * 5 + [1] * 5, [1, 0] * 5])
def test_a_mask_that_is_not_right_padded_is_refused(tiny_outputs, mask):
    """A left-padded or holed mask gave the saliency of the padding (the first L_b positions) and windows in
    the wrong frame, with no word of it."""
    config, out, lengths = tiny_outputs
    masks = (torch.arange(75)[None] < lengths[:, None]).long()
    masks[3, :10] = torch.tensor(mask)  # sample 3 has 8 clips
    with pytest.raises(ValueError, match=r"video_mask of sample\(s\) \[3\] is not right-padded"):
        post_process_moment_retrieval(out, None, masks, config=config)


@pytest.mark.parametrize("shape", [(1, 12), (1, 9), (2, 10), (10,)])
def test_a_mask_of_another_shape_than_the_outputs_is_refused(shape):
    """A (1, 12) mask for L = 10 raised a bare IndexError from inside the finiteness check."""
    with pytest.raises(
        ValueError,
        match=rf"video_mask must have the outputs' shape \(B, L\) = \(1, 10\).*got {re.escape(str(shape))}",
    ):
        post_process_moment_retrieval(_hand_outputs(), [19.0], video_mask=torch.ones(shape))


def test_a_mask_may_be_a_nested_list():
    """A list mask raised AttributeError ('list' has no attribute 'shape'); it is one of 0/1 like a tensor's."""
    mask = [[1] * 8 + [0] * 2]
    from_list = post_process_moment_retrieval(_hand_outputs(), [16.0], video_mask=mask)
    assert from_list == post_process_moment_retrieval(_hand_outputs(), [16.0], video_mask=torch.tensor(mask))
    assert len(from_list[0]["pred_saliency_scores"]) == 8
    with pytest.raises(ValueError, match=r"video_mask must be a \(B, L\) = \(1, 10\) tensor or nested list"):
        post_process_moment_retrieval(_hand_outputs(), [16.0], video_mask=[[1] * 8, [1]])


@pytest.mark.parametrize("durations", [["19"], [None], [True], "19", [object()], [[19.0, 1.0], [2.0]]])
def test_durations_that_are_not_numbers_are_refused_naming_them(durations):
    """["19"] raised "too many dimensions 'str'", [None] a TypeError: neither said which argument."""
    with pytest.raises(ValueError, match=r"durations must be numbers of seconds, one per sample \(1\), got"):
        post_process_moment_retrieval(_hand_outputs(), durations)


def test_durations_of_any_numeric_form_give_the_same_windows():
    import numpy as np

    reference = post_process_moment_retrieval(_hand_outputs(), [19.0])
    for durations in (19.0, 19, (19,), np.array([19.0]), np.float32(19.0), torch.tensor([19.0])):
        assert post_process_moment_retrieval(_hand_outputs(), durations) == reference


# each test below kills a hand-made mutant of postprocessing_sgdetr.py that the tests above let pass


def test_window_scores_are_rounded_to_four_decimals():
    outputs = dict(_hand_outputs(), det_scores=torch.tensor([[0.123456, 0.98766]]))
    windows = post_process_moment_retrieval(outputs, [19.0], fusion_mode="detr")[0]["pred_relevant_windows"]
    assert [w[2] for w in windows] == [0.9877, 0.1235]


def test_global_saliency_is_the_highlight_score_when_both_saliencies_are_there():
    """§3.4: S_global refines S_local and is the one reported; S_local only without the global module."""
    outputs = dict(_hand_outputs(), local_saliency=-torch.arange(10.0)[None])
    (answer,) = post_process_moment_retrieval(outputs, [19.0])
    assert answer["pred_saliency_scores"] == [float(i) for i in range(10)]
    del outputs["global_saliency"]
    (answer,) = post_process_moment_retrieval(outputs, [19.0])
    assert answer["pred_saliency_scores"] == [-float(i) for i in range(10)]


def test_atss_nms_threshold_and_pre_nms_top_k_are_the_arguments():
    """Anchors 0 and 1 overlap with IoU 0.82: NMS at 0.9 keeps both, at 0.6 (the default) removes anchor 1;
    with the top-1 anchor before NMS only anchor 0 is a candidate."""
    kept = post_process_moment_retrieval(_hand_outputs(), [19.0], fusion_mode="atss", atss_nms_iou=0.9)
    _close(kept[0]["pred_relevant_windows"], [[8.0, 12.0, 0.6], [8.4, 12.4, 0.5], [17.0, 19.0, 0.3]])
    top1 = post_process_moment_retrieval(_hand_outputs(), [19.0], fusion_mode="atss", atss_pre_nms_topk=1)
    _close(top1[0]["pred_relevant_windows"], [[8.0, 12.0, 0.6]])
    post1 = post_process_moment_retrieval(_hand_outputs(), [19.0], fusion_mode="atss", atss_post_nms_topk=1)
    _close(post1[0]["pred_relevant_windows"], [[8.0, 12.0, 0.6]])

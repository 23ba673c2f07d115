"""Tests of the SG-DETR objective: every term against numbers computed by hand with plain ``math``.

The hand computations below use Python floats and loops only; they share nothing with the vectorised
implementation except the definitions of paper eq. 11-15.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sgdetr_hf.configuration_sgdetr import SGDetrConfig
from sgdetr_hf.detector_sgdetr import (
    SGDetrATSSOutput,
    SGDetrDetectorOutput,
    SGDetrQueryGroupOutput,
    SGDetrSpanPredictions,
    decode_atss_deltas,
)
from sgdetr_hf.loss_sgdetr import (
    LOSS_NORMALIZERS,
    SGDetrHungarianMatcher,
    SGDetrLoss,
    count_loss_normalizers,
)
from sgdetr_hf.modeling_sgdetr import SGDetrModelOutput
from sgdetr_hf.targets_sgdetr import SGDetrBatchContext, prepare_targets, sample_margin_pairs

# ----------------------------------------------------------------------------- hand-computation helpers


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(logit: float, target: float) -> float:
    p = sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def giou(a: list[float], b: list[float]) -> tuple[float, float]:
    """(IoU, GIoU) of two (center, width) spans."""
    (sa, ea), (sb, eb) = (a[0] - a[1] / 2, a[0] + a[1] / 2), (b[0] - b[1] / 2, b[0] + b[1] / 2)
    inter = max(0.0, min(ea, eb) - max(sa, sb))
    union = (ea - sa) + (eb - sb) - inter
    hull = max(ea, eb) - min(sa, sb)
    return inter / union, inter / union - (hull - union) / hull


def query_terms(preds, targets, iou_logits=None, eos=0.1):
    """Eq. 12 terms of a query set. preds: list of (logits[2], span[2]); targets: per query a GT span, the
    string "bg" (no-object) or None (ignored padding)."""
    l1, gious, ces, ious = [], [], [], []
    for q, ((logits, span), target) in enumerate(zip(preds, targets)):
        if target is None:
            continue
        log_z = math.log(math.exp(logits[0]) + math.exp(logits[1]))
        if target == "bg":
            ces.append(eos * -(logits[1] - log_z))
            continue
        ces.append(-(logits[0] - log_z))
        l1 += [abs(span[0] - target[0]), abs(span[1] - target[1])]
        gious.append(1 - giou(span, target)[1])
        if iou_logits is not None:  # the IoU head's target: the IoU of the span clipped to the video
            start, end = max(0.0, span[0] - span[1] / 2), min(1.0, span[0] + span[1] / 2)
            ious.append(bce(iou_logits[q], giou([(start + end) / 2, end - start], target)[0]))
    terms = {"l1": sum(l1) / len(l1), "giou": sum(gious) / len(gious), "ce": sum(ces) / len(ces)}
    if iou_logits is not None:
        terms["iou"] = sum(ious) / len(ious)
    return terms


def rank_contrastive(rows, tau=0.5):
    """rows: list of (scores, labels, subset) over candidate clips; each subset averaged separately."""
    subsets = {subset for _, _, subset in rows}
    total = 0.0
    for r in range(1, 12):
        for subset in subsets:
            members = [(s, y) for s, y, sub in rows if sub == subset]
            row_losses = []
            for scores, labels in members:
                positives = [i for i, y in enumerate(labels) if y >= r]
                if not positives:
                    row_losses.append(0.0)
                    continue
                log_z = math.log(sum(math.exp(s / tau) for s in scores))
                row_losses.append(-sum(scores[i] / tau - log_z for i in positives) / len(positives))
            total += sum(row_losses) / len(row_losses)
    return total / 12


# ----------------------------------------------------------------------------- the 2-sample example

VALID_LENGTHS = (4, 3)
SALIENCY = ([0.0, 4.0, 8.0, 0.0], [12.0, 0.0, 0.0])
WINDOWS = ([[0.5, 0.5]], [[0.25, 0.5], [0.8, 0.2]])
MARGIN_POS, MARGIN_NEG = ([2, 1], [0, 0]), ([1, 3], [1, 2])
LOCAL = ([0.5, 1.0, 1.1, 0.9], [1.5, 0.2, -0.5])
GLOBAL = ([0.2, 1.4, 0.7, -0.3], [0.4, 0.9, -1.0])
NEG_LOCAL = ([0.1, -0.2, 0.3, 0.0], [2.0, 2.0, 2.0])
NEG_GLOBAL = ([-0.5, 0.6, 0.2, 1.0], [0.0, 0.0, 0.0])
NEG_PAIR = (True, False)  # sample 1's rolled partner shares its source video
# decoder layer: per sample 3 queries (logits, span) and IoU logits; matching q0-g0 | q0-g1, q2-g0
DECODER = (
    [([2.0, 0.0], [0.5, 0.4]), ([0.0, 1.0], [0.2, 0.1]), ([0.5, 0.5], [0.9, 0.1])],
    [([1.0, 0.0], [0.75, 0.3]), ([0.0, 2.0], [0.5, 0.2]), ([1.5, 0.5], [0.3, 0.4])],
)
DECODER_IOU = ([1.0, -1.0, 0.0], [0.5, 0.0, 2.0])
DECODER_TARGETS = ([WINDOWS[0][0], "bg", "bg"], [WINDOWS[1][1], "bg", WINDOWS[1][0]])
# denoising group: 2 queries per sample, fixed targets; sample 1's second slot is padding; the first
# query misses its target (IoU 0, GIoU < 0)
DN = (
    [([0.3, -0.3], [0.1, 0.1]), ([-1.0, 1.0], [0.7, 0.3])],
    [([0.2, 0.1], [0.3, 0.45]), ([4.0, 4.0], [0.5, 0.5])],
)
DN_IOU = ([0.2, -0.4], [1.5, 9.0])
DN_TARGETS = ([WINDOWS[0][0], "bg"], [WINDOWS[1][0], None])
# ATSS head: 3 anchors per sample, sample 1's last anchor is padding
ATSS_LOGITS = ([1.0, -1.0, 0.5], [-2.0, 0.3, 5.0])
ATSS_SPANS = ([[0.45, 0.4], [0.1, 0.1], [0.9, 0.2]], [[0.2, 0.3], [0.75, 0.25], [0.5, 0.5]])
ATSS_ASSIGNED = ([0, -1, -1], [-1, 1, -1])
ATSS_CENTERNESS = ([0.4, 0.0, -0.3], [0.1, -0.6, 0.0])
ATSS_CENTERNESS_TARGETS = ([0.8, 0.0, 0.0], [0.0, 0.6, 0.0])
# alignment branch, d = 2
SENTENCES = [[1.0, 0.0], [0.0, 1.0]]
MOMENT_TOKENS = [[1.0, 1.0], [0.0, 2.0]]
NONMOMENT_TOKENS = [[-1.0, 0.0], [1.0, 1.0]]
FRAMES = ([[0.5, 0.0], [1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]], [[0.3, 0.3], [0.0, -1.0], [2.0, 0.0]])

WEIGHTS = dict(lambda_hl=2.0, lambda_dn=0.5, lambda_selector=0.7, lambda_atss=1.5, lambda_aux=3.0)


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def _padded(rows, length=4, fill=-1e4):
    return _leaf([list(r) + [fill] * (length - len(r)) for r in rows])


def _query_set(preds, iou_logits) -> dict:
    """One decoder layer's predictions of B samples, with the layer dim: (B, 1, Q, ...)."""
    return {
        "logits": _leaf([[[q[0] for q in sample]] for sample in preds]),
        "spans": _leaf([[[q[1] for q in sample]] for sample in preds]),
        "iou_logits": None if iou_logits is None else _leaf([[row] for row in iou_logits]),
    }


def example_outputs() -> tuple[SGDetrModelOutput, SGDetrDetectorOutput]:
    """The model's outputs for the 2-sample example (padded length L = 4), every leaf requiring grad."""
    dn_targets = [[t if isinstance(t, list) else [0.0, 0.0] for t in sample] for sample in DN_TARGETS]
    atss_targets = [[WINDOWS[0][0], [0, 0], [0, 0]], [[0, 0], WINDOWS[1][1], [0, 0]]]
    encoder = SGDetrModelOutput(
        video_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool(),
        local_saliency=_padded(LOCAL),
        global_saliency=_padded(GLOBAL),
        neg_local_saliency=_padded(NEG_LOCAL),
        neg_global_saliency=_padded(NEG_GLOBAL),
        sentence_embeds=_leaf(SENTENCES),
        moment_tokens=_leaf(MOMENT_TOKENS),
        nonmoment_tokens=_leaf(NONMOMENT_TOKENS),
        moment_frame_outputs=_leaf([FRAMES[0], FRAMES[1] + [[9.0, 9.0]]]),
    )
    detector = SGDetrDetectorOutput(
        anchors=torch.tensor(ATSS_SPANS),
        anchor_mask=torch.tensor([[True, True, True], [True, True, False]]),
        decoder=SGDetrSpanPredictions(**_query_set(DECODER, DECODER_IOU)),
        selector=SGDetrSpanPredictions(
            logits=_leaf([[q[0] for q in sample] for sample in DECODER]),
            spans=_leaf([[q[1] for q in sample] for sample in DECODER]),
        ),
        denoising=SGDetrQueryGroupOutput(
            **_query_set(DN, DN_IOU),
            target_spans=torch.tensor(dn_targets),
            is_positive=torch.tensor([[True, False], [True, False]]),
            valid=torch.tensor([[True, True], [True, False]]),
        ),
        atss=SGDetrATSSOutput(
            logits=_leaf(ATSS_LOGITS),
            spans=_leaf(ATSS_SPANS),
            centerness=_leaf(ATSS_CENTERNESS),
            assigned_gt=torch.tensor(ATSS_ASSIGNED),
            target_spans=torch.tensor(atss_targets, dtype=torch.float32),
            centerness_targets=torch.tensor(ATSS_CENTERNESS_TARGETS),
        ),
    )
    return encoder, detector


def example_labels(with_pairs: bool = True) -> list[dict]:
    labels = []
    for b in range(2):
        label = {"spans": torch.tensor(WINDOWS[b]), "saliency_scores": torch.tensor(SALIENCY[b])}
        if with_pairs:
            label["saliency_pos_idx"] = torch.tensor(MARGIN_POS[b])
            label["saliency_neg_idx"] = torch.tensor(MARGIN_NEG[b])
        labels.append(label)
    return labels


def criterion_loss(outputs, labels, config=None):
    """The objective of ``outputs`` with ``labels`` parsed as the model does; the rolled pairs of the example
    are real negatives as ``NEG_PAIR`` says."""
    encoder, detector = outputs
    mask = encoder.video_mask
    targets = prepare_targets(labels, torch.zeros(*mask.shape, 1), mask, num_margin_pairs=2)
    targets.neg_pair_mask = torch.tensor(NEG_PAIR)
    return SGDetrLoss(config or SGDetrConfig())(encoder, detector, targets)


@pytest.fixture(scope="module")
def example_losses():
    return criterion_loss(example_outputs(), example_labels(), SGDetrConfig(**WEIGHTS))


def _highlight_terms(scores, neg_scores):
    margin = sum(
        max(0.0, 0.2 + scores[b][n] - scores[b][p])
        for b in range(2)
        for p, n in zip(MARGIN_POS[b], MARGIN_NEG[b])
    )
    rows = [  # sample 0 is a real negative pair: its candidates include the negative-text clips (label 0)
        (scores[0] + neg_scores[0], SALIENCY[0] + [0.0] * 4, "real_negative"),
        (scores[1], SALIENCY[1], "same_source"),
    ]
    clips = [(s, y) for b in range(2) for s, y in zip(scores[b], SALIENCY[b])]
    return {
        "margin": 2 * margin / 4,
        "rctl": rank_contrastive(rows),
        "bce_pos": sum(bce(s, float(y > 0)) for s, y in clips) / len(clips),
        "bce_neg": sum(-math.log(1 - sigmoid(s)) for s in neg_scores[0]) / 1,
    }


@pytest.mark.parametrize("which", ["local", "global"])
def test_highlight_terms_equal_hand_computation(example_losses, which):
    _, loss_dict = example_losses
    scores, neg_scores = (LOCAL, NEG_LOCAL) if which == "local" else (GLOBAL, NEG_GLOBAL)
    expected = _highlight_terms(scores, neg_scores)
    for term, value in expected.items():
        assert loss_dict[f"hl_{term}_{which}"].item() == pytest.approx(WEIGHTS["lambda_hl"] * value, rel=1e-5)


@pytest.mark.parametrize(
    ("prefix", "suffix", "preds", "targets", "iou_logits", "set_weight"),
    [
        ("detr", "_layer0", DECODER, DECODER_TARGETS, DECODER_IOU, 1.0),
        ("sel", "", DECODER, DECODER_TARGETS, None, WEIGHTS["lambda_selector"]),  # no IoU head
        ("dn", "_layer0", DN, DN_TARGETS, DN_IOU, WEIGHTS["lambda_dn"]),
    ],
)
def test_query_set_terms_equal_hand_computation(
    example_losses, prefix, suffix, preds, targets, iou_logits, set_weight
):
    _, loss_dict = example_losses
    expected = query_terms(
        [q for sample in preds for q in sample],
        [t for sample in targets for t in sample],
        None if iou_logits is None else [v for sample in iou_logits for v in sample],
    )
    lambdas = {"l1": 10.0, "giou": 1.0, "ce": 5.0, "iou": 1.0}
    assert {key for key in loss_dict if key.startswith(prefix + "_") and key.endswith(suffix)} == {
        f"{prefix}_{term}{suffix}" for term in expected
    }
    for term, value in expected.items():
        got = loss_dict[f"{prefix}_{term}{suffix}"].item()
        assert got == pytest.approx(set_weight * lambdas[term] * value, rel=1e-5)


def test_iou_head_target_is_the_iou_of_the_clipped_window():
    """A window over the video start: the prediction (c, w) = (0.05, 0.3) is [-0.1, 0.2] (IoU 2/3 with the
    ground truth [0, 0.2]), but it is output clipped as [0, 0.2], exactly the ground truth: target 1."""
    loss = SGDetrLoss(SGDetrConfig())
    span, target, iou_logit = [0.05, 0.3], [0.1, 0.2], 1.5
    terms = loss._query_set_losses(
        torch.tensor([[[3.0, 0.0]]]), torch.tensor([[span]]), torch.tensor([[iou_logit]]),
        torch.tensor([[target]]), torch.tensor([[True]]), torch.tensor([[True]]), None, None,
    )  # fmt: skip
    assert giou(span, target)[0] == pytest.approx(2 / 3)  # the old target
    assert terms["iou"].item() == pytest.approx(bce(iou_logit, 1.0), rel=1e-5)
    # the regression terms still see the raw prediction
    assert terms["l1"].item() == pytest.approx((0.05 + 0.1) / 2, rel=1e-5)
    assert terms["giou"].item() == pytest.approx(1 - giou(span, target)[1], rel=1e-5)


def test_atss_regression_reads_the_unclipped_decode():
    """A positive anchor (c, w) = (0.9, 0.1) whose delta moves its span entirely past the video end:
    c = 0.9 + 0.1 * 20 * 0.1 = 1.1, [1.05, 1.15]. Clipped to [0, 1] it would be the zero-length [1, 1], with
    no gradient back to the delta; unclipped, the L1 term pulls the center back with d l1 / d delta_c =
    (1/2) * 0.1 * 0.1 (the mean over two coordinates, std_c * w_a)."""
    anchors = torch.tensor([[[0.9, 0.1], [0.3, 0.2]]])
    deltas = torch.tensor([[[20.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    spans = decode_atss_deltas(anchors, deltas, [0.1, 0.2])
    torch.testing.assert_close(spans, torch.tensor([[[1.1, 0.1], [0.3, 0.2]]]))
    target = [0.9, 0.1]
    atss = SGDetrATSSOutput(
        logits=torch.zeros(1, 2),
        spans=spans,
        centerness=torch.zeros(1, 2),
        assigned_gt=torch.tensor([[0, -1]]),
        target_spans=torch.tensor([[target, [0.0, 0.0]]]),
        centerness_targets=torch.tensor([[0.5, 0.0]]),
    )
    mask = torch.ones(1, 10, dtype=torch.bool)
    labels = [{"spans": torch.tensor([target]), "saliency_scores": torch.ones(10)}]
    targets = prepare_targets(labels, torch.zeros(1, 10, 1), mask, num_margin_pairs=2)
    own_counts = dict.fromkeys(LOSS_NORMALIZERS)  # None: the forward's own counts
    terms = SGDetrLoss(SGDetrConfig())._atss_losses(
        atss, torch.ones(1, 2, dtype=torch.bool), targets, own_counts
    )
    assert terms["l1"].item() == pytest.approx(0.2 / 2, rel=1e-5)
    assert terms["giou"].item() == pytest.approx(1 - giou([1.1, 0.1], target)[1], rel=1e-5)
    (grad,) = torch.autograd.grad(terms["l1"], deltas)
    assert grad[0, 0, 0].item() == pytest.approx(0.5 * 0.1 * 0.1, rel=1e-5)
    assert grad[0, 1].abs().sum() == 0  # the negative anchor has no regression term


def test_atss_terms_equal_hand_computation(example_losses):
    _, loss_dict = example_losses
    valid = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    positives = {(0, 0): WINDOWS[0][0], (1, 1): WINDOWS[1][1]}
    focal = 0.0
    for b, a in valid:
        p = sigmoid(ATSS_LOGITS[b][a])
        if (b, a) in positives:
            focal += 0.25 * (1 - p) ** 2 * -math.log(p)
        else:
            focal += 0.75 * p**2 * -math.log(1 - p)
    l1, weighted_giou, ctr_sum, ctr_bce = 0.0, 0.0, 0.0, 0.0
    for (b, a), target in positives.items():
        span, ctr = ATSS_SPANS[b][a], ATSS_CENTERNESS_TARGETS[b][a]
        l1 += abs(span[0] - target[0]) + abs(span[1] - target[1])
        weighted_giou += ctr * (1 - giou(span, target)[1])
        ctr_sum += ctr
        ctr_bce += bce(ATSS_CENTERNESS[b][a], ctr)
    expected = {
        "focal": 5.0 * focal / 2,
        "l1": 10.0 * l1 / 4,
        "giou": weighted_giou / ctr_sum,
        "centerness": ctr_bce / 2,
    }
    for term, value in expected.items():
        assert loss_dict[f"atss_{term}"].item() == pytest.approx(WEIGHTS["lambda_atss"] * value, rel=1e-5)


def test_alignment_terms_equal_hand_computation(example_losses):
    _, loss_dict = example_losses

    def cos(u, v):
        return (u[0] * v[0] + u[1] * v[1]) / math.hypot(*u) / math.hypot(*v)

    align = 0.0
    for b in range(2):
        logits = [cos(MOMENT_TOKENS[b], s) for s in SENTENCES] + [
            cos(NONMOMENT_TOKENS[b], s) for s in SENTENCES
        ]
        align += -(logits[b] - math.log(sum(math.exp(x) for x in logits)))
    frame_bce = [
        bce(MOMENT_TOKENS[b][0] * z[0] + MOMENT_TOKENS[b][1] * z[1], float(y > 0))
        for b in range(2)
        for z, y in zip(FRAMES[b], SALIENCY[b])
    ]
    assert loss_dict["aux_align"].item() == pytest.approx(WEIGHTS["lambda_aux"] * align / 2, rel=1e-5)
    assert loss_dict["aux_bce"].item() == pytest.approx(WEIGHTS["lambda_aux"] * sum(frame_bce) / 7, rel=1e-5)


def test_total_is_sum_of_terms_and_every_input_gets_a_gradient():
    encoder, detector = outputs = example_outputs()
    loss, loss_dict = criterion_loss(outputs, example_labels(), SGDetrConfig(**WEIGHTS))
    assert loss.item() == pytest.approx(sum(v.item() for v in loss_dict.values()), rel=1e-6)
    expected_groups = {"hl", "detr", "sel", "dn", "atss", "aux"}
    assert {key.split("_")[0] for key in loss_dict} == expected_groups
    loss.backward()
    leaves = [encoder.local_saliency, encoder.neg_global_saliency, encoder.moment_frame_outputs]
    leaves += [detector.atss.centerness, detector.denoising.iou_logits, detector.selector.spans]
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_disabled_parts_have_no_terms():
    encoder, detector = example_outputs()
    encoder = dataclasses.replace(
        encoder, global_saliency=None, neg_local_saliency=None, neg_global_saliency=None, moment_tokens=None
    )
    detector = dataclasses.replace(
        detector, denoising=None, atss=None, decoder=dataclasses.replace(detector.decoder, iou_logits=None)
    )
    _, loss_dict = criterion_loss((encoder, detector), example_labels())
    assert set(loss_dict) == {
        "hl_margin_local", "hl_rctl_local", "hl_bce_pos_local",
        "detr_l1_layer0", "detr_giou_layer0", "detr_ce_layer0", "sel_l1", "sel_giou", "sel_ce",
    }  # fmt: skip
    # without negative pairs the rank-contrastive rows hold only the matched pair's clips
    rows = [(LOCAL[0], SALIENCY[0], "all"), (LOCAL[1], SALIENCY[1], "all")]
    assert loss_dict["hl_rctl_local"].item() == pytest.approx(rank_contrastive(rows), rel=1e-5)


def test_empty_sets_give_connected_zeros():
    """No windows anywhere (highlight-only batch), no real negatives, no ATSS positives."""
    encoder, detector = example_outputs()
    detector.atss.assigned_gt.fill_(-1)
    labels = example_labels()
    for label in labels:
        label["spans"] = torch.zeros(0, 2)
    targets = prepare_targets(labels, torch.zeros(2, 4, 1), encoder.video_mask, num_margin_pairs=2)
    targets.neg_pair_mask = torch.tensor([False, False])
    loss, loss_dict = SGDetrLoss(SGDetrConfig())(encoder, detector, targets)
    zero_terms = [k for k in loss_dict if k.startswith(("detr", "sel", "dn", "atss", "hl_bce_neg"))]
    assert len(zero_terms) == 4 + 3 + 4 + 4 + 2
    for key in zero_terms:
        assert loss_dict[key].item() == 0.0 and loss_dict[key].requires_grad, key
    loss.backward()
    assert torch.isfinite(detector.decoder.spans.grad).all()
    assert detector.decoder.spans.grad.abs().sum() == 0


def test_loss_is_invariant_to_padding():
    """The same two samples padded to L = 4 and to L = 9 give the same loss, with sampled margin pairs."""
    short = example_outputs()
    encoder, detector = example_outputs()

    def pad(x, value):
        return torch.cat([x.detach(), torch.full((2, 5, *x.shape[2:]), value)], dim=1)

    keys = ("local_saliency", "global_saliency", "neg_local_saliency", "neg_global_saliency")
    encoder = dataclasses.replace(
        encoder,
        **{key: pad(getattr(encoder, key), 7.0) for key in keys},
        video_mask=pad(encoder.video_mask, False),
        moment_frame_outputs=pad(encoder.moment_frame_outputs, 1.0),
    )
    torch.manual_seed(0)  # the same sampled margin pairs in both
    loss_short, dict_short = criterion_loss(short, example_labels(with_pairs=False))
    labels_long = example_labels(with_pairs=False)
    labels_long[0]["saliency_scores"] = torch.cat([labels_long[0]["saliency_scores"], torch.zeros(5)])
    torch.manual_seed(0)
    loss_long, dict_long = criterion_loss((encoder, detector), labels_long)
    for key in dict_short:
        assert dict_long[key].item() == pytest.approx(dict_short[key].item(), rel=1e-6, abs=1e-7), key
    assert loss_long.item() == pytest.approx(loss_short.item(), rel=1e-6)


# ----------------------------------------------------------------------------- margin pairs


def test_sampled_margin_pairs_follow_the_hard_and_easy_rules():
    saliency = torch.tensor(
        [
            [0.0, 4.0, 12.0, 8.0, 4.0, 0.0],  # graded: hard = 12 vs a 4
            [1.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # binary: hard negative falls back to a non-relevant clip
            [3.0, 3.0, 3.0, 0.0, 0.0, 0.0],  # all relevant, one score, no non-relevant real clip
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # nothing relevant: invalid pairs
        ]
    )
    video_mask = torch.tensor([[1] * 6, [1] * 6, [1, 1, 1, 0, 0, 0], [1] * 6]).bool()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        pos, neg, valid = sample_margin_pairs(saliency, video_mask, torch.rand(2, 3, 4, generator=generator))
        assert pos.shape == neg.shape == valid.shape == (4, 3)
        assert valid.tolist() == [[True] * 3] * 3 + [[False] * 3]
        assert pos[0, 0] == 2 and neg[0, 0] in (1, 4)
        assert set(pos[0, 1:].tolist()) <= {1, 2, 3, 4} and set(neg[0, 1:].tolist()) <= {0, 5}
        assert pos[1, 0] in (0, 2) and neg[1, 0] in (1, 3, 4, 5)
        assert set(pos[1].tolist()) <= {0, 2} and set(neg[1].tolist()) <= {1, 3, 4, 5}
        assert (pos[2] == neg[2]).all() and set(pos[2].tolist()) <= {0, 1, 2}  # margin loss = constant δ
        assert (pos[3] == 0).all() and (neg[3] == 0).all()  # invalid pairs still index a real clip


def test_sampled_margin_pairs_are_a_function_of_the_uniforms_and_cover_the_candidates():
    saliency = torch.tensor([[0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]])
    video_mask = torch.ones(1, 7, dtype=torch.bool)
    uniforms = torch.rand(2, 2, 1)
    draws = [sample_margin_pairs(saliency, video_mask, uniforms) for _ in "ab"]
    assert all(torch.equal(x, y) for x, y in zip(*draws))
    seen_pos, seen_neg = set(), set()
    for _ in range(200):
        pos, neg, _ = sample_margin_pairs(saliency, video_mask, torch.rand(2, 2, 1))
        seen_pos |= set(pos[0].tolist())
        seen_neg |= set(neg[0].tolist())
    assert seen_pos == {1, 2, 3} and seen_neg == {0, 4, 5, 6}


# ----------------------------------------------------------------------------- matcher


def _cw(start, end):
    return [(start + end) / 2, end - start]


def test_matcher_finds_the_known_assignment_and_follows_permutations():
    targets = [torch.tensor([_cw(0.1, 0.3), _cw(0.6, 0.9)]), torch.tensor([_cw(0.4, 0.5)]), torch.zeros(0, 2)]
    spans = torch.tensor(
        [
            [_cw(0.0, 0.2), _cw(0.62, 0.88), _cw(0.12, 0.31), _cw(0.4, 0.6)],
            [_cw(0.0, 1.0), _cw(0.41, 0.52), _cw(0.3, 0.5), _cw(0.7, 0.8)],
            [_cw(0.1, 0.2), _cw(0.3, 0.4), _cw(0.5, 0.6), _cw(0.7, 0.8)],
        ]
    )
    matcher = SGDetrHungarianMatcher()
    result = matcher(torch.zeros(3, 4, 2), spans, targets, torch.zeros(3, 4))
    assert [dict(zip(q.tolist(), t.tolist())) for q, t in result] == [{1: 1, 2: 0}, {1: 0}, {}]

    # with random scores and spans: permuting the queries permutes the assignment, nothing else
    logits, iou_logits, spans = torch.randn(3, 4, 2), torch.randn(3, 4), torch.rand(3, 4, 2) * 0.5 + 0.1
    result = matcher(logits, spans, targets, iou_logits)
    permutation = torch.tensor([3, 0, 2, 1])
    permuted = matcher(logits[:, permutation], spans[:, permutation], targets, iou_logits[:, permutation])
    for (q, t), (q_perm, t_perm) in zip(result, permuted):
        assert dict(zip(permutation[q_perm].tolist(), t_perm.tolist())) == dict(zip(q.tolist(), t.tolist()))


def test_matcher_matches_several_sets_at_once_as_one_by_one():
    """``match_sets`` (the loss's one host copy for every decoder layer and the selector) gives each set the
    assignment it gets alone, whatever the sets' query counts, whether they carry IoU logits, and whether sets
    of one shape come stacked along leading dimensions (the decoder's layers)."""
    generator = torch.Generator().manual_seed(4)
    targets = [torch.tensor([_cw(0.1, 0.3), _cw(0.6, 0.9)]), torch.zeros(0, 2), torch.tensor([_cw(0.4, 0.5)])]

    def predictions(*shape, iou=True):
        return (
            torch.randn(*shape, 2, generator=generator),
            torch.rand(*shape, 2, generator=generator) * 0.5 + 0.1,
            torch.randn(*shape, generator=generator) if iou else None,
        )

    sets = [predictions(3, 5), predictions(3, 3, iou=False), predictions(2, 3, 6)]
    alone_sets = [*sets[:2], *((logits, spans, iou) for logits, spans, iou in zip(*sets[2]))]
    matcher = SGDetrHungarianMatcher()
    together = matcher.match_sets(sets, targets)
    assert len(together) == 4
    for (logits, spans, iou), matched in zip(alone_sets, together, strict=True):
        alone = matcher(logits, spans, targets, iou)
        assert [(q.tolist(), t.tolist()) for q, t in matched] == [(q.tolist(), t.tolist()) for q, t in alone]
    assert [len(q) for q, _ in together[1]] == [2, 0, 1]
    # the two stacked sets are two problems: their assignments differ here
    assert [q.tolist() for q, _ in together[2]] != [q.tolist() for q, _ in together[3]]


def test_matcher_runs_untraced_under_torch_compile():
    """``sgdetr train --compile`` compiles the loss with the model: the matcher's numpy and scipy work must run
    as plain Python there (dynamo cannot trace ``np.split`` of a tensor's array), with the eager result."""
    torch.manual_seed(0)
    logits, iou_logits, spans = torch.randn(3, 5, 2), torch.randn(3, 5), torch.rand(3, 5, 2) * 0.5 + 0.1
    targets = [torch.tensor([_cw(0.1, 0.3), _cw(0.6, 0.9)]), torch.zeros(0, 2), torch.tensor([_cw(0.4, 0.5)])]
    matcher = SGDetrHungarianMatcher()
    compiled = torch.compile(lambda *args: matcher(*args), backend="eager", fullgraph=False)
    eager = matcher(logits, spans, targets, iou_logits)
    for (q, t), (q_compiled, t_compiled) in zip(
        eager, compiled(logits, spans, targets, iou_logits), strict=True
    ):
        assert torch.equal(q, q_compiled) and torch.equal(t, t_compiled)


def test_matcher_uses_the_predicted_iou_in_the_class_cost():
    """Two identical spans: with IoU scoring the confident-but-badly-localised query loses."""
    spans = torch.tensor([[_cw(0.2, 0.6), _cw(0.2, 0.6)]])
    logits = torch.tensor([[[3.0, 0.0], [1.0, 0.0]]])  # p = 0.953, 0.731
    iou_logits = torch.tensor([[-4.0, 3.0]])  # IoU^ = 0.018, 0.953
    target = [torch.tensor([_cw(0.25, 0.6)])]
    matcher = SGDetrHungarianMatcher(class_cost=4.0, l1_cost=10.0, giou_cost=1.0)
    assert matcher(logits, spans, target)[0][0].tolist() == [0]
    assert matcher(logits, spans, target, iou_logits)[0][0].tolist() == [1]


def test_matcher_rejects_bad_costs_and_non_finite_predictions():
    with pytest.raises(ValueError, match="costs"):
        SGDetrHungarianMatcher(class_cost=-1.0)
    spans = torch.tensor([[[float("nan"), 0.1]]])
    with pytest.raises(ValueError, match="Non-finite"):
        SGDetrHungarianMatcher()(torch.zeros(1, 1, 2), spans, [torch.tensor([[0.5, 0.2]])])


# ----------------------------------------------------------------------------- bad labels


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda labels: labels.pop(), "list of 2 dicts"),
        (lambda labels: labels[0].pop("saliency_scores"), "no 'saliency_scores'"),
        (lambda labels: labels[1].update(spans=torch.tensor([0.5, 0.2, 0.1])), r"shape \(K, 2\)"),
        (lambda labels: labels[0].update(spans=torch.tensor([[0.5, 0.0]])), "width > 0"),
        (lambda labels: labels[0].update(spans=torch.tensor([[float("nan"), 0.2]])), "normalised"),
        (lambda labels: labels[0].update(spans=torch.tensor([[12.0, 4.0]])), "L_b \\* clip_length"),
        (lambda labels: labels[1].update(saliency_scores=torch.ones(2)), "one score per clip"),
        (lambda labels: labels[0].update(saliency_scores=torch.tensor([0.0, -1.0, 0.0, 0.0])), ">= 0"),
        (lambda labels: labels[0].pop("saliency_neg_idx"), "Either every label"),
        (lambda labels: labels[1].update(saliency_pos_idx=torch.tensor([0, 3])), "index real clips"),
        (lambda labels: labels[1].update(saliency_pos_idx=torch.tensor([0])), "same number of pairs"),
    ],
)
def test_bad_labels_raise_clear_errors(mutate, message):
    labels = example_labels()
    mutate(labels)
    with pytest.raises(ValueError, match=message):
        criterion_loss(example_outputs(), labels)


# ----------------------------------------------------------------------------- weights, parameters, counts
# (each test below was written against a hand-made mutant of loss_sgdetr.py that every test above let pass)

# every weight of eq. 15 and of its terms a distinct value, none of them the default
DISTINCT_WEIGHTS = dict(
    lambda_l1=3.0, lambda_giou=7.0, lambda_ce=11.0, lambda_centerness=13.0, lambda_iou=17.0,
    lambda_detr=19.0, lambda_atss=23.0, lambda_hl=29.0, lambda_aux=31.0, lambda_dn=37.0,
    lambda_atss_queries=41.0, lambda_selector=43.0,
)  # fmt: skip


def _expected_weight(config: SGDetrConfig, key: str) -> float:
    """The weight of a loss_dict key by the paper's eq. 15 and the config's documentation: its group's λ
    (inside L_detr: λ_detr times the auxiliary set's λ) times its term's λ (none for L_hl and L_aux;
    the ATSS focal term is a classification term: λ_ce)."""
    prefix, term = key.split("_")[0], key.split("_", 1)[1].rsplit("_layer", 1)[0]
    group = {
        "hl": config.lambda_hl,
        "aux": config.lambda_aux,
        "atss": config.lambda_atss,
        "detr": config.lambda_detr,
        "sel": config.lambda_detr * config.lambda_selector,
        "dn": config.lambda_detr * config.lambda_dn,
        "co": config.lambda_detr * config.lambda_atss_queries,
    }[prefix]
    if prefix in ("hl", "aux"):
        return group
    lambdas = {
        "l1": config.lambda_l1, "giou": config.lambda_giou, "ce": config.lambda_ce, "iou": config.lambda_iou,
        "focal": config.lambda_ce, "centerness": config.lambda_centerness,
    }  # fmt: skip
    return group * lambdas[term]


def _with_co_group(outputs):
    """The example with a Co-DETR ATSS-positive query group (the denoising group's tensors again)."""
    encoder, detector = outputs
    return encoder, dataclasses.replace(detector, atss_queries=detector.denoising)


def test_every_weight_of_the_config_scales_its_own_terms_only():
    """With every λ distinct and off its default, each term is its unweighted value times exactly its own
    weights (a term read with another λ, or without its group's λ_detr, fails here)."""
    default, distinct = SGDetrConfig(), SGDetrConfig(**DISTINCT_WEIGHTS)
    _, base = criterion_loss(_with_co_group(example_outputs()), example_labels(), default)
    _, weighted = criterion_loss(_with_co_group(example_outputs()), example_labels(), distinct)
    assert set(base) == set(weighted)
    assert {key.split("_")[0] for key in base} == {"hl", "detr", "sel", "dn", "co", "atss", "aux"}
    for key, value in base.items():
        unweighted = value.item() / _expected_weight(default, key)
        assert weighted[key].item() == pytest.approx(
            unweighted * _expected_weight(distinct, key), rel=1e-5
        ), key


def test_margin_temperature_focal_and_no_object_parameters_come_from_the_config():
    """δ, τ, the focal α and γ and the no-object weight of the config, against the hand computation."""
    margin, tau, alpha, gamma, eos = 0.5, 0.25, 0.4, 1.0, 0.3
    config = SGDetrConfig(
        saliency_margin=margin, rank_contrastive_tau=tau, focal_alpha=alpha, focal_gamma=gamma, eos_coef=eos
    )
    _, loss_dict = criterion_loss(example_outputs(), example_labels(), config)
    hinge = sum(
        max(0.0, margin + LOCAL[b][n] - LOCAL[b][p])
        for b in range(2)
        for p, n in zip(MARGIN_POS[b], MARGIN_NEG[b])
    )
    assert loss_dict["hl_margin_local"].item() == pytest.approx(2 * hinge / 4, rel=1e-5)
    rows = [
        (LOCAL[0] + NEG_LOCAL[0], SALIENCY[0] + [0.0] * 4, "real_negative"),
        (LOCAL[1], SALIENCY[1], "same_source"),
    ]
    assert loss_dict["hl_rctl_local"].item() == pytest.approx(rank_contrastive(rows, tau=tau), rel=1e-5)
    focal = 0.0
    for b, a in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        p = sigmoid(ATSS_LOGITS[b][a])
        if ATSS_ASSIGNED[b][a] >= 0:
            focal += alpha * (1 - p) ** gamma * -math.log(p)
        else:
            focal += (1 - alpha) * p**gamma * -math.log(1 - p)
    assert loss_dict["atss_focal"].item() == pytest.approx(5.0 * focal / 2, rel=1e-5)
    expected_ce = query_terms(
        [q for sample in DECODER for q in sample], [t for sample in DECODER_TARGETS for t in sample], eos=eos
    )["ce"]
    assert loss_dict["detr_ce_layer0"].item() == pytest.approx(5.0 * expected_ce, rel=1e-5)


# the example's normalisers, counted by hand from its labels and the hand-set query groups
EXAMPLE_COUNTS = {
    "margin_pairs": 4, "clips": 7, "rows": 2, "neg_rows": 1, "matched": 3, "window_queries": 6,
    "dn_positive": 2, "dn_valid": 3, "co_positive": 2, "co_valid": 3, "atss_positive": 2,
    "atss_centerness": 0.8 + 0.6, "moment_rows": 2, "moment_row_clips": 7,
}  # fmt: skip


def test_given_normalisers_divide_every_term_as_the_forwards_own_counts():
    """A forward given the global batch's counts (here the batch's own, by hand) divides each term by them:
    the terms equal those of the forward that counts from its outputs (e.g. L1 by 2 coordinates x matched)."""
    assert set(EXAMPLE_COUNTS) == set(LOSS_NORMALIZERS)
    outputs = _with_co_group(example_outputs())
    _, own = criterion_loss(outputs, example_labels(), SGDetrConfig(**WEIGHTS))
    encoder, detector = outputs
    mask = encoder.video_mask
    targets = prepare_targets(example_labels(), torch.zeros(*mask.shape, 1), mask, num_margin_pairs=2)
    targets.neg_pair_mask = torch.tensor(NEG_PAIR)
    targets.context = SGDetrBatchContext(
        text_features=torch.zeros(2, 1, 1),
        text_mask=torch.ones(2, 1, dtype=torch.bool),
        start=0,
        neg_pair_mask=torch.tensor(NEG_PAIR),
        loss_normalizers={k: torch.tensor(float(v)) for k, v in EXAMPLE_COUNTS.items()},
    )
    _, given = SGDetrLoss(SGDetrConfig(**WEIGHTS))(encoder, detector, targets)
    assert set(given) == set(own)
    for key, value in own.items():
        assert given[key].item() == pytest.approx(value.item(), rel=1e-5), key
    # the counts doubled halve every term that divides by a count (the rank-contrastive term weighs its
    # rows by 1 / rows and 1 / (rows - neg_rows): it is checked above only)
    targets.context.loss_normalizers = {k: torch.tensor(2.0 * v) for k, v in EXAMPLE_COUNTS.items()}
    _, halved = SGDetrLoss(SGDetrConfig(**WEIGHTS))(encoder, detector, targets)
    for key, value in own.items():
        if not key.startswith("hl_rctl"):
            assert halved[key].item() == pytest.approx(value.item() / 2, rel=1e-5), key


def test_counted_normalisers_by_hand():
    """count_loss_normalizers on 3 samples with 3, 1 and 0 windows and 2 primary queries: the matched count
    is min(K_b, num_queries) per sample (no more than Q windows can be matched)."""
    config = SGDetrConfig(num_queries=2, num_dn_groups=3, use_hybrid_detector=False)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    labels = [
        {"spans": [[0.2, 0.2], [0.5, 0.2], [0.8, 0.2]], "saliency_scores": [0.0, 4.0, 8.0, 0.0]},
        {"spans": [[0.5, 0.5]], "saliency_scores": [0.0, 0.0, 2.0]},
        {"spans": torch.zeros(0, 2), "saliency_scores": [0.0, 0.0]},
    ]
    features = torch.arange(12.0).reshape(3, 4, 1)  # three different videos: every rolled pair is negative
    targets = prepare_targets(labels, features, mask, num_margin_pairs=2)
    counts = {k: v.item() for k, v in count_loss_normalizers(config, targets).items()}
    assert counts == {
        "margin_pairs": 4.0, "clips": 9.0, "rows": 3.0, "neg_rows": 3.0, "matched": 2.0 + 1.0,
        "window_queries": 2.0 * 2, "dn_positive": 4.0 * 3, "dn_valid": 4.0 * 2 * 3, "co_positive": 0.0,
        "co_valid": 0.0, "atss_positive": 0.0, "atss_centerness": 0.0, "moment_rows": 2.0,
        "moment_row_clips": 4.0 + 3.0,
    }  # fmt: skip


def test_alignment_terms_leave_out_the_samples_without_a_relevant_clip():
    """Eq. 14 is defined on samples with a moment: a sample whose clips are all irrelevant (saliency 0) has
    no alignment term and no frame BCE term, and does not count in their means."""
    labels = example_labels()
    labels[1]["saliency_scores"] = torch.zeros(3)
    _, loss_dict = criterion_loss(example_outputs(), labels)

    def cos(u, v):
        return (u[0] * v[0] + u[1] * v[1]) / math.hypot(*u) / math.hypot(*v)

    logits = [cos(MOMENT_TOKENS[0], s) for s in SENTENCES] + [cos(NONMOMENT_TOKENS[0], s) for s in SENTENCES]
    align = -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    frame_bce = [
        bce(MOMENT_TOKENS[0][0] * z[0] + MOMENT_TOKENS[0][1] * z[1], float(y > 0))
        for z, y in zip(FRAMES[0], SALIENCY[0])
    ]
    assert loss_dict["aux_align"].item() == pytest.approx(align, rel=1e-5)
    assert loss_dict["aux_bce"].item() == pytest.approx(sum(frame_bce) / 4, rel=1e-5)


def _hand_cost(logit, span, iou_logit, target, class_cost, l1_cost, giou_cost):
    """The matching cost of one query and one window (paper §3.6): -w_c p^.5 IoU^.5 + w_l1 L1 - w_g GIoU."""
    p = math.exp(logit[0]) / (math.exp(logit[0]) + math.exp(logit[1]))
    quality = p if iou_logit is None else math.sqrt(p * sigmoid(iou_logit))
    l1 = abs(span[0] - target[0]) + abs(span[1] - target[1])
    return -class_cost * quality + l1_cost * l1 - giou_cost * giou(span, target)[1]


@pytest.mark.parametrize("costs", [(4.0, 10.0, 1.0), (2.0, 0.5, 3.0), (1.0, 0.0, 0.0)])
def test_matcher_assignment_minimises_the_hand_computed_cost(costs):
    """For random small problems the matcher built from the config (its matcher costs) returns the
    assignment of least total hand-computed cost, found by brute force over all assignments."""
    import itertools

    class_cost, l1_cost, giou_cost = costs
    config = SGDetrConfig(matcher_cost_class=class_cost, matcher_cost_l1=l1_cost, matcher_cost_giou=giou_cost)
    matcher = SGDetrLoss(config).matcher
    generator = torch.Generator().manual_seed(7)
    batch, num_queries, num_targets = 12, 4, 2
    logits = torch.randn(batch, num_queries, 2, generator=generator) * 2
    iou_logits = torch.randn(batch, num_queries, generator=generator) * 2
    spans = torch.rand(batch, num_queries, 2, generator=generator) * torch.tensor([0.8, 0.4]) + 0.1
    targets = [
        torch.rand(num_targets, 2, generator=generator) * torch.tensor([0.8, 0.4]) + 0.1 for _ in range(batch)
    ]
    for use_iou in (True, False):
        result = matcher(logits, spans, targets, iou_logits if use_iou else None)
        for b, (query_idx, target_idx) in enumerate(result):
            cost = [
                [
                    _hand_cost(
                        logits[b, q].tolist(),
                        spans[b, q].tolist(),
                        iou_logits[b, q].item() if use_iou else None,
                        targets[b][t].tolist(),
                        class_cost,
                        l1_cost,
                        giou_cost,
                    )  # fmt: skip
                    for t in range(num_targets)
                ]
                for q in range(num_queries)
            ]
            best = min(
                sum(cost[q][t] for t, q in enumerate(queries))
                for queries in itertools.permutations(range(num_queries), num_targets)
            )
            got = sum(cost[q][t] for q, t in zip(query_idx.tolist(), target_idx.tolist()))
            assert sorted(target_idx.tolist()) == list(range(num_targets))
            assert got == pytest.approx(best, abs=1e-5), (b, use_iou)


def test_matcher_quality_is_the_geometric_mean_of_class_and_iou_scores():
    """One window, two queries: A has p = IoÛ = 0.5 (quality 0.5, product 0.25) 0.07 off the window, B is
    exact with p = IoÛ = 0.1 (quality 0.1). Costs (4, 10, 1): A -2 + 0.7 - 0.4815 = -1.78 beats B -0.4 - 1 =
    -1.4; with the plain product as quality B (-1.04) would beat A (-0.78)."""
    target = [0.5, 0.2]
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(9.0)]]])
    iou_logits = torch.tensor([[0.0, -math.log(9.0)]])
    spans = torch.tensor([[[0.57, 0.2], target]])
    assert _hand_cost([0.0, 0.0], [0.57, 0.2], 0.0, target, 4, 10, 1) == pytest.approx(-2 + 0.7 - 0.13 / 0.27)
    ((query_idx, _),) = SGDetrHungarianMatcher()(logits, spans, [torch.tensor([target])], iou_logits)
    assert query_idx.tolist() == [0]

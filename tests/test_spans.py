"""Span maths: conversions, (G)IoU, sine embeddings, NMS and weighted span fusion against references."""

import math
import random

import pytest
import torch

from sgdetr_hf.spans import (
    clamp_spans_cw,
    generalized_span_iou,
    inverse_sigmoid,
    nms_1d,
    pairwise_generalized_span_iou,
    pairwise_span_iou,
    sine_embed_spans_cw,
    sine_embedding,
    span_cw_to_se,
    span_iou,
    span_se_to_cw,
    weighted_span_fusion,
)


def test_conversions_round_trip_and_values():
    cw = torch.tensor([[0.5, 0.2], [0.1, 0.4]])
    se = span_cw_to_se(cw)
    assert torch.allclose(se, torch.tensor([[0.4, 0.6], [-0.1, 0.3]]))
    assert torch.allclose(span_se_to_cw(se), cw)
    assert torch.allclose(clamp_spans_cw(cw), torch.tensor([[0.5, 0.2], [0.15, 0.3]]))


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 2.0], [1.0, 3.0]])
    b = torch.tensor([[1.0, 3.0], [4.0, 5.0]])
    iou, union = pairwise_span_iou(a, b)
    # [0,2]&[1,3]: inter 1, union 3; [0,2]&[4,5]: 0; [1,3]&[1,3]: 1; [1,3]&[4,5]: 0
    assert torch.allclose(iou, torch.tensor([[1 / 3, 0.0], [1.0, 0.0]]))
    assert torch.allclose(union, torch.tensor([[3.0, 3.0], [2.0, 3.0]]))
    giou = pairwise_generalized_span_iou(a, b)
    # [0,2]&[4,5]: hull 5, union 3 -> 0 - 2/5; [1,3]&[4,5]: hull 4, union 3 -> -1/4
    assert torch.allclose(giou, torch.tensor([[1 / 3, -0.4], [1.0, -0.25]]))
    assert torch.allclose(span_iou(a, b), torch.tensor([1 / 3, 0.0]))
    assert torch.allclose(generalized_span_iou(a, b), torch.tensor([1 / 3, -0.25]))


def test_elementwise_matches_pairwise_diagonal():
    g = torch.Generator().manual_seed(1)
    a = span_cw_to_se(torch.rand(2, 7, 2, generator=g))
    b = span_cw_to_se(torch.rand(2, 7, 2, generator=g))
    diag = torch.diagonal(pairwise_generalized_span_iou(a, b), dim1=-2, dim2=-1)
    assert torch.allclose(generalized_span_iou(a, b), diag, atol=1e-6)


def test_inverse_sigmoid_clamps():
    x = torch.tensor([0.0, 0.5, 0.9, 1.0])
    y = inverse_sigmoid(x)
    assert torch.allclose(
        y, torch.tensor([math.log(1e-3 / 0.999), 0.0, math.log(9.0), math.log(0.999 / 1e-3)]), atol=1e-5
    )


def test_sine_embedding_values():
    emb = sine_embedding(torch.tensor([0.25]), 4, temperature=100.0)
    x = 0.25 * 2 * math.pi
    expected = [math.sin(x), math.cos(x), math.sin(x / 10.0), math.cos(x / 10.0)]
    assert torch.allclose(emb[0], torch.tensor(expected), atol=1e-6)
    spans = sine_embed_spans_cw(torch.tensor([[0.25, 0.5]]), 8, temperature=100.0)
    assert torch.allclose(spans[0, :4], emb[0], atol=1e-6)
    # [PE(center) ; PE(width)], not interleaved: the width's embedding is the second half
    assert torch.equal(spans[0, 4:], sine_embedding(torch.tensor([0.5]), 4, temperature=100.0)[0])
    assert spans.shape == (1, 8)


def _nms_reference(spans, scores, valid, thr):
    order = sorted((i for i in range(len(scores)) if valid[i]), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou(spans[i], spans[j]) <= thr for j in keep):
            keep.append(i)
    return sorted(keep)


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / max(union, 1e-6)


def test_nms_matches_reference():
    rng = random.Random(0)
    batch, n = 4, 30
    spans = torch.tensor([[sorted([rng.random(), rng.random()]) for _ in range(n)] for _ in range(batch)])
    scores = torch.tensor([[rng.random() for _ in range(n)] for _ in range(batch)])
    valid = torch.rand(batch, n, generator=torch.Generator().manual_seed(0)) > 0.2
    keep = nms_1d(spans, scores, valid, 0.5)
    for b in range(batch):
        expected = _nms_reference(spans[b].tolist(), scores[b].tolist(), valid[b].tolist(), 0.5)
        assert keep[b].nonzero().flatten().tolist() == expected


def test_nms_on_a_chain_of_overlaps_keeps_every_other_span():
    """Each span overlaps its better-ranked neighbour only: greedy NMS keeps ranks 0, 2, 4, ... Deciding rank
    i needs rank i - 1 decided first, the longest dependency there is (the fixed-point passes of nms_1d must
    run until the end of the chain, not stop at a plausible early answer)."""
    n = 40
    starts = torch.arange(n, dtype=torch.float32) * 0.5
    spans = torch.stack((starts, starts + 1.0), -1)[None]  # neighbours: IoU 1/3; two apart: 0
    scores = torch.linspace(1.0, 0.1, n)[None]
    keep = nms_1d(spans, scores, torch.ones(1, n, dtype=torch.bool), 0.3)
    assert keep[0].nonzero().flatten().tolist() == list(range(0, n, 2))
    assert nms_1d(spans, scores, torch.ones(1, n, dtype=torch.bool), 0.4).all()  # IoU 1/3 suppresses nothing


def _wbf_reference(spans, scores, models, weights, thr, skip):
    """Weighted Boxes Fusion in 1-D, written as the reference library does it (lists, one sample)."""
    items = [
        (scores[i] * weights[models[i]], spans[i][0], spans[i][1])
        for i in range(len(scores))
        if scores[i] >= skip
    ]
    items.sort(key=lambda t: -t[0])
    clusters, fused = [], []
    for item in items:
        best, best_iou = -1, thr
        for c, box in enumerate(fused):
            iou = _iou(box[1:], item[1:])
            if iou > best_iou:
                best, best_iou = c, iou
        if best < 0:
            clusters.append([item])
            fused.append(item)
        else:
            clusters[best].append(item)
            members = clusters[best]
            total = sum(m[0] for m in members)
            fused[best] = (
                total / len(members),
                sum(m[0] * m[1] for m in members) / total,
                sum(m[0] * m[2] for m in members) / total,
            )
    out = []
    for members, box in zip(clusters, fused):
        conf = box[0] * min(len(weights), len(members)) / sum(weights)
        out.append((conf, box[1], box[2]))
    out.sort(key=lambda t: -t[0])
    return out


@pytest.mark.parametrize(
    "weights, invalid_share, skip",
    [
        ((1.0, 1.0), 0.0, 0.0),
        ((2.0, 1.0), 0.0, 0.0),
        ((1.0, 1.0), 0.3, 0.2),
        ((1.0, 4.0), 0.0, 0.0),  # weights that reorder the candidates: they are visited by weighted score
        ((0.25, 1.0), 0.2, 0.1),
    ],
)
def test_weighted_span_fusion_matches_brute_force(weights, invalid_share, skip):
    rng = random.Random(3)
    batch, n = 5, 16
    spans, scores, models = [], [], []
    for _ in range(batch):
        centers = [rng.uniform(0.2, 0.8) for _ in range(4)]  # a few clusters so that boxes do merge
        row = []
        for i in range(n):
            c = centers[i % 4] + rng.uniform(-0.05, 0.05)
            w = rng.uniform(0.1, 0.3)
            row.append([c - w / 2, c + w / 2])
        spans.append(row)
        scores.append([rng.uniform(0.01, 1.0) for _ in range(n)])
        models.append([i % 2 for i in range(n)])
    usable = [[rng.random() >= invalid_share for _ in range(n)] for _ in range(batch)]
    fused, conf, valid = weighted_span_fusion(
        torch.tensor(spans), torch.tensor(scores), torch.tensor(models), torch.tensor(usable),
        weights, iou_threshold=0.55, skip_threshold=skip,
    )  # fmt: skip
    merged_somewhere = False
    for b in range(batch):
        kept = [i for i in range(n) if usable[b][i]]
        expected = _wbf_reference(
            [spans[b][i] for i in kept],
            [scores[b][i] for i in kept],
            [models[b][i] for i in kept],
            weights,
            0.55,
            skip,
        )
        count = int(valid[b].sum())
        assert count == len(expected)
        merged_somewhere |= count < n
        got = torch.cat((conf[b, :count, None], fused[b, :count]), 1)
        assert torch.allclose(got, torch.tensor(expected, dtype=torch.float32), atol=1e-5)
        assert torch.isinf(conf[b, count:]).all() and (fused[b, count:] == 0).all()
    assert merged_somewhere


def test_weighted_span_fusion_single_box_is_halved_and_agreement_rewarded():
    spans = torch.tensor([[[0.1, 0.3], [0.12, 0.3], [0.7, 0.9]]])
    scores = torch.tensor([[0.8, 0.6, 0.9]])
    fused, conf, valid = weighted_span_fusion(
        spans, scores, torch.tensor([[0, 1, 0]]), torch.ones(1, 3, dtype=torch.bool), (1.0, 1.0), 0.55
    )
    assert valid.tolist() == [[True, True, False]]
    # cluster {0.8, 0.6}: mean 0.7, two models -> x 2/2; lone box 0.9 -> x 1/2
    assert torch.allclose(conf[0, :2], torch.tensor([0.7, 0.45]))
    assert torch.allclose(fused[0, 0], torch.tensor([(0.8 * 0.1 + 0.6 * 0.12) / 1.4, 0.3]))
    assert torch.allclose(fused[0, 1], torch.tensor([0.7, 0.9]))


def _fusion_inputs(seed=0, batch=4, n=24):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(batch, n, generator=g) * 0.8
    spans = torch.stack((start, start + 0.05 + torch.rand(batch, n, generator=g) * 0.15), -1)
    scores = torch.rand(batch, n, generator=g)
    models = torch.arange(n).remainder(2).expand(batch, -1)
    return spans, scores, models, torch.ones(batch, n, dtype=torch.bool)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (3.0, 1.0), (1.0, 0.3)])
def test_weighted_span_fusion_depends_on_the_ratio_of_the_weights_only(weights):
    """float32 products of scores and weights overflowed (1e39: NaN spans and confidences) or underflowed
    (1e-45: denormals, every score but the best one 0): the weights are scaled by a power of two first."""
    inputs = _fusion_inputs()
    reference = weighted_span_fusion(*inputs, weights)
    for power in (-149, -60, 60, 127, 200):  # a power of two: the same result to the last bit
        scaled = weighted_span_fusion(*inputs, [w * 2.0**power for w in weights])
        for got, want in zip(scaled, reference):
            assert torch.equal(got, want), power
    for factor in (1e-45, 1e-30, 1e30, 1e39, 1e300):  # any factor: the same up to float32 rounding
        fused, conf, valid = weighted_span_fusion(*inputs, [w * factor for w in weights])
        assert torch.equal(valid, reference[2]) and torch.isfinite(fused).all()
        torch.testing.assert_close(fused, reference[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(conf[valid], reference[1][valid], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights", [(math.inf, 1.0), (1.0, math.nan), (1.0, -0.5), (0.0, 0.0), ()])
def test_weighted_span_fusion_refuses_weights_that_are_not_finite_and_positive(weights):
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0, one at least > 0"):
        weighted_span_fusion(*_fusion_inputs(), weights)


def test_weighted_span_fusion_weight_zero_leaves_one_model_out_of_the_scores():
    """A zero weight stays allowed here (the post-processing asks for > 0): that model adds no score."""
    spans, scores, models, valid = _fusion_inputs()
    fused, conf, ok = weighted_span_fusion(spans, scores, models, valid, (1.0, 0.0))
    assert torch.isfinite(conf[ok]).all() and torch.isfinite(fused).all()


# each test below kills a hand-made mutant of spans.py that the tests above let pass


def test_thresholds_are_strict_where_documented_and_inclusive_for_skipping():
    """NMS suppresses at IoU > thr and WBF merges at IoU > thr (ensemble-boxes): IoU exactly 0.5 at thr 0.5
    keeps both spans apart; WBF keeps a score equal to the skip threshold (it skips scores < thr)."""
    spans = torch.tensor([[[0.0, 0.5], [0.0, 0.25]]])  # IoU exactly 0.5 in float32
    scores, valid = torch.tensor([[0.9, 0.8]]), torch.ones(1, 2, dtype=torch.bool)
    assert _iou([0.0, 0.5], [0.0, 0.25]) == 0.5
    assert nms_1d(spans, scores, valid, 0.5).tolist() == [[True, True]]
    assert nms_1d(spans, scores, valid, 0.49).tolist() == [[True, False]]
    models = torch.tensor([[0, 1]])
    _, conf, exists = weighted_span_fusion(spans, scores, models, valid, (1.0, 1.0), 0.5)
    assert exists.tolist() == [[True, True]] and torch.allclose(conf, torch.tensor([[0.45, 0.4]]))
    _, conf, exists = weighted_span_fusion(spans, scores, models, valid, (1.0, 1.0), 0.49)
    assert exists.tolist() == [[True, False]] and conf[0, 0].item() == pytest.approx(0.85)
    _, conf, exists = weighted_span_fusion(spans, scores, models, valid, (1.0, 1.0), 0.5, skip_threshold=0.8)
    assert exists.tolist() == [[True, True]]
    _, _, exists = weighted_span_fusion(spans, scores, models, valid, (1.0, 1.0), 0.5, skip_threshold=0.81)
    assert exists.tolist() == [[True, False]]


def test_iou_of_short_spans_is_exact():
    """Spans of a thousandth of the video (a clip of a long video): the union's guard against 0 / 0 must not
    change their IoU."""
    a, b = torch.tensor([0.0, 1e-3]), torch.tensor([0.0, 5e-4])
    assert span_iou(a, b).item() == pytest.approx(0.5, rel=1e-5)
    assert generalized_span_iou(a, torch.tensor([2e-3, 3e-3])).item() == pytest.approx(-1 / 3, rel=1e-4)

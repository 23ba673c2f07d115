"""Hybrid detector: anchors, 1-D ATSS assignment, query groups, attention mask, selector, decoder."""

import math
import random

import pytest
import torch

from sgdetr_hf import SGDetrConfig
from sgdetr_hf.detector_sgdetr import (
    SGDetrDecoder,
    SGDetrHybridDetector,
    SGDetrPyramidNeck,
    assign_atss,
    build_atss_positive_group,
    build_denoising_group,
    build_self_attention_blocked,
    decode_atss_deltas,
    level_lengths,
    make_anchors,
)
from sgdetr_hf.spans import span_cw_to_se
from sgdetr_hf.targets_sgdetr import prepare_targets

TINY = dict(
    hidden_size=32, num_attention_heads=4, ffn_dim=64, group_norm_groups=8, video_feature_dim=16,
    text_feature_dim=16, dropout=0.0, input_dropout=0.0,
)  # fmt: skip


# ------------------------------------------------------------------------------------------- anchors
def test_anchor_layout_values():
    anchors, mask, levels = make_anchors(torch.tensor([75, 6]), 75, [1, 2, 4, 8, 16], 4.0)
    assert anchors.shape == (2, 147, 2) and levels.tolist().count(0) == 75
    assert mask[0].sum() == 147  # 75 + 38 + 19 + 10 + 5
    assert mask[1].sum() == 6 + 3 + 2 + 1 + 1
    # level 2 (stride 4), position 3 of the 75-clip video: centred on clip 4 * 3 = 12 (center 12.5 / 75),
    # width 16 / 75
    j = 75 + 38 + 3
    assert torch.allclose(anchors[0, j], torch.tensor([12.5 / 75, 16 / 75]))
    assert torch.allclose(anchors[1, 0], torch.tensor([0.5 / 6, 4 / 6]))
    # the first position of every level is centred on clip 0, the last valid one inside the video
    starts = [0, 75, 75 + 38, 75 + 38 + 19, 75 + 38 + 19 + 10]
    assert torch.allclose(anchors[0, starts, 0], torch.full((5,), 0.5 / 75))
    assert (anchors[0, :, 0][mask[0]] < 1).all() and (anchors[1, :, 0][mask[1]] < 1).all()
    # zero deltas decode to the anchor itself, not clipped (the losses read the unclipped decode)
    decoded = decode_atss_deltas(anchors, torch.zeros_like(anchors), [0.1, 0.2])
    assert torch.allclose(decoded, anchors, atol=1e-6)


class _NoNorm(torch.nn.Module):
    """Stands in for the pyramid's GroupNorm: its per-video statistics would spread one clip's change to
    every position and hide the convolutions' receptive fields."""

    def forward(self, x, mask):
        return x


def test_anchor_centres_sit_at_the_centre_of_their_features_receptive_field():
    """Perturb one clip at a time and record which positions of each pyramid level change: the anchor of a
    position sits at the centre of the clips it is computed from (the middle of its receptive field)."""
    cfg = SGDetrConfig(**TINY)
    neck = SGDetrPyramidNeck(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # positive weights and inputs keep every ReLU open
        for conv in neck.convs:
            conv.weight.copy_(torch.rand(conv.weight.shape, generator=g) + 0.1)
            conv.bias.fill_(0.1)
    neck.norms = torch.nn.ModuleList(_NoNorm() for _ in neck.norms)
    length = 128
    lengths = torch.tensor([length])
    base = torch.rand(1, length, 32, generator=g) + 0.1
    with torch.no_grad():
        reference, _ = neck(base, lengths)
        fields = [[[] for _ in range(level.shape[1])] for level in reference]  # levels are (B, L_k, d)
        for clip in range(length):
            perturbed = base.clone()
            perturbed[0, clip] += 1.0
            for level, (before, after) in enumerate(zip(reference, neck(perturbed, lengths)[0])):
                for j in ((after - before)[0].abs().amax(-1) > 0).nonzero()[:, 0].tolist():
                    fields[level][j].append(clip)
    anchors, _, _ = make_anchors(lengths, length, cfg.pyramid_strides, cfg.anchor_scale)
    start = 0
    for level, stride in enumerate(cfg.pyramid_strides):
        checked = 0
        for j, field in enumerate(fields[level]):
            assert field == list(range(field[0], field[-1] + 1))  # contiguous
            if field[0] == 0 or field[-1] == length - 1:
                continue  # cut by the video border: its centre is not the features' centre
            assert len(field) == 2 * stride - 1  # kernel 3, stride 2 at every level
            centre_in_clips = (field[0] + field[-1] + 1) / 2  # clip i spans [i, i + 1]
            assert anchors[0, start + j, 0].item() * length == pytest.approx(centre_in_clips), (stride, j)
            checked += 1
        assert checked >= 6, stride
        start += len(fields[level])


# ------------------------------------------------------------------------------------------- ATSS assignment
def _single_level(num_clips=10):
    """One level of one-clip anchors (stride 1, scale 1): anchor j covers clip j exactly."""
    anchors, mask, levels = make_anchors(torch.tensor([num_clips]), num_clips, [1], 1.0)
    return anchors, mask, levels


def _se_to_cw(pairs):
    return torch.tensor([[[(s + e) / 2, e - s] for s, e in pairs]])


def _assign(pairs, topk=9):
    anchors, mask, levels = _single_level()
    gts = _se_to_cw(pairs)
    return assign_atss(anchors, mask, [len(levels)], gts, torch.ones(1, len(pairs), dtype=torch.bool), topk)


def test_atss_gts_at_both_borders():
    # GT A = clips 0-2 (video start), GT B = clip 9 (video end). By hand: A's 9 candidates have IoUs
    # 3 x 1/3 and 6 x 0 -> threshold 1/9 + 1/6; B's: 1 and 8 x 0 -> 1/9 + 1/3.
    out = _assign([(0.0, 0.3), (0.9, 1.0)])
    assert out["assigned_gt"][0].tolist() == [0, 0, 0, -1, -1, -1, -1, -1, -1, 1]
    assert torch.allclose(out["target_spans"][0, 1], torch.tensor([0.15, 0.3]))
    # centerness sqrt(min(l, r) / max(l, r)): anchor 0 (center 0.05) in [0, 0.3] -> sqrt(0.05 / 0.25)
    assert torch.allclose(
        out["centerness_targets"][0, :3], torch.tensor([math.sqrt(0.2), 1.0, math.sqrt(0.2)])
    )
    assert out["centerness_targets"][0, 3:9].abs().sum() == 0


def test_atss_two_overlapping_gts_keep_highest_iou():
    # C = [0.2, 0.6] takes anchors 2..5 (IoU 0.25 each); D = [0.4, 0.5] takes anchor 4 (IoU 1), which both
    # claim: it goes to D.
    out = _assign([(0.2, 0.6), (0.4, 0.5)])
    assert out["assigned_gt"][0].tolist() == [-1, -1, 0, 0, 1, 0, -1, -1, -1, -1]


def test_atss_gt_shorter_than_a_clip_uses_the_fallback():
    # E = [0.51, 0.53]: no anchor center lies inside it -> its best candidate (anchor 5, IoU 0.2) is taken
    out = _assign([(0.51, 0.53)])
    assert out["assigned_gt"][0].tolist() == [-1] * 5 + [0] + [-1] * 4
    assert out["centerness_targets"][0, 5] == 0  # the anchor center is outside the GT
    # ... unless that anchor is already positive for another GT
    out = _assign([(0.51, 0.53), (0.5, 0.6)])
    assert out["assigned_gt"][0].tolist() == [-1] * 5 + [1] + [-1] * 4


def test_atss_threshold_uses_the_unbiased_std():
    # F = [0.5, 0.69] (centre 0.595), topk 5: candidates 5, 6, 4, 7, 3 with IoUs 10/19, 0.45, 0, 0, 0. Mean
    # 0.19526; unbiased std sqrt(0.28888 / 4) = 0.26874 -> threshold 0.4640: anchor 5 only. The biased std
    # (/ 5: 0.24037, threshold 0.4356) would also take anchor 6 (IoU 0.45, centre 0.65 inside F).
    out = _assign([(0.5, 0.69)], topk=5)
    assert out["assigned_gt"][0].tolist() == [-1] * 5 + [0] + [-1] * 4


def _atss_reference(anchors, mask, levels, gts, gt_mask, topk):
    """Plain-Python 1-D ATSS (design §2.12), one sample, one GT at a time."""
    anchors, mask, levels = anchors.tolist(), mask.tolist(), levels.tolist()
    n = len(anchors)
    clipped = [(max(0.0, c - w / 2), min(1.0, c + w / 2)) for c, w in anchors]

    def iou(a, g):
        inter = max(0.0, min(a[1], g[1]) - max(a[0], g[0]))
        return inter / max((a[1] - a[0]) + (g[1] - g[0]) - inter, 1e-6)

    positives, best_candidate = {}, {}
    for g, ((gc, gw), valid) in enumerate(zip(gts.tolist(), gt_mask.tolist())):
        if not valid:
            continue
        gs, ge = gc - gw / 2, gc + gw / 2
        cands = []
        for level in sorted(set(levels)):
            idx = [a for a in range(n) if levels[a] == level and mask[a]]
            idx.sort(key=lambda a: abs(anchors[a][0] - gc))
            cands += idx[:topk]
        ious = [iou(clipped[a], (gs, ge)) for a in cands]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((x - mean) ** 2 for x in ious) / (len(ious) - 1)) if len(ious) > 1 else 0.0
        positives[g] = {a for a, x in zip(cands, ious) if x >= mean + std and gs < anchors[a][0] < ge}
        best_candidate[g] = cands[max(range(len(cands)), key=lambda i: (ious[i], -i))]
    taken = set().union(*positives.values()) if positives else set()
    for g, pos in positives.items():
        if not pos and best_candidate[g] not in taken:
            pos.add(best_candidate[g])
    assigned = [-1] * n
    for a in range(n):
        owners = [g for g, pos in positives.items() if a in pos]
        if owners:
            gc, gw = gts[owners[0]].tolist()
            assigned[a] = max(owners, key=lambda g: (iou(clipped[a], span_cw_to_se(gts[g]).tolist()), -g))
    return assigned


def test_atss_matches_reference_on_random_cases():
    rng = random.Random(0)
    lengths = torch.tensor([75, 23, 6, 140])
    anchors, mask, levels = make_anchors(lengths, 140, [1, 2, 4, 8, 16], 4.0)
    gts = torch.zeros(4, 5, 2)
    gt_mask = torch.zeros(4, 5, dtype=torch.bool)
    for b in range(4):
        for g in range(rng.randint(1, 5)):
            w = rng.uniform(0.005, 0.6)
            c = rng.uniform(w / 2, 1 - w / 2)
            gts[b, g] = torch.tensor([c, w])
            gt_mask[b, g] = True
    out = assign_atss(anchors, mask, level_lengths(140, [1, 2, 4, 8, 16]), gts, gt_mask, 9)
    for b in range(4):
        assert out["assigned_gt"][b].tolist() == _atss_reference(
            anchors[b], mask[b], levels, gts[b], gt_mask[b], 9
        )
    # every GT gets at least one positive anchor
    for b in range(4):
        got = set(out["assigned_gt"][b].tolist()) - {-1}
        assert got == set(range(int(gt_mask[b].sum())))


def test_atss_without_gt_is_all_negative():
    anchors, mask, levels = make_anchors(torch.tensor([8]), 8, [1, 2], 4.0)
    out = assign_atss(anchors, mask, [8, 4], torch.zeros(1, 0, 2), torch.zeros(1, 0, dtype=torch.bool))
    assert (out["assigned_gt"] == -1).all() and out["target_spans"].abs().sum() == 0
    # padded GT slots without any real GT: the general path (no host check of the mask) gives the same, even
    # where the padding holds spans that would be assigned if they were real
    garbage = torch.tensor([[[0.5, 0.4], [0.2, 0.1]]])
    padded = assign_atss(anchors, mask, [8, 4], garbage, torch.zeros(1, 2, dtype=torch.bool))
    for key, value in out.items():
        assert torch.equal(padded[key], value), key


def test_atss_level_sizes_must_cover_the_anchors():
    anchors, mask, _ = make_anchors(torch.tensor([8]), 8, [1, 2], 4.0)
    with pytest.raises(ValueError, match=r"level_sizes \[8, 3\] do not add up to the 12 anchors"):
        assign_atss(anchors, mask, [8, 3], torch.tensor([[[0.5, 0.2]]]), torch.ones(1, 1, dtype=torch.bool))


# ------------------------------------------------------------------------------------------- query groups
def test_denoising_group_noise_ranges_and_layout():
    torch.manual_seed(0)
    gts = torch.tensor([[[0.5, 0.4], [0.2, 0.1]], [[0.7, 0.2], [0.0, 0.0]]])
    gt_mask = torch.tensor([[True, True], [True, False]])
    embed = torch.nn.Embedding(2, 8)
    group = build_denoising_group(
        gts, gt_mask, embed, num_groups=3, box_noise_scale=0.4, label_noise_ratio=0.5,
        sampling_seeds=torch.tensor([3.0, 517.25]),
    )  # fmt: skip
    assert group.content.shape == (2, 12, 8) and group.references.shape == (2, 12, 2)
    assert group.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert group.valid[1].tolist() == [True, False] * 6
    assert group.is_positive[0].tolist() == [True, True, False, False] * 3
    shift = (span_cw_to_se(group.references) - span_cw_to_se(group.target_spans)).abs()  # (B, Q, 2)
    bound = 0.4 * group.target_spans[..., 1:] / 2
    pos = group.is_positive & group.valid
    neg = ~group.is_positive & group.valid
    assert (shift[pos] < bound.expand_as(shift)[pos] + 1e-6).all()
    # negatives: |noise| in [1, 2) * 0.4 * w / 2 unless clamped at the video border
    border = (span_cw_to_se(group.references) <= 1e-6) | (span_cw_to_se(group.references) >= 1 - 1e-6)
    inner = neg[..., None] & ~border
    assert (shift[inner] >= bound.expand_as(shift)[inner] - 1e-6).all()
    assert (shift[inner] < 2 * bound.expand_as(shift)[inner] + 1e-6).all()


def test_denoising_noise_draws_each_endpoint_s_magnitude_on_its_own():
    # DINO draws the noise per coordinate: one magnitude for both endpoints made every denoising query a pure
    # shift or a pure symmetric rescale of its GT (|start shift| == |end shift|)
    gts = torch.tensor([[[0.5, 0.2]]]).expand(1, 1, 2)
    group = build_denoising_group(
        gts, torch.ones(1, 1, dtype=torch.bool), torch.nn.Embedding(2, 8), num_groups=200,
        box_noise_scale=0.4, label_noise_ratio=0.0, sampling_seeds=torch.tensor([11.0]),
    )  # fmt: skip
    shift = (span_cw_to_se(group.references) - span_cw_to_se(group.target_spans)).abs()[0]  # (2G, 2)
    positive = group.is_positive[0]
    start, end = shift[positive, 0], shift[positive, 1]  # inside the video: no clamping
    assert (start - end).abs().max() > 0.01
    # independent U[0, 1) draws: |u_s - u_e| has mean 1/3 of the range (0.4 * 0.2 / 2 = 0.04)
    assert abs(float((start - end).abs().mean()) / 0.04 - 1 / 3) < 0.05


def test_self_attention_mask_isolates_groups():
    # two DN groups of 2, 2 primary, 2 ATSS-positive (the last one padding)
    ids = torch.tensor([0, 0, 1, 1, -1, -1, -2, -2])
    valid = torch.tensor([[True, True, True, False, True, True, True, False]])
    blocked = build_self_attention_blocked(ids, valid)[0]
    allowed = (~blocked).int().tolist()
    assert allowed == [
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],  # a padded slot is never a key for others (its own row is ignored)
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
    ]


def test_atss_positive_group_takes_every_positive_and_pads_with_negatives():
    torch.manual_seed(0)
    anchors, mask, levels = make_anchors(torch.tensor([10, 10]), 10, [1], 1.0)
    assigned = torch.full((2, 10), -1)
    assigned[0, [2, 3, 4]] = 0
    assigned[1, 7] = 0
    assignment = {
        "is_positive": assigned >= 0,
        "target_spans": torch.where((assigned >= 0)[..., None], torch.tensor([0.35, 0.3]), torch.zeros(2)),
    }
    feats = torch.randn(2, 10, 8)
    proj = torch.nn.Linear(8, 8)
    seeds = torch.tensor([3.0, 7.0])
    group = build_atss_positive_group(
        assignment, anchors, mask, levels, seeds, feats, proj, proj, 8, 10000.0, 100
    )
    assert group.content.shape == (2, 3, 8) and group.valid.all()
    assert group.is_positive.sum(1).tolist() == [3, 1]
    # references are the anchors themselves (clipped), positives target their GT, negatives are no-object
    assert torch.allclose(
        group.references[0][group.is_positive[0]].sort(0).values[:, 0], torch.tensor([0.25, 0.35, 0.45])
    )
    assert torch.allclose(group.target_spans[1][~group.is_positive[1]], torch.zeros(2, 2))
    limited = build_atss_positive_group(
        assignment, anchors, mask, levels, seeds, feats, proj, proj, 8, 10000.0, 2
    )
    assert limited.is_positive.sum(1).tolist() == [2, 1]
    # the subset is a function of each sample's seed only: the same seed, the same queries
    again = build_atss_positive_group(
        assignment, anchors, mask, levels, seeds, feats, proj, proj, 8, 10000.0, 2
    )
    assert torch.equal(again.references, limited.references)
    subsets = {
        tuple(build_atss_positive_group(assignment, anchors, mask, levels, torch.tensor([s, 7.0]), feats, proj,
                                        proj, 8, 10000.0, 2).references[0, :, 0].tolist())
        for s in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    }  # fmt: skip
    assert len(subsets) > 1  # other seeds choose other positives


# ------------------------------------------------------------------------------------------- selector / decoder
def test_selector_cycles_when_fewer_candidates_than_queries():
    cfg = SGDetrConfig(**TINY)
    det = SGDetrHybridDetector(cfg).eval()
    anchors, mask, _ = make_anchors(torch.tensor([1]), 1, cfg.pyramid_strides, cfg.anchor_scale)
    _, index, _ = det.selector(torch.randn(1, anchors.shape[1], 32), anchors, mask)
    index = index[0].tolist()
    assert len(index) == 25 and len(set(index[:5])) == 5
    assert index == [index[i % 5] for i in range(25)]


def _decoder_inputs(num_primary=4, num_dn=6, length=9, d=32):
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, length, d, generator=g)
    pos = torch.randn(2, length, d, generator=g)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, 6:] = False
    content = torch.randn(2, num_dn + num_primary, d, generator=g)
    refs = torch.rand(2, num_dn + num_primary, 2, generator=g) * 0.8 + 0.1
    ids = torch.tensor([0, 0, 0, 1, 1, 1] + [-1] * num_primary)
    valid = torch.ones(2, num_dn + num_primary, dtype=torch.bool)
    valid[1, 2] = False
    return memory, pos, mask, content, refs, ids, valid


def test_decoder_dn_queries_do_not_leak_into_primary_outputs():
    torch.manual_seed(0)
    dec = SGDetrDecoder(SGDetrConfig(**TINY)).eval()
    for head in (dec.span_head.layers[-1],):  # non-zero span head so that refinement is exercised
        torch.nn.init.normal_(head.weight, std=0.1)
    memory, pos, mask, content, refs, ids, valid = _decoder_inputs()
    blocked = build_self_attention_blocked(ids, valid)
    with torch.no_grad():
        full = dec(content, refs, memory, pos, mask, blocked)
        perturbed_content = content.clone()
        perturbed_content[:, :6] += 5 * torch.randn(2, 6, 32)
        perturbed_refs = refs.clone()
        perturbed_refs[:, :6] = torch.rand(2, 6, 2) * 0.5 + 0.2
        perturbed = dec(perturbed_content, perturbed_refs, memory, pos, mask, blocked)
        alone = dec(content[:, 6:], refs[:, 6:], memory, pos, mask, None)
    for key in ("logits", "spans", "iou_logits"):  # (B, num_layers, Q, ...)
        a, b, c = full[key], perturbed[key], alone[key]
        torch.testing.assert_close(a[:, :, 6:], b[:, :, 6:], atol=1e-5, rtol=0)
        torch.testing.assert_close(a[:, :, 6:], c, atol=1e-5, rtol=0)
    assert not torch.allclose(full.logits[:, :, :6], perturbed.logits[:, :, :6])  # the DN outputs did change


def test_decoder_first_prediction_is_the_reference_at_init():
    dec = SGDetrDecoder(SGDetrConfig(**TINY))
    torch.nn.init.zeros_(dec.span_head.layers[-1].weight)
    torch.nn.init.zeros_(dec.span_head.layers[-1].bias)
    memory, pos, mask, content, refs, _, _ = _decoder_inputs()
    out = dec.eval()(content, refs, memory, pos, mask)
    for layer in range(out.spans.shape[1]):  # zero span head: every layer reproduces the initial reference
        torch.testing.assert_close(out.spans[:, layer], refs, atol=1e-5, rtol=0)


def test_decoder_look_forward_twice_reaches_this_and_the_previous_delta_only():
    """DINO's look-forward-twice: layer l's span is sigma(delta_l + logit(refined_(l-1))), where refined_(l-1)
    is built on layer l-1's *detached* input reference. So layer l's loss reaches delta_l and delta_(l-1)
    with the same gradient (the two add inside one sigmoid) and no earlier delta (an undetached chain reaches
    delta_1 from every layer at full strength; a fully detached one never reaches delta_(l-1))."""
    torch.manual_seed(0)
    dec = SGDetrDecoder(SGDetrConfig(**TINY)).train()  # TINY has no dropout
    torch.nn.init.normal_(dec.span_head.layers[-1].weight, std=0.1)  # non-zero deltas
    deltas = []

    def keep_delta(module, inputs, output):
        output.retain_grad()
        deltas.append(output)

    handle = dec.span_head.register_forward_hook(keep_delta)
    memory, pos, mask, content, refs, _, _ = _decoder_inputs()
    out = dec(content, refs, memory, pos, mask)
    handle.remove()
    assert len(deltas) == 3 == out.spans.shape[1]
    weights = torch.randn(
        out.spans.shape[0], out.spans.shape[2], 2, generator=torch.Generator().manual_seed(1)
    )
    for layer in range(3):
        if layer > 0:  # the value: this layer's delta applied to the previous layer's span
            expected = torch.sigmoid(deltas[layer] + torch.logit(out.spans[:, layer - 1].detach()))
            torch.testing.assert_close(out.spans[:, layer], expected, atol=1e-5, rtol=0)
        grads = torch.autograd.grad(
            (out.spans[:, layer] * weights).sum(), deltas, retain_graph=True, allow_unused=True
        )
        assert grads[layer] is not None and grads[layer].abs().sum() > 0
        for earlier in range(layer - 1):
            assert grads[earlier] is None or not grads[earlier].any(), (layer, earlier)
        if layer > 0:
            torch.testing.assert_close(grads[layer - 1], grads[layer], atol=1e-6, rtol=1e-4)


def test_detr_baseline_decodes_learned_queries_over_the_encoder_output():
    """use_hybrid_detector=False (Table 2 rows (a)-(d)): no pyramid, anchors or selector; the primary
    queries start from learned references sigmoid(E_ref), the same for every video, and the reference
    embedding is trained (through the first prediction and the positional queries)."""
    torch.manual_seed(0)
    det = SGDetrHybridDetector(SGDetrConfig(**TINY, use_hybrid_detector=False)).train()
    assert det.neck is None and det.selector is None and det.atss_head is None
    names = {name.split(".")[0] for name, _ in det.named_parameters()}
    assert names == {"learned_queries", "decoder", "dn_label_embed"}
    torch.nn.init.zeros_(det.decoder.span_head.layers[-1].weight)  # zero deltas: spans = references
    torch.nn.init.zeros_(det.decoder.span_head.layers[-1].bias)
    mask = torch.arange(20)[None] < torch.tensor([[20], [7]])
    out = det(torch.randn(2, 20, 32), mask, torch.randn(2, 20, 32))
    learned = torch.sigmoid(det.learned_queries.reference_logits.weight)
    assert out.anchors is None and out.selector is None and out.atss is None and out.atss_queries is None
    for layer in range(3):
        torch.testing.assert_close(out.decoder.spans[:, layer], learned.expand(2, -1, -1).detach())
    out.decoder.spans[:, 0, :, 0].sum().backward()
    assert det.learned_queries.reference_logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_clips", [1, 6, 75])
def test_detector_training_outputs_shapes(num_clips):
    torch.manual_seed(0)
    cfg = SGDetrConfig(**TINY)
    det = SGDetrHybridDetector(cfg).train()
    lengths = torch.tensor([num_clips, max(1, num_clips // 2)])
    mask = torch.arange(num_clips)[None] < lengths[:, None]
    feats = torch.randn(2, num_clips, 32) * mask[..., None]
    pos = torch.randn(2, num_clips, 32)
    gts = torch.tensor([[[0.5, 0.3], [0.2, 0.1]], [[0.6, 0.5], [0.0, 0.0]]])
    labels = [{"spans": gts[0], "saliency_scores": torch.ones(num_clips)},
              {"spans": gts[1, :1], "saliency_scores": torch.ones(num_clips)}]  # fmt: skip
    out = det(feats, mask, pos, prepare_targets(labels, feats, mask, num_margin_pairs=2))
    num_anchors = sum(-(-num_clips // s) for s in cfg.pyramid_strides)
    assert out.anchors.shape == (2, num_anchors, 2)
    assert out.atss.logits.shape == (2, num_anchors) and out.atss.assigned_gt.shape == (2, num_anchors)
    assert out.decoder.spans.shape == (2, 3, 25, 2)  # (B, num_layers, K, 2)
    assert out.selector.logits.shape == (2, 25, 2)
    dn = out.denoising
    assert dn.target_spans.shape == (2, 5 * 2 * 2, 2) and dn.iou_logits.shape == (2, 3, 20)
    co = out.atss_queries
    assert co.is_positive.any(1).all()  # every video with a GT has ATSS-positive queries
    assert (co.spans.shape[0], co.spans.shape[2]) == co.valid.shape  # (B, num_layers, Q, 2) vs (B, Q)

"""The SG-DETR hybrid detector (paper §3.5-3.6: the ATSS + DINO-DETR detector with IoU scoring).

Input: the globally amplified video features ``F_g`` (B, L, d) with the video mask and the video positional
encoding. Components, all vectorised over the batch (loops only over pyramid levels, decoder layers and
query groups):

- temporal pyramid neck (strides 1..16, stride-2 convs + padding-aware GroupNorm);
- 1-D anchors (one per position, width ``anchor_scale * stride`` clips) and the ATSS head (classification,
  delta-coded spans, centerness); :func:`assign_atss` is the 1-D ATSS assigner with the fallback described at :func:`assign_atss`;
- DINO-style query selection (top-``K`` pyramid positions, cycling when there are fewer candidates);
- a DAB/conditional decoder with look-forward-twice refinement and shared class / span / IoU heads;
- training-only query groups: DINO denoising groups and Co-DETR ATSS-positive queries, isolated from the
  primary queries by the self-attention mask.

Without the hybrid detector (``use_hybrid_detector=False``, Table 2 rows (a)-(d)) only the decoder stays,
fed by learned queries (:class:`SGDetrLearnedQueries`) and the denoising groups: the DETR-based baseline.

Spans are normalised ``(center, width)`` relative to ``T_b = L_b * clip_length`` unless a name says ``se``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .layers_sgdetr import (
    SGDetrDropout,
    SGDetrFeedForward,
    SGDetrMaskedGroupNorm,
    SGDetrMLP,
    SGDetrQueryEmbedding,
    attend,
    conv1d_channels_last,
    conv1d_on_rows,
    masked_group_norm,
    merge_heads,
    project_each,
    split_heads,
)
from .spans import (
    clamp_spans_cw,
    inverse_sigmoid,
    pairwise_span_iou,
    sine_embed_spans_cw,
    span_cw_to_se,
    span_se_to_cw,
)
from .targets_sgdetr import SGDetrTargets

_ATSS_MAX_LOG_RATIO = math.log(1000.0 / 16)
# group ids used by the decoder self-attention mask: DN groups are 0..G-1
_PRIMARY_GROUP = -1
_ATSS_GROUP = -2


# ----------------------------------------------------------------------------------------------- outputs
@dataclass
class SGDetrSpanPredictions(ModelOutput):
    """Class, span and IoU predictions of a set of queries. The leading dims are ``(B, num_layers)`` for the
    decoder's per-layer predictions and ``(B,)`` for the query selector's proposals.

    logits ``(..., Q, 2)``: class 0 = moment, 1 = no-object. spans ``(..., Q, 2)``: normalised (center, width).
    iou_logits ``(..., Q)``: IoU-head logits, None without the IoU head (and for the selector).
    """

    logits: torch.FloatTensor | None = None
    spans: torch.FloatTensor | None = None
    iou_logits: torch.FloatTensor | None = None


@dataclass
class SGDetrQueryGroupOutput(ModelOutput):
    """A training query group with fixed targets (DINO denoising or Co-DETR ATSS-positive queries).

    logits ``(B, num_layers, Q, 2)``, spans ``(B, num_layers, Q, 2)``, iou_logits ``(B, num_layers, Q)`` or None:
    the decoder's predictions for the group. target_spans ``(B, Q, 2)``: the window each positive query must
    reconstruct. is_positive ``(B, Q)`` bool: classified as moment and regressed; the other valid slots are
    no-object. valid ``(B, Q)`` bool: real slots (padding slots take no part in any loss).
    """

    logits: torch.FloatTensor | None = None
    spans: torch.FloatTensor | None = None
    iou_logits: torch.FloatTensor | None = None
    target_spans: torch.FloatTensor | None = None
    is_positive: torch.BoolTensor | None = None
    valid: torch.BoolTensor | None = None


@dataclass
class SGDetrATSSOutput(ModelOutput):
    """The auxiliary ATSS head over every pyramid anchor (paper eq. 13).

    logits ``(B, A)``: foreground logits. spans ``(B, A, 2)``: decoded (center, width), not clipped (what the
    losses read; ``SGDetrOutput.atss_spans`` is clipped to [0, 1]).
    centerness ``(B, A)``: centerness logits. With targets (training) also the ATSS assignment:
    assigned_gt ``(B, A)`` long (-1 = negative or padding), target_spans ``(B, A, 2)`` and
    centerness_targets ``(B, A)`` (0 for negatives).
    """

    logits: torch.FloatTensor | None = None
    spans: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    assigned_gt: torch.LongTensor | None = None
    target_spans: torch.FloatTensor | None = None
    centerness_targets: torch.FloatTensor | None = None


@dataclass
class SGDetrDetectorOutput(ModelOutput):
    """Outputs of [`SGDetrHybridDetector`].

    anchors ``(B, A, 2)``: one anchor per pyramid position, (center, width), not clipped. anchor_mask ``(B, A)``
    bool: valid positions. anchor_levels ``(A,)`` long: pyramid level of each anchor. All three None without
    the hybrid detector (no pyramid).
    decoder: the primary queries' [`SGDetrSpanPredictions`] of every decoder layer, ``(B, num_layers, K, ...)``.
    selector: the query selector's top-``K`` proposals, ``(B, K, ...)`` (eq. 12's two-stage term); None
        without the hybrid detector (learned queries).
    atss: [`SGDetrATSSOutput`], None without the ATSS head.
    denoising / atss_queries: [`SGDetrQueryGroupOutput`] of the DINO denoising groups and the Co-DETR
        ATSS-positive queries; only with targets, None when switched off.
    """

    anchors: torch.FloatTensor | None = None
    anchor_mask: torch.BoolTensor | None = None
    anchor_levels: torch.LongTensor | None = None
    decoder: SGDetrSpanPredictions | None = None
    selector: SGDetrSpanPredictions | None = None
    atss: SGDetrATSSOutput | None = None
    denoising: SGDetrQueryGroupOutput | None = None
    atss_queries: SGDetrQueryGroupOutput | None = None


# ----------------------------------------------------------------------------------------------- anchors
def level_lengths(length: int, strides: list[int]) -> list[int]:
    """Padded length of every pyramid level: ``ceil(L / stride)``."""
    return [-(-length // s) for s in strides]


def make_anchors(
    video_lengths: Tensor, padded_length: int, strides: list[int], anchor_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One anchor per pyramid position (the ATSS branch of §3.5).

    At level stride ``s``, position ``j``: center ``(s * j + 0.5) / L_b``, width ``anchor_scale * s / L_b``.
    The center is where the features of that position are centred: each kernel-3, stride-2, padding-1
    convolution of :class:`SGDetrPyramidNeck` centres output ``j`` on input ``2j``, so level position ``j``
    is centred on clip ``s * j``, whose center is ``s * j + 0.5`` clips (clip ``i`` spans ``[i, i + 1] / L_b``
    in the normalised frame of the spans).

    Args:
        video_lengths: ``(B,)`` valid clips ``L_b``. padded_length: ``L``.
    Returns:
        anchors ``(B, A, 2)`` (center, width), normalised and **not clipped** (clip with
        :func:`clamp_spans_cw` for IoU), anchor_mask ``(B, A)`` bool (valid positions ``j < ceil(L_b/s)``),
        anchor_levels ``(A,)`` long level index; ``A = sum_k ceil(L / s_k)``.
    """
    device = video_lengths.device
    lengths = video_lengths.to(torch.float32)[:, None]
    centers, widths, masks, levels = [], [], [], []
    for level, (stride, size) in enumerate(zip(strides, level_lengths(padded_length, strides))):
        pos = torch.arange(size, device=device, dtype=torch.float32)[None, :]
        centers.append((pos * stride + 0.5) / lengths)
        widths.append((anchor_scale * stride / lengths).expand(-1, size))
        masks.append(pos < torch.div(video_lengths[:, None] + stride - 1, stride, rounding_mode="floor"))
        levels.append(torch.full((size,), level, dtype=torch.long, device=device))
    anchors = torch.stack((torch.cat(centers, 1), torch.cat(widths, 1)), dim=-1)
    return anchors, torch.cat(masks, 1), torch.cat(levels)


def decode_atss_deltas(anchors: Tensor, deltas: Tensor, stds: list[float]) -> Tensor:
    """ATSS delta decoding (§3.5): ``c = c_a + std_c * d_c * w_a``, ``w = w_a * exp(min(std_w * d_w, log(1000/16)))``.
    ``(B, A, 2)`` anchors (center, width) and deltas -> ``(B, A, 2)`` (center, width), **not clipped**: the
    losses read it as it is (a span clipped to [0, 1] would give a prediction outside the video no regression
    gradient, and a zero-length span); outputs are clipped (``SGDetrOutput.atss_spans``, post-processing)."""
    anchors = anchors.float()
    deltas = deltas.float()
    center = anchors[..., 0] + stds[0] * deltas[..., 0] * anchors[..., 1]
    width = anchors[..., 1] * torch.exp((stds[1] * deltas[..., 1]).clamp(max=_ATSS_MAX_LOG_RATIO))
    return torch.stack((center, width), dim=-1)


# ----------------------------------------------------------------------------------------------- assignment
@torch.no_grad()
def assign_atss(
    anchors: Tensor,
    anchor_mask: Tensor,
    level_sizes: Sequence[int],
    gt_spans: Tensor,
    gt_mask: Tensor,
    topk: int = 9,
) -> dict[str, Tensor]:
    """1-D ATSS assignment (§3.5), vectorised over the batch and the ground truths.

    For each GT: the ``min(topk, n_level)`` valid anchors of each level whose centers are closest to the GT
    center form the candidates; threshold = mean + unbiased std of their IoUs (std 0 with one candidate);
    a candidate is positive if ``IoU >= threshold`` and its center lies strictly inside the GT. An anchor
    positive for several GTs keeps the one with the highest IoU. Fallback: a GT left without positives takes
    its highest-IoU candidate, unless that anchor is already positive for another GT.

    Args:
        anchors: ``(B, A, 2)`` (center, width), unclipped (clipped here for IoU). anchor_mask: ``(B, A)`` bool.
        level_sizes: anchors per level, in the order of ``anchors`` (:func:`level_lengths` of the padded length;
            given on the host, so that the per-level loop reads no tensor).
        gt_spans: ``(B, M, 2)`` (center, width). gt_mask: ``(B, M)`` bool.
    Returns:
        ``assigned_gt`` ``(B, A)`` long (-1 = negative or padding), ``target_spans`` ``(B, A, 2)`` (zeros for
        negatives), ``centerness_targets`` ``(B, A)`` (``sqrt(min(l, r) / max(l, r))``, 0 for negatives),
        ``is_positive`` ``(B, A)`` bool. All fp32.
    """
    anchors = anchors.float()
    gt_spans = gt_spans.float()
    batch, num_anchors = anchor_mask.shape
    num_gt = gt_spans.shape[1]
    device = anchors.device
    if sum(level_sizes) != num_anchors:
        raise ValueError(f"level_sizes {list(level_sizes)} do not add up to the {num_anchors} anchors.")
    if num_gt == 0:
        return {
            "assigned_gt": torch.full((batch, num_anchors), -1, dtype=torch.long, device=device),
            "target_spans": torch.zeros(batch, num_anchors, 2, device=device),
            "centerness_targets": torch.zeros(batch, num_anchors, device=device),
            "is_positive": torch.zeros(batch, num_anchors, dtype=torch.bool, device=device),
        }
    gt_se = span_cw_to_se(gt_spans)
    iou = pairwise_span_iou(gt_se, span_cw_to_se(anchors).clamp(0.0, 1.0))[0]  # (B, M, A)
    pair_valid = gt_mask[:, :, None] & anchor_mask[:, None, :]
    dist = (anchors[:, None, :, 0] - gt_spans[:, :, None, 0]).abs().masked_fill(~pair_valid, math.inf)

    candidates = torch.zeros(batch, num_gt, num_anchors, dtype=torch.bool, device=device)
    start = 0
    for count in level_sizes:  # loop over pyramid levels only
        level_dist = dist[..., start : start + count]
        k = min(topk, count)
        top_dist, top_idx = level_dist.topk(k, dim=-1, largest=False)
        candidates[..., start : start + count].scatter_(-1, top_idx, torch.isfinite(top_dist))
        start += count

    n_cand = candidates.sum(-1)  # (B, M)
    cand_f = candidates.float()
    mean = (iou * cand_f).sum(-1) / n_cand.clamp_min(1)
    var = (((iou - mean[..., None]) * cand_f) ** 2).sum(-1) / (n_cand - 1).clamp_min(1)
    std = torch.where(n_cand > 1, var.sqrt(), torch.zeros_like(var))
    threshold = mean + std
    center = anchors[:, None, :, 0]
    inside = (center > gt_se[:, :, None, 0]) & (center < gt_se[:, :, None, 1])
    positive = candidates & (iou >= threshold[..., None]) & inside

    # fallback: a GT without positives takes its best candidate if no other GT holds that anchor
    best_anchor = iou.masked_fill(~candidates, -1.0).argmax(-1)  # (B, M)
    needs = gt_mask & ~positive.any(-1) & (n_cand > 0)
    taken = positive.any(1)  # (B, A)
    free = ~taken.gather(1, best_anchor)
    is_best = best_anchor[..., None] == torch.arange(num_anchors, device=device)  # (B, M, A)
    fallback = is_best & (needs & free)[..., None]
    positive = positive | fallback

    is_positive = positive.any(1)
    best_gt = iou.masked_fill(~positive, -1.0).argmax(1)  # (B, A)
    assigned = torch.where(is_positive, best_gt, torch.full_like(best_gt, -1))
    targets = gt_spans.gather(1, best_gt[..., None].expand(-1, -1, 2)) * is_positive[..., None]
    target_se = span_cw_to_se(targets)
    left = (anchors[..., 0] - target_se[..., 0]).clamp_min(0)
    right = (target_se[..., 1] - anchors[..., 0]).clamp_min(0)
    centerness = torch.sqrt(torch.minimum(left, right) / torch.maximum(left, right).clamp_min(1e-12))
    return {
        "assigned_gt": assigned,
        "target_spans": targets,
        "centerness_targets": centerness * is_positive,
        "is_positive": is_positive,
    }


# ----------------------------------------------------------------------------------------------- modules
class SGDetrPyramidNeck(nn.Module):
    """``P1 = F_g``; ``P_{k+1} = ReLU(GN(Conv1d_{k3,s2}(P_k)))`` with padding zeroed at every level (the temporal
    pyramid of §3.5). Channel-last; the convolutions run as matmuls (:func:`conv1d_channels_last`)."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.strides = list(config.pyramid_strides)
        self.convs = nn.ModuleList(
            nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1) for _ in self.strides[1:]
        )
        self.norms = nn.ModuleList(
            SGDetrMaskedGroupNorm(config.group_norm_groups, d) for _ in self.strides[1:]
        )

    def forward(self, features: Tensor, video_lengths: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(B, L, d)`` -> per level ``(B, L_k, d)`` features (zero at padding) and ``(B, L_k)`` bool masks."""
        length = features.shape[1]
        mask = torch.arange(length, device=features.device)[None, :] < video_lengths[:, None]
        x = features * mask[..., None].to(features.dtype)
        feats, masks = [x], [mask]
        for stride, conv, norm in zip(self.strides[1:], self.convs, self.norms):
            x = conv1d_channels_last(x, conv.weight, conv.bias, stride=2)
            valid = torch.div(video_lengths + stride - 1, stride, rounding_mode="floor")
            mask = torch.arange(x.shape[1], device=x.device)[None, :] < valid[:, None]
            x = F.relu(norm(x, mask))
            feats.append(x)
            masks.append(mask)
        return feats, masks


class SGDetrATSSHead(nn.Module):
    """Shared 1-D ATSS head: one conv per tower (Co-DETR ``stacked_convs=1``), per-level regression scales.
    Initialised as in ATSS: every conv N(0, 0.01), the classification bias at the prior ``cls_prior``.

    All levels of the batch run in one pass: the levels are packed into one sequence with a zero row before,
    between and after them (the kernel-3 convolutions then see exactly each level's own zero padding), the
    convolutions are shifted GEMMs on that packed matrix (:func:`conv1d_on_rows`), the two towers one
    convolution and one GroupNorm call (per-level statistics), the three output convolutions one more."""

    cls_prior = 0.01

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.cls_conv = nn.Conv1d(d, d, 3, padding=1)
        self.cls_norm = SGDetrMaskedGroupNorm(config.group_norm_groups, d)
        self.reg_conv = nn.Conv1d(d, d, 3, padding=1)
        self.reg_norm = SGDetrMaskedGroupNorm(config.group_norm_groups, d)
        self.cls_out = nn.Conv1d(d, 1, 3, padding=1)
        self.reg_out = nn.Conv1d(d, 2, 3, padding=1)
        self.ctr_out = nn.Conv1d(d, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(config.num_pyramid_levels))

    def forward(self, feats: list[Tensor], masks: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Per level ``(B, L_k, d)`` -> logits ``(B, A)``, deltas ``(B, A, 2)``, centerness logits ``(B, A)``."""
        batch, _, d = feats[0].shape
        device = feats[0].device
        num_levels = len(feats)
        # packed rows per sample: [gap, level 0, gap, level 1, ..., gap]; the level of every packed row and the
        # row of every anchor (built from the static sizes: no data-dependent shapes, no host sync)
        sizes = [x.shape[1] for x in feats]
        starts = [sum(sizes[:k]) + k + 1 for k in range(num_levels)]
        anchor_rows = torch.cat([torch.arange(o, o + n, device=device) for o, n in zip(starts, sizes)])
        row_levels = torch.cat(
            [torch.full((n + 1,), k, device=device) for k, n in enumerate(sizes)]
            + [torch.full((1,), num_levels - 1, device=device)]
        )
        anchor_levels = row_levels[anchor_rows]
        gap, gap_mask = feats[0].new_zeros(batch, 1, d), masks[0].new_zeros(batch, 1)
        packed = torch.cat([t for x in feats for t in (gap, x)] + [gap], dim=1)
        packed_mask = torch.cat([t for m in masks for t in (gap_mask, m)] + [gap_mask], dim=1)
        length = packed.shape[1]

        towers = conv1d_on_rows(
            packed.flatten(0, 1),
            (self.cls_conv.weight, self.reg_conv.weight),
            torch.cat((self.cls_conv.bias, self.reg_conv.bias)),
        ).view(batch, length, 2 * d)
        towers = masked_group_norm(
            towers, packed_mask, self.cls_norm.num_groups + self.reg_norm.num_groups,
            torch.cat((self.cls_norm.weight, self.reg_norm.weight)),
            torch.cat((self.cls_norm.bias, self.reg_norm.bias)),
            self.cls_norm.eps, row_levels, num_levels,
        )  # fmt: skip
        towers = F.relu(towers)  # zero at gaps and padding (the norm zeroes them)

        # outputs [cls | reg (2) | ctr]: cls reads the classification tower, reg and ctr the regression tower
        zeros = self.cls_out.weight.new_zeros(3, d, 3)
        out_weights = (
            torch.cat((self.cls_out.weight, zeros[:1]), 1),
            torch.cat((zeros[:2], self.reg_out.weight), 1),
            torch.cat((zeros[:1], self.ctr_out.weight), 1),
        )  # (C_out_j, 2d, 3), zero on the tower each does not read
        out_bias = torch.cat((self.cls_out.bias, self.reg_out.bias, self.ctr_out.bias))
        out = conv1d_on_rows(towers.flatten(0, 1), out_weights, out_bias).view(batch, length, 4)
        out = out[:, anchor_rows].float()
        deltas = out[..., 1:3] * self.scales[anchor_levels][:, None].float()
        return out[..., 0], deltas, out[..., 3]


class SGDetrQuerySelector(nn.Module):
    """DINO mixed query selection over all valid pyramid positions (§3.5)."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.num_queries = config.num_queries
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.class_head = nn.Linear(d, 2)
        self.span_head = SGDetrMLP(d, d, 2, 3, zero_init_last=True)
        self.content = SGDetrQueryEmbedding(config.num_queries, d)

    def forward(
        self, features: Tensor, anchors: Tensor, anchor_mask: Tensor
    ) -> tuple[SGDetrSpanPredictions, Tensor, Tensor]:
        """features ``(B, A, d)``, anchors ``(B, A, 2)`` (center, width), anchor_mask ``(B, A)``.

        Returns the selected proposals (logits and spans ``(B, K, 2)``, for the selector loss), their anchor
        ``index`` ``(B, K)`` and the decoder's content queries ``(B, K, d)``; the decoder's references are the
        proposals' spans, detached.
        """
        z = self.norm(self.proj(features)) * anchor_mask[..., None].to(features.dtype)
        logits = self.class_head(z).float()
        score = torch.softmax(logits, -1)[..., 0].masked_fill(~anchor_mask, -1.0)
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        # fewer candidates than queries: cycle through the ranked candidates (duplicates become background)
        num_valid = anchor_mask.sum(1, keepdim=True).clamp_min(1)
        slot = torch.arange(self.num_queries, device=features.device)[None, :] % num_valid
        index = order.gather(1, slot)
        # the span head runs on the K selected positions only: the others' spans would be discarded
        selected_z = z.gather(1, index[..., None].expand(-1, -1, z.shape[-1]))
        selected_anchors = clamp_spans_cw(anchors.gather(1, index[..., None].expand(-1, -1, 2)))
        spans = torch.sigmoid(self.span_head(selected_z).float() + inverse_sigmoid(selected_anchors))
        proposals = SGDetrSpanPredictions(
            logits=logits.gather(1, index[..., None].expand(-1, -1, 2)), spans=spans
        )
        return proposals, index, self.content.weight[None].expand(features.shape[0], -1, -1)


class SGDetrQueryRows:
    """The decoder query slots a forward computes, ``needed`` ``(B, Q)`` bool (None: all of them).

    In training, the denoising group is padded to the batch's largest number of windows and the ATSS-positive
    group to its largest number of anchors: slots no loss reads (and no other query sees, as they are blocked
    as keys) would take a full pass through every decoder layer. The row-wise blocks (projections, norms,
    feed-forward, heads) run on the needed rows alone, packed as ``(R, ...)``; attention sees them in their
    ``(B, Q, ...)`` slots, the others zero. With every slot needed, both conversions return their input."""

    def __init__(self, needed: Tensor | None):
        self.shape = None if needed is None else needed.shape
        # the packed size is read on the host (training only): one synchronisation, in ``nonzero``
        index = None if needed is None else needed.flatten().nonzero()[:, 0]
        self.index = None if index is None or index.numel() == needed.numel() else index

    def pack(self, x: Tensor) -> Tensor:
        """``(B, Q, ...)`` -> ``(R, ...)``."""
        return x if self.index is None else x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: Tensor, fill: float = 0.0) -> Tensor:
        """``(R, ...)`` -> ``(B, Q, ...)``, ``fill`` in the slots not computed."""
        if self.index is None:
            return x
        full = x.new_full((self.shape.numel(), *x.shape[1:]), fill)
        return full.index_copy(0, self.index, x).view(*self.shape, *x.shape[1:])

    def unpack_layers(self, x: Tensor, fill: float = 0.0) -> Tensor:
        """Per-layer predictions ``(R, layers, ...)`` -> ``(B, layers, Q, ...)`` (given as that when unpacked)."""
        return x if self.index is None else self.unpack(x, fill).transpose(1, 2)


class SGDetrDecoderLayer(GradientCheckpointingLayer):
    """Conditional / DAB-DETR decoder layer (the CG-DETR / QD-DETR layer, §3.5)."""

    def __init__(self, config, is_first: bool):
        super().__init__()
        d = config.hidden_size
        self.config = config
        self.num_heads = config.num_attention_heads
        self.is_first = is_first
        # self-attention
        self.sa_q_content = nn.Linear(d, d)
        self.sa_q_pos = nn.Linear(d, d)
        self.sa_k_content = nn.Linear(d, d)
        self.sa_k_pos = nn.Linear(d, d)
        self.sa_v = nn.Linear(d, d)
        self.sa_out = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        # cross-attention (query/key positional parts concatenated per head)
        self.ca_q_content = nn.Linear(d, d)
        self.ca_q_pos = nn.Linear(d, d) if is_first else None  # used in the first layer only
        self.ca_q_sine = nn.Linear(d, d)
        self.ca_k_content = nn.Linear(d, d)
        self.ca_k_pos = nn.Linear(d, d)
        self.ca_v = nn.Linear(d, d)
        self.ca_out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ffn = SGDetrFeedForward(config)
        self.norm3 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = SGDetrDropout(config.dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        query_pos: Tensor,
        query_sine: Tensor,
        memory_blocked: Tensor,
        self_blocked: Tensor | None,
        rows: SGDetrQueryRows,
    ) -> Tensor:
        """``tgt`` / ``query_pos`` / ``query_sine``: the computed query rows (``rows``), ``(B, Q, d)`` or packed
        ``(R, d)``. ``memory`` / ``memory_pos`` ``(B, L, d)``: the video memory and its position embeddings."""
        h = self.num_heads

        def heads(x: Tensor) -> Tensor:
            return split_heads(rows.unpack(x), h)

        # self-attention among queries (group mask)
        q_content, k_content, v = project_each(tgt, self.sa_q_content, self.sa_k_content, self.sa_v)
        q_pos, k_pos = project_each(query_pos, self.sa_q_pos, self.sa_k_pos)
        out = attend(self, heads(q_content + q_pos), heads(k_content + k_pos), heads(v), self_blocked)
        tgt = self.norm1(tgt + self.dropout(self.sa_out(rows.pack(merge_heads(out)))))
        # cross-attention to the video memory
        q = self.ca_q_content(tgt)
        k, k_pos = self.ca_k_content(memory), self.ca_k_pos(memory_pos)
        if self.is_first:
            q = q + self.ca_q_pos(query_pos)
            k = k + k_pos
        # conditional DETR's score per head, [q; q_sine] . [k; k_pos] over the concatenated 2 * d_head dims, as
        # q . k plus the positional q_sine . k_pos given as a score bias: q, k and v keep d_head dims, which
        # SDPA's fused CPU kernel needs (the concatenation took its unfused path), and nothing is concatenated
        scaling = (2 * (self.config.hidden_size // h)) ** -0.5
        sine = heads(self.ca_q_sine(query_sine))
        position_bias = torch.matmul(sine * scaling, split_heads(k_pos, h).transpose(-1, -2))
        k, v = split_heads(k, h), split_heads(self.ca_v(memory), h)
        out = attend(self, heads(q), k, v, memory_blocked, position_bias, scaling)
        tgt = self.norm2(tgt + self.dropout(self.ca_out(rows.pack(merge_heads(out)))))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class SGDetrDecoder(nn.Module):
    """Three DAB/conditional layers with iterative span refinement and DINO look-forward-twice; class, span
    and IoU heads shared across layers (§3.5-3.6)."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.hidden_size = d
        self.temperature = config.position_temperature
        self.layers = nn.ModuleList(
            SGDetrDecoderLayer(config, i == 0) for i in range(config.num_decoder_layers)
        )
        self.ref_point_head = SGDetrMLP(d, d, d, 2)
        self.query_scale = SGDetrMLP(d, d, d, 2) if config.num_decoder_layers > 1 else None
        self.ref_width_head = SGDetrMLP(d, d, 1, 2)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.class_head = nn.Linear(d, 2)
        self.span_head = SGDetrMLP(d, d, 2, 3, zero_init_last=True)
        self.iou_head = SGDetrMLP(d, d, 1, 2) if config.use_iou_scoring else None

    def forward(
        self,
        content: Tensor,
        references: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_mask: Tensor,
        self_blocked: Tensor | None = None,
        query_needed: Tensor | None = None,
    ) -> SGDetrSpanPredictions:
        """content ``(B, Q, d)``, references ``(B, Q, 2)`` (the selector's proposals are detached, learned
        references are not), memory ``(B, L, d)`` with positions and
        mask ``(B, L)``; ``self_blocked`` ``(B, Q, Q)`` bool (True = blocked) or None (all queries see all);
        ``query_needed`` ``(B, Q)`` bool: the queries whose predictions are read (None: all), which must not
        be keys of any other query (:class:`SGDetrQueryRows`).

        Returns the predictions of every layer (fp32): logits ``(B, num_layers, Q, 2)``, spans
        ``(B, num_layers, Q, 2)``, iou_logits ``(B, num_layers, Q)`` or None; at queries not needed, 0 (logits,
        iou_logits) and the span (0.5, 0.5).
        """
        rows = SGDetrQueryRows(query_needed)
        memory_blocked = ~memory_mask[:, None, None, :]
        self_blocked = None if self_blocked is None else self_blocked[:, None]
        output = rows.pack(content)
        reference = rows.pack(references.float())
        previous_refined = None
        hidden_states, layer_spans = [], []
        for i, layer in enumerate(self.layers):
            sine = sine_embed_spans_cw(reference, self.hidden_size, self.temperature).to(output.dtype)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(output)
            width_scale = torch.sigmoid(self.ref_width_head(output)) / reference[..., 1:2].clamp_min(1e-4)
            sine = sine * width_scale.to(sine.dtype)
            output = layer(output, memory, memory_pos, query_pos, sine, memory_blocked, self_blocked, rows)
            hidden = self.norm(output)
            delta = self.span_head(hidden).float()
            # DINO look-forward-twice (deformable_transformer.py / dino.py): the refined span is built on the
            # layer's detached input reference, so it depends on this layer's delta only; the prediction is
            # built on the previous layer's refined span, not detached, so layer l's loss reaches delta_l and
            # delta_(l-1) and no earlier one. Both have the same value, as ``reference = refined.detach()``.
            refined = torch.sigmoid(delta + inverse_sigmoid(reference))
            if previous_refined is None:
                spans = refined
            else:
                spans = torch.sigmoid(delta + inverse_sigmoid(previous_refined))
            hidden_states.append(hidden)
            layer_spans.append(spans)
            previous_refined = refined
            reference = refined.detach()
        # the class and IoU heads run once over every layer: (B, layers, Q, d) or packed (R, layers, d)
        hidden = torch.stack(hidden_states, dim=1)
        return SGDetrSpanPredictions(
            logits=rows.unpack_layers(self.class_head(hidden).float()),
            spans=rows.unpack_layers(torch.stack(layer_spans, dim=1), fill=0.5),
            iou_logits=None
            if self.iou_head is None
            else rows.unpack_layers(self.iou_head(hidden)[..., 0].float()),
        )


# ----------------------------------------------------------------------------------------------- query groups
@dataclass
class QueryGroup:
    """Decoder queries of one group: content ``(B, Q, d)``, references ``(B, Q, 2)``, fixed targets ``(B, Q, 2)``
    and ``is_positive`` ``(B, Q)`` bool (None for the Hungarian-matched primary queries), ``valid`` ``(B, Q)``
    bool and the self-attention group id of every query ``(Q,)``."""

    content: Tensor
    references: Tensor
    target_spans: Tensor | None
    is_positive: Tensor | None
    valid: Tensor
    group_ids: Tensor


def build_denoising_group(
    gt_spans: Tensor,
    gt_mask: Tensor,
    label_embed: nn.Embedding,
    num_groups: int,
    box_noise_scale: float,
    label_noise_ratio: float,
    sampling_seeds: Tensor,
) -> QueryGroup:
    """DINO contrastive denoising queries (§3.5): ``G`` groups of one positive and one negative per GT.

    Endpoint noise ``± u * scale * w / 2``, sign and ``u`` drawn for each endpoint, with ``u ~ U[0, 1)``
    (positives) or ``U[1, 2)`` (negatives),
    clamped to [0, 1], minimum width 1e-3. Content ``E_label[moment]``, swapped to ``E_label[unknown]`` with
    probability ``0.5 * label_noise_ratio``. Slots of samples with fewer GTs are invalid. The noise of a
    sample is keyed by its ``sampling_seeds`` entry and (group, positive/negative, GT, endpoint), like the
    ATSS-positive subset (:func:`_hash_uniforms`): it does not depend on the other samples of the batch, so a
    global batch gets the same noise whatever the processes or micro-batches it is split into.

    A batch without any GT (``M = 0``: highlight-only data) gets one pair of slots per group, all invalid, with
    content ``E_label[moment]`` and reference (0.5, 0.5), drawn without the RNG: the criterion gives them connected
    zeros, so ``label_embed`` still receives a (zero) gradient and DDP needs no ``find_unused_parameters``.
    Invalid slots are blocked as keys, so the primary queries do not see them.
    """
    batch, num_gt = gt_mask.shape
    device = gt_spans.device
    if num_gt == 0:
        shape = (batch, 2 * num_groups)
        invalid = torch.zeros(shape, dtype=torch.bool, device=device)
        return QueryGroup(
            content=label_embed(torch.zeros(shape, dtype=torch.long, device=device)),
            references=torch.full((*shape, 2), 0.5, device=device),
            target_spans=torch.zeros(*shape, 2, device=device),
            is_positive=invalid,
            valid=invalid,
            group_ids=torch.arange(num_groups, device=device).repeat_interleave(2),
        )
    gt = gt_spans.float()
    gt_se = span_cw_to_se(gt)
    width = gt[..., 1]
    shape = (batch, num_groups, 2, num_gt)  # batch, group, (positive, negative), gt
    # one key per (group, positive/negative, gt, endpoint, draw: magnitude / sign / label flip), with strides
    # that do not depend on the batch's number of GTs
    index = (
        torch.arange(num_groups * 2, device=device).double()[:, None] * 1_000_003
        + torch.arange(num_gt, device=device).double()
    )
    key = (
        index.reshape(-1, 1) * 6 + torch.arange(6, device=device).double()
    ).flatten() + _DENOISING_KEY_OFFSET
    uniforms = _hash_uniforms(key, sampling_seeds).view(batch, num_groups, 2, num_gt, 2, 3)
    # a magnitude and a sign of its own for each endpoint, as DINO draws them per coordinate
    magnitude = uniforms[..., 0] + torch.tensor([0.0, 1.0], device=device)[None, None, :, None, None]
    sign = (uniforms[..., 1] < 0.5).float() * 2 - 1
    shift = sign * magnitude * box_noise_scale * width[:, None, None, :, None] / 2
    noised = (gt_se[:, None, None] + shift).clamp(0.0, 1.0)
    mid = noised.mean(-1, keepdim=True)
    too_small = (noised[..., 1] - noised[..., 0] < 1e-3)[..., None]
    noised = torch.where(
        too_small, (mid + torch.tensor([-5e-4, 5e-4], device=device)).clamp(0.0, 1.0), noised
    )
    references = span_se_to_cw(noised).reshape(batch, -1, 2)
    valid = gt_mask[:, None, None, :].expand(shape).reshape(batch, -1)
    # padded slots get a harmless reference
    references = torch.where(valid[..., None], references, torch.full_like(references, 0.5))
    is_positive = torch.zeros(shape, dtype=torch.bool, device=device)
    is_positive[:, :, 0] = True
    is_positive = is_positive.reshape(batch, -1) & valid
    flip = uniforms[..., 0, 2] < label_noise_ratio * 0.5
    content = label_embed(flip.long().reshape(batch, -1))
    targets = gt[:, None, None].expand(batch, num_groups, 2, num_gt, 2).reshape(batch, -1, 2)
    group_ids = torch.arange(num_groups, device=device).repeat_interleave(2 * num_gt)
    return QueryGroup(content, references, targets * valid[..., None], is_positive, valid, group_ids)


def _anchor_uniforms(anchor_levels: Tensor, sampling_seeds: Tensor) -> Tensor:
    """``(B, A)`` pseudo-random numbers in [0, 1) keyed by (sample seed, level, position within the level).

    Each sample's seed (``SGDetrTargets.sampling_seeds``, ``(B,)``) keys a hash of the anchor's level and
    position, so a video gets the same numbers whatever the padded length of its batch (the random choices
    then keep the loss padding-invariant) and whatever else is in its batch.
    """
    device = anchor_levels.device
    counts = torch.bincount(anchor_levels)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(anchor_levels.shape[0], device=device) - starts[anchor_levels]
    key = anchor_levels.double() * 1_000_003 + position.double()
    return _hash_uniforms(key, sampling_seeds)


# Denoising keys start far above the anchors' (level * 1_000_003 + position), so the two never share numbers.
_DENOISING_KEY_OFFSET = 1e8


def _hash_uniforms(key: Tensor, sampling_seeds: Tensor) -> Tensor:
    """``(B, K)`` pseudo-random numbers in [0, 1), a function of each (sample seed ``(B,)``, key ``(K,)``)."""
    seed = sampling_seeds.double()
    return torch.remainder(torch.sin(key[None] * 12.9898 + seed[:, None] * 78.233) * 43758.5453, 1.0).float()


def build_atss_positive_group(
    assignment: dict[str, Tensor],
    anchors: Tensor,
    anchor_mask: Tensor,
    anchor_levels: Tensor,
    sampling_seeds: Tensor,
    features: Tensor,
    position_proj: nn.Module,
    feature_proj: nn.Module,
    hidden_size: int,
    temperature: float,
    max_queries: int,
    num_slots: int | None = None,
) -> QueryGroup:
    """Co-DETR ATSS-positive queries (§3.5): all positive anchors of a video (a random subset when more than
    ``max_queries``), padded to the batch maximum with random negative anchors of the same video (no-object
    targets); slots beyond a video's anchors are invalid. ``num_slots`` replaces that maximum (capped) when
    the batch is part of a global batch (``SGDetrBatchContext.atss_query_slots``), so that a video gets the
    same queries whatever the processes or micro-batches the global batch is split into. Reference = the clipped anchor; content =
    ``position_proj(sine(anchor)) + feature_proj(pyramid feature at the anchor)``. The random choices do not
    depend on the padded length, only on each sample's ``sampling_seeds`` entry (see :func:`_anchor_uniforms`).

    A batch without any positive anchor (e.g. highlight-only data) gets one invalid slot per video, built
    from its first anchor without the RNG: the criterion gives it connected zeros, so both projections still
    receive a (zero) gradient and DDP needs no ``find_unused_parameters``."""
    is_pos = assignment["is_positive"] & anchor_mask
    num_pos = is_pos.sum(1)
    size = min(int(num_pos.max()), max_queries) if num_slots is None else min(num_slots, anchor_mask.shape[1])
    if size == 0:
        index = torch.zeros(anchor_mask.shape[0], 1, dtype=torch.long, device=anchor_mask.device)
        valid = torch.zeros(index.shape, dtype=torch.bool, device=anchor_mask.device)
        size = 1
    else:
        # random priorities: positives first (random order), then valid negatives, then padding
        priority = _anchor_uniforms(anchor_levels, sampling_seeds) + is_pos.float() * 2.0
        priority = priority.masked_fill(~anchor_mask, -1.0)
        top_priority, index = priority.topk(size, dim=1)
        valid = top_priority >= 0
    positive = is_pos.gather(1, index) & valid
    refs = clamp_spans_cw(anchors.gather(1, index[..., None].expand(-1, -1, 2)).float())
    feats = features.gather(1, index[..., None].expand(-1, -1, features.shape[-1]))
    sine = sine_embed_spans_cw(refs, hidden_size, temperature).to(features.dtype)
    content = position_proj(sine) + feature_proj(feats)
    targets = assignment["target_spans"].gather(1, index[..., None].expand(-1, -1, 2)) * positive[..., None]
    group_ids = torch.full((size,), _ATSS_GROUP, dtype=torch.long, device=anchors.device)
    return QueryGroup(content, refs, targets, positive, valid, group_ids)


def build_self_attention_blocked(group_ids: Tensor, key_valid: Tensor) -> Tensor:
    """Self-attention mask for ``[DN | primary | ATSS-positive]`` (§3.5), True = blocked.

    Primary queries see only primary queries; DN group g sees itself and the primary queries; ATSS-positive
    queries see only their own group; invalid (padded) slots are blocked as keys; every query sees itself.

    Args: group_ids ``(Q,)`` (DN: 0..G-1, primary: -1, ATSS: -2); key_valid ``(B, Q)`` bool.
    Returns: ``(B, Q, Q)`` bool.
    """
    same = group_ids[:, None] == group_ids[None, :]
    dn_to_primary = (group_ids[:, None] >= 0) & (group_ids[None, :] == _PRIMARY_GROUP)
    allowed = (same | dn_to_primary)[None] & key_valid[:, None, :]
    eye = torch.eye(group_ids.shape[0], dtype=torch.bool, device=group_ids.device)
    return ~(allowed | eye[None])


def _needed_queries(group: QueryGroup, has_windows: Tensor) -> Tensor:
    """``(B, Q)`` bool: the queries of ``group`` whose predictions a loss reads (every primary query; a fixed-target
    query when valid, of a video with windows). A group without any keeps all its queries, so that its
    parameters still get their (zero) gradient and DDP needs no ``find_unused_parameters``."""
    if group.is_positive is None:
        return group.valid
    needed = group.valid & has_windows[:, None]
    return needed | ~needed.any()  # all of them when none is needed, without reading the mask on the host


def _query_slice(predictions: SGDetrSpanPredictions, queries: slice) -> tuple[Tensor, Tensor, Tensor | None]:
    """(logits, spans, iou_logits) of the decoder queries in ``queries`` (last-but-one dim)."""
    iou = predictions.iou_logits
    return (
        predictions.logits[:, :, queries],
        predictions.spans[:, :, queries],
        None if iou is None else iou[:, :, queries],
    )


def _group_output(
    predictions: SGDetrSpanPredictions, group: QueryGroup, queries: slice
) -> SGDetrQueryGroupOutput:
    logits, spans, iou_logits = _query_slice(predictions, queries)
    return SGDetrQueryGroupOutput(
        logits=logits,
        spans=spans,
        iou_logits=iou_logits,
        target_spans=group.target_spans,
        is_positive=group.is_positive,
        valid=group.valid,
    )


# ----------------------------------------------------------------------------------------------- detector
class SGDetrLearnedQueries(nn.Module):
    """The primary queries of the DETR-based baseline (Table 2 rows (a)-(d), ``use_hybrid_detector=False``):
    ``K`` learned content queries and ``K`` learned reference spans ``sigmoid(E_ref)``, the same for every
    video, as the DAB-style Moment-DETR descendants (QD-DETR, CG-DETR: ``nn.Embedding(K, 2)`` anchors,
    N(0, 1)). The references are not detached: like DAB-DETR's learned anchors they are trained through
    the decoder's positional queries and first predictions."""

    def __init__(self, config):
        super().__init__()
        self.content = SGDetrQueryEmbedding(config.num_queries, config.hidden_size)
        self.reference_logits = SGDetrQueryEmbedding(config.num_queries, 2)

    def forward(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Content ``(B, K, d)`` and reference spans ``(B, K, 2)`` (center, width)."""
        references = torch.sigmoid(self.reference_logits.weight.float())
        return (
            self.content.weight[None].expand(batch_size, -1, -1),
            references[None].expand(batch_size, -1, -1),
        )


class SGDetrHybridDetector(nn.Module):
    """Pyramid neck + ATSS head + query selector + decoder (+ training query groups).

    With ``use_hybrid_detector=False`` (Table 2 rows (a)-(d), "DETR-based architecture"): learned queries
    (:class:`SGDetrLearnedQueries`) and the same decoder over the encoder output, without the pyramid, the
    ATSS head, the anchor-based query selector and the ATSS-positive queries; DINO denoising stays
    (``use_dn``)."""

    def __init__(self, config):
        super().__init__()
        d = config.hidden_size
        self.config = config
        hybrid = config.use_hybrid_detector
        self.neck = SGDetrPyramidNeck(config) if hybrid else None
        self.atss_head = SGDetrATSSHead(config) if hybrid else None
        self.selector = SGDetrQuerySelector(config) if hybrid else None
        self.learned_queries = None if hybrid else SGDetrLearnedQueries(config)
        self.decoder = SGDetrDecoder(config)
        if config.use_dn:
            self.dn_label_embed = SGDetrQueryEmbedding(2, d)  # rows: moment, unknown
        else:
            self.dn_label_embed = None
        if config.use_hybrid_detector:
            self.atss_query_position = nn.Sequential(
                nn.Linear(d, d), nn.LayerNorm(d, eps=config.layer_norm_eps)
            )
            self.atss_query_feature = nn.Sequential(
                nn.Linear(d, d), nn.LayerNorm(d, eps=config.layer_norm_eps)
            )
        else:
            self.atss_query_position = self.atss_query_feature = None

    def forward(
        self,
        features: Tensor,
        video_mask: Tensor,
        position_embeddings: Tensor,
        targets: SGDetrTargets | None = None,
    ) -> SGDetrDetectorOutput:
        """Run the detector.

        Args:
            features ``(B, L, d)`` (``F_g``), video_mask ``(B, L)`` bool (right-padded),
            position_embeddings ``(B, L, d)``.
            targets: training only; they switch on the query groups and the ATSS assignment (a batch without
                windows gets all-invalid groups, see :func:`build_denoising_group`).
        """
        cfg = self.config
        anchors = anchor_mask = anchor_levels = proposals = atss = None
        if self.learned_queries is not None:  # the DETR-based baseline: no pyramid, no anchors
            content, references = self.learned_queries(features.shape[0])
        else:
            lengths = video_mask.sum(1)
            level_feats, level_masks = self.neck(features, lengths)
            anchors, anchor_mask, anchor_levels = make_anchors(
                lengths, features.shape[1], cfg.pyramid_strides, cfg.anchor_scale
            )
            flat = torch.cat(level_feats, dim=1)  # (B, A, d)
            logits, deltas, centerness = self.atss_head(level_feats, level_masks)
            atss = {"logits": logits, "spans": decode_atss_deltas(anchors, deltas, cfg.atss_delta_stds)}
            atss["centerness"] = centerness
            proposals, _, content = self.selector(flat, anchors, anchor_mask)
            references = proposals.spans.detach()
        num_primary = content.shape[1]
        dn = atss_group = None
        if targets is not None:
            if cfg.use_dn:
                dn = build_denoising_group(
                    targets.padded_spans, targets.span_mask, self.dn_label_embed, cfg.num_dn_groups,
                    cfg.dn_box_noise_scale, cfg.dn_label_noise_ratio, targets.sampling_seeds,
                )  # fmt: skip
            if atss is not None:
                assignment = assign_atss(
                    anchors,
                    anchor_mask,
                    level_lengths(features.shape[1], cfg.pyramid_strides),
                    targets.padded_spans,
                    targets.span_mask,
                    cfg.atss_topk,
                )
                atss.update({k: assignment[k] for k in ("assigned_gt", "target_spans", "centerness_targets")})
                atss_group = build_atss_positive_group(
                    assignment, anchors, anchor_mask, anchor_levels, targets.sampling_seeds, flat,
                    self.atss_query_position, self.atss_query_feature,
                    cfg.hidden_size, cfg.position_temperature, cfg.max_atss_positive_queries,
                    None if targets.context is None else targets.context.atss_query_slots,
                )  # fmt: skip

        # decoder queries: [denoising | primary | ATSS-positive], isolated by the self-attention mask
        blocked = needed = None
        dn_size = 0 if dn is None else dn.content.shape[1]
        groups = [g for g in (dn, atss_group) if g is not None]
        if groups:
            batch = features.shape[0]
            primary = QueryGroup(
                content=content,
                references=references,
                target_spans=None,
                is_positive=None,
                valid=torch.ones(batch, num_primary, dtype=torch.bool, device=features.device),
                group_ids=torch.full(
                    (num_primary,), _PRIMARY_GROUP, dtype=torch.long, device=features.device
                ),
            )
            parts = [g for g in (dn, primary, atss_group) if g is not None]
            content = torch.cat([g.content.to(content.dtype) for g in parts], 1)
            references = torch.cat([g.references for g in parts], 1)
            blocked = build_self_attention_blocked(
                torch.cat([g.group_ids for g in parts]), torch.cat([g.valid for g in parts], 1)
            )
            needed = torch.cat([_needed_queries(g, targets.has_windows) for g in parts], 1)

        predictions = self.decoder(
            content, references, features, position_embeddings, video_mask, blocked, needed
        )
        logits, spans, iou_logits = _query_slice(predictions, slice(dn_size, dn_size + num_primary))
        start = dn_size + num_primary
        return SGDetrDetectorOutput(
            anchors=anchors,
            anchor_mask=anchor_mask,
            anchor_levels=anchor_levels,
            decoder=SGDetrSpanPredictions(logits=logits, spans=spans, iou_logits=iou_logits),
            selector=proposals,
            atss=None if atss is None else SGDetrATSSOutput(**atss),
            denoising=None if dn is None else _group_output(predictions, dn, slice(0, dn_size)),
            atss_queries=None
            if atss_group is None
            else _group_output(predictions, atss_group, slice(start, None)),
        )


__all__ = [
    "QueryGroup",
    "SGDetrATSSOutput",
    "SGDetrDetectorOutput",
    "SGDetrQueryGroupOutput",
    "SGDetrSpanPredictions",
    "SGDetrATSSHead",
    "SGDetrDecoder",
    "SGDetrDecoderLayer",
    "SGDetrHybridDetector",
    "SGDetrLearnedQueries",
    "SGDetrPyramidNeck",
    "SGDetrQueryRows",
    "SGDetrQuerySelector",
    "assign_atss",
    "build_atss_positive_group",
    "build_denoising_group",
    "build_self_attention_blocked",
    "decode_atss_deltas",
    "level_lengths",
    "make_anchors",
]

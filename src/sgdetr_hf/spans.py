"""Pure 1-D span maths (torch): conversions, IoU/GIoU, sine embeddings, NMS and weighted span fusion.

Conventions:

- ``cw``: normalised ``(center, width)``, the format used everywhere inside the model and the loss.
- ``se``: ``(start, end)`` in the same unit (normalised, clips or seconds: these functions do not care).
- IoU / GIoU are computed on ``se``; functions taking ``cw`` say so in their name.

Everything is batched over leading dimensions and has no Python loop over spans, except the two greedy
algorithms (NMS, WBF), which loop over the ranked candidates (at most a few hundred) and are vectorised
over the batch. This module is shipped to the Hub as remote code: it imports only torch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-6


def span_cw_to_se(spans: Tensor) -> Tensor:
    """``(..., 2)`` (center, width) -> ``(..., 2)`` (start, end)."""
    center, width = spans.unbind(-1)
    return torch.stack((center - 0.5 * width, center + 0.5 * width), dim=-1)


def span_se_to_cw(spans: Tensor) -> Tensor:
    """``(..., 2)`` (start, end) -> ``(..., 2)`` (center, width)."""
    start, end = spans.unbind(-1)
    return torch.stack((0.5 * (start + end), end - start), dim=-1)


def clamp_spans_se(spans: Tensor, low: float | Tensor = 0.0, high: float | Tensor = 1.0) -> Tensor:
    """Clip ``(start, end)`` spans to ``[low, high]``; ``high`` may be a tensor broadcastable to ``(...,)``."""
    high_t = torch.as_tensor(high, dtype=spans.dtype, device=spans.device)
    low_t = torch.as_tensor(low, dtype=spans.dtype, device=spans.device)
    return torch.minimum(torch.maximum(spans, low_t[..., None]), high_t[..., None])


def clamp_spans_cw(spans: Tensor) -> Tensor:
    """Clip (center, width) spans so that their (start, end) lies in [0, 1]; returns (center, width)."""
    return span_se_to_cw(span_cw_to_se(spans).clamp(0.0, 1.0))


def _endpoint_iou(start1: Tensor, end1: Tensor, start2: Tensor, end2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and union of spans given by broadcastable start and end tensors."""
    inter = (torch.minimum(end1, end2) - torch.maximum(start1, start2)).clamp_min(0)
    union = (end1 - start1) + (end2 - start2) - inter
    return inter / union.clamp_min(_EPS), union


def pairwise_span_iou(spans1: Tensor, spans2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and union of every pair: ``(..., N, 2)`` x ``(..., M, 2)`` (start, end) -> two ``(..., N, M)``."""
    return _endpoint_iou(
        spans1[..., :, None, 0], spans1[..., :, None, 1], spans2[..., None, :, 0], spans2[..., None, :, 1]
    )


def pairwise_generalized_span_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """GIoU of every pair (start, end): ``(..., N, 2)`` x ``(..., M, 2)`` -> ``(..., N, M)`` in [-1, 1]."""
    iou, union = pairwise_span_iou(spans1, spans2)
    hull = torch.maximum(spans1[..., :, None, 1], spans2[..., None, :, 1]) - torch.minimum(
        spans1[..., :, None, 0], spans2[..., None, :, 0]
    )
    return iou - (hull - union) / hull.clamp_min(_EPS)


def span_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Element-wise IoU of matching rows: ``(..., 2)`` x ``(..., 2)`` (start, end) -> ``(...,)``."""
    return _endpoint_iou(spans1[..., 0], spans1[..., 1], spans2[..., 0], spans2[..., 1])[0]


def generalized_span_iou(spans1: Tensor, spans2: Tensor) -> Tensor:
    """Element-wise GIoU of matching rows: ``(..., 2)`` x ``(..., 2)`` (start, end) -> ``(...,)``."""
    start1, end1, start2, end2 = spans1[..., 0], spans1[..., 1], spans2[..., 0], spans2[..., 1]
    iou, union = _endpoint_iou(start1, end1, start2, end2)
    hull = torch.maximum(end1, end2) - torch.minimum(start1, start2)
    return iou - (hull - union) / hull.clamp_min(_EPS)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to ``[eps, 1 - eps]`` (§0)."""
    x = x.clamp(eps, 1.0 - eps)
    return torch.log(x / (1.0 - x))


def sine_embedding(
    values: Tensor, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> Tensor:
    """Interleaved sine/cosine embedding of scalars: ``(...)`` -> ``(..., dim)``.

    ``out[2i] = sin(scale * v / T^(2i/dim))``, ``out[2i+1] = cos(scale * v / T^(2i/dim))`` (DETR convention):
    the ``dim / 2`` angles once, their sines and cosines interleaved.
    """
    dim_t = temperature ** (torch.arange(0, dim, 2, dtype=torch.float32, device=values.device) / dim)
    angles = values.float()[..., None] * scale / dim_t
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sine_embed_spans_cw(spans: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """``[PE_{dim/2}(2*pi*center) ; PE_{dim/2}(2*pi*width)]``: ``(..., 2)`` -> ``(..., dim)`` (the DAB-DETR query
    position of §3.5), both endpoints in one :func:`sine_embedding` call."""
    return sine_embedding(spans, dim // 2, temperature).flatten(-2)


def nms_1d(spans: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy 1-D non-maximum suppression, batched.

    Args:
        spans: ``(B, N, 2)`` (start, end). scores: ``(B, N)``. valid: ``(B, N)`` bool (False = ignored).
        iou_threshold: a candidate is suppressed when its IoU with a kept, higher-scored one is ``> thr``.
    Returns:
        ``(B, N)`` bool keep mask in the input order.
    """
    batch, n = scores.shape
    if n == 0:
        return valid.clone()
    order = torch.sort(scores.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True).indices
    spans_sorted = spans.gather(1, order[..., None].expand(-1, -1, 2))
    valid_sorted = valid.gather(1, order)
    # [j, i]: candidate j ranks above candidate i
    ranked_before = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    overlaps = pairwise_span_iou(spans_sorted, spans_sorted)[0] > iou_threshold  # (B, N, N)
    can_suppress = overlaps & ranked_before & valid_sorted[:, :, None]
    # greedy NMS is the solution of keep_i = valid_i and no kept j above i overlaps i: a triangular system, so
    # iterating it from keep = valid fixes one more rank per pass at least and stops at its unique solution
    # (at most N + 1 passes; a few in practice, against one pass per candidate of the plain greedy loop)
    keep_sorted = valid_sorted
    while True:
        suppressed = (can_suppress & keep_sorted[:, :, None]).any(1)
        updated = valid_sorted & ~suppressed
        if torch.equal(updated, keep_sorted):
            break
        keep_sorted = updated
    keep = torch.zeros_like(valid)
    keep.scatter_(1, order, keep_sorted)
    return keep


def _scale_free_weights(weights: list[float] | tuple[float, ...]) -> list[float]:
    """``weights`` times the power of two that brings the largest into ``[1, 2)``; ``ValueError`` unless they
    are finite, ``>= 0`` and not all zero."""
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        values = []
    if not values or not all(math.isfinite(w) and w >= 0 for w in values) or max(values) <= 0:
        raise ValueError(
            f"weights must be finite numbers >= 0, one at least > 0 (one per model), got {list(weights)!r}"
        )
    exponent = math.frexp(max(values))[1] - 1  # max = m * 2**(exponent + 1) with m in [0.5, 1)
    return [math.ldexp(w, -exponent) for w in values]


def weighted_span_fusion(
    spans: Tensor,
    scores: Tensor,
    model_index: Tensor,
    valid: Tensor,
    weights: list[float] | tuple[float, ...],
    iou_threshold: float = 0.55,
    skip_threshold: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """1-D Weighted Boxes Fusion ("avg" confidence), batched over the first dimension (§4.3).

    1. Scores are multiplied by their model's weight; candidates with raw score ``< skip_threshold`` are
       dropped; the rest are visited by weighted score, best first.
    2. Each candidate joins the cluster whose current fused span has the highest IoU with it if that IoU is
       strictly greater than ``iou_threshold``; otherwise it starts a new cluster.
    3. A cluster's span is the score-weighted mean of its members' endpoints; its confidence is the mean
       member score times ``min(n_models, cluster_size) / sum(weights)``.

    Only the ratios of the weights matter: they are first scaled by the power of two that brings the largest
    into ``[1, 2)``, so that weights of any magnitude neither overflow nor underflow float32. The scaling is
    exact in floating point: weights whose largest is in ``[1, 2)``, such as the default ``(1, 1)``, are used
    as given, and weights a power of two apart give the same result to the last bit (any other common
    factor: the same up to float32 rounding).

    Args:
        spans: ``(B, N, 2)`` (start, end). scores: ``(B, N)`` raw scores. model_index: ``(B, N)`` long index
        into ``weights``. valid: ``(B, N)`` bool. weights: one finite weight ``>= 0`` per model, one at
        least ``> 0``.
    Returns:
        fused spans ``(B, N, 2)``, confidences ``(B, N)``, validity ``(B, N)`` bool; sorted by confidence
        (best first), clusters beyond the count of each row are invalid (confidence -inf, span zeros).
    """
    batch, n = scores.shape
    device = scores.device
    spans = spans.float()
    w = torch.as_tensor(_scale_free_weights(weights), dtype=torch.float32, device=device)
    weighted = scores.float() * w[model_index]
    valid = valid & (scores >= skip_threshold)
    order = torch.sort(weighted.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True).indices
    cand_spans = spans.gather(1, order[..., None].expand(-1, -1, 2))
    cand_scores = weighted.gather(1, order)
    cand_valid = valid.gather(1, order)

    # per candidate, what joining a cluster adds to its sums: score, score-weighted start and end (a tiny
    # floor keeps all-zero-score clusters finite), member count
    weight = cand_scores.clamp_min(1e-12)[..., None]
    contribution = torch.cat((cand_scores[..., None], weight * cand_spans, torch.ones_like(weight)), -1)
    sums = torch.zeros(batch, n, 4, device=device)  # per cluster slot: the sums above
    # fused (start, end) per slot; an empty slot's (0, 0) has IoU 0 with any span (a zero-length span
    # intersects nothing), so it never matches (IoU must exceed iou_threshold >= 0) and needs no mask
    fused = torch.zeros(batch, n, 2, device=device)
    fused_start, fused_end = fused[..., 0], fused[..., 1]  # views: they follow the in-place updates
    rows = torch.arange(batch, device=device)
    num_clusters = torch.zeros(batch, dtype=torch.long, device=device)
    per_candidate = zip(
        cand_spans[..., :1].unbind(1),
        cand_spans[..., 1:].unbind(1),
        cand_valid.unbind(1),
        contribution.unbind(1),
    )  # one view per candidate, made in a few ops instead of several per candidate
    for start_i, end_i, valid_i, contribution_i in per_candidate:  # greedy, best first, batched
        best_iou, best = _endpoint_iou(fused_start, fused_end, start_i, end_i)[0].max(dim=1)
        match = valid_i & (best_iou > iou_threshold)
        target = torch.where(match, best, num_clusters)  # < N: fewer clusters exist than candidates were seen
        sums.index_put_((rows, target), contribution_i, accumulate=True)
        num_clusters += valid_i > match
        joined = sums[rows, target]  # (B, 4): the target slot's sums, this candidate included
        denom = (joined[:, :1].clamp_min(0) + joined[:, 3:] * 1e-12).clamp_min(1e-30)
        # invalid candidates rank last and never match: each lands in the first empty slot, which stays
        # outside num_clusters, so no cluster and no later decision sees them
        fused.index_put_((rows, target), joined[:, 1:3] / denom)

    exists = torch.arange(n, device=device)[None, :] < num_clusters[:, None]
    sum_score, count = sums[..., 0], sums[..., 3]
    fused = fused.masked_fill(~exists[..., None], 0.0)
    conf = sum_score / count.clamp_min(1) * torch.minimum(count, torch.tensor(float(len(w)), device=device))
    conf = (conf / w.sum()).masked_fill(~exists, -math.inf)
    conf, rank = torch.sort(conf, dim=1, descending=True, stable=True)
    fused = fused.gather(1, rank[..., None].expand(-1, -1, 2))
    return fused, conf, exists.gather(1, rank)


__all__ = [
    "clamp_spans_cw",
    "clamp_spans_se",
    "generalized_span_iou",
    "inverse_sigmoid",
    "nms_1d",
    "pairwise_generalized_span_iou",
    "pairwise_span_iou",
    "sine_embed_spans_cw",
    "sine_embedding",
    "span_cw_to_se",
    "span_iou",
    "span_se_to_cw",
    "weighted_span_fusion",
]

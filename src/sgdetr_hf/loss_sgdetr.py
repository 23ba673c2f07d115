"""SG-DETR training objective: the Hungarian matcher and every loss of paper §3.7 (eq. 11-15).

The criterion reads three typed inputs: the encoder side's ``SGDetrModelOutput`` (saliencies, negative-pair
pass, moment encoder), the detector's ``SGDetrDetectorOutput`` (decoder layers, selector, query groups, ATSS
head) and the labels parsed once by the model, ``SGDetrTargets`` (``targets_sgdetr``). It is stateless (no
RNG, no buffers): the model builds it from its config on every call (:func:`moment_retrieval_loss`). It
returns the total loss of eq. 15 and a flat ``loss_dict`` of every active term, already multiplied by its
weights, so that ``loss == sum(loss_dict.values())``. Key names:

- ``hl_{margin,rctl,bce_pos,bce_neg}_{local,global}``: highlight detection, eq. 11, on both saliencies;
- ``detr_{l1,giou,ce,iou}_layer{l}``: Hungarian-matched primary queries of decoder layer ``l`` (eq. 12);
- ``sel_{l1,giou,ce}``: the query selector's matched proposals (DINO two-stage loss, no IoU head; only with
  the hybrid detector);
- ``dn_{...}_layer{l}``: DINO denoising groups; ``co_{...}_layer{l}``: Co-DETR ATSS-positive queries;
- ``atss_{l1,giou,focal,centerness}``: the auxiliary ATSS head (eq. 13);
- ``aux_{align,bce}``: moment-sentence alignment and moment-token / frame BCE (eq. 14).

Every term is a sum over its batch divided by a count (positive spans, valid queries, clips, pairs, rows):
:func:`count_loss_normalizers` computes every count from the targets alone, so that a forward on one part of
a global batch (a process's share, a gradient-accumulation micro-batch) divides by the counts of the whole
batch (``SGDetrBatchContext.loss_normalizers``, summed across processes and micro-batches as DETR all-reduces
``num_boxes``) and the parts' losses add up to the loss of the whole batch. Without them each term divides by
the forward's own count, read from its outputs (the same numbers, as the tests check).

Terms of parts the model did not run (``None`` in the outputs) are absent. Spans are normalised
``(center, width)``; decoder class 0 = moment, 1 = no-object. Everything is computed in fp32 whatever the
autocast dtype of the model body, and vectorised over the batch: the per-sample Hungarian assignment is the
only Python loop. Samples without ground-truth windows (highlight-only data) receive no moment-retrieval
supervision; an empty set of positives, windows or negatives gives a zero that stays connected to the graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .detector_sgdetr import assign_atss, level_lengths, make_anchors
from .spans import (
    clamp_spans_cw,
    generalized_span_iou,
    pairwise_generalized_span_iou,
    span_cw_to_se,
    span_iou,
)
from .targets_sgdetr import SGDetrTargets

if TYPE_CHECKING:  # the outputs are defined by the model modules, which import this one
    from .detector_sgdetr import SGDetrATSSOutput, SGDetrDetectorOutput
    from .modeling_sgdetr import SGDetrModelOutput

#: The counts that normalise the loss terms (:func:`count_loss_normalizers`).
LOSS_NORMALIZERS = (
    "margin_pairs", "clips", "rows", "neg_rows", "matched", "window_queries", "dn_positive", "dn_valid",
    "co_positive", "co_valid", "atss_positive", "atss_centerness", "moment_rows", "moment_row_clips",
)  # fmt: skip
_OWN_COUNTS: dict[str, Tensor | None] = dict.fromkeys(LOSS_NORMALIZERS)  # None: the forward's own count


def _twice(count: Tensor | None) -> Tensor | None:
    return None if count is None else 2 * count


MOMENT_CLASS = 0
NO_OBJECT_CLASS = 1

# CG-DETR's factor 2 on the margin loss, kept so that the paper's loss weights keep their meaning.
MARGIN_LOSS_SCALE = 2.0
# Logit given to padded clips in the rank-contrastive softmax: exp() underflows to exactly 0.
_PADDING_LOGIT = -1e4


def _masked_mean(values: Tensor, mask: Tensor, count: Tensor | None = None, sets: int = 0) -> Tensor:
    """Sum of ``values`` where ``mask`` is True over ``count`` (default: the number of True, at least 1). With
    ``sets`` > 0 the first ``sets`` dimensions are kept: one mean per set, shape ``values.shape[:sets]``
    (a given ``count`` is shared by the sets)."""
    dims = tuple(range(sets, values.dim()))
    total = torch.where(mask, values, 0.0).sum(dims)
    return total / (mask.sum(dims) if count is None else count).clamp(min=1)


def _iou_cw(spans_a: Tensor, spans_b: Tensor, generalized: bool) -> Tensor:
    """(G)IoU of aligned pairs of normalised ``(center, width)`` spans: (..., 2) x (..., 2) -> (...)."""
    iou_fn = generalized_span_iou if generalized else span_iou
    return iou_fn(span_cw_to_se(spans_a), span_cw_to_se(spans_b))


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise sigmoid focal loss (RetinaNet / ATSS), no reduction.

    Args:
        logits: raw scores, any shape.
        targets: same shape, in [0, 1].
        alpha: weight of the positive class (0.25 in ATSS); negatives get ``1 - alpha``.
        gamma: focusing exponent (2 in ATSS).
    """
    probs = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    prob_of_target = probs * targets + (1 - probs) * (1 - targets)
    alpha_weight = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_weight * cross_entropy * (1 - prob_of_target) ** gamma


def margin_ranking_loss(
    scores: Tensor,
    pos_idx: Tensor,
    neg_idx: Tensor,
    pair_valid: Tensor,
    margin: float,
    num_pairs: Tensor | None = None,
) -> Tensor:
    """CG-DETR margin ranking loss on clip pairs (eq. 11, first term).

    Args:
        scores: (B, L) raw saliency logits.
        pos_idx, neg_idx: (B, P) long clip indices; the positive clip must outscore the negative by ``margin``.
        pair_valid: (B, P) bool, False for pairs of samples without any relevant clip.
        margin: δ (0.2).
        num_pairs: the normaliser (default: the valid pairs here).

    Returns:
        ``2 * mean over valid pairs of max(0, δ + S[neg] - S[pos])``.
    """
    hinge = (margin + scores.gather(1, neg_idx) - scores.gather(1, pos_idx)).clamp(min=0)
    return MARGIN_LOSS_SCALE * _masked_mean(hinge, pair_valid, num_pairs)


def rank_contrastive_loss(
    scores: Tensor,
    saliency: Tensor,
    video_mask: Tensor,
    temperature: float,
    label_max: int,
    neg_scores: Tensor | None = None,
    neg_rows: Tensor | None = None,
    num_rows: Tensor | None = None,
    num_neg_rows: Tensor | None = None,
) -> Tensor:
    """CG-DETR rank-contrastive loss (eq. 11, second term).

    For every level r = 1 .. label_max - 1, the clips with saliency >= r are positives of an InfoNCE over all
    candidate clips of the row; rows without positives at level r contribute 0 to that level's row mean, and
    the level sum is divided by ``label_max`` (CG-DETR: levels 1..11 of the 0..12 scale, divided by 12). With
    negative pairs, the candidates of a real-negative row also hold the clips of the video paired with
    another sample's text (label 0), and real-negative rows and the other rows are averaged separately and
    added (CG-DETR).

    Args:
        scores: (B, L) raw saliency logits of the matched text-video pairs.
        saliency: (B, L) float labels on the 0..12 scale, 0 = not relevant.
        video_mask: (B, L) bool, True = real clip.
        temperature: τ (0.5).
        label_max: top of the saliency scale (12).
        neg_scores: (B, L) logits of video b with the text of another sample, or None.
        neg_rows: (B,) bool, True where ``neg_scores`` of that row is a real negative pair.
        num_rows, num_neg_rows: the normalisers, rows and real-negative rows (default: those here).
    """
    batch_size, num_clips = scores.shape
    if num_rows is None:
        num_rows = scores.new_tensor(float(batch_size))
    candidate_mask = video_mask
    if neg_scores is None:
        row_weight = (1.0 / num_rows.clamp(min=1)).expand(batch_size)
    else:
        scores = torch.cat([scores, neg_scores], dim=1)
        saliency = torch.cat([saliency, torch.zeros_like(saliency)], dim=1)
        candidate_mask = torch.cat([video_mask, video_mask & neg_rows[:, None]], dim=1)
        if num_neg_rows is None:
            num_neg_rows = neg_rows.sum()
        row_weight = torch.where(
            neg_rows, 1.0 / num_neg_rows.clamp(min=1), 1.0 / (num_rows - num_neg_rows).clamp(min=1)
        )
    log_probs = torch.where(candidate_mask, scores / temperature, _PADDING_LOGIT).log_softmax(dim=1)
    levels = torch.arange(1, label_max, device=scores.device, dtype=saliency.dtype)
    positives = (saliency[:, None, :] >= levels[None, :, None]) & candidate_mask[:, None, :]  # (B, R, C)
    num_positives = positives.sum(-1).clamp(min=1)
    mean_log_prob = torch.where(positives, log_probs[:, None, :], 0.0).sum(-1) / num_positives  # (B, R)
    return -(mean_log_prob * row_weight[:, None]).sum() / label_max


def positive_pair_bce_loss(
    scores: Tensor, saliency: Tensor, video_mask: Tensor, num_clips: Tensor | None = None
) -> Tensor:
    """BCE of σ(S) against ``saliency > 0`` over every real clip of the matched pairs (eq. 11, third term);
    ``num_clips`` is the normaliser (default: the real clips here)."""
    bce = F.binary_cross_entropy_with_logits(scores, (saliency > 0).to(scores.dtype), reduction="none")
    return _masked_mean(bce, video_mask, num_clips)


def negative_pair_bce_loss(
    neg_scores: Tensor, video_mask: Tensor, neg_rows: Tensor, num_neg_rows: Tensor | None = None
) -> Tensor:
    """QD-DETR negative-pair loss (eq. 11, fourth term): ``-log(1 - σ(S_neg))`` summed over the real clips
    of each real-negative pair, averaged over those pairs (``num_neg_rows``, default: those here).
    (B, L), (B, L), (B,) -> scalar."""
    per_row = torch.where(video_mask, F.softplus(neg_scores), 0.0).sum(dim=1)  # softplus(x) = -log(1 - σ(x))
    return _masked_mean(per_row, neg_rows, num_neg_rows)


def _atss_assignment(config, targets: SGDetrTargets) -> tuple[dict[str, Tensor], Tensor]:
    """The ATSS assignment the detector makes for these targets (it reads no weight), and the anchor mask."""
    video_mask = targets.video_mask
    padded_length, strides = video_mask.shape[1], config.pyramid_strides
    anchors, anchor_mask, _ = make_anchors(video_mask.sum(1), padded_length, strides, config.anchor_scale)
    assignment = assign_atss(
        anchors,
        anchor_mask,
        level_lengths(padded_length, strides),
        targets.padded_spans,
        targets.span_mask,
        config.atss_topk,
    )
    return assignment, anchor_mask


def max_atss_positives(config, targets: SGDetrTargets) -> int:
    """The most ATSS-positive anchors of one video of the batch (0 without the hybrid detector): the global
    batch's maximum, capped at ``max_atss_positive_queries``, is ``SGDetrBatchContext.atss_query_slots``."""
    if not config.use_hybrid_detector:
        return 0
    assignment, anchor_mask = _atss_assignment(config, targets)
    return int((assignment["is_positive"] & anchor_mask).sum(1).max())


def count_loss_normalizers(
    config, targets: SGDetrTargets, atss_query_slots: int | None = None
) -> dict[str, Tensor]:
    """The counts (fp32 scalars, :data:`LOSS_NORMALIZERS`) that divide the loss terms of this batch.

    They depend on the targets and the config only (the ATSS assignment reads no weight), so a trainer can
    count a whole global batch before its first forward and sum the counts of its parts: a term divided by
    the sum is the part's share of the global mean. Counts of parts the config switches off are 0.

    Args:
        config: the model's ``SGDetrConfig``.
        targets: the batch's parsed labels.
        atss_query_slots: the ATSS-positive query slots per video (default: this batch's own maximum).
    """
    has_windows = targets.has_windows
    num_windows = targets.span_mask.sum(1)
    relevant_rows = targets.moment_mask.any(1)
    counts = {
        "margin_pairs": targets.margin_pair_valid.sum(),
        "clips": targets.video_mask.sum(),
        "rows": torch.tensor(targets.video_mask.shape[0]),
        "neg_rows": targets.neg_pair_mask.sum(),
        "matched": num_windows.clamp(max=config.num_queries).sum(),
        "window_queries": has_windows.sum() * config.num_queries,
        "dn_positive": num_windows.sum() * config.num_dn_groups * config.use_dn,
        "dn_valid": num_windows.sum() * 2 * config.num_dn_groups * config.use_dn,
        "moment_rows": relevant_rows.sum(),
        "moment_row_clips": (targets.video_mask & relevant_rows[:, None]).sum(),
    }
    zero = torch.zeros((), device=targets.video_mask.device)
    counts.update(co_positive=zero, co_valid=zero, atss_positive=zero, atss_centerness=zero)
    if config.use_hybrid_detector:
        assignment, anchor_mask = _atss_assignment(config, targets)
        atss_positive = (assignment["assigned_gt"] >= 0) & anchor_mask & has_windows[:, None]
        counts["atss_positive"] = atss_positive.sum()
        counts["atss_centerness"] = torch.where(
            atss_positive, assignment["centerness_targets"].float(), 0.0
        ).sum()
        # the ATSS-positive query group (detector_sgdetr.build_atss_positive_group): per video its positives
        # and then negative anchors, up to the slots; its valid slots of videos with windows enter the loss
        num_positive = (assignment["is_positive"] & anchor_mask).sum(1)
        slots = atss_query_slots
        if slots is None:
            slots = min(int(num_positive.max()), config.max_atss_positive_queries)
        counts["co_positive"] = (num_positive.clamp(max=slots) * has_windows).sum()
        counts["co_valid"] = (anchor_mask.sum(1).clamp(max=slots) * has_windows).sum()
    device = targets.video_mask.device
    return {name: counts[name].to(device=device, dtype=torch.float32) for name in LOSS_NORMALIZERS}


class SGDetrHungarianMatcher(nn.Module):
    """One-to-one assignment between predicted and ground-truth spans (paper §3.6, CG-DETR costs).

    ``C = -w_class * q + w_l1 * |m̂ - m|_1 - w_giou * GIoU(m̂, m)`` with the quality ``q = p^0.5 * IoÛ^0.5``
    when the IoU head's logits are given (the predicted IoU incorporated in matching), else ``q = p``;
    ``p`` is the softmax probability of the moment class. Costs of the whole batch are one tensor
    computation; ``scipy.optimize.linear_sum_assignment`` then runs once per sample.

    Args:
        class_cost: w_class (4).
        l1_cost: w_l1 (10).
        giou_cost: w_giou (1).
    """

    def __init__(self, class_cost: float = 4.0, l1_cost: float = 10.0, giou_cost: float = 1.0):
        super().__init__()
        costs = {"class_cost": class_cost, "l1_cost": l1_cost, "giou_cost": giou_cost}
        if any(value < 0 for value in costs.values()) or not any(costs.values()):
            raise ValueError(f"Matcher costs must be >= 0 and not all 0, got {costs}.")
        self.class_cost = class_cost
        self.l1_cost = l1_cost
        self.giou_cost = giou_cost

    def forward(
        self, logits: Tensor, spans: Tensor, target_spans: Sequence[Tensor], iou_logits: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Match predictions to targets.

        Args:
            logits: (B, K, 2) class logits (0 = moment, 1 = no-object).
            spans: (B, K, 2) predicted normalised (center, width).
            target_spans: B tensors (K_b, 2) of ground-truth normalised (center, width); K_b may be 0.
            iou_logits: (B, K) IoU-head logits, or None (no IoU scoring).

        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 CPU tensors of length ``min(K, K_b)``:
            query ``query_idx[i]`` is assigned to ground truth ``target_idx[i]``.
        """
        return [
            (torch.from_numpy(query), torch.from_numpy(target))
            for query, target in self.match_sets([(logits, spans, iou_logits)], target_spans)[0]
        ]

    # host-side work (numpy slicing, scipy's assignment): torch.compile runs it as it is, untraced
    @torch.compiler.disable
    @torch.no_grad()
    def match_sets(
        self,
        prediction_sets: Sequence[tuple[Tensor, Tensor, Tensor | None]],
        target_spans: Sequence[Tensor],
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """:meth:`forward` for several prediction sets of the same batch (the decoder layers, the selector) with
        one copy of their costs to the host, not one per set (each copy waits for the device).

        Args:
            prediction_sets: ``(logits, spans, iou_logits)`` triples as :meth:`forward` takes them, or with
                leading dimensions ``(..., B, K, ...)`` of further sets of the same shape (the decoder's layers:
                their costs are one computation); ``K`` may differ between triples.
            target_spans: B tensors (K_b, 2), as in :meth:`forward`.

        Returns:
            per set (a triple's leading dimensions flattened, in order), :meth:`forward`'s B pairs as int64 numpy
            arrays (the loss concatenates them before making tensors: one tensor per pair would be an op each).
        """
        batch_size = len(target_spans)
        sizes = [len(t) for t in target_spans]
        set_shapes = [logits.shape[:-1] for logits, _, _ in prediction_sets]  # (..., B, K)
        if sum(sizes) == 0:
            empty = np.empty(0, dtype=np.int64)
            num_sets = sum(shape[:-2].numel() for shape in set_shapes)
            return [[(empty, empty) for _ in range(batch_size)] for _ in range(num_sets)]
        spans_device = prediction_sets[0][1].device
        all_targets = torch.cat(list(target_spans)).to(device=spans_device, dtype=torch.float32)
        target_se = span_cw_to_se(all_targets)
        costs = [self._cost(*predictions, all_targets, target_se) for predictions in prediction_sets]
        cost = torch.cat([c.flatten() for c in costs]).cpu()
        if not torch.isfinite(cost).all():
            raise ValueError(
                "Non-finite matching cost: the predicted spans or logits contain NaN/Inf (training diverged; "
                "lower the learning rate or check the inputs)."
            )
        # each triple's block as (sets, B, K, T), then each sample's block of its own windows' columns, sliced
        # in numpy (no tensor op per sample)
        blocks = np.split(cost.numpy(), np.cumsum([c.numel() for c in costs])[:-1])
        window_ends = np.cumsum(sizes)[:-1]
        matches = []
        for block, shape in zip(blocks, set_shapes):
            for set_cost in block.reshape(-1, batch_size, shape[-1], len(all_targets)):
                per_sample = np.split(set_cost, window_ends, axis=-1)
                indices = [linear_sum_assignment(sample[b]) for b, sample in enumerate(per_sample)]
                matches.append([(q.astype(np.int64), t.astype(np.int64)) for q, t in indices])
        return matches

    def _cost(
        self, logits: Tensor, spans: Tensor, iou_logits: Tensor | None, all_targets: Tensor, target_se: Tensor
    ) -> Tensor:
        """``(..., B, K, T)`` matching cost of every query of every sample (and set) against all ``T`` windows of
        the batch."""
        flat_spans = spans.float().reshape(-1, 2)  # (... * B * K, 2)
        quality = logits.float().softmax(-1)[..., MOMENT_CLASS]
        if iou_logits is not None:
            quality = (quality * iou_logits.float().sigmoid()).sqrt()
        cost = (
            -self.class_cost * quality.reshape(-1, 1)
            + self.l1_cost * torch.cdist(flat_spans, all_targets, p=1)
            - self.giou_cost * pairwise_generalized_span_iou(span_cw_to_se(flat_spans), target_se)
        )
        return cost.view(*logits.shape[:-1], -1)


class SGDetrLoss(nn.Module):
    """The full SG-DETR objective (eq. 15): ``λ_atss L_atss + λ_detr L_detr + λ_hl L_hl + λ_aux L_aux``.

    Stateless (no parameters, buffers or RNG): built from the config on every call by
    :func:`moment_retrieval_loss`, as transformers' RT-DETR loss. See the module docstring for the terms.

    Args:
        config: an ``SGDetrConfig``; the loss reads its loss weights, matcher costs, margin, temperature,
            no-object weight and focal parameters.
    """

    def __init__(self, config):
        super().__init__()
        self.matcher = SGDetrHungarianMatcher(
            class_cost=config.matcher_cost_class,
            l1_cost=config.matcher_cost_l1,
            giou_cost=config.matcher_cost_giou,
        )
        # Weight of each per-query-set term; "focal" is the ATSS head's classification term.
        self.term_weights = {
            "l1": config.lambda_l1,
            "giou": config.lambda_giou,
            "ce": config.lambda_ce,
            "iou": config.lambda_iou,
            "focal": config.lambda_ce,
            "centerness": config.lambda_centerness,
        }
        # Weight of each loss_dict prefix: λ of its eq.-15 group times, inside L_detr, the auxiliary set's λ.
        self.prefix_weights = {
            "hl": config.lambda_hl,
            "detr": config.lambda_detr,
            "sel": config.lambda_detr * config.lambda_selector,
            "dn": config.lambda_detr * config.lambda_dn,
            "co": config.lambda_detr * config.lambda_atss_queries,
            "atss": config.lambda_atss,
            "aux": config.lambda_aux,
        }
        self.saliency_margin = config.saliency_margin
        self.rank_contrastive_temperature = config.rank_contrastive_tau
        self.saliency_label_max = config.saliency_label_max
        self.focal_alpha = config.focal_alpha
        self.focal_gamma = config.focal_gamma
        self.class_weights = (1.0, config.eos_coef)  # CE weights of (moment, no-object)

    # ------------------------------------------------------------------ losses

    def _highlight_losses(
        self,
        scores: Tensor,
        neg_scores: Tensor | None,
        neg_rows: Tensor | None,
        targets: SGDetrTargets,
        counts: Mapping[str, Tensor | None],
    ) -> dict[str, Tensor]:
        """The four terms of eq. 11 for one saliency (local or global), unweighted."""
        losses = {
            "margin": margin_ranking_loss(
                scores,
                targets.margin_pos_idx,
                targets.margin_neg_idx,
                targets.margin_pair_valid,
                self.saliency_margin,
                counts["margin_pairs"],
            ),
            "rctl": rank_contrastive_loss(
                scores,
                targets.saliency,
                targets.video_mask,
                self.rank_contrastive_temperature,
                self.saliency_label_max,
                neg_scores,
                neg_rows,
                counts["rows"],
                counts["neg_rows"],
            ),
            "bce_pos": positive_pair_bce_loss(scores, targets.saliency, targets.video_mask, counts["clips"]),
        }
        if neg_scores is not None:
            losses["bce_neg"] = negative_pair_bce_loss(
                neg_scores, targets.video_mask, neg_rows, counts["neg_rows"]
            )
        return losses

    def _query_set_losses(
        self,
        logits: Tensor,
        spans: Tensor,
        iou_logits: Tensor | None,
        target_spans: Tensor,
        positive: Tensor,
        valid: Tensor,
        num_positive: Tensor | None,
        num_valid: Tensor | None,
    ) -> dict[str, Tensor]:
        """Eq. 12 terms of S sets of decoder queries with fixed targets (a group's layers), unweighted.

        Args:
            logits (S, B, Q, 2), spans (S, B, Q, 2), iou_logits (S, B, Q) or None: the queries' predictions.
            target_spans: (S, B, Q, 2) ground truth of each positive query (ignored elsewhere).
            positive: (S, B, Q) bool, query must reconstruct ``target_spans`` and be classified as a moment.
            valid: (S, B, Q) bool, query takes part in the classification loss (no-object unless positive).
            The targets and masks may have size 1 in S (shared by the sets).
            num_positive, num_valid: the normalisers, positive and valid queries of the global batch (None:
                those here), the same for every set.

        Returns:
            ``(S,)`` per set: ``l1`` (mean over positives and coordinates), ``giou`` (mean ``1 - GIoU`` over
            positives), ``ce`` (2-way CE with no-object weight, plain mean over valid queries, CG-DETR) and
            ``iou`` (BCE of the IoU logit against IoU(detached prediction clipped to [0, 1], ground truth),
            mean over positives) when predicted.
        """
        # every term over the whole (S, B, Q) grid, masked (no boolean indexing: its data-dependent shape would
        # wait for the device); the masked-out slots hold finite values (IoUs are clamped, targets zero)
        logits, spans = logits.float(), spans.float()
        positive = (positive & valid).expand(spans.shape[:-1])
        valid = valid.expand(spans.shape[:-1])
        classes = torch.where(positive, MOMENT_CLASS, NO_OBJECT_CLASS)
        cross_entropy = F.cross_entropy(
            logits.reshape(-1, 2),
            classes.reshape(-1),
            weight=logits.new_tensor(self.class_weights),
            reduction="none",
        ).view(classes.shape)
        giou = _iou_cw(spans, target_spans, generalized=True)
        losses = {
            "l1": _masked_mean(
                (spans - target_spans).abs(),
                positive[..., None].expand_as(spans),
                _twice(num_positive),
                sets=1,
            ),
            "giou": _masked_mean(1 - giou, positive, num_positive, sets=1),
            "ce": _masked_mean(cross_entropy, valid, num_valid, sets=1),
        }
        if iou_logits is not None:
            # the IoU of the window as it is output (clipped to the video): S_det ranks clipped windows, and
            # a prediction hanging over a video border is as good as its clipped part
            iou_targets = _iou_cw(clamp_spans_cw(spans.detach()), target_spans, generalized=False)
            iou_bce = F.binary_cross_entropy_with_logits(iou_logits.float(), iou_targets, reduction="none")
            losses["iou"] = _masked_mean(iou_bce, positive, num_positive, sets=1)
        return losses

    def _matched_query_set_losses(
        self,
        logits: Tensor,
        spans: Tensor,
        iou_logits: Tensor | None,
        matches: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
        targets: SGDetrTargets,
        counts: Mapping[str, Tensor | None],
    ) -> dict[str, Tensor]:
        """:meth:`_query_set_losses` of S prediction sets (``(S, B, Q, ...)``) Hungarian-matched to the windows
        (``matches``: the matcher's pairs, per set)."""
        num_sets, batch_size, num_queries = logits.shape[:3]
        indices = [pair for pairs in matches for pair in pairs]  # (set, sample) pairs, sample fastest
        # flat (set, sample, query, window) indices, built in numpy: no tensor op per set and sample
        lengths = [len(query) for query, _ in indices]
        row_idx = np.repeat(np.arange(num_sets * batch_size), lengths)
        # each sample's first window in the concatenation of all samples' windows
        first_window = np.tile(np.cumsum([0] + [len(s) for s in targets.spans[:-1]]), num_sets)
        target_idx = np.concatenate([target for _, target in indices]) + np.repeat(first_window, lengths)
        query_idx = np.concatenate([query for query, _ in indices])

        device = logits.device
        row_idx, query_idx, target_idx = (
            torch.from_numpy(index).to(device) for index in (row_idx, query_idx, target_idx)
        )
        positive = torch.zeros(num_sets * batch_size, num_queries, dtype=torch.bool, device=device)
        positive[row_idx, query_idx] = True
        target_spans = torch.zeros(num_sets * batch_size, num_queries, 2, device=device)
        target_spans[row_idx, query_idx] = torch.cat(targets.spans)[target_idx]
        valid = targets.has_windows[None, :, None].expand(1, batch_size, num_queries)
        return self._query_set_losses(
            logits,
            spans,
            iou_logits,
            target_spans.view(num_sets, batch_size, num_queries, 2),
            positive.view(num_sets, batch_size, num_queries),
            valid,
            counts["matched"],
            counts["window_queries"],
        )

    def _atss_losses(
        self,
        atss: SGDetrATSSOutput,
        anchor_mask: Tensor,
        targets: SGDetrTargets,
        counts: Mapping[str, Tensor | None],
    ) -> dict[str, Tensor]:
        """Eq. 13 on the ATSS head, unweighted: focal classification over valid anchors divided by the
        number of positives, L1 and centerness-weighted GIoU on decoded spans, centerness BCE."""
        valid = anchor_mask & targets.has_windows[:, None]
        positive = (atss.assigned_gt >= 0) & valid
        logits = atss.logits.float()
        focal = sigmoid_focal_loss(logits, positive.float(), self.focal_alpha, self.focal_gamma)
        # masked over all anchors, as in _query_set_losses (the GIoU by its centerness weights, zero off positives)
        spans, target_spans = atss.spans.float(), atss.target_spans.float()
        centerness_targets = torch.where(positive, atss.centerness_targets.float(), 0.0)
        weighted_giou = centerness_targets * (1 - _iou_cw(spans, target_spans, generalized=True))
        centerness_bce = F.binary_cross_entropy_with_logits(
            atss.centerness.float(), centerness_targets, reduction="none"
        )
        num_positive, centerness_sum = counts["atss_positive"], counts["atss_centerness"]
        if centerness_sum is None:
            num_positive, centerness_sum = positive.sum(), centerness_targets.sum()
        return {
            "focal": torch.where(valid, focal, 0.0).sum() / num_positive.clamp(min=1),
            "l1": _masked_mean(
                (spans - target_spans).abs(), positive[..., None].expand_as(spans), 2 * num_positive
            ),
            "giou": weighted_giou.sum() / centerness_sum.clamp(min=torch.finfo(torch.float32).eps),
            "centerness": _masked_mean(centerness_bce, positive, num_positive),
        }

    def _alignment_losses(
        self, outputs: SGDetrModelOutput, targets: SGDetrTargets, counts: Mapping[str, Tensor | None]
    ) -> dict[str, Tensor]:
        """Eq. 14 (CG-DETR), unweighted, on the samples that have relevant clips.

        ``align``: cross-entropy over the raw cosines ``[cos(m_b, s_1..G); cos(n_b, s_1..G)]`` with target b
        (moment token m_b, non-moment token n_b, sentence tokens s of the global batch's G samples, the
        model's ``sentence_pool``; the batch itself without a context). ``bce``: BCE of ``m_b · z_{b,t}``
        (unnormalised) against the moment mask, over real clips.
        """
        moment_mask = targets.moment_mask
        rows = moment_mask.any(1)
        pool = outputs.sentence_embeds if outputs.sentence_pool is None else outputs.sentence_pool
        start = 0 if targets.context is None else targets.context.start
        sentences = F.normalize(pool.float(), dim=-1)
        moment_tokens = outputs.moment_tokens.float()
        similarity = torch.cat(
            [
                F.normalize(moment_tokens, dim=-1) @ sentences.T,
                F.normalize(outputs.nonmoment_tokens.float(), dim=-1) @ sentences.T,
            ],
            dim=1,
        )  # (B, 2G)
        own_sentence = start + torch.arange(similarity.shape[0], device=similarity.device)
        align = F.cross_entropy(similarity, own_sentence, reduction="none")
        frame_logits = torch.einsum("bd,bld->bl", moment_tokens, outputs.moment_frame_outputs.float())
        frame_bce = F.binary_cross_entropy_with_logits(frame_logits, moment_mask.float(), reduction="none")
        return {
            "align": _masked_mean(align, rows, counts["moment_rows"]),
            "bce": _masked_mean(frame_bce, targets.video_mask & rows[:, None], counts["moment_row_clips"]),
        }

    # ------------------------------------------------------------------ total

    def _add_terms(
        self,
        loss_dict: dict[str, Tensor],
        prefix: str,
        suffix: str,
        terms: Mapping[str, Tensor],
        term_weighted: bool = True,
    ) -> None:
        """Weight ``terms`` by their λ (when ``term_weighted``) and their prefix's λ, store as flat keys."""
        for name, value in terms.items():
            weight = self.prefix_weights[prefix] * (self.term_weights[name] if term_weighted else 1.0)
            loss_dict[f"{prefix}_{name}{suffix}"] = weight * value

    def _add_set_terms(
        self, loss_dict: dict[str, Tensor], prefix: str, suffixes: Sequence[str], terms: Mapping[str, Tensor]
    ) -> None:
        """:meth:`_add_terms` of per-set terms ``(S,)``, set ``i`` under ``suffixes[i]``."""
        for index, suffix in enumerate(suffixes):
            self._add_terms(loss_dict, prefix, suffix, {name: value[index] for name, value in terms.items()})

    def forward(
        self,
        encoder_outputs: SGDetrModelOutput,
        detector_outputs: SGDetrDetectorOutput,
        targets: SGDetrTargets,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute eq. 15.

        Args:
            encoder_outputs: the encoder side's outputs (saliencies; negative-pair pass and moment encoder
                when they ran).
            detector_outputs: the detector's outputs with the training query groups.
            targets: the batch's parsed labels.

        Returns:
            ``(loss, loss_dict)``: the scalar total and every weighted term (they sum to the total).
        """
        enc, det = encoder_outputs, detector_outputs
        loss_dict: dict[str, Tensor] = {}
        context = targets.context
        counts = (
            _OWN_COUNTS if context is None or context.loss_normalizers is None else context.loss_normalizers
        )

        # the negative pairs ran when their saliencies are there
        neg_rows = targets.neg_pair_mask if enc.neg_local_saliency is not None else None
        for suffix, scores, neg_scores in (
            ("local", enc.local_saliency, enc.neg_local_saliency),
            ("global", enc.global_saliency, enc.neg_global_saliency),
        ):
            if scores is None:
                continue
            terms = self._highlight_losses(
                scores.float(), None if neg_rows is None else neg_scores.float(), neg_rows, targets, counts
            )
            self._add_terms(loss_dict, "hl", f"_{suffix}", terms, term_weighted=False)

        # the Hungarian-matched sets, matched together: the decoder's layers, then the hybrid detector's query
        # selection; the losses of each group of sets in one pass, as (sets, B, Q, ...)
        decoder = det.decoder
        layer_suffixes = [f"_layer{layer}" for layer in range(decoder.logits.shape[1])]
        matched = [
            (
                "detr",
                layer_suffixes,
                (
                    decoder.logits.transpose(0, 1),
                    decoder.spans.transpose(0, 1),
                    None if decoder.iou_logits is None else decoder.iou_logits.transpose(0, 1),
                ),
            )
        ]
        if det.selector is not None:
            matched.append(("sel", [""], (det.selector.logits[None], det.selector.spans[None], None)))
        set_matches = iter(self.matcher.match_sets([sets for _, _, sets in matched], targets.spans))
        for prefix, suffixes, sets in matched:
            matches = [next(set_matches) for _ in suffixes]
            terms = self._matched_query_set_losses(*sets, matches, targets, counts)
            self._add_set_terms(loss_dict, prefix, suffixes, terms)
        for prefix, group in (("dn", det.denoising), ("co", det.atss_queries)):
            if group is None:
                continue
            terms = self._query_set_losses(
                group.logits.transpose(0, 1), group.spans.transpose(0, 1),
                None if group.iou_logits is None else group.iou_logits.transpose(0, 1),
                group.target_spans.float()[None], group.is_positive[None],
                (group.valid & targets.has_windows[:, None])[None],
                counts[f"{prefix}_positive"], counts[f"{prefix}_valid"],
            )  # fmt: skip
            self._add_set_terms(loss_dict, prefix, layer_suffixes, terms)

        if det.atss is not None:
            terms = self._atss_losses(det.atss, det.anchor_mask, targets, counts)
            self._add_terms(loss_dict, "atss", "", terms)
        if enc.moment_tokens is not None:
            terms = self._alignment_losses(enc, targets, counts)
            self._add_terms(loss_dict, "aux", "", terms, term_weighted=False)

        loss = torch.stack(list(loss_dict.values())).sum()
        return loss, loss_dict


def moment_retrieval_loss(
    config, encoder_outputs: SGDetrModelOutput, detector_outputs: SGDetrDetectorOutput, targets: SGDetrTargets
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 15 for one batch with a criterion built from ``config`` (``SGDetrForMomentRetrieval.loss_function``)."""
    return SGDetrLoss(config)(encoder_outputs, detector_outputs, targets)

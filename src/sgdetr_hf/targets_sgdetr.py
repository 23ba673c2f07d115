"""Training targets of SG-DETR: the user's ``labels`` parsed and validated once, as batch tensors.

The model calls :func:`prepare_targets` at the start of a training forward; the detector (query groups, ATSS
assignment), the encoder side (negative pairs, moment encoder) and the objective (``loss_sgdetr``) all read the
resulting :class:`SGDetrTargets`. Nothing here owns random state: the random choices of a sample (its
margin-ranking clip pairs and the seed of its ATSS-positive query subset) come with its label, made by the
collator from (seed, epoch, sample id), or are drawn from torch's global RNG when a label lacks them.

Shipped to the Hub as remote code (flat module, relative imports only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Range of the per-sample seeds that key the ATSS-positive query subset (see ``detector_sgdetr``).
SAMPLING_SEED_RANGE = 1000.0


@dataclass
class SGDetrBatchContext:
    """The larger batch a forward computes one part of (a process's share and / or one gradient-accumulation
    micro-batch of a global batch), so that the parts' losses add up to the objective of the whole batch.

    Built once per optimizer step by the trainer (``sgdetr_hf.training.global_batch``) and passed as
    ``model(..., labels=..., batch_context=...)``; without it a forward's batch is the whole batch. The in-batch
    parts of the objective are defined on global batch indices: the negative pair of sample ``g`` is its video
    with the text of sample ``(g + 1) % G``, and the alignment pool holds the sentences of all ``G`` samples.
    The forward recomputes from the raw text features below what it needs of the samples it does not hold,
    so each part computes exactly its share of the global loss and of its gradient.

    Attributes:
        text_features ``(G, N, d_t)`` and text_mask ``(G, N)`` bool: the raw query features of the global batch.
        start: index in the global batch of this forward's first sample (its samples are ``start .. start+B-1``).
        neg_pair_mask ``(G,)`` bool: video g with the text of sample ``(g + 1) % G`` is a real negative pair.
        loss_normalizers: the global count of each normaliser of the objective (summed over processes and
            micro-batches, see ``loss_sgdetr.count_loss_normalizers``), or None for the forward's own counts.
        atss_query_slots: the Co-DETR ATSS-positive query slots of every video (the global batch's largest
            number of ATSS positives, capped), or None for this forward's own maximum.
    """

    text_features: Tensor
    text_mask: Tensor
    start: int
    neg_pair_mask: Tensor
    loss_normalizers: dict[str, Tensor] | None = None
    atss_query_slots: int | None = None


@dataclass
class SGDetrTargets:
    """The labels of one batch as tensors on the model's device (fp32 where floating).

    Attributes:
        spans: B tensors ``(K_b, 2)`` of normalised ``(center, width)`` windows (``K_b`` may be 0); the
            Hungarian matcher's input.
        padded_spans ``(B, M, 2)`` and span_mask ``(B, M)`` bool: the same windows padded to ``M = max K_b``.
        saliency ``(B, L)``: per-clip relevance, 0 = not relevant and 0 at padding (QVHighlights: 0..12).
        video_mask ``(B, L)`` bool. moment_mask ``(B, L)`` bool: relevant real clips (``saliency > 0``).
        has_windows ``(B,)`` bool: the sample brings moment-retrieval supervision.
        neg_pair_mask ``(B,)`` bool: video b with the text of sample ``(b + 1) % B`` is a real negative pair.
        margin_pos_idx / margin_neg_idx ``(B, P)`` long and margin_pair_valid ``(B, P)`` bool: the clip pairs
            of the margin-ranking loss (eq. 11); pairs of a sample without a relevant clip are invalid.
        sampling_seeds ``(B,)`` float in ``[0, SAMPLING_SEED_RANGE)``: key of each sample's ATSS-positive
            query subset and denoising noise.
        context: the global batch this one is part of (:class:`SGDetrBatchContext`), or None.
    """

    spans: list[Tensor]
    padded_spans: Tensor
    span_mask: Tensor
    saliency: Tensor
    video_mask: Tensor
    moment_mask: Tensor
    has_windows: Tensor
    neg_pair_mask: Tensor
    margin_pos_idx: Tensor
    margin_neg_idx: Tensor
    margin_pair_valid: Tensor
    sampling_seeds: Tensor
    context: SGDetrBatchContext | None = None


# ============================================================================================ margin pairs
def pick_random_member(members: Tensor, uniforms: Tensor) -> Tensor:
    """Index of a uniformly random True entry per row, for one or several draws.

    Args:
        members: (B, L) bool.
        uniforms: (..., B) in [0, 1), one per draw and row.

    Returns:
        (..., B) long. The ``floor(u * count)``-th member is found with a cumulative sum, so a draw costs one
        uniform per row whatever L is. Rows without members return an arbitrary valid index (callers mask).
    """
    counts = members.sum(1)
    rank = (uniforms * counts).floor().long().minimum((counts - 1).clamp(min=0))
    index = (members.cumsum(1) <= rank[..., None]).sum(-1)
    return index.clamp(max=members.shape[1] - 1)


def sample_margin_pairs(
    saliency: Tensor, video_mask: Tensor, uniforms: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The margin-ranking clip pairs of eq. 11 (CG-DETR's sampling), vectorised over the batch.

    Pair 0 is "hard": a clip of the highest saliency against a relevant clip of the lowest saliency; when all
    relevant clips share one score (binary labels) the negative is a random non-relevant clip instead, and when
    there is none either, the positive itself (the loss is then the constant δ). The other pairs are "easy": a
    random relevant clip against a random non-relevant clip (the hard pair again if the sample has no
    non-relevant clip). Samples without a relevant clip get invalid pairs. The draws depend only on the real
    clips, so padding does not change them.

    Args:
        saliency: (B, L) relevance, 0 = not relevant. video_mask: (B, L) bool.
        uniforms: (2, P, B) in [0, 1): row 0 picks positives, row 1 negatives; pair 0 is the hard pair.

    Returns:
        ``pos_idx``, ``neg_idx`` (B, P) long (real clips) and ``pair_valid`` (B, P) bool.
    """
    relevant = (saliency > 0) & video_mask
    irrelevant = (saliency <= 0) & video_mask
    highest = torch.where(relevant, saliency, -torch.inf).amax(1, keepdim=True)
    lowest = torch.where(relevant, saliency, torch.inf).amin(1, keepdim=True)
    top = relevant & (saliency == highest)
    bottom = relevant & (saliency == lowest) & (lowest < highest)
    hard_negatives = torch.where(bottom.any(1, keepdim=True), bottom, irrelevant)

    hard_pos = pick_random_member(top, uniforms[0, 0])
    hard_neg = torch.where(
        hard_negatives.any(1), pick_random_member(hard_negatives, uniforms[1, 0]), hard_pos
    )
    has_irrelevant = irrelevant.any(1, keepdim=True)
    easy_pos = torch.where(has_irrelevant, pick_random_member(relevant, uniforms[0, 1:]).T, hard_pos[:, None])
    easy_neg = torch.where(
        has_irrelevant, pick_random_member(irrelevant, uniforms[1, 1:]).T, hard_neg[:, None]
    )

    pair_valid = relevant.any(1, keepdim=True).expand(-1, uniforms.shape[1])
    # invalid pairs point at clip 0, so that every index is a real clip
    pos_idx = torch.cat([hard_pos[:, None], easy_pos], dim=1).masked_fill(~pair_valid, 0)
    neg_idx = torch.cat([hard_neg[:, None], easy_neg], dim=1).masked_fill(~pair_valid, 0)
    return pos_idx, neg_idx, pair_valid


# ============================================================================================ parsing
def _parse_spans(labels: Sequence[Mapping], device: torch.device) -> list[Tensor]:
    spans = []
    for i, label in enumerate(labels):
        sample = torch.as_tensor(label["spans"], dtype=torch.float32, device=device)
        if sample.numel() == 0:
            sample = sample.reshape(0, 2)
        elif sample.ndim != 2 or sample.shape[1] != 2:
            raise ValueError(
                f"labels[{i}]['spans'] must have shape (K, 2) of normalised (center, width), got "
                f"{tuple(sample.shape)}."
            )
        spans.append(sample)
    all_spans = torch.cat(spans)
    # NaN fails every comparison, so this also rejects non-finite values
    bad = ~(((all_spans >= 0) & (all_spans <= 1)).all(-1) & (all_spans[:, 1] > 0))
    if bad.any():
        raise ValueError(
            "labels spans must be normalised (center, width) in [0, 1] with width > 0, got "
            f"{all_spans[bad][0].tolist()}; convert seconds by dividing by L_b * clip_length."
        )
    return spans


def _parse_saliency(labels: Sequence[Mapping], video_mask: Tensor) -> Tensor:
    num_clips = video_mask.shape[1]
    scores = [torch.as_tensor(label["saliency_scores"], dtype=torch.float32) for label in labels]
    for i, (sample, valid_length) in enumerate(zip(scores, video_mask.sum(1).tolist())):
        if sample.ndim != 1 or not valid_length <= sample.numel() <= num_clips:
            raise ValueError(
                f"labels[{i}]['saliency_scores'] must be 1-D with one score per clip (between the "
                f"{int(valid_length)} real clips and the padded length {num_clips}), got shape {tuple(sample.shape)}."
            )
    saliency = torch.nn.utils.rnn.pad_sequence(scores, batch_first=True)
    saliency = F.pad(saliency, (0, num_clips - saliency.shape[1])).to(video_mask.device)
    if not torch.isfinite(saliency).all() or (saliency < 0).any():
        raise ValueError("labels saliency_scores must be finite and >= 0 (0 = not relevant).")
    return torch.where(video_mask, saliency, 0.0)


def _per_sample_entries(labels: Sequence[Mapping], keys: tuple[str, ...]) -> bool:
    """Whether the labels carry ``keys``: all of them in every sample, or none (else ``ValueError``)."""
    has = [all(key in label for key in keys) for label in labels]
    if any(has) and not all(has):
        raise ValueError(
            f"Either every label dict has {' and '.join(map(repr, keys))}, or none has; got them in samples "
            f"{[i for i, h in enumerate(has) if h]} only."
        )
    return all(has)


def _margin_pairs(
    labels: Sequence[Mapping], saliency: Tensor, video_mask: Tensor, num_pairs: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The labels' ``saliency_pos_idx`` / ``saliency_neg_idx``, or pairs sampled with torch's global RNG."""
    relevant = ((saliency > 0) & video_mask).any(1, keepdim=True)
    if not _per_sample_entries(labels, ("saliency_pos_idx", "saliency_neg_idx")):
        return sample_margin_pairs(
            saliency, video_mask, torch.rand(2, num_pairs, saliency.shape[0]).to(saliency)
        )
    try:
        pos_idx = torch.stack([torch.as_tensor(label["saliency_pos_idx"]).long() for label in labels])
        neg_idx = torch.stack([torch.as_tensor(label["saliency_neg_idx"]).long() for label in labels])
    except RuntimeError as error:
        raise ValueError(
            "saliency_pos_idx / saliency_neg_idx must be 1-D with the same number of pairs in every sample."
        ) from error
    if pos_idx.shape != neg_idx.shape or pos_idx.ndim != 2:
        raise ValueError("saliency_pos_idx and saliency_neg_idx must both have shape (P,) in every sample.")
    pos_idx, neg_idx = pos_idx.to(video_mask.device), neg_idx.to(video_mask.device)
    valid_lengths = video_mask.sum(1, keepdim=True)
    if ((pos_idx < 0) | (neg_idx < 0) | (pos_idx >= valid_lengths) | (neg_idx >= valid_lengths)).any():
        raise ValueError("saliency_pos_idx / saliency_neg_idx must index real clips: 0 <= idx < L_b.")
    return pos_idx, neg_idx, relevant.expand_as(pos_idx)


def _sampling_seeds(labels: Sequence[Mapping], device: torch.device) -> Tensor:
    if not _per_sample_entries(labels, ("sampling_seed",)):
        return torch.rand(len(labels)).to(device) * SAMPLING_SEED_RANGE
    seeds = torch.tensor([float(label["sampling_seed"]) for label in labels], device=device)
    if not ((seeds >= 0) & (seeds < SAMPLING_SEED_RANGE)).all():
        raise ValueError(
            f"labels sampling_seed must be in [0, {SAMPLING_SEED_RANGE:g}), got {seeds.tolist()}."
        )
    return seeds


def _negative_pairs(labels: Sequence[Mapping], video_features: Tensor, video_mask: Tensor) -> Tensor:
    """(B,) bool: the rolled pair (video b, text of sample (b+1) % B) is a real negative. With ``video_id``
    labels a pair from the same source video is not; without them, a pair with identical features is not."""
    batch = video_mask.shape[0]
    device = video_mask.device
    if batch < 2:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    ids = [label.get("video_id") for label in labels]
    if all(i is not None for i in ids):
        return torch.tensor([a != b for a, b in zip(ids, ids[1:] + ids[:1])], device=device)
    rolled_features, rolled_mask = video_features.roll(-1, 0), video_mask.roll(-1, 0)
    same = ((video_features == rolled_features) | ~video_mask[..., None]).flatten(1).all(1)
    return ~(same & (video_mask == rolled_mask).all(1))


def _check_context(context: SGDetrBatchContext, batch: int, text_feature_dim: int) -> None:
    if context.neg_pair_mask.ndim != 1 or context.neg_pair_mask.dtype != torch.bool:
        raise ValueError(
            "batch_context.neg_pair_mask must be a bool (G,) tensor, one flag per global sample."
        )
    size = context.neg_pair_mask.shape[0]
    if not 0 <= context.start <= size - batch:
        raise ValueError(
            f"batch_context: samples {context.start}..{context.start + batch - 1} are not inside its global "
            f"batch of {size} samples."
        )
    text = context.text_features
    if text.ndim != 3 or text.shape[0] != size or text.shape[-1] != text_feature_dim:
        raise ValueError(
            f"batch_context.text_features must have shape ({size}, N, {text_feature_dim}), got {tuple(text.shape)}."
        )
    if context.text_mask.shape != text.shape[:2] or context.text_mask.dtype != torch.bool:
        raise ValueError("batch_context.text_mask must be a bool (G, N) mask matching its text_features.")


def prepare_targets(
    labels: Sequence[Mapping],
    video_features: Tensor,
    video_mask: Tensor,
    num_margin_pairs: int,
    context: SGDetrBatchContext | None = None,
    text_feature_dim: int | None = None,
) -> SGDetrTargets:
    """Validate ``labels`` (transformers DETR-family style: a list of B dicts) and build the batch targets.

    Each label has ``spans`` ``(K_b, 2)`` normalised (center, width) (``K_b`` may be 0) and ``saliency_scores``
    ``(L_b..L,)``; optional ``video_id`` (str, for negative pairs), ``saliency_pos_idx`` / ``saliency_neg_idx``
    ``(P,)`` long and ``sampling_seed`` (float in ``[0, 1000)``), see :class:`SGDetrTargets`.

    Args:
        video_features ``(B, L, d_v)`` and video_mask ``(B, L)`` bool: the validated model inputs.
        num_margin_pairs: pairs per sample when they are sampled here (``config.num_saliency_pairs``).
        context: the global batch this one is part of; its negative-pair flags replace the in-batch ones.
        text_feature_dim: the model's ``d_t``, to check ``context`` against.
    Raises:
        ValueError: naming the label and what is wrong with it.
    """
    batch = video_mask.shape[0]
    if not isinstance(labels, Sequence) or isinstance(labels, (str, bytes)) or len(labels) != batch:
        length = f" of length {len(labels)}" if isinstance(labels, Sequence) else ""
        raise ValueError(
            f"labels must be a list of {batch} dicts (one per sample), got {type(labels).__name__}{length}."
        )
    for key in ("spans", "saliency_scores"):
        missing = [i for i, label in enumerate(labels) if not isinstance(label, Mapping) or key not in label]
        if missing:
            raise ValueError(f"labels[{missing[0]}] has no '{key}' entry; every label dict needs one.")
    device = video_mask.device
    spans = _parse_spans(labels, device)
    num_windows = torch.tensor([len(s) for s in spans], device=device)
    padded_spans = torch.nn.utils.rnn.pad_sequence(spans, batch_first=True)  # (B, M, 2), M may be 0
    span_mask = torch.arange(padded_spans.shape[1], device=device)[None, :] < num_windows[:, None]
    saliency = _parse_saliency(labels, video_mask)
    if context is None:
        neg_pair_mask = _negative_pairs(labels, video_features, video_mask)
    else:
        _check_context(context, batch, text_feature_dim or context.text_features.shape[-1])
        neg_pair_mask = context.neg_pair_mask[context.start : context.start + batch].to(device)
    pos_idx, neg_idx, pair_valid = _margin_pairs(labels, saliency, video_mask, num_margin_pairs)
    return SGDetrTargets(
        spans=spans,
        padded_spans=padded_spans,
        span_mask=span_mask,
        saliency=saliency,
        video_mask=video_mask,
        moment_mask=(saliency > 0) & video_mask,
        has_windows=num_windows > 0,
        neg_pair_mask=neg_pair_mask,
        margin_pos_idx=pos_idx,
        margin_neg_idx=neg_idx,
        margin_pair_valid=pair_valid,
        sampling_seeds=_sampling_seeds(labels, device),
        context=context,
    )


__all__ = [
    "SGDetrBatchContext",
    "SGDetrTargets",
    "pick_random_member",
    "prepare_targets",
    "sample_margin_pairs",
]

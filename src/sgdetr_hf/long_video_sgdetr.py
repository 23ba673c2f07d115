"""Moment retrieval on videos longer than the training length: overlapping windows and their fusion.

SG-DETR is trained on videos of at most ``config.max_num_clips`` clips (75 clips = 150 s on QVHighlights).
Its positions and spans are normalised by the video length, so running it on a 20-minute video in one go
asks it to find a 10-second moment as a 1 % wide span, a scale it never saw. Instead:

1. :func:`sliding_windows` cuts the clip sequence into windows of the training length that overlap by
   ``overlap_clips`` (the last window is aligned to the video's end, so every clip is covered);
2. the model runs on every (window, query) pair as an ordinary short video;
3. :func:`fuse_window_saliency` averages each clip's saliency over the windows that contain it, weighting
   each window by how far the clip is from that window's edges (a clip in the middle of a window was seen
   with context on both sides);
4. :func:`fuse_window_spans` shifts each window's predicted spans by the window's start time, pools them
   per query, rescales each span's score by the relevance of the clips it covers (below), and removes the
   duplicates that overlapping windows produce (1-D NMS).

Why the rescaling: detection scores are only comparable *within* a window. The detector was trained on
videos that always contain the moment, so a window without it still yields confident spans. The saliency
is trained with a per-clip BCE (relevant vs. not, and all-zero for unrelated video-text pairs), so
``sigmoid(saliency)`` estimates the probability that a clip is relevant in absolute terms; a span's mean
over its clips (:func:`mean_clip_relevance`) makes spans of different windows comparable.

A moment longer than the overlap can be cut by every window; choose ``overlap_clips`` at least as long as
the longest moment expected. Shipped to the Hub as remote code: imports only torch, ``.spans`` and ``.postprocessing_sgdetr``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .postprocessing_sgdetr import DEFAULT_TOP_K, is_integer, post_process_moment_retrieval, round_scores
from .spans import nms_1d


def sliding_windows(num_clips: int, window_clips: int, overlap_clips: int) -> Tensor:
    """Clip indices of overlapping windows covering ``num_clips`` clips.

    Args:
        num_clips: clips in the video (``L``).
        window_clips: clips per window (the training length, e.g. 75).
        overlap_clips: clips shared by consecutive windows, ``0 <= overlap_clips < window_clips``.

    Returns:
        ``(W, min(window_clips, L))`` long: row ``w`` holds the clip indices of window ``w``. Windows start
        every ``window_clips - overlap_clips`` clips; the last one ends at the last clip (so it may overlap
        its neighbour by more). A video no longer than one window gives the single row ``0..L-1``.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if window_clips < 1:
        raise ValueError(f"window_clips must be >= 1, got {window_clips}")
    if not 0 <= overlap_clips < window_clips:
        raise ValueError(f"overlap_clips must be in [0, window_clips={window_clips}), got {overlap_clips}")
    window = min(window_clips, num_clips)
    last_start = num_clips - window
    starts = torch.arange(0, last_start, window_clips - overlap_clips)
    starts = torch.cat([starts, torch.tensor([last_start])])
    return starts[:, None] + torch.arange(window)[None, :]


def mean_clip_relevance(spans: Tensor, clip_relevance: Tensor, clip_length: float) -> Tensor:
    """Mean relevance of the clips each span covers.

    Args:
        spans: ``(Q, M, 2)`` (start, end) in seconds of the video.
        clip_relevance: ``(Q, L)`` per-clip relevance in [0, 1] (``sigmoid`` of the saliency logits).
        clip_length: seconds per clip; clip ``i`` covers ``[i c, (i + 1) c)``.

    Returns:
        ``(Q, M)``: the mean of ``clip_relevance`` over clips ``floor(start / c) .. ceil(end / c) - 1``
        (at least one clip), from prefix sums.
    """
    num_clips = clip_relevance.shape[1]
    first = torch.floor(spans[..., 0] / clip_length).long().clamp(0, num_clips - 1)
    stop = torch.ceil(spans[..., 1] / clip_length).long().clamp(max=num_clips)
    stop = torch.maximum(stop, first + 1)
    prefix = F.pad(clip_relevance.cumsum(1), (1, 0))  # (Q, L + 1), prefix[:, i] = sum of clips < i
    return (prefix.gather(1, stop) - prefix.gather(1, first)) / (stop - first)


def fuse_window_spans(
    spans: Tensor,
    scores: Tensor,
    valid: Tensor,
    window_offsets: Tensor,
    clip_relevance: Tensor,
    clip_length: float,
    iou_threshold: float,
    top_k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pool the windows' predictions per query in video time and keep the best non-duplicate ``top_k``.

    Args:
        spans: ``(Q, W, K, 2)`` (start, end) in seconds from the start of each window.
        scores: ``(Q, W, K)`` detection scores in [0, 1] (comparable within a window only).
        valid: ``(Q, W, K)`` bool, False for padding.
        window_offsets: ``(W,)`` start time of each window in seconds.
        clip_relevance: ``(Q, L)`` fused per-clip relevance in [0, 1]; each span's score is multiplied by
            its :func:`mean_clip_relevance`.
        clip_length: seconds per clip.
        iou_threshold: a span overlapping a better one by IoU ``> iou_threshold`` is a duplicate.
        top_k: spans kept per query.

    Returns:
        spans ``(Q, k, 2)`` in seconds of the video, scores ``(Q, k)`` and validity ``(Q, k)``, best first,
        with ``k = min(top_k, W * K)``.
    """
    num_queries = spans.shape[0]
    video_spans = (spans + window_offsets.to(spans)[None, :, None, None]).reshape(num_queries, -1, 2)
    valid = valid.reshape(num_queries, -1)
    scores = scores.reshape(num_queries, -1) * mean_clip_relevance(video_spans, clip_relevance, clip_length)
    keep = nms_1d(video_spans, scores, valid, iou_threshold)
    ranked = scores.masked_fill(~keep, -math.inf)
    top_scores, order = ranked.topk(min(top_k, ranked.shape[1]), dim=1)
    top_spans = video_spans.gather(1, order[..., None].expand(-1, -1, 2))
    return top_spans, top_scores, torch.isfinite(top_scores)


def fuse_window_saliency(saliency: Tensor, windows: Tensor, num_clips: int) -> Tensor:
    """Per-clip saliency of the whole video from the windows' saliency.

    Args:
        saliency: ``(Q, W, Lw)`` saliency logits of every window, in window clip order.
        windows: ``(W, Lw)`` long clip index of every window position (:func:`sliding_windows`).
        num_clips: clips in the video (``L``).

    Returns:
        ``(Q, L)``: for each clip, the mean of its windows' logits weighted by ``1 + min(i, Lw - 1 - i)``,
        the distance (in clips) of position ``i`` from its window's nearer edge, plus one.
    """
    window = windows.shape[1]
    position = torch.arange(window, device=saliency.device)
    weight = (1 + torch.minimum(position, window - 1 - position)).to(saliency.dtype)  # (Lw,)
    index = windows.to(saliency.device).flatten()
    weighted = (saliency * weight).flatten(1)  # (Q, W * Lw)
    total = torch.zeros(saliency.shape[0], num_clips, dtype=saliency.dtype, device=saliency.device)
    total.index_add_(1, index, weighted)
    norm = torch.zeros(num_clips, dtype=saliency.dtype, device=saliency.device)
    norm.index_add_(0, index, weight.repeat(windows.shape[0]))
    return total / norm


def checked_duration(duration: float | None, num_clips: int, clip_length: float) -> float:
    """The duration in seconds of a video of ``num_clips`` feature rows (``None``: ``num_clips * clip_length``),
    refused (``ValueError``) unless finite and in ``((L - 1) * clip_length, (L + 1) * clip_length)``.

    The features of a video cover ``ceil(duration / clip_length)`` clips, the last one possibly partial: a
    duration at most ``(L - 1) * clip_length`` would leave the last clip after the end of the video; its
    mirror image, a duration of ``(L + 1) * clip_length`` or more, is longer than the features cover by a
    clip or more. The one clip let through on either side keeps the features of an extractor that leaves a
    partial last clip out (``floor`` instead of ``ceil``) usable: every QVHighlights, Charades-STA and TACoS
    duration passes with the clip count of either convention (tested on their annotations).
    """
    if duration is None:
        return num_clips * clip_length
    duration = float(duration)
    if not math.isfinite(duration):
        raise ValueError(f"duration must be a finite number of seconds, got {duration}")
    if duration <= (num_clips - 1) * clip_length:
        raise ValueError(
            f"duration {duration} s is too short for {num_clips} clips of {clip_length} s: the last clip would start "
            "after the end of the video; pass the video's real duration (or none)"
        )
    if duration >= (num_clips + 1) * clip_length:
        raise ValueError(
            f"duration {duration} s is too long for {num_clips} clips of {clip_length} s: they cover "
            f"{num_clips * clip_length:g} s of video (a duration below {(num_clips + 1) * clip_length:g} s); "
            "pass the video's real duration (or none), or the features of the whole video"
        )
    return duration


@torch.no_grad()
def retrieve_moments(
    model,
    video_features: Tensor,
    text_features: Tensor,
    text_mask: Tensor,
    duration: float | None = None,
    top_k: int = 10,
    window_overlap: float = 1 / 3,
    window_batch_size: int = 64,
    duplicate_iou: float = 0.6,
) -> list[dict[str, list]]:
    """Windows and saliency for every query on one video of any length (the video is encoded already).

    Args:
        model: an ``SGDetrForMomentRetrieval`` in eval mode.
        video_features: ``(L, d_v)`` clip features of the whole video.
        text_features: ``(Q, N, d_t)`` token features of the queries, ``text_mask`` ``(Q, N)`` 1 = token.
        duration: the video's duration in seconds (windows are clipped to it), finite and in
            ``((L - 1) * clip_length, (L + 1) * clip_length)``; default ``L * clip_length``.
        top_k: windows returned per query.
        window_overlap: fraction of a window shared with the next one, in ``[0, 1)``; only used when the
            video has more than ``config.max_num_clips`` clips.
        window_batch_size: (window, query) pairs per forward pass (bounds the memory), an integer >= 1.
        duplicate_iou: spans of overlapping windows with an IoU above this are one moment (1-D NMS; 0.6 as
            for the ATSS candidates of the post-processing).

    Returns:
        Q dicts ``{"pred_relevant_windows": [[start_s, end_s, score], ...], "pred_saliency_scores": [...]}``
        (one saliency logit per clip of the whole video). A video of at most ``max_num_clips`` clips is one
        window: the result is exactly ``post_process_moment_retrieval`` of one forward pass.
    """
    config = model.config
    if not 0.0 <= window_overlap < 1.0:
        raise ValueError(f"window_overlap must be a fraction in [0, 1), got {window_overlap}")
    if not is_integer(window_batch_size):
        raise ValueError(f"window_batch_size must be an integer >= 1, got {window_batch_size!r}")
    if window_batch_size < 1:
        raise ValueError(f"window_batch_size must be >= 1, got {window_batch_size}")
    num_clips, num_queries = video_features.shape[0], text_features.shape[0]
    clip_length = float(config.clip_length)
    duration = checked_duration(duration, num_clips, clip_length)
    windows = sliding_windows(num_clips, config.max_num_clips, int(window_overlap * config.max_num_clips))
    num_windows, window = windows.shape
    window_offsets = windows[:, 0].double() * clip_length  # (W,) seconds, float64 as the post-processing's
    window_durations = (duration - window_offsets).clamp(max=window * clip_length)
    per_window_k = max(top_k, DEFAULT_TOP_K) if num_windows > 1 else top_k

    # (window, query) pairs, query-major: pair p = q * W + w
    pair_window = torch.arange(num_windows).repeat(num_queries)
    pair_query = torch.arange(num_queries).repeat_interleave(num_windows)
    window_features = video_features[windows.to(video_features.device)]  # (W, Lw, d_v)
    window_mask = torch.ones(window, dtype=torch.long, device=video_features.device)
    predictions, saliency = [], []
    for start in range(0, len(pair_window), window_batch_size):  # memory-bounded chunks of pairs
        w, q = pair_window[start : start + window_batch_size], pair_query[start : start + window_batch_size]
        outputs = model(
            video_features=window_features[w.to(video_features.device)],
            video_mask=window_mask.expand(len(w), -1),
            text_features=text_features[q.to(text_features.device)],
            text_mask=text_mask[q.to(text_mask.device)],
        )
        predictions += post_process_moment_retrieval(
            outputs, window_durations[w], top_k=per_window_k, config=config
        )
        scores = outputs.global_saliency if outputs.global_saliency is not None else outputs.local_saliency
        saliency.append(scores.float().cpu())
    if num_windows == 1:
        return predictions

    window_saliency = torch.cat(saliency).reshape(num_queries, num_windows, window)
    video_saliency = fuse_window_saliency(window_saliency, windows, num_clips)  # (Q, L)
    # The post-processor returns lists; pad them back into one tensor (Q * W, K, 3) for the fusion.
    padded = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p["pred_relevant_windows"], dtype=torch.float64).reshape(-1, 3) for p in predictions],
        batch_first=True,
        padding_value=math.nan,
    ).reshape(num_queries, num_windows, -1, 3)
    spans, scores, valid = fuse_window_spans(
        padded[..., :2].nan_to_num(0.0),
        padded[..., 2].nan_to_num(0.0),
        ~padded[..., 2].isnan(),
        window_offsets,
        torch.sigmoid(video_saliency),
        clip_length,
        duplicate_iou,
        top_k,
    )
    # a window's end is its window's duration plus the window's start, which may round a hair past the video's
    # end: clip it there again
    spans = spans.clamp(0.0, duration)
    fused = torch.cat([spans, round_scores(scores)[..., None]], dim=-1).tolist()
    return [
        {
            "pred_relevant_windows": [window_row for window_row, ok in zip(rows, keep) if ok],
            "pred_saliency_scores": sal,
        }
        for rows, keep, sal in zip(fused, valid.tolist(), video_saliency.tolist())
    ]


__all__ = [
    "checked_duration",
    "fuse_window_saliency",
    "fuse_window_spans",
    "mean_clip_relevance",
    "retrieve_moments",
    "sliding_windows",
]

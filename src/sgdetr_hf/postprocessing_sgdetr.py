"""From SG-DETR outputs to QVHighlights-style predictions (paper §3.5-3.6 and §4.4: S_det, WBF).

``post_process_moment_retrieval`` turns a batch of [`SGDetrOutput`] into one dict per query:

- ``pred_relevant_windows``: ``[[start_sec, end_sec, score], ...]``, best first, at most ``top_k``, clipped to
  ``[0, duration]`` with ``start < end``. Candidates: the DETR queries scored by ``S_det`` and the ATSS anchors
  scored by ``sqrt(sigmoid(cls) * sigmoid(ctr))`` (those shorter than one clip once clipped to the video
  left out, then top-100 -> 1-D NMS at 0.6 -> top-25), merged by 1-D
  weighted span fusion (``fusion_mode="wbf"``, the default with the ATSS head), or one head alone
  (``"detr"`` / ``"atss"``). These settings (paper §4.4) are arguments of the post-processing, not of the
  model: the same weights can be post-processed either way.
- ``pred_saliency_scores``: one raw score per real clip (``S_global``, or ``S_local`` without the global
  saliency module), in clip order.

Spans are converted with ``T_b = L_b * clip_length`` (the frame the model is trained in). The work is
vectorised over the batch; the only loops are the span fusion's over ranked candidates, the NMS's few
fixed-point passes and the final conversion of each sample to Python lists.

The processor exposes it as ``SGDetrProcessor.post_process_moment_retrieval``. Hub remote code: it returns
plain lists and writes no file (``sgdetr_hf.write_qvhighlights_predictions`` writes the JSON Lines).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .configuration_sgdetr import SGDetrConfig
from .loading_sgdetr import non_finite_parameters
from .spans import nms_1d, span_cw_to_se, weighted_span_fusion

_DEFAULTS = SGDetrConfig()
#: Windows returned per query (the QVHighlights evaluator reads 10).
DEFAULT_TOP_K = 10
_FUSION_MODES = ("wbf", "detr", "atss")


def _get(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


class NonFiniteOutputError(ValueError):
    """Model outputs hold NaN or Inf: the model's weights or its inputs are not finite (a corrupted
    checkpoint, features of a broken encoder) or the forward pass overflowed (e.g. in float16)."""


def describe_non_finite_weights(names: Sequence[str], source: str) -> str:
    """A sentence naming the non-finite weights of ``source`` (a folder or Hub id) and what to do."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"the weights of {source or 'the model'} hold NaN or Inf ({shown}): the checkpoint is corrupt; "
        "download or convert it again, or retrain"
    )


def _check_finite(outputs: Any, mask: Tensor, saliency: Tensor) -> None:
    """Refuse NaN / Inf in the outputs post-processing reads (padding clips and anchors are not read)."""
    read = {"pred_spans": _get(outputs, "pred_spans"), "det_scores": _get(outputs, "det_scores")}
    if _get(outputs, "atss_logits") is not None:
        anchors = _get(outputs, "anchor_mask").bool()
        read.update(
            {name: _get(outputs, name)[anchors] for name in ("atss_logits", "atss_centerness", "atss_spans")}
        )
    read["saliency"] = saliency[mask.to(saliency.device)]
    bad = [
        f"{name} ({int((~torch.isfinite(values)).sum())} of {values.numel()} values)"
        for name, values in read.items()
        if not bool(torch.isfinite(values).all())
    ]
    if bad:
        raise NonFiniteOutputError(
            f"the model's outputs hold NaN or Inf in {', '.join(bad)}: its weights or its input features are "
            "not finite (a corrupted checkpoint?), or the forward pass overflowed; check "
            "sgdetr_hf.postprocessing_sgdetr.non_finite_parameters(model) and the features"
        )


def _as_batch_vector(values: Any, batch: int, name: str) -> Tensor:
    """``values`` (a number, a sequence of numbers, an array or a tensor) as a float64 ``(batch,)`` CPU tensor
    of finite seconds > 0; ``ValueError`` naming ``name`` otherwise."""
    try:  # through NumPy, whose floats are float64 (torch makes Python floats float32)
        t = values.cpu() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.dtype == torch.bool or t.is_complex():
        raise ValueError(
            f"{name} must be numbers of seconds, one per sample ({batch}), got {values!r}; pass floats "
            "such as [150.0] (or None for L_b * clip_length)."
        )
    t = t.to(torch.float64).flatten()
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} must have one value per sample ({batch}), got {t.numel()}.")
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"{name} must be finite and > 0 (seconds), got {t.tolist()}.")
    return t


def is_real_number(value: Any) -> bool:
    """A real number of any type (Python or NumPy), not a bool (NumPy's bool is no ``numbers.Real``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    """An integer of any type (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_positive(value: Any) -> bool:
    """A finite real number > 0 (:func:`is_real_number`)."""
    return is_real_number(value) and math.isfinite(value) and value > 0


def _finite_positive(value: Any, name: str, what: str) -> float:
    """``value`` as a float when it is a finite real number > 0; ``ValueError`` naming ``name`` otherwise."""
    if not is_finite_positive(value):
        raise ValueError(f"{name} must be a finite number > 0 ({what}), got {value!r}.")
    return float(value)


def _video_mask(mask: Any, saliency: Tensor, device: torch.device) -> Tensor:
    """The ``(B, L)`` bool mask of real clips, of the outputs' shape, right-padded and with a clip in every
    sample."""
    expected = tuple(saliency.shape)
    if mask is None:
        raise ValueError(
            f"video_mask {expected} (B, L) is required: pass it or use outputs that carry video_mask."
        )
    if not isinstance(mask, Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"video_mask must be a (B, L) = {expected} tensor or nested list of 0/1, got "
                f"{type(mask).__name__}."
            ) from None
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"video_mask must have the outputs' shape (B, L) = {expected} (1 = real clip), got "
            f"{tuple(mask.shape)}: pass the video_mask of the batch these outputs were computed on."
        )
    mask = mask.to(device).bool()
    empty = (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"video_mask is all zero for sample(s) {empty}: a video without clips has no windows or "
            "saliency (the model refuses such a video too); drop those samples or pass their real mask."
        )
    # a sample's clips are read as its first L_b positions: with left padding or holes, saliency and windows
    # would come from the padding
    right_padded = torch.arange(expected[1], device=device)[None, :] < mask.sum(1, keepdim=True)
    holed = (mask != right_padded).any(1).nonzero().flatten().tolist()
    if holed:
        raise ValueError(
            f"video_mask of sample(s) {holed} is not right-padded: mark the real clips first and the padding "
            "at the end, e.g. [1, 1, 1, 0, 0] (the model refuses other masks too)."
        )
    return mask


def _atss_candidates(
    outputs: Any, lengths: Tensor, pre_nms_topk: int, nms_iou: float, post_nms_topk: int
) -> tuple[Tensor, Tensor, Tensor]:
    """ATSS top-``pre`` anchors by ``sqrt(sigmoid(z) * sigmoid(u))`` -> NMS -> top-``post``: spans (start, end),
    scores and validity, each ``(B, post)``.

    An anchor whose span, clipped to the video, is shorter than one clip (``lengths`` ``(B,)`` clips) is no
    candidate: the ATSS decoding is unbounded, so a span decoded past a video border clips to (nearly) zero
    length, and it would otherwise come out as a one-clip window at the border, with the anchor's score."""
    logits, centerness, spans = (
        _get(outputs, "atss_logits"),
        _get(outputs, "atss_centerness"),
        _get(outputs, "atss_spans"),
    )
    mask = _get(outputs, "anchor_mask").bool()
    clipped = span_cw_to_se(spans.float()).clamp(0.0, 1.0)
    # in clips, with a tolerance for spans of exactly one clip
    long_enough = (clipped[..., 1] - clipped[..., 0]) * lengths.float()[:, None] > 1.0 - 1e-3
    scores = torch.sqrt(torch.sigmoid(logits.float()) * torch.sigmoid(centerness.float()))
    scores = scores.masked_fill(~(mask & long_enough), -1.0)
    pre = min(pre_nms_topk, scores.shape[1])
    top_scores, index = scores.topk(pre, dim=1)
    top_spans = clipped.gather(1, index[..., None].expand(-1, -1, 2))
    valid = top_scores >= 0
    keep = nms_1d(top_spans, top_scores, valid, nms_iou)
    post = min(post_nms_topk, pre)
    kept_scores, order = top_scores.masked_fill(~keep, -1.0).topk(post, dim=1)
    return top_spans.gather(1, order[..., None].expand(-1, -1, 2)), kept_scores.clamp_min(0), kept_scores >= 0


def _fix_degenerate(start: Tensor, end: Tensor, duration: Tensor, width: Tensor) -> tuple[Tensor, Tensor]:
    """Windows with ``end - start`` below 1e-6 s get ``width`` seconds: the end moves forward, or the start
    moves back when the window sits at the end of the video."""
    width = torch.minimum(width, duration)
    collapsed = end - start < 1e-6
    at_end = start + width > duration
    new_start = torch.where(at_end, (duration - width).clamp_min(0), start)
    new_end = torch.where(at_end, duration, start + width)
    return torch.where(collapsed, new_start, start), torch.where(collapsed, new_end, end)


def round_scores(scores: Tensor) -> Tensor:
    """Window scores clamped at 0 and rounded to 4 decimals, in float64: a float32 0.3544 is the Python float
    0.35440000891685486, which JSON writes in full."""
    return torch.round(scores.double().clamp_min(0) * 1e4) / 1e4


@torch.no_grad()
def post_process_moment_retrieval(
    outputs: Any,
    durations: Sequence[float] | Tensor | None,
    video_mask: Tensor | None = None,
    top_k: int = DEFAULT_TOP_K,
    *,
    config: SGDetrConfig | None = None,
    clip_length: float | None = None,
    fusion_mode: str | None = None,
    round_to: float | None = None,
    atss_pre_nms_topk: int = 100,
    atss_nms_iou: float = 0.6,
    atss_post_nms_topk: int = 25,
    wbf_iou_thr: float = 0.55,
    wbf_weights: Sequence[float] = (1.0, 1.0),
    wbf_skip_thr: float = 0.0,
) -> list[dict[str, list]]:
    """Windows in seconds and per-clip saliency for every query of the batch.

    Args:
        outputs: an [`SGDetrOutput`] (or a dict with the same keys) of a batch of B queries.
        durations: ``(B,)`` video durations in seconds (windows are clipped to them); None: ``L_b * clip_length``.
        video_mask: ``(B, L)`` 1 = real clip (a tensor or a nested list), at least one per sample; defaults to
            ``outputs.video_mask``.
        top_k: windows per query (the QVHighlights evaluator reads 10).
        config: the model's config (``model.config``), for its clip length (without it: 2-second clips).
        clip_length: seconds per clip, a finite number > 0; default ``config.clip_length``.
        fusion_mode: ``"wbf"`` (weighted span fusion of the DETR and ATSS windows), ``"detr"`` or ``"atss"``
            (one head alone); default ``"wbf"`` when the outputs have the ATSS head, else ``"detr"``.
        round_to: round window endpoints to multiples of this many seconds (the QVHighlights evaluation: 2.0);
            a window that collapses is widened by one step. None: no rounding.
        atss_pre_nms_topk, atss_nms_iou, atss_post_nms_topk: ATSS candidates kept before 1-D NMS, its IoU
            threshold and the candidates kept after it (§4.4: 100, 0.6, 25).
        wbf_iou_thr, wbf_weights, wbf_skip_thr: weighted span fusion's merge IoU, the (DETR, ATSS) weights
            and the score below which a window is left out (0.55, (1, 1), 0). The weights are finite and > 0;
            only their ratio matters (multiplying both by one factor gives the same windows, up to float32
            rounding).
    Returns:
        B dicts ``{"pred_relevant_windows": [[start, end, score], ...], "pred_saliency_scores": [...]}``; windows
        are best first, inside ``[0, duration]`` with ``start < end``; scores rounded to 4 decimals.

    Raises:
        NonFiniteOutputError: the outputs hold NaN or Inf (never turned into windows: NaN is not JSON).
        ValueError: an argument is out of range (it is named), the mask does not fit the outputs or a sample
            has no clip.
    """
    clip_length = _finite_positive(
        clip_length if clip_length is not None else (config or _DEFAULTS).clip_length,
        "clip_length",
        "seconds per clip",
    )
    has_atss = _get(outputs, "atss_logits") is not None
    mode = fusion_mode or ("wbf" if has_atss else "detr")
    if mode not in _FUSION_MODES:
        raise ValueError(f"fusion_mode must be 'wbf', 'detr' or 'atss', got {mode!r}.")
    for name, value in (
        ("top_k", top_k),
        ("atss_pre_nms_topk", atss_pre_nms_topk),
        ("atss_post_nms_topk", atss_post_nms_topk),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    for name, value in (
        ("atss_nms_iou", atss_nms_iou),
        ("wbf_iou_thr", wbf_iou_thr),
        ("wbf_skip_thr", wbf_skip_thr),
    ):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    listed = wbf_weights.tolist() if hasattr(wbf_weights, "tolist") else wbf_weights  # a tensor or an array
    weights = list(listed) if isinstance(listed, Sequence) and not isinstance(listed, str) else None
    if weights is None or len(weights) != 2 or not all(is_finite_positive(w) for w in weights):
        raise ValueError(f"wbf_weights must be two finite numbers > 0 (DETR, ATSS), got {wbf_weights!r}.")
    if round_to is not None and not is_finite_positive(round_to):
        raise ValueError(f"round_to must be None or a finite number > 0 of seconds, got {round_to!r}.")
    round_to = None if round_to is None else float(round_to)
    if mode != "detr" and not has_atss:
        raise ValueError(f"fusion_mode={mode!r} needs ATSS outputs; this model has no ATSS head, use 'detr'.")

    spans = _get(outputs, "pred_spans").float()
    scores = _get(outputs, "det_scores").float()
    batch, device = spans.shape[0], spans.device
    saliency = _get(outputs, "global_saliency")
    if saliency is None:
        saliency = _get(outputs, "local_saliency")
    if saliency is None:
        raise ValueError("outputs carry neither global_saliency nor local_saliency: pass SG-DETR outputs.")
    mask = _video_mask(
        video_mask if video_mask is not None else _get(outputs, "video_mask"), saliency, device
    )
    lengths = mask.sum(1)
    # Seconds are float64 on the CPU (where the lists are made): in float32 a duration such as 147.3 s is
    # 147.30000305 s, and a window clipped to it ends after the video.
    extent = lengths.cpu().double() * clip_length  # T_b
    duration = extent if durations is None else _as_batch_vector(durations, batch, "durations")
    _check_finite(outputs, mask, saliency)

    detr_spans = span_cw_to_se(spans).clamp(0.0, 1.0)
    detr_valid = torch.ones_like(scores, dtype=torch.bool)
    if mode == "detr":
        order = scores.argsort(dim=1, descending=True, stable=True)
        windows = detr_spans.gather(1, order[..., None].expand(-1, -1, 2))
        conf, valid = scores.gather(1, order), detr_valid
    else:
        atss_spans, atss_scores, atss_valid = _atss_candidates(
            outputs, lengths, atss_pre_nms_topk, atss_nms_iou, atss_post_nms_topk
        )
        if mode == "atss":
            windows, conf, valid = atss_spans, atss_scores, atss_valid
        else:
            model_index = torch.cat(
                (torch.zeros_like(scores, dtype=torch.long), torch.ones_like(atss_scores, dtype=torch.long)),
                1,
            )
            windows, conf, valid = weighted_span_fusion(
                torch.cat((detr_spans, atss_spans), 1),
                torch.cat((scores, atss_scores), 1),
                model_index,
                torch.cat((detr_valid, atss_valid), 1),
                [float(w) for w in weights],
                wbf_iou_thr,
                wbf_skip_thr,
            )
    k = min(top_k, windows.shape[1])
    windows, conf, valid = windows[:, :k].cpu().double(), conf[:, :k].cpu(), valid[:, :k].cpu()

    seconds = windows * extent[:, None, None]
    start = torch.minimum(seconds[..., 0].clamp_min(0), duration[:, None])
    end = torch.minimum(seconds[..., 1].clamp_min(0), duration[:, None])
    step = torch.full_like(start, float(round_to) if round_to else clip_length)
    if round_to:
        start = torch.minimum(torch.round(start / round_to) * round_to, duration[:, None])
        end = torch.minimum(torch.round(end / round_to) * round_to, duration[:, None])
    start, end = _fix_degenerate(start, end, duration[:, None].expand_as(start), step)

    rows_start, rows_end = start.tolist(), end.tolist()
    rows_conf, rows_valid = round_scores(conf).tolist(), valid.tolist()
    rows_saliency, rows_len = saliency.float().tolist(), lengths.tolist()
    results = []
    for b in range(batch):  # conversion to Python lists only
        windows_b = [
            [s, e, c] for s, e, c, v in zip(rows_start[b], rows_end[b], rows_conf[b], rows_valid[b]) if v
        ]
        results.append(
            {"pred_relevant_windows": windows_b, "pred_saliency_scores": rows_saliency[b][: rows_len[b]]}
        )
    return results


__all__ = [
    "DEFAULT_TOP_K",
    "NonFiniteOutputError",
    "describe_non_finite_weights",
    "is_finite_positive",
    "is_integer",
    "is_real_number",
    "non_finite_parameters",
    "post_process_moment_retrieval",
    "round_scores",
]

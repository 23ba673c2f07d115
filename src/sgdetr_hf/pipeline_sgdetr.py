"""The ``"video-moment-retrieval"`` pipeline: a video (or its features) + text queries -> moments and saliency.

    from transformers import pipeline
    retriever = pipeline(model="org/sg-detr-qvhighlights", trust_remote_code=True)
    retriever("video.mp4", queries=["a man rides a bike", "a dog runs"], top_k=5)
    retriever({"video_features": feats}, queries="a man rides a bike")    # (L, d_v) pre-extracted features

The video is decoded and encoded once by the InternVideo2 encoders (:class:`SGDetrFeatureExtractor`),
whatever the number of queries; every query is then paired with the clip features. Videos longer than the
training length (``config.max_num_clips`` clips) go through overlapping windows whose predictions are fused
(:mod:`long_video_sgdetr`).

Where the encoder comes from: the ``encoder=`` argument (an :class:`SGDetrFeatureExtractor` or a converted
InternVideo2 folder / Hub id), else the ``encoder/`` sub-folder of the model repository. Without one
(or with ``encoder=False``, which never loads it) the pipeline works on pre-extracted features with
``text_features``.

Registered by the ``sgdetr_hf`` package; saved model repositories carry it in ``config.json``
(``custom_pipelines``) for ``trust_remote_code=True``. Shipped as remote code: sibling imports only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import Pipeline

from .feature_extraction_sgdetr import SGDetrFeatureExtractor
from .loading_sgdetr import resolve_device
from .long_video_sgdetr import retrieve_moments
from .postprocessing_sgdetr import (
    DEFAULT_TOP_K,
    NonFiniteOutputError,
    describe_non_finite_weights,
    is_finite_positive,
    is_integer,
    is_real_number,
    non_finite_parameters,
)

logger = logging.getLogger(__name__)

ENCODER_SUBFOLDER = "encoder"
_INPUT_KEYS = {"video", "video_features", "video_mask", "duration", "queries", "text_features", "text_mask"}


def _as_float_tensor(value: Any, name: str, ndim: int) -> torch.Tensor:
    """A float32 tensor of rank ``ndim`` from a tensor (any real dtype: bf16 / fp16 features are cast here, and
    to the model's dtype in ``_forward``), an array or a nested list; ``ValueError`` otherwise."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a {value.dtype} tensor")
        tensor = value.detach().to("cpu", torch.float32)
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value), dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or Inf; check the feature extraction")
    return tensor


def _as_mask(value: Any, name: str, shape: tuple[int, ...], entry: str) -> torch.Tensor:
    """An int64 0/1 mask of ``shape`` from 0/1 numbers or booleans (a tensor, an array or a nested list), with
    at least one 1 per row; ``ValueError`` naming what is wrong otherwise (a value such as 0.5 is not rounded)."""
    mask = _as_float_tensor(value, name, len(shape))
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"{name} must have one 0/1 entry per {entry}, shape {shape}, got {tuple(mask.shape)}"
        )
    other = (mask != 0) & (mask != 1)
    if other.any():
        raise ValueError(
            f"{name} must hold only 0/1 or True/False (1 = valid), got {mask[other][0].item():g}"
        )
    if not mask.reshape(-1, shape[-1]).any(-1).all():
        raise ValueError(
            f"{name} has no 1: every {'row' if len(shape) > 1 else 'input'} needs a valid {entry}"
        )
    return mask.long()


def _valid_length(mask: torch.Tensor, name: str) -> int:
    """Number of leading valid entries of a 0/1 right-padding mask."""
    valid = int(mask.sum())
    if not bool((mask[:valid] == 1).all()):
        raise ValueError(f"{name} must be 1 for the valid rows first, then 0 for padding (right padding)")
    return valid


def _positive_integer(value: Any, name: str, what: str) -> int:
    """``value`` as an int when it is a whole number >= 1 of any type (NumPy's, or a float such as JSON's 5.0);
    ``ValueError`` naming ``name`` otherwise (2.7 is not cut to 2)."""
    integral = is_integer(value) or (isinstance(value, float) and value.is_integer())
    if not integral or value < 1:
        raise ValueError(f"{name} must be a positive integer ({what}), got {value!r}")
    return int(value)


def _as_query_list(queries: Any) -> list[str] | None:
    if queries is None:
        return None
    if not isinstance(queries, (str, list, tuple)):
        raise ValueError(f"queries must be a string or a list of strings, got {type(queries).__name__}")
    listed = [queries] if isinstance(queries, str) else list(queries)
    if not listed:
        raise ValueError("queries is empty: give one query string or a list of them")
    for number, query in enumerate(listed):
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query {number} must be a non-empty string, got {query!r}")
    return listed


class VideoMomentRetrievalPipeline(Pipeline):
    r"""Moment retrieval and highlight detection with SG-DETR.

    Call with one input or a list of inputs (each answered separately):

    - a video file path (needs the encoder), or a dict with ``video`` (path) or ``video_features``
      ``(L, d_v)`` (+ optional ``video_mask`` ``(L,)`` right padding, ``duration`` in seconds), and
      optionally the per-input ``queries`` / ``text_features`` / ``text_mask``;
    - ``queries``: one string or a list of strings;
    - ``text_features``: instead of (or along with, as labels) ``queries``: a list of ``(N_q, d_t)`` token
      features (with, optionally, ``text_mask``: one ``(N_q,)`` 0/1 or bool mask per query) or a padded
      ``(Q, N, d_t)`` array with ``text_mask`` ``(Q, N)``; tensors of any float dtype (bf16 included) are cast
      to the model's;
    - ``top_k`` (default 10): windows per query;
    - ``window_overlap`` (default 1/3): overlap of consecutive windows on long videos, a fraction;
    - ``window_batch_size`` (default 64): (window, query) pairs per forward pass.

    Returns, per input, one dict per query (a dict alone when ``queries`` was a single string):
    ``query``, ``pred_relevant_windows`` (``[[start_s, end_s, score], ...]``, best first),
    ``pred_saliency_scores`` (one raw logit per clip), ``clip_length`` (seconds per clip) and ``duration``
    (the video's length in seconds: a file's decoded end, the given ``duration``, else the last clip's end).
    Bad input raises ``ValueError`` saying what is wrong.
    """

    _load_processor = False
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(
        self, *args, encoder: SGDetrFeatureExtractor | str | os.PathLike | bool | None = None, **kwargs
    ):
        if (
            kwargs.get("device") is not None
        ):  # a ValueError saying why, not torch's error from model.to(device)
            resolve_device(kwargs["device"])
        super().__init__(*args, **kwargs)
        self.encoder = None if encoder is False else self._load_encoder(encoder)

    def __call__(self, inputs, *args, batch_size: int | None = None, **kwargs):
        # Each input is one forward pass already (its queries together, a long video's windows in
        # window_batch_size pairs): transformers' batching of inputs would need a tokenizer to pad them, and
        # failed with "Pipeline without tokenizer or feature_extractor cannot do batching".
        if (batch_size if batch_size is not None else self._batch_size or 1) != 1:
            logger.warning(
                "batch_size is ignored: each input is answered in its own forward pass, all its queries "
                "together (window_batch_size sets how many (window, query) pairs of a long video run at once)"
            )
        return super().__call__(inputs, *args, batch_size=1, **kwargs)

    # ------------------------------------------------------------------------------------------ setup
    def _default_encoder_path(self) -> str | None:
        """``encoder/`` beside the model's weights: a local folder, or downloaded from the model's Hub repo."""
        source = getattr(self.model, "name_or_path", "") or ""
        if os.path.isdir(source):
            path = os.path.join(source, ENCODER_SUBFOLDER)
            return path if os.path.isdir(path) else None
        if not source:
            return None
        from huggingface_hub import snapshot_download

        try:
            snapshot = snapshot_download(source, allow_patterns=[f"{ENCODER_SUBFOLDER}/*"])
        except OSError as error:  # offline, or not on the Hub: features-only use still works
            logger.warning(
                "no encoder found for %s (%s); only pre-extracted features will work", source, error
            )
            return None
        path = os.path.join(snapshot, ENCODER_SUBFOLDER)
        return path if os.path.isdir(path) else None

    def _load_encoder(self, encoder) -> SGDetrFeatureExtractor | None:
        if encoder is None:
            encoder = self._default_encoder_path()
            if encoder is None:
                return None
        if not isinstance(encoder, SGDetrFeatureExtractor):
            encoder = SGDetrFeatureExtractor.from_pretrained(
                encoder,
                device=self.device,
                video_processor_kwargs={"clip_length": float(self.model.config.clip_length)},
            )
        config = self.model.config
        clip_length = encoder.processor.video_processor.clip_length
        if abs(clip_length - config.clip_length) > 1e-6:
            raise ValueError(
                f"the encoder cuts {clip_length}-s clips but the model was trained on {config.clip_length}-s "
                "clips; build the encoder with video_processor_kwargs={'clip_length': ...} to match"
            )
        if (encoder.video_dim, encoder.text_dim) != (config.video_feature_dim, config.text_feature_dim):
            raise ValueError(
                f"the encoder gives {encoder.video_dim}-d clip and {encoder.text_dim}-d token features but the "
                f"model expects {config.video_feature_dim} and {config.text_feature_dim}; use the matching encoder"
            )
        return encoder

    def _sanitize_parameters(
        self,
        queries=None,
        text_features=None,
        text_mask=None,
        top_k=None,
        window_overlap=None,
        window_batch_size=None,
        **kwargs,
    ):
        if kwargs:
            raise ValueError(
                f"unknown arguments {sorted(kwargs)}; the pipeline takes queries, text_features, text_mask, "
                "top_k, window_overlap and window_batch_size"
            )
        preprocess = {"queries": queries, "text_features": text_features, "text_mask": text_mask}
        forward = {}
        if top_k is not None:
            forward["top_k"] = _positive_integer(top_k, "top_k", "windows per query")
        if window_overlap is not None:
            if not (is_real_number(window_overlap) and 0.0 <= window_overlap < 1.0):
                raise ValueError(
                    f"window_overlap must be a fraction in [0, 1) (the share of a window the next one repeats), "
                    f"got {window_overlap!r}"
                )
            forward["window_overlap"] = float(window_overlap)
        if window_batch_size is not None:
            forward["window_batch_size"] = _positive_integer(
                window_batch_size, "window_batch_size", "(window, query) pairs per forward pass"
            )
        return {k: v for k, v in preprocess.items() if v is not None}, forward, {}

    # ------------------------------------------------------------------------------------- the steps
    def _require_encoder(self, what: str) -> SGDetrFeatureExtractor:
        if self.encoder is None:
            raise ValueError(
                f"{what} needs the InternVideo2 encoder, and this pipeline has none: pass encoder=<converted "
                "InternVideo2 folder or SGDetrFeatureExtractor>, or give pre-extracted features instead"
            )
        return self.encoder

    def _video_inputs(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, float | None]:
        """``(L, d_v)`` clip features and the duration in seconds (None: ``L * clip_length``)."""
        if ("video" in inputs) == ("video_features" in inputs):
            raise ValueError("give exactly one of a video (file path) or video_features (L, d_v)")
        if "video" in inputs:
            if "video_mask" in inputs:
                raise ValueError("video_mask goes with video_features; a video file has no padding to mask")
            video = self._require_encoder("a video file").encode_video(inputs["video"])
            return video.features, float(video.clip_timestamps[-1, 1])
        features = _as_float_tensor(inputs["video_features"], "video_features", 2)
        if features.shape[0] == 0:
            raise ValueError("video_features has no clip (shape (0, d)); a video needs at least one clip")
        if "video_mask" in inputs:
            mask = _as_mask(inputs["video_mask"], "video_mask", (features.shape[0],), "clip")
            features = features[: _valid_length(mask, "video_mask")]
        duration = inputs.get("duration")
        if duration is not None:
            if not is_finite_positive(duration):
                raise ValueError(
                    f"duration must be a finite, positive number of seconds (the video's length), got {duration!r}"
                )
            duration = float(duration)
        return features, duration

    def _text_inputs(self, queries, text_features, text_mask) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``(Q, N, d_t)`` token features, ``(Q, N)`` mask and the Q query labels."""
        if text_features is None:
            if queries is None:
                raise ValueError("no query: pass queries='...' (or text_features)")
            if text_mask is not None:
                raise ValueError(
                    "text_mask goes with text_features; query strings are masked by the tokenizer"
                )
            encoded = self._require_encoder("encoding query strings").encode_queries(queries)
            return encoded.features, encoded.mask, queries
        if isinstance(text_features, (list, tuple)):
            rows = [_as_float_tensor(t, f"text_features[{i}]", 2) for i, t in enumerate(text_features)]
            if not rows or any(len(r) == 0 for r in rows):
                raise ValueError("text_features needs one non-empty (N_q, d_t) array per query")
            features = pad_sequence(rows, batch_first=True)
            if text_mask is None:
                masks = [torch.ones(len(r), dtype=torch.long) for r in rows]
            else:  # one (N_q,) mask per query (a list, or a (Q, N) array when the queries are of one length)
                if isinstance(text_mask, (str, bytes)) or not hasattr(text_mask, "__len__"):
                    raise ValueError(
                        f"text_mask must be one 0/1 mask per query, got {type(text_mask).__name__}"
                    )
                if len(text_mask) != len(rows):
                    raise ValueError(
                        f"text_mask has {len(text_mask)} masks for {len(rows)} text_features; give one per query"
                    )
                masks = [
                    _as_mask(m, f"text_mask[{i}]", (len(r),), "token")
                    for i, (m, r) in enumerate(zip(text_mask, rows))
                ]
            mask = pad_sequence(masks, batch_first=True)
        else:
            features = _as_float_tensor(text_features, "text_features", 3)
            if text_mask is None:
                mask = torch.ones(features.shape[:2], dtype=torch.long)
            else:
                mask = _as_mask(text_mask, "text_mask", tuple(features.shape[:2]), "token")
        if queries is not None and len(queries) != len(features):
            raise ValueError(f"{len(queries)} queries but {len(features)} text_features; give one per query")
        labels = queries or [f"query {i}" for i in range(len(features))]
        return features, mask, labels

    def preprocess(self, inputs, queries=None, text_features=None, text_mask=None) -> dict[str, Any]:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = {"video": os.fspath(inputs)}
        if not isinstance(inputs, dict):
            raise ValueError(
                "the input must be a video file path or a dict with 'video' or 'video_features', "
                f"got {type(inputs).__name__}"
            )
        unknown = set(inputs) - _INPUT_KEYS
        if unknown:
            raise ValueError(f"unknown input keys {sorted(unknown)}; allowed: {sorted(_INPUT_KEYS)}")
        raw_queries = inputs.get("queries", queries)
        query_list = _as_query_list(raw_queries)
        text, mask, labels = self._text_inputs(
            query_list, inputs.get("text_features", text_features), inputs.get("text_mask", text_mask)
        )
        video, duration = self._video_inputs(inputs)
        return {
            "video_features": video,
            "text_features": text,
            "text_mask": mask,
            "duration": duration,
            "queries": labels,
            "single": isinstance(raw_queries, str),
        }

    def _forward(
        self, model_inputs, top_k=None, window_overlap=1 / 3, window_batch_size=64
    ) -> dict[str, Any]:
        dtype = self.model.dtype
        try:
            results = retrieve_moments(
                self.model,
                model_inputs["video_features"].to(dtype),
                model_inputs["text_features"].to(dtype),
                model_inputs["text_mask"],
                duration=model_inputs["duration"],
                top_k=top_k or DEFAULT_TOP_K,
                window_overlap=window_overlap,
                window_batch_size=window_batch_size,
            )
        except NonFiniteOutputError as error:
            # The inputs were checked finite (or came from the encoder, which checks its outputs): say
            # whether the weights are to blame, which is only worth the scan once something went wrong.
            broken = non_finite_parameters(self.model)
            if broken:
                raise NonFiniteOutputError(
                    describe_non_finite_weights(broken, self.model.name_or_path)
                ) from None
            raise NonFiniteOutputError(
                f"{error}. The weights and inputs are finite, so the forward pass overflowed in {dtype}: "
                "run the model in float32"
            ) from None
        return {
            "results": results,
            "queries": model_inputs["queries"],
            "single": model_inputs["single"],
            "duration": model_inputs["duration"],
        }

    def postprocess(self, model_outputs) -> dict[str, Any] | list[dict[str, Any]]:
        clip_length = float(self.model.config.clip_length)
        # the video's length (its decoded end, or the given duration; else the end of its last clip): plots
        # end their time axis there
        answers = [
            {
                "query": query,
                **result,
                "clip_length": clip_length,
                "duration": float(
                    model_outputs["duration"] or len(result["pred_saliency_scores"]) * clip_length
                ),
            }
            for query, result in zip(model_outputs["queries"], model_outputs["results"])
        ]
        return answers[0] if model_outputs["single"] else answers


__all__ = ["VideoMomentRetrievalPipeline"]

"""Inference Endpoints handler for SG-DETR (the ``EndpointHandler`` contract of the Inference Toolkit).

The endpoint builds ``EndpointHandler(path)`` once with the repository folder, then calls it with each
JSON request as a dict and sends back what it returns, serialised as JSON. The model's own code comes
from the repository (``trust_remote_code``), so the endpoint needs no extra package beyond
``requirements.txt``.

Request::

    {"inputs": {"video": "<base64 of a video file>",        # or "video_features": [[...], ...]
                "video_mask": [1, 1, ...],                  # optional, with video_features
                "queries": ["a man rides a bike", ...],     # one string or a list
                "text_features": [[[...]], ...]},           # optional, instead of query strings
     "parameters": {"top_k": 5, "window_overlap": 0.33}}    # optional

A raw video body (``inputs`` as bytes, e.g. ``Content-Type: video/mp4``) works too, with the queries in
``parameters["queries"]``.

Response: ``{"results": [{"query", "pred_relevant_windows": [[start_s, end_s, score], ...],
"pred_saliency_scores": [...], "clip_length"}, ...]}``, one entry per query; on bad input
``{"error": "<what was wrong and how to fix it>", "error_type": "ValueError"}``. The handler never lets an
exception (or its stack trace) reach the client: unexpected failures are logged here and answered with
a JSON error as well.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import tempfile
from typing import Any

import numpy as np
from transformers import pipeline

logger = logging.getLogger(__name__)

_INPUT_KEYS = {"video", "video_features", "video_mask", "queries", "text_features"}
_PARAMETER_KEYS = {"top_k", "window_overlap", "window_batch_size", "queries"}


def _error(message: str, error_type: str = "ValueError") -> dict[str, str]:
    return {"error": message, "error_type": error_type}


def _decode_video(value: Any) -> bytes:
    """Video bytes from raw bytes or a base64 string."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise ValueError(f"inputs.video must be the base64 encoding of a video file ({error})") from None
    else:
        raise ValueError(f"inputs.video must be a base64 string, got {type(value).__name__}")
    if not data:
        raise ValueError("inputs.video is empty: send the bytes of a video file, base64-encoded")
    return data


def _as_float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a nested list of numbers with {ndim} dimensions") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {list(array.shape)}")
    return array


class EndpointHandler:
    """Serve ``pipeline("video-moment-retrieval")`` from the repository folder ``path``."""

    def __init__(self, path: str = ""):
        # The task comes from "custom_pipelines" in config.json; the model, processor and pipeline code
        # from the repository's .py files.
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True)

    def _parse(self, data: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Split a request into the pipeline's input and keyword arguments; ``ValueError`` on bad input."""
        if not isinstance(data, dict):
            raise ValueError(f"the request must be a JSON object, got {type(data).__name__}")
        inputs = data.get("inputs")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f"parameters must be a JSON object, got {type(parameters).__name__}")
        unknown = set(parameters) - _PARAMETER_KEYS
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; allowed: {sorted(_PARAMETER_KEYS)}")
        kwargs = dict(parameters)
        if isinstance(inputs, (bytes, bytearray)):  # raw video body
            inputs = {"video": inputs}
        if not isinstance(inputs, dict):
            raise ValueError(
                'inputs must be a JSON object such as {"video": "<base64>", "queries": ["..."]}, '
                f"got {type(inputs).__name__}"
            )
        unknown = set(inputs) - _INPUT_KEYS
        if unknown:
            raise ValueError(f"unknown inputs {sorted(unknown)}; allowed: {sorted(_INPUT_KEYS)}")
        if "queries" in inputs:
            kwargs["queries"] = inputs["queries"]
        if "text_features" in inputs:
            kwargs["text_features"] = [
                _as_float_array(t, f"inputs.text_features[{i}]", 2) for i, t in enumerate(inputs["text_features"])
            ]
        if ("video" in inputs) == ("video_features" in inputs):
            raise ValueError("inputs must hold exactly one of 'video' (base64 video file) or 'video_features'")
        if "video" in inputs:
            return _decode_video(inputs["video"]), kwargs
        features = {"video_features": _as_float_array(inputs["video_features"], "inputs.video_features", 2)}
        if "video_mask" in inputs:
            features["video_mask"] = _as_float_array(inputs["video_mask"], "inputs.video_mask", 1)
        return features, kwargs

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            model_input, kwargs = self._parse(data)
            if isinstance(model_input, bytes):
                # The video decoders read files: keep the upload in a temporary one for this request.
                with tempfile.TemporaryDirectory() as folder:
                    video_path = os.path.join(folder, "video")
                    with open(video_path, "wb") as file:
                        file.write(model_input)
                    results = self.pipeline(video_path, **kwargs)
            else:
                results = self.pipeline(model_input, **kwargs)
        except ValueError as error:
            return _error(str(error))
        except Exception as error:  # the endpoint must answer JSON, never a stack trace
            logger.exception("SG-DETR request failed")
            return _error(f"the request could not be processed: {error}", type(error).__name__)
        return {"results": results if isinstance(results, list) else [results]}

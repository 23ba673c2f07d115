"""Inference Endpoints handler for SG-DETR (the ``EndpointHandler`` contract of the Inference Toolkit).

The endpoint builds ``EndpointHandler(path)`` once with the repository folder, then calls it with each
JSON request as a dict and sends back what it returns, serialised as JSON. The model's own code comes
from the repository (``trust_remote_code``), so the endpoint needs no extra package beyond
``requirements.txt``.

Request::

    {"inputs": {"video": "<base64 of a video file>",        # or "video_features": [[...], ...]
                "video_mask": [1, 1, ...],                  # optional, with video_features
                "duration": 151.3,                          # optional, with video_features (seconds)
                "queries": ["a man rides a bike", ...],     # one string or a list
                "text_features": [[[...]], ...],            # optional, instead of query strings
                "text_mask": [[1, 1, 0], ...]},             # optional, one 0/1 mask per text_features entry
     "parameters": {"top_k": 5, "window_overlap": 0.33}}    # optional

A raw video body (``inputs`` as bytes, e.g. ``Content-Type: video/mp4``) works too, with the queries in
``parameters["queries"]``.

Response: ``{"results": [{"query", "pred_relevant_windows": [[start_s, end_s, score], ...],
"pred_saliency_scores": [...], "clip_length", "duration"}, ...]}``, one entry per query; on bad input
``{"error": "<what was wrong and how to fix it>", "error_type": "ValueError"}``. The handler never lets an
exception (or its stack trace) reach the client: unexpected failures are logged here and answered with
a JSON error as well. Answers are strict JSON: one that would hold NaN or Infinity is answered with an
error instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
from typing import Any

import torch
from transformers import pipeline

logger = logging.getLogger(__name__)


def _error(message: str, error_type: str = "ValueError") -> dict[str, str]:
    return {"error": message, "error_type": error_type}


def _without_upload_path(message: str, upload: str | None) -> str:
    """``message`` with the server-side temporary file of the upload replaced by words: the client sent
    bytes, and the server's folders are none of its business."""
    if upload is None:
        return message
    for path in dict.fromkeys((upload, os.path.realpath(upload))):  # /tmp may be a symlink (macOS)
        message = message.replace(path, "the uploaded video")
        message = message.replace(os.path.dirname(path), "<upload folder>")
    return message


def _decode_video(value: Any) -> bytes:
    """Video bytes from raw bytes or a base64 string: standard or URL-safe alphabet, line-wrapped or not (as
    the ``base64`` tool writes it), optionally as a ``data:video/...;base64,`` URL."""
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        if value.startswith("data:") and ";base64," in value[:100]:
            value = value.split(";base64,", 1)[1]
        value = "".join(value.split()).replace("-", "+").replace("_", "/")
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise ValueError(f"inputs.video must be the base64 encoding of a video file ({error})") from None
    else:
        raise ValueError(f"inputs.video must be a base64 string, got {type(value).__name__}")
    if not data:
        raise ValueError("inputs.video is empty: send the bytes of a video file, base64-encoded")
    return data


def _parse(data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline's input dict and keyword arguments of a request. Only the JSON envelope and the video's
    encoding are checked here; the pipeline checks the contents (keys, shapes, queries) itself."""
    if not isinstance(data, dict):
        raise ValueError(f"the request must be a JSON object, got {type(data).__name__}")
    inputs, parameters = data.get("inputs"), data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters must be a JSON object, got {type(parameters).__name__}")
    if isinstance(inputs, (bytes, bytearray)):  # a raw video body
        inputs = {"video": inputs}
    if not isinstance(inputs, dict):
        raise ValueError(
            'inputs must be a JSON object such as {"video": "<base64>", "queries": ["..."]}, '
            f"got {type(inputs).__name__}"
        )
    if "video" in inputs:
        inputs = {**inputs, "video": _decode_video(inputs["video"])}
    if "queries" in inputs and "queries" in parameters:
        raise ValueError("queries are given twice, in inputs and in parameters: give them in one place")
    return inputs, parameters


class EndpointHandler:
    """Serve ``pipeline("video-moment-retrieval")`` from the repository folder ``path``."""

    def __init__(self, path: str = ""):
        # The task comes from "custom_pipelines" in config.json; the model, encoder and pipeline code from
        # the repository's .py files.
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.pipeline = pipeline(model=path or ".", trust_remote_code=True, device=device)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        upload = None  # the request's video as a file on this server; never named in an answer
        try:
            inputs, parameters = _parse(data)
            if "video" in inputs:
                # The video decoders read files: keep the upload in a temporary one for this request.
                with tempfile.TemporaryDirectory() as folder:
                    upload = os.path.join(folder, "video")
                    with open(upload, "wb") as file:
                        file.write(inputs["video"])
                    results = self.pipeline({**inputs, "video": upload}, **parameters)
            else:
                results = self.pipeline(inputs, **parameters)
        except ValueError as error:
            return _error(_without_upload_path(str(error), upload))
        except Exception as error:  # the endpoint must answer JSON, never a stack trace
            logger.exception("SG-DETR request failed")  # the server's log keeps the paths
            message = _without_upload_path(str(error), upload)
            return _error(f"the request could not be processed: {message}", type(error).__name__)
        answer = {"results": results if isinstance(results, list) else [results]}
        try:  # NaN / Infinity are no JSON: a strict client's parser fails on them
            json.dumps(answer, allow_nan=False)
        except (TypeError, ValueError) as error:
            logger.error("SG-DETR answer is not strict JSON (%s): %r", error, answer)
            return _error(
                f"the request could not be processed: its answer is not strict JSON ({error}); please report "
                "it with the request",
                type(error).__name__,
            )
        return answer

"""SGDetrFeatureExtractor: a raw video and text queries -> InternVideo2 features for SG-DETR.

    extractor = SGDetrFeatureExtractor.from_pretrained("internvideo2-stage2-1b")   # a converted folder
    inputs = extractor("video.mp4", ["a man rides a bike", "a dog runs"])
    outputs = sgdetr_model(**{k: inputs[k] for k in ("video_features", "video_mask", "text_features", "text_mask")})

The video is decoded, preprocessed and encoded once, chunk by chunk (decoding of the next chunk overlaps
with encoding of the current one), whatever the number of queries. Features are returned raw (not
L2-normalised): SG-DETR normalises rows and appends its temporal endpoint features itself.
"""

import contextlib
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature

from .configuration_internvideo2 import InternVideo2Config
from .loading_sgdetr import resolve_device
from .modeling_internvideo2 import InternVideo2Model
from .postprocessing_sgdetr import (
    NonFiniteOutputError,
    describe_non_finite_weights,
    is_integer,
    non_finite_parameters,
)
from .processing_sgdetr import MIN_QUERY_LENGTH, SGDetrProcessor
from .video_io_sgdetr import prefetch
from .video_processing_sgdetr import SGDetrVideoProcessor

# Video: visual_projection of the pooled clip (512-d) or the pooler output itself (768-d).
VIDEO_FEATURES = ("projected", "pooled")
# Text: text_projection of every token (512-d) or the raw hidden states (1024-d).
TEXT_FEATURES = ("projected", "hidden")


class ExtractorSettingsError(ValueError):
    """Settings the extractor cannot run with (a feature kind, ``clips_per_batch``, ``max_query_length``),
    raised by :meth:`SGDetrFeatureExtractor.from_pretrained` before the encoder's weights are loaded."""


def _check_settings(
    video_feature: str,
    text_feature: str,
    clips_per_batch: int,
    max_query_length: int | None,
    max_positions: int | None = None,
) -> None:
    """Raise :class:`ExtractorSettingsError` for settings the extractor cannot run with.

    Args:
        max_query_length: ``None`` (the processor's) or an int from ``MIN_QUERY_LENGTH`` to ``max_positions``
            (the text encoder's positions; ``None``: not checked).
    """
    if video_feature not in VIDEO_FEATURES:
        raise ExtractorSettingsError(f"video_feature must be one of {VIDEO_FEATURES}, got {video_feature!r}")
    if text_feature not in TEXT_FEATURES:
        raise ExtractorSettingsError(f"text_feature must be one of {TEXT_FEATURES}, got {text_feature!r}")
    if not is_integer(clips_per_batch) or clips_per_batch < 1:
        raise ExtractorSettingsError(f"clips_per_batch must be an int >= 1, got {clips_per_batch!r}")
    if max_query_length is None:
        return
    if not is_integer(max_query_length) or max_query_length < MIN_QUERY_LENGTH:
        raise ExtractorSettingsError(
            f"max_query_length must be an int >= {MIN_QUERY_LENGTH} (room for [CLS] word [SEP]), "
            f"got {max_query_length!r}"
        )
    if max_positions is not None and max_query_length > max_positions:
        raise ExtractorSettingsError(
            f"max_query_length={max_query_length} exceeds the text encoder's {max_positions} positions; lower it"
        )


@dataclass
class VideoFeatures:
    """Features of one video.

    Attributes:
        features: (L, d_v) float32, one row per clip.
        clip_timestamps: (L, 2) float64 [start, end) of every clip in seconds.
        clip_length: nominal clip duration in seconds.
    """

    features: torch.Tensor
    clip_timestamps: torch.Tensor
    clip_length: float


@dataclass
class QueryFeatures:
    """Features of a batch of queries, padded to the longest.

    Attributes:
        features: (Q, N, d_t) float32, zeros at padding.
        mask: (Q, N) int64, 1 = real token ([CLS] and [SEP] included).
    """

    features: torch.Tensor
    mask: torch.Tensor

    def unpadded(self) -> list[torch.Tensor]:
        """One (N_q, d_t) tensor per query, without its padding rows."""
        return [rows[: int(count)] for rows, count in zip(self.features, self.mask.sum(1))]


class SGDetrFeatureExtractor:
    """Turns videos and queries into the InternVideo2 features SG-DETR takes as input.

    Args:
        model: the InternVideo2 encoders, on the device and in the dtype to run them with.
        processor: video processor + tokenizer.
        video_feature: `"projected"` (default, 512-d joint space) or `"pooled"` (768-d pooler output).
        text_feature: `"projected"` (default, 512-d per token) or `"hidden"` (raw 1024-d hidden states).
        clips_per_batch: clips per forward pass of the vision tower.
    """

    def __init__(
        self,
        model: InternVideo2Model,
        processor: SGDetrProcessor,
        video_feature: str = "projected",
        text_feature: str = "projected",
        clips_per_batch: int = 32,
    ):
        _check_settings(
            video_feature,
            text_feature,
            clips_per_batch,
            processor.max_query_length,
            model.config.text_config.max_position_embeddings,
        )
        self.model = model.eval()
        self.processor = processor
        self.video_feature = video_feature
        self.text_feature = text_feature
        self.clips_per_batch = clips_per_batch

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_query_length: int | None = None,
        video_processor_kwargs: dict | None = None,
        **kwargs,
    ) -> "SGDetrFeatureExtractor":
        """Load a converted InternVideo2 folder (model + processor).

        The device, the settings, the folder's config, processor and weights files are checked before the
        encoder is built, so a wrong folder (e.g. an SG-DETR model's) fails at once with a
        :class:`~loading_sgdetr.CheckpointError` naming the file, and a wrong setting with an
        :class:`ExtractorSettingsError` (a ``ValueError``), not after minutes.

        Args:
            device: default CUDA when available, else CPU.
            dtype: default bfloat16 on GPU (the release's inference dtype), float32 on CPU.
            max_query_length: override the processor's (e.g. 64 for TACoS); ``None``: the processor's. At
                least ``MIN_QUERY_LENGTH`` (3: [CLS] word [SEP]) and at most the text encoder's positions.
            video_processor_kwargs: override video processor settings, e.g. `{"clip_length": 1.0}` (Charades-STA).
            kwargs: see the class arguments.
        """
        device = resolve_device(device)
        dtype = dtype if dtype is not None else (torch.bfloat16 if device.type == "cuda" else torch.float32)
        # The class arguments, checked before anything is read (an unknown one: TypeError, as from cls(...)).
        arguments = inspect.signature(cls.__init__).bind(None, None, None, **kwargs)
        arguments.apply_defaults()
        settings = {
            name: arguments.arguments[name] for name in ("video_feature", "text_feature", "clips_per_batch")
        }
        # The small files first (config.json and its model_type, the processor), then the large model.
        config = InternVideo2Config.from_pretrained(path)
        _check_settings(
            **settings,
            max_query_length=max_query_length,
            max_positions=config.text_config.max_position_embeddings,
        )
        processor = SGDetrProcessor.from_pretrained(path)
        video_settings = {**processor.video_processor.to_dict(), **(video_processor_kwargs or {})}
        video_settings.pop("video_processor_type")
        processor = SGDetrProcessor(
            SGDetrVideoProcessor(**video_settings),  # its own checks (clip_length, frames_per_clip, ...)
            processor.tokenizer,
            max_query_length=processor.max_query_length if max_query_length is None else max_query_length,
        )
        model = InternVideo2Model.from_pretrained(path, config=config, dtype=dtype).to(device)
        return cls(model, processor, **kwargs)

    def _check_finite(self, features: torch.Tensor, what: str) -> torch.Tensor:
        """``features``, or ``NonFiniteOutputError`` naming the encoder's broken weights (NaN is no feature)."""
        if bool(torch.isfinite(features).all()):
            return features
        broken = non_finite_parameters(self.model)
        if broken:
            raise NonFiniteOutputError(describe_non_finite_weights(broken, self.model.name_or_path))
        raise NonFiniteOutputError(
            f"the InternVideo2 encoder gave NaN or Inf {what} with finite weights: the forward pass overflowed "
            f"in {self.model.dtype}; run the encoder in float32 (dtype=torch.float32; sgdetr extract-features "
            "--encoder-dtype float32)"
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def video_dim(self) -> int:
        config = self.model.config
        return (
            config.projection_dim
            if self.video_feature == "projected"
            else config.vision_config.pooler_output_size
        )

    @property
    def text_dim(self) -> int:
        config = self.model.config
        return config.projection_dim if self.text_feature == "projected" else config.text_config.hidden_size

    def _encode_clips(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, T, 3, H, W) -> (n, d_v) float32 on CPU."""
        pixel_values = pixel_values.to(self.device, self.model.dtype)
        if self.video_feature == "projected":
            features = self.model.get_video_features(
                pixel_values, interpolate_pos_encoding=True
            ).pooler_output
        else:
            features = self.model.vision_model(pixel_values, interpolate_pos_encoding=True).pooler_output
        return self._check_finite(features.float().cpu(), "clip features")

    @torch.inference_mode()
    def encode_video(
        self,
        video: str | os.PathLike | np.ndarray,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> VideoFeatures:
        """Encode every clip of a video (file, or (F, H, W, 3) uint8 frames at ``fps``), optionally trimmed to
        [start, end) seconds. Memory stays bounded by ``clips_per_batch`` whatever the video's length."""
        video_processor = self.processor.video_processor
        chunks = video_processor.iter_clips(
            video, fps=fps, start=start, end=end, clips_per_chunk=self.clips_per_batch
        )
        features, timestamps = [], []
        with contextlib.closing(
            prefetch(chunks)
        ) as prepared:  # the next chunk is decoded while this one encodes
            for chunk in prepared:
                features.append(self._encode_clips(chunk["pixel_values"]))
                timestamps.append(chunk["clip_timestamps"])
        return VideoFeatures(torch.cat(features), torch.cat(timestamps), video_processor.clip_length)

    @torch.inference_mode()
    def encode_queries(self, queries: str | list[str]) -> QueryFeatures:
        """Encode queries ([CLS] and [SEP] rows kept; too long ones are truncated with a warning)."""
        tokens = self.processor.tokenize_queries(queries).to(self.device)
        outputs = self.model.get_text_features(tokens["input_ids"], attention_mask=tokens["attention_mask"])
        features = outputs.token_embeds if self.text_feature == "projected" else outputs.last_hidden_state
        mask = tokens["attention_mask"]
        features, mask = (features * mask[..., None]).float().cpu(), mask.long().cpu()
        self._check_finite(features[mask.bool()], "query token features")
        return QueryFeatures(features, mask)

    def __call__(
        self,
        video: str | os.PathLike | np.ndarray,
        queries: str | list[str],
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> BatchFeature:
        """Inputs for `SGDetrForMomentRetrieval` pairing one video with each of Q queries.

        Returns:
            `BatchFeature` with `video_features` (Q, L, d_v) (one encoding, expanded without a copy),
            `video_mask` (Q, L), `text_features` (Q, N, d_t), `text_mask` (Q, N) and `clip_timestamps` (L, 2)
            seconds.
        """
        text = self.encode_queries(queries)
        video_features = self.encode_video(video, fps=fps, start=start, end=end)
        num_queries, num_clips = text.features.shape[0], video_features.features.shape[0]
        return BatchFeature(
            {
                "video_features": video_features.features.unsqueeze(0).expand(num_queries, -1, -1),
                "video_mask": torch.ones(num_queries, num_clips, dtype=torch.long),
                "text_features": text.features,
                "text_mask": text.mask,
                "clip_timestamps": video_features.clip_timestamps,
            }
        )


__all__ = [
    "MIN_QUERY_LENGTH",
    "ExtractorSettingsError",
    "QueryFeatures",
    "SGDetrFeatureExtractor",
    "VideoFeatures",
]

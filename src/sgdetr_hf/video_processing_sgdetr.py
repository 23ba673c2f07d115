"""SGDetrVideoProcessor: a video file -> fixed-length clips of frames ready for the InternVideo2 vision tower.

A video of duration D seconds is cut into L = ceil(D / clip_length) consecutive clips
[i c, min((i + 1) c, D)) (the last one may be shorter, as in the QVHighlights / Charades-STA / TACoS
features). Each clip is represented by ``frames_per_clip`` frames sampled at the centres of equal
sub-intervals, resized straight to 224 x 224 (bicubic, no antialiasing, on the uint8 path, as the
InternVideo2 evaluation pipeline does) and normalised with the ImageNet mean / std.

Built on ``VideoProcessorMixin`` with plain torch operations, so it works without torchvision (which cannot
be installed beside the CPU build of torch) and loads as Hub remote code.
"""

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin

from .postprocessing_sgdetr import is_finite_positive
from .video_io_sgdetr import BACKENDS, VideoMetadata, open_video, prefetch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Decoded frames are resized in batches whose float32 copy stays under this size (12 frames of 720p).
_RESIZE_BATCH_BYTES = 128 * 2**20
#: Seconds below which two times differ only by float rounding (frame timestamps, durations, trims).
_TIME_TOLERANCE = 1e-6
# Bookkeeping keys transformers writes next to the settings in saved configs.
_SERIALIZATION_KEYS = {"video_processor_type", "processor_class", "image_processor_type", "auto_map"}


@dataclass(frozen=True)
class ClipPlan:
    """Where the clips of a video are and which frames represent them.

    Attributes:
        timestamps: (L, 2) float64 start / end of every clip in seconds from the video's first frame.
        frame_indices: (L, T) int64 decoded-frame indices, non-decreasing in clip-major order.
    """

    timestamps: np.ndarray
    frame_indices: np.ndarray

    @property
    def num_clips(self) -> int:
        return len(self.timestamps)


def _seconds(name: str, value) -> float:
    """A trim time given by the caller, as a finite float (NaN would reach an integer cast; True is no time)."""
    invalid = isinstance(value, (bool, np.bool_, str, bytes))
    if not invalid:
        try:
            value = float(value)
        except (TypeError, ValueError):
            invalid = True
    if invalid or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return value


class SGDetrVideoProcessor(VideoProcessorMixin):
    r"""
    Turns a video (file or in-memory frames) into clips of normalised frames for InternVideo2.

    Args:
        clip_length (`float`, defaults to 2.0): clip duration in seconds (2 for QVHighlights and TACoS,
            1 for Charades-STA).
        frames_per_clip (`int`, defaults to 4): frames sampled per clip (the 1B checkpoint's native count).
        size (`dict`, defaults to `{"height": 224, "width": 224}`): output frame size; frames are squashed to
            it (no aspect-ratio preservation, no crop), as in the InternVideo2 evaluation pipeline.
        resample (`str`, defaults to `"bicubic"`): `"bicubic"` or `"bilinear"` (torch interpolation modes).
        antialias (`bool`, defaults to `False`): antialiased downsampling (PIL-like); off in the release.
        rescale_factor (`float`, defaults to 1/255), image_mean, image_std: pixel normalisation
            `(x * rescale_factor - mean) / std` (ImageNet constants, not CLIP's).
        backend (`str`, defaults to `"pyav"`): video decoding backend, `"pyav"` or `"decord"` (decord runs in
            a child process so that a crash on a corrupt file cannot take this process down).
        num_threads (`int`, defaults to 0): decoder threads (0 = the decoder's choice).
        clips_per_chunk (`int`, defaults to 32): clips per chunk yielded by [`~SGDetrVideoProcessor.iter_clips`]
            (32 clips x 4 frames x 224 x 224 is 77 MB of float32).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        clip_length: float = 2.0,
        frames_per_clip: int = 4,
        size: dict[str, int] | None = None,
        resample: str = "bicubic",
        antialias: bool = False,
        rescale_factor: float = 1 / 255,
        image_mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
        image_std: tuple[float, ...] | list[float] = IMAGENET_STD,
        backend: str = "pyav",
        num_threads: int = 0,
        clips_per_chunk: int = 32,
        **kwargs,
    ):
        unknown = set(kwargs) - _SERIALIZATION_KEYS
        if unknown:
            raise TypeError(f"unknown SGDetrVideoProcessor arguments: {sorted(unknown)}")
        super().__init__()
        size = dict(size) if size is not None else {"height": 224, "width": 224}
        if not is_finite_positive(clip_length):
            raise ValueError(f"clip_length must be a finite number of seconds > 0, got {clip_length!r}")
        if frames_per_clip < 1 or clips_per_chunk < 1:
            raise ValueError(
                f"frames_per_clip and clips_per_chunk must be >= 1, got {frames_per_clip}, {clips_per_chunk}"
            )
        if set(size) != {"height", "width"} or min(size.values()) < 1:
            raise ValueError(f"size must be {{'height': h, 'width': w}} with positive sides, got {size}")
        if resample not in ("bicubic", "bilinear"):
            raise ValueError(f"resample must be 'bicubic' or 'bilinear', got {resample!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.clip_length = float(clip_length)
        self.frames_per_clip = int(frames_per_clip)
        self.size = size
        self.resample = resample
        self.antialias = bool(antialias)
        self.rescale_factor = float(rescale_factor)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.backend = backend
        self.num_threads = int(num_threads)
        self.clips_per_chunk = int(clips_per_chunk)

    def plan_clips(
        self, metadata: VideoMetadata, start: float | None = None, end: float | None = None
    ) -> ClipPlan:
        """Clip boundaries and the frames that represent each clip.

        The span [start, end) (default: the whole video; ``end`` is capped at the duration) is cut into
        L = ceil((end - start) / clip_length) clips. Clip i is sampled at times
        ``t_k = s_i + (k + 0.5) (e_i - s_i) / T``, k < T, each mapped to the frame on screen at that time
        (the last frame that starts at or before it), so samples never leave their clip.

        Args:
            metadata: the decoded video's frame times and duration.
            start, end: optional trim, in seconds from the first frame.
        """
        start = 0.0 if start is None else _seconds("start", start)
        to_the_end = end is None or (isinstance(end, float) and end == math.inf)  # inf: the end, as before
        end = metadata.duration if to_the_end else min(_seconds("end", end), metadata.duration)
        if start < 0 or start >= metadata.duration:
            raise ValueError(
                f"start={start} s lies outside {metadata.path} (duration {metadata.duration:.3f} s)"
            )
        if end - start < _TIME_TOLERANCE:  # a shorter span is float rounding of the two times, not a clip
            raise ValueError(f"end ({end} s) must be after start ({start} s) by at least {_TIME_TOLERANCE} s")
        # The tolerance keeps e.g. 150.0000001 s of 2-s clips at 75 clips, not 76.
        num_clips = max(1, math.ceil((end - start) / self.clip_length - _TIME_TOLERANCE))
        clip_starts = start + self.clip_length * np.arange(num_clips)
        clip_ends = np.minimum(clip_starts + self.clip_length, end)
        fractions = (np.arange(self.frames_per_clip) + 0.5) / self.frames_per_clip
        sample_times = clip_starts[:, None] + fractions[None, :] * (clip_ends - clip_starts)[:, None]
        # A sample within 1 us of a frame's start shows that frame (timestamps carry float rounding).
        frame_indices = (
            np.searchsorted(metadata.frame_times, sample_times + _TIME_TOLERANCE, side="right") - 1
        )
        return ClipPlan(np.stack([clip_starts, clip_ends], axis=1), np.clip(frame_indices, 0, None))

    def resize(self, frames: np.ndarray) -> torch.Tensor:
        """(n, H, W, 3) uint8 RGB -> (n, 3, height, width) uint8: interpolate in float32, clamp, round."""
        size = (self.size["height"], self.size["width"])
        if frames.shape[1:3] == size:
            return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        # numpy's uint8 -> float32 cast is about twice as fast as torch's on (n, H, W, 3) frames; interpolate
        # takes the channels-last view as it is.
        pixels = torch.from_numpy(frames.astype(np.float32)).permute(0, 3, 1, 2)
        resized = F.interpolate(
            pixels, size=size, mode=self.resample, align_corners=False, antialias=self.antialias
        )
        return resized.clamp_(0, 255).round_().to(torch.uint8)

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., 3, height, width) uint8 -> float32 ``(x * rescale_factor - mean) / std``."""
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (frames.float() * self.rescale_factor - mean) / std

    def iter_clips(
        self,
        video: str | os.PathLike | np.ndarray,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        clips_per_chunk: int | None = None,
    ) -> Iterator[BatchFeature]:
        """Decode and preprocess a video chunk by chunk, in time order; memory does not grow with its length.

        Args:
            video: a file path, or (F, H, W, 3) uint8 RGB frames at ``fps``.
            start, end: optional trim in seconds.
            clips_per_chunk: clips per yielded chunk (default: ``self.clips_per_chunk``).

        Yields:
            `BatchFeature` with `pixel_values` (n, frames_per_clip, 3, height, width) float32 and
            `clip_timestamps` (n, 2) float64 [start, end) seconds of each clip.

        Raises:
            VideoDecodingError (a `ValueError`): missing, unreadable, empty, corrupt or truncated video.
        """
        if isinstance(video, torch.Tensor):
            video = video.numpy()
        with open_video(video, self.backend, fps=fps, num_threads=self.num_threads) as decoder:
            metadata = decoder.metadata
            plan = self.plan_clips(metadata, start, end)
            unique_frames = np.unique(plan.frame_indices)
            batch_size = max(1, _RESIZE_BATCH_BYTES // (metadata.height * metadata.width * 3 * 4))
            # Decode in a background thread, so that decoding the next frames overlaps resizing these.
            with contextlib.closing(prefetch(decoder.iter_frames(unique_frames, batch_size))) as batches:
                yield from self._chunk_clips(batches, plan, clips_per_chunk or self.clips_per_chunk)

    def _chunk_clips(
        self, batches: Iterator[np.ndarray], plan: ClipPlan, clips_per_chunk: int
    ) -> Iterator[BatchFeature]:
        """Resize the decoded batches of ``plan``'s unique frames (in order) and yield chunks of clips as soon
        as all their frames are in, keeping only the frames that later clips still need."""
        _, positions = np.unique(plan.frame_indices, return_inverse=True)
        positions = positions.reshape(plan.frame_indices.shape)  # (L, T) indices into the unique frames
        # Clips and their frames are in time order, so the last frame a clip needs is in its last column.
        needed_until = positions[:, -1]
        buffered, offset, decoded, next_clip = (
            [],
            0,
            0,
            0,
        )  # `buffered`: unique frames offset, offset + 1, ...
        for frames in batches:
            buffered.append(self.resize(frames))
            decoded += len(frames)
            while next_clip < plan.num_clips:
                stop = min(next_clip + clips_per_chunk, plan.num_clips)
                if needed_until[stop - 1] >= decoded:
                    break
                frames_so_far = torch.cat(buffered)
                clip_frames = frames_so_far[torch.from_numpy(positions[next_clip:stop] - offset)]
                yield BatchFeature(
                    {
                        "pixel_values": self.normalize(clip_frames),
                        "clip_timestamps": torch.from_numpy(plan.timestamps[next_clip:stop]),
                    }
                )
                keep_from = positions[stop, 0] if stop < plan.num_clips else offset + len(frames_so_far)
                buffered, offset, next_clip = [frames_so_far[keep_from - offset :]], keep_from, stop

    def preprocess(
        self,
        videos: str | os.PathLike | np.ndarray,
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one whole video at once: `pixel_values` (L, frames_per_clip, 3, height, width) and
        `clip_timestamps` (L, 2). This holds every clip in memory (about 2.4 MB per clip); use
        [`~SGDetrVideoProcessor.iter_clips`] for long videos."""
        if kwargs:
            raise TypeError(f"unexpected arguments for {type(self).__name__}: {sorted(kwargs)}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        if isinstance(videos, (list, tuple)):
            raise TypeError(
                "pass one video at a time (a path or a (frames, H, W, 3) array); clips count varies"
            )
        chunks = list(self.iter_clips(videos, fps=fps, start=start, end=end))
        return BatchFeature({key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]})


__all__ = ["ClipPlan", "SGDetrVideoProcessor"]

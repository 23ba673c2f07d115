"""Helpers shared by the InternVideo2 / processor tests: videos whose frames carry their own index, and the
tiny InternVideo2 of :mod:`sgdetr_hf.tiny_repo`."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from sgdetr_hf.tiny_repo import (
    TINY_VOCAB,
    save_tiny_encoder,
    tiny_internvideo2_config,
    tiny_internvideo2_model,
)
from sgdetr_hf.tiny_repo import tiny_processor as tiny_processor  # re-exported for the tests
from sgdetr_hf.video_processing_sgdetr import IMAGENET_MEAN, IMAGENET_STD

VOCAB = TINY_VOCAB
INDEX_BITS = 9  # frames 0..511 can be painted


def paint_index(index: int, height: int, width: int) -> np.ndarray:
    """An RGB frame whose vertical bars spell ``index`` in binary (bit 0 leftmost; white = 1), so the index
    survives lossy codecs, chroma subsampling and any resize."""
    bar_of_column = np.arange(width) * INDEX_BITS // width
    white = (index >> bar_of_column & 1).astype(bool)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, white] = 255
    return frame


def read_index(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Painted indices of (..., H, W, 3) uint8 frames or of (..., 3, H, W) normalised pixel values."""
    if isinstance(frames, torch.Tensor):  # normalised channels-first pixel values -> [0, 1] luminance
        red = frames[..., 0, :, :] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        luminance, width = red.numpy(), frames.shape[-1]
    else:
        luminance, width = frames[..., 0].astype(np.float64) / 255, frames.shape[-2]
    bar = width / INDEX_BITS
    centres = ((np.arange(INDEX_BITS) + 0.5) * bar).astype(int)
    row = luminance.shape[-2] // 2
    bits = luminance[..., row, centres] > 0.5
    return (bits * (1 << np.arange(INDEX_BITS))).sum(-1)


def write_video(
    path: str | Path,
    num_frames: int = 50,
    fps: int = 25,
    size: tuple[int, int] = (80, 48),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    frame_times: np.ndarray | None = None,
    gop_size: int | None = None,
) -> Path:
    """Encode frames painted with their index. ``frame_times`` (seconds) makes a variable-frame-rate file."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if frame_times is not None:
            stream.time_base = Fraction(1, 1000)
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(paint_index(index, height, width), format="rgb24")
            if frame_times is not None:
                frame.pts, frame.time_base = round(frame_times[index] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


# The tiny encoder is the package's own (``sgdetr build-tiny-repo`` builds the same), under the tests' names.
tiny_config = tiny_internvideo2_config
tiny_model = tiny_internvideo2_model
save_tiny_checkpoint = save_tiny_encoder

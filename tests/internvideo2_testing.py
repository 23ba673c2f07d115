"""Helpers shared by the InternVideo2 / processor tests: videos whose frames carry their own index, and a
tiny InternVideo2 configuration."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from transformers import BertTokenizer

from sgdetr_hf.configuration_internvideo2 import InternVideo2Config
from sgdetr_hf.modeling_internvideo2 import InternVideo2Model
from sgdetr_hf.processing_sgdetr import SGDetrProcessor
from sgdetr_hf.video_processing_sgdetr import IMAGENET_MEAN, IMAGENET_STD, SGDetrVideoProcessor

VOCAB = Path(__file__).parent / "fixtures" / "vocab.txt"
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


def tiny_config(num_frames: int = 4, vocab_size: int = 92, **vision_overrides) -> InternVideo2Config:
    return InternVideo2Config(
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=279,  # int(64 * 48 / 11), the 1B model's MLP ratio
            image_size=16,
            patch_size=4,
            num_frames=num_frames,
            pooler_num_attention_heads=4,
            pooler_output_size=32,
            **vision_overrides,
        ),
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        projection_dim=16,
    )


def tiny_model(num_frames: int = 4, seed: int = 0, **vision_overrides) -> InternVideo2Model:
    """A random tiny model with unit-scale weights (1/sqrt(fan-in)) and randomised LayerScales and norms, so
    that every part of every block moves the output (the default init is near identity at this size)."""
    torch.manual_seed(seed)
    model = InternVideo2Model(tiny_config(num_frames, **vision_overrides)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lambda1" in name or "norm" in name.lower():
                parameter.uniform_(0.5, 1.5)
            elif parameter.ndim >= 2 and "embeddings" not in name:
                parameter.normal_(0, parameter[0].numel() ** -0.5)
            elif name.endswith("bias"):
                parameter.normal_(0, 0.1)
    return model


def tiny_processor(**video_kwargs) -> SGDetrProcessor:
    """The test vocabulary's tokenizer and a video processor at the tiny model's 16 x 16 resolution."""
    tokenizer = BertTokenizer(vocab=str(VOCAB), model_max_length=40)
    video_processor = SGDetrVideoProcessor(**{"size": {"height": 16, "width": 16}, **video_kwargs})
    return SGDetrProcessor(video_processor, tokenizer)


def save_tiny_checkpoint(directory: Path, **video_kwargs) -> Path:
    """A converted-style folder (model + processor) for the tiny model."""
    tiny_model().save_pretrained(directory)
    tiny_processor(**video_kwargs).save_pretrained(directory)
    return directory

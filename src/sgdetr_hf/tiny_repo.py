"""Tiny random-weight model repositories for integration tests (``sgdetr build-tiny-repo OUTPUT``).

What ``hf-internal-testing/tiny-random-*`` repositories are to transformers users: a complete, pipeline-ready
folder in the release's exact format, small enough to build in under a second and to run on any CPU, with
**random weights**: every answer it gives is meaningless. It exercises the whole path (a video file decoded,
encoded by InternVideo2, SG-DETR, post-processing, JSON, plot, the endpoint handler), never the quality.

    OUTPUT/config.json, model.safetensors     SG-DETR (hidden size 32, 16-d features, 5 queries), with
                                               ``auto_map`` and ``custom_pipelines``
    OUTPUT/*.py                                the remote code (``pipeline(model=OUTPUT, trust_remote_code=True)``)
    OUTPUT/encoder/                            a tiny InternVideo2 (16 x 16 frames, 16-d projections) and its
                                               processor: 2-s clips, a BERT WordPiece tokenizer of the 92 entries
                                               of :data:`TINY_VOCAB`

The test suite builds its tiny models and folders with the same functions (``tests/*_testing.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import BertTokenizer

from .configuration_internvideo2 import InternVideo2Config
from .configuration_sgdetr import SGDetrConfig
from .files import atomic_folder
from .modeling_internvideo2 import InternVideo2Model
from .modeling_sgdetr import SGDetrForMomentRetrieval
from .pipeline_sgdetr import ENCODER_SUBFOLDER, VideoMomentRetrievalPipeline
from .processing_sgdetr import SGDetrProcessor
from .video_processing_sgdetr import SGDetrVideoProcessor

#: A BERT WordPiece vocabulary in the real format (special tokens, words, ``##`` pieces), 92 entries: enough
#: for test queries such as "a man rides a big red bike" (other words become ``[UNK]``).
TINY_VOCAB = Path(__file__).with_name("tiny_vocab.txt")

#: SG-DETR matching the tiny InternVideo2's 16-d projected features.
TINY_SGDETR_CONFIG: dict[str, Any] = dict(
    video_feature_dim=16, text_feature_dim=16, hidden_size=32, num_attention_heads=4, ffn_dim=64,
    group_norm_groups=8, num_queries=5, num_pooling_layers=1, num_sgca_layers=1, num_encoder_layers=1,
    num_decoder_layers=1,
)  # fmt: skip


def tiny_internvideo2_config(
    num_frames: int = 4, vocab_size: int | None = None, **vision_overrides: Any
) -> InternVideo2Config:
    """InternVideo2 at toy size: 16 x 16 frames in 4 x 4 patches, 2 layers per tower, 16-d projections.
    ``vocab_size`` defaults to the size of :data:`TINY_VOCAB`."""
    if vocab_size is None:
        vocab_size = len(TINY_VOCAB.read_text(encoding="utf-8").split())
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


def tiny_internvideo2_model(num_frames: int = 4, seed: int = 0, **vision_overrides: Any) -> InternVideo2Model:
    """A random tiny InternVideo2 with unit-scale weights (1/sqrt(fan-in)) and randomised LayerScales and norms,
    so that every part of every block moves the output (the default init is near identity at this size).
    Seeded; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InternVideo2Model(tiny_internvideo2_config(num_frames, **vision_overrides)).eval()
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lambda1" in name or "norm" in name.lower():
                    parameter.uniform_(0.5, 1.5)
                elif parameter.ndim >= 2 and "embeddings" not in name:
                    parameter.normal_(0, parameter[0].numel() ** -0.5)
                elif name.endswith("bias"):
                    parameter.normal_(0, 0.1)
    return model


def tiny_processor(**video_kwargs: Any) -> SGDetrProcessor:
    """The :data:`TINY_VOCAB` tokenizer and a video processor at the tiny encoder's 16 x 16 resolution."""
    tokenizer = BertTokenizer(vocab=str(TINY_VOCAB), model_max_length=40)
    video_processor = SGDetrVideoProcessor(**{"size": {"height": 16, "width": 16}, **video_kwargs})
    return SGDetrProcessor(video_processor, tokenizer)


def save_tiny_encoder(directory: str | os.PathLike, seed: int = 0, **video_kwargs: Any) -> Path:
    """A folder in the format ``sgdetr convert-internvideo2`` writes (model + processor), tiny and random."""
    directory = Path(directory)
    tiny_internvideo2_model(seed=seed).save_pretrained(directory)
    tiny_processor(**video_kwargs).save_pretrained(directory)
    return directory


def tiny_sgdetr_model(seed: int = 0, **config_overrides: Any) -> SGDetrForMomentRetrieval:
    """A random SG-DETR of :data:`TINY_SGDETR_CONFIG` (with ``config_overrides``), seeded, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SGDetrForMomentRetrieval(SGDetrConfig(**{**TINY_SGDETR_CONFIG, **config_overrides})).eval()


def build_tiny_repo(directory: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """Write a complete, pipeline-ready tiny random-weight model repository to ``directory``.

    The folder is built beside ``directory`` and renamed into place, so it is complete or absent.

    Args:
        directory: a new folder, or an empty one.
        seed: seeds the weights of both models (the same seed gives the same files' tensors).
        config_overrides: SG-DETR config fields to change (e.g. ``num_queries=10``).
    Raises:
        FileExistsError: ``directory`` exists and is not an empty folder.
    """
    with atomic_folder(directory) as build:
        model = tiny_sgdetr_model(seed, **config_overrides)
        # Pipeline.save_pretrained writes config.json with "custom_pipelines" and the remote-code modules, which
        # is what makes the folder load with pipeline(model=..., trust_remote_code=True).
        VideoMomentRetrievalPipeline(model=model, encoder=False).save_pretrained(build)
        save_tiny_encoder(build / ENCODER_SUBFOLDER, seed=seed)
    return Path(directory)


__all__ = [
    "TINY_SGDETR_CONFIG",
    "TINY_VOCAB",
    "build_tiny_repo",
    "save_tiny_encoder",
    "tiny_internvideo2_config",
    "tiny_internvideo2_model",
    "tiny_processor",
    "tiny_sgdetr_model",
]

"""``sgdetr convert-internvideo2`` (also ``scripts/convert_internvideo2_checkpoint.py``): convert the official
InternVideo2 Stage-2 checkpoint into a native ``InternVideo2Model`` folder.

The release ships one torch pickle (``InternVideo2-stage2_1b-224p-f4.pt``, bf16, ~2.8 GB) whose
state dict sits under ``module`` (DeepSpeed) or ``model``. This module maps its keys to the native
names (the table in :func:`convert_state_dict`), drops the training-only parts (distillation
heads, text fusion layers, MLM / matching heads), checks every key and shape against the native
config and writes:

    output_dir/
        config.json, model.safetensors          the native model (loads with InternVideo2Model or AutoModel)
        configuration_internvideo2.py, modeling_internvideo2.py
                                                remote code, so the folder loads without this package
        processor_config.json, tokenizer.json, tokenizer_config.json
                                                SGDetrProcessor: the BERT-uncased tokenizer (from the given
                                                vocab.txt, max length 40) and the video processor
"""

import argparse
import logging
import re
import zipfile
from pathlib import Path

import torch

from ..configuration_internvideo2 import InternVideo2Config
from ..files import atomic_folder
from ..modeling_internvideo2 import InternVideo2Model, interpolate_position_table
from ..processing_sgdetr import DEFAULT_MAX_QUERY_TOKENS
from . import CommandLineError

logger = logging.getLogger(__name__)

_OFFICIAL_TO_NATIVE: list[tuple[str, str]] = [
    (
        r"vision_encoder\.patch_embed\.proj\.(weight|bias)",
        r"vision_model.embeddings.patch_embeddings.projection.\1",
    ),
    (r"vision_encoder\.cls_token", r"vision_model.embeddings.cls_token"),
    (r"vision_encoder\.pos_embed", r"vision_model.embeddings.position_embeddings"),
    (r"vision_encoder\.img_pos_embed", r"vision_model.embeddings.image_position_embeddings"),
    (r"vision_encoder\.blocks\.(\d+)\.(norm1|norm2)\.weight", r"vision_model.encoder.layers.\1.\2.weight"),
    (
        r"vision_encoder\.blocks\.(\d+)\.attn\.(qkv|q_norm|k_norm|proj)\.(weight|bias)",
        r"vision_model.encoder.layers.\1.attention.\2.\3",
    ),
    (
        r"vision_encoder\.blocks\.(\d+)\.ls([12])\.gamma",
        r"vision_model.encoder.layers.\1.layer_scale\2.lambda1",
    ),
    (
        r"vision_encoder\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)",
        r"vision_model.encoder.layers.\1.mlp.\2.\3",
    ),
    (r"vision_encoder\.clip_projector\.norm1_([qkv])\.(weight|bias)", r"vision_model.pooler.norm_\1.\2"),
    (r"vision_encoder\.clip_projector\.cross_attn\.([qkv])\.weight", r"vision_model.pooler.\1_proj.weight"),
    (r"vision_encoder\.clip_projector\.cross_attn\.([qkv])_bias", r"vision_model.pooler.\1_proj.bias"),
    (r"vision_encoder\.clip_projector\.cross_attn\.proj\.(weight|bias)", r"vision_model.pooler.out_proj.\1"),
    (
        r"text_encoder\.bert\.(embeddings\.(?:word_embeddings|position_embeddings|token_type_embeddings|LayerNorm)"
        r"\.(?:weight|bias))",
        r"text_model.\1",
    ),
    (
        r"text_encoder\.bert\.(encoder\.layer\.\d+\.(?:attention|intermediate|output)\.[\w.]+\.(?:weight|bias))",
        r"text_model.\1",
    ),
    (r"vision_proj\.(weight|bias)", r"visual_projection.\1"),
    (r"text_proj\.(weight|bias)", r"text_projection.\1"),
    (r"temp", r"temperature"),
]

# Training-only parts of the release, dropped on purpose (reported as a summary, not as an error).
_DROPPED = [
    r"vision_encoder\.(?:final_)?clip_decoder\..+",  # distillation heads
    r"vision_encoder\.clip_(?:img_)?pos_embed",  # their position tables
    r"text_encoder\.bert\.embeddings\.position_ids",  # buffer
    r"text_encoder\.cls\..+",  # MLM head
    r"itm_head\..+",  # video-text matching head
]
_TEXT_LAYER = re.compile(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.")


def select_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The weights inside a release checkpoint: under ``module``, else ``model``, else the dict itself,
    with any leading ``module.`` stripped from the keys."""
    for wrapper in ("module", "model"):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    return {key.removeprefix("module."): value for key, value in checkpoint.items() if torch.is_tensor(value)}


def load_official_checkpoint(path: str | Path, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a release checkpoint on CPU with ``torch.load(weights_only=True)``.

    ``allow_unsafe_pickle=True`` falls back to a full unpickle, which can run arbitrary code: use it only
    for a file from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:  # torch's error for it is an EOFError without a message
        raise ValueError(f"{path} is empty (0 bytes): download the checkpoint again")
    try:  # memory-map the (zip-format) file: a 2.8 GB checkpoint is then not copied into memory first
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    # torch raises UnpicklingError, RuntimeError, ValueError or EOFError depending on the file
    except Exception as error:
        if not allow_unsafe_pickle:
            reason = str(error) or type(error).__name__
            raise ValueError(
                f"{path} cannot be read with torch.load(weights_only=True) ({reason}): it is truncated or not "
                "a PyTorch checkpoint. If it comes from a source you trust and is complete, retry with "
                "allow_unsafe_pickle=True (--allow-unsafe-pickle)."
            ) from error
        logger.warning("loading %s with a full unpickle (allow_unsafe_pickle=True)", path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return select_state_dict(checkpoint)


def _native_key(official_key: str, num_text_layers: int) -> str | None:
    """The native name of an official key; ``None`` for keys dropped on purpose; the key itself if unknown."""
    if any(re.fullmatch(pattern, official_key) for pattern in _DROPPED):
        return None
    text_layer = _TEXT_LAYER.match(official_key)
    if text_layer and int(text_layer.group(1)) >= num_text_layers:
        return None  # a fusion (cross-attention) layer: used only for video-text matching and MLM
    for pattern, replacement in _OFFICIAL_TO_NATIVE:
        if re.fullmatch(pattern, official_key):
            return re.sub(pattern, replacement, official_key)
    return official_key


def convert_state_dict(
    official: dict[str, torch.Tensor], config: InternVideo2Config, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Map an official state dict onto the native ``InternVideo2Model`` described by ``config``.

    The video position table is resampled when its frame count differs from
    ``config.vision_config.num_frames`` (same function as ``interpolate_pos_encoding=True`` at run time),
    and the image table is derived from it when the checkpoint has none.

    Raises:
        ValueError: listing every official key that is neither mapped nor dropped on purpose, every
            native key left without a value, and every shape that differs from the config.
    """
    with torch.device("meta"):
        expected = InternVideo2Model(config).state_dict()
    vision = config.vision_config
    converted, dropped, unexpected = {}, [], []
    for key, tensor in official.items():
        native = _native_key(key, config.text_config.num_hidden_layers)
        if native is None:
            dropped.append(key)
        elif native not in expected:
            unexpected.append(key)
        else:
            converted[native] = tensor

    embeddings = "vision_model.embeddings."
    grid = vision.image_size // vision.patch_size
    table = converted.get(embeddings + "position_embeddings")
    if table is not None:
        source_frames = (table.shape[1] - 1) // grid**2
        target_frames = vision.num_frames // vision.tubelet_size
        if source_frames != target_frames and (table.shape[1] - 1) % grid**2 == 0:
            logger.info(
                "resampling the video position table from %d to %d frames", source_frames, target_frames
            )
            converted[embeddings + "position_embeddings"] = interpolate_position_table(
                table, source_frames, grid, target_frames, (grid, grid)
            )
        image_key = embeddings + "image_position_embeddings"
        if image_key in expected and image_key not in converted:
            logger.info("the checkpoint has no image position table: deriving it from the video table")
            patches = table[0, 1:].float().reshape(source_frames, grid**2, -1).mean(0)
            converted[image_key] = torch.cat([table[0, :1].float(), patches])[None].to(table.dtype)

    missing = sorted(set(expected) - set(converted))
    mismatched = [
        f"{key}: checkpoint {tuple(converted[key].shape)} vs config {tuple(expected[key].shape)}"
        for key in sorted(converted)
        if converted[key].shape != expected[key].shape
    ]
    if unexpected or missing or mismatched:
        problems = [
            ("official keys that are neither mapped nor known training-only keys", sorted(unexpected)),
            ("native keys missing from the checkpoint", missing),
            ("shape mismatches (wrong config?)", mismatched),
        ]
        report = "\n".join(
            f"{title} ({len(keys)}):\n  " + "\n  ".join(keys) for title, keys in problems if keys
        )
        raise ValueError(f"the checkpoint does not match the InternVideo2 config:\n{report}")
    logger.info("mapped %d tensors, dropped %d training-only tensors", len(converted), len(dropped))
    return {key: tensor.to(dtype) if dtype is not None else tensor for key, tensor in converted.items()}


def convert_internvideo2_checkpoint(
    checkpoint_path: str | Path,
    vocab_path: str | Path,
    output_dir: str | Path,
    config: InternVideo2Config | None = None,
    num_frames: int | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
    max_query_length: int = DEFAULT_MAX_QUERY_TOKENS,
    allow_unsafe_pickle: bool = False,
) -> Path:
    """Official checkpoint + BERT ``vocab.txt`` -> a folder with the native model and its processor.

    Args:
        checkpoint_path: the release ``.pt`` file.
        vocab_path: the bert-large-uncased ``vocab.txt`` (30 522 lines); the checkpoint has no tokenizer.
        output_dir: a new folder, or an empty one (``FileExistsError`` otherwise, before anything is read); it is
            written whole or not at all.
        config: the native config (default: the Stage2-1B one).
        num_frames: frames per clip to build the model for (default: the config's, 4); the position table is
            resampled when it differs from the checkpoint's.
        dtype: weights dtype on disk (default bf16, as released; ``None`` keeps the checkpoint's).
        max_query_length: tokenizer and processor maximum query length in tokens (the training recipes' cap).
        allow_unsafe_pickle: see [`load_official_checkpoint`].

    Returns:
        ``output_dir``.
    """
    from transformers import BertTokenizer

    from ..processing_sgdetr import SGDetrProcessor
    from ..video_processing_sgdetr import SGDetrVideoProcessor

    vocab_path = Path(vocab_path)
    if not vocab_path.is_file():
        raise ValueError(f"vocabulary file not found: {vocab_path} (the bert-large-uncased vocab.txt)")
    config = config if config is not None else InternVideo2Config()
    if num_frames is not None:
        config.vision_config.num_frames = num_frames
    # the folder is complete or absent (a failure, even while the weights are written, leaves nothing); the
    # cheap checks (the folder, the processor's settings) come before the checkpoint is read
    with atomic_folder(output_dir) as build:
        tokenizer = BertTokenizer(
            vocab=str(vocab_path), do_lower_case=True, model_max_length=max_query_length
        )
        video_processor = SGDetrVideoProcessor(frames_per_clip=config.vision_config.num_frames)
        processor = SGDetrProcessor(video_processor, tokenizer, max_query_length=max_query_length)
        state_dict = convert_state_dict(
            load_official_checkpoint(checkpoint_path, allow_unsafe_pickle), config, dtype
        )
        with torch.device("meta"):
            model = InternVideo2Model(config)
        model.load_state_dict(
            state_dict, strict=False, assign=True
        )  # non-persistent BERT buffers are not in it
        if dtype is not None:
            model.config.dtype = dtype
        model.save_pretrained(build)
        processor.save_pretrained(build)
    logger.info("wrote %s", output_dir)
    return Path(output_dir)


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "keep": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="InternVideo2-stage2_1b-224p-f4.pt")
    parser.add_argument("--vocab", required=True, help="bert-large-uncased vocab.txt")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--config", help="config.json of another InternVideo2 size (default: Stage2-1B)")
    parser.add_argument("--num-frames", type=int, help="frames per clip to build the model for (default 4)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="weights dtype on disk")
    parser.add_argument(
        "--max-query-length",
        type=int,
        default=DEFAULT_MAX_QUERY_TOKENS,
        help=f"tokens per query (default: {DEFAULT_MAX_QUERY_TOKENS}, the training recipes' cap; TACoS: 64)",
    )
    parser.add_argument(
        "--allow-unsafe-pickle", action="store_true", help="fall back to a full unpickle (trusted files only)"
    )


def run(args: argparse.Namespace) -> int:
    config = InternVideo2Config.from_json_file(args.config) if args.config else None
    try:
        output = convert_internvideo2_checkpoint(
            args.checkpoint,
            args.vocab,
            args.output,
            config=config,
            num_frames=args.num_frames,
            dtype=DTYPES[args.dtype],
            max_query_length=args.max_query_length,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
        )
    except (FileExistsError, ValueError) as error:  # what the inputs were wrong in, said as such
        raise CommandLineError(str(error)) from None
    print(f"converted {args.checkpoint} -> {output}")
    return 0


__all__ = [
    "convert_internvideo2_checkpoint",
    "convert_state_dict",
    "load_official_checkpoint",
    "select_state_dict",
]

"""Native InternVideo2 Stage-2 video and text encoders.

A re-implementation of the inference path of the public InternVideo2 Stage2-1B release (OpenGVLab/InternVideo,
``InternVideo2/multi_modality``):

    clip [B, T, 3, 224, 224] --vision tower--> tokens [B, 1 + 256 T, 1408] --attention pooler--> [B, 768]
        --visual_projection--> [B, 512]
    query ids [B, L] --text tower (19 BERT-large layers)--> tokens [B, L, 1024] --text_projection--> [B, L, 512]

The 512-d outputs of both projections live in one joint space (cosine similarity); they are the
clip and token features SG-DETR consumes. Only the inference part of the release is ported: no
stochastic depth, no distillation heads, no video-text matching / MLM heads.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_internvideo2 import InternVideo2Config, InternVideo2TextConfig, InternVideo2VisionConfig
from .loading_sgdetr import INTERNVIDEO2_FOLDER, from_pretrained_checked


def sincos_1d(positions: np.ndarray, width: int) -> np.ndarray:
    """1-D sin-cos code: ``[sin(p w_k)]_k ++ [cos(p w_k)]_k`` with ``w_k = 10000^(-k / (width / 2))``.

    Args:
        positions: (N,) positions (frame, row or column indices).
        width: code width, even.

    Returns:
        (N, width) float64 array.
    """
    half = width // 2
    frequencies = 1.0 / 10000 ** (np.arange(half, dtype=np.float64) / half)
    angles = np.outer(positions.astype(np.float64), frequencies)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_position_table(dim: int, num_frames: int, grid_size: int) -> torch.Tensor:
    """The 3-D sin-cos table InternVideo2 initialises its learned position embeddings from.

    Token order is time-major (frame, then row, then column); row 0 is the CLS token (zeros). The first
    ``dim / 4`` channels encode the frame index, the remaining ``3 dim / 4`` the column then the row.

    Returns:
        (1, 1 + num_frames * grid_size**2, dim) float32 tensor.
    """
    if dim % 16:
        raise ValueError(f"the sin-cos position table needs a width divisible by 16, got {dim}")
    temporal_width, spatial_width = dim // 4, 3 * dim // 8
    frame, row, column = np.meshgrid(
        np.arange(num_frames), np.arange(grid_size), np.arange(grid_size), indexing="ij"
    )
    table = np.concatenate(
        [
            sincos_1d(frame.ravel(), temporal_width),
            sincos_1d(column.ravel(), spatial_width),
            sincos_1d(row.ravel(), spatial_width),
        ],
        axis=1,
    )
    table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def interpolate_position_table(
    table: torch.Tensor,
    source_frames: int,
    source_grid: int,
    target_frames: int,
    target_grid: tuple[int, int],
) -> torch.Tensor:
    """Resample a position table (CLS row + time-major patch rows) to another frame count or patch grid.

    The CLS row is kept. Time is resampled with 1-D linear interpolation per spatial position and
    channel, each frame's grid with 2-D bicubic interpolation (both ``align_corners=False``), as the
    InternVideo2 release does when it loads a checkpoint for another input shape. Computed in fp32.

    Args:
        table: (1, 1 + source_frames * source_grid**2, D).
        target_grid: (rows, columns) of the target patch grid.

    Returns:
        (1, 1 + target_frames * rows * columns, D) in the dtype of ``table``.
    """
    dim = table.shape[-1]
    cls_row, patches = table[:, :1], table[0, 1:].float()
    patches = patches.reshape(source_frames, source_grid, source_grid, dim)
    if target_frames != source_frames:
        per_position = patches.permute(1, 2, 3, 0).reshape(1, -1, source_frames)
        per_position = F.interpolate(per_position, size=target_frames, mode="linear", align_corners=False)
        patches = per_position.reshape(source_grid, source_grid, dim, target_frames).permute(3, 0, 1, 2)
    if tuple(target_grid) != (source_grid, source_grid):
        per_frame = F.interpolate(
            patches.permute(0, 3, 1, 2), size=target_grid, mode="bicubic", align_corners=False
        )
        patches = per_frame.permute(0, 2, 3, 1)
    return torch.cat([cls_row, patches.reshape(1, -1, dim).to(table.dtype)], dim=1)


class InternVideo2RMSNorm(nn.Module):
    """RMSNorm as in the release: normalise in fp32, cast back to the input dtype, then scale."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hidden_states.to(input_dtype)


class InternVideo2LayerScale(nn.Module):
    """Per-channel residual-branch scale, multiplied in fp32 (the scales are ~1e-5 at init)."""

    def __init__(self, hidden_size: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.lambda1 = nn.Parameter(torch.full((hidden_size,), float(init_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return (hidden_states.float() * self.lambda1.float()).to(hidden_states.dtype)


class InternVideo2PatchEmbeddings(nn.Module):
    """Conv3d tubelet embedding: (B, T, C, H, W) -> (B, T/tubelet * H/p * W/p, D), time-major token order."""

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.projection = nn.Conv3d(
            config.num_channels, config.hidden_size, kernel_size=kernel, stride=kernel
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.permute(0, 2, 1, 3, 4).to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class InternVideo2VisionEmbeddings(nn.Module):
    """Patch embeddings, a prepended CLS token and learned absolute position embeddings.

    Two tables: ``position_embeddings`` for clips of ``num_frames`` frames and, for single images
    (T = 1), ``image_position_embeddings`` (or, without a separate table, the CLS row of the video table
    plus its patch rows averaged over frames).
    """

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.config = config
        self.grid_size = config.image_size // config.patch_size
        self.num_temporal_patches = config.num_frames // config.tubelet_size
        num_patches = self.grid_size**2
        self.patch_embeddings = InternVideo2PatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, 1 + self.num_temporal_patches * num_patches, config.hidden_size)
        )
        if config.use_separate_image_position_embeddings:
            self.image_position_embeddings = nn.Parameter(torch.zeros(1, 1 + num_patches, config.hidden_size))

    def image_position_table(self) -> torch.Tensor:
        """(1, 1 + grid**2, D) table for single images."""
        if self.config.use_separate_image_position_embeddings:
            return self.image_position_embeddings
        table = self.position_embeddings
        patches = table[:, 1:].reshape(1, self.num_temporal_patches, self.grid_size**2, -1).mean(1)
        return torch.cat([table[:, :1], patches], dim=1)

    def position_table(
        self, frames: int, grid: tuple[int, int], interpolate_pos_encoding: bool
    ) -> torch.Tensor:
        """The table for an input with ``frames`` temporal patches and a ``grid`` of (rows, columns)."""
        if frames == 1:
            table, source_frames = self.image_position_table(), 1
        else:
            table, source_frames = self.position_embeddings, self.num_temporal_patches
        if (frames, *grid) == (source_frames, self.grid_size, self.grid_size):
            return table
        if not interpolate_pos_encoding:
            raise ValueError(
                f"input has {frames} temporal patches on a {grid[0]}x{grid[1]} grid but the position table is "
                f"for {source_frames} on {self.grid_size}x{self.grid_size} (num_frames={self.config.num_frames}, "
                f"image_size={self.config.image_size}); pass interpolate_pos_encoding=True to resample it."
            )
        return interpolate_position_table(table, source_frames, self.grid_size, frames, grid)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        _, frames, _, height, width = pixel_values.shape
        patch, tubelet = self.config.patch_size, self.config.tubelet_size
        if frames % tubelet or height % patch or width % patch:
            raise ValueError(
                f"pixel_values of {frames} frames x {height}x{width} px do not tile into tubelets of "
                f"{tubelet} frame(s) x {patch}x{patch} px."
            )
        embeddings = self.patch_embeddings(pixel_values)
        cls_tokens = self.cls_token.expand(embeddings.shape[0], -1, -1).to(embeddings.dtype)
        embeddings = torch.cat([cls_tokens, embeddings], dim=1)
        table = self.position_table(
            frames // tubelet, (height // patch, width // patch), interpolate_pos_encoding
        )
        return embeddings + table.to(embeddings.dtype)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scaling) v on (B, H, N, d) inputs; returns (B, N, H, d) and the (B, H, N, M) weights."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def multi_head_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split (B, N, D) / (B, M, D) projections into heads, attend through the configured backend
    (``config._attn_implementation``: SDPA by default, eager on request) and merge back to (B, N, D)."""
    batch, num_queries, dim = query.shape
    head_dim = dim // num_heads

    def split_heads(states: torch.Tensor) -> torch.Tensor:
        return states.view(batch, states.shape[1], num_heads, head_dim).transpose(1, 2)

    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
        module.config._attn_implementation, eager_attention_forward
    )
    output, weights = attention_interface(
        module,
        split_heads(query),
        split_heads(key),
        split_heads(value),
        None,
        scaling=head_dim**-0.5,
        dropout=0.0,
    )
    return output.reshape(batch, num_queries, dim), weights


class InternVideo2Attention(nn.Module):
    """Bidirectional self-attention with a fused qkv projection and RMSNorm on q and k over the full width."""

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        if config.qk_normalization:
            self.q_norm = InternVideo2RMSNorm(config.hidden_size, config.rms_norm_eps)
            self.k_norm = InternVideo2RMSNorm(config.hidden_size, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = nn.Identity()
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        query, key, value = self.qkv(hidden_states).chunk(3, dim=-1)
        output, weights = multi_head_attention(
            self, self.q_norm(query), self.k_norm(key), value, self.num_heads
        )
        return self.proj(output), weights


class InternVideo2MLP(nn.Module):
    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class InternVideo2VisionLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.norm1 = InternVideo2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = InternVideo2Attention(config)
        self.layer_scale1 = InternVideo2LayerScale(config.hidden_size, config.layer_scale_init_value)
        self.norm2 = InternVideo2RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = InternVideo2MLP(config)
        self.layer_scale2 = InternVideo2LayerScale(config.hidden_size, config.layer_scale_init_value)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        attention_output, _ = self.attention(self.norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + self.layer_scale1(attention_output)
        return hidden_states + self.layer_scale2(self.mlp(self.norm2(hidden_states)))


class InternVideo2VisionEncoder(nn.Module):
    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [InternVideo2VisionLayer(config) for _ in range(config.num_hidden_layers)]
        )

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> BaseModelOutput:
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class InternVideo2AttentionPooler(nn.Module):
    """Attention pooling ("clip_projector"): the mean token queries every token (CLS included).

    (B, N, D) -> (B, pooler_output_size). The query is the mean over tokens and the keys carry no
    positional terms, so the result does not depend on the token order.
    """

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.pooler_num_attention_heads
        self.is_causal = False
        dim = config.hidden_size
        self.norm_q = nn.LayerNorm(dim, eps=config.pooler_layer_norm_eps)
        self.norm_k = nn.LayerNorm(dim, eps=config.pooler_layer_norm_eps)
        self.norm_v = nn.LayerNorm(dim, eps=config.pooler_layer_norm_eps)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, config.pooler_output_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        query = self.q_proj(self.norm_q(hidden_states.mean(dim=1, keepdim=True)))
        key = self.k_proj(self.norm_k(hidden_states))
        value = self.v_proj(self.norm_v(hidden_states))
        pooled, _ = multi_head_attention(self, query, key, value, self.num_heads)
        return self.out_proj(pooled).squeeze(1)


class InternVideo2PreTrainedModel(PreTrainedModel):
    config: InternVideo2Config
    config_class = InternVideo2Config
    base_model_prefix = "internvideo2"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVideo2VisionEmbeddings", "InternVideo2VisionLayer", "BertLayer"]
    _supports_sdpa = True
    _can_record_outputs = {"hidden_states": InternVideo2VisionLayer, "attentions": InternVideo2Attention}

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, allow_missing_weights: bool = False, **kwargs
    ):
        """``PreTrainedModel.from_pretrained``, strict: a folder without ``config.json``, of another model or with
        weights that are not readable safetensors is refused before anything is built; weights missing from the
        file (which would stay random), unexpected or mismatched raise :class:`~loading_sgdetr.CheckpointError`
        unless ``allow_missing_weights=True``."""
        return from_pretrained_checked(
            super().from_pretrained,
            pretrained_model_name_or_path,
            *model_args,
            expected_folder=INTERNVIDEO2_FOLDER,
            allow_missing_weights=allow_missing_weights,
            **kwargs,
        )

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, InternVideo2LayerScale):
            init.constant_(module.lambda1, module.init_value)
        elif isinstance(module, InternVideo2VisionEmbeddings):
            config = module.config
            init.normal_(module.cls_token, std=config.initializer_range)
            table = sincos_position_table(config.hidden_size, module.num_temporal_patches, module.grid_size)
            init.copy_(module.position_embeddings, table)
            if config.use_separate_image_position_embeddings:
                init.copy_(
                    module.image_position_embeddings,
                    sincos_position_table(config.hidden_size, 1, module.grid_size),
                )
        elif isinstance(module, InternVideo2Model):
            init.constant_(module.temperature, self.config.temperature_init)


class InternVideo2VisionModel(InternVideo2PreTrainedModel):
    """The vision tower: embeddings, ``num_hidden_layers`` blocks (no final norm) and the attention pooler."""

    config: InternVideo2VisionConfig
    config_class = InternVideo2VisionConfig
    base_model_prefix = "vision_model"
    input_modalities = ("video",)

    def __init__(self, config: InternVideo2VisionConfig):
        super().__init__(config)
        self.embeddings = InternVideo2VisionEmbeddings(config)
        self.encoder = InternVideo2VisionEncoder(config)
        self.pooler = InternVideo2AttentionPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
                normalised clips (see `SGDetrVideoProcessor`). `num_frames = 1` encodes single images with
                the image position table.
            interpolate_pos_encoding (`bool`): resample the position table when the frame count or the
                resolution differs from the configuration.

        Returns:
            `BaseModelOutputWithPooling` with `last_hidden_state` (B, 1 + T/tubelet * (H/p) * (W/p), D) and
            `pooler_output` (B, pooler_output_size).
        """
        if pixel_values.ndim != 5 or pixel_values.shape[0] == 0:
            raise ValueError(
                "pixel_values must be (batch, frames, channels, height, width) with at least one clip, got shape "
                f"{tuple(pixel_values.shape)}"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be normalised floats, got {pixel_values.dtype} (raw frames?): preprocess the "
                "video with SGDetrVideoProcessor (or SGDetrProcessor)"
            )
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        last_hidden_state = self.encoder(hidden_states, **kwargs).last_hidden_state
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state, pooler_output=self.pooler(last_hidden_state)
        )


def _check_text_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config) -> None:
    """``ValueError`` for token ids BERT would fail on cryptically (or, for a mask of another shape, ignore)."""
    if input_ids.ndim != 2 or 0 in input_ids.shape:
        raise ValueError(
            f"input_ids must be (batch, tokens) with at least one query and token, got shape {tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] > config.max_position_embeddings:
        raise ValueError(
            f"input_ids hold {input_ids.shape[1]} tokens, more than the text encoder's "
            f"{config.max_position_embeddings} positions: tokenise with max_length <= {config.max_position_embeddings}"
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
        )
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}")
    # one host read: the embedding lookup would fail with an IndexError (CPU) or a device assert (CUDA)
    low, high = torch.aminmax(input_ids)
    if low < 0 or high >= config.vocab_size:
        raise ValueError(
            f"input_ids hold token ids from {int(low)} to {int(high)}, outside this text encoder's vocabulary "
            f"of {config.vocab_size}: tokenise with the tokenizer saved beside these weights"
        )


class InternVideo2TextModel(BertModel):
    """The text tower: BERT embeddings and the first ``num_hidden_layers`` (19) BERT-large layers, no pooler.

    A stock library BERT (same module names as the release's checkpoint) whose ``last_hidden_state``
    (B, L, hidden_size) is the release's text-only ("mode=text") output.
    """

    config: InternVideo2TextConfig
    config_class = InternVideo2TextConfig
    base_model_prefix = "text_model"
    input_modalities = ("text",)

    def __init__(self, config: InternVideo2TextConfig):
        super().__init__(config, add_pooling_layer=False)


@dataclass
class InternVideo2TextFeaturesOutput(BaseModelOutputWithPooling):
    r"""
    Text features in the joint video-text space.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_hidden_size)`):
            raw output of the text tower (1024-d for the 1B model).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            sentence feature: `text_projection` of the [CLS] row (the release's retrieval embedding).
        token_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, projection_dim)`):
            `text_projection` of every token; row 0 equals `pooler_output`. Rows at padding positions are
            meaningless.
    """

    token_embeds: torch.FloatTensor | None = None


@dataclass
class InternVideo2Output(ModelOutput):
    r"""
    Args:
        logits_per_video (`torch.FloatTensor` of shape `(video_batch_size, text_batch_size)`):
            cosine similarity divided by the learned temperature.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, video_batch_size)`):
            the transpose of `logits_per_video`.
        video_embeds (`torch.FloatTensor` of shape `(video_batch_size, projection_dim)`): L2-normalised.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`): L2-normalised.
    """

    logits_per_video: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class InternVideo2Model(InternVideo2PreTrainedModel):
    """Both towers and their projections into the joint video-text space (``projection_dim``)."""

    def __init__(self, config: InternVideo2Config):
        super().__init__(config)
        self.vision_model = InternVideo2VisionModel._from_config(config.vision_config)
        self.text_model = InternVideo2TextModel._from_config(config.text_config)
        self.visual_projection = nn.Linear(config.vision_config.pooler_output_size, config.projection_dim)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.temperature = nn.Parameter(torch.tensor(float(config.temperature_init)))
        self.post_init()

    @can_return_tuple
    def get_video_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        One joint-space vector per clip.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_clips, num_frames, 3, height, width)`).

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` (num_clips, projection_dim) is `visual_projection`
            of the attention-pooled clip embedding (not normalised); `last_hidden_state` the vision tokens.
        """
        outputs = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> InternVideo2TextFeaturesOutput:
        r"""
        Token features and the sentence feature of each query, in the video features' space.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): `[CLS] ... [SEP]` ids.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`): 1 for real tokens.

        Returns:
            [`InternVideo2TextFeaturesOutput`] with `token_embeds` (B, L, projection_dim) and
            `pooler_output` (B, projection_dim), neither normalised.
        """
        _check_text_inputs(input_ids, attention_mask, self.config.text_config)
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        token_embeds = self.text_projection(outputs.last_hidden_state)
        return InternVideo2TextFeaturesOutput(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=token_embeds[:, 0],
            token_embeds=token_embeds,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> InternVideo2Output:
        r"""
        Video-text similarity of every clip with every query.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_clips, num_frames, 3, height, width)`).
            input_ids, attention_mask (`torch.LongTensor` of shape `(num_queries, sequence_length)`).

        Returns:
            [`InternVideo2Output`]: normalised embeddings and `cosine / temperature` logits.
        """
        video_embeds = self.get_video_features(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        )
        text_embeds = self.get_text_features(input_ids, attention_mask=attention_mask)
        video_embeds = F.normalize(video_embeds.pooler_output, dim=-1)
        text_embeds = F.normalize(text_embeds.pooler_output, dim=-1)
        logits_per_video = video_embeds @ text_embeds.t() / self.temperature
        return InternVideo2Output(
            logits_per_video=logits_per_video,
            logits_per_text=logits_per_video.t(),
            video_embeds=video_embeds,
            text_embeds=text_embeds,
        )


__all__ = [
    "InternVideo2Model",
    "InternVideo2PreTrainedModel",
    "InternVideo2TextModel",
    "InternVideo2VisionModel",
    "interpolate_position_table",
    "sincos_position_table",
]

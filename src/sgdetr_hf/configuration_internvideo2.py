"""Configuration of the native InternVideo2 Stage-2 video and text encoders.

The defaults describe the public ``InternVideo2-Stage2_1B-224p-f4`` release: a 1B-parameter
video tower (40 blocks of width 1408, 4 frames of 224 x 224 per clip) and the first 19 layers of
its BERT-large text tower, both projected into a shared 512-d video-text space.
"""

from transformers import BertConfig, PreTrainedConfig

from .loading_sgdetr import INTERNVIDEO2_FOLDER, FolderCheckedConfigMixin

_SUPPORTED_VISION_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")


class InternVideo2VisionConfig(PreTrainedConfig):
    r"""
    Configuration of [`InternVideo2VisionModel`]: a ViT with 3-D patch embedding, RMSNorm pre-norm blocks,
    QK normalisation, LayerScale and an attention-pooling head.

    Args:
        hidden_size (`int`, defaults to 1408): width of the residual stream.
        num_hidden_layers (`int`, defaults to 40): number of transformer blocks.
        num_attention_heads (`int`, defaults to 16): heads of the block attention (head dim 88).
        intermediate_size (`int`, defaults to 6144): MLP width (`int(1408 * 48 / 11)`).
        hidden_act (`str`, defaults to `"gelu_pytorch_tanh"`): MLP activation. The release trained with the
            fused tanh-GELU MLP; its unfused fp32 demo path uses exact `"gelu"`.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of every RMSNorm (blocks and QK normalisation).
        layer_scale_init_value (`float`, defaults to 1e-5): initial LayerScale value (random init only).
        qkv_bias (`bool`, defaults to `False`): bias on the fused qkv projection.
        qk_normalization (`bool`, defaults to `True`): RMSNorm on q and k over the full width, before the
            head split.
        image_size (`int`, defaults to 224): input height and width in pixels.
        patch_size (`int`, defaults to 14): spatial patch size in pixels.
        num_channels (`int`, defaults to 3): input channels (RGB).
        num_frames (`int`, defaults to 4): frames per clip the position table is built for.
        tubelet_size (`int`, defaults to 1): frames per temporal patch.
        use_separate_image_position_embeddings (`bool`, defaults to `True`): keep a second, learned position
            table for single images (T = 1). Without it the image table is derived from the video table.
        pooler_num_attention_heads (`int`, defaults to 16): heads of the attention pooler.
        pooler_layer_norm_eps (`float`, defaults to 1e-5): epsilon of the pooler's LayerNorms.
        pooler_output_size (`int`, defaults to 768): width of the pooled clip embedding.
        initializer_range (`float`, defaults to 0.02): std of the truncated-normal-free random init.
    """

    model_type = "internvideo2_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 1408
    num_hidden_layers: int = 40
    num_attention_heads: int = 16
    intermediate_size: int = 6144
    hidden_act: str = "gelu_pytorch_tanh"
    rms_norm_eps: float | int = 1e-6
    layer_scale_init_value: float | int = 1e-5
    qkv_bias: bool = False
    qk_normalization: bool = True
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    num_frames: int = 4
    tubelet_size: int = 1
    use_separate_image_position_embeddings: bool = True
    pooler_num_attention_heads: int = 16
    pooler_layer_norm_eps: float | int = 1e-5
    pooler_output_size: int = 768
    initializer_range: float | int = 0.02

    def __post_init__(self, **kwargs):
        for name, heads in (
            ("num_attention_heads", self.num_attention_heads),
            ("pooler_num_attention_heads", self.pooler_num_attention_heads),
        ):
            if self.hidden_size % heads:
                raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of {name} ({heads}).")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})."
            )
        if self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be a multiple of tubelet_size ({self.tubelet_size})."
            )
        if self.hidden_act not in _SUPPORTED_VISION_ACTIVATIONS:
            raise ValueError(
                f"hidden_act must be one of {_SUPPORTED_VISION_ACTIVATIONS}, got {self.hidden_act!r}."
            )
        super().__post_init__(**kwargs)

    @property
    def num_patches_per_frame(self) -> int:
        """Patches per (temporal) frame: ``(image_size / patch_size) ** 2`` (256 for the 1B model)."""
        return (self.image_size // self.patch_size) ** 2


class InternVideo2TextConfig(BertConfig):
    r"""
    Configuration of [`InternVideo2TextModel`]: the text-only part of the release's BERT-large text tower,
    i.e. its embeddings and first 19 layers (layers 19-23 are cross-attention "fusion" layers used only for
    video-text matching and are not part of it). Every field is a [`BertConfig`] field; only the defaults
    differ.
    """

    model_type = "internvideo2_text_model"
    base_config_key = "text_config"

    vocab_size: int = 30522
    hidden_size: int = 1024
    num_hidden_layers: int = 19
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float | int = 1e-12
    pad_token_id: int | None = 0


class InternVideo2Config(FolderCheckedConfigMixin, PreTrainedConfig):
    r"""
    Configuration of [`InternVideo2Model`]: both towers plus the projections into the joint space.

    Args:
        vision_config (`dict` or [`InternVideo2VisionConfig`], *optional*): vision tower configuration.
        text_config (`dict` or [`InternVideo2TextConfig`], *optional*): text tower configuration.
        projection_dim (`int`, defaults to 512): width of the joint video-text space.
        temperature_init (`float`, defaults to 0.07): initial contrastive temperature (training logits are
            cosine / temperature; feature extraction does not use it).
    """

    model_type = "internvideo2"
    expected_folder = INTERNVIDEO2_FOLDER
    sub_configs_defaults = {"vision_config": InternVideo2VisionConfig, "text_config": InternVideo2TextConfig}

    vision_config: dict | InternVideo2VisionConfig | None = None
    text_config: dict | InternVideo2TextConfig | None = None
    projection_dim: int = 512
    temperature_init: float | int = 0.07
    initializer_range: float | int = 0.02


__all__ = ["InternVideo2Config", "InternVideo2TextConfig", "InternVideo2VisionConfig"]

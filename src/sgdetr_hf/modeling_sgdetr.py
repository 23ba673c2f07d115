"""SG-DETR: Saliency-Guided DETR for moment retrieval and highlight detection (Gordeev et al.).

``SGDetrModel`` is the encoder side (paper §3.2-3.4): input projections, PoolingEncoder -> sentence token
(eq. 1), local saliency (eq. 2), saliency-guided cross-attention encoder (eq. 3-5), transformer encoder
(eq. 6), saliency amplifier and global saliency (eq. 7-9), plus the training-only negative-pair pass and
moment encoder (§3.7). ``SGDetrForMomentRetrieval`` adds the hybrid detector (``detector_sgdetr``, §3.5-3.6)
and the training objective (``loss_sgdetr``, eq. 11-15), which reads typed outputs: [`SGDetrModelOutput`],
[`SGDetrDetectorOutput`] and the parsed labels, [`SGDetrTargets`].

Inputs are raw per-clip / per-token features: the model L2-normalises them and appends the temporal
endpoint feature itself. Masks: 1 = valid. Video padding must be on the right (valid clips first). Any
number of clips works (positions are normalised by each video's valid length); a hard cap is only applied
by the data pipeline (``config.max_num_clips``).

Shipped to the Hub as remote code: flat module, sibling imports only as ``from .module import Name``.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import get_relative_import_files
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_sgdetr import SGDetrConfig
from .detector_sgdetr import SGDetrATSSHead, SGDetrDetectorOutput, SGDetrHybridDetector
from .layers_sgdetr import (
    SGDetrAttention,
    SGDetrDropout,
    SGDetrFeedForward,
    SGDetrMaskedGroupNorm,
    SGDetrQueryEmbedding,
    SGDetrZeroInitLinear,
)
from .loading_sgdetr import SGDETR_FOLDER, from_pretrained_checked
from .loss_sgdetr import moment_retrieval_loss
from .spans import clamp_spans_cw, sine_embedding
from .targets_sgdetr import SGDetrBatchContext, SGDetrTargets, prepare_targets

logger = logging.getLogger(__name__)

#: The pipeline every saved model folder advertises in ``config.json`` (``custom_pipelines``, as
#: ``Pipeline.save_pretrained`` writes it) and ships the code of, so that
#: ``pipeline(model=folder, trust_remote_code=True)`` works on any folder a model is saved to.
PIPELINE_TASK = "video-moment-retrieval"
PIPELINE_MODULE = "pipeline_sgdetr"
PIPELINE_INFO = {
    "impl": f"{PIPELINE_MODULE}.VideoMomentRetrievalPipeline",
    "pt": ["AutoModel"],
    "type": "multimodal",
}

# saliency logit given to padded clips: sigmoid() is exactly 0 there
PADDING_SALIENCY = -1e4


# ============================================================================================ outputs
@dataclass
class SGDetrModelOutput(ModelOutput):
    """Encoder-side outputs of [`SGDetrModel`].

    last_hidden_state ``(B, L, d)``: ``F_g``, the globally amplified features (eq. 9) the detector reads
        (``F_hat`` when ``use_global_saliency`` is False). Zero at padded clips.
    encoder_last_hidden_state ``(B, L, d)``: ``F_hat``, the transformer-encoder output (eq. 6).
    local_saliency / global_saliency ``(B, L)``: raw logits, -1e4 at padding; global is None when
        ``use_global_saliency`` is False.
    sentence_embeds ``(B, d)``: ``F_sent``. video_embeds ``(B, L, d)``: ``V0``. text_embeds ``(B, N, d)``: ``T0``.
    position_embeddings ``(B, L, d)``: the length-normalised sine encoding. video_mask ``(B, L)`` bool.
    neg_local_saliency / neg_global_saliency ``(B, L)``: negative-pair pass (video b with the text of sample
        (b+1) % B, of the global batch with a ``batch_context``), training only; which of those pairs are real
        negatives is ``SGDetrTargets.neg_pair_mask``.
    moment_tokens / nonmoment_tokens ``(B, d)``, moment_frame_outputs ``(B, L, d)``: moment encoder,
        training only. sentence_pool ``(G, d)``: the sentence tokens of the global batch (this batch's own rows
        are ``sentence_embeds``), the alignment loss's pool; only with a ``batch_context``.
    """

    last_hidden_state: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    local_saliency: torch.FloatTensor | None = None
    global_saliency: torch.FloatTensor | None = None
    sentence_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    position_embeddings: torch.FloatTensor | None = None
    video_mask: torch.BoolTensor | None = None
    neg_local_saliency: torch.FloatTensor | None = None
    neg_global_saliency: torch.FloatTensor | None = None
    moment_tokens: torch.FloatTensor | None = None
    nonmoment_tokens: torch.FloatTensor | None = None
    moment_frame_outputs: torch.FloatTensor | None = None
    sentence_pool: torch.FloatTensor | None = None


@dataclass
class SGDetrOutput(ModelOutput):
    """Outputs of [`SGDetrForMomentRetrieval`]. Spans are normalised ``(center, width)`` relative to
    ``T_b = L_b * clip_length``; decoder class 0 = moment, 1 = no-object.

    loss (scalar) and loss_dict (flat dict of weighted terms): only when ``labels`` are given.
    pred_spans ``(B, K, 2)``, pred_logits ``(B, K, 2)``, pred_iou_logits ``(B, K)`` (None without the IoU
        head), det_scores ``(B, K)``: ``S_det = p^alpha * IoU^(1-alpha)`` (eq. 10; ``p`` without the IoU head).
    atss_logits / atss_centerness ``(B, A)``, atss_spans ``(B, A, 2)`` (decoded, clipped): None without the
        ATSS head. anchors ``(B, A, 2)`` (unclipped), anchor_mask ``(B, A)``, anchor_levels ``(A,)``: None
        without the hybrid detector (no pyramid).
    local_saliency / global_saliency ``(B, L)`` raw logits (global None when disabled), video_mask ``(B, L)``,
    encoder_last_hidden_state ``(B, L, d)`` (``F_g``, the detector input), sentence_embeds ``(B, d)``.
    encoder_outputs: every encoder-side output ([`SGDetrModelOutput`]); detector_outputs: every detector
    output ([`SGDetrDetectorOutput`], with the training query groups when ``labels`` are given). These two
    and the parsed labels are what the objective reads.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.Tensor] | None = None
    pred_spans: torch.FloatTensor | None = None
    pred_logits: torch.FloatTensor | None = None
    pred_iou_logits: torch.FloatTensor | None = None
    det_scores: torch.FloatTensor | None = None
    atss_logits: torch.FloatTensor | None = None
    atss_spans: torch.FloatTensor | None = None
    atss_centerness: torch.FloatTensor | None = None
    anchors: torch.FloatTensor | None = None
    anchor_mask: torch.BoolTensor | None = None
    anchor_levels: torch.LongTensor | None = None
    local_saliency: torch.FloatTensor | None = None
    global_saliency: torch.FloatTensor | None = None
    video_mask: torch.BoolTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    sentence_embeds: torch.FloatTensor | None = None
    encoder_outputs: SGDetrModelOutput | None = None
    detector_outputs: SGDetrDetectorOutput | None = None


# ============================================================================================ input checks
def _check_mask_shape(name: str, mask: Tensor, shape: tuple[int, int], what: str) -> None:
    if not isinstance(mask, Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor (1 = valid, 0 = padding), got {type(mask).__name__}."
        )
    if mask.ndim != 2 or tuple(mask.shape) != shape:
        raise ValueError(
            f"{name} must have shape (batch, {what}) = {shape} to match the features, got {tuple(mask.shape)}; "
            f"pass one 0/1 entry per {what[:-1] if what.endswith('s') else what}."
        )


def _as_bool(mask: Tensor) -> Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _values_are_valid(
    video_features: Tensor, video_mask: Tensor, text_features: Tensor, text_mask: Tensor
) -> Tensor:
    """One 0-dim bool tensor, read with a single host sync: True when every check of :func:`_raise_for_values`
    passes. False also when finite features overflow a row's float32 sum (values near 1e38), which
    :func:`_raise_for_values` then clears."""
    checks = []
    for features, mask in ((video_features, video_mask), (text_features, text_mask)):
        valid = _as_bool(mask)
        if mask.dtype != torch.bool:
            checks.append(((mask == 0) | (mask == 1)).all())  # NaN fails both
        checks.append(valid.any(1).all())
        # a row holding NaN or Inf has a non-finite sum: one reduction instead of isfinite's four passes
        checks.append((torch.isfinite(features.sum(-1, dtype=torch.float32)) | ~valid).all())
    valid = _as_bool(video_mask)
    right_padded = torch.arange(valid.shape[1], device=valid.device)[None, :] < valid.sum(1, keepdim=True)
    checks.append((valid == right_padded).all())
    return torch.stack(checks).all()


def _raise_for_values(
    video_features: Tensor, video_mask: Tensor, text_features: Tensor, text_mask: Tensor
) -> None:
    """The slow path of :func:`validate_inputs`: find what is wrong and say so."""
    for name, mask in (("video_mask", video_mask), ("text_mask", text_mask)):
        if mask.dtype != torch.bool:
            if mask.is_floating_point() and not torch.isfinite(mask).all():
                raise ValueError(f"{name} contains NaN or Inf; it must hold 0/1 values.")
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError(f"{name} must hold only 0 and 1 (1 = valid), got other values.")
    vmask, tmask = _as_bool(video_mask), _as_bool(text_mask)
    for name, mask in (("video_mask", vmask), ("text_mask", tmask)):
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"{name} is all zero for sample(s) {empty}: every sample needs at least one valid "
                f"{'clip' if name == 'video_mask' else 'token'}; drop those samples from the batch."
            )
    lengths = vmask.sum(1, keepdim=True)
    if not torch.equal(vmask, torch.arange(vmask.shape[1], device=vmask.device)[None, :] < lengths):
        raise ValueError(
            "video_mask must mark the valid clips first and padding at the end (right padding), e.g. "
            "[1, 1, 1, 0, 0]; holes or left padding are not supported."
        )
    for name, x, mask in (("video_features", video_features, vmask), ("text_features", text_features, tmask)):
        bad = ~torch.isfinite(x).all(-1) & mask
        if bad.any():
            where = bad.nonzero()[0].tolist()
            raise ValueError(
                f"{name} contains NaN or Inf (first at sample {where[0]}, position {where[1]}); "
                "check the feature extraction or replace them before calling the model."
            )


def validate_inputs(
    config: SGDetrConfig, video_features: Tensor, video_mask: Tensor, text_features: Tensor, text_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Check shapes, dims, masks and finiteness; return the masks as bool. Raises ``ValueError``.

    The value checks (0/1 masks, a valid clip and token per sample, right padding, finite features) cost one
    host synchronisation; under ``torch.compile`` they are skipped (shapes are still checked), so that the
    forward compiles to one graph: check a new data source once without compiling."""
    for name, x, dim, cfg_name in (
        ("video_features", video_features, config.video_feature_dim, "video_feature_dim"),
        ("text_features", text_features, config.text_feature_dim, "text_feature_dim"),
    ):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 3:
            raise ValueError(
                f"{name} must have rank 3 (batch, length, dim), got shape {tuple(x.shape)}; "
                "add a batch dimension with x[None] for a single sample."
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}.")
        if x.shape[1] == 0 or x.shape[-1] == 0:
            raise ValueError(
                f"{name} is empty (shape {tuple(x.shape)}); every sample needs at least one clip/token of "
                f"{dim} features."
            )
        if x.shape[-1] != dim:
            raise ValueError(
                f"{name} has feature dim {x.shape[-1]} but the model expects {dim} (config.{cfg_name}); "
                f"extract features with the matching encoder or build the config with {cfg_name}={x.shape[-1]}."
            )
    if video_features.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"batch sizes differ: video_features has {video_features.shape[0]} samples, text_features "
            f"{text_features.shape[0]}; pass one query per video (repeat the video for several queries)."
        )
    batch, length = video_features.shape[:2]
    if batch == 0:
        raise ValueError("the batch is empty (0 samples); pass at least one video and its query.")
    _check_mask_shape("video_mask", video_mask, (batch, length), "clips")
    _check_mask_shape("text_mask", text_mask, (batch, text_features.shape[1]), "tokens")
    if not torch.compiler.is_compiling() and not bool(
        _values_are_valid(video_features, video_mask, text_features, text_mask)
    ):
        _raise_for_values(video_features, video_mask, text_features, text_mask)
    return _as_bool(video_mask), _as_bool(text_mask)


def _check_batch_context_use(labels: list[dict] | None, batch_context: SGDetrBatchContext | None) -> None:
    if batch_context is not None and labels is None:
        raise ValueError("batch_context is a training input: pass it together with labels.")


def _pad_tokens(tokens: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """``(B, N, d)`` tokens and ``(B, N)`` mask padded on the right to ``length`` tokens (masked out)."""
    extra = length - tokens.shape[1]
    return F.pad(tokens, (0, 0, 0, extra)), F.pad(mask, (0, extra), value=False)


# ============================================================================================ blocks
class SGDetrProjection(nn.Module):
    """Two CG-DETR LinearLayer blocks: ``Lin2(Drop(LN2(ReLU(Lin1(Drop(LN1(x)))))))`` (paper §3.2's input projection)."""

    def __init__(self, in_dim: int, config: SGDetrConfig):
        super().__init__()
        d = config.hidden_size
        self.norm1 = nn.LayerNorm(in_dim, eps=config.layer_norm_eps)
        self.linear1 = nn.Linear(in_dim, d)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.linear2 = nn.Linear(d, d)
        self.dropout = SGDetrDropout(config.input_dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.linear1(self.dropout(self.norm1(x))))
        return self.linear2(self.dropout(self.norm2(x)))


class SGDetrAttentionPooling(nn.Module):
    """One AttentionPooling layer of eq. 1 (§3.2): ``s <- s + Drop(MHA(LN_q(s), LN_k(T), LN_v(T)))``."""

    def __init__(self, config: SGDetrConfig):
        super().__init__()
        d = config.hidden_size
        self.norm_q = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.norm_k = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.norm_v = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.attention = SGDetrAttention(config)
        self.dropout = SGDetrDropout(config.dropout)

    def forward(self, sentence: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        pooled = self.attention(
            self.norm_q(sentence)[:, None], self.norm_k(tokens), self.norm_v(tokens), key_mask=token_mask
        )
        return sentence + self.dropout(pooled[:, 0])


class SGDetrPoolingEncoder(nn.Module):
    """PoolingEncoder (eq. 1): masked mean of the tokens refined by ``num_pooling_layers`` attention poolings."""

    def __init__(self, config: SGDetrConfig):
        super().__init__()
        self.layers = nn.ModuleList(SGDetrAttentionPooling(config) for _ in range(config.num_pooling_layers))

    def forward(self, tokens: Tensor, token_mask: Tensor) -> Tensor:
        m = token_mask[..., None].to(tokens.dtype)
        sentence = (tokens * m).sum(1) / m.sum(1)
        for layer in self.layers:
            sentence = layer(sentence, tokens, token_mask)
        return sentence


class SGDetrLocalSaliency(nn.Module):
    """Eq. 2: ``S_local = alpha * cos(F_sent, V0_t) + beta`` (learnable scalars), -1e4 at padding. fp32."""

    def __init__(self, config: SGDetrConfig):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(config.saliency_alpha_init)))
        self.beta = nn.Parameter(torch.full((1,), float(config.saliency_beta_init)))

    def forward(self, sentence: Tensor, video: Tensor, video_mask: Tensor) -> Tensor:
        cosine = torch.einsum(
            "bld,bd->bl", F.normalize(video.float(), dim=-1), F.normalize(sentence.float(), dim=-1)
        )
        scores = self.alpha.float() * cosine + self.beta.float()
        return scores.masked_fill(~video_mask, PADDING_SALIENCY)


class SGDetrPostNormLayer(GradientCheckpointingLayer):
    """The post-norm residual block shared by the SGCA and encoder layers: ``x = LN(x + drop(attended))``,
    then ``x = LN(x + drop(FFN(x)))``. Subclasses name their attention module (the attribute registered first,
    so parameter order and seeded initialisation are those of a hand-written layer) and compute ``attended``."""

    def __init__(self, config: SGDetrConfig, attention_name: str):
        super().__init__()
        d = config.hidden_size
        self.add_module(attention_name, SGDetrAttention(config))
        self.norm1 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ffn = SGDetrFeedForward(config)
        self.norm2 = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.dropout = SGDetrDropout(config.dropout)

    def residual_blocks(self, x: Tensor, attended: Tensor) -> Tensor:
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ffn(x)))


class SGDetrSGCALayer(SGDetrPostNormLayer):
    """Saliency-guided cross-attention layer (eq. 3-5, §3.3), post-norm. ``gate=None`` gives plain
    cross-attention (ablation row (a))."""

    def __init__(self, config: SGDetrConfig):
        super().__init__(config, attention_name="cross_attention")

    def forward(self, x: Tensor, pos: Tensor, text: Tensor, text_mask: Tensor, gate: Tensor | None) -> Tensor:
        attended = self.cross_attention(x + pos, text, text, key_mask=text_mask, gate=gate)
        return self.residual_blocks(x, attended)


class SGDetrEncoderLayer(SGDetrPostNormLayer):
    """Post-norm self-attention layer with ``q = k = x + pos`` (eq. 6 encoder and the moment encoder)."""

    def __init__(self, config: SGDetrConfig):
        super().__init__(config, attention_name="self_attention")

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        key_mask: Tensor,
        keys: Tensor | None = None,
        key_pos: Tensor | None = None,
    ) -> Tensor:
        """Self-attention over ``x`` ``(B, L, d)`` with ``key_mask`` ``(B, L)`` bool; or, with ``keys`` /
        ``key_pos`` ``(B, K, d)`` (the layer's input rows, of which ``x`` holds some), the rows of ``x`` attend
        those keys with a mask per row, ``key_mask`` ``(B, L, K)``: the outputs the full layer gives at these
        rows."""
        qk = x + pos
        if keys is None:
            return self.residual_blocks(x, self.self_attention(qk, qk, x, key_mask=key_mask))
        attended = self.self_attention(qk, keys + key_pos, keys, blocked=~key_mask[:, None])
        return self.residual_blocks(x, attended)


class SGDetrMomentEncoder(nn.Module):
    """CG-DETR moment encoder (eq. 14, §3.7, training only): a learnable token attends the moment clips (first pass)
    or the non-moment clips (second pass).

    The passes run as one batch, and the last layer computes only the rows the loss reads: the two tokens and
    each clip in the pass of its kind (a clip's row in the other pass would be discarded). With one layer (the
    default) both passes still share that layer's input, so its keys and values are projected once, and it
    runs ``2 + L`` rows per video instead of ``2 (1 + L)``."""

    def __init__(self, config: SGDetrConfig):
        super().__init__()
        d = config.hidden_size
        self.layers = nn.ModuleList(
            SGDetrEncoderLayer(config) for _ in range(config.num_moment_encoder_layers)
        )
        self.moment_token = nn.Parameter(torch.zeros(d))
        self.moment_position = nn.Parameter(torch.zeros(d))

    def forward(
        self, video: Tensor, pos: Tensor, video_mask: Tensor, moment_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """video / pos ``(B, L, d)``, video_mask / moment_mask ``(B, L)`` bool -> the moment and non-moment
        tokens ``(B, d)`` and the frame outputs ``(B, L, d)``: each clip from the pass of its kind (padding
        from the non-moment pass)."""
        batch = video.shape[0]
        token = self.moment_token.to(video.dtype)[None, None].expand(batch, 1, -1)
        token_pos = self.moment_position.to(video.dtype)[None, None].expand(batch, 1, -1)
        x = torch.cat((token, video), 1)
        p = torch.cat((token_pos, pos), 1)
        keep_token = torch.ones(batch, 1, dtype=torch.bool, device=video.device)
        moment_keys = torch.cat((keep_token, video_mask & moment_mask), 1)  # (B, 1 + L)
        other_keys = torch.cat((keep_token, video_mask & ~moment_mask), 1)
        # the pass of every output row [moment token, non-moment token, clip 1..L]
        row_in_moment_pass = torch.cat((keep_token, ~keep_token, moment_mask), 1)[..., None]  # (B, 2 + L, 1)
        *first_layers, last_layer = self.layers
        if not first_layers:  # one layer: both passes attend the same input rows, with their own key masks
            rows = torch.cat((x[:, :1], x), 1)
            keys, key_pos = x, p
            allowed = torch.where(row_in_moment_pass, moment_keys[:, None], other_keys[:, None])
        else:  # the passes part at the first layer: [moment pass; non-moment pass] as a batch of 2B
            x, both_pos = x.repeat(2, 1, 1), p.repeat(2, 1, 1)
            key_mask = torch.cat((moment_keys, other_keys), 0)
            for layer in first_layers:
                x = layer(x, both_pos, key_mask)
            moment_x, other_x = x[:batch], x[batch:]
            clips = torch.where(moment_mask[..., None], moment_x[:, 1:], other_x[:, 1:])
            rows = torch.cat((moment_x[:, :1], other_x[:, :1], clips), 1)
            keys, key_pos = torch.cat((moment_x, other_x), 1), torch.cat((p, p), 1)
            allowed = torch.cat(
                (moment_keys[:, None] & row_in_moment_pass, other_keys[:, None] & ~row_in_moment_pass), 2
            )
        out = last_layer(rows, torch.cat((p[:, :1], p), 1), allowed, keys, key_pos)
        return out[:, 0], out[:, 1], out[:, 2:]


# ============================================================================================ models
class SGDetrPreTrainedModel(PreTrainedModel):
    config_class = SGDetrConfig
    base_model_prefix = "sg_detr"
    main_input_name = "video_features"
    input_modalities = ["video", "text"]
    _no_split_modules = ["SGDetrSGCALayer", "SGDetrEncoderLayer", "SGDetrDecoderLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, allow_missing_weights: bool = False, **kwargs
    ):
        """``PreTrainedModel.from_pretrained``, strict: the folder's weights must be readable safetensors (a pickle
        is never loaded) and hold exactly this model's weights; missing, unexpected or mismatched ones raise
        :class:`~loading_sgdetr.CheckpointError`, unless ``allow_missing_weights=True``
        (fine-tuning with new heads: those start freshly initialised, with a warning)."""
        return from_pretrained_checked(
            super().from_pretrained,
            pretrained_model_name_or_path,
            *model_args,
            expected_folder=SGDETR_FOLDER,
            allow_missing_weights=allow_missing_weights,
            **kwargs,
        )

    def _init_weights(self, module: nn.Module) -> None:
        """Initialisation by module type (``transformers.initialization`` helpers, so loaded weights stay):
        xavier-uniform linears and convolutions with zero biases, zero-initialised heads
        (:class:`SGDetrZeroInitLinear`), N(0, 1) learned queries (:class:`SGDetrQueryEmbedding`, DINO) and moment
        tokens (CG-DETR), N(0, 0.01) ATSS convolutions with the classification bias at the prior (ATSS).

        A container is only visited when it holds parameters of its own (transformers skips the others for
        custom code), so the special cases are leaf types, or, for the ATSS head, a block with its own ``scales``.
        """
        cfg = self.config
        if isinstance(module, SGDetrZeroInitLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SGDetrQueryEmbedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=cfg.initializer_range)
        elif isinstance(module, (nn.LayerNorm, SGDetrMaskedGroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, SGDetrLocalSaliency):
            init.constant_(module.alpha, cfg.saliency_alpha_init)
            init.constant_(module.beta, cfg.saliency_beta_init)
        elif isinstance(module, SGDetrMomentEncoder):
            init.normal_(module.moment_token, mean=0.0, std=1.0)
            init.normal_(module.moment_position, mean=0.0, std=1.0)
        elif isinstance(module, SGDetrATSSHead):  # visited after its convolutions: overrides their init
            for conv in (module.cls_conv, module.reg_conv, module.cls_out, module.reg_out, module.ctr_out):
                init.normal_(conv.weight, mean=0.0, std=0.01)
                init.zeros_(conv.bias)
            init.constant_(module.cls_out.bias, -math.log((1 - module.cls_prior) / module.cls_prior))
            init.ones_(module.scales)


class SGDetrModel(SGDetrPreTrainedModel):
    """SG-DETR encoder side: from raw clip / token features to the amplified video features and the local
    and global saliency scores (§3.2-3.4). No feature backbone: inputs are InternVideo2 features."""

    def __init__(self, config: SGDetrConfig):
        super().__init__(config)
        d = config.hidden_size
        self.video_projection = SGDetrProjection(config.video_input_dim, config)
        self.text_projection = SGDetrProjection(config.text_feature_dim, config)
        self.token_type_embeddings = nn.Embedding(2, d)  # 0 = text, 1 = video
        self.pooling_encoder = SGDetrPoolingEncoder(config)
        self.local_saliency = SGDetrLocalSaliency(config)
        self.sgca_layers = nn.ModuleList(SGDetrSGCALayer(config) for _ in range(config.num_sgca_layers))
        self.encoder_layers = nn.ModuleList(
            SGDetrEncoderLayer(config) for _ in range(config.num_encoder_layers)
        )
        # eq. 8's projection of the locally amplified features to a saliency residual
        self.global_saliency = SGDetrZeroInitLinear(d, 1) if config.use_global_saliency else None
        self.moment_encoder = SGDetrMomentEncoder(config) if config.use_alignment else None
        self.post_init()

    # ---------------------------------------------------------------- pieces
    def prepare_video(self, video_features: Tensor, video_mask: Tensor) -> Tensor:
        """Zero the padding (whatever it holds), L2-normalise clips and append TEF ``[i/L_b, (i+1)/L_b]``
        (both optional). ``(B, L, d_v)`` -> ``(B, L, d_v + 2)``."""
        x = self._normalize_rows(video_features, video_mask)
        if self.config.use_tef:
            lengths = video_mask.sum(1, keepdim=True).float()
            index = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)[None, :]
            tef = torch.stack((index / lengths, (index + 1) / lengths), dim=-1) * video_mask[..., None]
            x = torch.cat((x, tef), dim=-1)
        return x

    def prepare_text(self, text_features: Tensor, text_mask: Tensor) -> Tensor:
        """Zero the padding and L2-normalise tokens (optional): ``(B, N, d_t)`` -> ``(B, N, d_t)``."""
        return self._normalize_rows(text_features, text_mask)

    def _normalize_rows(self, features: Tensor, mask: Tensor) -> Tensor:
        x = torch.where(mask[..., None], features.float(), 0.0)  # padding may hold anything, even NaN
        return F.normalize(x, dim=-1) if self.config.normalize_features else x

    def video_position_embeddings(self, video_mask: Tensor) -> Tensor:
        """Sine encoding of ``(t + 1) / L_b`` (scaled by 2*pi): ``(B, L)`` -> ``(B, L, d)``, any length."""
        lengths = video_mask.sum(1, keepdim=True).float()
        positions = torch.arange(1, video_mask.shape[1] + 1, device=video_mask.device, dtype=torch.float32)
        return sine_embedding(
            positions[None, :] / lengths, self.config.hidden_size, self.config.position_temperature
        )

    def _encode(
        self, video: Tensor, pos: Tensor, video_mask: Tensor, text: Tensor, text_mask: Tensor, local: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """SGCA -> encoder -> global saliency (eq. 7-8). Returns ``F_hat`` and ``S_global`` (or None)."""
        gate = torch.sigmoid(local) if self.config.use_sgca else None
        x = video
        for layer in self.sgca_layers:
            x = layer(x, pos, text, text_mask, gate)
        for layer in self.encoder_layers:
            x = layer(x, pos, video_mask)
        encoded = x
        if self.global_saliency is None:
            return encoded, None
        amplified_local = encoded * (1 + torch.sigmoid(local)[..., None].to(encoded.dtype))  # eq. 7
        global_scores = local + self.global_saliency(amplified_local)[..., 0].float()  # eq. 8
        return encoded, global_scores.masked_fill(~video_mask, PADDING_SALIENCY)

    @staticmethod
    def _amplify(encoded: Tensor, global_scores: Tensor | None, video_mask: Tensor) -> Tensor:
        """The saliency amplifier (eq. 9): ``F_g``, zero at padding (``F_hat`` itself without global saliency)."""
        if global_scores is not None:
            encoded = encoded * (1 + torch.sigmoid(global_scores)[..., None].to(encoded.dtype))
        return encoded * video_mask[..., None].to(encoded.dtype)

    # ---------------------------------------------------------------- forward
    @can_return_tuple
    def forward(
        self,
        video_features: Tensor,
        video_mask: Tensor,
        text_features: Tensor,
        text_mask: Tensor,
        labels: list[dict] | None = None,
        batch_context: SGDetrBatchContext | None = None,
    ) -> SGDetrModelOutput:
        r"""
        Args:
            video_features ``(B, L, d_v)``: raw clip features. video_mask ``(B, L)``: 1 = real clip (right-padded).
            text_features ``(B, N, d_t)``: raw token features. text_mask ``(B, N)``: 1 = real token.
            labels: optional, as for [`SGDetrForMomentRetrieval`]; they switch on the training-only negative-pair
                pass and moment encoder.
            batch_context: optional, with ``labels``: the global batch this one is part of (as for
                [`SGDetrForMomentRetrieval`]).
        """
        video_mask, text_mask = validate_inputs(
            self.config, video_features, video_mask, text_features, text_mask
        )
        _check_batch_context_use(labels, batch_context)
        targets = None
        if labels is not None:
            targets = prepare_targets(
                labels, video_features, video_mask, self.config.num_saliency_pairs, batch_context,
                self.config.text_feature_dim,
            )  # fmt: skip
        return self.encode(video_features, video_mask, text_features, text_mask, targets)

    def encode(
        self,
        video_features: Tensor,
        video_mask: Tensor,
        text_features: Tensor,
        text_mask: Tensor,
        targets: SGDetrTargets | None = None,
    ) -> SGDetrModelOutput:
        """The forward on validated inputs (bool masks from :func:`validate_inputs`): eq. 1-9, plus with
        ``targets`` the negative-pair pass and the moment encoder (when enabled)."""
        dtype = self.dtype
        type_embeddings = self.token_type_embeddings.weight
        video = (
            self.video_projection(self.prepare_video(video_features, video_mask).to(dtype))
            + type_embeddings[1]
        )
        text = (
            self.text_projection(self.prepare_text(text_features, text_mask).to(dtype)) + type_embeddings[0]
        )
        pos = self.video_position_embeddings(video_mask).to(dtype)

        sentence = self.pooling_encoder(text, text_mask)
        local = self.local_saliency(sentence, video, video_mask)

        run_negatives = targets is not None and self.config.use_negative_pairs
        batch = video.shape[0]
        context = None if targets is None else targets.context
        pool_text = pool_sentences = None
        if context is not None and (run_negatives or self.moment_encoder is not None):
            # the global batch's queries, for the samples this forward does not hold: negative partners and
            # the alignment pool (recomputed here with their gradient, so this forward's loss is exactly its
            # share; the queries are small next to the videos)
            pool_text = (
                self.text_projection(self.prepare_text(context.text_features, context.text_mask).to(dtype))
                + type_embeddings[0]
            )
            pool_sentences = self.pooling_encoder(pool_text, context.text_mask)
        if run_negatives:
            # one pass over [positive pairs ; video b with the text of sample (b+1) % B of the global batch]
            if context is None:
                neg_text, neg_text_mask, neg_sentence = (
                    text.roll(-1, 0),
                    text_mask.roll(-1, 0),
                    sentence.roll(-1, 0),
                )
                pos_text, pos_text_mask = text, text_mask
            else:
                size = context.text_mask.shape[0]
                partner = (context.start + 1 + torch.arange(batch, device=video.device)) % size
                neg_text, neg_text_mask = pool_text[partner], context.text_mask[partner]
                neg_sentence = pool_sentences[partner]
                num_tokens = max(text.shape[1], neg_text.shape[1])
                pos_text, pos_text_mask = _pad_tokens(text, text_mask, num_tokens)
                neg_text, neg_text_mask = _pad_tokens(neg_text, neg_text_mask, num_tokens)
            neg_local = self.local_saliency(neg_sentence, video, video_mask)
            encoded, global_scores = self._encode(
                video.repeat(2, 1, 1),
                pos.repeat(2, 1, 1),
                video_mask.repeat(2, 1),
                torch.cat((pos_text, neg_text), 0),
                torch.cat((pos_text_mask, neg_text_mask), 0),
                torch.cat((local, neg_local), 0),
            )
            # the negatives' losses read their global saliency alone: only the positives are amplified (eq. 9)
            encoded = encoded[:batch]
            neg_global = None if global_scores is None else global_scores[batch:]
            global_scores = None if global_scores is None else global_scores[:batch]
        else:
            encoded, global_scores = self._encode(video, pos, video_mask, text, text_mask, local)
            neg_local = neg_global = None
        amplified = self._amplify(encoded, global_scores, video_mask)

        moment_tokens = nonmoment_tokens = frames = sentence_pool = None
        if targets is not None and self.moment_encoder is not None:
            moment_tokens, nonmoment_tokens, frames = self.moment_encoder(
                video, pos, video_mask, targets.moment_mask
            )
            if context is not None:  # this forward's own sentences in their rows of the global pool
                start = context.start
                sentence_pool = torch.cat(
                    (pool_sentences[:start], sentence, pool_sentences[start + batch :]), 0
                )

        return SGDetrModelOutput(
            last_hidden_state=amplified,
            encoder_last_hidden_state=encoded,
            local_saliency=local,
            global_saliency=global_scores,
            sentence_embeds=sentence,
            video_embeds=video,
            text_embeds=text,
            position_embeddings=pos,
            video_mask=video_mask,
            neg_local_saliency=neg_local,
            neg_global_saliency=neg_global,
            moment_tokens=moment_tokens,
            nonmoment_tokens=nonmoment_tokens,
            moment_frame_outputs=frames,
            sentence_pool=sentence_pool,
        )


class SGDetrForMomentRetrieval(SGDetrPreTrainedModel):
    r"""SG-DETR with the hybrid detector: moment retrieval (spans + scores) and highlight detection (saliency).

    ``model(video_features, video_mask, text_features, text_mask, labels=None)``

    - video_features ``(B, L, d_v)`` raw clip features (the model L2-normalises and appends TEF itself),
      video_mask ``(B, L)`` 1 = real clip (right padding); any ``L`` works.
    - text_features ``(B, N, d_t)`` raw token features, text_mask ``(B, N)`` 1 = real token.
    - labels (training): a list of B dicts, as in transformers' DETR family:
        - ``spans``: ``(K_b, 2)`` float, normalised ``(center, width)`` relative to ``L_b * clip_length``
          (``K_b`` may be 0 for highlight-only data);
        - ``saliency_scores``: ``(L_b,)`` or ``(L,)`` float per clip, 0 = not relevant (QVHighlights: the sum of
          the three annotators, 0..12);
        - optional ``video_id`` (str): source video; a rolled in-batch pair from the same source is not used as
          a negative. Without it a rolled pair is a negative unless both samples have identical video features;
        - optional ``saliency_pos_idx`` / ``saliency_neg_idx`` ``(P,)`` long: margin-loss clip pairs, and
          ``sampling_seed`` (float in [0, 1000)): the key of the sample's ATSS-positive query subset. The
          collator makes both from (seed, epoch, sample); without them they are drawn from torch's global RNG.
    - batch_context (training, optional): an ``SGDetrBatchContext`` when this batch is one part (a process's
      share, a gradient-accumulation micro-batch) of a global batch: the negative pairs and the alignment pool
      are then those of the global batch and every loss term is divided by the global batch's count, so the
      parts' losses add up to the global batch's loss (``sgdetr_hf.training`` builds it; README "Training").

    With ``labels`` the forward also builds the training query groups (denoising, ATSS positives), runs the
    negative-pair pass and the moment encoder, and returns ``loss`` and ``loss_dict`` (eq. 15).
    Use ``SGDetrProcessor.post_process_moment_retrieval`` to turn the outputs into windows in seconds.
    """

    def __init__(self, config: SGDetrConfig):
        super().__init__(config)
        self.sg_detr = SGDetrModel(config)
        self.detector = SGDetrHybridDetector(config)
        # a function of (config, outputs, targets): the objective holds no state a checkpoint could miss
        self.loss_function = moment_retrieval_loss
        self.post_init()

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs) -> None:
        """``PreTrainedModel.save_pretrained``, plus what makes the folder a pipeline repository: the
        ``custom_pipelines`` entry of ``config.json`` and the pipeline's modules (copied as files from beside
        this one: the model does not import them). A model loaded as remote code from a repository without
        the pipeline's modules saves a model-only folder, with a warning."""
        pipeline_file = Path(__file__).with_name(f"{PIPELINE_MODULE}.py")
        if pipeline_file.is_file():
            self.config.custom_pipelines = {PIPELINE_TASK: dict(PIPELINE_INFO)}
        else:
            logger.warning(
                "%s is not beside %s: %s is saved without the pipeline (load it with the sgdetr_hf package "
                "installed to save a pipeline-ready folder)",
                pipeline_file.name,
                Path(__file__).name,
                save_directory,
            )
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process and pipeline_file.is_file():
            for source in [pipeline_file, *map(Path, get_relative_import_files(str(pipeline_file)))]:
                shutil.copyfile(source, Path(save_directory) / source.name)

    @can_return_tuple
    def forward(
        self,
        video_features: Tensor,
        video_mask: Tensor,
        text_features: Tensor,
        text_mask: Tensor,
        labels: list[dict] | None = None,
        batch_context: SGDetrBatchContext | None = None,
    ) -> SGDetrOutput:
        cfg = self.config
        video_mask, text_mask = validate_inputs(cfg, video_features, video_mask, text_features, text_mask)
        _check_batch_context_use(labels, batch_context)
        targets = None
        if labels is not None:
            targets = prepare_targets(
                labels,
                video_features,
                video_mask,
                cfg.num_saliency_pairs,
                batch_context,
                cfg.text_feature_dim,
            )
        enc = self.sg_detr.encode(video_features, video_mask, text_features, text_mask, targets)
        det = self.detector(enc.last_hidden_state, enc.video_mask, enc.position_embeddings, targets)
        last_logits = det.decoder.logits[:, -1]
        last_iou_logits = None if det.decoder.iou_logits is None else det.decoder.iou_logits[:, -1]
        probs = torch.softmax(last_logits, -1)[..., 0]
        if last_iou_logits is None:
            det_scores = probs
        else:  # eq. 10
            alpha = cfg.det_score_alpha
            det_scores = probs.pow(alpha) * torch.sigmoid(last_iou_logits).pow(1 - alpha)

        loss = loss_dict = None
        if targets is not None:
            loss, loss_dict = self.loss_function(cfg, enc, det, targets)
        atss = det.atss
        return SGDetrOutput(
            loss=loss,
            loss_dict=loss_dict,
            pred_spans=det.decoder.spans[:, -1],
            pred_logits=last_logits,
            pred_iou_logits=last_iou_logits,
            det_scores=det_scores,
            atss_logits=None if atss is None else atss.logits,
            atss_spans=None if atss is None else clamp_spans_cw(atss.spans),  # the loss read them unclipped
            atss_centerness=None if atss is None else atss.centerness,
            anchors=det.anchors,
            anchor_mask=det.anchor_mask,
            anchor_levels=det.anchor_levels,
            local_saliency=enc.local_saliency,
            global_saliency=enc.global_saliency,
            video_mask=enc.video_mask,
            encoder_last_hidden_state=enc.last_hidden_state,
            sentence_embeds=enc.sentence_embeds,
            encoder_outputs=enc,
            detector_outputs=det,
        )


__all__ = [
    "SGDetrForMomentRetrieval",
    "SGDetrModel",
    "SGDetrModelOutput",
    "SGDetrOutput",
    "SGDetrPreTrainedModel",
    "validate_inputs",
]

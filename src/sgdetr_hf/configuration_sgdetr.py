"""Configuration of SG-DETR (Saliency-Guided DETR, Gordeev et al.).

Every hyperparameter of the model, its training objective and its post-processing lives here, with the
defaults of ``shared/design/sg-detr.md`` (§2.17 architecture, §3.1 loss weights, §4 post-processing).
Invalid values raise ``ValueError`` naming the field and the allowed range.

This file is shipped to the Hub as remote code: it imports nothing from the package.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedConfig

_FUSION_MODES = ("wbf", "detr", "atss")
_LOCAL_SALIENCY_SPACES = ("hidden",)


class SGDetrConfig(PreTrainedConfig):
    r"""Configuration of [`SGDetrModel`] and [`SGDetrForMomentRetrieval`].

    Inputs and features
        video_feature_dim (`int`, 512): size of one clip feature (InternVideo2-1B projected: 512).
        text_feature_dim (`int`, 512): size of one token feature (InternVideo2-1B projected: 512).
        normalize_features (`bool`, True): L2-normalise every clip and token vector inside the model.
        use_tef (`bool`, True): append the temporal endpoint feature ``[i/L_b, (i+1)/L_b]`` to each clip.
        clip_length (`float`, 2.0): seconds per clip (2 for QVHighlights/TACoS/TVSum, 1 for Charades).
        max_num_clips (`int`, 75): clip cap applied by the data pipeline (75 for QVHighlights). The model
            itself accepts any number of clips: its positional encoding is normalised by the valid length.
        max_text_tokens (`int`, 32): token cap applied by the data pipeline (64 for TACoS).

    Architecture (§2)
        hidden_size 256, num_attention_heads 8, ffn_dim 1024, dropout 0.1, input_dropout 0.5,
        num_pooling_layers 2, num_sgca_layers 2, num_encoder_layers 3, num_decoder_layers 3,
        num_moment_encoder_layers 1, num_queries 25, saliency_alpha_init 10, saliency_beta_init 0,
        position_temperature 10000, layer_norm_eps 1e-5, initializer_range 0.02 (type embeddings).
        local_saliency_space: "hidden" (eq. 2 in the projected 256-d space; the only implemented choice).

    Hybrid detector (§2.11-2.16)
        pyramid_strides (1, 2, 4, 8, 16), anchor_scale 4 (anchor width in strides), atss_topk 9,
        atss_delta_stds (0.1, 0.2), group_norm_groups 32, max_atss_positive_queries 100,
        num_dn_groups 5, dn_box_noise_scale 0.4, dn_label_noise_ratio 0.5, det_score_alpha 0.5.

    Post-processing (§4)
        atss_pre_nms_topk 100, atss_nms_iou 0.6, atss_post_nms_topk 25, wbf_iou_thr 0.55,
        wbf_weights (1, 1) for (DETR, ATSS), wbf_skip_thr 0.0, num_output_windows 10,
        fusion_mode "wbf" | "detr" | "atss" (default: "wbf" with the ATSS head, else "detr"),
        window_round_seconds None (QVHighlights: 2.0, rounds window endpoints to that grid).

    Training objective (§3)
        lambda_l1 10, lambda_giou 1, lambda_ce 5, lambda_centerness 1, lambda_iou 1, lambda_detr 1,
        lambda_atss 1, lambda_hl 1, lambda_aux 1, lambda_dn 1, lambda_atss_queries 1, lambda_selector 1,
        eos_coef 0.1, matcher_cost_class 4, matcher_cost_l1 10, matcher_cost_giou 1, saliency_margin 0.2,
        rank_contrastive_tau 0.5, saliency_label_max 12, num_saliency_pairs 2,
        focal_alpha 0.25, focal_gamma 2, max_gt_windows 5.

    Ablation switches (Table 2 and §7)
        use_sgca: saliency-gated cross-attention (False: plain cross-attention).
        use_iou_scoring: IoU head, IoU in the matching cost and in S_det (sets ``use_iou_head``).
        use_global_saliency: saliency amplifier + global saliency (eq. 7-9); False: the detector reads the
            encoder output directly and highlight scores are S_local.
        use_hybrid_detector: ATSS head, ATSS-positive decoder queries and WBF (sets ``use_atss`` and
            ``use_atss_positive_queries`` unless they are given explicitly).
        use_negative_pairs, use_dn, use_alignment (moment encoder + eq. 14), use_atss,
        use_atss_positive_queries, use_iou_head: the finer switches.
    """

    model_type = "sg-detr"

    def __init__(
        self,
        # inputs
        video_feature_dim: int = 512,
        text_feature_dim: int = 512,
        normalize_features: bool = True,
        use_tef: bool = True,
        clip_length: float = 2.0,
        max_num_clips: int = 75,
        max_text_tokens: int = 32,
        # architecture
        hidden_size: int = 256,
        num_attention_heads: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        input_dropout: float = 0.5,
        num_pooling_layers: int = 2,
        num_sgca_layers: int = 2,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        num_moment_encoder_layers: int = 1,
        num_queries: int = 25,
        saliency_alpha_init: float = 10.0,
        saliency_beta_init: float = 0.0,
        position_temperature: float = 10000.0,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        local_saliency_space: str = "hidden",
        # hybrid detector
        pyramid_strides: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16),
        anchor_scale: float = 4.0,
        atss_topk: int = 9,
        atss_delta_stds: list[float] | tuple[float, float] = (0.1, 0.2),
        group_norm_groups: int = 32,
        max_atss_positive_queries: int = 100,
        num_dn_groups: int = 5,
        dn_box_noise_scale: float = 0.4,
        dn_label_noise_ratio: float = 0.5,
        det_score_alpha: float = 0.5,
        # post-processing
        atss_pre_nms_topk: int = 100,
        atss_nms_iou: float = 0.6,
        atss_post_nms_topk: int = 25,
        wbf_iou_thr: float = 0.55,
        wbf_weights: list[float] | tuple[float, float] = (1.0, 1.0),
        wbf_skip_thr: float = 0.0,
        num_output_windows: int = 10,
        fusion_mode: str | None = None,
        window_round_seconds: float | None = None,
        # training objective
        lambda_l1: float = 10.0,
        lambda_giou: float = 1.0,
        lambda_ce: float = 5.0,
        lambda_centerness: float = 1.0,
        lambda_iou: float = 1.0,
        lambda_detr: float = 1.0,
        lambda_atss: float = 1.0,
        lambda_hl: float = 1.0,
        lambda_aux: float = 1.0,
        lambda_dn: float = 1.0,
        lambda_atss_queries: float = 1.0,
        lambda_selector: float = 1.0,
        eos_coef: float = 0.1,
        matcher_cost_class: float = 4.0,
        matcher_cost_l1: float = 10.0,
        matcher_cost_giou: float = 1.0,
        saliency_margin: float = 0.2,
        rank_contrastive_tau: float = 0.5,
        saliency_label_max: int = 12,
        num_saliency_pairs: int = 2,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        max_gt_windows: int = 5,
        # ablation switches
        use_sgca: bool = True,
        use_iou_scoring: bool = True,
        use_global_saliency: bool = True,
        use_hybrid_detector: bool = True,
        use_negative_pairs: bool = True,
        use_dn: bool = True,
        use_alignment: bool = True,
        use_atss: bool | None = None,
        use_atss_positive_queries: bool | None = None,
        use_iou_head: bool | None = None,
        **kwargs: Any,
    ):
        self.video_feature_dim = video_feature_dim
        self.text_feature_dim = text_feature_dim
        self.normalize_features = normalize_features
        self.use_tef = use_tef
        self.clip_length = clip_length
        self.max_num_clips = max_num_clips
        self.max_text_tokens = max_text_tokens

        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.num_pooling_layers = num_pooling_layers
        self.num_sgca_layers = num_sgca_layers
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_moment_encoder_layers = num_moment_encoder_layers
        self.num_queries = num_queries
        self.saliency_alpha_init = saliency_alpha_init
        self.saliency_beta_init = saliency_beta_init
        self.position_temperature = position_temperature
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.local_saliency_space = local_saliency_space

        self.pyramid_strides = list(pyramid_strides)
        self.anchor_scale = anchor_scale
        self.atss_topk = atss_topk
        self.atss_delta_stds = list(atss_delta_stds)
        self.group_norm_groups = group_norm_groups
        self.max_atss_positive_queries = max_atss_positive_queries
        self.num_dn_groups = num_dn_groups
        self.dn_box_noise_scale = dn_box_noise_scale
        self.dn_label_noise_ratio = dn_label_noise_ratio
        self.det_score_alpha = det_score_alpha

        self.atss_pre_nms_topk = atss_pre_nms_topk
        self.atss_nms_iou = atss_nms_iou
        self.atss_post_nms_topk = atss_post_nms_topk
        self.wbf_iou_thr = wbf_iou_thr
        self.wbf_weights = list(wbf_weights)
        self.wbf_skip_thr = wbf_skip_thr
        self.num_output_windows = num_output_windows
        self.window_round_seconds = window_round_seconds

        self.lambda_l1 = lambda_l1
        self.lambda_giou = lambda_giou
        self.lambda_ce = lambda_ce
        self.lambda_centerness = lambda_centerness
        self.lambda_iou = lambda_iou
        self.lambda_detr = lambda_detr
        self.lambda_atss = lambda_atss
        self.lambda_hl = lambda_hl
        self.lambda_aux = lambda_aux
        self.lambda_dn = lambda_dn
        self.lambda_atss_queries = lambda_atss_queries
        self.lambda_selector = lambda_selector
        self.eos_coef = eos_coef
        self.matcher_cost_class = matcher_cost_class
        self.matcher_cost_l1 = matcher_cost_l1
        self.matcher_cost_giou = matcher_cost_giou
        self.saliency_margin = saliency_margin
        self.rank_contrastive_tau = rank_contrastive_tau
        self.saliency_label_max = saliency_label_max
        self.num_saliency_pairs = num_saliency_pairs
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.max_gt_windows = max_gt_windows

        self.use_sgca = use_sgca
        self.use_iou_scoring = use_iou_scoring
        self.use_global_saliency = use_global_saliency
        self.use_hybrid_detector = use_hybrid_detector
        self.use_negative_pairs = use_negative_pairs
        self.use_dn = use_dn
        self.use_alignment = use_alignment
        # the grouped switches of the issue set the finer ones of §7 unless those are given explicitly
        self.use_atss = use_hybrid_detector if use_atss is None else use_atss
        self.use_atss_positive_queries = (
            self.use_atss if use_atss_positive_queries is None else use_atss_positive_queries
        )
        self.use_iou_head = use_iou_scoring if use_iou_head is None else use_iou_head
        if fusion_mode is None:
            fusion_mode = "wbf" if self.use_atss is True else "detr"
        self.fusion_mode = fusion_mode

        # the loss owned a seeded generator until 0.1; its draws now come with the labels (the collator's)
        kwargs.pop("saliency_pair_seed", None)
        super().__init__(**kwargs)
        self.validate_sgdetr()

    # ------------------------------------------------------------------ validation
    def validate_sgdetr(self) -> None:
        """Raise ``ValueError`` naming the first invalid field and its allowed range."""

        def _int(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"SGDetrConfig.{name} must be an int, got {value!r} ({type(value).__name__})"
                )
            if value < low or (high is not None and value > high):
                bound = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"SGDetrConfig.{name} must be in {bound}, got {value}")

        def _float(name: str, low: float, high: float = math.inf, low_open: bool = False, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SGDetrConfig.{name} must be a finite number, got {value!r}")
            too_low = value <= low if low_open else value < low
            too_high = value >= high if high_open else value > high
            if too_low or too_high:
                lo = "(" if low_open else "["
                hi = ")" if high_open or high == math.inf else "]"
                raise ValueError(f"SGDetrConfig.{name} must be in {lo}{low}, {high}{hi}, got {value}")

        def _bool(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"SGDetrConfig.{name} must be True or False, got {value!r}")

        for name in (
            "video_feature_dim",
            "text_feature_dim",
            "hidden_size",
            "num_attention_heads",
            "ffn_dim",
        ):
            _int(name, 1)
        for name in (
            "num_pooling_layers",
            "num_sgca_layers",
            "num_encoder_layers",
            "num_moment_encoder_layers",
        ):
            _int(name, 1)
        _int("num_decoder_layers", 1)
        _int("num_queries", 1)
        _int("max_num_clips", 1)
        _int("max_text_tokens", 1)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"SGDetrConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_size % 4 != 0:
            raise ValueError(
                f"SGDetrConfig.hidden_size must be a multiple of 4 (sine embeddings of (center, width)), "
                f"got {self.hidden_size}"
            )
        _float("clip_length", 0.0, low_open=True)
        _float("dropout", 0.0, 1.0, high_open=True)
        _float("input_dropout", 0.0, 1.0, high_open=True)
        _float("saliency_alpha_init", -math.inf)
        _float("saliency_beta_init", -math.inf)
        _float("position_temperature", 1.0, low_open=True)
        _float("layer_norm_eps", 0.0, 1.0, low_open=True)
        _float("initializer_range", 0.0, low_open=True)
        if self.local_saliency_space not in _LOCAL_SALIENCY_SPACES:
            raise ValueError(
                f"SGDetrConfig.local_saliency_space must be one of {_LOCAL_SALIENCY_SPACES}, got "
                f"{self.local_saliency_space!r} (the raw-feature variant of §2.5 is not implemented)"
            )

        strides = self.pyramid_strides
        if (
            not strides
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in strides)
            or strides[0] != 1
            or any(b != 2 * a for a, b in zip(strides, strides[1:]))
        ):
            raise ValueError(
                "SGDetrConfig.pyramid_strides must be powers of two starting at 1, each twice the previous "
                f"(e.g. [1, 2, 4, 8, 16]), got {strides!r}"
            )
        _float("anchor_scale", 0.0, low_open=True)
        _int("atss_topk", 1)
        if len(self.atss_delta_stds) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in self.atss_delta_stds
        ):
            raise ValueError(
                f"SGDetrConfig.atss_delta_stds must be two numbers > 0, got {self.atss_delta_stds!r}"
            )
        _int("group_norm_groups", 1)
        if self.hidden_size % self.group_norm_groups != 0:
            raise ValueError(
                f"SGDetrConfig.group_norm_groups ({self.group_norm_groups}) must divide hidden_size "
                f"({self.hidden_size})"
            )
        _int("max_atss_positive_queries", 1)
        _int("num_dn_groups", 1)
        _float("dn_box_noise_scale", 0.0, 1.0, low_open=True)
        _float("dn_label_noise_ratio", 0.0, 1.0)
        _float("det_score_alpha", 0.0, 1.0)

        _int("atss_pre_nms_topk", 1)
        _float("atss_nms_iou", 0.0, 1.0)
        _int("atss_post_nms_topk", 1)
        _float("wbf_iou_thr", 0.0, 1.0)
        if len(self.wbf_weights) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in self.wbf_weights
        ):
            raise ValueError(
                f"SGDetrConfig.wbf_weights must be two numbers > 0 (DETR, ATSS), got {self.wbf_weights!r}"
            )
        _float("wbf_skip_thr", 0.0, 1.0)
        _int("num_output_windows", 1)
        if self.window_round_seconds is not None:
            _float("window_round_seconds", 0.0, low_open=True)
        if self.fusion_mode not in _FUSION_MODES:
            raise ValueError(
                f"SGDetrConfig.fusion_mode must be one of {_FUSION_MODES}, got {self.fusion_mode!r}"
            )

        for name in (
            "lambda_l1", "lambda_giou", "lambda_ce", "lambda_centerness", "lambda_iou", "lambda_detr",
            "lambda_atss", "lambda_hl", "lambda_aux", "lambda_dn", "lambda_atss_queries", "lambda_selector",
            "matcher_cost_class", "matcher_cost_l1", "matcher_cost_giou", "saliency_margin", "focal_gamma",
        ):  # fmt: skip
            _float(name, 0.0)
        _float("eos_coef", 0.0, 1.0)
        _float("rank_contrastive_tau", 0.0, low_open=True)
        _float("focal_alpha", 0.0, 1.0)
        _int("saliency_label_max", 1)
        _int("num_saliency_pairs", 1)
        _int("max_gt_windows", 1)

        for name in (
            "normalize_features", "use_tef", "use_sgca", "use_iou_scoring", "use_global_saliency",
            "use_hybrid_detector", "use_negative_pairs", "use_dn", "use_alignment", "use_atss",
            "use_atss_positive_queries", "use_iou_head",
        ):  # fmt: skip
            _bool(name)
        if self.use_atss_positive_queries and not self.use_atss:
            raise ValueError(
                "SGDetrConfig.use_atss_positive_queries=True needs use_atss=True (the queries are the ATSS "
                "positive anchors); set use_atss_positive_queries=False or use_atss=True"
            )
        if self.fusion_mode in ("wbf", "atss") and not self.use_atss:
            raise ValueError(
                f"SGDetrConfig.fusion_mode={self.fusion_mode!r} needs the ATSS head (use_atss=True); "
                "use fusion_mode='detr'"
            )

    # ------------------------------------------------------------------ derived values
    @property
    def num_pyramid_levels(self) -> int:
        return len(self.pyramid_strides)

    @property
    def video_input_dim(self) -> int:
        """Width of the video projection's input: the clip feature plus 2 TEF columns when enabled."""
        return self.video_feature_dim + (2 if self.use_tef else 0)


__all__ = ["SGDetrConfig"]

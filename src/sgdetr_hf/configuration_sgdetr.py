"""Configuration of SG-DETR (Saliency-Guided DETR, Gordeev et al.).

Every hyperparameter of the model, its training objective and its post-processing, with the paper's
values (§4.4) as defaults. Typed fields (transformers 5's dataclass configs); the value ranges and the
cross-field rules are checked in one place, :meth:`SGDetrConfig.validate_sgdetr`, which raises ``ValueError``
naming the field and the allowed range.

This file is shipped to the Hub as remote code: it imports only its sibling ``loading_sgdetr``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

from transformers import PreTrainedConfig
from transformers.utils import logging

from .loading_sgdetr import SGDETR_FOLDER, FolderCheckedConfigMixin

logger = logging.get_logger(__name__)

_LOCAL_SALIENCY_SPACES = ("hidden",)
#: Keys of configs written by release 0.1 that no longer exist: each finer switch became its Table 2 switch.
_RENAMED_SWITCHES = {
    "use_atss": "use_hybrid_detector",
    "use_atss_positive_queries": "use_hybrid_detector",
    "use_iou_head": "use_iou_scoring",
}
#: Keys of release-0.1 configs that are dropped: the loss no longer owns a seeded generator, the
#: post-processing settings are arguments of ``post_process_moment_retrieval`` and the query-token cap is the
#: processor's ``max_query_length`` (the recipes' ``max_query_tokens``).
_REMOVED_KEYS = (
    "saliency_pair_seed", "atss_pre_nms_topk", "atss_nms_iou", "atss_post_nms_topk", "wbf_iou_thr",
    "wbf_weights", "wbf_skip_thr", "num_output_windows", "fusion_mode", "window_round_seconds",
    "max_text_tokens",
)  # fmt: skip
#: Keys transformers itself writes into or passes with a config that are not fields of ours.
_HUB_KEYS = frozenset(
    {"auto_map", "custom_pipelines", "model_type", "name_or_path", "transformers_version", "torch_dtype"}
)


class SGDetrConfig(FolderCheckedConfigMixin, PreTrainedConfig):
    r"""Configuration of [`SGDetrModel`] and [`SGDetrForMomentRetrieval`].

    Inputs and features
        video_feature_dim (`int`, defaults to 512): width of one clip feature (InternVideo2-1B projected: 512).
        text_feature_dim (`int`, defaults to 512): width of one token feature (InternVideo2-1B projected: 512).
        normalize_features (`bool`, defaults to `True`): L2-normalise every clip and token vector inside the
            model, as the InternVideo2 features are used in the paper.
        use_tef (`bool`, defaults to `True`): append the temporal endpoint feature ``[i/L_b, (i+1)/L_b]`` to
            each clip (Moment-DETR), so the projection sees where a clip lies in its video.
        clip_length (`float`, defaults to 2.0): seconds per clip; converts normalised spans to seconds
            (2 for QVHighlights / TACoS / TVSum, 1 for Charades-STA).
        max_num_clips (`int`, defaults to 75): the model's training window in clips (QVHighlights: 75): the data
            pipeline caps training videos at it, and longer videos are retrieved in overlapping windows of it
            (``long_video_sgdetr``). The model itself accepts any number of clips: positions are normalised by
            the valid length.

    Encoder (§3.2-3.4)
        hidden_size (`int`, defaults to 256): width ``d`` of every attention block.
        num_attention_heads (`int`, defaults to 8): heads of every attention (head width ``d / heads``).
        ffn_dim (`int`, defaults to 1024): width of the feed-forward blocks.
        dropout (`float`, defaults to 0.1): dropout of attention weights and residual branches.
        input_dropout (`float`, defaults to 0.5): dropout inside the input projections (CG-DETR).
        num_pooling_layers (`int`, defaults to 2): attention-pooling layers of the PoolingEncoder (eq. 1).
        num_sgca_layers (`int`, defaults to 2): saliency-guided cross-attention layers (eq. 3-5).
        num_encoder_layers (`int`, defaults to 3): self-attention layers after SGCA (eq. 6).
        num_moment_encoder_layers (`int`, defaults to 1): layers of the training-only moment encoder (§3.7).
        saliency_alpha_init (`float`, defaults to 10.0) and saliency_beta_init (`float`, defaults to 0.0):
            initial scale and offset of eq. 2's ``S_local = alpha * cos + beta`` (both learned).
        local_saliency_space (`str`, defaults to `"hidden"`): eq. 2 in the projected ``d``-space (the only
            implemented choice; the raw-feature variant raises).
        position_temperature (`float`, defaults to 10000): temperature of the sine position encodings.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the token-type embeddings' init.

    Hybrid detector (§3.5-3.6)
        num_decoder_layers (`int`, defaults to 3): DAB/conditional decoder layers (each refines the spans).
        num_queries (`int`, defaults to 25): primary decoder queries, selected from the pyramid (DINO).
        pyramid_strides (`list[int]`, defaults to `[1, 2, 4, 8, 16]`): clip strides of the temporal pyramid,
            each twice the previous.
        anchor_scale (`float`, defaults to 4.0): anchor width in strides (ATSS's octave base scale).
        atss_topk (`int`, defaults to 9): ATSS candidates per level and ground truth.
        atss_delta_stds (`list[float]`, defaults to `[0.1, 0.2]`): std of the (center, width) delta coding.
        group_norm_groups (`int`, defaults to 32): groups of the pyramid's and ATSS head's GroupNorms.
        max_atss_positive_queries (`int`, defaults to 100): cap on Co-DETR ATSS-positive queries per video.
        num_dn_groups (`int`, defaults to 5): DINO contrastive denoising groups.
        dn_box_noise_scale (`float`, defaults to 0.4): denoising endpoint noise, in window widths.
        dn_label_noise_ratio (`float`, defaults to 0.5): share of denoising queries with a flipped label
            embedding (half of them flip, as in DINO).
        det_score_alpha (`float`, defaults to 0.5): ``alpha`` of eq. 10, ``S_det = p^alpha * IoU^(1-alpha)``.

    Training objective (§3.7, eq. 11-15)
        lambda_l1 (`float`, defaults to 10), lambda_giou (1), lambda_ce (5), lambda_centerness (1),
            lambda_iou (1): weights of the span L1, GIoU, classification (and ATSS focal), centerness and
            IoU-head terms inside each query set.
        lambda_detr (1), lambda_atss (1), lambda_hl (1), lambda_aux (1): eq. 15's weights of the DETR,
            ATSS, highlight and alignment groups. lambda_dn (1), lambda_atss_queries (1),
            lambda_selector (1): weights of the denoising, ATSS-positive and selector sets inside ``L_detr``.
        eos_coef (`float`, defaults to 0.1): CE weight of the no-object class.
        matcher_cost_class (4), matcher_cost_l1 (10), matcher_cost_giou (1): Hungarian matching costs.
        saliency_margin (`float`, defaults to 0.2): margin ``delta`` of eq. 11's ranking term.
        rank_contrastive_tau (`float`, defaults to 0.5): temperature of eq. 11's rank-contrastive term.
        saliency_label_max (`int`, defaults to 12): top of the saliency scale (QVHighlights: 3 x 4).
        num_saliency_pairs (`int`, defaults to 2): margin-ranking clip pairs per sample (1 hard + easy ones).
        focal_alpha (`float`, defaults to 0.25) and focal_gamma (`float`, defaults to 2.0): ATSS focal loss.
        max_gt_windows (`int`, defaults to 5): most ground-truth windows per sample (the collator's cap).

    Table 2 switches (the paper's ablation rows (a)-(e)) and §7's extra parts
        use_sgca (`bool`, defaults to `True`): saliency-gated cross-attention (False: plain cross-attention).
        use_iou_scoring (`bool`, defaults to `True`): the IoU head, the predicted IoU in the matching cost and
            in ``S_det``.
        use_global_saliency (`bool`, defaults to `True`): saliency amplifier + global saliency (eq. 7-9);
            False: the detector reads the encoder output and highlight scores are ``S_local``.
        use_hybrid_detector (`bool`, defaults to `True`): the hybrid ATSS + DINO-DETR detector of row (e):
            the temporal pyramid, the ATSS head, the decoder's queries selected from the pyramid's anchors
            (DINO), the ATSS-positive decoder queries and WBF of the two heads' windows. False is Table 2's
            "DETR-based architecture" of rows (a)-(d), which the paper takes from Moment-DETR / UniVTG
            [16, 19]: ``num_queries`` learned queries (content + reference span, as in QD-DETR / CG-DETR)
            decoded over the encoder output by the same decoder (IoU head per ``use_iou_scoring``, DINO
            denoising per ``use_dn``), no pyramid and no anchors; windows are the DETR head's alone. The
            pyramid and ATSS fields (``pyramid_strides``, ``anchor_scale``, ``atss_topk``,
            ``atss_delta_stds``, ``max_atss_positive_queries``, ``lambda_atss``, ``lambda_atss_queries``,
            ``lambda_selector``) are then unused.
        use_negative_pairs (`bool`, defaults to `True`): the in-batch negative-pair pass (eq. 11, 4th term).
        use_dn (`bool`, defaults to `True`): DINO denoising queries.
        use_alignment (`bool`, defaults to `True`): the moment encoder and eq. 14.

    Post-processing settings (fusion mode, NMS, WBF, rounding, windows per query; §4.4) are arguments of
    ``post_process_moment_retrieval``, not model fields.

    Configs of release 0.1 still load: ``use_atss`` / ``use_atss_positive_queries`` / ``use_iou_head`` map to
    their Table 2 switch (a value that contradicts it is an error); ``saliency_pair_seed`` and the
    post-processing keys are dropped; one warning.
    """

    model_type = "sg-detr"
    expected_folder = SGDETR_FOLDER

    # inputs
    video_feature_dim: int = 512
    text_feature_dim: int = 512
    normalize_features: bool = True
    use_tef: bool = True
    clip_length: float | int = 2.0
    max_num_clips: int = 75
    # encoder
    hidden_size: int = 256
    num_attention_heads: int = 8
    ffn_dim: int = 1024
    dropout: float | int = 0.1
    input_dropout: float | int = 0.5
    num_pooling_layers: int = 2
    num_sgca_layers: int = 2
    num_encoder_layers: int = 3
    num_moment_encoder_layers: int = 1
    saliency_alpha_init: float | int = 10.0
    saliency_beta_init: float | int = 0.0
    local_saliency_space: str = "hidden"
    position_temperature: float | int = 10000.0
    layer_norm_eps: float | int = 1e-5
    initializer_range: float | int = 0.02
    # hybrid detector
    num_decoder_layers: int = 3
    num_queries: int = 25
    pyramid_strides: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16)
    anchor_scale: float | int = 4.0
    atss_topk: int = 9
    atss_delta_stds: list[float | int] | tuple[float | int, ...] = (0.1, 0.2)
    group_norm_groups: int = 32
    max_atss_positive_queries: int = 100
    num_dn_groups: int = 5
    dn_box_noise_scale: float | int = 0.4
    dn_label_noise_ratio: float | int = 0.5
    det_score_alpha: float | int = 0.5
    # training objective
    lambda_l1: float | int = 10.0
    lambda_giou: float | int = 1.0
    lambda_ce: float | int = 5.0
    lambda_centerness: float | int = 1.0
    lambda_iou: float | int = 1.0
    lambda_detr: float | int = 1.0
    lambda_atss: float | int = 1.0
    lambda_hl: float | int = 1.0
    lambda_aux: float | int = 1.0
    lambda_dn: float | int = 1.0
    lambda_atss_queries: float | int = 1.0
    lambda_selector: float | int = 1.0
    eos_coef: float | int = 0.1
    matcher_cost_class: float | int = 4.0
    matcher_cost_l1: float | int = 10.0
    matcher_cost_giou: float | int = 1.0
    saliency_margin: float | int = 0.2
    rank_contrastive_tau: float | int = 0.5
    saliency_label_max: int = 12
    num_saliency_pairs: int = 2
    focal_alpha: float | int = 0.25
    focal_gamma: float | int = 2.0
    max_gt_windows: int = 5
    # Table 2 switches
    use_sgca: bool = True
    use_iou_scoring: bool = True
    use_global_saliency: bool = True
    use_hybrid_detector: bool = True
    use_negative_pairs: bool = True
    use_dn: bool = True
    use_alignment: bool = True

    def __post_init__(self, **kwargs):
        self._map_release_0_1_keys(kwargs)
        self._check_unknown_keys(kwargs)
        self.pyramid_strides = list(self.pyramid_strides)
        self.atss_delta_stds = list(self.atss_delta_stds)
        super().__post_init__(**kwargs)
        self.validate_sgdetr()

    def _check_unknown_keys(self, kwargs: dict) -> None:
        """A config of another model is an error; a misspelled or unknown key is a warning naming the closest
        field (transformers keeps unknown keys as plain attributes, so a typo would otherwise do nothing)."""
        model_type = kwargs.get("model_type", self.model_type)
        if model_type != self.model_type:
            raise ValueError(
                f"this config has model_type={model_type!r}, but SGDetrConfig expects {self.model_type!r}: the "
                "folder holds another model (e.g. an InternVideo2 encoder); pass the SG-DETR model folder"
            )
        fields = [field.name for field in dataclasses.fields(self)]
        for key in sorted(kwargs):
            if key in _HUB_KEYS or key.startswith("_"):
                continue
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            logger.warning_once(f"SGDetrConfig: unknown key {key!r} is kept but used by nothing{hint}")

    def _map_release_0_1_keys(self, kwargs: dict) -> None:
        """Turn the keys of release-0.1 configs into today's fields (removing them from ``kwargs``)."""
        found = [key for key in (*_RENAMED_SWITCHES, *_REMOVED_KEYS) if key in kwargs]
        for key in found:
            value = kwargs.pop(key)
            switch = _RENAMED_SWITCHES.get(key)
            if switch is not None and value is not None and value != getattr(self, switch):
                raise ValueError(
                    f"SGDetrConfig.{key}={value!r} contradicts {switch}={getattr(self, switch)!r}: the finer "
                    f"switch no longer exists; set {switch}={value!r} to get that model"
                )
        if found:
            logger.warning_once(
                f"SGDetrConfig: {found} are release-0.1 keys (finer switches are now the Table 2 switches, "
                "post-processing settings arguments of post_process_moment_retrieval); save the config again "
                "to drop them"
            )

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
                f"{self.local_saliency_space!r} (eq. 2 on the raw features is not implemented)"
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
            "use_hybrid_detector", "use_negative_pairs", "use_dn", "use_alignment",
        ):  # fmt: skip
            _bool(name)

    # ------------------------------------------------------------------ derived values
    @property
    def num_pyramid_levels(self) -> int:
        return len(self.pyramid_strides)

    @property
    def video_input_dim(self) -> int:
        """Width of the video projection's input: the clip feature plus 2 TEF columns when enabled."""
        return self.video_feature_dim + (2 if self.use_tef else 0)


__all__ = ["SGDetrConfig"]

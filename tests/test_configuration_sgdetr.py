"""SGDetrConfig: defaults of the design document, validation, switches, save / load."""

import json

import pytest
from transformers import AutoConfig

import sgdetr_hf  # noqa: F401  (registers the Auto classes)
from sgdetr_hf import SGDetrConfig
from sgdetr_hf.loading_sgdetr import CheckpointError


def test_defaults_follow_the_design():
    c = SGDetrConfig()
    assert c.model_type == "sg-detr"
    assert (c.video_feature_dim, c.text_feature_dim, c.hidden_size, c.num_attention_heads, c.ffn_dim) == (
        512, 512, 256, 8, 1024,
    )  # fmt: skip
    assert (c.num_pooling_layers, c.num_sgca_layers, c.num_encoder_layers, c.num_decoder_layers) == (
        2,
        2,
        3,
        3,
    )
    assert (c.num_queries, c.dropout, c.input_dropout, c.clip_length) == (25, 0.1, 0.5, 2.0)
    assert c.pyramid_strides == [1, 2, 4, 8, 16] and c.anchor_scale == 4 and c.atss_topk == 9
    assert (c.num_dn_groups, c.dn_box_noise_scale, c.max_atss_positive_queries, c.det_score_alpha) == (
        5,
        0.4,
        100,
        0.5,
    )
    assert (c.lambda_l1, c.lambda_giou, c.lambda_ce, c.lambda_centerness, c.lambda_iou) == (10, 1, 5, 1, 1)
    assert (c.saliency_margin, c.rank_contrastive_tau, c.eos_coef) == (0.2, 0.5, 0.1)
    assert (c.matcher_cost_class, c.matcher_cost_l1, c.matcher_cost_giou) == (4, 10, 1)
    assert c.use_sgca and c.use_iou_scoring and c.use_global_saliency and c.use_hybrid_detector
    assert c.video_input_dim == 514 and c.num_pyramid_levels == 5


def test_release_0_1_configs_still_load(tmp_path, caplog):
    """The finer switches of release 0.1 map to their Table 2 switch; the loss's old seed is dropped."""
    old = SGDetrConfig(use_hybrid_detector=False, use_iou_scoring=False).to_dict()
    old.update(use_atss=False, use_atss_positive_queries=False, use_iou_head=False, saliency_pair_seed=3)
    old.update(fusion_mode="detr", window_round_seconds=2.0, wbf_weights=[1.0, 1.0], num_output_windows=10)
    old.update(max_text_tokens=40)  # the query cap is the processor's
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert not loaded.use_hybrid_detector and not loaded.use_iou_scoring
    dropped = ("use_atss", "use_iou_head", "saliency_pair_seed", "fusion_mode", "window_round_seconds")
    dropped += ("max_text_tokens",)
    assert not any(hasattr(loaded, key) for key in dropped)
    assert "use_atss" not in loaded.to_dict()
    with pytest.raises(ValueError, match="use_atss=False contradicts use_hybrid_detector=True"):
        SGDetrConfig(use_atss=False)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hidden_size": 250}, "hidden_size"),
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_dropout": -0.1}, "input_dropout"),
        ({"num_queries": 0}, "num_queries"),
        ({"clip_length": 0}, "clip_length"),
        ({"video_feature_dim": 2.5}, "video_feature_dim"),
        ({"pyramid_strides": [1, 3, 9]}, "pyramid_strides"),
        ({"group_norm_groups": 7}, "group_norm_groups"),
        ({"det_score_alpha": 1.5}, "det_score_alpha"),
        ({"lambda_l1": -1.0}, "lambda_l1"),
        ({"use_sgca": "yes"}, "use_sgca"),
        ({"local_saliency_space": "input"}, "local_saliency_space"),
        ({"eos_coef": float("nan")}, "eos_coef"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SGDetrConfig(**kwargs)


def test_save_load_and_auto_config(tmp_path):
    c = SGDetrConfig(hidden_size=64, num_attention_heads=4, use_hybrid_detector=False, clip_length=1.0)
    c.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SGDetrConfig)
    drop = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
        k: v for k, v in c.to_dict().items() if k not in drop
    }
    assert loaded.use_hybrid_detector is False and loaded.clip_length == 1.0
    assert isinstance(AutoConfig.for_model("sg-detr"), SGDetrConfig)


def test_unknown_keys_warn_with_the_closest_field_and_another_model_type_is_refused(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        config = SGDetrConfig(num_querys=10)
    assert "unknown key 'num_querys'" in caplog.text and "did you mean 'num_queries'?" in caplog.text
    assert config.num_queries == 25  # the typo changed nothing, which is why it warns
    other = SGDetrConfig().to_dict()
    other["model_type"] = "internvideo2"
    (tmp_path / "config.json").write_text(json.dumps(other))
    with pytest.raises(
        CheckpointError, match="model_type='internvideo2', but SGDetrConfig expects 'sg-detr'"
    ):
        SGDetrConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='internvideo2', but SGDetrConfig expects 'sg-detr'"):
        SGDetrConfig.from_dict(other)

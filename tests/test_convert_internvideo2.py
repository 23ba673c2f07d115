"""Checkpoint conversion: a tiny state dict with the release's key names (internvideo2.md section 9)."""

import argparse
import logging

import pytest
import torch
from safetensors import safe_open

from internvideo2_testing import VOCAB, tiny_config, tiny_model
from sgdetr_hf import InternVideo2Model, SGDetrProcessor
from sgdetr_hf.commands import main
from sgdetr_hf.commands.convert_internvideo2 import convert_internvideo2_checkpoint, convert_state_dict


def official_state_dict(model: InternVideo2Model) -> dict[str, torch.Tensor]:
    """``model``'s weights under the release's names, written out from the spec's mapping table, plus the
    training-only tensors the converter must drop."""
    vision, text = model.vision_model, model.text_model
    embeddings, pooler = vision.embeddings, vision.pooler
    official = {
        "vision_encoder.patch_embed.proj.weight": embeddings.patch_embeddings.projection.weight,
        "vision_encoder.patch_embed.proj.bias": embeddings.patch_embeddings.projection.bias,
        "vision_encoder.cls_token": embeddings.cls_token,
        "vision_encoder.pos_embed": embeddings.position_embeddings,
        "vision_encoder.img_pos_embed": embeddings.image_position_embeddings,
        "vision_proj.weight": model.visual_projection.weight,
        "vision_proj.bias": model.visual_projection.bias,
        "text_proj.weight": model.text_projection.weight,
        "text_proj.bias": model.text_projection.bias,
        "temp": model.temperature,
        # training-only: distillation heads, their tables, the MLM and matching heads, a buffer
        "vision_encoder.clip_decoder.0.head.weight": torch.zeros(8, 64),
        "vision_encoder.clip_decoder.0.norm.weight": torch.zeros(8),
        "vision_encoder.final_clip_decoder.head.weight": torch.zeros(8, 32),
        "vision_encoder.clip_pos_embed": torch.zeros(1, 65, 64),
        "vision_encoder.clip_img_pos_embed": torch.zeros(1, 17, 64),
        "text_encoder.bert.embeddings.position_ids": torch.arange(64)[None],
        "text_encoder.cls.predictions.bias": torch.zeros(92),
        "text_encoder.cls.predictions.transform.dense.weight": torch.zeros(32, 32),
        "itm_head.weight": torch.zeros(2, 32),
        "itm_head.bias": torch.zeros(2),
    }
    for name in ("q", "k", "v"):
        official[f"vision_encoder.clip_projector.norm1_{name}.weight"] = getattr(
            pooler, f"norm_{name}"
        ).weight
        official[f"vision_encoder.clip_projector.norm1_{name}.bias"] = getattr(pooler, f"norm_{name}").bias
        official[f"vision_encoder.clip_projector.cross_attn.{name}.weight"] = getattr(
            pooler, f"{name}_proj"
        ).weight
        official[f"vision_encoder.clip_projector.cross_attn.{name}_bias"] = getattr(
            pooler, f"{name}_proj"
        ).bias
    official["vision_encoder.clip_projector.cross_attn.proj.weight"] = pooler.out_proj.weight
    official["vision_encoder.clip_projector.cross_attn.proj.bias"] = pooler.out_proj.bias
    for i, layer in enumerate(vision.encoder.layers):
        block = f"vision_encoder.blocks.{i}."
        official |= {
            block + "norm1.weight": layer.norm1.weight,
            block + "attn.qkv.weight": layer.attention.qkv.weight,
            block + "attn.q_norm.weight": layer.attention.q_norm.weight,
            block + "attn.k_norm.weight": layer.attention.k_norm.weight,
            block + "attn.proj.weight": layer.attention.proj.weight,
            block + "attn.proj.bias": layer.attention.proj.bias,
            block + "ls1.gamma": layer.layer_scale1.lambda1,
            block + "norm2.weight": layer.norm2.weight,
            block + "mlp.fc1.weight": layer.mlp.fc1.weight,
            block + "mlp.fc1.bias": layer.mlp.fc1.bias,
            block + "mlp.fc2.weight": layer.mlp.fc2.weight,
            block + "mlp.fc2.bias": layer.mlp.fc2.bias,
            block + "ls2.gamma": layer.layer_scale2.lambda1,
        }
    prefix = "text_encoder.bert."
    for key, value in text.state_dict().items():  # the text tower keeps the stock BERT names
        official[prefix + key] = value
    # A fusion layer after the text-only layers (cross-attention to the video): dropped.
    fusion = f"{prefix}encoder.layer.{len(text.encoder.layer)}."
    official[fusion + "attention.self.query.weight"] = torch.zeros(32, 32)
    official[fusion + "crossattention.self.key.weight"] = torch.zeros(32, 64)
    return {key: value.detach().clone() for key, value in official.items()}


@pytest.fixture(scope="module")
def model() -> InternVideo2Model:
    return tiny_model()


def save_checkpoint(path, state_dict, **extra):
    """Like the release: a DeepSpeed-style dict with the weights under "module" and "module." prefixes."""
    torch.save({"module": {f"module.{key}": value for key, value in state_dict.items()}, **extra}, path)
    return path


@torch.no_grad()
def test_conversion_reproduces_the_model(model, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sgdetr_hf.commands.convert_internvideo2")
    checkpoint = save_checkpoint(tmp_path / "release.pt", official_state_dict(model), epoch=3)
    output = convert_internvideo2_checkpoint(
        checkpoint, VOCAB, tmp_path / "out", config=tiny_config(), dtype=None
    )
    converted, info = InternVideo2Model.from_pretrained(output, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    pixel_values = torch.randn(2, 4, 3, 16, 16)
    ids = torch.tensor([[3, 14, 25, 4]])
    torch.testing.assert_close(
        converted(pixel_values, ids).logits_per_video, model(pixel_values, ids).logits_per_video
    )
    assert "dropped 12 training-only tensors" in caplog.text


def test_default_conversion_stores_bfloat16_and_the_processor(model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "release.pt", official_state_dict(model))
    output = convert_internvideo2_checkpoint(checkpoint, VOCAB, tmp_path / "out", config=tiny_config())
    with safe_open(output / "model.safetensors", framework="pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"BF16"}  # noqa: SIM118
    processor = SGDetrProcessor.from_pretrained(output)
    assert processor.max_query_length == 32 and processor.tokenizer.model_max_length == 32
    assert processor.tokenizer("A man rides a bike")["input_ids"] == [3, 11, 14, 25, 11, 22, 4]


def test_unknown_missing_and_misshaped_keys_are_all_listed(model):
    official = official_state_dict(model)
    official["vision_encoder.blocks.0.attn.rel_pos_bias"] = torch.zeros(3)
    del official["vision_encoder.blocks.1.mlp.fc2.bias"]
    official["text_proj.weight"] = torch.zeros(16, 31)
    with pytest.raises(ValueError) as error:
        convert_state_dict(official, tiny_config())
    message = str(error.value)
    assert "vision_encoder.blocks.0.attn.rel_pos_bias" in message
    assert "vision_model.encoder.layers.1.mlp.fc2.bias" in message
    assert "text_projection.weight: checkpoint (16, 31) vs config (16, 32)" in message


def test_a_cross_attention_in_a_text_only_layer_is_unexpected(model):
    official = official_state_dict(model)
    official["text_encoder.bert.encoder.layer.0.crossattention.self.key.weight"] = torch.zeros(32, 64)
    with pytest.raises(ValueError, match=r"layer\.0\.crossattention"):
        convert_state_dict(official, tiny_config())


def test_missing_image_table_is_derived_from_the_video_table(model):
    official = official_state_dict(model)
    del official["vision_encoder.img_pos_embed"]
    table = convert_state_dict(official, tiny_config())["vision_model.embeddings.image_position_embeddings"]
    video = official["vision_encoder.pos_embed"][0]
    torch.testing.assert_close(table[0], torch.cat([video[:1], video[1:].view(4, 16, 64).mean(0)]))


@torch.no_grad()
def test_converting_for_eight_frames_matches_run_time_interpolation(model):
    official = official_state_dict(model)
    eight = InternVideo2Model(tiny_config(num_frames=8)).eval()
    eight.load_state_dict(convert_state_dict(official, tiny_config(num_frames=8)), strict=False)
    pixel_values = torch.randn(2, 8, 3, 16, 16)
    expected = model.get_video_features(pixel_values, interpolate_pos_encoding=True).pooler_output
    torch.testing.assert_close(eight.get_video_features(pixel_values).pooler_output, expected)


def test_checkpoints_needing_a_full_unpickle_are_refused(model, tmp_path):
    checkpoint = save_checkpoint(
        tmp_path / "release.pt", official_state_dict(model), args=argparse.Namespace(lr=1)
    )
    with pytest.raises(ValueError, match="allow_unsafe_pickle"):
        convert_internvideo2_checkpoint(checkpoint, VOCAB, tmp_path / "out", config=tiny_config())
    output = convert_internvideo2_checkpoint(
        checkpoint, VOCAB, tmp_path / "out", config=tiny_config(), allow_unsafe_pickle=True
    )
    assert (output / "model.safetensors").is_file()


def test_an_empty_or_truncated_checkpoint_says_so(model, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.touch()  # was "cannot be read with torch.load(weights_only=True) ()": torch's EOFError has no message
    with pytest.raises(ValueError, match=r"empty\.pt is empty \(0 bytes\): download the checkpoint again"):
        convert_internvideo2_checkpoint(empty, VOCAB, tmp_path / "out", config=tiny_config())
    whole = save_checkpoint(tmp_path / "release.pt", official_state_dict(model)).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        ValueError, match=r"truncated\.pt cannot be read .*\(.+\): it is truncated or not a PyTorch"
    ):
        convert_internvideo2_checkpoint(truncated, VOCAB, tmp_path / "out", config=tiny_config())


def test_missing_inputs_are_reported(tmp_path):
    with pytest.raises(ValueError, match="vocabulary file not found"):
        convert_internvideo2_checkpoint(tmp_path / "release.pt", tmp_path / "vocab.txt", tmp_path / "out")
    with pytest.raises(ValueError, match="checkpoint not found"):
        convert_internvideo2_checkpoint(tmp_path / "release.pt", VOCAB, tmp_path / "out")


def test_a_failed_conversion_leaves_no_folder_and_a_used_one_is_refused_before_reading(
    model, tmp_path, monkeypatch, capsys
):
    checkpoint = save_checkpoint(tmp_path / "release.pt", official_state_dict(model))
    with pytest.raises(ValueError, match="max_query_length"):  # the processor refuses it
        convert_internvideo2_checkpoint(
            checkpoint, VOCAB, tmp_path / "out", config=tiny_config(), max_query_length=2
        )

    def crash(*args, **kwargs):  # the disk fills up while the processor is written, after the weights
        raise OSError("No space left on device")

    monkeypatch.setattr(SGDetrProcessor, "save_pretrained", crash)
    with pytest.raises(OSError, match="No space left"):
        convert_internvideo2_checkpoint(checkpoint, VOCAB, tmp_path / "out", config=tiny_config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.pt"]  # no output, no staging folder
    monkeypatch.undo()

    used = tmp_path / "mine"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the checkpoint was read"))
    with pytest.raises(FileExistsError, match="mine already exists and is not an empty folder"):
        convert_internvideo2_checkpoint(checkpoint, VOCAB, used, config=tiny_config())
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "convert-internvideo2",
                "--checkpoint",
                str(checkpoint),
                "--vocab",
                str(VOCAB),
                "--output",
                str(used),
            ]
        )
    assert (
        exit_.value.code == 2 and "mine already exists and is not an empty folder" in capsys.readouterr().err
    )
    assert [p.name for p in used.iterdir()] == ["notes.txt"]

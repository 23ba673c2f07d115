"""The native InternVideo2 encoders against an independent re-implementation of the official release, on a
tiny config."""

import math

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModel

from internvideo2_testing import tiny_config, tiny_model
from sgdetr_hf import InternVideo2Model
from sgdetr_hf.configuration_internvideo2 import InternVideo2VisionConfig
from sgdetr_hf.modeling_internvideo2 import (
    InternVideo2VisionEmbeddings,
    interpolate_position_table,
    sincos_position_table,
)


@pytest.fixture(scope="module")
def model() -> InternVideo2Model:
    return tiny_model()


def clips(num_clips=3, frames=4, size=16, seed=1) -> torch.Tensor:
    return torch.randn(num_clips, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_vision_forward(
    model: InternVideo2Model, pixel_values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vision tower written out from the spec (sections 3.2-3.6) with plain tensor maths, to check the
    modules against: (last_hidden_state, pooler_output)."""
    vision, config = model.vision_model, model.config.vision_config
    weights = dict(vision.named_parameters())
    patch = config.patch_size
    frames = pixel_values.shape[1]
    # Patch embedding: token t*16 + row*4 + col is the projection of that 4 x 4 patch of frame t.
    patches = pixel_values.unfold(3, patch, patch).unfold(4, patch, patch)  # B, T, C, rows, cols, p, p
    patches = patches.permute(0, 1, 3, 4, 2, 5, 6).flatten(4).flatten(1, 3)  # B, T*rows*cols, C*p*p
    kernel = weights["embeddings.patch_embeddings.projection.weight"].flatten(1)
    x = patches @ kernel.t() + weights["embeddings.patch_embeddings.projection.bias"]
    x = torch.cat([weights["embeddings.cls_token"].expand(len(x), 1, -1), x], 1)
    table = "embeddings.image_position_embeddings" if frames == 1 else "embeddings.position_embeddings"
    x = x + weights[table]

    def rms(values, weight):
        return weight * values * torch.rsqrt(values.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)

    def attend(q, k, v, heads):
        def split(t):
            return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(q.shape[-1] // heads)
        return (scores.softmax(-1) @ split(v)).transpose(1, 2).flatten(2)

    for i in range(config.num_hidden_layers):
        w = {k.split(f"layers.{i}.")[1]: v for k, v in weights.items() if f"layers.{i}." in k}
        q, k, v = (rms(x, w["norm1.weight"]) @ w["attention.qkv.weight"].t()).chunk(3, -1)
        q, k = rms(q, w["attention.q_norm.weight"]), rms(k, w["attention.k_norm.weight"])
        attention = (
            attend(q, k, v, config.num_attention_heads) @ w["attention.proj.weight"].t()
            + w["attention.proj.bias"]
        )
        x = x + w["layer_scale1.lambda1"] * attention
        approximate = "tanh" if config.hidden_act == "gelu_pytorch_tanh" else "none"
        hidden = F.gelu(
            rms(x, w["norm2.weight"]) @ w["mlp.fc1.weight"].t() + w["mlp.fc1.bias"], approximate=approximate
        )
        x = x + w["layer_scale2.lambda1"] * (hidden @ w["mlp.fc2.weight"].t() + w["mlp.fc2.bias"])

    pooler = {k.removeprefix("pooler."): v for k, v in weights.items() if k.startswith("pooler.")}
    eps = config.pooler_layer_norm_eps

    def norm(t, name):
        return F.layer_norm(t, t.shape[-1:], pooler[f"norm_{name}.weight"], pooler[f"norm_{name}.bias"], eps)

    def project(t, name):
        return t @ pooler[f"{name}_proj.weight"].t() + pooler[f"{name}_proj.bias"]

    query = project(norm(x.mean(1, keepdim=True), "q"), "q")
    pooled = attend(
        query, project(norm(x, "k"), "k"), project(norm(x, "v"), "v"), config.pooler_num_attention_heads
    )
    return x, (pooled @ pooler["out_proj.weight"].t() + pooler["out_proj.bias"])[:, 0]


@torch.no_grad()
@pytest.mark.parametrize("frames", [4, 1])
def test_vision_tower_matches_the_spec_written_out(model, frames):
    pixel_values = clips(frames=frames)
    output = model.vision_model(pixel_values)
    expected_hidden, expected_pooled = reference_vision_forward(model, pixel_values)
    assert output.last_hidden_state.shape == (3, 1 + 16 * frames, 64)
    assert output.pooler_output.shape == (3, 32)
    torch.testing.assert_close(output.last_hidden_state, expected_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.pooler_output, expected_pooled, atol=1e-5, rtol=1e-5)
    assert output.last_hidden_state.std() > 0.1  # randomised LayerScales: the blocks are far from identity


@torch.no_grad()
def test_exact_gelu_variant_matches_the_spec_and_differs_from_tanh(model):
    exact = tiny_model(hidden_act="gelu")
    pixel_values = clips()
    _, expected_pooled = reference_vision_forward(exact, pixel_values)
    torch.testing.assert_close(
        exact.vision_model(pixel_values).pooler_output, expected_pooled, atol=1e-5, rtol=1e-5
    )
    tanh_pooled = model.vision_model(pixel_values).pooler_output
    assert (expected_pooled - tanh_pooled).abs().max() > 1e-5  # the variant matters


@torch.no_grad()
def test_get_video_features_projects_the_pooled_clip(model):
    pixel_values = clips()
    features = model.get_video_features(pixel_values).pooler_output
    assert features.shape == (3, 16)
    pooled = model.vision_model(pixel_values).pooler_output
    torch.testing.assert_close(
        features, pooled @ model.visual_projection.weight.t() + model.visual_projection.bias
    )


@torch.no_grad()
def test_eager_and_sdpa_attention_agree():
    sdpa = tiny_model()
    eager = tiny_model()
    eager.set_attn_implementation("eager")
    assert sdpa.vision_model.config._attn_implementation == "sdpa"
    pixel_values = clips()
    torch.testing.assert_close(
        eager.get_video_features(pixel_values).pooler_output,
        sdpa.get_video_features(pixel_values).pooler_output,
    )


@torch.no_grad()
def test_tokens_are_time_major(model):
    """Only patch (frame 2, row 1, column 3) differs between two inputs: only token 1 + 2*16 + 1*4 + 3 changes."""
    first = torch.zeros(1, 4, 3, 16, 16)
    second = first.clone()
    second[0, 2, :, 4:8, 12:16] = 1.0
    embeddings = model.vision_model.embeddings
    changed = (embeddings(first) - embeddings(second)).abs().sum(-1)[0].nonzero().flatten()
    assert changed.tolist() == [1 + 2 * 16 + 1 * 4 + 3]


@torch.no_grad()
def test_pooler_ignores_token_order(model):
    hidden = torch.randn(2, 65, 64)
    permuted = hidden[:, torch.randperm(65)]
    pooler = model.vision_model.pooler
    torch.testing.assert_close(pooler(hidden), pooler(permuted), atol=1e-6, rtol=1e-5)


def test_sincos_table_known_values():
    table = sincos_position_table(64, num_frames=2, grid_size=2)[
        0
    ]  # 16 temporal + 24 column + 24 row channels
    assert table.shape == (1 + 2 * 4, 64)
    assert torch.count_nonzero(table[0]) == 0  # CLS row
    token = 1 + 1 * 4 + 1 * 2 + 0  # frame 1, row 1, column 0
    assert table[token, 0] == pytest.approx(math.sin(1.0))  # temporal code, frequency 1
    assert table[token, 8] == pytest.approx(math.cos(1.0))
    assert table[token, 16] == 0.0 and table[token, 28] == 1.0  # column 0: sin 0, cos 0
    assert table[token, 40] == pytest.approx(math.sin(1.0)) and table[token, 52] == pytest.approx(
        math.cos(1.0)
    )
    assert table[token, 41] == pytest.approx(math.sin(10000 ** (-1 / 12)))  # second row frequency


def test_fresh_model_starts_from_the_sincos_tables():
    embeddings = InternVideo2Model(tiny_config()).vision_model.embeddings
    torch.testing.assert_close(embeddings.position_embeddings.data, sincos_position_table(64, 4, 4))
    torch.testing.assert_close(embeddings.image_position_embeddings.data, sincos_position_table(64, 1, 4))
    assert (embeddings.cls_token != 0).any()


def test_temporal_interpolation_is_linear_with_half_pixel_centres():
    """4 -> 8 frames, align_corners=False: sample i reads source position i/2 - 1/4, clamped to [0, 3]."""
    frame_values = torch.arange(4.0)
    table = torch.cat(
        [torch.full((1, 1, 2), 7.0), frame_values.repeat_interleave(4).view(1, 16, 1).expand(1, 16, 2)], 1
    )
    resampled = interpolate_position_table(table, 4, 2, 8, (2, 2))
    assert resampled.shape == (1, 1 + 8 * 4, 2)
    assert resampled[0, 0].tolist() == [7.0, 7.0]
    per_frame = resampled[0, 1:, 0].view(8, 4)
    assert per_frame[:, 0].tolist() == [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
    assert (per_frame == per_frame[:, :1]).all()


@torch.no_grad()
def test_other_frame_counts_and_resolutions_need_interpolation(model):
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model.vision_model(clips(frames=8))
    assert model.vision_model(clips(frames=8), interpolate_pos_encoding=True).last_hidden_state.shape == (
        3,
        129,
        64,
    )
    assert model.vision_model(clips(size=24), interpolate_pos_encoding=True).last_hidden_state.shape == (
        3,
        145,
        64,
    )
    with pytest.raises(ValueError, match="do not tile"):
        model.vision_model(clips(size=18))
    with pytest.raises(ValueError, match="batch, frames, channels"):
        model.vision_model(torch.zeros(3, 3, 16, 16))


@torch.no_grad()
def test_inputs_the_towers_would_misread_are_refused(model):
    with pytest.raises(ValueError, match=r"normalised floats, got torch.uint8 .*SGDetrVideoProcessor"):
        model.get_video_features((clips() * 255).to(torch.uint8))  # raw frames were encoded as they were
    with pytest.raises(ValueError, match="at least one clip"):
        model.vision_model(clips()[:0])
    ids = torch.tensor([[3, 14, 25, 11, 22, 4]] * 2)
    with pytest.raises(
        ValueError, match=r"attention_mask must have the shape of input_ids \(2, 6\), got \(2, 4\)"
    ):
        model.get_text_features(ids, attention_mask=torch.ones(2, 4))  # was taken as all ones
    with pytest.raises(ValueError, match="at least one query and token"):
        model.get_text_features(ids[:, :0])
    positions = model.config.text_config.max_position_embeddings
    with pytest.raises(ValueError, match=f"more than the text encoder's {positions} positions"):
        model.get_text_features(ids[:, :1].repeat(1, positions + 1))
    vocab = model.config.text_config.vocab_size
    for outside in (vocab, -1):  # were an IndexError from the embedding lookup
        with pytest.raises(
            ValueError, match=rf"token ids from -?\d+ to \d+, outside .* vocabulary of {vocab}"
        ):
            model.get_text_features(torch.tensor([[3, outside, 4]]))
    with pytest.raises(ValueError, match="input_ids must be integer token ids, got torch.float32"):
        model.get_text_features(ids.float())


@torch.no_grad()
def test_image_input_uses_the_image_table(model):
    pixel_values = clips(frames=1)
    before = model.vision_model(pixel_values).pooler_output
    changed = tiny_model()
    changed.vision_model.embeddings.position_embeddings.add_(1.0)
    torch.testing.assert_close(changed.vision_model(pixel_values).pooler_output, before)
    changed.vision_model.embeddings.image_position_embeddings.add_(1.0)
    assert not torch.allclose(changed.vision_model(pixel_values).pooler_output, before)


@torch.no_grad()
def test_derived_image_table_is_cls_plus_frame_mean():
    config = InternVideo2VisionConfig(
        **{**tiny_config().vision_config.to_dict(), "use_separate_image_position_embeddings": False}
    )
    embeddings = InternVideo2VisionEmbeddings(config)
    embeddings.position_embeddings.normal_()
    table = embeddings.image_position_table()
    video = embeddings.position_embeddings[0]
    torch.testing.assert_close(table[0, 0], video[0])
    torch.testing.assert_close(table[0, 1:], video[1:].view(4, 16, 64).mean(0))


@torch.no_grad()
def test_text_features_ignore_padding_and_live_in_the_joint_space(model):
    ids = torch.tensor([[3, 14, 25, 11, 22, 4, 0, 0], [3, 18, 27, 33, 13, 54, 82, 4]])
    mask = (ids != 0).long()
    batched = model.get_text_features(ids, attention_mask=mask)
    alone = model.get_text_features(ids[:1, :6], attention_mask=mask[:1, :6])
    assert batched.token_embeds.shape == (2, 8, 16) and batched.last_hidden_state.shape == (2, 8, 32)
    torch.testing.assert_close(batched.token_embeds[0, :6], alone.token_embeds[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched.pooler_output, batched.token_embeds[:, 0])
    projection = model.text_projection
    torch.testing.assert_close(
        batched.token_embeds, batched.last_hidden_state @ projection.weight.t() + projection.bias
    )


@torch.no_grad()
def test_forward_scores_every_clip_against_every_query(model):
    ids = torch.tensor([[3, 14, 25, 4], [3, 18, 27, 4]])
    output = model(pixel_values=clips(), input_ids=ids)
    assert output.logits_per_video.shape == (3, 2)
    cosine = output.video_embeds @ output.text_embeds.t()
    torch.testing.assert_close(output.logits_per_video, cosine / 0.07)
    torch.testing.assert_close(output.video_embeds.norm(dim=-1), torch.ones(3))


@torch.no_grad()
def test_bfloat16_inference_tracks_float32(model):
    pixel_values = clips()
    reference = model.get_video_features(pixel_values).pooler_output
    bf16 = tiny_model().to(torch.bfloat16)
    features = bf16.get_video_features(pixel_values.to(torch.bfloat16)).pooler_output
    assert features.dtype == torch.bfloat16
    assert F.cosine_similarity(features.float(), reference).min() > 0.99


@torch.no_grad()
def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert type(reloaded) is InternVideo2Model
    pixel_values = clips()
    torch.testing.assert_close(
        reloaded.get_video_features(pixel_values).pooler_output,
        model.get_video_features(pixel_values).pooler_output,
    )
    assert reloaded.temperature.item() == pytest.approx(0.07)

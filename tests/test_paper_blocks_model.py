"""Model blocks pinned where mutation testing found them unpinned (gaps left by ``test_paper_blocks.py``,
``test_detector_sgdetr.py`` and ``test_fast_paths.py``).

Each test recomputes a block from the design (``shared/design/sg-detr.md``) by hand (explicit softmax
attention and sine embeddings that share no code with the model), on weights moved off their initialisation
(zero heads hide miswirings), or checks a gradient path or a rate the design states. Every test was seen to
fail on a hand-made mutant of the block it covers (named in its docstring)."""

from __future__ import annotations

import math

import torch

from sgdetr_hf import SGDetrConfig
from sgdetr_hf.detector_sgdetr import (
    SGDetrDecoder,
    SGDetrHybridDetector,
    build_denoising_group,
    build_self_attention_blocked,
    decode_atss_deltas,
)
from sgdetr_hf.spans import span_cw_to_se
from sgdetr_testing import SGDetrModelTester

TINY = dict(
    hidden_size=32, num_attention_heads=4, ffn_dim=64, group_norm_groups=8, video_feature_dim=16,
    text_feature_dim=16, dropout=0.0, input_dropout=0.0,
)  # fmt: skip
ATOL = 1e-5


def _perturb(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Move every parameter of ``module`` off its initialisation (zero heads, unit scales, zero biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def _assert_close(got, want, what: str, atol: float = ATOL):
    torch.testing.assert_close(got, want, atol=atol, rtol=0, msg=lambda m: f"{what}: {m}")


def _assert_far(a, b, what: str, margin: float = 1e-2):
    assert (a - b).abs().max() > margin, f"{what}: the check could not detect the miswiring"


# --------------------------------------------------------------------------------------------- §2.12 ATSS decoding
def test_atss_delta_decoding_by_hand():
    """Delta coder with stds (0.1, 0.2): c = c_a + 0.1 * d_c * w_a, w = w_a * exp(min(0.2 * d_w, log(1000/16))).
    Mutant killed: the centre offset not scaled by the anchor width."""
    anchors = torch.tensor([[[0.3, 0.2], [0.7, 0.5], [0.5, 0.1]]])
    deltas = torch.tensor([[[1.0, 0.5], [-2.0, -1.0], [0.0, 100.0]]])
    decoded = decode_atss_deltas(anchors, deltas, [0.1, 0.2])
    expected = torch.tensor(
        [[[0.3 + 0.1 * 0.2, 0.2 * math.exp(0.1)], [0.7 - 0.2 * 0.5, 0.5 * math.exp(-0.2)], [0.5, 0.1 * 62.5]]]
    )
    _assert_close(decoded, expected, "decoded spans")


# --------------------------------------------------------------------------------------------- §2.14 decoder
def _sine(values, dim, temperature):
    """DETR sine embedding written out: out[2i] = sin(2 pi v / T^(2i/dim)), out[2i+1] = cos(same)."""
    out = torch.zeros(*values.shape, dim)
    for i in range(dim // 2):
        angle = 2 * math.pi * values / temperature ** (2 * i / dim)
        out[..., 2 * i], out[..., 2 * i + 1] = angle.sin(), angle.cos()
    return out


def _heads(x, h):
    batch, length, dim = x.shape
    return x.view(batch, length, h, dim // h).transpose(1, 2)


def _softmax_attention(q, k, v, blocked):
    """q (B, H, Q, e), k (B, H, K, e), v (B, H, K, f); blocked broadcastable to (B, H, Q, K)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(blocked, -math.inf).softmax(-1)
    out = weights @ v
    return out.transpose(1, 2).flatten(2)


def _logit(x):
    x = x.clamp(1e-3, 1 - 1e-3)
    return torch.log(x / (1 - x))


def _decoder_by_hand(dec, cfg, content, refs, memory, memory_pos, memory_mask, blocked):
    """§2.14 step by step: sine(r); qpos = MLP(sine); sine * MLP(q) after layer 1; * sigmoid(MLP(q)) / w_r;
    self-attention on content + position; conditional cross-attention with per-head [content ; position]
    halves (head dim 2 d_h) and the positional query / key added to the content ones in layer 1 only;
    FFN; heads on LN(q); span = sigmoid(delta + logit(ref)), the next reference."""
    h, d = cfg.num_attention_heads, cfg.hidden_size
    q, r = content, refs
    memory_blocked = ~memory_mask[:, None, None, :]
    logits, spans, ious = [], [], []
    for i, layer in enumerate(dec.layers):
        sine = torch.cat((_sine(r[..., 0], d // 2, 10000.0), _sine(r[..., 1], d // 2, 10000.0)), -1)
        qpos = dec.ref_point_head(sine)
        if i > 0:
            sine = sine * dec.query_scale(q)
        sine = sine * torch.sigmoid(dec.ref_width_head(q)) / r[..., 1:2]
        sa_q = layer.sa_q_content(q) + layer.sa_q_pos(qpos)
        sa_k = layer.sa_k_content(q) + layer.sa_k_pos(qpos)
        attended = _softmax_attention(_heads(sa_q, h), _heads(sa_k, h), _heads(layer.sa_v(q), h), blocked)
        q = layer.norm1(q + layer.sa_out(attended))
        q_content, k_content = layer.ca_q_content(q), layer.ca_k_content(memory)
        k_pos = layer.ca_k_pos(memory_pos)
        if i == 0:
            q_content, k_content = q_content + layer.ca_q_pos(qpos), k_content + k_pos
        q_cat = torch.cat((_heads(q_content, h), _heads(layer.ca_q_sine(sine), h)), -1)
        k_cat = torch.cat((_heads(k_content, h), _heads(k_pos, h)), -1)
        attended = _softmax_attention(q_cat, k_cat, _heads(layer.ca_v(memory), h), memory_blocked)
        q = layer.norm2(q + layer.ca_out(attended))
        q = layer.norm3(q + layer.ffn(q))
        hidden = dec.norm(q)
        r = torch.sigmoid(dec.span_head(hidden) + _logit(r))
        logits.append(dec.class_head(hidden))
        spans.append(r)
        ious.append(dec.iou_head(hidden)[..., 0])
    return torch.stack(logits, 1), torch.stack(spans, 1), torch.stack(ious, 1)


def _decoder_case(seed=0):
    cfg = SGDetrConfig(**TINY)
    torch.manual_seed(seed)
    dec = SGDetrDecoder(cfg).eval()
    _perturb(dec, seed=seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    length, num_queries = 11, 7
    memory_mask = torch.arange(length)[None] < torch.tensor([[11], [6]])
    # padded memory holds garbage: the mask, not zeros, must keep it out
    memory = torch.randn(2, length, 32, generator=g) * torch.where(memory_mask, 1.0, 50.0)[..., None]
    memory_pos = torch.randn(2, length, 32, generator=g)
    content = torch.randn(2, num_queries, 32, generator=g)
    refs = torch.rand(2, num_queries, 2, generator=g) * 0.6 + 0.2
    # two groups and a padded slot, as in training: [group 0 (3) | primary (4)]
    ids = torch.tensor([0, 0, 0, -1, -1, -1, -1])
    valid = torch.ones(2, num_queries, dtype=torch.bool)
    valid[0, 1] = False
    blocked = build_self_attention_blocked(ids, valid)
    return cfg, dec, (content, refs, memory, memory_pos, memory_mask, blocked)


def test_decoder_by_hand_every_layer():
    """Every layer's logits, spans and IoU logits equal §2.14 written out, with every weight perturbed, a
    padded memory full of garbage and a group mask. Mutants killed: no positional score in the conditional
    cross-attention; references not refined between layers; no width modulation; no query scaling after
    layer 1; no memory mask; width modulation by the centre; no positional query in layer 1; key positions
    projected from the memory content."""
    cfg, dec, (content, refs, memory, memory_pos, memory_mask, blocked) = _decoder_case()
    with torch.no_grad():
        out = dec(content, refs, memory, memory_pos, memory_mask, blocked)
        logits, spans, ious = _decoder_by_hand(
            dec, cfg, content, refs, memory, memory_pos, memory_mask, blocked[:, None]
        )
    _assert_close(out.logits, logits, "class logits", atol=1e-4)
    _assert_close(out.spans, spans, "spans", atol=1e-4)
    _assert_close(out.iou_logits, ious, "IoU logits", atol=1e-4)
    _assert_far(spans[:, 1], spans[:, 0], "layer 2 vs layer 1 spans")


def test_decoder_iou_head_trains_the_decoder():
    """The IoU head (§2.16, IoU-aware detector) reads the decoder's hidden state with its gradient: the
    IoU loss shapes the shared decoder features, not only the head. Mutant killed: the IoU head on the
    detached hidden state."""
    _, dec, (content, refs, memory, memory_pos, memory_mask, blocked) = _decoder_case()
    out = dec.train()(content, refs, memory, memory_pos, memory_mask, blocked)
    out.iou_logits[:, -1].sum().backward()
    for name, parameter in (
        ("last layer FFN", dec.layers[-1].ffn.fc2.weight),
        ("final norm", dec.norm.weight),
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert dec.class_head.weight.grad is None  # the IoU logits alone were back-propagated


# --------------------------------------------------------------------------------------------- §2.13 query selector
def test_decoder_references_are_detached_from_the_selector():
    """r0 = proposal[top-K].detach() (DINO): the decoder's losses do not reach the selector's span head,
    whose only gradient is the selector loss; the selector's class head is reached only through the
    pyramid features, not at all from the decoder here (the features are inputs). Mutant killed: the
    references not detached."""
    cfg = SGDetrConfig(**TINY)
    torch.manual_seed(0)
    det = SGDetrHybridDetector(cfg).train()
    _perturb(det, seed=1)
    lengths = torch.tensor([20, 12])
    mask = torch.arange(20)[None] < lengths[:, None]
    features = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(2)) * mask[..., None]
    pos = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(3))
    out = det(features, mask, pos)
    out.decoder.spans.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in det.selector.span_head.parameters())
    assert det.decoder.span_head.layers[-1].weight.grad.abs().sum() > 0
    det.zero_grad()
    out = det(features, mask, pos)
    out.selector.spans.sum().backward()  # the selector loss does reach it
    assert det.selector.span_head.layers[-1].weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- §2.15 denoising
def test_denoising_noise_signs_and_label_flip_rate():
    """DN noise (§2.15): each endpoint moves by +-u * 0.4 * w / 2 with its own random sign, so over many slots
    either endpoint moves left or right about half of the time, and the two signs agree about half of the time
    (independent); the content E_label[moment] is swapped for E_label[unknown] with probability
    0.5 * ratio = 0.25, whatever the query's polarity. 2 videos x 50 groups x 2 x 5 GTs = 2000 slots, none
    clamped at the video border; the bounds are 4.5 to 6 standard deviations (the draws are a fixed hash of
    the seeds). Mutants killed: every endpoint moved right (one sign); flipping with probability ``ratio``."""
    embed = torch.nn.Embedding(2, 4)
    with torch.no_grad():
        embed.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    gts = torch.tensor([[[0.1 + 0.18 * i, 0.1] for i in range(5)]] * 2)
    group = build_denoising_group(
        gts, torch.ones(2, 5, dtype=torch.bool), embed, num_groups=50, box_noise_scale=0.4,
        label_noise_ratio=0.5, sampling_seeds=torch.tensor([11.0, 2024.5]),
    )  # fmt: skip
    shift = span_cw_to_se(group.references) - span_cw_to_se(group.target_spans)  # (B, Q, 2), signed
    assert (shift.abs() > 0).all() and (shift.abs() < 0.4 * 0.1 + 1e-6).all()  # |u| < 2, never clamped
    moves_right = shift > 0
    for endpoint in range(2):
        assert abs(moves_right[..., endpoint].float().mean().item() - 0.5) < 0.05, endpoint
    same_sign = moves_right[..., 0] == moves_right[..., 1]
    assert abs(same_sign.float().mean().item() - 0.5) < 0.05
    flipped = group.content[..., 1] == 1.0
    assert ((group.content[..., 0] == 1.0) ^ flipped).all()  # every slot holds one of the two rows
    assert abs(flipped.float().mean().item() - 0.25) < 0.06
    for polarity in (group.is_positive, ~group.is_positive):
        assert abs(flipped[polarity].float().mean().item() - 0.25) < 0.08


# --------------------------------------------------------------------------------------------- §2.7 SGCA gate
def test_sgca_gate_is_not_detached():
    """The gate sigma(S_local) is not detached (§2.7 [D]): the encoder output F_hat, which S_local reaches
    only through the SGCA gate (eq. 7-9 come after it), has a gradient with respect to eq. 2's alpha and beta,
    and it matches a finite difference. Mutant killed: the gate detached."""
    tester = SGDetrModelTester(dropout=0.0, input_dropout=0.0)
    model = tester.create_model(seed=0).eval()
    _perturb(model, seed=1, scale=0.1)
    video, vmask, text, tmask = tester.prepare_inputs([7, 5], 7, [3, 4], 4, seed=3)
    sg_detr = model.sg_detr

    def encoded_sum():
        out = sg_detr(video, vmask, text, tmask)
        return (out.encoder_last_hidden_state * vmask[..., None]).sum()

    value = encoded_sum()
    (grad_alpha, grad_beta) = torch.autograd.grad(
        value, (sg_detr.local_saliency.alpha, sg_detr.local_saliency.beta)
    )
    assert grad_beta.abs().item() > 1e-3
    eps = 1e-2
    with torch.no_grad():
        sg_detr.local_saliency.beta.add_(eps)
        plus = encoded_sum()
        sg_detr.local_saliency.beta.sub_(2 * eps)
        minus = encoded_sum()
        sg_detr.local_saliency.beta.add_(eps)
    numeric = (plus - minus) / (2 * eps)
    assert abs(numeric.item() - grad_beta.item()) < 0.05 * abs(numeric.item()) + 1e-3
    assert grad_alpha.abs().item() > 0


def test_the_detector_reaches_local_saliency_through_the_gate_as_well():
    """With eq. 7-8 removed (use_global_saliency=False: F_g = F_hat), the detector's outputs still depend on
    S_local, through the SGCA gate alone: the decoder's gradient reaches beta."""
    tester = SGDetrModelTester(dropout=0.0, input_dropout=0.0, use_global_saliency=False)
    model = tester.create_model(seed=0).eval()
    video, vmask, text, tmask = tester.prepare_inputs([7, 5], 7, [3, 4], 4, seed=3)
    out = model(video, vmask, text, tmask)
    (grad,) = torch.autograd.grad(out.pred_logits.sum(), model.sg_detr.local_saliency.beta, allow_unused=True)
    assert grad is not None and grad.abs().item() > 0

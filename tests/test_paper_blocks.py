"""Every block of the paper's §3 pinned by value (issue 15, "Tests that pin each block by value").

Each test recomputes one equation by hand from the inputs the block receives (captured from the model or
chosen here) and compares with what the block returns. The model's weights are all perturbed away from their
initialisation first: at initialisation the eq.-8 head is zero (``S_global == S_local``, so eq. 9 cannot tell
which one it amplifies with) and the span heads are zero, so a test there proves little. Every test also
checks that its hand computation differs from the obvious miswiring (``_assert_far``), so that it can fail.

The attention reference below (:func:`attention_by_hand`) shares nothing with ``layers_sgdetr.attend``: it
is the textbook ``softmax(q k^T / sqrt(d_h)) v`` per head on the module's own projection weights.
"""

from __future__ import annotations

import copy
import inspect
import math
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from sgdetr_hf import SGDetrForMomentRetrieval, post_process_moment_retrieval
from sgdetr_hf.detector_sgdetr import assign_atss, build_atss_positive_group, make_anchors
from sgdetr_hf.spans import clamp_spans_cw, inverse_sigmoid, sine_embed_spans_cw
from sgdetr_hf.targets_sgdetr import prepare_targets
from sgdetr_testing import SGDetrModelTester

TESTER = SGDetrModelTester(dropout=0.0, input_dropout=0.0, det_score_alpha=0.25)
# eq. 2's scalars away from their (10, 0) initialisation
ALPHA, BETA = 6.0, -1.5
# three samples (the rolled negative pairs b -> b + 1 differ from b -> b - 1), padded video and text
LENGTHS, NUM_CLIPS = [7, 5, 4], 7
TEXT_LENGTHS, NUM_TOKENS = [3, 5, 2], 5
# relevant clips of each sample (labels): not contiguous, and every sample has non-relevant clips
SALIENCY = [[0, 4, 4, 0, 8, 0, 2], [3, 0, 0, 6, 0], [0, 0, 1, 0]]
ATOL = 1e-5


def _perturbed_model() -> SGDetrForMomentRetrieval:
    """The tiny model with every parameter moved off its initialisation, in eval mode (no dropout)."""
    model = TESTER.create_model(seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        model.sg_detr.local_saliency.alpha.fill_(ALPHA)
        model.sg_detr.local_saliency.beta.fill_(BETA)
        model.sg_detr.global_saliency.bias.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def model():
    return _perturbed_model()


@pytest.fixture(scope="module")
def inputs():
    video, vmask, text, tmask = TESTER.prepare_inputs(LENGTHS, NUM_CLIPS, TEXT_LENGTHS, NUM_TOKENS, seed=3)
    return video, vmask.bool(), text, tmask.bool()


def _labels(video_ids=("a", "b", "c")) -> list[dict]:
    return [
        {
            "spans": torch.tensor([[0.5, 0.4]]),
            "saliency_scores": torch.tensor(s, dtype=torch.float32),
            "video_id": v,
        }
        for s, v in zip(SALIENCY, video_ids)
    ]


@contextmanager
def capture(module, *, inputs: bool = False):
    """Record the outputs (or the positional and keyword inputs) of every call of ``module``."""
    calls = []
    if inputs:
        handle = module.register_forward_pre_hook(
            lambda _, args, kwargs: calls.append((args, kwargs)), with_kwargs=True
        )
    else:
        handle = module.register_forward_hook(lambda _, __, output: calls.append(output))
    try:
        yield calls
    finally:
        handle.remove()


def _call_argument(module, call, name: str):
    """The argument ``name`` of a captured ``(args, kwargs)`` call of ``module.forward``."""
    args, kwargs = call
    return inspect.signature(module.forward).bind(*args, **kwargs).arguments[name]


def _real(x, mask):
    """The real positions of a ``(B, L, ...)`` tensor, flattened (padding may hold anything)."""
    return x[mask]


def _assert_close(got, want, what: str):
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}")


def _assert_far(a, b, what: str, margin: float = 1e-2):
    """The correct value and a miswired one differ: the test comparing with ``a`` can tell them apart."""
    assert (a - b).abs().max() > margin, f"{what}: the check could not detect the miswiring"


def attention_by_hand(attention, query, key, value, key_mask, gate=None):
    """Multi-head attention from ``attention``'s q/k/v/out projections, written out. ``gate`` ``(B, Lq)``
    scales query i's attended values (eq. 4: ``W_ij = softmax_j(Q_i K_j / sqrt(h)) * sigma(S_local^i)``)."""
    heads = attention.num_heads

    def split(x):
        batch, length, dim = x.shape
        return x.view(batch, length, heads, dim // heads).transpose(1, 2)

    q, k, v = split(attention.q_proj(query)), split(attention.k_proj(key)), split(attention.v_proj(value))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(~key_mask[:, None, None, :], -math.inf).softmax(-1)
    if gate is not None:
        weights = weights * gate[:, None, :, None]
    attended = (weights @ v).transpose(1, 2).flatten(2)
    return attention.out_proj(attended)


def post_norm_block(layer, x, attended):
    """``x = LN1(x + attended); x = LN2(x + FFN(x))`` with the layer's own norms and feed-forward."""
    x = layer.norm1(x + attended)
    return layer.norm2(x + layer.ffn(x))


@pytest.fixture(scope="module")
def encoded(model, inputs):
    """Encoder-side outputs without labels, plus what the SGCA stack handed to the encoder stack."""
    with torch.no_grad(), capture(model.sg_detr.sgca_layers[-1]) as sgca_out:
        enc = model.sg_detr(*inputs)
    return enc, sgca_out[0]


# --------------------------------------------------------------------------------------------- §3.1-3.2
def test_input_projections_and_token_types(model, encoded, inputs):
    """V0 = Proj_v(prepared clips) + type[video], T0 = Proj_t(prepared tokens) + type[text], with
    Proj(x) = Lin2(LN2(ReLU(Lin1(LN1(x)))))."""
    enc, _ = encoded
    video, vmask, text, tmask = inputs
    sg_detr = model.sg_detr
    types = sg_detr.token_type_embeddings.weight

    def project(projection, x):
        return projection.linear2(projection.norm2(F.relu(projection.linear1(projection.norm1(x)))))

    video_embeds = project(sg_detr.video_projection, sg_detr.prepare_video(video, vmask)) + types[1]
    text_embeds = project(sg_detr.text_projection, sg_detr.prepare_text(text, tmask)) + types[0]
    _assert_close(_real(enc.video_embeds, vmask), _real(video_embeds, vmask), "video projection")
    _assert_close(_real(enc.text_embeds, tmask), _real(text_embeds, tmask), "text projection")
    _assert_far(types[0], types[1], "text vs video token type")


# --------------------------------------------------------------------------------------------- §3.2
def test_eq1_pooling_encoder_sentence_token(model, encoded, inputs):
    """F_sent: masked mean of the text tokens, refined by N attention-pooling layers over the real tokens."""
    enc, _ = encoded
    text, tmask = enc.text_embeds, inputs[3]
    m = tmask[..., None].float()
    sentence = (text * m).sum(1) / m.sum(1)
    for layer in model.sg_detr.pooling_encoder.layers:
        pooled = attention_by_hand(
            layer.attention, layer.norm_q(sentence)[:, None], layer.norm_k(text), layer.norm_v(text), tmask
        )
        sentence = sentence + pooled[:, 0]
    _assert_close(enc.sentence_embeds, sentence, "eq. 1")
    _assert_far(sentence, text.mean(1), "eq. 1 vs an unmasked mean")


def test_eq2_local_saliency(encoded, inputs):
    """S_local = alpha * cos(F_sent, V0_t) + beta on real clips, -1e4 on padding."""
    enc, _ = encoded
    vmask = inputs[1]
    cosine = F.cosine_similarity(enc.video_embeds, enc.sentence_embeds[:, None, :], dim=-1)
    expected = ALPHA * cosine + BETA
    _assert_close(_real(enc.local_saliency, vmask), _real(expected, vmask), "eq. 2")
    assert (enc.local_saliency[~vmask] == -1e4).all()


# --------------------------------------------------------------------------------------------- §3.3
def test_eq3_5_saliency_guided_cross_attention(model, encoded, inputs):
    """SGCA layers: each clip i (query: clip + position) attends the real text tokens, its attended text is
    scaled by sigma(S_local^i), then the post-norm residual blocks."""
    enc, sgca_output = encoded
    vmask, tmask = inputs[1], inputs[3]
    gate = torch.sigmoid(enc.local_saliency)
    x = ungated = enc.video_embeds
    for layer in model.sg_detr.sgca_layers:
        args = (enc.text_embeds, enc.text_embeds, tmask)
        x = post_norm_block(
            layer, x, attention_by_hand(layer.cross_attention, x + enc.position_embeddings, *args, gate=gate)
        )
        ungated = post_norm_block(
            layer, ungated, attention_by_hand(layer.cross_attention, ungated + enc.position_embeddings, *args)
        )
    _assert_close(_real(sgca_output, vmask), _real(x, vmask), "eq. 3-5")
    _assert_far(_real(x, vmask), _real(ungated, vmask), "SGCA vs ungated cross-attention", margin=0.1)


def test_sgca_gate_is_sigma_of_local_saliency_per_clip(model, encoded, inputs):
    """The gate each SGCA layer receives is sigma(S_local) of its clip (not of another clip, not 1)."""
    enc, _ = encoded
    with torch.no_grad(), capture(model.sg_detr.sgca_layers[0], inputs=True) as calls:
        model.sg_detr(*inputs)
    gate = _call_argument(model.sg_detr.sgca_layers[0], calls[0], "gate")
    assert gate is not None, "the SGCA layer got no saliency gate"
    _assert_close(gate, torch.sigmoid(enc.local_saliency), "SGCA gate")


def test_eq6_transformer_encoder(model, encoded, inputs):
    """F_hat: self-attention layers (q = k = x + pos, v = x) over the real clips."""
    enc, sgca_output = encoded
    vmask = inputs[1]
    x = sgca_output
    for layer in model.sg_detr.encoder_layers:
        qk = x + enc.position_embeddings
        x = post_norm_block(layer, x, attention_by_hand(layer.self_attention, qk, qk, x, vmask))
    _assert_close(_real(enc.encoder_last_hidden_state, vmask), _real(x, vmask), "eq. 6")


# --------------------------------------------------------------------------------------------- §3.4
def test_eq7_8_global_saliency(model, encoded, inputs):
    """S_global = S_local + Linear(F_hat + F_hat * sigma(S_local)) on real clips, -1e4 on padding."""
    enc, _ = encoded
    vmask = inputs[1]
    encoded_clips, local = enc.encoder_last_hidden_state, enc.local_saliency
    amplified_local = encoded_clips + encoded_clips * torch.sigmoid(local)[..., None]  # eq. 7
    expected = local + model.sg_detr.global_saliency(amplified_local)[..., 0]  # eq. 8
    _assert_close(_real(enc.global_saliency, vmask), _real(expected, vmask), "eq. 7-8")
    assert (enc.global_saliency[~vmask] == -1e4).all()
    unamplified = local + model.sg_detr.global_saliency(encoded_clips)[..., 0]
    _assert_far(_real(expected, vmask), _real(unamplified, vmask), "eq. 8 on F_hat instead of F_hat_l")


def test_eq9_global_amplifier_uses_global_saliency(encoded, inputs):
    """F_g = F_hat + F_hat * sigma(S_global) on real clips (not sigma(S_local)), 0 on padding."""
    enc, _ = encoded
    vmask = inputs[1]
    encoded_clips = enc.encoder_last_hidden_state
    expected = encoded_clips + encoded_clips * torch.sigmoid(enc.global_saliency)[..., None]
    with_local = encoded_clips + encoded_clips * torch.sigmoid(enc.local_saliency)[..., None]
    _assert_far(
        _real(enc.global_saliency, vmask), _real(enc.local_saliency, vmask), "S_global vs S_local", 0.3
    )
    _assert_far(_real(expected, vmask), _real(with_local, vmask), "eq. 9 with S_local")
    _assert_close(_real(enc.last_hidden_state, vmask), _real(expected, vmask), "eq. 9")
    assert (enc.last_hidden_state[~vmask] == 0).all()


def test_detector_reads_the_globally_amplified_features(model, inputs):
    """The hybrid detector's memory is F_g (eq. 9's output), not F_hat."""
    with torch.no_grad(), capture(model.detector, inputs=True) as calls:
        out = model(*inputs)
    features = _call_argument(model.detector, calls[0], "features")
    _assert_close(features, out.encoder_outputs.last_hidden_state, "detector input")
    _assert_far(features, out.encoder_outputs.encoder_last_hidden_state, "F_g vs F_hat")


# --------------------------------------------------------------------------------------------- §3.7, training-only passes
@pytest.fixture(scope="module")
def trained_encoding(model, inputs):
    video, vmask, text, tmask = inputs
    targets = prepare_targets(_labels(), video, vmask, model.config.num_saliency_pairs)
    with torch.no_grad():
        return model.sg_detr.encode(video, vmask, text, tmask, targets), targets


def test_negative_pair_pass_pairs_video_b_with_the_text_of_sample_b_plus_1(
    model, inputs, encoded, trained_encoding
):
    """neg_*_saliency[b] are the saliencies of (video b, text (b+1) % B) run through the whole encoder alone."""
    video, vmask, text, tmask = inputs
    enc, _ = encoded
    trained, _ = trained_encoding
    with torch.no_grad():
        rolled = model.sg_detr(video, vmask, text.roll(-1, 0), tmask.roll(-1, 0))
    for name in ("local_saliency", "global_saliency"):
        negative = trained[f"neg_{name}"]
        _assert_close(_real(negative, vmask), _real(rolled[name], vmask), f"negative pass {name}")
        _assert_far(_real(rolled[name], vmask), _real(enc[name], vmask), f"rolled vs own text, {name}")
        # the positive pass is the one without labels
        _assert_close(_real(trained[name], vmask), _real(enc[name], vmask), f"positive pass {name}")
    with torch.no_grad():
        other_way = model.sg_detr(video, vmask, text.roll(1, 0), tmask.roll(1, 0))
    _assert_far(_real(other_way.global_saliency, vmask), _real(rolled.global_saliency, vmask), "b+1 vs b-1")


def test_negative_pair_mask_follows_the_same_rolling():
    """neg_pair_mask[b] says whether (video b, text (b+1) % B) is a real negative: not when both samples
    come from the same source video."""
    video, vmask, _, _ = TESTER.prepare_inputs(LENGTHS, NUM_CLIPS, TEXT_LENGTHS, NUM_TOKENS)
    targets = prepare_targets(_labels(("a", "a", "c")), video, vmask.bool(), 2)
    assert targets.neg_pair_mask.tolist() == [False, True, True]


def _moment_encoder_on(moment_encoder, clips, clip_pos):
    """The moment encoder's token after its layers over ``[token; clips]`` with nothing masked: the clips are
    exactly the keys the token and the clips may attend."""
    token = moment_encoder.moment_token[None, None]
    token_pos = moment_encoder.moment_position[None, None]
    x = torch.cat((token, clips[None]), 1)
    pos = torch.cat((token_pos, clip_pos[None]), 1)
    keep = torch.ones(1, x.shape[1], dtype=torch.bool)
    for layer in moment_encoder.layers:
        x = layer(x, pos, keep)
    return x[0]


def test_moment_encoder_attends_the_moment_and_the_non_moment_clips_apart(model, trained_encoding, inputs):
    """Moment token of sample b = the token run over the moment clips only; non-moment token = over the other
    real clips only; each clip's frame output comes from the pass of its own kind."""
    trained, targets = trained_encoding
    vmask = inputs[1]
    moment_encoder = model.sg_detr.moment_encoder
    with torch.no_grad():
        for b in range(len(LENGTHS)):
            video, pos = trained.video_embeds[b], trained.position_embeddings[b]
            moment = targets.moment_mask[b]
            nonmoment = vmask[b] & ~moment
            assert moment.any() and nonmoment.any()
            on_moment = _moment_encoder_on(moment_encoder, video[moment], pos[moment])
            on_rest = _moment_encoder_on(moment_encoder, video[nonmoment], pos[nonmoment])
            _assert_close(trained.moment_tokens[b], on_moment[0], "moment token")
            _assert_close(trained.nonmoment_tokens[b], on_rest[0], "non-moment token")
            _assert_far(on_moment[0], on_rest[0], "moment vs non-moment token")
            frames = trained.moment_frame_outputs[b]
            _assert_close(frames[moment], on_moment[1:], "frames of moment clips")
            _assert_close(frames[nonmoment], on_rest[1:], "frames of non-moment clips")


def test_moment_encoder_with_two_layers_keeps_the_passes_apart_in_every_layer(
    model, trained_encoding, inputs
):
    """With more than one layer the passes part at the first (the last computes only the rows read): tokens and
    frames still equal each pass run alone through both layers."""
    trained, targets = trained_encoding
    vmask = inputs[1]
    moment_encoder = copy.deepcopy(model.sg_detr.moment_encoder)
    second = copy.deepcopy(moment_encoder.layers[0])
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4)))
    moment_encoder.layers.append(second)
    with torch.no_grad():
        tokens, other_tokens, frames = moment_encoder(
            trained.video_embeds, trained.position_embeddings, vmask, targets.moment_mask
        )
        one_layer = model.sg_detr.moment_encoder(
            trained.video_embeds, trained.position_embeddings, vmask, targets.moment_mask
        )
        for b in range(len(LENGTHS)):
            video, pos = trained.video_embeds[b], trained.position_embeddings[b]
            moment = targets.moment_mask[b]
            nonmoment = vmask[b] & ~moment
            on_moment = _moment_encoder_on(moment_encoder, video[moment], pos[moment])
            on_rest = _moment_encoder_on(moment_encoder, video[nonmoment], pos[nonmoment])
            _assert_close(tokens[b], on_moment[0], "moment token, 2 layers")
            _assert_close(other_tokens[b], on_rest[0], "non-moment token, 2 layers")
            _assert_close(frames[b][moment], on_moment[1:], "frames of moment clips, 2 layers")
            _assert_close(frames[b][nonmoment], on_rest[1:], "frames of non-moment clips, 2 layers")
    _assert_far(tokens, one_layer[0], "2 layers vs 1")


# --------------------------------------------------------------------------------------------- §3.5
def test_query_selector_takes_the_highest_scoring_proposals(model):
    """DINO selection: the K valid pyramid positions of highest moment probability, best first; each
    proposal = sigmoid(span_head(z) + sigmoid^-1(anchor)), z = LN(proj(feature))."""
    selector = model.detector.selector
    lengths = torch.tensor([30, 20])
    anchors, anchor_mask, _ = make_anchors(
        lengths, 30, model.config.pyramid_strides, model.config.anchor_scale
    )
    features = torch.randn(
        2, anchors.shape[1], model.config.hidden_size, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        proposals, index, content = selector(features, anchors, anchor_mask)
        z = selector.norm(selector.proj(features)) * anchor_mask[..., None]
        logits = selector.class_head(z)
        spans = torch.sigmoid(selector.span_head(z) + inverse_sigmoid(clamp_spans_cw(anchors)))
    score = logits.softmax(-1)[..., 0].masked_fill(~anchor_mask, -math.inf)
    top_score, top_index = score.topk(model.config.num_queries, dim=1)
    assert torch.isfinite(top_score).all()  # more valid candidates than queries
    assert index.tolist() == top_index.tolist()
    gather = top_index[..., None].expand(-1, -1, 2)
    _assert_close(proposals.logits, logits.gather(1, gather), "selected logits")
    _assert_close(proposals.spans, spans.gather(1, gather), "selected proposals")
    _assert_close(content, selector.content.weight[None].expand(2, -1, -1), "content queries")
    lowest = score.masked_fill(~anchor_mask, math.inf).topk(model.config.num_queries, dim=1, largest=False)
    assert set(lowest.indices[0].tolist()) != set(top_index[0].tolist())


def test_decoder_primary_references_are_the_selected_proposals(model, inputs):
    """The decoder's primary queries start from the selector's proposals and its learned content."""
    with torch.no_grad(), capture(model.detector.decoder, inputs=True) as calls:
        out = model(*inputs)
    references = _call_argument(model.detector.decoder, calls[0], "references")
    content = _call_argument(model.detector.decoder, calls[0], "content")
    selector = out.detector_outputs.selector
    _assert_close(references, selector.spans, "decoder references")
    _assert_close(content, model.detector.selector.content.weight[None].expand_as(content), "decoder content")


def test_atss_positive_queries_are_built_from_their_anchor():
    """Co-DETR queries: every positive anchor becomes a query whose reference is the (clipped) anchor, whose
    content is position_proj(sine(reference)) + feature_proj(pyramid feature at that anchor) and whose target
    is its assigned window; the batch is padded with negative anchors of the same video (no-object)."""
    d = 8
    # one level, six distinct anchors; the first one reaches past the video start (clipped reference)
    anchors = torch.tensor([[[0.05, 0.2], [0.2, 0.15], [0.35, 0.2], [0.5, 0.1], [0.7, 0.3], [0.9, 0.1]]] * 2)
    anchor_mask = torch.ones(2, 6, dtype=torch.bool)
    positive = torch.tensor(
        [[True, False, True, False, False, True], [False, False, False, True, False, False]]
    )
    target_spans = torch.rand(2, 6, 2, generator=torch.Generator().manual_seed(2)) * positive[..., None]
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 6, d, generator=generator)
    torch.manual_seed(6)
    position_proj, feature_proj = torch.nn.Linear(d, d), torch.nn.Linear(d, d)
    with torch.no_grad():
        group = build_atss_positive_group(
            {"is_positive": positive, "target_spans": target_spans}, anchors, anchor_mask,
            torch.zeros(6, dtype=torch.long), torch.tensor([1.0, 2.0]), features, position_proj, feature_proj,
            d, 10000.0, 100,
        )  # fmt: skip
    clipped = clamp_spans_cw(anchors)
    assert group.is_positive.sum(1).tolist() == [3, 1] and group.valid.all()
    for b in range(2):
        chosen = []
        for q in range(group.references.shape[1]):
            anchor = int((clipped[b] - group.references[b, q]).abs().sum(-1).argmin())
            _assert_close(group.references[b, q], clipped[b, anchor], "reference")
            chosen.append(anchor)
            expected = position_proj(sine_embed_spans_cw(clipped[b, anchor], d)) + feature_proj(
                features[b, anchor]
            )
            _assert_close(group.content[b, q], expected.detach(), f"content of query {q}")
            assert bool(group.is_positive[b, q]) == bool(positive[b, anchor])
            _assert_close(group.target_spans[b, q], target_spans[b, anchor], "target")
        assert set(positive[b].nonzero().flatten().tolist()) <= set(chosen)
    _assert_far(clipped[0, 0], anchors[0, 0], "clipped vs raw anchor")


# Two levels of explicit anchors (their placement is the caller's, see make_anchors), ATSS topk 3.
# Level 0: 8 anchors, centres (j + 0.5) / 8, width 0.25. Level 1: 4 anchors, centres (2j + 1) / 8, width 0.5.
_ATSS_CENTERS = [(j + 0.5) / 8 for j in range(8)] + [(2 * j + 1) / 8 for j in range(4)]
_ATSS_WIDTHS = [0.25] * 8 + [0.5] * 4


@pytest.mark.parametrize(
    ("gts_se", "positives"),
    [
        # GT 0 = [0, 0.625]: candidates L0 {2, 1, 3} (IoU 0.4 each), L1 {9 (0.8), 8 (0.6), 10 (0.2857)};
        # mean 0.4810 + std 0.1864 = 0.6674 -> anchor 9. GT 1 = [0.125, 0.5625]: L0 {2, 3 (0.5714), 1 (0.375)},
        # L1 {9 (0.875), 8 (0.4444), 10 (0.25)}; 0.5146 + 0.2148 = 0.7294 -> anchor 9. Anchor 9 goes to the
        # GT it overlaps most: GT 1. Centerness of anchor 9 (centre 0.375) in GT 1: sqrt(0.1875 / 0.25).
        ([(0.0, 0.625), (0.125, 0.5625)], {9: (1, math.sqrt(0.75))}),
        # GT 0 = [0.8125, 0.9375]: candidates L0 {6 (0.5), 7 (0.6667), 5 (0)}, L1 {11 (0.3333), 10 (0.1111),
        # 9 (0)}; threshold 0.2685 + 0.2776 = 0.5461, but anchor 7's centre 0.9375 is GT 0's end (not strictly
        # inside) -> no positive. GT 1 = [0.875, 1]: L0 {7 (0.6667), 6 (0.2), 5 (0)}, L1 {11 (0.3333), 10, 9
        # (0)}; 0.2 + 0.2667 = 0.4667 -> anchor 7 (centre inside). GT 0's fallback, its best candidate 7, is
        # already GT 1's: GT 0 stays without positives. Centerness of anchor 7 in GT 1: 1.
        ([(0.8125, 0.9375), (0.875, 1.0)], {7: (1, 1.0)}),
    ],
)
def test_atss_assignment_by_hand(gts_se, positives):
    """1-D ATSS: candidates = the topk closest centres per level, threshold = mean + unbiased std of their
    IoUs (with the anchor clipped to the video), positive = IoU >= threshold and centre strictly inside; an
    anchor of several GTs keeps the one of highest IoU; centerness target sqrt(min(l, r) / max(l, r))."""
    anchors = torch.tensor([list(zip(_ATSS_CENTERS, _ATSS_WIDTHS))])
    gts = torch.tensor([[[(s + e) / 2, e - s] for s, e in gts_se]])
    out = assign_atss(
        anchors, torch.ones(1, 12, dtype=torch.bool), [8, 4], gts,
        torch.ones(1, len(gts_se), dtype=torch.bool), topk=3,
    )  # fmt: skip
    expected_gt, expected_centerness = [-1] * 12, torch.zeros(12)
    for anchor, (gt, centerness) in positives.items():
        expected_gt[anchor], expected_centerness[anchor] = gt, centerness
        _assert_close(out["target_spans"][0, anchor], gts[0, gt], f"target of anchor {anchor}")
    assert out["assigned_gt"][0].tolist() == expected_gt
    _assert_close(out["centerness_targets"][0], expected_centerness, "centerness targets")


# --------------------------------------------------------------------------------------------- §3.6
def test_eq10_detection_score(model, inputs):
    """S_det = p^alpha * IoU_hat^(1 - alpha) of the last decoder layer, p = softmax probability of the moment
    class (class 0), IoU_hat = sigmoid(IoU logit); alpha = 0.25 here so that swapping the exponents shows."""
    with torch.no_grad():
        out = model(*inputs)
    decoder = out.detector_outputs.decoder
    p = decoder.logits[:, -1].softmax(-1)[..., 0]
    iou = torch.sigmoid(decoder.iou_logits[:, -1])
    expected = p.pow(0.25) * iou.pow(0.75)
    _assert_close(out.det_scores, expected, "eq. 10")
    _assert_far(expected, p.pow(0.75) * iou.pow(0.25), "eq. 10 with the exponents swapped")
    _assert_far(p, iou, "p vs IoU_hat")
    first_layer = decoder.logits[:, 0].softmax(-1)[..., 0].pow(0.25) * torch.sigmoid(
        decoder.iou_logits[:, 0]
    ).pow(0.75)
    _assert_far(expected, first_layer, "last vs first decoder layer")


# --------------------------------------------------------------------------------------------- post-processing (§3.5, §4.4)
def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _fusion_outputs(atss_probs, atss_centerness, atss_spans, detr_spans=((0.5, 0.2),), detr_scores=(0.8,)):
    """Hand-made model outputs of one query over 10 clips (T_b = 20 s)."""
    return {
        "pred_spans": torch.tensor([list(detr_spans)]),
        "det_scores": torch.tensor([list(detr_scores)]),
        "atss_spans": torch.tensor([list(atss_spans)]),
        "atss_logits": torch.tensor([[_logit(p) for p in atss_probs]]),
        "atss_centerness": torch.tensor([[_logit(c) for c in atss_centerness]]),
        "anchor_mask": torch.ones(1, len(atss_probs), dtype=torch.bool),
        "video_mask": torch.ones(1, 10, dtype=torch.bool),
        "global_saliency": torch.zeros(1, 10),
    }


def _windows(outputs, **kwargs):
    windows = post_process_moment_retrieval(outputs, [20.0], **kwargs)[0]["pred_relevant_windows"]
    return [[round(v, 4) for v in w] for w in windows]


def test_atss_candidates_score_then_nms_then_top_k():
    """ATSS candidates: score sqrt(sigmoid(cls) * sigmoid(ctr)), top-pre -> 1-D NMS -> top-post (in that
    order: NMS first, then the post-NMS cut)."""
    probs = [0.9, 0.8, 0.9, 0.5, 0.64]
    centerness = [0.9, 0.8, 0.4, 0.5, 0.25]  # scores 0.9, 0.8, 0.6, 0.5, 0.4
    spans = [(0.5, 0.2), (0.51, 0.2), (0.49, 0.2), (0.1, 0.1), (0.85, 0.1)]  # 0-2 overlap (IoU > 0.6)
    got = _windows(_fusion_outputs(probs, centerness, spans), fusion_mode="atss", atss_post_nms_topk=2)
    assert got == [[8.0, 12.0, 0.9], [1.0, 3.0, 0.5]]


def test_fusion_weights_follow_their_head():
    """WBF of [DETR; ATSS] with weights (3, 1): a cluster's confidence is the mean of its members' weighted
    scores x min(2, size) / 4, its span the weighted-score mean of their endpoints.

    DETR [0.4, 0.6] score 0.8 (weighted 2.4) + ATSS [0.42, 0.62] score 0.4 (weighted 0.4):
    conf 1.4 * 2 / 4 = 0.7, start (2.4 * 0.4 + 0.4 * 0.42) / 2.8 = 0.402857 -> 8.0571 s, end 12.0571 s.
    DETR [0.05, 0.15] score 0.5 alone: 1.5 / 4 = 0.375. ATSS [0.8, 0.9] score 0.6 alone: 0.6 / 4 = 0.15.
    """
    outputs = _fusion_outputs(
        atss_probs=[0.4, 0.6], atss_centerness=[0.4, 0.6], atss_spans=[(0.52, 0.2), (0.85, 0.1)],
        detr_spans=[(0.5, 0.2), (0.1, 0.1)], detr_scores=[0.8, 0.5],
    )  # fmt: skip
    got = _windows(outputs, wbf_weights=(3.0, 1.0))
    assert got == [[8.0571, 12.0571, 0.7], [1.0, 3.0, 0.375], [16.0, 18.0, 0.15]]


# --------------------------------------------------------------------------------------------- §3.7, eq. 11 wiring
def test_highlight_losses_pair_each_saliency_with_its_own_negative_pass(model, inputs):
    """hl_*_local reads (S_local, S_local of the negative pairs), hl_*_global (S_global, its negatives):
    the BCE terms recomputed from the model's own saliencies."""
    video, vmask, text, tmask = inputs
    with torch.no_grad():
        out = model(video, vmask, text, tmask, labels=_labels())
    enc, loss = out.encoder_outputs, out.loss_dict
    relevant = torch.tensor([s + [0] * (NUM_CLIPS - len(s)) for s in SALIENCY]) > 0
    for which in ("local", "global"):
        scores, negatives = enc[f"{which}_saliency"], enc[f"neg_{which}_saliency"]
        bce_pos = F.binary_cross_entropy_with_logits(scores[vmask], relevant[vmask].float())
        bce_neg = sum(-torch.log(1 - torch.sigmoid(negatives[b, vmask[b]])).sum() for b in range(3)) / 3
        assert loss[f"hl_bce_pos_{which}"].item() == pytest.approx(bce_pos.item(), rel=1e-5)
        assert loss[f"hl_bce_neg_{which}"].item() == pytest.approx(bce_neg.item(), rel=1e-5)
    assert loss["hl_bce_neg_local"].item() != pytest.approx(loss["hl_bce_neg_global"].item(), rel=1e-2)

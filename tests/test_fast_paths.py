"""The speed-motivated forms of the detector's blocks equal their plain definitions (issue: speed).

Each test computes a block the straightforward way (per level, per sample, with ``F.conv1d`` /
``F.group_norm`` on the valid positions only) from the module's own, randomised weights and compares it
with the fast form the model runs: the convolutions as matmuls over unfolded windows, the ATSS head's levels
packed into one pass, the per-level GroupNorm statistics, the selector's span head on its selections only,
the projections of a repeated sample once, the decoder on the query
slots a loss reads only, PReLU's CPU backward; and the CPU dropout's mask keeps the distribution. Some
forms are also compiled (Inductor), where torch 2.13 miscompiled earlier versions of them.
"""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sgdetr_hf import SGDetrConfig, detector_sgdetr
from sgdetr_hf.detector_sgdetr import (
    SGDetrATSSHead,
    SGDetrDecoder,
    SGDetrPyramidNeck,
    SGDetrQuerySelector,
    build_self_attention_blocked,
    make_anchors,
)
from sgdetr_hf.layers_sgdetr import (
    SGDetrAttention,
    SGDetrMLP,
    SGDetrPReLU,
    apply_dropout,
    attend,
    conv1d_channels_last,
    conv1d_on_rows,
    masked_group_norm,
    project_each,
    repeats_one_sample,
)
from sgdetr_hf.spans import clamp_spans_cw, inverse_sigmoid
from sgdetr_testing import SGDetrModelTester

CONFIG = SGDetrConfig(hidden_size=16, num_attention_heads=2, ffn_dim=32, group_norm_groups=4, num_queries=5)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (the ATSS head starts at N(0, 0.01) with unit scales)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module


@pytest.mark.parametrize("stride, length", [(1, 7), (2, 7), (2, 8), (1, 1)])
def test_conv1d_channels_last_is_conv1d(stride, length):
    conv = torch.nn.Conv1d(6, 5, 3, stride=stride, padding=1)
    x = torch.randn(3, length, 6)
    expected = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(conv1d_channels_last(x, conv.weight, conv.bias, stride), expected)


@pytest.mark.parametrize("out_channels", [(3,), (1, 2), (20,), (12, 8)])  # narrow one-GEMM and wide forms
@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_on_rows_convolves_each_zero_separated_sequence_alone(out_channels, bias):
    convs = [torch.nn.Conv1d(4, channels, 3, padding=1, bias=bias) for channels in out_channels]
    first, second = torch.randn(5, 4), torch.randn(2, 4)
    gap = torch.zeros(1, 4)
    out = conv1d_on_rows(
        torch.cat((gap, first, gap, second, gap)),
        [conv.weight for conv in convs],
        torch.cat([conv.bias for conv in convs]) if bias else None,
    )
    for rows, sequence in ((out[1:6], first), (out[7:9], second)):
        expected = torch.cat([conv(sequence.T[None])[0].T for conv in convs], 1)  # the outputs side by side
        torch.testing.assert_close(rows, expected)


def test_masked_group_norm_statistics_per_segment_and_valid_positions_only():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 9, 8), torch.randn(8), torch.randn(8)
    segments = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 2:4] = mask[1, 6] = False  # sample 1: segment 0 has 2 valid positions, segment 1 two
    out = masked_group_norm(x, mask, 4, weight, bias, 1e-5, segments, 3)
    for b in range(2):
        for segment in range(3):
            positions = ((segments == segment) & mask[b]).nonzero()[:, 0]
            expected = F.group_norm(x[b, positions].T[None], 4, weight, bias, 1e-5)[0].T
            torch.testing.assert_close(out[b, positions], expected)
    assert (out[~mask] == 0).all()


def _plain_atss_head(head: SGDetrATSSHead, feats, lengths):
    """The ATSS head level by level and sample by sample, on each level's valid positions only."""
    logits, deltas, centerness = [], [], []
    for level, x in enumerate(feats):
        level_logits, level_deltas, level_ctr = [], [], []
        for b in range(x.shape[0]):
            n = int(lengths[level][b])
            valid = x[b, :n].T[None]  # (1, d, n), zero padding at both ends as the convolutions pad
            towers = []
            for conv, norm in ((head.cls_conv, head.cls_norm), (head.reg_conv, head.reg_norm)):
                y = F.group_norm(conv(valid), norm.num_groups, norm.weight, norm.bias, norm.eps)
                towers.append(F.relu(y))
            cls, ctr, reg = head.cls_out(towers[0]), head.ctr_out(towers[1]), head.reg_out(towers[1])
            pad = x.shape[1] - n  # the padded positions are not compared
            level_logits.append(F.pad(cls[0, 0], (0, pad)))
            level_ctr.append(F.pad(ctr[0, 0], (0, pad)))
            level_deltas.append(F.pad(reg[0].T * head.scales[level], (0, 0, 0, pad)))
        logits.append(torch.stack(level_logits))
        deltas.append(torch.stack(level_deltas))
        centerness.append(torch.stack(level_ctr))
    return torch.cat(logits, 1), torch.cat(deltas, 1), torch.cat(centerness, 1)


def test_packed_atss_head_equals_the_head_run_level_by_level():
    torch.manual_seed(0)
    neck, head = _randomise(SGDetrPyramidNeck(CONFIG), 1), _randomise(SGDetrATSSHead(CONFIG), 2)
    video_lengths = torch.tensor([23, 9, 1])
    features = torch.randn(3, 23, 16)
    with torch.no_grad():
        feats, masks = neck(features, video_lengths)
        logits, deltas, centerness = head(feats, masks)
        expected = _plain_atss_head(head, feats, [m.sum(1) for m in masks])
    valid = torch.cat(masks, 1)
    for fast, plain in zip((logits, deltas, centerness), expected):
        torch.testing.assert_close(fast[valid], plain[valid], rtol=1e-5, atol=1e-5)


def test_pyramid_level_is_the_strided_convolution_of_the_previous_one_on_valid_positions():
    neck = _randomise(SGDetrPyramidNeck(CONFIG), 3)
    features = torch.randn(2, 11, 16)
    feats, masks = neck(features, torch.tensor([11, 5]))
    x = features[1, :5].T[None]  # the shorter video alone, unpadded
    for conv, norm, level in zip(neck.convs, neck.norms, feats[1:]):
        x = F.relu(F.group_norm(conv(x), norm.num_groups, norm.weight, norm.bias, norm.eps))
        torch.testing.assert_close(level[1, : x.shape[-1]], x[0].T, rtol=1e-5, atol=1e-5)
        assert (level[1, x.shape[-1] :] == 0).all()


@pytest.mark.slow
def test_pyramid_compiled_for_dynamic_lengths_equals_eager_down_to_a_one_position_level():
    """Regression: under ``torch.compile(dynamic=True)`` Inductor miscompiled the GroupNorm statistics of the
    coarsest level when its dynamic length is 1 at run time (L = 12: levels 12, 6, 3, 2, 1), off by hundreds."""
    neck = _randomise(SGDetrPyramidNeck(CONFIG)).eval()
    features = torch.randn(3, 12, 16, generator=torch.Generator().manual_seed(5))
    lengths = torch.tensor([12, 9, 1])
    torch._dynamo.reset()
    compiled = torch.compile(neck, dynamic=True)
    with torch.no_grad():
        (eager_levels, eager_masks), (levels, masks) = neck(features, lengths), compiled(features, lengths)
    assert [level.shape[1] for level in eager_levels] == [12, 6, 3, 2, 1]
    for level, eager_level, mask, eager_mask in zip(levels, eager_levels, masks, eager_masks):
        assert torch.equal(mask, eager_mask)
        torch.testing.assert_close(level, eager_level, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
# the wide form (three GEMMs, one per tap) and the narrow one (one GEMM over the three taps side by side)
@pytest.mark.parametrize("out_channels", [(16, 24), (1, 2, 1)])
def test_conv1d_on_rows_compiled_with_frozen_weights_in_the_cpp_gemm_template_equals_eager(out_channels):
    """Regression: Inductor's C++ GEMM template (torch 2.13, max-autotune with freezing) dropped the storage
    offset of a folded constant, so a tap sliced from one stacked ``(3, C_in, C_out)`` tensor of the taps was
    read as tap 0 (the ATSS head's logits off by 10%). The template is forced (not left to autotuning)."""
    from torch._inductor import config as inductor_config

    class Convolutions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList(torch.nn.Conv1d(16, c, 3, padding=1) for c in out_channels)

        def forward(self, rows):
            bias = torch.cat([conv.bias for conv in self.convs])
            return conv1d_on_rows(rows, [conv.weight for conv in self.convs], bias)

    module = _randomise(Convolutions(), 6).eval()
    rows = torch.randn(40, 16, generator=torch.Generator().manual_seed(7))
    rows[[0, 20, 39]] = 0  # two sequences, each with its zero padding
    torch._dynamo.reset()
    with (
        torch.no_grad(),
        inductor_config.patch(freezing=True, max_autotune=True, max_autotune_gemm_backends="CPP"),
    ):
        expected, actual = module(rows), torch.compile(module)(rows)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_selector_spans_are_the_span_head_of_the_selected_positions():
    selector = _randomise(SGDetrQuerySelector(CONFIG), 4)
    anchors, mask, _ = make_anchors(torch.tensor([12, 4]), 12, [1, 2, 4], 4.0)
    features = torch.randn(2, anchors.shape[1], 16)
    proposals, index, _ = selector(features, anchors, mask)
    z = selector.norm(selector.proj(features)) * mask[..., None]
    every_span = torch.sigmoid(selector.span_head(z) + inverse_sigmoid(clamp_spans_cw(anchors)))
    torch.testing.assert_close(proposals.spans, every_span.gather(1, index[..., None].expand(-1, -1, 2)))
    # the 5 best of the second video's 4 + 2 + 1 = 7 valid positions, ranked by moment probability
    probability = torch.softmax(selector.class_head(z), -1)[1, :, 0].masked_fill(~mask[1], -1)
    assert index[1].tolist() == probability.argsort(descending=True)[:5].tolist()


def test_project_each_equals_each_linear_alone():
    generator = torch.Generator().manual_seed(1)
    linears = [torch.nn.Linear(6, n) for n in (4, 3, 5)]
    for linear in linears:
        _randomise(linear, seed=linear.out_features)
    x = torch.randn(2, 7, 6, generator=generator)
    outputs = project_each(x, *linears)
    assert len(outputs) == 3
    for output, linear in zip(outputs, linears):
        torch.testing.assert_close(output, linear(x), rtol=1e-6, atol=1e-6)


def test_projections_of_a_repeated_sample_are_computed_once_and_equal_the_per_sample_ones():
    """The decoder's learned content queries reach its first layer as one sample ``expand``ed over the batch: the
    self-attention projections and the MLPs run on that sample (1/B of the FLOPs), with the values and gradients of the
    materialised batch."""
    linears = [_randomise(torch.nn.Linear(6, n), seed=n) for n in (4, 3)]
    mlp = _randomise(SGDetrMLP(6, 8, 2, 3))
    one = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(3), requires_grad=True)
    batch = 4
    repeated, materialised = one.expand(batch, -1, -1), one.expand(batch, -1, -1).contiguous()
    assert repeats_one_sample(repeated) and not repeats_one_sample(materialised)
    for function in (lambda x: project_each(x, *linears), lambda x: (mlp(x),)):
        with FlopCounterMode(display=False) as shared:
            fast = function(repeated)
        with FlopCounterMode(display=False) as plain:
            reference = function(materialised)
        assert shared.get_total_flops() * batch == plain.get_total_flops() > 0
        for output, expected in zip(fast, reference):
            assert output.shape == expected.shape
            torch.testing.assert_close(output, expected, rtol=1e-6, atol=1e-6)
        weights = [torch.randn(y.shape, generator=torch.Generator().manual_seed(4)) for y in reference]
        (fast_grad,) = torch.autograd.grad(sum((y * w).sum() for y, w in zip(fast, weights)), one)
        (plain_grad,) = torch.autograd.grad(sum((y * w).sum() for y, w in zip(reference, weights)), one)
        torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-5, atol=1e-6)


def test_decoder_on_the_needed_query_slots_equals_the_full_decoder_there():
    """Denoising slots padded to the batch's largest number of windows are blocked as keys and read by no loss:
    the decoder runs its row-wise blocks on the needed slots alone (fewer FLOPs), and those slots get the
    values and gradients of the decoder run on every slot."""
    config = SGDetrConfig(**{**CONFIG.to_dict(), "dropout": 0.0})
    decoder = _randomise(SGDetrDecoder(config)).eval()
    generator = torch.Generator().manual_seed(5)
    batch, num_queries, length, d = 3, 8, 6, config.hidden_size
    group_ids = torch.tensor([0, 0, 0, 0, -1, -1, -1, -1])  # a denoising group of 4 slots, 4 primary queries
    valid = torch.ones(batch, num_queries, dtype=torch.bool)
    valid[0, 2:4] = False  # samples with fewer windows than the batch's largest number
    valid[2, 1:4] = False
    blocked = build_self_attention_blocked(group_ids, valid)
    content = torch.randn(batch, num_queries, d, generator=generator, requires_grad=True)
    references = torch.rand(batch, num_queries, 2, generator=generator) * 0.5 + 0.25
    memory = torch.randn(batch, length, d, generator=generator, requires_grad=True)
    memory_pos = torch.randn(batch, length, d, generator=generator)
    memory_mask = torch.arange(length)[None] < torch.tensor([6, 4, 5])[:, None]

    def run(needed):
        with FlopCounterMode(display=False) as flops:
            out = decoder(content, references, memory, memory_pos, memory_mask, blocked, needed)
        return out, flops.get_total_flops()

    (full, full_flops), (packed, packed_flops) = run(None), run(valid)
    assert packed_flops < full_flops * 0.92  # 5 of 24 slots skipped in every row-wise block
    read = valid[:, None].expand(-1, full.logits.shape[1], -1)  # (B, layers, Q)
    for name in ("logits", "spans", "iou_logits"):
        fast, plain = getattr(packed, name), getattr(full, name)
        assert fast.shape == plain.shape
        torch.testing.assert_close(fast[read], plain[read], rtol=1e-5, atol=1e-6)
    assert (packed.logits[~read] == 0).all() and (packed.spans[~read] == 0.5).all()
    weights = torch.randn(full.spans.shape, generator=generator)

    def grads(out):
        loss = ((out.spans * weights).sum(-1) + out.logits[..., 0] + out.iou_logits)[read].sum()
        return torch.autograd.grad(loss, [content, memory, *decoder.parameters()])

    packed_grads = grads(packed)
    for fast, plain in zip(packed_grads, grads(full)):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)
    assert packed_grads[0][~valid].abs().max() == 0  # the skipped slots take no part


def test_training_loss_and_gradients_do_not_change_when_unread_query_slots_are_skipped(monkeypatch):
    """The whole model: a batch with 1, 3 and no windows (the second's denoising slots are the others' padding;
    the ATSS-positive queries of the video without windows enter no loss) gives the loss terms and gradients of
    the decoder run on every slot."""
    tester = SGDetrModelTester(dropout=0.0, input_dropout=0.0)
    model = tester.create_model(seed=3)
    inputs = tester.prepare_inputs([12, 9, 12], 12, [5, 3, 4], 5)
    labels = [
        {"spans": torch.tensor([[0.5, 0.3]]), "saliency_scores": torch.arange(12.0) % 5},
        {"spans": torch.tensor([[0.2, 0.2], [0.5, 0.2], [0.8, 0.2]]), "saliency_scores": torch.ones(9)},
        {"spans": torch.zeros(0, 2), "saliency_scores": torch.arange(12.0) % 3},
    ]

    def run():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the saliency pairs are drawn
        out = model(*inputs, labels=labels)
        out.loss.backward()
        return out.loss_dict, {name: p.grad.clone() for name, p in model.named_parameters()}

    skipped = []
    needed_queries = detector_sgdetr._needed_queries

    def recorded(group, has_windows):
        needed = needed_queries(group, has_windows)
        skipped.append(int((~needed).sum()))
        return needed

    monkeypatch.setattr(detector_sgdetr, "_needed_queries", recorded)
    packed_terms, packed_grads = run()
    assert sum(skipped) >= 2 * 2 * 8 + 2  # denoising padding of samples 1 and 3; the last one's ATSS queries
    monkeypatch.setattr(detector_sgdetr, "_needed_queries", lambda group, _: torch.ones_like(group.valid))
    full_terms, full_grads = run()
    assert packed_terms.keys() == full_terms.keys()
    for name in full_terms:
        torch.testing.assert_close(packed_terms[name], full_terms[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in full_grads:
        torch.testing.assert_close(packed_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_eager_attention_values_and_gradients_equal_sdpa():
    """The eager kernel (scale on the queries, the key mask as an added -inf bias) against PyTorch's SDPA, forward
    and backward, with a padded key in one sample and a blocked query-key pair in the other. The tolerance is relative to the
    largest value compared (the key bias's gradient is zero in exact arithmetic, float32 noise in both)."""
    config = SGDetrConfig(hidden_size=16, num_attention_heads=2, ffn_dim=32, group_norm_groups=4, dropout=0.0)
    generator = torch.Generator().manual_seed(4)
    x, text = torch.randn(2, 5, 16, generator=generator), torch.randn(2, 4, 16, generator=generator)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    blocked = torch.zeros(2, 1, 5, 4, dtype=torch.bool)
    blocked[1, 0, 2, 0] = True
    results = {}
    for implementation in ("sdpa", "eager"):
        config._attn_implementation = implementation
        attention = _randomise(SGDetrAttention(config)).train()
        inputs = x.clone().requires_grad_(), text.clone().requires_grad_()
        out = attention(inputs[0], inputs[1], inputs[1], mask, blocked=blocked)
        out.square().sum().backward()
        results[implementation] = [out, *(t.grad for t in inputs), *(p.grad for p in attention.parameters())]
    scale = max(t.abs().max().item() for t in results["sdpa"])
    for sdpa, eager in zip(results["sdpa"], results["eager"], strict=True):
        torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_with_a_position_bias_equals_attention_over_the_concatenated_dims(implementation):
    """The decoder's cross-attention gives conditional DETR's positional score, ``q_sine . k_pos``, as a score
    bias: ``attend(q, k, v, position_bias=(q_sine * s) k_pos^T, scaling=s)`` must equal attention over the
    concatenated ``[q; q_sine]`` / ``[k; k_pos]`` heads with the scale of their doubled dims, forward and
    backward through every input, with a padded key in one sample (both backends, through ``attend``)."""
    config = SGDetrConfig(hidden_size=16, num_attention_heads=2, ffn_dim=32, group_norm_groups=4, dropout=0.0)
    config._attn_implementation = implementation
    module = SGDetrAttention(config)
    generator = torch.Generator().manual_seed(5)
    q, q_sine = (torch.randn(2, 2, 3, 8, generator=generator) for _ in range(2))
    k, k_pos, v = (torch.randn(2, 2, 4, 8, generator=generator) for _ in range(3))
    blocked = torch.zeros(2, 1, 1, 4, dtype=torch.bool)
    blocked[1, ..., 3] = True
    scaling = 16**-0.5
    results = []
    for by_bias in (True, False):
        inputs = [t.clone().requires_grad_() for t in (q, q_sine, k, k_pos, v)]
        qi, si, ki, pi, vi = inputs
        if by_bias:
            out = attend(
                module, qi, ki, vi, blocked, torch.matmul(si * scaling, pi.transpose(-1, -2)), scaling
            )
        else:
            out = F.scaled_dot_product_attention(
                torch.cat((qi, si), -1), torch.cat((ki, pi), -1), vi, attn_mask=~blocked, scale=scaling
            )
        out.square().sum().backward()
        results.append([out, *(t.grad for t in inputs)])
    for by_bias, concatenated in zip(*results, strict=True):
        torch.testing.assert_close(by_bias, concatenated, rtol=1e-5, atol=1e-5)
    assert results[0][1].abs().sum() > 0 and results[0][4].abs().sum() > 0  # the bias carries q_sine, k_pos


def test_cpu_dropout_keeps_each_element_with_probability_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = apply_dropout(x, 0.3, training=True)
    kept = y != 0
    # 1e6 Bernoulli(0.7) draws: the kept share is within 5 standard deviations (one is 0.00046) of 0.7
    assert abs(kept.float().mean().item() - 0.7) < 5 * (0.7 * 0.3 / 1e6) ** 0.5
    # the drop rate is p rounded to 16 bits, 19661 / 2**16, and the kept elements are scaled by its inverse
    keep_rate = 1 - 19661 / 2**16
    # to float32 rounding: the nominal 1 / 0.7 is 4e-6 (relative) off, inside assert_close's default tolerance
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / keep_rate), rtol=1e-7, atol=0)
    y.sum().backward()
    # the gradient passes through the kept elements only
    torch.testing.assert_close(x.grad, kept.float() / keep_rate, rtol=1e-7, atol=0)
    # neighbouring elements (four share one 64-bit word) are independent: the kept pairs are 0.49 of all
    # pairs, not 0.7 (copies) or 0; so are elements a word apart
    for gap in (1, 2, 3, 4):
        pairs = (kept[:-gap] & kept[gap:]).float().mean().item()
        assert abs(pairs - 0.49) < 0.005, gap
    assert apply_dropout(x, 0.3, training=False) is x and apply_dropout(x, 0.0, training=True) is x
    assert (apply_dropout(x, 1.0, training=True) == 0).all()


def test_cpu_dropout_masks_follow_torch_seed_and_differ_between_calls():
    x = torch.ones(4, 1000)
    torch.manual_seed(5)
    first, second = apply_dropout(x, 0.1, training=True), apply_dropout(x, 0.1, training=True)
    torch.manual_seed(5)
    torch.testing.assert_close(apply_dropout(x, 0.1, training=True), first)
    assert not torch.equal(first, second)
    assert first.shape == x.shape and apply_dropout(torch.ones(0, 3), 0.1, training=True).shape == (0, 3)


@pytest.mark.parametrize("p, dtype", [(0.001, torch.float32), (0.3, torch.bfloat16)])
def test_cpu_dropout_outside_its_fast_path_is_f_dropout(p, dtype):
    """A rate below 1/128 (16-bit rounding would move it by more than 0.1% of itself) and bfloat16 (a rounded
    scale would bias the expectation) take ``F.dropout`` itself: the same mask and scale for the same seed."""
    x = torch.ones(100_000, dtype=dtype)
    torch.manual_seed(1)
    ours = apply_dropout(x, p, training=True)
    torch.manual_seed(1)
    torch.testing.assert_close(ours, F.dropout(x, p, training=True), rtol=0, atol=0)


@pytest.mark.parametrize("weight", [0.25, -0.5, 1.5])
def test_prelu_cpu_backward_equals_f_prelu(weight):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(6, 50, generator=generator)
    x[0, :5] = 0.0  # the kink: slope of the negative side, as F.prelu's backward
    grad = torch.randn(6, 50, generator=generator)
    module = SGDetrPReLU()
    with torch.no_grad():
        module.weight.fill_(weight)
    reference_weight = module.weight.detach().clone().requires_grad_()
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, reference = module(x_fast), F.prelu(x_ref, reference_weight)
    torch.testing.assert_close(fast, reference)
    fast.backward(grad)
    reference.backward(grad)
    torch.testing.assert_close(x_fast.grad, x_ref.grad)
    torch.testing.assert_close(module.weight.grad, reference_weight.grad)
    assert list(module.state_dict()) == ["weight"]


class _HostReads(TorchDispatchMode):
    """Records the Python functions (qualified names, innermost last) that call an aten op reading tensor
    values on the host: ``.item()`` / ``.tolist()`` / ``bool(t)`` and the data-dependent shapes (``nonzero``,
    indexing by a boolean mask)."""

    sync_ops = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique")
    # indexing by a boolean mask runs nonzero inside the kernel, out of this mode's sight
    indexing_ops = ("aten::index.Tensor", "aten::index_put", "aten::_index_put_impl_")

    def __init__(self):
        super().__init__()
        self.callers = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        by_mask = name.startswith(self.indexing_ops) and any(
            index is not None and index.dtype == torch.bool for index in args[1]
        )
        if name.startswith(self.sync_ops) or by_mask:
            frame, stack = sys._getframe(1), []
            while frame is not None:
                stack.append(frame.f_code.co_qualname)
                frame = frame.f_back
            self.callers.append(stack[::-1])
        return func(*args, **(kwargs or {}))


def test_inference_forward_synchronises_with_the_host_only_to_validate_its_inputs():
    """No ``.item()``, ``.tolist()`` or data-dependent shape in the inference forward (CUDA-graph- and
    ``torch.compile``-friendly): every aten op that reads a tensor's values on the host runs inside
    ``validate_inputs`` (skipped under ``torch.compile``), whose one read is there on purpose."""
    model = SGDetrModelTester().create_model().eval()
    inputs = SGDetrModelTester().prepare_inputs([12, 7], 12, [5, 3], 5)
    with torch.no_grad(), _HostReads() as reads:
        model(*inputs)
    assert reads.callers, "the input validation reads the inputs' values once"
    assert all("validate_inputs" in stack for stack in reads.callers), [s[-6:] for s in reads.callers]


def test_training_forward_reads_the_host_only_where_shapes_or_scipy_need_it():
    """The training forward with its loss reads tensor values on the host only to check its inputs and
    labels, to size the ATSS-positive group (the batch's most positives, when no global batch fixes it), to
    pack the decoder rows a loss reads (one ``nonzero``) and to hand the matching costs to scipy (one copy for
    every decoder layer and the selector). Not in the ATSS assignment (its level sizes are static), the
    denoising group or the choice of the rows. Dropout off and no gradient: the CPU dropout and PReLU fast paths read CPU values by design."""
    tester = SGDetrModelTester(dropout=0.0, input_dropout=0.0)
    model = tester.create_model().requires_grad_(False)
    batch, _ = tester.toy_batch(4)
    batch.pop("meta")
    with _HostReads() as reads:
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    allowed = {
        "validate_inputs": 1,
        "prepare_targets": 5,
        "build_atss_positive_group": 1,
        "SGDetrQueryRows.__init__": 1,
        "SGDetrHungarianMatcher.match_sets": 1,  # its finiteness check of the costs copied to the host
    }
    found = dict.fromkeys(allowed, 0)
    for stack in reads.callers:
        where = [name for name in allowed if name in stack]
        assert where, stack[-6:]
        found[where[0]] += 1
    assert found == allowed

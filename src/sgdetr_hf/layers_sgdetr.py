"""Building blocks shared by the SG-DETR encoder side (``modeling_sgdetr``) and the detector
(``detector_sgdetr``): the attention kernel dispatch (SDPA / eager), multi-head attention, MLPs, the
transformer feed-forward block and a padding-aware GroupNorm.

Mask convention inside this module: ``*_mask`` tensors are bool with True = valid; ``blocked`` tensors are
bool with True = the query must not attend that key. Shipped to the Hub as remote code (flat, relative
imports only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def eager_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    position_bias: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scaling + position_bias) v`` with the softmax in fp32, the ``"eager"`` entry of
    ``ALL_ATTENTION_FUNCTIONS``' interface: ``(B, H, Lq, dk)``, ``(B, H, Lk, dk)``, ``(B, H, Lk, dv)``, a bool
    ``attention_mask`` (True = may attend) and an optional float ``position_bias`` broadcastable to
    ``(B, H, Lq, Lk)`` (as the SDPA entry takes it) -> ``(B, Lq, H, dv)`` and the ``(B, H, Lq, Lk)`` weights."""
    # the scale on the queries (smaller than the scores), the mask as an added -inf bias in place (its backward
    # passes the gradient on as it is, where masked_fill's would zero it in another pass)
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    if position_bias is not None:
        scores = scores.add_(position_bias)
    if attention_mask is not None:
        bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
        scores = scores.add_(bias.masked_fill_(~attention_mask, float("-inf")))
    weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    weights = apply_dropout(weights, dropout, training=dropout > 0)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def apply_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)`` with the keep mask drawn faster on CPU.

    PyTorch's CPU generator draws one variate at a time, under a lock (``bernoulli_`` about 7 ns per element,
    ``random_`` about 4 ns: a tenth of a CPU training step). Here a seed drawn from torch's global generator
    (so ``torch.manual_seed`` and the trainer's saved RNG states still fix every mask) starts numpy's PCG64,
    whose 64-bit words give four 16-bit integers each, about six times faster; an element is dropped when its
    integer falls in the lowest ``round(p * 2**16)`` of the ``2**16`` values, and the kept ones are scaled by
    ``1 / (1 - p')`` with ``p'`` that rounded rate, so the expectation stays exactly ``x``. ``p'`` is within
    ``2**-17`` of ``p``; the fast path is used for ``1/128 <= p <= 127/128`` (``p`` off by at most 0.1% of
    itself), on float32 (a low-precision scale would bias the expectation); ``F.dropout`` for the rest, on
    other devices (CUDA draws in parallel) and under ``torch.compile`` (Inductor has its own generator)."""
    if not training or p == 0.0:
        return x
    fast = x.device.type == "cpu" and x.dtype == torch.float32 and 1 / 128 <= p <= 127 / 128 and x.numel() > 0
    if not fast or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    dropped_values = round(p * 2**16)
    seed = int(torch.randint(2**63 - 1, (), dtype=torch.int64))
    words = np.random.PCG64(seed).random_raw(-(-x.numel() // 4))  # 4 x 16 bits per word
    bits = torch.from_numpy(words).view(torch.int16)[: x.numel()].view(x.shape)  # uniform on [-2**15, 2**15)
    keep = torch.empty(x.shape, dtype=x.dtype)
    torch.ge(bits, dropped_values - 2**15, out=keep)  # straight into x's dtype: one pass, no bool mask
    return x * keep.mul_(2**16 / (2**16 - dropped_values))


class SGDetrDropout(nn.Dropout):
    """``nn.Dropout`` through :func:`apply_dropout` (the faster CPU mask)."""

    def forward(self, x: Tensor) -> Tensor:
        return apply_dropout(x, self.p, self.training)


def attend(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    blocked: Tensor | None,
    position_bias: Tensor | None = None,
    scaling: float | None = None,
) -> Tensor:
    """Scaled dot-product attention on split heads through the backend of ``module.config._attn_implementation``
    (transformers' ``ALL_ATTENTION_FUNCTIONS``: SDPA by default, eager on request).

    Args:
        module: the calling attention module (has ``config`` and ``training``; its dropout is ``config.dropout``).
        query ``(B, H, Lq, dk)``, key ``(B, H, Lk, dk)``, value ``(B, H, Lk, dv)``.
        blocked: bool, broadcastable to ``(B, H, Lq, Lk)``, True = masked out. Every query row must keep at
            least one key (callers guarantee it), so no row is all ``-inf``.
        position_bias: float, broadcastable to ``(B, H, Lq, Lk)``, added to the scaled scores (both backends
            of this model, SDPA and eager, take it).
        scaling: the scale of ``q k^T``; default ``dk ** -0.5``.
    Returns:
        ``(B, H, Lq, dv)``.
    """
    dropout = module.config.dropout if module.training else 0.0
    if dropout > 0 and query.device.type == "cpu" and not torch.compiler.is_compiling():
        # on CPU, SDPA with dropout runs its math path with bernoulli_: the eager path, same arithmetic, draws
        # the mask faster (apply_dropout)
        interface = eager_attention_forward
    else:
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            module.config._attn_implementation, eager_attention_forward
        )
    output, _ = interface(
        module,
        query,
        key,
        value,
        None if blocked is None else ~blocked,
        dropout=dropout,
        scaling=query.shape[-1] ** -0.5 if scaling is None else scaling,
        is_causal=False,  # SDPA would otherwise make an unmasked self-attention causal
        position_bias=position_bias,
    )
    return output.transpose(1, 2)


def repeats_one_sample(x: Tensor) -> bool:
    """Whether the batch dimension of ``(B, L, C)`` ``x`` is an ``expand`` of one sample (the decoder's learned
    content queries at inference): a row-wise function of it is then computed on that sample and expanded,
    not once per sample (``matmul`` cannot flatten a zero-stride batch either, and takes a batched GEMM)."""
    return x.dim() == 3 and x.shape[0] > 1 and x.stride(0) == 0


def project_each(x: Tensor, *linears: nn.Linear) -> tuple[Tensor, ...]:
    """``tuple(linear(x) for linear in linears)``, run on one sample and expanded when ``x`` repeats one
    (:func:`repeats_one_sample`). Separate GEMMs, not one over the concatenated weights: that concatenation
    copies the weights on every forward, which cost more than the GEMM launches it saves at batch 1 and gained
    nothing at batch 32 or in training (docs/speed/README.md, the ninth step)."""
    if repeats_one_sample(x):
        return tuple(y.expand(x.shape[0], -1, -1) for y in project_each(x[:1], *linears))
    return tuple(linear(x) for linear in linears)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """``(B, L, H*d)`` -> ``(B, H, L, d)``."""
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, L, d)`` -> ``(B, L, H*d)``."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


class SGDetrAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (256 -> 256, with bias).

    ``gate`` (``(B, Lq)``), when given, scales each query's attended values before the output projection:
    ``W_O concat_h(gate_i * sum_j A^h_ij V^h_j) + b_O``. This is the saliency-guided cross-attention of
    eq. 3-4 (§3.3); with ``gate=None`` it is standard attention.
    """

    def __init__(self, config, dim: int | None = None):
        super().__init__()
        dim = dim or config.hidden_size
        self.config = config
        self.num_heads = config.num_attention_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_mask: Tensor | None = None,
        gate: Tensor | None = None,
        blocked: Tensor | None = None,
    ) -> Tensor:
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if key_mask is not None:
            key_blocked = ~key_mask[:, None, None, :]
            blocked = key_blocked if blocked is None else (blocked | key_blocked)
        out = merge_heads(attend(self, q, k, v, blocked))
        if gate is not None:
            out = out * gate[..., None].to(out.dtype)
        return self.out_proj(out)


class SGDetrZeroInitLinear(nn.Linear):
    """A linear layer the model initialises to zero: a head whose output starts at 0 (the span heads, whose
    predictions then start at their references, and eq. 8's global-saliency head, so ``S_global = S_local``)."""


class SGDetrQueryEmbedding(nn.Embedding):
    """Learned query content or denoising label embeddings, initialised N(0, 1) as in DINO."""


class SGDetrMLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between; ``zero_init_last=True`` makes the last one a
    :class:`SGDetrZeroInitLinear`."""

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, zero_init_last: bool = False
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = [nn.Linear(a, b) for a, b in zip(dims[:-2], dims[1:-1])]
        layers.append((SGDetrZeroInitLinear if zero_init_last else nn.Linear)(dims[-2], dims[-1]))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        if repeats_one_sample(x):
            return self.forward(x[:1]).expand(x.shape[0], -1, -1)  # hooks run once, on the outer call
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _CPUPReLU(torch.autograd.Function):
    """PReLU with one shared weight through PyTorch's leaky-ReLU kernels and the weight's value (CPU float32).

    PyTorch's CPU PReLU backward reduces the weight gradient element by element: 15.6 ms for a 4800 x 1024
    activation on 2 threads here. leaky_relu's backward is the same arithmetic for a given slope
    (``x > 0 ? g : w * g``, 1.8 ms) and the weight gradient one dot product with ``min(x, 0)`` (2.2 ms). The
    forward is leaky_relu, which keeps only ``x`` for the backward (the two forwards take the same time)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.slope = float(weight)  # a CPU parameter: reading it does not synchronise
        ctx.save_for_backward(x)
        return F.leaky_relu(x, ctx.slope)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.slope, False)
        # d(w x)/dw = x on x <= 0: the weight's gradient is the dot product of the gradient with min(x, 0)
        grad_weight = torch.dot(grad.reshape(-1), x.clamp(max=0).reshape(-1)).reshape(1)
        return grad_x, grad_weight


class SGDetrPReLU(nn.PReLU):
    """``nn.PReLU`` (one shared weight) through :class:`_CPUPReLU` when a gradient is needed on CPU float32 (the
    same values and gradients as ``F.prelu``, a faster backward; in bfloat16 the weight's dot product would
    accumulate in bfloat16); the same parameter, so checkpoints are unchanged. Otherwise ``F.prelu``."""

    def forward(self, x: Tensor) -> Tensor:
        fast = self.num_parameters == 1 and x.device.type == "cpu" and x.dtype == torch.float32
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if fast and needs_grad and not torch.compiler.is_compiling():
            return _CPUPReLU.apply(x, self.weight)
        return F.prelu(x, self.weight)


class SGDetrFeedForward(nn.Module):
    """``Lin(d -> d_ff) -> PReLU -> Dropout -> Lin(d_ff -> d)`` (CG-DETR)."""

    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_dim)
        self.activation = SGDetrPReLU()
        self.dropout = SGDetrDropout(config.dropout)
        self.fc2 = nn.Linear(config.ffn_dim, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class SGDetrMaskedGroupNorm(nn.Module):
    """GroupNorm over channel-last ``(B, L, C)`` whose statistics use only the valid positions, so a sample gives
    the same result alone and padded inside a batch. Padded positions are returned as zeros.

    ``segment_ids`` ``(L,)`` (optional) splits the positions into ``num_segments`` runs with statistics of their
    own: the ATSS head normalises every pyramid level separately but runs all levels in one call.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(
        self, x: Tensor, mask: Tensor, segment_ids: Tensor | None = None, num_segments: int = 1
    ) -> Tensor:
        return masked_group_norm(
            x, mask, self.num_groups, self.weight, self.bias, self.eps, segment_ids, num_segments
        )


def masked_group_norm(
    x: Tensor,
    mask: Tensor,
    num_groups: int,
    weight: Tensor,
    bias: Tensor,
    eps: float,
    segment_ids: Tensor | None = None,
    num_segments: int = 1,
) -> Tensor:
    """The function of :class:`SGDetrMaskedGroupNorm` (fp32 statistics), with ``weight`` / ``bias`` given: two
    norms over the same positions run as one call with their groups side by side."""
    batch, length, channels = x.shape
    group_size = channels // num_groups
    xg = x.float().view(batch, length, num_groups, group_size)
    valid = mask.to(xg.dtype)
    if segment_ids is None:
        member = valid[..., None]  # (B, L, 1)
    else:
        # a comparison, not F.one_hot, which reads the ids' largest value on the host to check it
        segments = torch.arange(num_segments, device=segment_ids.device)
        member = valid[..., None] * (segment_ids[:, None] == segments).to(xg.dtype)  # (B, L, S)
    count = (member.sum(1) * group_size).clamp_min(1.0)[:, None, :]  # (B, 1, S)

    def per_position(stat: Tensor) -> Tensor:  # (B, G, S) -> (B, L, G, 1)
        stat = stat.transpose(1, 2)
        stat = stat.expand(-1, length, -1) if segment_ids is None else stat[:, segment_ids]
        return stat[..., None]

    mean = _sum_over_members(xg.sum(-1), member) / count
    centered = xg - per_position(mean)
    var = _sum_over_members(centered.square().sum(-1), member) / count
    y = (centered * torch.rsqrt(per_position(var) + eps)).view(batch, length, channels).to(x.dtype)
    return torch.addcmul(bias, y, weight) * mask[..., None].to(y.dtype)


def _sum_over_members(values: Tensor, member: Tensor) -> Tensor:
    """``(B, L, G)`` values summed over the positions of each segment, weighted by ``(B, L, S)`` ``member`` ->
    ``(B, G, S)``: a batched matmul over the positions, or for one segment a plain sum. Inductor
    (torch 2.13) miscompiles that matmul when the position count is a dynamic size that is 1 at run time,
    the pyramid's coarsest level under ``torch.compile(dynamic=True)``: that level's norm came out wrong by
    hundreds. The segmented calls (the ATSS head's packed levels) have at least three positions."""
    if member.shape[-1] == 1:
        return (values * member).sum(1)[..., None]
    return torch.bmm(values.transpose(1, 2), member)


def conv1d_on_rows(rows: Tensor, weights: Sequence[Tensor], bias: Tensor | None) -> Tensor:
    """A kernel-3 convolution along the rows of ``(N, C_in)`` -> ``(N, C_out)``: output row ``i`` is
    ``rows[i-1] @ W_0 + rows[i] @ W_1 + rows[i+1] @ W_2 + b`` for ``0 < i < N - 1``, with tap ``W_k`` the
    ``(C_in, C_out)`` matrix ``weight[:, :, k].T`` (rows 0 and N - 1 hold partial sums: callers place zero rows
    there). ``weights``: ``nn.Conv1d`` weights ``(C_out_j, C_in, 3)`` of convolutions of the same input, their
    outputs side by side (``C_out = sum C_out_j``). Several sequences laid end to end with one zero row between
    neighbours and at both ends are each convolved with their own zero padding. Three GEMMs on shifted row views
    of the same matrix: no unfolded copy of the input.

    Each tap's ``(C_out, C_in)`` weights are concatenated into a tensor of their own (one copy per forward) and
    used transposed, as ``nn.Linear`` uses its weight, not sliced from one stacked tensor of the three taps:
    Inductor's C++ GEMM template (torch 2.13, ``mode="max-autotune"`` with freezing) drops the storage offset of
    a folded constant, and tap 1 of a stacked ``(3, C_in, C_out)`` tensor came out as tap 0
    (``tests/test_fast_paths.py`` compiles this function that way).

    Narrow outputs (at most 16 channels, the ATSS output convolutions) take one GEMM over the three taps side
    by side and two shifted adds of its thin result instead: a GEMM that wide reads its input at the same cost
    whatever its width, so three of them read it three times.

    Under autocast the operands are cast to its dtype first, as autocast casts those of ``addmm``: the in-place
    ``addmm_`` accumulations are not autocast ops, and would otherwise meet a bfloat16 ``out`` with float32
    rows."""
    device_type = rows.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else rows.dtype
    rows = rows.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    width = sum(weight.shape[0] for weight in weights)
    taps_of_each = [weight.unbind(2) for weight in weights]  # per weight its three (C_out_j, C_in) taps

    def transposed_taps(*indices: int) -> Tensor:
        # taps `indices` side by side, (C_in, len(indices) * C_out): a tensor of its own (see above)
        return torch.cat([taps[k] for k in indices for taps in taps_of_each]).to(dtype).T

    if width <= 16:
        per_tap = rows @ transposed_taps(0, 1, 2)  # (N, 3 * C_out): [tap 0 | tap 1 | tap 2]
        out = per_tap[:, width : 2 * width].clone() if bias is None else per_tap[:, width : 2 * width] + bias
        out[1:] += per_tap[:-1, :width]
        out[:-1] += per_tap[1:, 2 * width :]
        return out
    before, center, after = (transposed_taps(k) for k in range(3))
    out = rows @ center if bias is None else torch.addmm(bias, rows, center)
    out[1:].addmm_(rows[:-1], before)
    out[:-1].addmm_(rows[1:], after)
    return out


def conv1d_channels_last(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1) -> Tensor:
    """``F.conv1d`` with kernel ``k`` (odd), ``padding = k // 2``, on channel-last ``(B, L, C_in)`` ->
    ``(B, ceil(L / stride), C_out)``, as one matmul over the unfolded windows (im2col). The pyramid keeps its
    features channel-last (no transposes for the selector and the query groups), and one matmul is faster than
    the convolution kernels for these short sequences on CPU (at batch 1 PyTorch takes a slow
    ``_slow_conv2d`` path). ``weight`` ``(C_out, C_in, k)`` as ``nn.Conv1d`` stores it."""
    kernel = weight.shape[-1]
    windows = F.pad(x, (0, 0, kernel // 2, kernel // 2)).unfold(1, kernel, stride)  # (B, L_out, C_in, k)
    return F.linear(windows.flatten(2), weight.flatten(1), bias)


__all__ = [
    "SGDetrAttention",
    "SGDetrDropout",
    "SGDetrFeedForward",
    "SGDetrMLP",
    "SGDetrMaskedGroupNorm",
    "SGDetrPReLU",
    "SGDetrQueryEmbedding",
    "SGDetrZeroInitLinear",
    "apply_dropout",
    "attend",
    "conv1d_channels_last",
    "conv1d_on_rows",
    "eager_attention_forward",
    "masked_group_norm",
    "merge_heads",
    "project_each",
    "repeats_one_sample",
    "split_heads",
]

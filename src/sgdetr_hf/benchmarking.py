"""Timing, peak memory and result output shared by the benchmark scripts (``scripts/benchmark_*.py``).

:func:`measure` calls a function a few untimed times (warm-up: lazy initialisation, allocator and
kernel caches), then times each of ``repeats`` calls. On CUDA it synchronises the device around the
timed calls, so that the wall clock covers the kernels they queued, and reads the peak memory torch
allocated during them. :func:`measure_interleaved` times several functions in alternation (one call of
each per round), so that machine noise hits all of them alike and their ratio is meaningful on a shared
machine. :func:`count_ops_and_flops` counts the kernel calls and the arithmetic of a function, and
:func:`kernel_time_split` profiles how much of its time the matrix kernels take.
:func:`random_inputs` / :func:`random_labels` make a QVHighlights-shaped batch.
:func:`print_table` prints result rows as Markdown, :func:`write_json` saves them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from .cpu_memory import retain_freed_memory
from .files import atomic_write_text


@dataclasses.dataclass(frozen=True)
class Measurement:
    """The timed calls of :func:`measure`.

    Attributes:
        seconds: wall-clock seconds of each timed call.
        cpu_seconds: CPU seconds this process spent in each timed call, over all its threads (on a
            shared machine the wall clock also counts the time spent waiting for a core).
        peak_memory_mib: on CUDA, the most memory torch allocated during the timed calls; elsewhere
            :func:`peak_rss_mib`, which cannot be reset: it covers the whole process so far, so
            measure each case in a fresh process for a figure of its own.
        result: what the last timed call returned.
    """

    seconds: tuple[float, ...]
    cpu_seconds: tuple[float, ...]
    peak_memory_mib: float
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds)


def add_system_malloc_argument(parser: argparse.ArgumentParser) -> None:
    """The benchmark scripts' ``--system-malloc`` switch (see :func:`malloc_setting`)."""
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (by default a CPU run keeps freed memory for reuse, as "
        "`sgdetr train` does: sgdetr_hf.cpu_memory)",
    )


def malloc_setting(system_malloc: bool, device: str | torch.device) -> str:
    """On a CPU ``device`` and unless ``system_malloc``: keep freed memory for reuse as ``sgdetr train`` does
    (:func:`~sgdetr_hf.cpu_memory.retain_freed_memory`). Returns what the run uses, for its report."""
    if not system_malloc and torch.device(device).type == "cpu" and retain_freed_memory():
        return "malloc retains freed memory"
    return "system malloc"


def peak_rss_mib(include_children: bool = False) -> float:
    """Peak resident memory of this process in MiB.

    On Linux, ``VmHWM`` of ``/proc/self/status``: the peak of this process's own address space. (``ru_maxrss``
    is kept across ``fork`` and ``execve``, so a benchmark subprocess would report its parent's peak when that
    is larger.) Elsewhere ``ru_maxrss``. ``include_children``: the larger of this and of the largest waited-for
    child's ``ru_maxrss`` (e.g. a decoding subprocess).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    if include_children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return peak


def measure(
    function: Callable[[], Any], repeats: int = 1, warmup: int = 0, device: str | torch.device = "cpu"
) -> Measurement:
    """Call ``function()`` ``warmup`` times untimed, then ``repeats`` times timed, on ``device``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        function()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = function()
        if cuda:
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mib()
    return Measurement(tuple(seconds), tuple(cpu_seconds), peak, result)


def measure_interleaved(
    functions: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> dict[str, Measurement]:
    """Time every function of ``functions`` once per round, for ``rounds`` rounds, after ``warmup`` untimed
    rounds: a slow spell of the machine then slows every function alike, and their ratio (best against best)
    stays meaningful. ``peak_memory_mib`` is as in :func:`measure` (on CPU, the whole process's peak)."""
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
    for _ in range(warmup):
        for function in functions.values():
            function()
    timed = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            timed[name].append(measure(function, 1, 0, device))
    return {
        name: Measurement(
            seconds=tuple(m.seconds[0] for m in runs),
            cpu_seconds=tuple(m.cpu_seconds[0] for m in runs),
            peak_memory_mib=max(m.peak_memory_mib for m in runs),
            result=runs[-1].result,
        )
        for name, runs in timed.items()
    }


# CPU kernels that torch.utils.flop_counter (torch 2.13) has no formula for, counted by the formula of their CUDA
# counterpart: the same leading arguments (query, key, value; the backward's gradient first) and the same
# arithmetic. Without them the attention of every SDPA call on CPU counts 0 FLOPs.
_CPU_FLOP_EQUIVALENTS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: torch.ops.aten._scaled_dot_product_flash_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        torch.ops.aten._scaled_dot_product_flash_attention_backward
    ),
}


def _flop_formula(packet) -> Callable[..., int] | None:
    """``torch.utils.flop_counter``'s formula for an operator overload packet, or None (element-wise ops)."""
    packet = _CPU_FLOP_EQUIVALENTS.get(packet, packet)
    # in-place variants (addmm_, baddbmm_) have the arguments and arithmetic of the out-of-place op
    return flop_registry.get(packet) or flop_registry.get(
        getattr(torch.ops.aten, packet.__name__.rstrip("_"), None)
    )


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched and the FLOPs of those ``torch.utils.flop_counter`` knows (and of
    the CPU attention kernels, see :data:`_CPU_FLOP_EQUIVALENTS`)."""

    def __init__(self):
        super().__init__()
        self.ops = 0
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = _flop_formula(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_ops_and_flops(function: Callable[[], Any]) -> tuple[int, int]:
    """ATen operators and floating-point operations of one call of ``function``.

    Operators: every kernel call, views included (what a launch-bound device pays per op), counted below
    autograd and the composite decompositions. FLOPs: ``torch.utils.flop_counter``'s formulas (matmuls,
    convolutions, attention, SDPA's CPU kernels included; forward and, if ``function`` runs it, backward;
    element-wise ops count 0). Counted with a dispatch mode of our own, not ``FlopCounterMode``, whose module
    tracker refuses ``no_grad`` forwards that return views of parameters (and which skips in-place ``addmm_``)."""
    with _OpCounter() as counter:
        function()
    return counter.ops, counter.flops


# The profiler's names of the kernels whose FLOPs are counted (matrix products, convolutions, attention), with
# their in-place variants (addmm_): the arithmetic; everything else is the overhead around it.
MATRIX_KERNELS = frozenset(
    f"aten::{packet.__name__}{suffix}"
    for packet in (*flop_registry, *_CPU_FLOP_EQUIVALENTS)
    for suffix in ("", "_")
)


def kernel_time_split(
    function: Callable[[], Any], device: str | torch.device = "cpu", calls: int = 3, top: int = 5
) -> dict[str, Any]:
    """Where one call of ``function`` spends its time, from ``torch.profiler`` (the fastest of ``calls``
    profiled calls; call it warm): ``total_ms``, the self time of every kernel (device time on CUDA, CPU time
    otherwise), ``matrix_ms``, that of the :data:`MATRIX_KERNELS`, and ``top_ops``, the ``top`` kernels with
    the most self time as ``[name, ms, calls]``. Profiling slows small kernels more than large ones: compare
    these splits with each other, not with unprofiled timings."""
    if calls < 1:
        raise ValueError(f"need calls >= 1, got {calls}")
    cuda = torch.device(device).type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    best = None
    for _ in range(calls):
        with torch.profiler.profile(activities=activities) as profiler:
            function()
            if cuda:
                torch.cuda.synchronize(device)
        kernels = {
            event.key: (
                (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e3,
                event.count,
            )
            for event in profiler.key_averages()
        }
        total = sum(ms for ms, _ in kernels.values())
        if best is None or total < best["total_ms"]:
            matrix = sum(ms for name, (ms, _) in kernels.items() if name in MATRIX_KERNELS)
            ranked = sorted(kernels.items(), key=lambda item: -item[1][0])[:top]
            best = {
                "total_ms": total,
                "matrix_ms": matrix,
                "top_ops": [[name, ms, count] for name, (ms, count) in ranked],
            }
    return best


def largest_deviation(expected: Any, actual: Any) -> float:
    """The largest ``|expected - actual|`` over the floating-point tensors of two outputs of the same structure
    (any pytree: tensors, tuples, lists, dicts and ``ModelOutput``s), each relative to its expected tensor's
    largest finite magnitude: 0 for equal outputs (NaNs and infinities in the same places included), ``inf``
    where one holds a NaN or an infinity the other does not, or an integer tensor differs.

    Raises:
        ValueError: the two outputs differ in structure or in a tensor's shape.
    """
    expected_leaves, expected_structure = tree_flatten(expected)
    actual_leaves, actual_structure = tree_flatten(actual)
    if expected_structure != actual_structure:
        raise ValueError(f"outputs differ in structure: {expected_structure} against {actual_structure}")
    pairs = [(e, a) for e, a in zip(expected_leaves, actual_leaves) if isinstance(e, torch.Tensor)]
    return max((_tensor_deviation(e, a) for e, a in pairs), default=0.0)  # other leaves carry no tensor


def _tensor_deviation(expected: torch.Tensor, actual: torch.Tensor) -> float:
    if not isinstance(actual, torch.Tensor) or expected.shape != actual.shape:
        raise ValueError(
            f"outputs differ in structure: a tensor of {tuple(expected.shape)} against {actual!r:.60}"
        )
    if not expected.is_floating_point() or expected.numel() == 0:
        return 0.0 if torch.equal(expected, actual) else math.inf
    expected, actual = expected.detach().float(), actual.detach().float()
    difference = (expected - actual).abs().nan_to_num(nan=math.inf)
    difference[(expected == actual) | (expected.isnan() & actual.isnan())] = 0.0  # equal infinities too
    finite = expected[expected.isfinite()].abs()
    scale = max(float(finite.max()) if finite.numel() else 1.0, torch.finfo(torch.float32).tiny)
    return float(difference.max()) / scale


def random_inputs(
    batch: int, clips: int, tokens: int, dim: int, device: str, seed: int = 0
) -> list[torch.Tensor]:
    """Features of ``batch`` videos of ``clips`` clips and queries of 8..``tokens`` tokens (the rest padding)."""
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, clips, dim, generator=g)
    text = torch.randn(batch, tokens, dim, generator=g)
    lengths = torch.randint(min(8, tokens), tokens + 1, (batch,), generator=g)
    text_mask = (torch.arange(tokens)[None] < lengths[:, None]).float()
    return [x.to(device) for x in (video, torch.ones(batch, clips), text, text_mask)]


#: How many queries of QVHighlights' training split (``highlight_train_release.jsonl``, 7,218 queries) have
#: 1, 2, ..., 24 relevant windows: mean 1.77, and a long tail that sets a batch's denoising-group size.
QVHIGHLIGHTS_WINDOW_COUNTS = (
    4855, 1230, 466, 266, 140, 81, 55, 40, 27, 8, 6, 6, 0, 7, 2, 6, 5, 6, 1, 3, 3, 1, 3, 1,
)  # fmt: skip
#: ``random_labels``' choices of windows per sample
WINDOW_COUNT_CHOICES = ("1-3", "qvhighlights")


def random_labels(
    batch: int, clips: int, device: str, seed: int = 0, windows: str = "1-3", max_windows: int | None = None
) -> list[dict]:
    """Windows per sample, uniform on 1-3 (``windows="1-3"``) or drawn from QVHighlights' training split
    (``"qvhighlights"``, :data:`QVHIGHLIGHTS_WINDOW_COUNTS`), at most ``max_windows`` (training caps them at
    ``SGDetrConfig.max_gt_windows``, the collator's ``max_windows``), and 0-12 saliency on the clips inside
    them."""
    if windows not in WINDOW_COUNT_CHOICES:
        raise ValueError(f"windows must be one of {WINDOW_COUNT_CHOICES}, not {windows!r}")
    g = torch.Generator().manual_seed(seed)
    labels = []
    clip_centers = (torch.arange(clips) + 0.5) / clips
    window_weights = torch.tensor(QVHIGHLIGHTS_WINDOW_COUNTS, dtype=torch.float64)
    for _ in range(batch):  # benchmark input construction, not the model
        if windows == "1-3":
            k = int(torch.randint(1, 4, (1,), generator=g))
        else:
            k = 1 + int(torch.multinomial(window_weights, 1, generator=g))
        k = k if max_windows is None else min(k, max_windows)
        spans = torch.stack(
            (torch.rand(k, generator=g) * 0.6 + 0.2, torch.rand(k, generator=g) * 0.2 + 0.05), 1
        )
        inside = ((clip_centers[None] - spans[:, :1]).abs() < spans[:, 1:] / 2).any(0)
        saliency = inside.float() * torch.randint(1, 13, (clips,), generator=g).float()
        labels.append({"spans": spans.to(device), "saliency_scores": saliency.to(device)})
    return labels


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """Print ``rows`` as a Markdown table; the keys of the first row are the columns."""
    if not rows:
        raise ValueError("print_table needs at least one row")
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(column, "")) for column in columns) + " |" for row in rows]
    print("\n".join(lines))


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as strict JSON (NaN or infinity is an error, not an invalid file), atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")

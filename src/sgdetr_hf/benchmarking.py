"""Timing, peak memory and result output shared by the benchmark scripts (``scripts/benchmark_*.py``).

:func:`measure` calls a function a few untimed times (warm-up: lazy initialisation, allocator and
kernel caches), then times each of ``repeats`` calls. On CUDA it synchronises the device around the
timed calls, so that the wall clock covers the kernels they queued, and reads the peak memory torch
allocated during them. :func:`print_table` prints result rows as Markdown, :func:`write_json` saves
them.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

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


def peak_rss_mib(include_children: bool = False) -> float:
    """Peak resident memory of this process in MiB (Linux ``ru_maxrss`` is in KiB).

    ``include_children``: the larger of this process's and of its largest waited-for child's (e.g. a
    decoding subprocess).
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / 1024


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

"""Reuse of freed host memory on CPU runs (glibc's malloc).

PyTorch's CPU tensors come from the C allocator. glibc's malloc serves large blocks with fresh ``mmap``
pages (above a threshold that it raises by itself only up to 32 MiB) and returns freed memory at the top of
its heap to the system, so a training step whose activations are freed by the backward pass page-faults
them back in on the next step: 45,296 minor faults (186 MB) per SG-DETR training step at batch 32 and the
QVHighlights shape on the 2-core CPU of the README (1,778 with this setting), where the stock-PyTorch
reference of ``scripts/benchmark_speed.py`` takes none (docs/speed/README.md, the fourth step). PyTorch's
CPU tuning guide recommends a caching allocator (jemalloc or tcmalloc, preloaded) against this;
:func:`retain_freed_memory` gets the reuse from glibc itself, without a library to install: blocks under
1 GiB come from the heap, and the heap is never trimmed. The cost is that the process keeps the memory of
its peak (what a caching allocator, CUDA's included, does too).
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks at least this large are still mapped (and unmapped when freed): beyond any activation of this model
MMAP_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process: blocks under :data:`MMAP_THRESHOLD` from its
    heap, no trimming of the heap. Process-wide and permanent (call it once, at the start of a CPU run).

    Returns:
        True when set; False, with a debug log, where the C library is not glibc (macOS, Windows, musl):
        there the system allocator stays as it is.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.debug("not glibc: the system allocator is left as it is")
        return False
    libc = ctypes.CDLL("libc.so.6")
    # -1 disables trimming (mallopt(3)); each call returns 1 on success
    done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    if not done:
        logger.debug("glibc refused the mallopt settings: the system allocator is left as it is")
    return done


__all__ = ["MMAP_THRESHOLD", "retain_freed_memory"]

"""``retain_freed_memory``: glibc's malloc keeps freed blocks, so re-allocating them does not page-fault."""

import platform
import subprocess
import sys

import pytest

from sgdetr_hf import cpu_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# minor page faults of each of 48 allocations (filled) of a 64 MiB block freed in between, in a fresh process (the
# setting is process-wide)
_FAULTS = """
import resource, sys, torch
from sgdetr_hf.cpu_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(48):
    before = faults()
    torch.ones(16 * 2**20)
    counts.append(faults() - before)
print(*counts)
"""


def _faults_per_allocation(mode: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return [int(count) for count in done.stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist in glibc only")
def test_freed_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert min(_faults_per_allocation("system")) >= pages // 2  # glibc maps the block afresh every time
    # the first blocks freed into the heap fall a little short of the next aligned request (seen: the first 7-9
    # allocations fault); once the heap has grown, re-allocation takes no new pages
    assert max(_faults_per_allocation("retain")[-8:]) < pages // 100


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called without glibc"))
    assert cpu_memory.retain_freed_memory() is False

"""``retain_freed_memory``: glibc's malloc keeps freed blocks, so re-allocating them does not page-fault."""

import platform
import subprocess
import sys

import pytest

from sgdetr_hf import cpu_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# faults of re-allocating (and filling) a freed 64 MiB tensor, in a fresh process (the setting is process-wide)
_FAULTS = """
import resource, sys, torch
from sgdetr_hf.cpu_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):  # the heap settles: the first blocks freed are a little short of an aligned request
    torch.ones(16 * 2**20)
before = faults()
for _ in range(4):
    torch.ones(16 * 2**20)
print((faults() - before) // 4)
"""


def _faults_per_allocation(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist in glibc only")
def test_freed_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert _faults_per_allocation("system") >= pages // 2  # glibc maps the block afresh every time
    assert _faults_per_allocation("retain") < pages // 100


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *a: pytest.fail("mallopt called without glibc"))
    assert cpu_memory.retain_freed_memory() is False

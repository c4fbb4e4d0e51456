"""rotcodec.runtime: malloc keeps freed memory for reuse once keep_freed_memory() is called."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# A 32 MB numpy array allocated and freed five times; the minor page faults of the last four allocations.
PROBE = """
import resource, sys
import numpy as np
from rotcodec.runtime import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "1" else None
np.ones(4 << 20)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    np.ones(4 << 20)
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(keep: bool) -> tuple[str, int]:
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}  # 4 KB pages, so that the counts mean the same everywhere
    cmd = [sys.executable, "-c", PROBE, "1" if keep else "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    took, faults = out.stdout.split()
    return took, int(faults)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_freed_blocks_are_reused_instead_of_mapped_afresh() -> None:
    took, kept = _faults(True)
    _, default = _faults(False)
    assert took == "True"
    pages = 4 * (32 << 20) // 4096
    assert default > pages // 2  # every allocation touched fresh pages
    assert kept < pages // 20  # the heap's pages were reused


def test_is_idempotent_and_reports_whether_it_took_effect() -> None:
    from rotcodec.runtime import keep_freed_memory

    first = keep_freed_memory()
    assert isinstance(first, bool)
    assert keep_freed_memory() is first
    if not sys.platform.startswith("linux"):
        assert first is False

"""Process-wide memory setting that makes CPU inference and training faster.

glibc's malloc maps every large block (over 128 KB, or its adaptive threshold of at most 32 MB) fresh from
the kernel and unmaps it when it is freed. A codec's activations are many same-sized multi-megabyte tensors,
allocated and freed at every layer, each paying a page fault per 4 KB page it touches (a 32 MB numpy array
allocated four times: about 32,800 faults by default, none with this setting; `tests/test_runtime.py`).
Whole encodes, decodes and training steps gain less
and the machine's noise is of the same size: in four side-by-side runs of `python benchmarks/malloc_reuse.py`
(one thread) encode ran 1.02-1.32x, decode 1.02-1.33x and training 0.95-1.12x as fast.

`keep_freed_memory` tells malloc to serve every block from its heap and not to trim freed memory off it. The
price: the process keeps its peak memory until it exits, which the CLI's bounded streaming keeps small.
Every `rotcodec` command calls it; Python users may call it once at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_KEEP_BYTES = 1 << 30  # free memory at the heap's top kept before trimming


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the kernel (see the module docstring).
    Returns True where it took effect; False elsewhere (not Linux/glibc), changing nothing. Idempotent."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))

"""glibc malloc settings that keep XLA:CPU's per-execution buffers mapped from one step to the next.

XLA:CPU allocates the temporaries of every execution (209 MB for an A(1,1) training step at batch
128) with posix_memalign from a worker thread. glibc serves a request that large from a fresh mmap
(a thread arena cannot hold it) and unmaps it on free, so every step faults every page in again:
53,600 minor faults and ~20% of an A(1,1) step on a 2-core CPU. One arena, no mmap and no trimming
make freed buffers stay in the heap for the next step. The process keeps its peak heap (it would
reach that peak every step anyway). `import inas_jax` applies this before JAX starts its threads;
set INAS_JAX_DEFAULT_MALLOC=1 to keep glibc's defaults. Other C libraries are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
# The same settings as environment variables, for another process (the PyTorch peer in bench_train).
GLIBC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
OPT_OUT = "INAS_JAX_DEFAULT_MALLOC"


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_buffers_mapped() -> bool:
    """Sets glibc's arena count to 1, mmap use to none and the trim threshold to its maximum.

    Returns True when applied; False off glibc or when INAS_JAX_DEFAULT_MALLOC is set to non-empty.
    Must run before JAX's thread pools first allocate (thread arenas made earlier stay in use).
    """
    if os.environ.get(OPT_OUT) or not is_glibc():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(option, value) == 1 for option, value in SETTINGS)

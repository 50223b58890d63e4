"""Transparent huge pages for glibc's large allocations, so XLA:CPU's per-step buffers fault in cheaply.

XLA:CPU allocates the temporaries of every execution (209 MB for an A(1,1) training step at width
64, batch 128; more for deeper nets) with posix_memalign. glibc serves requests that large from a
fresh mmap and unmaps them on free, so every step faults every page in again, 4 KiB at a time:
53,600 minor faults and ~20% of an A(1,1) step on a 2-core CPU (178,000 and ~25% for A(2,2)).
glibc's tunable `glibc.malloc.hugetlb=1` makes malloc advise the kernel to back those mappings with
2 MiB transparent huge pages: ~600 faults per step, and peak memory grows ~10%. (Keeping freed
blocks in the heap with mallopt instead was as fast but doubled peak memory through fragmentation.)
glibc reads tunables only at process start, so the command-line entry points call
`reexec_with_huge_pages()` first, which restarts the interpreter once with the tunable in
GLIBC_TUNABLES. Library users can export GLIBC_TUNABLES=glibc.malloc.hugetlb=1 themselves.
INAS_JAX_DEFAULT_MALLOC=1 opts out.
Needs glibc >= 2.35 and transparent huge pages set to `madvise` or `always` (most Linux kernels);
elsewhere it changes nothing.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "INAS_JAX_DEFAULT_MALLOC"


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def huge_pages_active(env=None) -> bool:
    """True if a process started with `env` (default: this one's) asks glibc for huge pages."""
    env = os.environ if env is None else env
    return TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")


def with_huge_pages(env) -> dict:
    """A copy of `env` whose GLIBC_TUNABLES also holds glibc.malloc.hugetlb=1 (other tunables kept)."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.malloc.hugetlb=")]
    return {**env, "GLIBC_TUNABLES": ":".join(tunables + [TUNABLE])}


def reexec_with_huge_pages() -> None:
    """Restarts this Python process (same command line, same PID) with the tunable set, once.

    Call it first in a program's __main__, before heavy imports. A no-op off glibc, when the
    tunable is already set, or with INAS_JAX_DEFAULT_MALLOC set to a non-empty value.
    """
    if os.environ.get(OPT_OUT) or huge_pages_active() or not is_glibc():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, with_huge_pages(os.environ))

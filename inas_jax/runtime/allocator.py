"""Transparent huge pages for glibc's large allocations, so XLA:CPU's per-step buffers fault in cheaply.

Every training step allocates large buffers: the new state and activations it returns, and the
temporaries XLA:CPU's compiled code needs (209 MB for an A(1,1) step at width 64, batch 128; more for
deeper nets), all with posix_memalign. glibc serves requests that large from a fresh mmap and unmaps
them on free, so every step faults every page in again, 4 KiB at a time: tens of thousands of minor
faults per step and a fifth or more of a step's time on a small CPU. glibc's tunable
`glibc.malloc.hugetlb=1` makes malloc advise the kernel to back those mappings with 2 MiB transparent
huge pages: a few hundred faults per step, and peak memory grows ~10%. (Keeping freed blocks in the
heap with mallopt instead was as fast but doubled peak memory through fragmentation.)

Where it pays: on every jax the README supports, so the restart is not bound to a jax version.
Measured with experiments/bench_train.py (minor faults per training step and images/s, with and
without INAS_JAX_DEFAULT_MALLOC=1) on Python 3.11 with jax 0.10.2, the newest jax there, and on
Python 3.12 with jax 0.12.1, the newest jax: on both, the tunable cuts a step's faults 30- to 450-fold
and raises its images/s alike. jax 0.7 to 0.12.1 fault in the same way by tests/test_allocator.py's
method. What changed in jax 0.12.1 is narrower: XLA:CPU compiles some functions without their large
temporary (a matmul whose product feeds another matmul and a sum, which that test timed before), but
a training step's buffers still fault in on every step without the tunable. The default digits run
(width 8) gains nothing beyond a loaded machine's noise and loses only the interpreter restart. If a jax
release stops faulting the buffers in, tests/test_allocator.py fails on it: measure again and bound
the restart here then.

glibc reads tunables only at process start, so the command-line entry points call
`reexec_with_huge_pages()` first, before any heavy import (jax, numpy), which restarts the
interpreter once with the tunable in GLIBC_TUNABLES; scripts call `reexec_if_main(__name__)` at
their top. Library users can export GLIBC_TUNABLES=glibc.malloc.hugetlb=1 themselves.
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
# Set to the process id by the restart: the restarted process (same PID) never restarts again, even
# where GLIBC_TUNABLES does not survive exec (a secure-mode binary, a wrapper that resets it). Child
# processes have other PIDs, so each of them still gets its one restart.
RESTARTED = "INAS_JAX_HUGE_PAGES_RESTARTED"


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


def restart_wanted(env=None, pid: int | None = None) -> bool:
    """Whether `reexec_with_huge_pages` would restart a process with `env` and `pid` (default: this one)."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    if env.get(OPT_OUT) or huge_pages_active(env) or env.get(RESTARTED) == str(pid):
        return False
    return is_glibc() and bool(sys.executable)


def reexec_with_huge_pages() -> None:
    """Restarts this Python process (same command line, same PID) with the tunable set, at most once.

    Call it first in a program's __main__, before heavy imports. A no-op off glibc, when the
    tunable is already set, after this process's own restart, or with INAS_JAX_DEFAULT_MALLOC set to
    a non-empty value.
    """
    if not restart_wanted():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, {**with_huge_pages(os.environ), RESTARTED: str(os.getpid())})


def reexec_if_main(module_name: str) -> None:
    """`reexec_with_huge_pages()` when `module_name` is "__main__": one line at a script's top.

    Placed above a script's heavy imports as `reexec_if_main(__name__)`, it restarts a script run as a
    program before jax loads, and leaves a script imported as a module (by a test) as it is, with no
    second `if __name__ == "__main__"` block.
    """
    if module_name == "__main__":
        reexec_with_huge_pages()

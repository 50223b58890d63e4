"""Huge pages for glibc's large allocations: XLA:CPU's per-call buffers fault in 2 MiB at a time."""
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from inas_jax.runtime import allocator

# A jitted function with an 80 MB temporary (the (20000, 1000) product between two matmuls), as a
# training step has; prints the minor page faults per call over calls 3-8.
SCRIPT = """
import resource
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: jnp.sum((x @ w) @ w.T))
x, w = jnp.ones((20_000, 64), jnp.float32), jnp.full((64, 1000), 1e-3, jnp.float32)
for i in range(8):
    if i == 2:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) // 6)
"""
TEMP_PAGES = 20_000 * 1000 * 4 // 4096
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
huge_pages_possible = pytest.mark.skipif(
    not (allocator.is_glibc() and tuple(map(int, platform.libc_ver()[1].split(".")[:2])) >= (2, 35)
         and THP.exists() and "[never]" not in THP.read_text()),
    reason="needs glibc >= 2.35 and transparent huge pages (madvise or always)")


def run(script: str, env: dict) -> str:
    env = {**env, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def without_tunables() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", allocator.OPT_OUT)}


@huge_pages_possible
def test_huge_pages_cut_the_page_faults_of_every_call():
    default = int(run(SCRIPT, without_tunables()))
    huge = int(run(SCRIPT, allocator.with_huge_pages(without_tunables())))
    assert default > TEMP_PAGES // 2, default  # the temporary is faulted in again on every call
    assert huge < TEMP_PAGES // 10, huge


REEXEC = ("import os; from inas_jax.runtime.allocator import reexec_with_huge_pages; reexec_with_huge_pages(); "
          "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'))")


@pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")
def test_reexec_restarts_once_with_the_tunable_and_respects_the_opt_out():
    _, tunables = run(REEXEC, {**without_tunables(), "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}).split()
    assert tunables.split(":") == ["glibc.malloc.tcache_count=0", allocator.TUNABLE]
    _, tunables = run(REEXEC, {**without_tunables(), allocator.OPT_OUT: "1"}).split()
    assert tunables == "None"


def test_with_huge_pages_replaces_an_earlier_hugetlb_setting():
    env = allocator.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + allocator.TUNABLE
    assert allocator.huge_pages_active(env) and not allocator.huge_pages_active({})

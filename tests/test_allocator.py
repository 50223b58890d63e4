"""Huge pages for glibc's large allocations: XLA:CPU's per-call buffers fault in 2 MiB at a time."""
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from inas_jax.runtime import allocator

# A jitted function returning an 80 MB array, as a training step returns its new state and activations,
# called as a training loop calls it (each result replaces the last); prints the minor page faults per
# call over calls 3-8. Its output cannot be compiled away, unlike a temporary: jax 0.12.1's XLA:CPU
# compiles `jnp.sum((x @ w) @ w.T)`, this test's function before, without its 80 MB temporary.
SCRIPT = """
import resource
import jax, jax.numpy as jnp
f = jax.jit(lambda x, w: jnp.tanh(x @ w))
x, w = jnp.ones((20_000, 64), jnp.float32), jnp.full((64, 1000), 1e-3, jnp.float32)
out = None
for i in range(8):
    if i == 2:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = f(x, w).block_until_ready()
print(jax.__version__, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) // 6)
"""
OUT_PAGES = 20_000 * 1000 * 4 // 4096
THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
huge_pages_possible = pytest.mark.skipif(
    not (allocator.is_glibc() and tuple(map(int, platform.libc_ver()[1].split(".")[:2])) >= (2, 35)
         and THP.exists() and "[never]" not in THP.read_text()),
    reason="needs glibc >= 2.35 and transparent huge pages (madvise or always)")


def run(script: str, env: dict) -> str:
    env = {**env, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          check=True, timeout=600).stdout.strip()


def without_tunables() -> dict:
    drop = ("GLIBC_TUNABLES", allocator.OPT_OUT, allocator.RESTARTED)
    return {k: v for k, v in os.environ.items() if k not in drop}


@huge_pages_possible
def test_huge_pages_cut_the_page_faults_of_every_call():
    # The restart is kept on every jax (allocator's docstring): if this jax stopped faulting the buffers
    # in, it would pay no more here; measure again (experiments/bench_train.py) and bound it.
    version, default = run(SCRIPT, without_tunables()).split()
    _, huge = run(SCRIPT, allocator.with_huge_pages(without_tunables())).split()
    assert int(default) > OUT_PAGES // 2, f"jax {version}: {default} faults per call with glibc's default malloc"
    assert int(huge) < OUT_PAGES // 10, f"jax {version}: {huge} faults per call with huge pages"


REEXEC = ("import os; from inas_jax.runtime.allocator import reexec_with_huge_pages; reexec_with_huge_pages(); "
          "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'))")
# As REEXEC, counting its starts in a file; GLIBC_TUNABLES is dropped at every start, as where it does
# not survive exec, so only the restart marker can stop a loop.
REEXEC_COUNTED = ("import os, sys; open(sys.argv[1], 'a').write('start\\n'); "
                  "os.environ.pop('GLIBC_TUNABLES', None); "
                  "from inas_jax.runtime.allocator import reexec_with_huge_pages; reexec_with_huge_pages()")


@pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")
def test_reexec_restarts_once_with_the_tunable_and_respects_the_opt_out():
    _, tunables = run(REEXEC, {**without_tunables(), "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}).split()
    assert tunables.split(":") == ["glibc.malloc.tcache_count=0", allocator.TUNABLE]
    _, tunables = run(REEXEC, {**without_tunables(), allocator.OPT_OUT: "1"}).split()
    assert tunables == "None"
    script = REEXEC.replace("import reexec_with_huge_pages; reexec_with_huge_pages()",
                            "import reexec_if_main; reexec_if_main(__name__)")
    _, tunables = run(script, without_tunables()).split()
    assert tunables == allocator.TUNABLE
    _, tunables = run(script.replace("(__name__)", "('experiments.bench')"), without_tunables()).split()
    assert tunables == "None"


@pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")
def test_reexec_cannot_loop(tmp_path):
    starts = tmp_path / "starts"
    subprocess.run([sys.executable, "-c", REEXEC_COUNTED, str(starts)], env=without_tunables(), check=True,
                   capture_output=True, timeout=60)
    assert starts.read_text().split() == ["start", "start"]  # the first start and its one restart
    # A child of a restarted process (another PID, inheriting the marker) still gets its own restart.
    assert allocator.restart_wanted({allocator.RESTARTED: "1"}, pid=2)
    assert not allocator.restart_wanted({allocator.RESTARTED: "2"}, pid=2)


def test_with_huge_pages_replaces_an_earlier_hugetlb_setting():
    env = allocator.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + allocator.TUNABLE
    assert allocator.huge_pages_active(env) and not allocator.huge_pages_active({})

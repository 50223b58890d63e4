"""The malloc settings applied by `import inas_jax` keep XLA:CPU's large buffers mapped between calls."""
import os
import subprocess
import sys

import pytest

from inas_jax import allocator

# A jitted function with an 80 MB temporary (the (20000, 1000) product between two matmuls), as a
# training step has; prints the minor page faults per call over calls 3-8.
SCRIPT = """
import resource
import jax, jax.numpy as jnp
import inas_jax
f = jax.jit(lambda x, w: jnp.sum((x @ w) @ w.T))
x, w = jnp.ones((20_000, 64), jnp.float32), jnp.full((64, 1000), 1e-3, jnp.float32)
for i in range(8):
    if i == 2:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x, w).block_until_ready()
print(inas_jax.MALLOC_TUNED, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) // 6)
"""
TEMP_PAGES = 20_000 * 1000 * 4 // 4096
glibc_only = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only (other C libraries keep defaults)")


def faults_per_call(opt_out: bool) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != allocator.OPT_OUT}
    if opt_out:
        env[allocator.OPT_OUT] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@glibc_only
def test_temporaries_are_reused_without_page_faults():
    tuned, faults = faults_per_call(opt_out=False)
    assert tuned == "True"
    assert faults < TEMP_PAGES // 10, faults


@glibc_only
def test_opt_out_keeps_glibc_defaults_which_fault_every_call():
    tuned, faults = faults_per_call(opt_out=True)
    assert tuned == "False"
    assert faults > TEMP_PAGES // 2, faults

"""What a run's numbers depend on besides its config, data and seed.

XLA:CPU splits reductions (convolution weight gradients, batch-norm statistics) across its threads,
one per CPU the process may run on, so the same seed trains to different floats with 1 and with 2
CPUs (a width-16 CIFAR-10 training differs after 3 epochs); with the same thread count it is bit
for bit the same. The jax version, backend, device type and count matter likewise, and so does the CPU model: XLA:CPU
picks its kernels by the vector extensions it finds (AVX2, AVX-512), so an AMD EPYC and an Intel Xeon
train the same seed to different floats. Every round record holds this environment, so a rerun that
does not reproduce a run can say why.
"""
from __future__ import annotations

import os
import platform

import jax

# The CPU features that decide XLA:CPU's kernels (and so a run's floats).
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16", "asimd", "sve")


def cpu_threads() -> int:
    """The CPUs this process may run on: the size of XLA:CPU's thread pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> tuple[str, str]:
    """(the CPU's model name, its vector extensions among VECTOR_FLAGS, space-separated) from
    /proc/cpuinfo; the platform's processor string and "" where that file is missing."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or platform.machine(), ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or fields.get("Model") or fields.get("CPU part") or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return name, " ".join(f for f in VECTOR_FLAGS if f in flags)


def environment() -> dict:
    """{'jax', 'backend', 'device_kind', 'devices', 'cpu_threads', 'cpu_model', 'cpu_vector'} of this
    process (JSON-able)."""
    model, vector = cpu_model()
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "devices": jax.device_count(), "cpu_threads": cpu_threads(), "cpu_model": model, "cpu_vector": vector}


"""What a run's numbers depend on besides its config, data and seed.

XLA:CPU splits reductions (convolution weight gradients, batch-norm statistics) across its threads,
one per CPU the process may run on, so the same seed trains to different floats with 1 and with 2
CPUs (a width-16 CIFAR-10 training differs after 3 epochs); with the same thread count it is bit
for bit the same. The jax version, backend, device type and count matter likewise. Every round record
holds this environment, so a rerun that does not reproduce a run can say why.
"""
from __future__ import annotations

import os

import jax


def cpu_threads() -> int:
    """The CPUs this process may run on: the size of XLA:CPU's thread pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment() -> dict:
    """{'jax', 'backend', 'device_kind', 'devices', 'cpu_threads'} of this process (JSON-able)."""
    return {"jax": jax.__version__, "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "devices": jax.device_count(), "cpu_threads": cpu_threads()}


"""One run over several processes (jax.distributed): starting it, and values one process decides.

Every process runs the same loop on the same data, so every computation is collective and identical;
what only one process may do (read and write the workdir, time its checkpoints) happens on the
writer, process 0, and reaches the others through `share`.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """jax.distributed.initialize: from the arguments, or detected (Cloud TPU, Slurm, Open MPI) when
    none is given. CPU processes exchange their collectives through gloo."""
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # a jax without the option: its CPU default is used
        pass
    kwargs = {}
    if coordinator_address is not None:
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    jax.distributed.initialize(**kwargs)


def several() -> bool:
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the workdir: the only one, or process 0 of several."""
    return jax.process_index() == 0


def share(decide: Callable[[], Any]) -> Any:
    """decide() as the writer computes it, on every process (the others do not call it). Any
    picklable value; jax arrays in it should be fetched to the host first (jax.device_get)."""
    if not several():
        return decide()
    from jax.experimental import multihost_utils
    payload = np.frombuffer(pickle.dumps(decide()), np.uint8) if is_writer() else np.zeros((0,), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(len(payload))))
    buffer = payload if is_writer() else np.zeros((size,), np.uint8)
    return pickle.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes())

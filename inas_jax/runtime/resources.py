"""Memory bounds of a run's settings, checked with the other flags before any work starts.

Each bound is a lower estimate of what one step holds (so it never refuses a run that fits): a
training step at least three float32 copies (input, output and the saved activation of its
backward pass) of the first stack's feature maps per image; an inference batch at least two; an
MC-dropout or BALD call (inas_jax.queries.uncertainty) the dropped embeddings and the
probabilities of every pass over one chunk of the pool. A setting whose estimate exceeds half the
memory available is refused, naming the flag and the largest value that fits, so no flag value
leads to the kernel's OOM killer.
"""
from __future__ import annotations

import os

from inas_jax.config import MC_CHUNK, ConfigError, RunConfig

FRACTION = 0.5  # of the available memory one step may take


def available_memory() -> int:
    """Bytes the kernel reports available (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_memory(cfg: RunConfig, image_shape: tuple[int, ...], num_classes: int, pool_size: int,
                 memory: int | None = None) -> None:
    """Raises ConfigError if one step of a setting would need more than FRACTION of `memory` (default:
    available_memory()). image_shape (H, W, C) of the dataset's images."""
    memory = available_memory() if memory is None else memory
    h, w = image_shape[0], image_shape[1]
    feature_map = 4 * h * w * cfg.model.width  # bytes of the first stack's float32 maps of one image
    embedding = cfg.model.width * 2 ** (cfg.arch.stacks - 1)
    per_unit = {"batch_size": (cfg.train.batch_size, 3 * feature_map, "one training step's activations"),
                "eval_batch_size": (cfg.train.eval_batch_size, 2 * feature_map, "one inference batch's activations")}
    if cfg.query in ("mcdropout", "bald"):
        per_unit["mc_passes"] = (cfg.mc_passes, 4 * min(MC_CHUNK, pool_size) * (embedding + 2 * num_classes),
                                 "the stochastic passes over one chunk of the pool")
    for flag, (value, each, what) in per_unit.items():
        if value * each > FRACTION * memory:
            fits = max(1, int(FRACTION * memory // each))
            raise ConfigError(f"--{flag}={value}: {what} need at least {_gib(value * each)}, more than half of the "
                              f"{_gib(memory)} of memory available; use at most --{flag}={fits}")

"""inas_jax: active learning with incremental neural architecture search (active-iNAS) in JAX."""

from inas_jax.allocator import keep_buffers_mapped

__version__ = "0.1.0"
MALLOC_TUNED = keep_buffers_mapped()

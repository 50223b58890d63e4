"""inas_jax: active learning with incremental neural architecture search (active-iNAS) in JAX."""

__version__ = "0.1.0"

"""Random permutations of 0..n-1 with jax.random.permutation's values, compiled once per size bucket.

`jax.random.permutation(key, n)` sorts arange(n) by random 32-bit keys, once per round (1 round up to
n = 1,625, 2 up to ~2.6M), and compiles an executable for every n. An active run asks for permutations
of a labelled set that grows every round (its epochs' batches, the iNAS split), so it paid one
compilation per size. Here n is an argument of the computation: arange(size) is sorted instead, for a
power-of-two size >= n, with every position >= n given the largest key. With the partitionable threefry
(JAX's default) the key of position i depends only on (key, i), and the sort is stable, so the first n
entries are exactly jax.random.permutation(key, n) (tests/test_permutations.py holds this).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_MIN_SIZE = 256  # smallest bucket: labelled sets of up to 256 points share one executable
_UINT32_MAX = np.iinfo(np.uint32).max


def _sort_rounds(n: int) -> int:
    """Sorting rounds of jax.random.permutation for n elements (its static stop rule)."""
    return int(np.ceil(3 * np.log(max(1, n)) / np.log(_UINT32_MAX)))


def _bucket(n: int, least: int) -> int:
    """n itself without the partitionable threefry (positions' keys then depend on the size), else the
    smallest power of two >= max(n, least)."""
    if not jax.config.jax_threefry_partitionable:
        return n
    return max(least, 1 << max(0, n - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("size", "sort_rounds", "count"))
def _padded(key: jax.Array, n: jax.Array, *, size: int, sort_rounds: int, count: int | None) -> jax.Array:
    """(max(count, 1), size) int32: row k's first n entries are jax.random.permutation(keys[k], n), with
    keys = jax.random.split(key, count), or (key,) for count None."""
    keys = key[None] if count is None else jax.random.split(key, count)
    valid = jnp.arange(size) < n

    def one(key):
        x = jnp.arange(size, dtype=jnp.int32)
        for _ in range(sort_rounds):  # jax.random.permutation's rounds, with the positions >= n sorted last
            key, subkey = jax.random.split(key)
            bits = jax.random.bits(subkey, (size,), jnp.uint32)
            _, x = jax.lax.sort_key_val(jnp.where(valid, bits, jnp.uint32(_UINT32_MAX)), x)
        return x

    return jax.vmap(one)(keys)


def permutation(key: jax.Array, n: int) -> np.ndarray:
    """jax.random.permutation(key, n): (n,) int32."""
    out = _padded(key, n, size=_bucket(n, _MIN_SIZE), sort_rounds=_sort_rounds(n), count=None)
    return np.asarray(out)[0, :n]


def permutations(key: jax.Array, n: int, count: int) -> np.ndarray:
    """(count, n) int32; row k is jax.random.permutation(jax.random.split(key, count)[k], n).

    The first `count` keys of a split do not depend on how many it draws (partitionable threefry), so
    `count` is bucketed like n."""
    out = _padded(key, n, size=_bucket(n, _MIN_SIZE), sort_rounds=_sort_rounds(n), count=_bucket(count, 1))
    return np.asarray(out)[:count, :n]

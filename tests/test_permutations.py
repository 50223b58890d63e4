"""Permutations compiled per size bucket: jax.random.permutation's values, one executable per bucket."""
import jax
import numpy as np
import pytest

from inas_jax.runtime.compilation import snapshot
from inas_jax.loop.permutations import permutation, permutations


@pytest.mark.parametrize("n", [1, 2, 5, 101, 256, 257, 1625, 1626, 4000, 50_000])
def test_a_permutation_equals_jax_random_permutation(n):
    """The same values as jax.random.permutation, on both sides of a bucket's edge (256) and of its
    second sorting round (1,626 elements on), so the splits and initial sets of runs do not change."""
    key = jax.random.key(n)
    got = permutation(key, n)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.asarray(jax.random.permutation(key, n)))


@pytest.mark.parametrize("n,count", [(1, 1), (7, 3), (30, 43), (257, 8), (1000, 2), (1700, 5)])
def test_permutations_equal_jax_random_permutation_of_each_split_key(n, count):
    key = jax.random.key(count)
    want = np.stack([np.asarray(jax.random.permutation(k, n)) for k in jax.random.split(key, count)])
    np.testing.assert_array_equal(permutations(key, n, count), want)


def test_sizes_in_one_bucket_share_one_executable():
    """A labelled set growing inside a bucket (here 300 -> 511, bucket 512) compiles nothing new:
    per size, jax.random.permutation compiled again every round."""
    key = jax.random.key(0)
    permutation(key, 300)
    permutations(key, 300, 7)
    before = snapshot()
    for n in (301, 400, 511):
        permutation(key, n)
        permutations(key, n, 5)  # 5..8 permutations share the bucket of 8
    assert snapshot().since(before).compiled == 0

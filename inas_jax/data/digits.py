"""The embedded offline source: scikit-learn's 8x8 handwritten digits."""
from __future__ import annotations

import numpy as np

from inas_jax.data.dataset import Dataset, checked


def load_digits(test_size: int = 497) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), as 1-channel uint8.

    Split by a fixed permutation (seed 0): 1,300 train / 497 test, independent of any run seed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:test_size], order[test_size:]
    return checked("digits", x[train], y[train], x[test], y[test], 10, origin={"source": "sklearn"})

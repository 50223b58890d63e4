"""Datasets by name: `load_dataset("digits" | "cifar10" | "cifar100" | "svhn" | "npz:PATH")`.

One module per source (digits.py, npz.py, tfds.py), each returning the `Dataset` of dataset.py.
TFDS is imported only when a TFDS dataset is asked for.
"""
from __future__ import annotations

from inas_jax.data.dataset import DataError, Dataset
from inas_jax.data.digits import load_digits
from inas_jax.data.npz import load_npz
from inas_jax.data.tfds import TFDS_NAMES, load_tfds

__all__ = ["DataError", "Dataset", "load_dataset", "load_digits", "load_npz", "load_tfds"]


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Loads `digits`, `cifar10`, `cifar100`, `svhn` (TFDS) or `npz:PATH`; raises DataError."""
    if name == "digits":
        return load_digits()
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir)
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    raise DataError(f"unknown dataset {name!r}: choose digits, cifar10, cifar100, svhn or npz:PATH")

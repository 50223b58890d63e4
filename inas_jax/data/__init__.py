"""Datasets by name: `load_dataset("digits" | "cifar10" | "cifar100" | "svhn" | "npz:PATH" | "folder:DIR")`.

One module per source (digits.py, npz.py, tfds.py, folder.py), each returning the `Dataset` of dataset.py.
TFDS is imported only when a TFDS dataset is asked for, Pillow only when images are decoded.
"""
from __future__ import annotations

from inas_jax.data.dataset import DataError, Dataset
from inas_jax.data.digits import load_digits
from inas_jax.data.folder import decode_images, load_folder
from inas_jax.data.npz import load_npz
from inas_jax.data.tfds import TFDS_NAMES, load_tfds

__all__ = ["DataError", "Dataset", "decode_images", "load_dataset", "load_digits", "load_folder", "load_npz",
           "load_tfds"]


def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None) -> Dataset:
    """Loads `digits`, `cifar10`, `cifar100`, `svhn` (TFDS), `npz:PATH` or `folder:DIR`; raises DataError.

    image_size: folders only, the side every image is resized to (None: the images' common size).
    """
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):], image_size)
    if image_size is not None:
        raise DataError(f"image_size applies to folder:DIR datasets only, not to {name!r}")
    if name == "digits":
        return load_digits()
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir)
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    raise DataError(f"unknown dataset {name!r}: choose digits, cifar10, cifar100, svhn, npz:PATH or folder:DIR")

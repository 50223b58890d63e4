"""TFDS datasets (cifar10, cifar100, svhn), read through `tfds.data_source`: array_record, no TensorFlow.

tensorflow_datasets is imported only when a TFDS dataset is loaded, so `import inas_jax.data` never needs it.
"""
from __future__ import annotations

import numpy as np

from inas_jax.data.dataset import DataError, Dataset, checked

TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
SVHN_POOL_SIZE = 50_000  # the paper trims SVHN's 73,257 training images to its first 50,000.

_TFDS_HELP = (
    "TFDS dataset {tfds_name!r} is not prepared in {where}. Reading a prepared dataset needs no "
    "TensorFlow, but preparing it does, once, on a machine with internet: `pip install tensorflow "
    "tensorflow-datasets` then `tfds build {tfds_name} --file_format=array_record{dir_flag}`, and pass "
    "the same directory with --data_dir. (The random-access reader needs the array_record format; a "
    "tfrecord copy must be rebuilt.) Cause: {cause}")


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
    """Reads a prepared TFDS dataset through `tfds.data_source` (array_record; no TensorFlow)."""
    import tensorflow_datasets as tfds

    tfds_name = TFDS_NAMES[name]
    try:
        train = tfds.data_source(tfds_name, split="train", data_dir=data_dir, download=False)
        test = tfds.data_source(tfds_name, split="test", data_dir=data_dir, download=False)
        info = tfds.builder(tfds_name, data_dir=data_dir).info
        num_classes, version = info.features["label"].num_classes, str(info.version)
    except Exception as err:  # TFDS raises several unrelated types for "not there"
        where = data_dir or "the default TFDS directory (~/tensorflow_datasets)"
        dir_flag = f" --data_dir={data_dir}" if data_dir else ""
        cause = " ".join(str(err).split())[:300]
        raise DataError(_TFDS_HELP.format(tfds_name=tfds_name, where=where, dir_flag=dir_flag,
                                          cause=cause)) from None
    n_train = min(len(train), SVHN_POOL_SIZE) if name == "svhn" else len(train)
    x_train, y_train = _read_source(train, n_train)
    x_test, y_test = _read_source(test, len(test))
    return checked(name, x_train, y_train, x_test, y_test, num_classes,
                   origin={"source": "tfds", "tfds_name": tfds_name, "version": version})


def _read_source(source, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n records of a TFDS random-access source as (images uint8, labels int32)."""
    images, labels = [], []
    for i in range(n):
        record = source[i]
        images.append(np.asarray(record["image"], np.uint8))
        labels.append(int(record["label"]))
    return np.stack(images), np.asarray(labels, np.int32)

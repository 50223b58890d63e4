"""Datasets: one immutable `Dataset` value from three sources (digits, TFDS, npz files).

Images are uint8 NHWC with 1 or 3 channels, at least 8x8; labels int32 in [0, num_classes).
Normalisation statistics (per-channel mean and std of x_train in [0, 1]) come from the train split
only. `Dataset.fingerprint` identifies the data, so a run can refuse to resume on other data.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import zipfile

import numpy as np

TFDS_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn_cropped"}
SVHN_POOL_SIZE = 50_000  # the paper trims SVHN's 73,257 training images to its first 50,000.
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MIN_IMAGE_SIZE = 8  # the smallest H and W the model is documented for.
_INT32_MAX = int(np.iinfo(np.int32).max)
_FLOAT_FORMS = ("expected [0, 1] or [0, 255] (floats all within [0, 1] are scaled by 255; "
                "above 1 they must be whole numbers)")


class DataError(ValueError):
    """A dataset cannot be read; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image classification dataset held in host memory.

    x_train (N, H, W, C) uint8, y_train (N,) int32, x_test (M, H, W, C) uint8, y_test (M,) int32.
    origin: JSON-able facts about the source that the arrays do not show (npz file size, TFDS version).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    origin: dict = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @functools.cached_property
    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (C,), std (C,)) of the train images scaled to [0, 1]; std floored at 1e-3.

        Exact integer sums over chunks of images: memory O(chunk), not a float copy of the pool.
        Computed once per Dataset (every round uses it).
        """
        channels = self.x_train.shape[-1]
        total, squares = np.zeros(channels, np.int64), np.zeros(channels, np.int64)
        for start in range(0, len(self.x_train), 256):
            x = self.x_train[start:start + 256].reshape(-1, channels).astype(np.int64)
            total += x.sum(0)
            squares += (x * x).sum(0)
        n = self.x_train.size // channels
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
        return (mean / 255.0).astype(np.float32), np.maximum(std / 255.0, 1e-3).astype(np.float32)

    @functools.cached_property
    def fingerprint(self) -> dict:
        """A small JSON-able dict identifying the data: equal fingerprints mean the same arrays.

        name, origin, split sizes, image shape, num_classes and a sha256 over the four arrays' dtypes,
        shapes and bytes (~0.1 s for CIFAR-10's 180 MB). Computed once per Dataset.
        """
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(array.data)
        return dict(name=self.name, **self.origin, train=len(self.x_train), test=len(self.x_test),
                    image_shape=list(self.image_shape), num_classes=int(self.num_classes),
                    sha256=digest.hexdigest())


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Loads `digits`, `cifar10`, `cifar100`, `svhn` (TFDS) or `npz:PATH`; raises DataError."""
    if name == "digits":
        return load_digits()
    if name in TFDS_NAMES:
        return load_tfds(name, data_dir)
    if name.startswith("npz:"):
        return load_npz(name[len("npz:"):])
    raise DataError(f"unknown dataset {name!r}: choose digits, cifar10, cifar100, svhn or npz:PATH")


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
    return _checked("digits", x[train], y[train], x[test], y[test], 10, origin={"source": "sklearn"})


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
    return _checked(name, x_train, y_train, x_test, y_test, num_classes,
                    origin={"source": "tfds", "tfds_name": tfds_name, "version": version})


def _read_source(source, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n records of a TFDS random-access source as (images uint8, labels int32)."""
    images, labels = [], []
    for i in range(n):
        record = source[i]
        images.append(np.asarray(record["image"], np.uint8))
        labels.append(int(record["label"]))
    return np.stack(images), np.asarray(labels, np.int32)


def load_npz(path: str) -> Dataset:
    """Reads the arrays x_train, y_train, x_test, y_test from an .npz file.

    Images: rank 4 NHWC (rank 3 = one channel), 1 or 3 channels, H and W at least MIN_IMAGE_SIZE
    (8), uint8 or float. A float array whose values all lie in [0, 1] is scaled by 255 and rounded;
    otherwise its values must be whole numbers in [0, 255]; anything else (NaN, negative, above 255,
    fractions above 1) is refused, not guessed.
    Labels: integers (checked before the int32 cast, so nothing wraps) that number the classes
    0..K-1 without gaps: num_classes = largest y_train label + 1, and every class must have a
    training image, so a stray huge label is refused instead of inflating the model's head, and
    num_classes never exceeds the training images. Every y_test label must be a y_train class.
    Pickled objects are refused.
    """
    if not os.path.isfile(path):
        raise DataError(f"npz file {path!r} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz file {path!r} cannot be read: it is not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(f"npz file {path!r} lacks the arrays {missing}; it needs {list(NPZ_KEYS)}")
            arrays = {k: archive[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"npz file {path!r} holds pickled objects, which are refused; "
                            "store plain numeric arrays") from None
        raise DataError(f"npz file {path!r} cannot be read: {err}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"npz file {path!r} cannot be read: {err}") from None
    x_train, x_test = (_as_uint8_images(arrays[k], k, path) for k in ("x_train", "x_test"))
    y_train, y_test = (_as_labels(arrays[k], k, path) for k in ("y_train", "y_test"))
    num_classes = _num_classes(y_train, path)
    if y_test.size and y_test.max() >= num_classes:
        raise DataError(f"y_test in {path!r} has label {int(y_test.max())} but y_train's labels are "
                        f"0..{num_classes - 1}: every test class must occur in training")
    name = "npz:" + os.path.basename(path)
    return _checked(name, x_train, y_train, x_test, y_test, num_classes, source=path,
                    origin={"source": "npz", "file_bytes": os.path.getsize(path)})


def _num_classes(y_train: np.ndarray, path: str) -> int:
    """Largest label + 1, after checking that every class 0..K-1 has a training image."""
    classes = np.unique(y_train)
    if not classes.size:
        return 1
    top = int(classes[-1])
    if len(classes) != top + 1:
        missing = int(np.argmax(classes != np.arange(len(classes))))
        raise DataError(f"y_train in {path!r} has label {top}, but class {missing} has no training image "
                        f"({top + 1 - len(classes):,} of classes 0..{top} are empty): labels must number "
                        "the classes 0..K-1 without gaps")
    return top + 1


def _as_uint8_images(x: np.ndarray, key: str, path: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{key} in {path!r} has shape {x.shape}: expected (N, H, W, C) images")
    if x.shape[-1] not in (1, 3):
        raise DataError(f"{key} in {path!r} has {x.shape[-1]} channels: expected 1 or 3 (NHWC layout)")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return _float_as_uint8(x, key, path)
    raise DataError(f"{key} in {path!r} has dtype {x.dtype}: expected uint8 or float images")


def _float_as_uint8(x: np.ndarray, key: str, path: str, chunk: int = 1024) -> np.ndarray:
    """Float images -> uint8 by the rule of load_npz, in chunks of images (no full float copy)."""
    if not x.size:
        return x.astype(np.uint8)
    lo, hi = float(x.min()), float(x.max())  # NaN propagates into both; infinities show up in one
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{key} in {path!r} contains NaN or infinite values")
    if lo < 0 or hi > 255:
        raise DataError(f"{key} in {path!r} has float values in [{lo:g}, {hi:g}]: {_FLOAT_FORMS}")
    scale = 255.0 if hi <= 1.0 else 1.0
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        if scale == 1.0 and not np.array_equal(part, np.round(part)):
            raise DataError(f"{key} in {path!r} has float values in [{lo:g}, {hi:g}] that are not whole "
                            f"numbers: {_FLOAT_FORMS}")
        out[start:start + chunk] = np.round(part * scale)
    return out


def _as_labels(y: np.ndarray, key: str, path: str) -> np.ndarray:
    y = np.squeeze(y) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise DataError(f"{key} in {path!r} has shape {y.shape}: expected (N,) integer labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{key} in {path!r} has dtype {y.dtype}: expected integer labels")
    if y.size and y.min() < 0:
        raise DataError(f"{key} in {path!r} has a negative label {int(y.min())}")
    if y.size and int(y.max()) > _INT32_MAX:
        raise DataError(f"{key} in {path!r} has label {int(y.max())}, which does not fit int32 "
                        f"(at most {_INT32_MAX:,})")
    return y.astype(np.int32)


def _checked(name, x_train, y_train, x_test, y_test, num_classes, source=None, origin=None) -> Dataset:
    where = f" in {source!r}" if source else ""
    for xs, ys, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(xs) != len(ys):
            raise DataError(f"x_{split} has {len(xs)} images but y_{split} has {len(ys)} labels{where}")
        if len(xs) == 0:
            raise DataError(f"the {split} split{where} is empty")
        if ys.max() >= num_classes:
            raise DataError(f"y_{split}{where} has label {int(ys.max())} >= num_classes {num_classes}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ{where}")
    height, width = x_train.shape[1:3]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise DataError(f"images{where} are {height}x{width}: they must be at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    if num_classes < 2:
        raise DataError(f"dataset {name!r}{where} has fewer than 2 classes")
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), num_classes,
                   dict(origin or {}))

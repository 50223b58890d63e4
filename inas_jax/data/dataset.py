"""The dataset value every source returns: `Dataset`, `DataError` and the checks shared by all sources.

Images are uint8 NHWC with 1 or 3 channels, at least 8x8; labels int32 in [0, num_classes).
Normalisation statistics (per-channel mean and std of x_train in [0, 1]) come from the train split
only. `Dataset.fingerprint` identifies the data, so a run can refuse to resume on other data.
The sources live beside this module (digits.py, npz.py, tfds.py, folder.py); `inas_jax.data.load_dataset`
picks one by name.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

MIN_IMAGE_SIZE = 8  # the smallest H and W the model is documented for.


class DataError(ValueError):
    """A dataset cannot be read; the message says what is wrong and how to fix it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image classification dataset held in host memory.

    x_train (N, H, W, C) uint8, y_train (N,) int32, x_test (M, H, W, C) uint8, y_test (M,) int32.
    origin: JSON-able facts about the source that the arrays do not show (npz file size, TFDS version).
    The rest is set by image folders (folder.py) and left at the defaults by the other sources:
    class_names (K,) the classes' names (empty: "0".."K-1"); train_files (N,) and test_files (M,) each
    image's path relative to the folder (posix); labels_known False for a real pool, whose y_train holds -1
    for every image without a label and initial_idx (L,) int64 the pool indices that have one; root the
    folder's absolute path (not part of the fingerprint, so a moved folder resumes).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    origin: dict = dataclasses.field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    initial_idx: np.ndarray | None = None
    labels_known: bool = True
    root: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def classes(self) -> tuple[str, ...]:
        """The K class names: class_names, or "0".."K-1" for sources that name none."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))

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
        shapes and bytes (~0.1 s for CIFAR-10's 180 MB). Only when they differ from the defaults:
        class_names, files_sha256 (over train_files and test_files) and labels_known. Computed once.
        """
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(array.data)
        extra = {}
        if self.class_names:
            extra["class_names"] = list(self.class_names)
        if self.train_files or self.test_files:
            files = json.dumps([self.train_files, self.test_files])
            extra["files_sha256"] = hashlib.sha256(files.encode()).hexdigest()
        if not self.labels_known:
            extra["labels_known"] = False
        return dict(name=self.name, **self.origin, train=len(self.x_train), test=len(self.x_test),
                    image_shape=list(self.image_shape), num_classes=int(self.num_classes),
                    sha256=digest.hexdigest(), **extra)


def checked(name, x_train, y_train, x_test, y_test, num_classes, source=None, origin=None, *,
            allow_empty_test=False, **fields) -> Dataset:
    """The Dataset of a source's arrays, after the checks every source shares (sizes, shapes, labels).

    allow_empty_test: an empty test split is accepted (image folders, whose test/ is optional).
    fields: the image-folder fields of Dataset (class_names, train_files, test_files, initial_idx,
    labels_known, root), checked against the arrays.
    """
    where = f" in {source!r}" if source else ""
    labels_known = fields.get("labels_known", True)
    for xs, ys, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        _check_split(xs, ys, split, num_classes, where,
                     allow_empty=allow_empty_test and split == "test",
                     lowest=-1 if split == "train" and not labels_known else 0)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ{where}")
    height, width = x_train.shape[1:3]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise DataError(f"images{where} are {height}x{width}: they must be at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    if num_classes < 2:
        raise DataError(f"dataset {name!r}{where} has fewer than 2 classes")
    _check_fields(fields, y_train, len(x_test), num_classes, where)
    return Dataset(name, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), num_classes,
                   dict(origin or {}), **fields)


def _check_split(xs, ys, split, num_classes, where, allow_empty, lowest) -> None:
    """One split's images and labels: as many of each, not empty (unless allowed), labels in range."""
    if len(xs) != len(ys):
        raise DataError(f"x_{split} has {len(xs)} images but y_{split} has {len(ys)} labels{where}")
    if len(xs) == 0:
        if allow_empty:
            return
        raise DataError(f"the {split} split{where} is empty")
    if ys.max() >= num_classes:
        raise DataError(f"y_{split}{where} has label {int(ys.max())} >= num_classes {num_classes}")
    if ys.min() < lowest:
        raise DataError(f"y_{split}{where} has label {int(ys.min())}: labels must be 0..{num_classes - 1}"
                        + (" or -1 (unknown)" if lowest < 0 else ""))


def _check_fields(fields, y_train, test_size, num_classes, where) -> None:
    """The image-folder fields agree with the arrays: one name per class, one file per image, and
    initial_idx the pool images whose label is known."""
    names, initial = fields.get("class_names", ()), fields.get("initial_idx")
    if names and len(names) != num_classes:
        raise DataError(f"{len(names)} class names for {num_classes} classes{where}")
    for split, size in (("train", len(y_train)), ("test", test_size)):
        files = fields.get(f"{split}_files", ())
        if files and len(files) != size:
            raise DataError(f"{len(files)} {split} file names for {size} {split} images{where}")
    if fields.get("labels_known", True):
        if initial is not None:
            raise DataError(f"initial_idx is given{where} although every label is known")
    elif initial is None or not np.array_equal(initial, np.flatnonzero(y_train >= 0)):
        raise DataError(f"initial_idx{where} must list exactly the pool images whose label is known")

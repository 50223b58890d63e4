"""Arrays from an .npz file, validated: what is accepted is documented in `load_npz`; the rest is refused."""
from __future__ import annotations

import os
import zipfile

import numpy as np

from inas_jax.data.dataset import DataError, Dataset, checked

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_INT32_MAX = int(np.iinfo(np.int32).max)
_FLOAT_FORMS = ("expected [0, 1] or [0, 255] (floats all within [0, 1] are scaled by 255; "
                "above 1 they must be whole numbers)")


def load_npz(path: str) -> Dataset:
    """Reads the arrays x_train, y_train, x_test, y_test from an .npz file.

    Images: rank 4 NHWC (rank 3 = one channel), 1 or 3 channels, H and W at least dataset.MIN_IMAGE_SIZE
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
    check_sizes(path)
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
    return checked(name, x_train, y_train, x_test, y_test, num_classes, source=path,
                   origin={"source": "npz", "file_bytes": os.path.getsize(path)})


def check_sizes(path: str, memory: int | None = None) -> None:
    """Refuses, before anything is decompressed, an npz whose arrays (by their .npy headers) or members (by
    the sizes the zip directory declares) would take more than half of `memory` (default: the memory
    available), and a member whose declared size does not match its header (a zip bomb)."""
    from inas_jax.runtime.resources import available_memory
    budget = (available_memory() if memory is None else memory) // 2
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(member))
                    if read_header is None:
                        raise ValueError(f"member {info.filename!r} is not an .npy array of a known version")
                    shape, _, dtype = read_header(member)
                    if dtype.hasobject:
                        raise DataError(f"npz file {path!r} holds pickled objects, which are refused; store plain "
                                        "numeric arrays")
                    payload = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if info.file_size > member.tell() + payload:
                        raise DataError(f"npz file {path!r}: member {info.filename!r} declares "
                                        f"{info.file_size:,} bytes for an array of {payload:,}; refused")
                total += payload
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"npz file {path!r} cannot be read: {err}") from None
    if total > budget:
        raise DataError(f"npz file {path!r} holds arrays of {total / 2 ** 30:,.1f} GiB, more than half of the "
                        f"{2 * budget / 2 ** 30:.1f} GiB of memory available")


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

"""The data guard: a run's data is identified by its fingerprint, every array of it, the test split
included, so a workdir refuses to resume on data that differs anywhere (here in one test image or
one test label only)."""
import dataclasses

import numpy as np
import pytest

from conftest import tiny_config
from inas_jax.data import Dataset
from inas_jax.store import RunStore, WorkdirError


def _changed(dataset: Dataset, array: str) -> Dataset:
    """`dataset` with one value of `array` changed: a pixel of the last image, or the last label."""
    values = getattr(dataset, array).copy()
    flat = values.reshape(-1)
    flat[-1] = (int(flat[-1]) + 1) % (dataset.num_classes if array.startswith("y") else 256)
    return dataclasses.replace(dataset, **{array: values})


ARRAYS = ["x_train", "y_train", "x_test", "y_test"]


def test_equal_arrays_give_equal_fingerprints(digits):
    copy = Dataset(digits.name, digits.x_train.copy(), digits.y_train.copy(), digits.x_test.copy(),
                   digits.y_test.copy(), digits.num_classes, dict(digits.origin))
    assert copy.fingerprint == digits.fingerprint


@pytest.mark.parametrize("array", ARRAYS)
def test_one_value_of_any_array_changes_the_fingerprint(digits, array):
    other = _changed(digits, array)
    assert np.sum(getattr(other, array) != getattr(digits, array)) == 1
    # sizes, shapes and classes are the same: only the digest can tell the two apart
    assert {k: v for k, v in other.fingerprint.items() if k != "sha256"} == \
        {k: v for k, v in digits.fingerprint.items() if k != "sha256"}
    assert other.fingerprint["sha256"] != digits.fingerprint["sha256"]


@pytest.mark.parametrize("array", ["x_test", "y_test"])
def test_a_workdir_refuses_data_that_differs_only_in_its_test_split(tmp_path, digits, array):
    cfg = tiny_config()
    store = RunStore(tmp_path, cfg, digits.fingerprint)
    store.open()
    store.close()
    other = RunStore(tmp_path, cfg, _changed(digits, array).fingerprint)
    with pytest.raises(WorkdirError, match=r"other settings or data \(data\.sha256: "):
        other.open()
    again = RunStore(tmp_path, cfg, digits.fingerprint)  # the same data still opens it
    again.open()
    again.close()

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import CIFAR10_NPZ
from inas_jax import data
from inas_jax.data import DataError, load_dataset, load_npz


def test_digits_is_deterministic_offline_and_one_channel(digits):
    again = data.load_digits()
    np.testing.assert_array_equal(digits.x_train, again.x_train)
    assert digits.x_train.shape == (1300, 8, 8, 1) and digits.x_test.shape == (497, 8, 8, 1)
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int32
    assert digits.num_classes == 10 and set(np.unique(digits.y_test)) == set(range(10))


def test_channel_stats_come_from_train_split_only(digits):
    mean, std = digits.channel_stats
    np.testing.assert_allclose(mean, [digits.x_train.mean() / 255], rtol=1e-5)
    np.testing.assert_allclose(std, [digits.x_train.std() / 255], rtol=1e-4)


def test_channel_stats_of_a_large_pool_are_exact_without_a_float_copy():
    # 5,000 3-channel 32x32 images across several chunks; a float64 copy of them would take 123 MB.
    import tracemalloc
    x = np.random.default_rng(0).integers(0, 256, (5000, 32, 32, 3), np.uint8)
    ds = data.Dataset("t", x, np.zeros(5000, np.int64), x[:2], np.zeros(2, np.int64), 10)
    tracemalloc.start()
    mean, std = ds.channel_stats
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    flat = x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-6)
    assert peak < 40 * 2 ** 20, f"channel_stats peaked at {peak / 2 ** 20:.0f} MB"


def _write(path, **arrays):
    base = dict(x_train=np.zeros((4, 8, 8, 3), np.uint8), y_train=np.array([0, 1, 2, 1]),
                x_test=np.zeros((2, 8, 8, 3), np.uint8), y_test=np.array([0, 2]))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return str(path)


def test_npz_valid_uint8_and_float(tmp_path):
    ds = load_npz(_write(tmp_path / "ok.npz"))
    assert ds.num_classes == 3 and ds.image_shape == (8, 8, 3)
    ds = load_npz(_write(tmp_path / "f.npz", x_train=np.full((4, 8, 8), 0.5, np.float32),
                         x_test=np.ones((2, 8, 8), np.float32)))
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (4, 8, 8, 1) and ds.x_test.max() == 255
    assert load_dataset("npz:" + _write(tmp_path / "via.npz")).name == "npz:via.npz"


@pytest.mark.parametrize("arrays,message", [
    (dict(x_train=np.zeros((4, 8, 8, 3, 1), np.uint8)), "expected \\(N, H, W, C\\)"),
    (dict(x_train=np.zeros((4, 8, 8, 4), np.uint8)), "4 channels"),
    (dict(x_train=np.zeros((4, 8, 8, 3), np.int64)), "dtype int64"),
    (dict(y_train=np.array([0.0, 1.0, 2.0, 1.0])), "expected integer labels"),
    (dict(y_train=np.array([0, 1, -1, 1])), "negative label"),
    (dict(y_train=np.array([0, 1, 2])), "4 images but y_train has 3"),
    (dict(x_test=np.zeros((2, 9, 9, 3), np.uint8)), "differ"),
    (dict(x_test=np.full((2, 8, 8, 3), np.nan, np.float32)), "NaN"),
    (dict(x_test=np.full((2, 8, 8, 3), 300.0, np.float32)), "expected \\[0, 1\\] or \\[0, 255\\]"),
    (dict(y_test=None), "lacks the arrays \\['y_test'\\]"),
])
def test_npz_validation_names_the_problem(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_npz(_write(tmp_path / "bad.npz", **arrays))


def test_npz_refuses_pickles_missing_and_garbage(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x_train=np.array([{"a": 1}], dtype=object), y_train=np.array([0]),
             x_test=np.zeros((1, 8, 8, 3), np.uint8), y_test=np.array([0]))
    with pytest.raises(DataError, match="pickled"):
        load_npz(str(path))
    with pytest.raises(DataError, match="does not exist"):
        load_npz(str(tmp_path / "absent.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="cannot be read"):
        load_npz(str(garbage))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100), ("svhn", 10)])
def test_tfds_path_on_mock_data(name, classes, tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset(name, data_dir=str(tmp_path))
    assert ds.x_train.shape == (6, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.num_classes == classes and ds.y_train.dtype == np.int32
    assert ds.y_train.max() < classes and len(ds.x_test) == 6


def test_svhn_is_trimmed_to_the_first_pool_images(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SVHN_POOL_SIZE", 4)
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset("svhn", data_dir=str(tmp_path))
        first = tfds.data_source("svhn_cropped", split="train", data_dir=str(tmp_path))
        expected = np.stack([first[i]["image"] for i in range(4)])
    np.testing.assert_array_equal(ds.x_train, expected)
    assert len(ds.x_test) == 6


def test_tfds_not_prepared_gives_one_paragraph_help(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(err.value)
    assert "tfds build cifar10 --file_format=array_record" in message and str(tmp_path) in message
    assert "\n" not in message and err.value.__cause__ is None


@pytest.mark.skipif(not CIFAR10_NPZ.exists(), reason=f"real CIFAR-10 not present at {CIFAR10_NPZ}")
def test_real_cifar10_npz_reads():
    ds = load_npz(str(CIFAR10_NPZ))
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_test.shape == (10_000, 32, 32, 3)
    assert ds.num_classes == 10 and np.bincount(ds.y_train).tolist() == [5000] * 10
    np.testing.assert_allclose(ds.channel_stats[0], [0.4914, 0.4822, 0.4465], atol=1e-3)

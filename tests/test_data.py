import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import CIFAR10_NPZ
from inas_jax import data
from inas_jax.data import DataError, load_dataset, load_npz
from inas_jax.data import npz as npz_source
from inas_jax.data import tfds as tfds_source


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
    (dict(y_train=np.array([0, 1, 2, 2 ** 32 + 1], np.int64)), "label 4294967297, which does not fit int32"),
    (dict(y_train=np.array([0, 1, 2, 2 ** 63], np.uint64)), "label 9223372036854775808, which does not fit"),
    (dict(y_train=np.array([0, 1, 2, 10 ** 9])), "label 1000000000, but class 3 has no training image"),
    (dict(y_train=np.array([1, 2, 3, 2]), y_test=np.array([1, 3])), "label 3, but class 0 has no training"),
    (dict(x_train=np.zeros((4, 4, 8, 3), np.uint8), x_test=np.zeros((2, 4, 8, 3), np.uint8)),
     "are 4x8: they must be at least 8x8"),
    (dict(x_train=np.zeros((4, 1, 1, 3), np.uint8), x_test=np.zeros((2, 1, 1, 3), np.uint8)), "are 1x1"),
    (dict(x_test=np.full((2, 8, 8, 3), 3.5, np.float32)),
     "values in \\[3.5, 3.5\\] that are not whole numbers: expected \\[0, 1\\] or \\[0, 255\\]"),
    (dict(x_train=np.linspace(0, 2, 4 * 8 * 8 * 3).reshape(4, 8, 8, 3)), "\\[0, 2\\] that are not whole"),
    (dict(x_test=np.full((2, 8, 8, 3), -np.inf, np.float32)), "NaN or infinite"),
])
def test_npz_validation_names_the_problem(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_npz(_write(tmp_path / "bad.npz", **arrays))


def test_npz_float_images_follow_the_two_documented_forms(tmp_path):
    whole = np.arange(4 * 8 * 8, dtype=np.float64).reshape(4, 8, 8) % 256
    unit = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    ds = load_npz(_write(tmp_path / "f.npz", x_train=whole, x_test=unit))
    np.testing.assert_array_equal(ds.x_train[..., 0], whole.astype(np.uint8))  # whole numbers: as they are
    np.testing.assert_array_equal(ds.x_test[..., 0], np.round(unit * 255).astype(np.uint8))  # [0, 1]: x 255
    x = np.arange(5 * 8 * 8, dtype=np.float32).reshape(5, 8, 8, 1) % 256
    np.testing.assert_array_equal(npz_source._float_as_uint8(x, "x_train", "f.npz", chunk=2), x.astype(np.uint8))
    x[4, 0, 0, 0] = 0.5  # a fraction in the last chunk
    with pytest.raises(DataError, match="not whole numbers"):
        npz_source._float_as_uint8(x, "x_train", "f.npz", chunk=2)


def test_npz_labels_keep_their_values_and_classes_match_the_data(tmp_path):
    ds = load_npz(_write(tmp_path / "int64.npz", y_train=np.array([0, 1, 2, 3], np.int64)))
    assert ds.y_train.tolist() == [0, 1, 2, 3] and ds.num_classes == 4
    ds = load_npz(_write(tmp_path / "u8.npz", y_train=np.array([[0], [1], [2], [1]], np.uint8)))
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 3


def _fingerprint(path, **arrays):
    return load_npz(_write(path, **arrays)).fingerprint


def test_fingerprint_identifies_npz_data(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8)
    ds = load_npz(_write(tmp_path / "a.npz", x_train=x))
    fp = ds.fingerprint
    assert ds.fingerprint is fp  # computed once
    assert json.loads(json.dumps(fp)) == fp
    assert fp["source"] == "npz" and fp["file_bytes"] == os.path.getsize(tmp_path / "a.npz")
    assert (fp["train"], fp["test"], fp["image_shape"], fp["num_classes"]) == (4, 2, [8, 8, 3], 3)
    os.makedirs(tmp_path / "elsewhere")
    assert _fingerprint(tmp_path / "elsewhere" / "a.npz", x_train=x) == fp  # the same data at another path
    changed = x.copy()
    changed[3, 7, 7, 2] ^= 1
    assert _fingerprint(tmp_path / "b.npz", x_train=changed)["sha256"] != fp["sha256"]
    assert _fingerprint(tmp_path / "c.npz", x_train=x, y_train=np.array([0, 1, 2, 2]))["sha256"] != fp["sha256"]
    assert _fingerprint(tmp_path / "d.npz", x_train=x, y_test=np.array([2, 0]))["sha256"] != fp["sha256"]
    as_float = _fingerprint(tmp_path / "e.npz", x_train=x.astype(np.float32))
    assert as_float["sha256"] == fp["sha256"] and as_float["file_bytes"] != fp["file_bytes"]


def test_fingerprint_of_digits_and_tfds(digits, tmp_path):
    fp = digits.fingerprint
    assert fp == data.load_digits().fingerprint and json.loads(json.dumps(fp)) == fp
    assert (fp["name"], fp["source"], fp["train"], fp["test"]) == ("digits", "sklearn", 1300, 497)
    assert fp["num_classes"] == 10 and fp["image_shape"] == [8, 8, 1]
    shuffled = data.Dataset("digits", digits.x_train, digits.y_train[::-1], digits.x_test, digits.y_test, 10)
    assert shuffled.fingerprint["sha256"] != fp["sha256"]
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset("cifar10", data_dir=str(tmp_path))
        version = str(tfds.builder("cifar10", data_dir=str(tmp_path)).info.version)
    fp = ds.fingerprint
    assert fp["source"] == "tfds" and fp["tfds_name"] == "cifar10" and fp["version"] == version
    assert (fp["train"], fp["test"]) == (6, 6) and json.loads(json.dumps(fp)) == fp


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


def test_importing_the_data_package_needs_no_tfds():
    # TFDS (and what it pulls in) is imported only when a TFDS dataset is asked for.
    script = ("import sys, inas_jax.data; from inas_jax.data import load_dataset; load_dataset('digits'); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow_datasets', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=600).stdout
    assert out.strip() == "[]", out


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
    monkeypatch.setattr(tfds_source, "SVHN_POOL_SIZE", 4)
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
    start = time.perf_counter()
    fp = ds.fingerprint
    assert time.perf_counter() - start < 5, "hashing 180 MB should take well under a second"
    assert fp["file_bytes"] == CIFAR10_NPZ.stat().st_size and len(fp["sha256"]) == 64

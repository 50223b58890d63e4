import jax
import numpy as np

from inas_jax.augment import augment


def _images(shape=(16, 12, 12, 3)):
    return np.asarray(jax.random.randint(jax.random.key(0), shape, 0, 256), np.uint8)


def test_preserves_shape_dtype_and_differs_across_keys():
    x = _images()
    a = augment(jax.random.key(1), x, flip=True, max_shift=4, max_rotation=15.0)
    b = augment(jax.random.key(2), x, flip=True, max_shift=4, max_rotation=15.0)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, augment(jax.random.key(1), x, flip=True, max_shift=4, max_rotation=15.0))


def test_all_off_is_identity():
    x = _images()
    np.testing.assert_array_equal(augment(jax.random.key(3), x, flip=False, max_shift=0, max_rotation=0.0), x)


def test_flip_only_mirrors_exactly():
    x = _images()
    out = np.asarray(augment(jax.random.key(4), x, flip=True, max_shift=0, max_rotation=0.0))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_shift_only_is_an_exact_integer_translation_with_edge_fill():
    x = _images((32, 10, 10, 1))
    out = np.asarray(augment(jax.random.key(5), x, flip=False, max_shift=2, max_rotation=0.0))
    for o, img in zip(out, x):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = np.clip(np.arange(10) - dy, 0, 9)
                cols = np.clip(np.arange(10) - dx, 0, 9)
                matches.append(np.array_equal(o, img[rows][:, cols]))
        assert any(matches)

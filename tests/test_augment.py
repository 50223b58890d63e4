import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.loop.augment import augment


def _images(shape=(16, 12, 12, 3)):
    """Random uint8 images (numpy's generator: jax.random would compile a program per shape)."""
    return np.random.default_rng(0).integers(0, 256, shape, np.uint8)


def _all(x):
    return np.arange(len(x), dtype=np.int32)


def _reference(key, images, *, flip, max_shift, max_rotation):
    """The per-image formulation: one vmapped affine warp of each gathered image (the same draws)."""
    b, h, w, _ = images.shape
    k_flip, k_shift, k_rot = jax.random.split(key, 3)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,)) & flip
    shifts = jax.random.randint(k_shift, (b, 2), -max_shift, max_shift + 1).astype(jnp.float32)
    angles = jnp.deg2rad(jax.random.uniform(k_rot, (b,), minval=-max_rotation, maxval=max_rotation))

    def warp(image, flip, shift, angle):
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
        xx = jnp.where(flip, (w - 1) - xx, xx)
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        dy, dx = yy - cy, xx - cx
        src_y = jnp.clip(cos * dy - sin * dx + cy - shift[0], 0, h - 1)
        src_x = jnp.clip(sin * dy + cos * dx + cx - shift[1], 0, w - 1)
        y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
        wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
        y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
        y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
        top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
        bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
        return top * (1 - wy) + bottom * wy

    out = jax.vmap(warp)(images.astype(jnp.float32), flips, shifts, angles)
    return jnp.round(out).astype(images.dtype)


def test_gathering_from_the_pool_equals_warping_each_gathered_image():
    """Bit for bit, under jit, with repeated and unordered indices: the training runs' numbers."""
    pool = _images((40, 32, 32, 3))
    idx = np.array([39, 0, 5, 5, 17, 2, 33, 8], np.int32)
    settings = dict(flip=True, max_shift=4, max_rotation=15.0)
    key = jax.random.key(11)
    got = jax.jit(lambda k, p, i: augment(k, p, i, **settings))(key, pool, idx)
    want = jax.jit(lambda k, x: _reference(k, x, **settings))(key, pool[idx])
    np.testing.assert_array_equal(got, want)


def test_preserves_shape_dtype_and_differs_across_keys():
    x = _images()
    a = augment(jax.random.key(1), x, _all(x), flip=True, max_shift=4, max_rotation=15.0)
    b = augment(jax.random.key(2), x, _all(x), flip=True, max_shift=4, max_rotation=15.0)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, augment(jax.random.key(1), x, _all(x), flip=True, max_shift=4,
                                             max_rotation=15.0))


def test_all_off_is_the_gathered_batch():
    x = _images()
    idx = np.array([3, 1, 3], np.int32)
    np.testing.assert_array_equal(augment(jax.random.key(3), x, idx, flip=False, max_shift=0, max_rotation=0.0),
                                  x[idx])


def test_flip_only_mirrors_exactly():
    x = _images()
    out = np.asarray(augment(jax.random.key(4), x, _all(x), flip=True, max_shift=0, max_rotation=0.0))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_shift_only_is_an_exact_integer_translation_with_edge_fill():
    x = _images((32, 10, 10, 1))
    out = np.asarray(augment(jax.random.key(5), x, _all(x), flip=False, max_shift=2, max_rotation=0.0))
    for o, img in zip(out, x):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = np.clip(np.arange(10) - dy, 0, 9)
                cols = np.clip(np.arange(10) - dx, 0, 9)
                matches.append(np.array_equal(o, img[rows][:, cols]))
        assert any(matches)

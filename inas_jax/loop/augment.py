"""On-device data augmentation inside jit: horizontal flips, shifts and rotations.

Shift and rotation are one affine map per image, sampled bilinearly with edge clamping (the
'nearest' fill of the original Keras pipeline). Integer shifts without rotation are exact. The four
bilinear taps are gathered straight from the pool by flat pixel index, so the batch is never copied
out of the pool first.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def augment(key: jax.Array, pool: jax.Array, idx: jax.Array, *, flip: bool, max_shift: int,
            max_rotation: float) -> jax.Array:
    """Randomly transformed copies of the images pool[idx]: pool (N, H, W, C), idx (B,) int32 ->
    (B, H, W, C) of pool's dtype.

    flip: mirror left-right with probability 1/2. max_shift: integer shifts drawn uniformly in
    [-max_shift, max_shift] pixels per axis. max_rotation: angle uniform in +-max_rotation degrees.
    Output pixel p of image i reads pool[idx[i]] at R(-angle) (p - c) + c - shift, mirrored if flip.
    """
    if not flip and max_shift == 0 and max_rotation == 0:
        return pool[idx]
    n, h, w, c = pool.shape
    b = idx.shape[0]
    k_flip, k_shift, k_rot = jax.random.split(key, 3)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,)) & flip
    shifts = jax.random.randint(k_shift, (b, 2), -max_shift, max_shift + 1).astype(jnp.float32)
    angles = jnp.deg2rad(jax.random.uniform(k_rot, (b,), minval=-max_rotation, maxval=max_rotation))

    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    xx = jnp.where(flips[:, None, None], (w - 1) - xx, xx)  # (B, H, W)
    cos, sin = jnp.cos(angles)[:, None, None], jnp.sin(angles)[:, None, None]
    dy, dx = yy - cy, xx - cx
    src_y = cos * dy - sin * dx + cy - shifts[:, 0, None, None]
    src_x = sin * dy + cos * dx + cx - shifts[:, 1, None, None]
    src_y, src_x = jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)
    y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
    wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)

    pixels = pool.reshape(n * h * w, c)
    first = (idx.astype(jnp.int32) * (h * w))[:, None, None]  # flat index of each image's first pixel

    def tap(y, x):
        return jnp.take(pixels, first + y * w + x, axis=0, mode="clip").astype(jnp.float32)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x1) * wx
    bottom = tap(y1, x0) * (1 - wx) + tap(y1, x1) * wx
    out = top * (1 - wy) + bottom * wy
    if jnp.issubdtype(pool.dtype, jnp.integer):
        out = jnp.round(out)
    return out.astype(pool.dtype)

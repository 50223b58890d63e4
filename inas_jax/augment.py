"""On-device data augmentation inside jit: horizontal flips, shifts and rotations.

Shift and rotation are one affine map per image, sampled bilinearly with edge clamping (the
'nearest' fill of the original Keras pipeline). Integer shifts without rotation are exact.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def augment(key: jax.Array, images: jax.Array, *, flip: bool, max_shift: int,
            max_rotation: float) -> jax.Array:
    """Randomly transforms a batch (B, H, W, C); returns the same shape and dtype.

    flip: mirror left-right with probability 1/2. max_shift: integer shifts drawn uniformly in
    [-max_shift, max_shift] pixels per axis. max_rotation: angle uniform in +-max_rotation degrees.
    """
    if not flip and max_shift == 0 and max_rotation == 0:
        return images
    b, h, w, _ = images.shape
    k_flip, k_shift, k_rot = jax.random.split(key, 3)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,)) & flip
    shifts = jax.random.randint(k_shift, (b, 2), -max_shift, max_shift + 1).astype(jnp.float32)
    angles = jnp.deg2rad(jax.random.uniform(k_rot, (b,), minval=-max_rotation, maxval=max_rotation))
    out = jax.vmap(_warp)(images.astype(jnp.float32), flips, shifts, angles)
    if jnp.issubdtype(images.dtype, jnp.integer):
        out = jnp.round(out)
    return out.astype(images.dtype)


def _warp(image: jax.Array, flip: jax.Array, shift: jax.Array, angle: jax.Array) -> jax.Array:
    """One image (H, W, C): output pixel p reads input at R(-angle) (p - c) + c - shift, mirrored if flip."""
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    xx = jnp.where(flip, (w - 1) - xx, xx)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    dy, dx = yy - cy, xx - cx
    src_y = cos * dy - sin * dx + cy - shift[0]
    src_x = sin * dy + cos * dx + cx - shift[1]
    src_y, src_x = jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)
    y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
    wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return top * (1 - wy) + bottom * wy

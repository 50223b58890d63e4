"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016).

Each 2x2 output tile comes from a 4x4 input tile (stride 2) with 16 products per (input, output)
channel pair instead of 36, so the matmul work is 2.25x smaller than a direct or patch-GEMM
convolution. With x (B, H, W, C) and kernel (3, 3, C, D):

  V = B^T d B   input tiles  -> (16, B, H/2, W/2, C)
  U = G g G^T   kernel       -> (16, C, D)
  M = V U       16 batched matmuls (contracting C)
  y = A^T M A   output tiles -> (B, H, W, D)

The transforms are written as sums of strided slices, each of the 16 (or 4) parts stored into its
slot of one buffer (`.at[].set`, an in-place update in XLA), so XLA:CPU runs each transform as a few
memory-bound loops instead of a concatenation. The backward pass is written out (`jax.custom_vjp`)
with the transposed transforms for the same reason; autodiff of the strided slices produced one
scatter-like pad per part and was 3x slower. The result equals the convolution up to float
rounding (the transforms' coefficients are 0, +-1/2, +-1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _combine(coefs, terms):
    """sum_i coefs[i] * terms[i], skipping zero coefficients (the transforms are sparse)."""
    out = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        t = t if c == 1 else (-t if c == -1 else float(c) * t)
        out = t if out is None else out + t
    return out


def _shift(a: jax.Array, axis: int, s: int) -> jax.Array:
    """out[i] = a[i + s] along `axis`, zero where i + s falls outside."""
    if s == 0:
        return a
    pads = [(0, 0)] * a.ndim
    pads[axis] = (0, s) if s > 0 else (-s, 0)
    return jax.lax.slice_in_dim(jnp.pad(a, pads), max(s, 0), max(s, 0) + a.shape[axis], axis=axis)


def input_transform(x: jax.Array) -> jax.Array:
    """x (B, H, W, C), H and W even -> V (16, B, H/2, W/2, C): B^T d B of the 4x4 tiles (stride 2)
    of x zero-padded by 1."""
    b, h, w, c = x.shape
    nty, ntx = h // 2, w // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    d = [[xp[:, i:i + 2 * nty - 1:2, j:j + 2 * ntx - 1:2] for j in range(4)] for i in range(4)]
    out = jnp.zeros((16, b, nty, ntx, c), x.dtype)
    for r in range(4):
        rows = [_combine(_BT[r], [d[i][j] for i in range(4)]) for j in range(4)]
        for s in range(4):
            out = out.at[4 * r + s].set(_combine(_BT[s], rows))
    return out


def input_transform_t(dv: jax.Array) -> jax.Array:
    """The transpose of input_transform: dV (16, B, nty, ntx, C) -> dx (B, 2 nty, 2 ntx, C).

    Tiles overlap by two rows: x's row 2t (padded row 2t+1) is row 1 of tile t and row 3 of tile
    t-1; row 2t+1 is row 2 of tile t and row 0 of tile t+1. Likewise for columns.
    """
    _, b, nty, ntx, c = dv.shape
    parts = [[dv[4 * r + s] for s in range(4)] for r in range(4)]
    sources = {0: [(1, 0), (3, -1)], 1: [(2, 0), (0, 1)]}  # phase -> [(tile row, tile shift)]
    out = jnp.zeros((b, nty, 2, ntx, 2, c), dv.dtype)
    for pr in range(2):
        for pc in range(2):
            acc = None
            for tr, sr in sources[pr]:
                rows = [_combine(_BT[:, tr], [parts[r][s] for r in range(4)]) for s in range(4)]
                for tc, sc in sources[pc]:
                    term = _shift(_shift(_combine(_BT[:, tc], rows), 1, sr), 2, sc)
                    acc = term if acc is None else acc + term
            out = out.at[:, :, pr, :, pc].set(acc)
    return out.reshape(b, 2 * nty, 2 * ntx, c)


def output_transform(m: jax.Array) -> jax.Array:
    """M (16, B, nty, ntx, D) -> y (B, 2 nty, 2 ntx, D): A^T m A of each tile, tiles side by side."""
    _, b, nty, ntx, d = m.shape
    parts = [[m[4 * r + s] for s in range(4)] for r in range(4)]
    out = jnp.zeros((b, nty, 2, ntx, 2, d), m.dtype)
    for i in range(2):
        rows = [_combine(_AT[i], [parts[r][s] for r in range(4)]) for s in range(4)]
        for j in range(2):
            out = out.at[:, :, i, :, j].set(_combine(_AT[j], rows))
    return out.reshape(b, 2 * nty, 2 * ntx, d)


def output_transform_t(dy: jax.Array) -> jax.Array:
    """The transpose of output_transform: dy (B, H, W, D) -> dM (16, B, H/2, W/2, D)."""
    b, h, w, d = dy.shape
    phases = [[dy[:, i::2, j::2] for j in range(2)] for i in range(2)]
    out = jnp.zeros((16, b, h // 2, w // 2, d), dy.dtype)
    for r in range(4):
        rows = [_combine(_AT[:, r], [phases[i][j] for i in range(2)]) for j in range(2)]
        for s in range(4):
            out = out.at[4 * r + s].set(_combine(_AT[:, s], rows))
    return out


def kernel_transform(kernel: jax.Array) -> jax.Array:
    """kernel (3, 3, C, D) -> U (16, C, D): G g G^T for each channel pair."""
    rows = [[_combine(_G[r], [kernel[i, j] for i in range(3)]) for j in range(3)] for r in range(4)]
    return jnp.stack([_combine(_G[s], rows[r]) for r in range(4) for s in range(4)])


def kernel_transform_t(du: jax.Array) -> jax.Array:
    """The transpose of kernel_transform: dU (16, C, D) -> dkernel (3, 3, C, D)."""
    rows = [[_combine(_G[:, i], [du[4 * r + s] for r in range(4)]) for s in range(4)] for i in range(3)]
    return jnp.stack([jnp.stack([_combine(_G[:, j], rows[i]) for j in range(3)]) for i in range(3)])


def _tile_matmul(v: jax.Array, u: jax.Array) -> jax.Array:
    """(16, B, nty, ntx, C) x (16, C, D) -> (16, B, nty, ntx, D): one matmul per tile position."""
    out = jnp.einsum("ktc,kcd->ktd", v.reshape(16, -1, v.shape[-1]), u)
    return out.reshape(v.shape[:-1] + (u.shape[-1],))


def _conv_even_fwd(x, kernel):
    v, u = input_transform(x), kernel_transform(kernel)
    return output_transform(_tile_matmul(v, u)), (v, u)


@jax.custom_vjp
def _conv_even(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv_even_fwd(x, kernel)[0]


def _conv_even_bwd(residuals, dy):
    v, u = residuals
    dm = output_transform_t(dy)
    dv = _tile_matmul(dm, jnp.swapaxes(u, 1, 2))
    du = jnp.einsum("ktc,ktd->kcd", v.reshape(16, -1, v.shape[-1]), dm.reshape(16, -1, dm.shape[-1]))
    return input_transform_t(dv), kernel_transform_t(du)


_conv_even.defvjp(_conv_even_fwd, _conv_even_bwd)


def conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 convolution, stride 1, zero padding 1 ("SAME"): x (B, H, W, C), kernel (3, 3, C, D) ->
    (B, H, W, D). Odd H or W: one zero row/column is appended and the extra output cropped (the
    appended zeros sit where the padding was, so the kept outputs are unchanged)."""
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(2x2,3x3) needs a 3x3 kernel, got {kernel.shape[:2]}")
    h, w = x.shape[1:3]
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    return _conv_even(x, kernel)[:, :h, :w]

"""Coreset (Sener & Savarese 2018): greedy k-center on the embeddings. Pure, jitted."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.queries.kmeans import check_query_size, lookahead_picks


@functools.partial(jax.jit, static_argnames=("chunk",))
def _min_sq_dist(points, centres, centre_valid, *, chunk: int):
    """min over valid centres of |p - c|^2 for every point: (N,), via chunks of `chunk` centres.

    centres (L, D) with L a multiple of chunk; memory O(N * chunk), never N x L.
    """
    sq_points = jnp.sum(points * points, 1)

    def body(i, best):
        c = jax.lax.dynamic_slice_in_dim(centres, i * chunk, chunk)
        valid = jax.lax.dynamic_slice_in_dim(centre_valid, i * chunk, chunk)
        d = sq_points[:, None] - 2.0 * points @ c.T + jnp.sum(c * c, 1)[None, :]
        return jnp.minimum(best, jnp.min(jnp.where(valid[None, :], d, jnp.inf), 1))

    best = jax.lax.fori_loop(0, centres.shape[0] // chunk, body, jnp.full(points.shape[0], jnp.inf))
    return jnp.maximum(best, 0.0)


@functools.partial(jax.jit, static_argnames=("b", "lookahead"))
def _greedy_k_center(points, min_dist, labelled, *, b: int, lookahead: int):
    """b greedy farthest-point picks (b,) int32 from points (N, D), min_dist (N,) to the labelled.

    `lookahead_picks` guesses the `lookahead` currently farthest points and reads the pool once for
    the exact distances to all of them (N, lookahead): about b / lookahead pool reads instead of b,
    the picks exactly one-point-at-a-time greedy's. Memory O(N * (D + lookahead)).
    """
    m = min(lookahead, points.shape[0])

    def guess(min_dist, free, t):
        return jax.lax.top_k(jnp.where(free, min_dist, -jnp.inf), m)[1], None

    def choose(min_dist, free, ctx, s):
        return jnp.argmax(jnp.where(free, min_dist, -jnp.inf))

    def dist_to(cand):
        dist = jnp.sum(jnp.square(points[:, None, :] - points[cand][None, :, :]), -1).T  # (m, N)
        return lambda j: dist[j]

    return lookahead_picks(guess, choose, dist_to, min_dist, ~labelled, jnp.zeros((b,), jnp.int32), 0, b)


def coreset(embeddings: np.ndarray, is_labelled: np.ndarray, b: int, chunk: int = 1024,
            lookahead: int = 16) -> np.ndarray:
    """Greedy k-center on embeddings (N, D): repeatedly pick the unlabelled point farthest from its
    nearest labelled-or-picked point; (b,) int32 in pick order. Memory O(N * D). With no labelled
    point the first pick is the lowest index (all distances are infinite). `chunk` (labelled points
    per distance block) and `lookahead` change speed, not picks.
    """
    check_query_size(is_labelled, b)
    points = jnp.asarray(embeddings, jnp.float32)
    centres_idx = np.flatnonzero(is_labelled)
    padded = -(-max(len(centres_idx), 1) // chunk) * chunk
    chunk = min(chunk, padded)
    idx = np.zeros(padded, np.int64)
    idx[:len(centres_idx)] = centres_idx
    valid = np.arange(padded) < len(centres_idx)
    min_dist = _min_sq_dist(points, points[idx], jnp.asarray(valid), chunk=chunk)
    return np.asarray(_greedy_k_center(points, min_dist, jnp.asarray(is_labelled), b=b,
                                       lookahead=lookahead)).astype(np.int32)

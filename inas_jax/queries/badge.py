"""BADGE (Ash et al. 2020): k-means++ seeding over gradient embeddings, distances factorised. Pure, jitted."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.queries.kmeans import LOOKAHEAD, capacity, check_query_size, d2_sampling, snap


def gradient_factors(probs, h):
    """a = p - onehot(argmax p) (N, C) and |g|^2 = |a|^2 |h|^2 (N,), from probs (N, C) and embeddings
    h (N, D): the gradient embedding of point i is g_i = a_i ⊗ h_i, never formed."""
    a = probs - jax.nn.one_hot(jnp.argmax(probs, 1), probs.shape[1], dtype=probs.dtype)
    return a, jnp.sum(a * a, 1) * jnp.sum(h * h, 1)


def gradient_sq_dist(a, h, norm, idx):
    """|g_i - g_j|^2 = |g_i|^2 + |g_j|^2 - 2 (a_i.a_j)(h_i.h_j) for every point i and j in idx:
    (N, len(idx)), from `gradient_factors`. Memory O(N * len(idx)), never N x (C*D)."""
    scale = norm[:, None] + norm[idx][None, :]
    return snap(scale - 2.0 * (a @ a[idx].T) * (h @ h[idx].T), scale)


@functools.partial(jax.jit, static_argnames=("cap", "lookahead"))
def _seed_gradients(probs, h, labelled, key, b, *, cap: int, lookahead: int):
    """`badge` compiled: picks (cap,) int32, the first b of them valid."""
    a, norm = gradient_factors(probs, h)
    first = jnp.argmax(jnp.where(labelled, -1.0, norm)).astype(jnp.int32)
    return d2_sampling(functools.partial(gradient_sq_dist, a, h, norm), first, ~labelled, key, cap, b, lookahead)


def badge(probs: np.ndarray, embeddings: np.ndarray, labelled: np.ndarray, b: int, key: jax.Array,
          lookahead: int = LOOKAHEAD) -> np.ndarray:
    """BADGE: k-means++ seeding over the unlabelled points' gradient embeddings; (b,) int32 in pick order.

    probs (N, C) softmax probabilities, embeddings h (N, D) penultimate features. Point i's gradient
    embedding g_i = (p_i - onehot(argmax p_i)) ⊗ h_i is the last layer's loss gradient under the
    predicted label; distances between them are factorised (`gradient_sq_dist`), so memory is
    O(N * (C + D + lookahead)). As in the reference code, the first pick is the unlabelled point of
    largest |g|, ties to the lowest index; each later pick is drawn with probability ∝ its squared
    distance to the nearest pick so far, step t with gumbel(fold_in(key, t)) (`d2_sampling`;
    `lookahead` changes speed, not picks). Labelled points are neither picked nor centres. When
    every remaining unlabelled point duplicates a pick (all distances 0), the pick is uniform
    among them.
    """
    check_query_size(labelled, b)
    picks = _seed_gradients(jnp.asarray(probs, jnp.float32), jnp.asarray(embeddings, jnp.float32),
                            jnp.asarray(labelled, bool), key, b, cap=capacity(b), lookahead=lookahead)
    return np.asarray(picks)[:b].astype(np.int32)

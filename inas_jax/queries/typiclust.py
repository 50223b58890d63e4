"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): the most typical points of the least covered
k-means clusters. Pure, jitted.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.queries.kmeans import capacity, check_query_size, kmeans

# The query's clusters: |labelled| + b, at most this many (a k-means step costs N * k * D; the
# authors' code caps k at 500).
MAX_CLUSTERS = 5000


@functools.partial(jax.jit, static_argnames=("k", "knn", "rows", "cols"))
def _mean_knn_dist(x, assignment, *, k: int, knn: int, rows: int, cols: int):
    """Mean Euclidean distance (N,) from each point to its min(knn, m - 1) nearest neighbours among
    the m points of its cluster (inf for a singleton).

    Points are sorted by cluster; each block of `rows` sorted points is compared with the columns
    from its first cluster's start to its last cluster's end, `cols` at a time, keeping the knn
    smallest distances: memory O(N * D + rows * (cols + knn)), work about sum over clusters of m^2 D.
    """
    n = x.shape[0]
    rows, cols = min(rows, n), min(cols, n)
    order = jnp.argsort(assignment, stable=True)
    xs, cs = x[order], assignment[order]
    sq = jnp.sum(xs * xs, 1)
    size = jax.ops.segment_sum(jnp.ones(n, jnp.int32), assignment, k)
    end = jnp.cumsum(size)

    def row_block(i, out):
        r0 = jnp.minimum(i * rows, n - rows)
        xr, cr, sqr = (jax.lax.dynamic_slice_in_dim(v, r0, rows) for v in (xs, cs, sq))
        self_col = r0 + jnp.arange(rows)

        def col_block(carry):
            c0, best = carry
            s = jnp.minimum(c0, n - cols)
            xc, cc, sqc = (jax.lax.dynamic_slice_in_dim(v, s, cols) for v in (xs, cs, sq))
            j = s + jnp.arange(cols)
            d = sqr[:, None] + sqc[None, :] - 2.0 * xr @ xc.T
            valid = (cc[None, :] == cr[:, None]) & (j[None, :] >= c0) & (j[None, :] != self_col[:, None])
            d = jnp.where(valid, jnp.maximum(d, 0.0), jnp.inf)
            return c0 + cols, -jax.lax.top_k(-jnp.concatenate([best, d], 1), knn)[0]

        lo = end[cr[0]] - size[cr[0]]
        _, best = jax.lax.while_loop(lambda c: c[0] < end[cr[-1]], col_block,
                                     (lo, jnp.full((rows, knn), jnp.inf, x.dtype)))
        found = jnp.sum(jnp.isfinite(best), 1)
        mean = jnp.sum(jnp.where(jnp.isfinite(best), jnp.sqrt(best), 0.0), 1) / jnp.maximum(found, 1)
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.where(found > 0, mean, jnp.inf), r0, 0)

    sorted_mean = jax.lax.fori_loop(0, -(-n // rows), row_block, jnp.zeros(n, x.dtype))
    return jnp.zeros(n, x.dtype).at[order].set(sorted_mean)


@functools.partial(jax.jit, static_argnames=("cap", "k", "min_size"))
def _pick_by_coverage(assignment, mean_dist, labelled, b, *, cap: int, k: int, min_size: int):
    """b picks: each from the cluster of fewest labelled-or-picked points, ties to the larger, then
    the lower id, among clusters of >= min_size points with unlabelled points left (any cluster
    with unlabelled points left once those run out); in it, its unpicked unlabelled point of least
    mean_dist, ties to the lower index."""
    size = jax.ops.segment_sum(jnp.ones_like(assignment), assignment, k)
    n_labelled = jax.ops.segment_sum(labelled.astype(assignment.dtype), assignment, k)
    # by cluster, unlabelled first, by mean_dist, by index (lexsort is stable)
    order = jnp.lexsort((mean_dist, labelled, assignment)).astype(jnp.int32)
    start = jnp.cumsum(size) - size
    big = size >= min_size

    def step(i, carry):
        picked, out = carry
        left = picked < size - n_labelled
        pool = left & jnp.where(jnp.any(left & big), big, True)
        covered = n_labelled + picked
        pool &= covered == jnp.min(jnp.where(pool, covered, jnp.iinfo(covered.dtype).max))
        pool &= size == jnp.max(jnp.where(pool, size, -1))
        c = jnp.argmax(pool)
        return picked.at[c].add(1), out.at[i].set(order[start[c] + picked[c]])

    init = (jnp.zeros(k, assignment.dtype), jnp.zeros(cap, jnp.int32))
    return jax.lax.fori_loop(0, b, step, init)[1]


def typiclust(embeddings: np.ndarray, labelled: np.ndarray, b: int, key: jax.Array, knn: int = 20,
              min_size: int = 6, max_clusters: int | None = None, iters: int = 10, tol: float = 1e-3,
              rows: int = 256, cols: int = 512) -> np.ndarray:
    """The most typical points of the clusters with the fewest labelled points; (b,) int32 in pick order.

    embeddings (N, D). All pool points are clustered by `kmeans` (key; at most iters Lloyd
    iterations of N * k * D each, stopping once one gains < tol) into k = |labelled| + b clusters
    (at most max_clusters). Then b times: among clusters of at least min_size points with unpicked
    unlabelled points, take the one with the fewest labelled-or-picked points, ties to the largest,
    then the lowest id, and pick its most typical unpicked unlabelled point: typicality = 1 / mean
    Euclidean distance to the point's min(knn, m - 1) nearest neighbours among the m points
    (labelled included) of its cluster, ties to the lower index. Smaller clusters follow once those
    run out, so b distinct unlabelled points always come back. Memory O(N * D + 1024 * k (`kmeans`)
    + rows * (cols + knn)).

    Against the authors' code (avihu111/TypiClust; details in WORKSPACE.md): it clusters
    self-supervised features, with scikit-learn (MiniBatch)KMeans and k <= 500 (max_clusters=500
    reproduces the cap); it skips clusters of <= 5 points (min_size=6) and takes the clusters round
    robin in one fixed order (this recounts after every pick: the same picks when b clusters hold
    no labelled point, the usual case); its typicality is 1 / (mean + 1e-5) of squared distances
    among the cluster's unlabelled points, min(20, m_u // 2) of them, recomputed after each pick.
    """
    check_query_size(labelled, b)
    k = int(np.count_nonzero(labelled)) + b
    k = k if max_clusters is None else min(k, max_clusters)
    x = jnp.asarray(embeddings, jnp.float32)
    _, assignment = kmeans(x, k, key, iters, tol)
    mean_dist = _mean_knn_dist(x, assignment, k=k, knn=knn, rows=rows, cols=cols)
    picks = _pick_by_coverage(assignment, mean_dist, jnp.asarray(labelled, bool), b, cap=capacity(b), k=k,
                              min_size=min_size)
    return np.asarray(picks)[:b].astype(np.int32)

"""Clustering query functions: BADGE and TypiClust, and the k-means under TypiClust. Pure functions.

Like the functions in `queries`, the query functions take what they score over the whole pool, the
labelled mask (N,) bool, the batch size b and a key, and return b distinct unlabelled indices
(int32). Numpy in, numpy out; the work is jitted. Randomness comes only from the key: the same key
gives the same picks.

k-means++ seeding (BADGE's picks, and the k-means initialisation) is sequential, and a naive
implementation reads the pool (N, D) once per pick. `_d2_sampling` reads it once per up to
`lookahead` picks and draws exactly what one-pick-at-a-time D^2 sampling with the same key draws.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# A squared distance below this fraction of |u|^2 + |v|^2 is float32 cancellation noise in
# |u|^2 + |v|^2 - 2 u.v: it is set to 0, so duplicates of a centre are never D^2-sampled.
_SNAP = 1e-5


def check_query_size(labelled: np.ndarray, b: int) -> None:
    """Raises ValueError unless 0 < b <= the number of unlabelled points of the mask (N,) bool."""
    free = int(labelled.size - np.count_nonzero(labelled))
    if not 0 < b <= free:
        raise ValueError(f"cannot query {b} points: the pool has {free} unlabelled points")


def _capacity(b: int) -> int:
    """Static length of a pick buffer for b picks: a power of two >= 32, so b values share compilations."""
    return max(32, 1 << (b - 1).bit_length())


def _snap(sq_dist, scale):
    return jnp.where(sq_dist <= _SNAP * scale, 0.0, sq_dist)


def _draw(d2, eligible, noise, block: int):
    """An index drawn with P(i) ∝ d2_i over eligible points, or uniformly among them when all their
    d2 are 0. d2, eligible (N,) with N a multiple of block; noise (N / block + block,) Gumbel.

    Gumbel-max in two levels: a block with P ∝ its sum, then a point in it with P ∝ d2, so a draw
    takes N / block + block noise values instead of N. Points change draws only where their d2 does.
    """
    w = jnp.where(eligible, d2, 0.0)
    w = jnp.where(jnp.any(w > 0), w, eligible.astype(w.dtype)).reshape(-1, block)
    j = jnp.argmax(jnp.log(jnp.sum(w, 1)) + noise[:w.shape[0]])
    return (j * block + jnp.argmax(jnp.log(w[j]) + noise[w.shape[0]:])).astype(jnp.int32)


def _d2_sampling(dist_to, d2, eligible, key, picks, start: int, total, lookahead: int):
    """Fills picks[start:total] (int32) by D^2 sampling; returns picks.

    Step t draws (`_draw`) with noise gumbel(fold_in(key, t)), then lowers d2 (N,) to the squared
    distance to the pick, which becomes ineligible. dist_to(idx (m,)) -> (N, m) squared distances
    from every point to points idx. Each pass guesses the next `lookahead` picks from the current
    d2 (the next steps' draws, each excluding the earlier guesses), computes the distances to all
    of them with one read of the pool, then takes exact steps while the draw is one of the
    guesses. The first guess is always right, and d2 only changes near a pick, so most are.
    The picks equal one-at-a-time sampling's; memory O(N * lookahead) on top of the pool.
    """
    n, cap, m = d2.shape[0], picks.shape[0], lookahead
    block = 1 << max(int(np.ceil(np.log2(n) / 2)), 0)  # ~sqrt(N)
    pad = -n % block
    width = (n + pad) // block + block
    d2, eligible = jnp.pad(d2, (0, pad)), jnp.pad(eligible, (0, pad))

    def one_pass(carry):
        d2, eligible, picks, t = carry
        noise = jax.vmap(lambda s: jax.random.gumbel(jax.random.fold_in(key, s), (width,)))(t + jnp.arange(m))

        def guess(s, acc):
            cand, free = acc
            c = _draw(d2, free, noise[s], block)
            return cand.at[s].set(c), free.at[c].set(False)

        cand, _ = jax.lax.fori_loop(0, m, guess, (jnp.zeros(m, jnp.int32), eligible))
        dist = jnp.pad(dist_to(jnp.minimum(cand, n - 1)), ((0, pad), (0, 0)))

        def take(inner):
            d2, eligible, picks, s, _ = inner
            pick = _draw(d2, eligible, noise[s], block)
            match = cand == pick
            hit = jnp.any(match)
            d2 = jnp.where(hit, jnp.minimum(d2, dist[:, jnp.argmax(match)]), d2)
            eligible = eligible.at[pick].set(eligible[pick] & ~hit)
            picks = picks.at[jnp.where(hit, t + s, cap)].set(pick, mode="drop")
            s = s + hit.astype(s.dtype)
            return d2, eligible, picks, s, hit & (s < m) & (t + s < total)

        d2, eligible, picks, s, _ = jax.lax.while_loop(
            lambda c: c[-1], take, (d2, eligible, picks, jnp.array(0, jnp.int32), jnp.array(True)))
        return d2, eligible, picks, t + s

    init = (d2, eligible, picks, jnp.array(start, jnp.int32))
    return jax.lax.while_loop(lambda c: c[-1] < total, one_pass, init)[2]


def _gradient_factors(probs):
    """a = p - onehot(argmax p) (N, C): the gradient embedding of point i is a_i ⊗ h_i."""
    return probs - jax.nn.one_hot(jnp.argmax(probs, 1), probs.shape[1], dtype=probs.dtype)


def _gradient_sq_dist(a, h, norm, idx):
    """|g_i - g_j|^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 (a_i.a_j)(h_i.h_j) for all i, j in idx:
    (N, len(idx)). norm (N,) = |a|^2 |h|^2. Memory O(N * len(idx)), never N x (C*D)."""
    scale = norm[:, None] + norm[idx][None, :]
    return _snap(scale - 2.0 * (a @ a[idx].T) * (h @ h[idx].T), scale)


def gradient_sq_dist(probs: np.ndarray, embeddings: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Squared distances (N, len(idx)) between BADGE gradient embeddings (p - onehot(argmax p)) ⊗ h
    of every point and of points idx, from probs (N, C) and embeddings h (N, D), factorised."""
    probs = jnp.asarray(probs, jnp.float32)
    h = jnp.asarray(embeddings, jnp.float32)
    a = _gradient_factors(probs)
    norm = jnp.sum(a * a, 1) * jnp.sum(h * h, 1)
    return np.asarray(_gradient_sq_dist(a, h, norm, jnp.asarray(idx, jnp.int32)))


@functools.partial(jax.jit, static_argnames=("cap", "lookahead"))
def _badge(probs, h, labelled, key, b, *, cap: int, lookahead: int):
    a = _gradient_factors(probs)
    norm = jnp.sum(a * a, 1) * jnp.sum(h * h, 1)
    dist_to = functools.partial(_gradient_sq_dist, a, h, norm)
    first = jnp.argmax(jnp.where(labelled, -1.0, norm)).astype(jnp.int32)
    d2 = dist_to(first[None])[:, 0]
    picks = jnp.zeros(cap, jnp.int32).at[0].set(first)
    return _d2_sampling(dist_to, d2, (~labelled).at[first].set(False), key, picks, 1, b, lookahead)


def badge(probs: np.ndarray, embeddings: np.ndarray, labelled: np.ndarray, b: int, key: jax.Array,
          lookahead: int = 32) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding over the unlabelled points' gradient embeddings.

    probs (N, C) softmax probabilities, embeddings h (N, D) penultimate features. Point i's gradient
    embedding is g_i = (p_i - onehot(argmax p_i)) ⊗ h_i, the last layer's loss gradient under the
    predicted label; distances between them are factorised (`gradient_sq_dist`), so memory is
    O(N * (C + D + lookahead)). As in the reference code, the first pick is the unlabelled point of
    largest |g|, ties to the lowest index; each later pick is drawn with probability ∝ its squared
    distance to the nearest pick so far, step t with gumbel(fold_in(key, t)) (`_d2_sampling`;
    `lookahead` changes speed, not picks). Labelled points are neither picked nor centres. When
    every remaining unlabelled point duplicates a pick (all distances 0), the pick is uniform
    among them. Returns (b,) int32 in pick order.
    """
    check_query_size(labelled, b)
    picks = _badge(jnp.asarray(probs, jnp.float32), jnp.asarray(embeddings, jnp.float32),
                   jnp.asarray(labelled, bool), key, b, cap=_capacity(b), lookahead=lookahead)
    return np.asarray(picks)[:b].astype(np.int32)


def _assign(x, sq, centroids, chunk: int):
    """Nearest centroid (N,) int32 and its squared distance (N,), `chunk` points at a time.

    Memory O(chunk * k), never N x k; the last chunk is shifted back to end at N (its overlap is
    recomputed identically).
    """
    n = x.shape[0]
    chunk = min(chunk, n)
    c_t, c_sq = centroids.T, jnp.sum(centroids * centroids, 1)

    def body(i, acc):
        assignment, dmin = acc
        start = jnp.minimum(i * chunk, n - chunk)
        d = c_sq[None, :] - 2.0 * jax.lax.dynamic_slice_in_dim(x, start, chunk) @ c_t
        j = jnp.argmin(d, 1).astype(jnp.int32)
        dj = jnp.take_along_axis(d, j[:, None], 1)[:, 0] + jax.lax.dynamic_slice_in_dim(sq, start, chunk)
        return (jax.lax.dynamic_update_slice_in_dim(assignment, j, start, 0),
                jax.lax.dynamic_update_slice_in_dim(dmin, jnp.maximum(dj, 0.0), start, 0))

    init = (jnp.zeros(n, jnp.int32), jnp.zeros(n, x.dtype))
    return jax.lax.fori_loop(0, -(-n // chunk), body, init)


def _update(x, assignment, dmin, k: int):
    """Cluster means (k, D); the j-th empty cluster (by index) moves to the j-th farthest point from
    its centroid (ties to the lowest index), like scikit-learn's relocation."""
    sums = jax.ops.segment_sum(x, assignment, k)
    counts = jax.ops.segment_sum(jnp.ones_like(dmin), assignment, k)
    empty = counts == 0
    far = jnp.argsort(-dmin, stable=True)[jnp.maximum(jnp.cumsum(empty) - 1, 0)]
    return jnp.where(empty[:, None], x[far], sums / jnp.maximum(counts, 1.0)[:, None])


@functools.partial(jax.jit, static_argnames=("k", "chunk", "lookahead"))
def _kmeans(x, key, iters, tol, *, k: int, chunk: int, lookahead: int):
    mean = jnp.mean(x, 0)
    x = x - mean  # |x|^2 + |c|^2 - 2 x.c loses less to cancellation about the mean
    sq = jnp.sum(x * x, 1)

    def dist_to(idx):
        scale = sq[:, None] + sq[idx][None, :]
        return _snap(scale - 2.0 * x @ x[idx].T, scale)

    n = x.shape[0]
    everyone = jnp.ones(n, bool)
    first = jax.random.randint(key, (), 0, n, jnp.int32)
    seeds = _d2_sampling(dist_to, dist_to(first[None])[:, 0], everyone.at[first].set(False), key,
                         jnp.zeros(k, jnp.int32).at[0].set(first), 1, k, lookahead)
    centroids = x[seeds]
    assignment, dmin = _assign(x, sq, centroids, chunk)

    def lloyd(carry):
        it, centroids, assignment, dmin, _ = carry
        centroids = _update(x, assignment, dmin, k)
        new, new_dmin = _assign(x, sq, centroids, chunk)
        before, after = jnp.sum(dmin), jnp.sum(new_dmin)
        go_on = jnp.any(new != assignment) & (before - after > tol * before)
        return it + 1, centroids, new, new_dmin, go_on

    init = (jnp.array(0, jnp.int32), centroids, assignment, dmin, jnp.array(True))
    _, centroids, assignment, _, _ = jax.lax.while_loop(lambda c: (c[0] < iters) & c[-1], lloyd, init)
    return centroids + mean, assignment


def kmeans(x: np.ndarray, k: int, key: jax.Array, iters: int = 20, tol: float = 1e-4, chunk: int = 1024,
           lookahead: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """k-means of x (N, D): k-means++ seeding, then up to `iters` Lloyd iterations, stopping early
    once the assignment is unchanged or the sum of squared distances falls by <= tol of itself.
    Returns centroids (k, D) float32 and assignment (N,) int32, each point's nearest returned
    centroid (ties to the lower index).

    Seeding is exact k-means++ (first centre uniform, then D^2 sampling) at one pool read per up to
    `lookahead` centres (`_d2_sampling`); deterministic from key. Distances to centroids are taken
    `chunk` points at a time: memory O(N * D + chunk * k + k * D). Empty clusters move to the points
    farthest from their centroids.
    """
    if not 0 < k <= len(x):
        raise ValueError(f"cannot make {k} clusters of {len(x)} points")
    centroids, assignment = _kmeans(jnp.asarray(x, jnp.float32), key, iters, jnp.float32(tol), k=k, chunk=chunk,
                                    lookahead=lookahead)
    return np.asarray(centroids), np.asarray(assignment).astype(np.int32)


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
def _typiclust_picks(assignment, mean_dist, labelled, b, *, cap: int, k: int, min_size: int):
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
    """TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): the most typical points of the clusters
    with the fewest labelled points.

    embeddings (N, D). All pool points are clustered by `kmeans` (key; k-means++ seeds, then Lloyd
    iterations, each costing N * k * D, until one lowers the sum of squared distances by < tol of
    it, at most iters) into k = |labelled| + b clusters (at most max_clusters). Then b times: among
    clusters of at least min_size points that still have unpicked unlabelled points, take the one
    with the fewest labelled-or-already-picked points, ties to the largest, then the lowest id, and
    pick its most typical unpicked unlabelled point. Typicality = 1 / mean Euclidean distance to
    the point's min(knn, m - 1) nearest neighbours among the m points (labelled included) of its
    cluster; ties to the lower index. When those clusters run out of unlabelled points, smaller ones
    follow by the same rule, so b distinct unlabelled points always come back. Memory
    O(N * D + 1024 * k + rows * (cols + knn)). Returns (b,) int32 in pick order.

    Against the authors' code (avihu111/TypiClust, deep-al/pycls/al/typiclust.py):
    - features: it clusters self-supervised SimCLR/DINO (or SCAN) features; this clusters the
      classifier's penultimate embeddings.
    - clustering: it runs scikit-learn KMeans for <= 50 clusters, else MiniBatchKMeans(batch_size=
      5000), and caps k at 500 (max_clusters=500 reproduces the cap); this runs `kmeans`.
    - small clusters: as there, clusters of <= 5 points are skipped (min_size=6); there they are
      never used, and the query fails if a cluster in its rotation runs out of points.
    - cluster order: it sorts the clusters once by (labelled count, -size) and takes them round
      robin (pick i from the (i mod K)-th); this recounts after every pick. Both take the b largest
      clusters without labelled points when there are b of them (the usual case with |labelled| + b
      clusters). Otherwise (e.g. the 500 cap with b > 500) it gives every cluster one pick per
      round, while this brings the least covered clusters up first.
    - typicality: it uses squared L2 distances (faiss IndexFlatL2), 1 / (mean + 1e-5), among the
      cluster's unlabelled and not yet picked points only, with min(20, m_u // 2) neighbours for m_u
      of them, recomputed after each pick; this uses the paper's Euclidean distance over the whole
      cluster, computed once. For a cluster without labelled points and its first pick, only the
      squared distances and the neighbour count in clusters of < 40 points can differ.
    """
    check_query_size(labelled, b)
    k = int(np.count_nonzero(labelled)) + b
    k = k if max_clusters is None else min(k, max_clusters)
    x = jnp.asarray(embeddings, jnp.float32)
    _, assignment = _kmeans(x, key, iters, jnp.float32(tol), k=k, chunk=1024, lookahead=32)
    mean_dist = _mean_knn_dist(x, assignment, k=k, knn=knn, rows=rows, cols=cols)
    picks = _typiclust_picks(assignment, mean_dist, jnp.asarray(labelled, bool), b, cap=_capacity(b), k=k,
                             min_size=min_size)
    return np.asarray(picks)[:b].astype(np.int32)

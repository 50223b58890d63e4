"""k-means, k-means++ seeding and the sequential-picks loop that greedy k-center shares. Pure functions.

k-means++ seeding (BADGE's picks, the k-means initialisation) and greedy k-center (coreset) pick
points one at a time, each pick lowering every point's squared distance to the picks so far; done
naively each pick reads the pool (N, D). `lookahead_picks` reads it once per up to `lookahead`
picks and takes exactly the one-at-a-time picks. Also `check_query_size`, which every query runs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# A squared distance below this fraction of |u|^2 + |v|^2 is float32 cancellation noise in
# |u|^2 + |v|^2 - 2 u.v: it is set to 0, so duplicates of a centre are never D^2-sampled.
_SNAP = 1e-5
LOOKAHEAD = 32  # D^2 sampling's guesses per pool read (BADGE, k-means seeding); changes speed, not picks


def check_query_size(labelled: np.ndarray, b: int) -> None:
    """Raises ValueError unless 0 < b <= the number of unlabelled points of the mask (N,) bool."""
    free = int(labelled.size - np.count_nonzero(labelled))
    if not 0 < b <= free:
        raise ValueError(f"cannot query {b} points: the pool has {free} unlabelled points")


def capacity(b: int) -> int:
    """Static length of a pick buffer for b picks: a power of two >= 32, so b values share compilations."""
    return max(32, 1 << (b - 1).bit_length())


def snap(sq_dist, scale):
    """sq_dist with values <= _SNAP * scale (cancellation noise, scale = |u|^2 + |v|^2) set to 0."""
    return jnp.where(sq_dist <= _SNAP * scale, 0.0, sq_dist)


def lookahead_picks(guess, choose, dist_to, score, free, picks, start: int, total):
    """Fills picks[start:total] (int32) with sequential picks; returns picks.

    Step t picks choose(score, free, ctx, s) (t = the pass's first step + s) among free (N,) bool;
    the pick leaves free and lowers score (N,) to its squared distance where that is smaller. Each
    pass foresees its next m picks, guess(score, free, t) -> (cand (m,) int32, ctx), reads the pool
    once for dist_to(cand) -> column, column(j) (N,) being the squared distances to cand[j], then
    takes steps while the pick is one of cand. Memory O(N * m) on top of the pool.
    """
    cap = picks.shape[0]

    def one_pass(carry):
        score, free, picks, t = carry
        cand, ctx = guess(score, free, t)
        column = dist_to(cand)

        def take(inner):
            score, free, picks, s, _ = inner
            pick = choose(score, free, ctx, s)
            match = cand == pick
            hit = jnp.any(match)
            score = jnp.where(hit, jnp.minimum(score, column(jnp.argmax(match))), score)
            free = free.at[pick].set(free[pick] & ~hit)
            picks = picks.at[jnp.where(hit, t + s, cap)].set(pick, mode="drop")
            s = s + hit.astype(s.dtype)
            return score, free, picks, s, hit & (s < cand.shape[0]) & (t + s < total)

        score, free, picks, s, _ = jax.lax.while_loop(
            lambda c: c[-1], take, (score, free, picks, jnp.array(0, jnp.int32), jnp.array(True)))
        return score, free, picks, t + s

    init = (score, free, picks, jnp.array(start, jnp.int32))
    return jax.lax.while_loop(lambda c: c[-1] < total, one_pass, init)[2]


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


def d2_sampling(dist_to, first, eligible, key, cap: int, total, lookahead: int):
    """k-means++ picks (cap,) int32: picks[0] = first, then picks[1:total] by D^2 sampling among
    eligible (N,) bool. dist_to(idx (m,)) -> (N, m) squared distances from every point to points idx.

    Step t draws (`_draw`) with noise gumbel(fold_in(key, t)), P ∝ the squared distance to the
    nearest pick so far. `lookahead_picks` guesses the next `lookahead` picks from the current
    distances (the next steps' draws, each excluding the earlier guesses); the first guess is
    always right, and distances only change near a pick, so most are. The picks equal
    one-at-a-time sampling's.
    """
    n, m = eligible.shape[0], lookahead
    block = 1 << max(int(np.ceil(np.log2(n) / 2)), 0)  # ~sqrt(N)
    pad = -n % block
    width = (n + pad) // block + block

    def guess(d2, eligible, t):
        noise = jax.vmap(lambda s: jax.random.gumbel(jax.random.fold_in(key, s), (width,)))(t + jnp.arange(m))

        def step(s, acc):
            cand, free = acc
            c = _draw(d2, free, noise[s], block)
            return cand.at[s].set(c), free.at[c].set(False)

        return jax.lax.fori_loop(0, m, step, (jnp.zeros(m, jnp.int32), eligible))[0], noise

    def choose(d2, eligible, noise, s):
        return _draw(d2, eligible, noise[s], block)

    def padded_dist_to(cand):
        dist = jnp.pad(dist_to(jnp.minimum(cand, n - 1)), ((0, pad), (0, 0)))
        return lambda j: dist[:, j]

    d2 = dist_to(first[None])[:, 0]
    picks = jnp.zeros(cap, jnp.int32).at[0].set(first)
    eligible = eligible.at[first].set(False)
    return lookahead_picks(guess, choose, padded_dist_to, jnp.pad(d2, (0, pad)), jnp.pad(eligible, (0, pad)),
                           picks, 1, total)


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
def _fit(x, key, iters, tol, *, k: int, chunk: int, lookahead: int):
    """`kmeans` compiled: centroids (k, D) and assignment (N,) of x (N, D) float32."""
    mean = jnp.mean(x, 0)
    x = x - mean  # |x|^2 + |c|^2 - 2 x.c loses less to cancellation about the mean
    sq = jnp.sum(x * x, 1)

    def dist_to(idx):
        scale = sq[:, None] + sq[idx][None, :]
        return snap(scale - 2.0 * x @ x[idx].T, scale)

    n = x.shape[0]
    first = jax.random.randint(key, (), 0, n, jnp.int32)
    centroids = x[d2_sampling(dist_to, first, jnp.ones(n, bool), key, k, k, lookahead)]
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
           lookahead: int = LOOKAHEAD) -> tuple[np.ndarray, np.ndarray]:
    """k-means of x (N, D): k-means++ seeding, then up to `iters` Lloyd iterations, stopping early
    once the assignment is unchanged or the sum of squared distances falls by <= tol of itself.
    Returns centroids (k, D) float32 and assignment (N,) int32, each point's nearest returned
    centroid (ties to the lower index).

    Seeding is exact k-means++ (first centre uniform, then `d2_sampling`); deterministic from key.
    Distances to centroids are taken `chunk` points at a time: memory O(N * D + chunk * k + k * D).
    Empty clusters move to the points farthest from their centroids.
    """
    if not 0 < k <= len(x):
        raise ValueError(f"cannot make {k} clusters of {len(x)} points")
    centroids, assignment = _fit(jnp.asarray(x, jnp.float32), key, iters, jnp.float32(tol), k=k, chunk=chunk,
                                 lookahead=lookahead)
    return np.asarray(centroids), np.asarray(assignment).astype(np.int32)

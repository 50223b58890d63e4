"""Query functions: which unlabelled pool points to label next. Pure functions, never given labels.

Every function takes what it scores (model outputs or embeddings over the whole pool), the mask
`is_labelled` (N,) bool, the batch size b and, where random, a key; it returns b distinct indices
(int32) of unlabelled points, the most informative first. `QUERIES` maps each `--query` name to
its function over `PoolOutputs`: the driver, validation, the CLI help and the tests read it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.queries.clustering import badge, check_query_size as _check, typiclust
from inas_jax.model.network import dropout, head_logits

# TypiClust's clusters: |labelled| + b, at most this many (a k-means step costs N * k * D; the
# authors' code caps k at 500).
TYPICLUST_MAX_CLUSTERS = 5000


@dataclasses.dataclass(frozen=True)
class PoolOutputs:
    """The trained model's view of the pool, what model-based queries score.

    logits (N, C) and embeddings (N, D) float32 of the deterministic model; head: the dense head's
    params {kernel (D, C), bias (C,)}, for head-only stochastic passes.
    """

    logits: np.ndarray
    embeddings: np.ndarray
    head: Any


@dataclasses.dataclass(frozen=True)
class QueryOptions:
    """Settings of the queries that take any: MC passes and their dropout rate."""

    mc_passes: int = 100
    mc_rate: float = 0.5


# fn(outputs or None, is_labelled (N,) bool, b, key, options) -> (b,) int32 pool indices
QueryFn = Callable[[PoolOutputs | None, np.ndarray, int, jax.Array, QueryOptions], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Query:
    fn: QueryFn
    help: str
    uses_model: bool = True  # False: no forward pass over the pool is needed


QUERIES: dict[str, Query] = {}


def register(name: str, help: str, uses_model: bool = True):
    """Decorator adding a QueryFn to QUERIES under `name` (the --query value)."""
    def add(fn: QueryFn) -> QueryFn:
        QUERIES[name] = Query(fn, help, uses_model)
        return fn
    return add


def _top_b(scores: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """The b unlabelled indices of highest score; ties broken by the lower index (stable)."""
    masked = np.where(is_labelled, -np.inf, scores.astype(np.float64))
    return np.argsort(-masked, kind="stable")[:b].astype(np.int32)


def random_query(key: jax.Array, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """b unlabelled indices uniformly at random without replacement."""
    _check(is_labelled, b)
    free = np.flatnonzero(~is_labelled)
    pick = jax.random.choice(key, len(free), (b,), replace=False)
    return free[np.asarray(pick)].astype(np.int32)


def softmax_response(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """Softmax response: the b unlabelled points whose largest softmax probability is lowest.

    logits (N, C) of the deterministic model.
    """
    _check(is_labelled, b)
    confidence = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1).max(-1))
    return _top_b(-confidence, is_labelled, b)


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """softmax (N, C) float32 of logits (N, C)."""
    return np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1))


def entropy(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """Highest predictive entropy -sum_c p_c log p_c of the deterministic model's softmax."""
    _check(is_labelled, b)
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    return _top_b(np.asarray(-jnp.sum(jnp.exp(log_p) * log_p, -1)), is_labelled, b)


def margin(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """Smallest margin between the two largest softmax probabilities (C >= 2)."""
    _check(is_labelled, b)
    top2 = np.sort(_probabilities(logits), -1)[:, -2:]
    return _top_b(top2[:, 0] - top2[:, 1], is_labelled, b)


@functools.partial(jax.jit, static_argnames=("passes", "rate"))
def _mc_variance(head, embeddings, key, *, passes: int, rate: float):
    """Variance over `passes` dropout samples of p(c | x), c = deterministic argmax. (N,) float32."""
    predicted = jnp.argmax(head_logits(head, embeddings), -1)

    def class_prob(k):
        probs = jax.nn.softmax(head_logits(head, dropout(embeddings, k, rate)), -1)
        return jnp.take_along_axis(probs, predicted[:, None], 1)[:, 0]

    samples = jax.vmap(class_prob)(jax.random.split(key, passes))  # (passes, N)
    return jnp.var(samples, axis=0)


def mc_dropout_scores(head, embeddings: np.ndarray, key: jax.Array, passes: int = 100, rate: float = 0.5,
                      chunk: int = 8192) -> np.ndarray:
    """MC-dropout scores (N,) from penultimate embeddings (N, D) and the model's head params.

    Dropout sits only on the embedding, so the backbone runs once and only the dense head is
    sampled: the same distribution as `passes` full stochastic forward passes. The pool is
    processed in chunks of `chunk` points; chunk i uses key fold_in(key, i), so the result equals
    full forward passes over the same chunks with keys split(fold_in(key, i), passes).
    """
    out = []
    for i, start in enumerate(range(0, len(embeddings), chunk)):
        part = jnp.asarray(embeddings[start:start + chunk], jnp.float32)
        out.append(np.asarray(_mc_variance(head, part, jax.random.fold_in(key, i), passes=passes, rate=rate)))
    return np.concatenate(out)


def mc_dropout(head, embeddings: np.ndarray, is_labelled: np.ndarray, b: int, key: jax.Array,
               passes: int = 100, rate: float = 0.5) -> np.ndarray:
    """MC-dropout query: the b unlabelled points whose predicted-class probability varies most."""
    _check(is_labelled, b)
    return _top_b(mc_dropout_scores(head, embeddings, key, passes, rate), is_labelled, b)


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis)


@functools.partial(jax.jit, static_argnames=("passes", "rate"))
def _mc_mutual_information(head, embeddings, key, *, passes: int, rate: float):
    """I(y; dropout mask | x) = H(mean_t p_t) - mean_t H(p_t) over `passes` head-only dropout samples,
    with the keys of `_mc_variance` (the same masks as mcdropout). (N,) float32."""
    def probs(k):
        return jax.nn.softmax(head_logits(head, dropout(embeddings, k, rate)), -1)

    samples = jax.vmap(probs)(jax.random.split(key, passes))  # (passes, N, C)
    return _entropy(jnp.mean(samples, 0)) - jnp.mean(_entropy(samples), 0)


def bald_scores(head, embeddings: np.ndarray, key: jax.Array, passes: int = 100, rate: float = 0.5,
                chunk: int = 8192) -> np.ndarray:
    """BALD scores (N,): the mutual information between the prediction and the dropout mask (Houlsby
    et al. 2011; Gal et al. 2017), head-only as `mc_dropout_scores`, with its chunks and keys."""
    out = []
    for i, start in enumerate(range(0, len(embeddings), chunk)):
        part = jnp.asarray(embeddings[start:start + chunk], jnp.float32)
        out.append(np.asarray(_mc_mutual_information(head, part, jax.random.fold_in(key, i), passes=passes,
                                                     rate=rate)))
    return np.concatenate(out)


def bald(head, embeddings: np.ndarray, is_labelled: np.ndarray, b: int, key: jax.Array, passes: int = 100,
         rate: float = 0.5) -> np.ndarray:
    """BALD query: the b unlabelled points on which the MC-dropout passes disagree most."""
    _check(is_labelled, b)
    return _top_b(bald_scores(head, embeddings, key, passes, rate), is_labelled, b)


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
def _greedy_k_center(points, min_dist, taken, *, b: int, lookahead: int = 16):
    """b greedy farthest-point picks (b,) int32; min_dist (N,) is updated with exact squared distances.

    Greedy k-center is sequential, but one read of points (N, D) can serve several picks: each pass
    computes the distances from every point to the `lookahead` currently farthest candidates
    (N, lookahead), then takes picks in order while the farthest point is one of them. The picks are
    exactly those of one-point-at-a-time greedy; the pool is read about b / lookahead times instead
    of b times. Memory O(N * (D + lookahead)).
    """
    m = min(lookahead, points.shape[0])

    def one_pass(carry):
        min_dist, taken, picks, n = carry
        _, cand = jax.lax.top_k(jnp.where(taken, -jnp.inf, min_dist), m)
        dist = jnp.sum(jnp.square(points[:, None, :] - points[cand][None, :, :]), -1).T  # (m, N)

        def take(inner):
            min_dist, taken, picks, n, _ = inner
            pick = jnp.argmax(jnp.where(taken, -jnp.inf, min_dist))
            match = cand == pick
            hit = jnp.any(match) & (n < b)
            return (jnp.where(hit, jnp.minimum(min_dist, dist[jnp.argmax(match)]), min_dist),
                    taken.at[jnp.where(hit, pick, taken.shape[0])].set(True, mode="drop"),
                    picks.at[jnp.where(hit, n, b)].set(pick, mode="drop"),
                    n + hit.astype(n.dtype), hit)

        min_dist, taken, picks, n, _ = jax.lax.while_loop(lambda c: c[-1], take, (*carry, jnp.array(True)))
        return min_dist, taken, picks, n

    init = (min_dist, taken, jnp.zeros((b,), jnp.int32), jnp.array(0, jnp.int32))
    return jax.lax.while_loop(lambda c: c[-1] < b, one_pass, init)[2]


def coreset(embeddings: np.ndarray, is_labelled: np.ndarray, b: int, chunk: int = 1024,
            lookahead: int = 16) -> np.ndarray:
    """Greedy k-center (Sener & Savarese) on embeddings (N, D): repeatedly pick the unlabelled point
    farthest from its nearest labelled-or-picked point. Memory O(N * D). With no labelled point
    the first pick is the lowest index (all distances are infinite).
    """
    _check(is_labelled, b)
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


@register("sr", "softmax response, the lowest top-class probability (the paper's)")
def _sr(out, is_labelled, b, key, options):
    return softmax_response(out.logits, is_labelled, b)


@register("mcdropout", "variance of the predicted class's probability over MC-dropout passes (the paper's)")
def _mcdropout(out, is_labelled, b, key, options):
    return mc_dropout(out.head, out.embeddings, is_labelled, b, key, options.mc_passes, options.mc_rate)


@register("entropy", "highest predictive entropy")
def _entropy_query(out, is_labelled, b, key, options):
    return entropy(out.logits, is_labelled, b)


@register("margin", "smallest gap between the two largest probabilities")
def _margin(out, is_labelled, b, key, options):
    return margin(out.logits, is_labelled, b)


@register("bald", "mutual information between prediction and dropout mask over the MC passes")
def _bald(out, is_labelled, b, key, options):
    return bald(out.head, out.embeddings, is_labelled, b, key, options.mc_passes, options.mc_rate)


@register("coreset", "greedy k-center on the embeddings (Sener & Savarese; the paper's)")
def _coreset(out, is_labelled, b, key, options):
    return coreset(out.embeddings, is_labelled, b)


@register("badge", "k-means++ seeding on gradient embeddings (Ash et al.'s BADGE)")
def _badge(out, is_labelled, b, key, options):
    return badge(_probabilities(out.logits), out.embeddings, is_labelled, b, key)


@register("typiclust", "the most typical point of the least covered k-means clusters (Hacohen et al.)")
def _typiclust(out, is_labelled, b, key, options):
    return typiclust(out.embeddings, is_labelled, b, key, max_clusters=TYPICLUST_MAX_CLUSTERS)


@register("random", "uniformly at random (passive learning)", uses_model=False)
def _random(out, is_labelled, b, key, options):
    return random_query(key, is_labelled, b)

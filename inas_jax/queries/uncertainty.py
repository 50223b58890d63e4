"""Uncertainty queries: the b unlabelled points of highest uncertainty score. Pure functions.

softmax response, entropy and margin score the deterministic model's logits (N, C); MC-dropout and
BALD score `passes` stochastic passes, head-only: dropout sits only on the embedding, so the
backbone runs once and only the dense head is sampled, the same distribution as full stochastic
forward passes. Ties go to the lower index.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.config import MC_CHUNK
from inas_jax.model.network import dropout, head_logits
from inas_jax.queries.kmeans import check_query_size

MC_PASSES = 100  # stochastic passes of MC-dropout and BALD (the paper's)
MC_RATE = 0.5  # their dropout rate


def _top_b(scores: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """The b unlabelled indices (b,) int32 of highest score (N,); ties to the lower index (stable)."""
    masked = np.where(is_labelled, -np.inf, scores.astype(np.float64))
    return np.argsort(-masked, kind="stable")[:b].astype(np.int32)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """softmax (N, C) float32 of logits (N, C)."""
    return np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1))


def softmax_response(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """The b unlabelled points whose largest softmax probability is lowest."""
    check_query_size(is_labelled, b)
    return _top_b(-probabilities(logits).max(-1), is_labelled, b)


def entropy(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """Highest predictive entropy -sum_c p_c log p_c of the softmax."""
    check_query_size(is_labelled, b)
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    return _top_b(np.asarray(-jnp.sum(jnp.exp(log_p) * log_p, -1)), is_labelled, b)


def margin(logits: np.ndarray, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """Smallest margin between the two largest softmax probabilities (C >= 2)."""
    check_query_size(is_labelled, b)
    top2 = np.sort(probabilities(logits), -1)[:, -2:]
    return _top_b(top2[:, 0] - top2[:, 1], is_labelled, b)


def _dropout_probs(head, embeddings, key, rate: float):
    """softmax (N, C) of the head over the embeddings (N, D) with dropout mask `key`: one MC pass."""
    return jax.nn.softmax(head_logits(head, dropout(embeddings, key, rate)), -1)


def _shannon(p):
    """Entropy in nats over the last axis of probabilities p (..., C), 0 log 0 = 0."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1)


@functools.partial(jax.jit, static_argnames=("passes", "rate"))
def class_variance(head, embeddings, key, *, passes: int, rate: float):
    """MC-dropout's score (N,): the variance over the passes of p(c | x), c the deterministic argmax."""
    predicted = jnp.argmax(head_logits(head, embeddings), -1)

    def class_prob(k):
        return jnp.take_along_axis(_dropout_probs(head, embeddings, k, rate), predicted[:, None], 1)[:, 0]

    samples = jax.vmap(class_prob)(jax.random.split(key, passes))  # (passes, N)
    return jnp.var(samples, axis=0)


@functools.partial(jax.jit, static_argnames=("passes", "rate"))
def mutual_information(head, embeddings, key, *, passes: int, rate: float):
    """BALD's score (N,): I(y; dropout mask | x) = H(mean_t p_t) - mean_t H(p_t) over the passes
    (Houlsby et al. 2011; Gal et al. 2017)."""
    samples = jax.vmap(lambda k: _dropout_probs(head, embeddings, k, rate))(jax.random.split(key, passes))
    return _shannon(jnp.mean(samples, 0)) - jnp.mean(_shannon(samples), 0)


def mc_scores(statistic, head, embeddings: np.ndarray, key: jax.Array, passes: int = MC_PASSES,
              rate: float = MC_RATE, chunk: int = MC_CHUNK) -> np.ndarray:
    """Scores (N,) by `statistic` (`class_variance` or `mutual_information`) of embeddings (N, D)
    under the head params {kernel (D, C), bias (C,)}, `chunk` points at a time.

    Chunk i uses key fold_in(key, i), so it equals full stochastic forward passes over the same
    chunks with keys split(fold_in(key, i), passes); both statistics see the same dropout masks.
    """
    out = []
    for i, start in enumerate(range(0, len(embeddings), chunk)):
        part = jnp.asarray(embeddings[start:start + chunk], jnp.float32)
        out.append(np.asarray(statistic(head, part, jax.random.fold_in(key, i), passes=passes, rate=rate)))
    return np.concatenate(out)


def mc_dropout(head, embeddings: np.ndarray, is_labelled: np.ndarray, b: int, key: jax.Array,
               passes: int = MC_PASSES, rate: float = MC_RATE) -> np.ndarray:
    """The b unlabelled points whose predicted-class probability varies most over the passes."""
    check_query_size(is_labelled, b)
    return _top_b(mc_scores(class_variance, head, embeddings, key, passes, rate), is_labelled, b)


def bald(head, embeddings: np.ndarray, is_labelled: np.ndarray, b: int, key: jax.Array,
         passes: int = MC_PASSES, rate: float = MC_RATE) -> np.ndarray:
    """The b unlabelled points on which the passes disagree most (highest mutual information)."""
    check_query_size(is_labelled, b)
    return _top_b(mc_scores(mutual_information, head, embeddings, key, passes, rate), is_labelled, b)

"""Query functions: which unlabelled pool points to label next. Pure functions, never given labels.

`QUERIES` maps each `--query` name (help in config.QUERY_HELP) to a `Query` over `PoolOutputs`:
the driver, validation, the CLI help and the tests read it. Each family module holds numpy-in,
numpy-out functions that take what they score over the whole pool (N points), the mask
`is_labelled` (N,) bool, the batch size b and, where random, a key, and return b distinct
unlabelled indices (b,) int32, the most informative first: `uncertainty` (sr, entropy, margin,
mcdropout, bald), `coreset`, `badge`, `typiclust` (both on `kmeans`), and `random_query` here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from inas_jax import config
from inas_jax.queries import badge, coreset, typiclust, uncertainty
from inas_jax.queries.kmeans import check_query_size


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

    mc_passes: int = uncertainty.MC_PASSES
    mc_rate: float = uncertainty.MC_RATE


# fn(outputs or None, is_labelled (N,) bool, b, key, options) -> (b,) int32 pool indices
QueryFn = Callable[[PoolOutputs | None, np.ndarray, int, jax.Array, QueryOptions], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Query:
    fn: QueryFn
    help: str
    uses_model: bool = True  # False: no forward pass over the pool is needed


QUERIES: dict[str, Query] = {}


def register(name: str, uses_model: bool = True):
    """Decorator adding a QueryFn to QUERIES under `name` (the --query value), with config.QUERY_HELP[name]."""
    def add(fn: QueryFn) -> QueryFn:
        QUERIES[name] = Query(fn, config.QUERY_HELP[name], uses_model)
        return fn
    return add


def random_query(key: jax.Array, is_labelled: np.ndarray, b: int) -> np.ndarray:
    """b unlabelled indices uniformly at random without replacement."""
    check_query_size(is_labelled, b)
    free = np.flatnonzero(~is_labelled)
    pick = jax.random.choice(key, len(free), (b,), replace=False)
    return free[np.asarray(pick)].astype(np.int32)


# Each query over the pool outputs `out` and options `opt`; the functions are looked up at call time.
register("sr")(lambda out, labelled, b, key, opt: uncertainty.softmax_response(out.logits, labelled, b))
register("mcdropout")(lambda out, labelled, b, key, opt: uncertainty.mc_dropout(
    out.head, out.embeddings, labelled, b, key, opt.mc_passes, opt.mc_rate))
register("entropy")(lambda out, labelled, b, key, opt: uncertainty.entropy(out.logits, labelled, b))
register("margin")(lambda out, labelled, b, key, opt: uncertainty.margin(out.logits, labelled, b))
register("bald")(lambda out, labelled, b, key, opt: uncertainty.bald(
    out.head, out.embeddings, labelled, b, key, opt.mc_passes, opt.mc_rate))
register("coreset")(lambda out, labelled, b, key, opt: coreset.coreset(out.embeddings, labelled, b))
register("badge")(lambda out, labelled, b, key, opt: badge.badge(
    uncertainty.probabilities(out.logits), out.embeddings, labelled, b, key))
register("typiclust")(lambda out, labelled, b, key, opt: typiclust.typiclust(
    out.embeddings, labelled, b, key, max_clusters=typiclust.MAX_CLUSTERS))
register("random", uses_model=False)(lambda out, labelled, b, key, opt: random_query(key, labelled, b))

"""Incremental neural architecture search (iNAS): grow the architecture through grid neighbours.

Each step trains every neighbour of the current architecture from scratch on 80% of the labelled
set and moves to the one with the best validation accuracy on the other 20% (one fixed split per
search). The current architecture is listed first, so on a tie it stays and the search stops.
The test set is never used.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import jax
import numpy as np

from inas_jax.loop.permutations import permutation
from inas_jax.model.search_space import Arch, neighbours

log = logging.getLogger(__name__)

# score(arch, train_idx, val_idx, key) -> best validation accuracy of arch trained on train_idx.
ScoreFn = Callable[[Arch, np.ndarray, np.ndarray, jax.Array], float]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    arch: Arch
    scores: dict[Arch, float]  # every candidate trained, in the order trained


def split_train_val(n: int, key: jax.Array, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """One fixed random split of positions 0..n-1: (train (n - v,), val (v,)), v = max(1, round(0.2 n))."""
    perm = permutation(key, n)
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def candidate_key(key: jax.Array, arch: Arch) -> jax.Array:
    """The training key of one candidate: the same arch gets the same weights and batches in a search."""
    return jax.random.fold_in(key, 16 * arch.blocks + arch.stacks)


def search(start: Arch, n_labelled: int, score: ScoreFn, key: jax.Array, t_inas: int = 1,
           known: dict[Arch, float] | None = None,
           prepare: Callable[[list[Arch]], None] | None = None) -> SearchResult:
    """Up to t_inas neighbour steps from `start`; stops early when the current architecture wins.

    `known` holds scores already computed in this search (after a resume); they are not retrained.
    `prepare(archs)`, if given, is told each step's candidates to train, in order, before the first
    is scored (to compile ahead). Returns the chosen architecture, which is never smaller
    than `start` (the rule only grows).
    """
    split_key, train_key = jax.random.split(key)
    train_idx, val_idx = split_train_val(n_labelled, split_key)
    scores: dict[Arch, float] = dict(known or {})
    arch = start
    for step in range(1, t_inas + 1):
        candidates = neighbours(arch)
        if prepare is not None:
            prepare([c for c in candidates if c not in scores])
        for cand in candidates:
            if cand not in scores:
                scores[cand] = score(cand, train_idx, val_idx, candidate_key(train_key, cand))
        best = max(candidates, key=lambda c: scores[c])  # max keeps the first on ties: the current arch
        log.info("iNAS step %d: %s -> %s (%s)", step, arch, best,
                 ", ".join(f"{c} {scores[c]:.3f}" for c in candidates))
        if best == arch:
            break
        arch = best
    return SearchResult(arch, scores)

"""What crosses rounds: the immutable pool state, its start, and the run store's interface.

`PoolState` is the only value a round hands to the next; `Progress` is what the loop asks of a run
store (inas_jax.store.RunStore keeps it in a workdir; `NoProgress` keeps nothing).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Protocol

import flax.struct
import jax
import numpy as np

from inas_jax.config import RunConfig
from inas_jax.loop.permutations import permutation
from inas_jax.model.search_space import Arch


@flax.struct.dataclass
class PoolState:
    """What crosses rounds. labelled_idx: pool indices (n,) int32 in order of acquisition;
    round: rounds completed; arch: the current architecture; history: one record (dict) per
    completed round."""

    labelled_idx: np.ndarray
    round: int = flax.struct.field(pytree_node=False)
    arch: Arch = flax.struct.field(pytree_node=False)
    history: tuple = flax.struct.field(pytree_node=False, default=())


class TrainingCheckpoint(Protocol):
    """One training's checkpoints: `resume`, (epochs done, TrainState, history) to continue from or
    None, and `save(epochs_done, state, history)`, called after every epoch (it decides whether to
    write)."""

    resume: tuple[int, Any, list[dict]] | None

    def save(self, epoch: int, state: Any, history: list[dict]) -> None: ...


class PhaseTimes(Protocol):
    def spent(self) -> dict: ...


class Progress(Protocol):
    """Persistence of a run (inas_jax.store.RunStore); NoProgress keeps nothing."""

    def load(self) -> PoolState | None: ...
    def save_round(self, state: PoolState, finished: bool) -> None: ...
    def write_results(self, state: PoolState, finished: bool) -> None: ...
    def known_scores(self, round_: int) -> dict[Arch, float]: ...
    def known_spent(self, round_: int) -> dict: ...
    def candidate_done(self, round_: int, arch: Arch, score: float, spent: dict) -> None: ...
    def save_network(self, round_: int, arch: Arch, result: Any) -> None: ...
    def training(self, round_: int, task: str, template: Callable[[], Any],
                 times: PhaseTimes) -> TrainingCheckpoint | None: ...


class NoProgress:
    def load(self):
        return None

    def save_round(self, state, finished):
        pass

    def write_results(self, state, finished):
        pass

    def known_scores(self, round_):
        return {}

    def known_spent(self, round_):
        return {}

    def candidate_done(self, round_, arch, score, spent):
        pass

    def save_network(self, round_, arch, result):
        pass

    def training(self, round_, task, template, times):
        return None


def initial_labelled(pool_size: int, k: int, seed: int) -> np.ndarray:
    """The random initial labelled set: depends only on the pool size, k and the seed, so every
    strategy and query function of a comparison starts from the same points."""
    perm = permutation(jax.random.fold_in(jax.random.key(seed), 0x1AB), pool_size)
    return np.asarray(perm[:k], np.int32)


def initial_state(cfg: RunConfig, pool_size: int, given: np.ndarray | None = None) -> PoolState:
    """The state before the first round: the labelled set `given` (pool indices whose labels the data
    holds, e.g. an image folder's labelled/ images) when there is one, else the random initial set."""
    if given is not None and len(given):
        labelled = np.asarray(given, np.int32)
    else:
        labelled = initial_labelled(pool_size, cfg.initial_size, cfg.seed)
    return PoolState(labelled_idx=labelled, round=0, arch=cfg.arch)


def is_finished(state: PoolState, cfg: RunConfig) -> bool:
    return state.round >= len(cfg.schedule())


def labelled_fingerprint(labelled_idx: np.ndarray) -> str:
    """sha1 of the labelled indices in acquisition order (int32 little-endian): equal runs, equal strings."""
    return hashlib.sha1(np.asarray(labelled_idx, "<i4").tobytes()).hexdigest()

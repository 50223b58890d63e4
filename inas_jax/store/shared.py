"""A run's progress when several processes run it: the writer (process 0) keeps the workdir through its
RunStore; the other processes touch no file and receive every value read back (the state to resume,
iNAS scores, phase times, a training's checkpoint to resume) from the writer, so all take the same
decisions. A training checkpoint is saved by the writer alone, when its own clock says so."""
from __future__ import annotations

from typing import Any, Callable

import jax

from inas_jax.model.search_space import Arch
from inas_jax.runtime.distributed import is_writer, share


class FollowerCheckpoint:
    """A non-writer's view of one training's checkpoints: the writer's resume point, and no saves."""

    def __init__(self, resume):
        self.resume = resume

    def save(self, epoch: int, state: Any, history: list[dict]) -> None:
        pass


class SharedProgress:
    """loop.state.Progress over several processes: `store` (a RunStore) on the writer, None elsewhere."""

    def __init__(self, store=None):
        self.store = store if is_writer() else None

    def load(self):
        return share(lambda: self.store.load())

    def save_round(self, state, finished: bool) -> None:
        if self.store is not None:
            self.store.save_round(state, finished)

    def write_results(self, state, finished: bool) -> None:
        if self.store is not None:
            self.store.write_results(state, finished)

    def known_scores(self, round_: int) -> dict[Arch, float]:
        return share(lambda: self.store.known_scores(round_))

    def known_spent(self, round_: int) -> dict:
        return share(lambda: self.store.known_spent(round_))

    def candidate_done(self, round_: int, arch: Arch, score: float, spent: dict) -> None:
        if self.store is not None:
            self.store.candidate_done(round_, arch, score, spent)

    def save_network(self, round_: int, arch: Arch, result: Any) -> None:
        if self.store is not None:
            self.store.save_network(round_, arch, result)

    def training(self, round_: int, task: str, template: Callable[[], Any], times=None):
        mine = self.store.training(round_, task, template, times) if self.store is not None else None
        resume = share(lambda: None if mine.resume is None else jax.device_get(mine.resume))
        return mine if mine is not None else FollowerCheckpoint(resume)

"""Checkpoints inside a training (training/<epoch>/: the TrainState with its round, task, epoch and
history), so a kill mid-training loses at most `checkpoint_seconds` of work."""
from __future__ import annotations

import logging
import pathlib
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from inas_jax.store.files import manager, newest_readable

log = logging.getLogger(__name__)


def check_shapes(restored: Any, target: Any) -> None:
    """Raises ValueError unless `restored` has the tree, shapes and dtypes of `target` (a checkpoint of
    another network, e.g. another width, is not this training's)."""
    def spec(tree):
        return jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), tree)
    if jax.tree.structure(restored) != jax.tree.structure(target) or spec(restored) != spec(target):
        raise ValueError("its arrays' shapes are not this network's (a checkpoint of another network?)")


class TrainingCheckpoints:
    """The mid-training checkpoints of the run in `workdir` (the newest 2 kept)."""

    def __init__(self, workdir: pathlib.Path, checkpoint_seconds: float):
        self.dir = workdir / "training"
        self.checkpoint_seconds = checkpoint_seconds
        self._manager = manager(self.dir, keep=2)

    def close(self) -> None:
        self._manager.close()

    def clear(self) -> None:
        for step in self._manager.all_steps():
            self._manager.delete(step)

    def meta(self, step: int) -> dict:
        """{'round', 'task', 'epoch', 'history'} of checkpoint `step`."""
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def newest(self, round_: int, task: str, template: Callable[[], Any]) -> tuple[int, Any, list] | None:
        """(epoch, TrainState, history) of the newest readable checkpoint of this training; None when
        there is none, or the newest belongs to another training."""
        def restore(step: int):
            meta = self.meta(step)
            if meta["round"] != round_ or meta["task"] != task:
                return None
            target = template()
            got = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            check_shapes(got["state"], target)
            return int(meta["epoch"]), got["state"], meta["history"]

        return newest_readable(self._manager, restore, "training", delete_damaged=False)

    def final_step_of_first_round(self) -> int | None:
        """The newest readable checkpoint of round 1's final training, if any."""
        def final_step(step: int) -> int | None:
            meta = self.meta(step)
            return step if meta["round"] == 0 and meta["task"] == "final" else None

        return newest_readable(self._manager, final_step, "training", delete_damaged=False)

    def save(self, round_: int, task: str, epoch: int, state: Any, history: list[dict]) -> None:
        meta = {"round": round_, "task": task, "epoch": epoch, "history": history}
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()


class TrainingCheckpoint:
    """One training's checkpoints (loop.state.TrainingCheckpoint): where it resumes, and a save at most
    every `checkpoint_seconds`, each followed by `after_save()` (the round's progress)."""

    def __init__(self, store: TrainingCheckpoints, round_: int, task: str, template: Callable[[], Any],
                 after_save: Callable[[], None]):
        self.store, self.round, self.task, self.after_save = store, round_, task, after_save
        self.resume = store.newest(round_, task, template)
        if self.resume is None:
            store.clear()
        else:
            log.info("resuming %s of round %d from epoch %d", task, round_ + 1, self.resume[0])
        self._last_save = time.monotonic()

    def save(self, epoch: int, state: Any, history: list[dict]) -> None:
        if time.monotonic() - self._last_save < self.store.checkpoint_seconds:
            return
        self.store.save(self.round, self.task, epoch, state, history)
        self.after_save()
        self._last_save = time.monotonic()

"""A run's working directory: config guard, Orbax checkpoints per round and inside rounds, results.json.

WORKDIR/
  config.json          the RunConfig; a rerun with other settings is refused
  rounds/<r>/          Orbax: labelled indices and key (arrays), round, arch, history (JSON)
  training/<n>/        Orbax: the TrainState of the training in progress, with its round and task
  round_progress.json  scores of the iNAS candidates already trained in the current round
  results.json         config + one record per completed round (rewritten atomically each round)
Every write is atomic (Orbax commits by rename; JSON goes through a temporary file), so a kill at
any moment leaves the last complete checkpoint readable.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from inas_jax.active import PoolState
from inas_jax.config import RunConfig, differences
from inas_jax.models import Arch

log = logging.getLogger(__name__)


class ConfigMismatch(ValueError):
    """The workdir holds a run with other settings."""


def write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def _manager(directory: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


class RunStore:
    """Persistence of one run in `workdir`; implements active.Progress for mid-round resumption.

    checkpoint_seconds: minimum time between mid-training checkpoints (0 = after every epoch).
    """

    def __init__(self, workdir: str | os.PathLike, cfg: RunConfig, checkpoint_seconds: float = 60.0):
        self.dir = pathlib.Path(workdir)
        self.cfg = cfg
        self.checkpoint_seconds = checkpoint_seconds
        self._rounds = None
        self._training = None

    # -- config and round checkpoints -------------------------------------------------------------
    def open(self) -> None:
        """Creates the workdir or checks that it holds a run of the same config."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "config.json"
        if path.exists():
            diff = differences(json.loads(path.read_text()), self.cfg.to_dict())
            if diff:
                raise ConfigMismatch(f"workdir {str(self.dir)!r} holds a run with other settings ({'; '.join(diff)}); "
                                     "use another --workdir or the same settings")
        else:
            write_json(path, self.cfg.to_dict())
        self._rounds = _manager(self.dir / "rounds", keep=3)
        self._training = _manager(self.dir / "training", keep=2)

    def close(self) -> None:
        for m in (self._rounds, self._training):
            if m is not None:
                m.close()

    def load(self) -> PoolState | None:
        """The last complete round checkpoint. An unreadable one is deleted with a warning and the one
        before is used (the lost round is recomputed identically); never resumes from garbage."""
        for step in sorted(self._rounds.all_steps(), reverse=True):
            try:
                got = self._rounds.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
                meta, arrays = got["meta"], got["arrays"]
                state = PoolState(labelled=np.asarray(arrays["labelled"], np.int32),
                                  key=np.asarray(arrays["key"], np.uint32), round=int(meta["round"]),
                                  arch=Arch(*meta["arch"]), history=tuple(meta["history"]))
                sizes = self.cfg.schedule()
                expected = sizes[min(step, len(sizes) - 1)]
                if state.round != step or len(state.history) != step:
                    raise ValueError(f"round {state.round} with {len(state.history)} records under step {step}")
                if len(state.labelled) != expected or len(np.unique(state.labelled)) != expected:
                    raise ValueError(f"{len(state.labelled)} labelled indices where {expected} distinct are due")
                return state
            except Exception as err:  # a damaged checkpoint must never be resumed from
                log.warning("round checkpoint %d in %s is unreadable (%s); falling back to the previous one",
                            step, self.dir / "rounds", _first_line(err))
                self._rounds.delete(step)
        return None

    def save_round(self, state: PoolState, finished: bool) -> None:
        """Commits the state after a round, rewrites results.json and drops the round's progress."""
        arrays = {"labelled": np.asarray(state.labelled, np.int32), "key": np.asarray(state.key, np.uint32)}
        meta = {"round": state.round, "arch": [state.arch.blocks, state.arch.stacks], "history": list(state.history)}
        self._rounds.save(state.round, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
        self._rounds.wait_until_finished()
        self.write_results(state, finished)
        for step in self._training.all_steps():
            self._training.delete(step)
        (self.dir / "round_progress.json").unlink(missing_ok=True)

    def write_results(self, state: PoolState, finished: bool) -> None:
        write_json(self.dir / "results.json", {"config": self.cfg.to_dict(), "finished": finished,
                                                "labelled": np.asarray(state.labelled).tolist(),
                                                "rounds": list(state.history)})

    # -- active.Progress: inside a round ----------------------------------------------------------
    def known_scores(self, round_: int) -> dict[Arch, float]:
        path = self.dir / "round_progress.json"
        if not path.exists():
            return {}
        progress = json.loads(path.read_text())
        if progress["round"] != round_:
            return {}
        return {Arch(*a): s for a, s in progress["scores"]}

    def candidate_done(self, round_: int, arch: Arch, score: float) -> None:
        scores = [[[a.blocks, a.stacks], s] for a, s in self.known_scores(round_).items()]
        write_json(self.dir / "round_progress.json",
                   {"round": round_, "scores": scores + [[[arch.blocks, arch.stacks], score]]})

    def training_hooks(self, round_: int, task: str, template) -> dict:
        """{'resume': (epoch, state, history) or None, 'on_epoch': checkpoint callback} for train()."""
        resume = None
        for step in sorted(self._training.all_steps(), reverse=True):
            try:
                meta = self._training.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                if meta["round"] != round_ or meta["task"] != task:
                    break
                got = self._training.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
                resume = (int(meta["epoch"]), got["state"], meta["history"])
                log.info("resuming %s of round %d from epoch %d", task, round_ + 1, meta["epoch"])
                break
            except Exception as err:  # damaged: try the previous one, else train from scratch
                log.warning("training checkpoint %d in %s is unreadable (%s); falling back", step,
                            self.dir / "training", _first_line(err))
        if resume is None:
            for step in self._training.all_steps():
                self._training.delete(step)
        last_save = [time.monotonic()]

        def on_epoch(epoch: int, state, history) -> None:
            if time.monotonic() - last_save[0] < self.checkpoint_seconds:
                return
            meta = {"round": round_, "task": task, "epoch": epoch, "history": history}
            self._training.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave(meta)), force=True)
            self._training.wait_until_finished()
            last_save[0] = time.monotonic()

        return {"resume": resume, "on_epoch": on_epoch}


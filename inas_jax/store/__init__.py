"""A run's working directory: one run at a time, config guard, Orbax checkpoints per round and inside
rounds, results.json. `RunStore` is the loop's Progress (inas_jax.loop.state) over these parts:
workdir.py (lock, config guard), rounds.py (round checkpoints, round progress, results.json),
training.py (mid-training checkpoints), first_round.py (first-round sharing).

WORKDIR/
  .lock                held (flock) by the process running this workdir; holds its pid
  config.json          {"config": RunConfig, "data": the dataset's fingerprint}; a rerun with other
                       settings or other data is refused
  rounds/<r>/          Orbax: labelled indices (array), round, arch, history (JSON)
  training/<n>/        Orbax: the TrainState of the training in progress, with its round and task
  round_progress.json  scores of the iNAS candidates already trained in the current round
  first_round/         the first round's progress and the last checkpoint of its final training (if
                       any), kept when that round ends: a run differing only in its query function
                       starts there (RunStore(first_round_from=...), --first_round_from)
  network/<r>/         Orbax: the network trained in round r (weights, settings, class names), the
                       model a run hands back (inas_jax.predict); the newest 2 kept
  labels/              a person's answers and the requests for them (inas_jax.oracle.person)
  results.json         config + one record per completed round (rewritten atomically each round)
Every write is atomic (Orbax commits by rename; JSON goes through a fresh temporary file), so a kill
at any moment leaves the last complete checkpoint readable. A damaged checkpoint or progress file is
discarded with a warning and its work recomputed; a damaged config.json is an error the user fixes.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

from inas_jax.config import RunConfig
from inas_jax.loop.state import PhaseTimes, PoolState
from inas_jax.model.search_space import Arch
from inas_jax.store import first_round, network, rounds, workdir
from inas_jax.store.files import WorkdirError, remove_stale_temporaries  # noqa: F401  (the store's error)
from inas_jax.store.first_round import FIRST_ROUND  # noqa: F401
from inas_jax.store.training import TrainingCheckpoint, TrainingCheckpoints


class RunStore:
    """Persistence of one run in `workdir`; implements loop.state.Progress.

    data: the dataset's fingerprint (a JSON-able dict), checked like the settings on resume.
    checkpoint_seconds: minimum time between mid-training checkpoints (0 = after every epoch).
    first_round_from: the workdir of a run with the same settings and data but for the query function's
    (config.QUERY_SETTINGS); a new run starts from that run's first round instead of recomputing it.
    classes: the class names, kept with each round's network (default: "0".."K-1").
    """

    def __init__(self, workdir: str | os.PathLike, cfg: RunConfig, data: dict | None = None,
                 checkpoint_seconds: float = 60.0, first_round_from: str | os.PathLike | None = None,
                 classes: tuple[str, ...] = ()):
        self.dir = pathlib.Path(workdir)
        self.cfg = cfg
        self.data = data or {}
        self.checkpoint_seconds = checkpoint_seconds
        self.first_round_from = first_round_from
        self.classes = tuple(classes)
        self._lock = None
        self._rounds: rounds.RoundCheckpoints | None = None
        self._training: TrainingCheckpoints | None = None

    def open(self) -> None:
        """Locks the workdir (creating it) and checks that it holds a run of the same config and data,
        or none. Raises WorkdirError naming the problem."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = workdir.take_lock(self.dir)
        try:
            remove_stale_temporaries(self.dir)
            workdir.check_config(self.dir, self._record())
            if self.first_round_from is not None:
                first_round.adopt(self.dir, pathlib.Path(self.first_round_from), self._record())
            self._rounds = rounds.RoundCheckpoints(self.dir, self.cfg, self.data.get("train"))
            self._training = TrainingCheckpoints(self.dir, self.checkpoint_seconds)
        except BaseException:
            self.close()
            raise

    def _record(self) -> dict:
        """What config.json holds: this run's settings and its data's fingerprint."""
        return {"config": self.cfg.to_dict(), "data": self.data}

    def close(self) -> None:
        for part in (self._rounds, self._training):
            if part is not None:
                part.close()
        self._rounds = self._training = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def load(self) -> PoolState | None:
        return self._rounds.load()

    def save_round(self, state: PoolState, finished: bool) -> None:
        """Commits the state after a round, rewrites results.json and drops the round's progress (after
        the first round, kept in first_round/)."""
        if state.round == 1:
            first_round.keep(self.dir, self._training)
        self._rounds.save(state)
        self.write_results(state, finished)
        self._training.clear()
        (self.dir / "round_progress.json").unlink(missing_ok=True)

    def write_results(self, state: PoolState, finished: bool) -> None:
        rounds.write_results(self.dir, self.cfg, state, finished)

    def save_network(self, round_: int, arch: Arch, result: Any) -> None:
        """Keeps the network trained in round `round_` (a loop.train.TrainResult): the model handed back."""
        classes = self.classes or tuple(str(k) for k in range(result.model.module.num_classes))
        network.save_network(self.dir, self.cfg, round_, arch, result.model, result.state, classes,
                             tuple(self.data.get("image_shape", ())))

    def known_scores(self, round_: int) -> dict[Arch, float]:
        """Scores of the iNAS candidates finished in this round."""
        return rounds.read_progress(self.dir / "round_progress.json", round_)["scores"]

    def known_spent(self, round_: int) -> dict:
        """The phase times ({'seconds', 'cpu_seconds'}) an interrupted process spent on this round up to
        its last checkpoint; empty if none."""
        return rounds.read_progress(self.dir / "round_progress.json", round_)["spent"]

    def candidate_done(self, round_: int, arch: Arch, score: float, spent: dict) -> None:
        rounds.write_progress(self.dir / "round_progress.json", round_, {**self.known_scores(round_), arch: score},
                              spent)

    def training(self, round_: int, task: str, template: Callable[[], Any],
                 times: PhaseTimes | None = None) -> TrainingCheckpoint:
        """The checkpoints of one training: resumes from its newest, saves at most every
        checkpoint_seconds; with `times` (the round's clock) each save also keeps the round's progress."""
        def keep_progress() -> None:
            if times is not None:
                rounds.write_progress(self.dir / "round_progress.json", round_, self.known_scores(round_),
                                      times.spent())
        return TrainingCheckpoint(self._training, round_, task, template, keep_progress)

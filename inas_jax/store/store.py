"""A run's working directory: one run at a time, config guard, Orbax checkpoints per round and inside
rounds, results.json.

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
  results.json         config + one record per completed round (rewritten atomically each round)
Every write is atomic (Orbax commits by rename; JSON goes through a fresh temporary file), so a kill
at any moment leaves the last complete checkpoint readable. A damaged checkpoint or progress file is
discarded with a warning and its work recomputed; a damaged config.json is an error the user fixes.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from inas_jax.loop.round import PoolState
from inas_jax.config import QUERY_SETTINGS, ConfigError, RunConfig, differences, with_legacy_settings
from inas_jax.model.search_space import Arch

log = logging.getLogger(__name__)

FIRST_ROUND = "first_round"


class WorkdirError(ValueError):
    """The workdir cannot hold this run: other settings or data, in use, or damaged beyond recovery."""


def write_json(path: pathlib.Path, obj) -> None:
    """Writes obj to path atomically through a temporary file created exclusively beside it (a fresh
    name: never a path that already exists, such as a planted symlink), then renamed over path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=1))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def _manager(directory: pathlib.Path, keep: int) -> ocp.CheckpointManager:
    if directory.exists() and not directory.is_dir():
        raise WorkdirError(f"{str(directory)!r} is not a directory; move it away to resume this workdir")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def newest_readable(manager: ocp.CheckpointManager, restore: Callable[[int], Any], what: str,
                    delete_damaged: bool) -> Any:
    """restore(step) of the newest step it succeeds on, trying steps newest first. A step whose
    restore raises is damaged: logged as a warning (and deleted if delete_damaged), then the one
    before is tried. restore returning None stops the search. None if no step is readable."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore(step)
        except Exception as err:  # a damaged checkpoint must never be resumed from
            log.warning("%s checkpoint %d in %s is unreadable (%s); falling back to the previous one", what, step,
                        manager.directory, _first_line(err))
            if delete_damaged:
                manager.delete(step)
    return None


class RunStore:
    """Persistence of one run in `workdir`; implements active.Progress.

    data: the dataset's fingerprint (a JSON-able dict), checked like the settings on resume.
    checkpoint_seconds: minimum time between mid-training checkpoints (0 = after every epoch).
    first_round_from: the workdir of a run with the same settings and data but for the query function's
    (config.QUERY_SETTINGS); a new run starts from that run's first round instead of recomputing it.
    """

    def __init__(self, workdir: str | os.PathLike, cfg: RunConfig, data: dict | None = None,
                 checkpoint_seconds: float = 60.0, first_round_from: str | os.PathLike | None = None):
        self.dir = pathlib.Path(workdir)
        self.cfg = cfg
        self.data = data or {}
        self.checkpoint_seconds = checkpoint_seconds
        self.first_round_from = first_round_from
        self._lock = None
        self._rounds = None
        self._training = None

    # -- opening: lock, config guard --------------------------------------------------------------
    def open(self) -> None:
        """Locks the workdir (creating it) and checks that it holds a run of the same config and data,
        or none. Raises WorkdirError naming the problem."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._check_config()
            if self.first_round_from is not None:
                self._adopt_first_round(pathlib.Path(self.first_round_from))
            self._rounds = _manager(self.dir / "rounds", keep=3)
            self._training = _manager(self.dir / "training", keep=2)
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise WorkdirError(f"workdir {str(self.dir)!r} is in use by another run (pid {holder}); wait for "
                                   "it to end or use another --workdir") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def _record(self) -> dict:
        """What config.json holds: this run's settings and its data's fingerprint."""
        return {"config": self.cfg.to_dict(), "data": self.data}

    def _check_config(self) -> None:
        path = self.dir / "config.json"
        mine = self._record()
        if not path.exists():
            write_json(path, mine)
            return
        try:
            stored = json.loads(path.read_text())
            if not isinstance(stored, dict) or set(stored) != {"config", "data"}:
                raise ConfigError("expected an object with 'config' and 'data'")
            stored["config"] = RunConfig.from_dict(stored["config"]).to_dict()  # checked, LEGACY_SETTINGS filled
        except (ValueError, OSError) as err:  # JSONDecodeError and ConfigError are ValueErrors
            raise WorkdirError(f"{str(path)!r} is unreadable ({_first_line(err)}); restore it or use another "
                               "--workdir") from None
        diff = differences(stored, mine)
        if diff:
            raise WorkdirError(f"workdir {str(self.dir)!r} holds a run with other settings or data "
                               f"({'; '.join(d.removeprefix('config.') for d in diff)}); use another --workdir or "
                               "the same settings and data")

    def _adopt_first_round(self, source: pathlib.Path) -> None:
        """Copies `source`'s kept first round (progress and final-training checkpoint) into this workdir,
        if it holds no run in progress yet. The first round is searched and trained before any query, so
        the run then repeats exactly what it would compute itself, and records the same phase times.
        Raises WorkdirError if source is another run or kept no first round."""
        started = [p for p in (self.dir / "rounds", self.dir / "training") if p.is_dir() and any(p.iterdir())]
        if started or (self.dir / "round_progress.json").exists():
            log.info("%s already holds a run in progress: not starting from %s's first round", self.dir, source)
            return
        what = f"--first_round_from={str(source)!r}"
        try:
            stored = json.loads((source / "config.json").read_text())
            stored["config"] = with_legacy_settings(stored["config"])
            diff = differences(stored, self._record())
        except (ValueError, OSError, AttributeError) as err:
            raise WorkdirError(f"{what}: its config.json is unreadable ({_first_line(err)})") from None
        other = [d for d in diff if d.split(":", 1)[0] not in {f"config.{k}" for k in QUERY_SETTINGS}]
        if other:
            raise WorkdirError(f"{what} is a run with other settings or data ({'; '.join(other)}); only the "
                               f"query function's settings ({', '.join(QUERY_SETTINGS)}) may differ")
        kept = source / FIRST_ROUND
        if not (kept / "round_progress.json").is_file():
            raise WorkdirError(f"{what} holds no finished first round to start from (a run keeps it when its "
                               "first round ends)")
        for step in kept.glob("training/*"):  # none if the final training ended before its first checkpoint
            staging = self.dir / f"{FIRST_ROUND}.adopting"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(step, staging)
            (self.dir / "training").mkdir(exist_ok=True)
            staging.rename(self.dir / "training" / step.name)
        write_json(self.dir / "round_progress.json", json.loads((kept / "round_progress.json").read_text()))
        log.info("starting from the first round of %s", source)

    def _keep_first_round(self) -> None:
        """Keeps the first round's progress (iNAS scores, phase times) and the newest checkpoint of its
        final training, if it has one, in first_round/ (replaced atomically), for runs that differ only
        in their query function."""
        def final_step(step: int) -> int | None:
            meta = self._training.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            return step if meta["round"] == 0 and meta["task"] == "final" else None

        staging, kept = self.dir / f"{FIRST_ROUND}.tmp", self.dir / FIRST_ROUND
        shutil.rmtree(staging, ignore_errors=True)
        step = newest_readable(self._training, final_step, "training", delete_damaged=False)
        if step is not None:
            shutil.copytree(self.dir / "training" / str(step), staging / "training" / str(step))
        progress = self._round_progress(0)
        staging.mkdir(exist_ok=True)
        self._write_round_progress(0, progress["scores"], progress["spent"], staging / "round_progress.json")
        shutil.rmtree(kept, ignore_errors=True)
        staging.rename(kept)

    def close(self) -> None:
        for m in (self._rounds, self._training):
            if m is not None:
                m.close()
        self._rounds = self._training = None
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    # -- round checkpoints -------------------------------------------------------------------------
    def load(self) -> PoolState | None:
        """The last complete round checkpoint. An unreadable one is deleted with a warning and the one
        before is used (the lost round is recomputed identically); never resumes from garbage."""
        sizes = self.cfg.schedule()

        def restore(step: int) -> PoolState:
            got = self._rounds.restore(step, args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
            meta, arrays = got["meta"], got["arrays"]
            state = PoolState(labelled_idx=np.asarray(arrays["labelled"], np.int32), round=int(meta["round"]),
                              arch=Arch.from_json(meta["arch"]), history=tuple(meta["history"]))
            expected = sizes[min(step, len(sizes) - 1)]
            if state.round != step or len(state.history) != step:
                raise ValueError(f"round {state.round} with {len(state.history)} records under step {step}")
            if len(state.labelled_idx) != expected or len(np.unique(state.labelled_idx)) != expected:
                raise ValueError(f"{len(state.labelled_idx)} labelled indices where {expected} distinct are due")
            return state

        return newest_readable(self._rounds, restore, "round", delete_damaged=True)

    def save_round(self, state: PoolState, finished: bool) -> None:
        """Commits the state after a round, rewrites results.json and drops the round's progress (after
        the first round, kept in first_round/)."""
        if state.round == 1:
            self._keep_first_round()
        arrays = {"labelled": np.asarray(state.labelled_idx, np.int32)}
        meta = {"round": state.round, "arch": state.arch.to_json(), "history": list(state.history)}
        self._rounds.save(state.round, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
        self._rounds.wait_until_finished()
        self.write_results(state, finished)
        for step in self._training.all_steps():
            self._training.delete(step)
        (self.dir / "round_progress.json").unlink(missing_ok=True)

    def write_results(self, state: PoolState, finished: bool) -> None:
        write_json(self.dir / "results.json", {"config": self.cfg.to_dict(), "finished": finished,
                                                "labelled": np.asarray(state.labelled_idx).tolist(),
                                                "rounds": list(state.history)})

    # -- inside a round ----------------------------------------------------------------------------
    def _round_progress(self, round_: int) -> dict:
        """round_progress.json of this round: {'scores': {Arch: val accuracy} of the finished iNAS
        candidates, 'spent': the round's phase times so far}; empty for another round. A damaged file is
        discarded with a warning (its candidates are retrained, with the same results)."""
        path = self.dir / "round_progress.json"
        if not path.exists():
            return {"scores": {}, "spent": {}}
        try:
            progress = json.loads(path.read_text())
            if progress["round"] != round_:
                return {"scores": {}, "spent": {}}
            scores = {Arch.from_json(a): float(s) for a, s in progress["scores"]}
            kept = progress.get("spent", {})
            spent = {k: {phase: float(v) for phase, v in kept[k].items()}
                     for k in ("seconds", "cpu_seconds") if k in kept}
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
            log.warning("%s is unreadable (%s); discarding it", path, _first_line(err))
            path.unlink(missing_ok=True)
            return {"scores": {}, "spent": {}}
        return {"scores": scores, "spent": spent}

    def _write_round_progress(self, round_: int, scores: dict[Arch, float], spent: dict,
                              path: pathlib.Path | None = None) -> None:
        write_json(path or self.dir / "round_progress.json",
                   {"round": round_, "scores": [[a.to_json(), s] for a, s in scores.items()], "spent": spent})

    def known_scores(self, round_: int) -> dict[Arch, float]:
        """Scores of the iNAS candidates finished in this round."""
        return self._round_progress(round_)["scores"]

    def known_spent(self, round_: int) -> dict:
        """The phase times ({'seconds', 'cpu_seconds'}) an interrupted process spent on this round up to
        its last checkpoint; empty if none."""
        return self._round_progress(round_)["spent"]

    def candidate_done(self, round_: int, arch: Arch, score: float, spent: dict) -> None:
        self._write_round_progress(round_, {**self.known_scores(round_), arch: score}, spent)

    def training_hooks(self, round_: int, task: str, template: Callable[[], Any],
                       spent: Callable[[], dict] | None = None) -> dict:
        """{'resume': (epoch, state, history) or None, 'on_epoch': checkpoint callback} for train();
        template() gives the TrainState shapes to restore into, only called when there is a checkpoint;
        spent() the round's phase times, kept with each checkpoint."""
        def restore(step: int):
            meta = self._training.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            if meta["round"] != round_ or meta["task"] != task:
                return None
            got = self._training.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template()), meta=ocp.args.JsonRestore()))
            return int(meta["epoch"]), got["state"], meta["history"]

        resume = newest_readable(self._training, restore, "training", delete_damaged=False)
        if resume is None:
            for step in self._training.all_steps():
                self._training.delete(step)
        else:
            log.info("resuming %s of round %d from epoch %d", task, round_ + 1, resume[0])
        last_save = [time.monotonic()]

        def on_epoch(epoch: int, state, history) -> None:
            if time.monotonic() - last_save[0] < self.checkpoint_seconds:
                return
            meta = {"round": round_, "task": task, "epoch": epoch, "history": history}
            self._training.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave(meta)), force=True)
            self._training.wait_until_finished()
            if spent is not None:
                self._write_round_progress(round_, self.known_scores(round_), spent())
            last_save[0] = time.monotonic()

        return {"resume": resume, "on_epoch": on_epoch}

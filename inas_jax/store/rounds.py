"""Round checkpoints (rounds/<r>/: labelled indices, round, arch, history), the progress inside a round
(round_progress.json: finished iNAS candidates' scores, phase times) and results.json."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import pathlib

import numpy as np
import orbax.checkpoint as ocp

from inas_jax.config import RunConfig
from inas_jax.loop.state import PoolState
from inas_jax.model.search_space import Arch
from inas_jax.runtime.atomic import write_json
from inas_jax.store.files import first_line, manager, newest_readable

log = logging.getLogger(__name__)

NO_PROGRESS = {"scores": {}, "spent": {}}


def checksum(labelled: np.ndarray, meta: dict) -> str:
    """sha256 of a round checkpoint's labelled indices (int32 little-endian) and its round, arch and
    history (canonical JSON): an edit of either is caught on resume."""
    digest = hashlib.sha256(np.asarray(labelled, "<i4").tobytes())
    digest.update(json.dumps({k: meta[k] for k in ("round", "arch", "history")}, sort_keys=True).encode())
    return digest.hexdigest()


def check_state(state: PoolState, meta: dict, step: int, sizes: tuple[int, ...], pool_size: int | None) -> None:
    """Raises ValueError unless the restored round `step` is one this run could have written: its
    round and record count, as many distinct labelled indices as the schedule says, all inside the
    pool, and (for checkpoints that carry one) its checksum."""
    expected = sizes[min(step, len(sizes) - 1)]
    if state.round != step or len(state.history) != step:
        raise ValueError(f"round {state.round} with {len(state.history)} records under step {step}")
    if len(state.labelled_idx) != expected or len(np.unique(state.labelled_idx)) != expected:
        raise ValueError(f"{len(state.labelled_idx)} labelled indices where {expected} distinct are due")
    if pool_size is not None and len(state.labelled_idx) and not (
            0 <= state.labelled_idx.min() and state.labelled_idx.max() < pool_size):
        raise ValueError(f"labelled indices outside the pool of {pool_size}")
    if "checksum" in meta and meta["checksum"] != checksum(state.labelled_idx, meta):
        raise ValueError("its checksum does not match its contents (edited?)")


class RoundCheckpoints:
    """The committed rounds of the run in `workdir` (Orbax, the newest 3 kept); pool_size, when known,
    bounds the labelled indices read back."""

    def __init__(self, workdir: pathlib.Path, cfg: RunConfig, pool_size: int | None = None):
        self.dir, self.cfg, self.pool_size = workdir, cfg, pool_size
        self._manager = manager(workdir / "rounds", keep=3)

    def close(self) -> None:
        self._manager.close()

    def load(self) -> PoolState | None:
        """The last complete round checkpoint. An unreadable one is deleted with a warning and the one
        before is used (the lost round is recomputed identically); never resumes from garbage."""
        sizes = self.cfg.schedule()

        def restore(step: int) -> PoolState:
            got = self._manager.restore(step, args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
            meta, arrays = got["meta"], got["arrays"]
            state = PoolState(labelled_idx=np.asarray(arrays["labelled"], np.int32), round=int(meta["round"]),
                              arch=Arch.from_json(meta["arch"]), history=tuple(meta["history"]))
            check_state(state, meta, step, sizes, self.pool_size)
            return state

        return newest_readable(self._manager, restore, "round", delete_damaged=True)

    def save(self, state: PoolState) -> None:
        """Commits the state after a round (atomically: Orbax renames a finished step into place)."""
        arrays = {"labelled": np.asarray(state.labelled_idx, np.int32)}
        meta = {"round": state.round, "arch": state.arch.to_json(), "history": list(state.history)}
        meta["checksum"] = checksum(arrays["labelled"], meta)
        self._manager.save(state.round, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()


def write_results(workdir: pathlib.Path, cfg: RunConfig, state: PoolState, finished: bool) -> None:
    """results.json: the config, whether the run is finished, the labelled indices and every record."""
    write_json(workdir / "results.json", {"config": cfg.to_dict(), "finished": finished,
                                          "labelled": np.asarray(state.labelled_idx).tolist(),
                                          "rounds": list(state.history)})


def read_progress(path: pathlib.Path, round_: int) -> dict:
    """{'scores': {Arch: val accuracy} of the finished iNAS candidates, 'spent': the round's phase times
    so far} from round_progress.json at `path`; empty for another round. A damaged file is discarded
    with a warning (its candidates are retrained, with the same results)."""
    if not path.exists():
        return NO_PROGRESS
    try:
        progress = json.loads(path.read_text())
        if progress["round"] != round_:
            return NO_PROGRESS
        scores = {Arch.from_json(a): _within(s, 0.0, 1.0, "a score") for a, s in progress["scores"]}
        kept = progress.get("spent", {})
        spent = {k: {phase: _within(v, 0.0, math.inf, "a time") for phase, v in kept[k].items()}
                 for k in ("seconds", "cpu_seconds") if k in kept}
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        log.warning("%s is unreadable (%s); discarding it", path, first_line(err))
        path.unlink(missing_ok=True)
        return NO_PROGRESS
    return {"scores": scores, "spent": spent}


def _within(value, low: float, high: float, what: str) -> float:
    """float(value) if it is a finite number in [low, high]; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
            low <= value <= high):
        raise ValueError(f"{what} of {value!r}, outside [{low}, {high}]")
    return float(value)


def write_progress(path: pathlib.Path, round_: int, scores: dict[Arch, float], spent: dict) -> None:
    write_json(path, {"round": round_, "scores": [[a.to_json(), s] for a, s in scores.items()], "spent": spent})

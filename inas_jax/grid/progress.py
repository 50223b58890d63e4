"""The grid's progress line, read from its workdirs: runs done, running (with their round) and to run,
and the time left at the finished runs' mean duration. Pure functions of files and numbers."""
from __future__ import annotations

import dataclasses
import pathlib

from inas_jax.config import ConfigError, RunConfig
from inas_jax.grid.plan import read_json


@dataclasses.dataclass(frozen=True)
class RunProgress:
    """Rounds a run has recorded, of how many (None before its config is written), and their seconds."""

    rounds: int
    total: int | None
    seconds: float
    finished: bool = False

    @property
    def fraction(self) -> float:
        """The share of the run done, counted in rounds."""
        return 1.0 if self.finished else (self.rounds / self.total if self.total else 0.0)


def total_rounds(config: dict | None) -> int | None:
    """The number of rounds of a stored RunConfig dict (its schedule), None if it is unreadable."""
    try:
        return len(RunConfig.from_dict(config).schedule())
    except (ConfigError, TypeError, ValueError, AttributeError):
        return None


def read_progress(workdir: pathlib.Path) -> RunProgress:
    """A workdir's progress from results.json (written after each round) and config.json (at the
    start); a run without them has done 0 rounds."""
    results = read_json(workdir / "results.json") or {}
    rounds = results.get("rounds") if isinstance(results.get("rounds"), list) else []
    config = results.get("config") or (read_json(workdir / "config.json") or {}).get("config")
    seconds = sum(float(v) for r in rounds if isinstance(r, dict)
                  for v in (r.get("seconds") or {}).values() if isinstance(v, (int, float)))
    return RunProgress(len(rounds), total_rounds(config), seconds, results.get("finished") is True)


def seconds_left(finished: list[float], running: list[RunProgress], to_run: int, slots: int) -> float | None:
    """The wall time left: the finished runs' mean duration for each run to run and for the rounds
    left of each running one, shared among `slots` runs at once; None before any run has finished."""
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    work = mean * (to_run + sum(1.0 - p.fraction for p in running))
    return work / max(1, min(slots, to_run + len(running)))


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def progress_line(done: int, running: list[tuple[str, RunProgress]], to_run: int, left: float | None,
                  failed: int = 0) -> str:
    """'done 3 / running 2 / to run 5; running: NAME round 2/4, ...; about 12 min left' (and '/ not
    finished 1' after 'to run' once a run has ended otherwise)."""
    def where(name: str, p: RunProgress) -> str:
        return f"{name} round {p.rounds + 1}/{p.total or '?'}" if not p.finished else f"{name} finishing"

    line = f"done {done} / running {len(running)} / to run {to_run}" + (f" / not finished {failed}" if failed else "")
    if running:
        line += "; running: " + ", ".join(where(name, p) for name, p in running)
    if left is not None and (running or to_run):
        line += f"; about {duration(left)} left"
    return line

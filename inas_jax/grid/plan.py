"""What a grid is: its runs, each a driver command in its own workdir, and the rules that order them.

Pure functions of flags and workdirs, no jax and no Ray: the grid's driver reads them, and the
tests check them without a cluster.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
from typing import Callable, Iterable

from inas_jax.config import QUERY_SETTINGS, ConfigError, from_preset, run_name

# The directory a run keeps its finished first round in (inas_jax.store.first_round.FIRST_ROUND; that
# module loads jax, which the grid's driver does without).
FIRST_ROUND = "first_round"
# Flags the grid sets itself for every run: given among the shared flags they would contradict it.
GRID_FLAGS = ("dataset", "query", "strategy", "arch", "seed", "workdir", "first_round_from")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of the grid: its name and its driver flags (`--workdir=...` among them)."""

    name: str
    flags: tuple[str, ...]

    @property
    def workdir(self) -> str:
        """The --workdir flag's value, as given (relative to the grid's cwd unless absolute)."""
        workdir = flag_values(self.flags).get("workdir")
        if not workdir:
            raise ValueError(f"run {self.name!r} has no --workdir flag")
        return workdir


@dataclasses.dataclass(frozen=True)
class Grid:
    """Runs and what each asks of a node: `cpus_per_run` CPUs (its XLA:CPU threads: each run is pinned
    to that many CPUs), and `gpus_per_run` GPUs or `tpus_per_run` TPU chips. Drivers start in `cwd`, so
    relative flags (workdirs, npz paths) mean the same on every node that mounts it at the same path."""

    runs: tuple[Run, ...]
    cwd: str = dataclasses.field(default_factory=os.getcwd)
    cpus_per_run: int = 1
    gpus_per_run: float = 0
    tpus_per_run: int = 0

    def __post_init__(self):
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise ValueError(f"two runs share a name: {sorted(n for n in set(names) if names.count(n) > 1)}")
        if self.cpus_per_run < 1 or self.gpus_per_run < 0 or self.tpus_per_run < 0:
            raise ValueError("cpus_per_run must be >= 1, gpus_per_run and tpus_per_run >= 0")

    def workdir(self, run: Run) -> pathlib.Path:
        return pathlib.Path(self.cwd, run.workdir)

    def resources(self) -> dict:
        """The Ray task options of one run: {"num_cpus", "num_gpus", "resources"}."""
        return {"num_cpus": self.cpus_per_run, "num_gpus": self.gpus_per_run,
                "resources": {"TPU": self.tpus_per_run} if self.tpus_per_run else {}}


def flag_values(flags: Iterable[str]) -> dict[str, str]:
    """{name: value} of --name=value flags ('' for a bare --name)."""
    out = {}
    for flag in flags:
        if flag.startswith("--"):
            name, _, value = flag[2:].partition("=")
            out[name] = value
    return out


def parse_strategies(text: str) -> list[tuple[str, str | None]]:
    """'inas,fixed:1,2,fixed:2,4' -> [('inas', None), ('fixed', '1,2'), ('fixed', '2,4')]: a
    comma-separated item of digits only continues the architecture before it."""
    out: list[list] = []
    for item in (i.strip() for i in text.split(",")):
        if item.isdigit() and out and out[-1][1] is not None:
            out[-1][1] += f",{item}"
        elif item and not item.isdigit():
            strategy, _, arch = item.partition(":")
            out.append([strategy, arch or None])
        else:
            raise ConfigError(f"--strategies={text!r}: expected STRATEGY or STRATEGY:BLOCKS,STACKS items, e.g. "
                              "inas,fixed:1,2")
    return [(s, a) for s, a in out]


def split_list(value) -> list[str]:
    """A JSON list or a comma-separated string, as a list of strings."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(i).strip() for i in items if str(i).strip()]


def product_grid(root: str, datasets: list[str], queries: list[str], strategies: list[tuple[str, str | None]],
         seeds: list[int], shared: Iterable[str] = (), **grid) -> Grid:
    """The grid datasets x seeds x strategies x queries (seed by seed, so the first seeds finish
    first), each run in ROOT/<config.run_name>; `shared` flags go to every run, `grid` to Grid."""
    shared = tuple(shared)
    taken = sorted(set(flag_values(shared)) & set(GRID_FLAGS))
    if taken:
        raise ConfigError(f"the shared flags set {', '.join('--' + t for t in taken)}, which the grid sets for "
                          "each run: use --datasets, --queries, --strategies, --seeds and --root")
    preset = flag_values(shared).get("preset", "cpu")
    runs = []
    for dataset, seed, (strategy, arch), query in itertools.product(datasets, seeds, strategies, queries):
        name = run_name(from_preset(preset, dataset, strategy=strategy, query=query, seed=int(seed),
                                    **({"arch": arch} if arch else {})))
        flags = [f"--dataset={dataset}", f"--strategy={strategy}", *([f"--arch={arch}"] if arch else []),
                 f"--query={query}", f"--seed={seed}", *shared, f"--workdir={os.path.join(root, name)}"]
        runs.append(Run(name, tuple(flags)))
    if not runs:
        raise ConfigError("the grid is empty: give at least one dataset, query, strategy and seed")
    return Grid(tuple(runs), **grid)


def sibling_key(run: Run) -> tuple:
    """A run's flags but its workdir, --first_round_from and the query's settings: runs with the same key
    compute the same first round (config.QUERY_SETTINGS)."""
    ignored = {"workdir", "first_round_from", *QUERY_SETTINGS}
    return tuple(sorted((k, v) for k, v in flag_values(run.flags).items() if k not in ignored))


def first_round_source(run: Run, runs: Iterable[Run], workdir: Callable[[Run], pathlib.Path]) -> pathlib.Path | None:
    """The workdir of a sibling of `run` among `runs` that has kept its finished first round, if any."""
    for other in runs:
        source = workdir(other)
        if other.name != run.name and sibling_key(other) == sibling_key(run) and (source / FIRST_ROUND).is_dir():
            return source
    return None


def next_run(pending: list[Run], running: Iterable[Run], workdir: Callable[[Run], pathlib.Path]) -> int:
    """Index in `pending` of the run to start next: the first that no running sibling is still
    computing the first round of (it will start from that round once kept); the first if every one
    waits on a sibling (a free slot is not left idle for it)."""
    busy = {sibling_key(r) for r in running if not (workdir(r) / FIRST_ROUND).is_dir()}
    return next((i for i, run in enumerate(pending) if sibling_key(run) not in busy), 0)


def with_first_round(run: Run, runs: Iterable[Run], workdir: Callable[[Run], pathlib.Path]) -> Run:
    """`run` with --first_round_from=<a sibling's workdir> when a sibling has kept its first round."""
    source = first_round_source(run, runs, workdir)
    if source is None or "first_round_from" in flag_values(run.flags):
        return run
    return dataclasses.replace(run, flags=(*run.flags, f"--first_round_from={source}"))


def read_json(path: pathlib.Path) -> dict | None:
    """A JSON object file, or None when it is missing, being replaced or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_finished(workdir: pathlib.Path) -> bool:
    """Whether the workdir's results.json says its run is finished."""
    return (read_json(workdir / "results.json") or {}).get("finished") is True

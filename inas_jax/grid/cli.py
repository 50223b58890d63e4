"""inas-jax-grid (python -m inas_jax.grid): a grid of runs, datasets x queries x strategies x seeds, on Ray.

  inas-jax-grid --root=runs/grid --datasets=digits --queries=random,sr --strategies=inas,fixed:1,2 \\
      --seeds=0,1 -- --width=8 --budget=300          # flags after -- go to every run
  inas-jax-grid --config=grid.json                   # the same fields in a JSON object
  inas-jax-grid --address=auto ...                   # on the Ray cluster this node belongs to

Each run works in ROOT/<name> (config.run_name, e.g. digits_fixed1x2_sr_seed0) and logs to its
driver.log; `fixed:1,2` is --strategy=fixed --arch=1,2. Without --address (or $RAY_ADDRESS) a local
Ray cluster is started on the CPUs this process may use. Each run is pinned to --cpus_per_run CPUs
(its XLA:CPU threads, so its floats do not depend on the node), and may ask for GPUs or TPU chips.
Rerunning the command skips the finished runs and resumes the others from their workdirs. At the
end the report (inas-jax-report) of every run with a round goes to ROOT/report. Exit status: 0 every
run finished, 1 otherwise, 2 bad input, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys

from inas_jax.config import ConfigError
from inas_jax.grid.plan import Grid, parse_strategies, product_grid, split_list

# The fields of a --config file: the flags' names, and `flags` (the shared driver flags).
FIELDS = ("root", "datasets", "queries", "strategies", "seeds", "flags", "address", "cpus_per_run",
          "gpus_per_run", "tpus_per_run", "max_running", "attempts", "report")
DEFAULTS = dict(root="runs/grid", datasets="digits", queries="sr", strategies="inas", seeds="0", flags=[],
                cpus_per_run=1, gpus_per_run=0, tpus_per_run=0, attempts=3)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inas-jax-grid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [options] [-- DRIVER_FLAGS...]")
    add = parser.add_argument
    add("--config", help="a JSON object with any of the fields " + ", ".join(FIELDS) + " (flags override it)")
    add("--root", help=f"directory of the runs' workdirs (default {DEFAULTS['root']})")
    add("--datasets", help="comma-separated --dataset values (default digits)")
    add("--queries", help="comma-separated query functions (default sr)")
    add("--strategies", help="comma-separated: inas, longtail, fixed:BLOCKS,STACKS (default inas)")
    add("--seeds", help="comma-separated seeds (default 0)")
    add("--address", help="Ray cluster to join: auto (this node's) or ray://HOST:10001 (default: $RAY_ADDRESS, "
                          "else a local cluster)")
    add("--cpus_per_run", type=int, help="CPUs, and so XLA:CPU threads, of each run (default 1)")
    add("--gpus_per_run", type=float, help="GPUs of each run (default 0)")
    add("--tpus_per_run", type=int, help="TPU chips of each run (default 0)")
    add("--max_running", type=int, help="runs at once at most (default: as many as the cluster holds)")
    add("--attempts", type=int, help="starts of a run whose driver or node is killed (default 3)")
    add("--report", help="directory of the final report (default ROOT/report; 'off': none)")
    add("--dry_run", action="store_true", help="print each run's command and exit")
    return parser


def settings(argv: list[str]) -> dict:
    """The command line's settings: a --config file's fields, overridden by the flags given; the flags
    after `--` are added to the file's `flags`. Raises ConfigError."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:cut])
    values = dict(DEFAULTS)
    if args.config:
        try:
            loaded = json.loads(pathlib.Path(args.config).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"--config={args.config!r} cannot be read as JSON: {err}") from None
        unknown = sorted(set(loaded) - set(FIELDS)) if isinstance(loaded, dict) else ["(not an object)"]
        if unknown:
            raise ConfigError(f"--config={args.config!r}: unknown fields {unknown}; known: {', '.join(FIELDS)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    values["flags"] = [*split_flags(values["flags"]), *argv[cut + 1:]]
    return values


def split_flags(flags) -> list[str]:
    """A JSON list of flags, or one string of them (split as a shell would)."""
    return shlex.split(flags) if isinstance(flags, str) else [str(f) for f in flags]


def grid_of(values: dict) -> Grid:
    """The Grid the settings describe; raises ConfigError."""
    try:
        seeds = [int(s) for s in split_list(values["seeds"])]
    except ValueError:
        raise ConfigError(f"seeds={values['seeds']!r}: expected comma-separated integers") from None
    return product_grid(str(values["root"]), split_list(values["datasets"]), split_list(values["queries"]),
                parse_strategies(",".join(split_list(values["strategies"]))), seeds, values["flags"],
                cpus_per_run=int(values["cpus_per_run"]), gpus_per_run=float(values["gpus_per_run"]),
                tpus_per_run=int(values["tpus_per_run"]))


def report(grid: Grid, out: str) -> int:
    """inas-jax-report over the runs that have recorded a round, into `out`; its exit status."""
    from inas_jax.report import cli as report_cli
    files = [str(grid.workdir(r) / "results.json") for r in grid.runs if (grid.workdir(r) / "results.json").exists()]
    if not files:
        print("no run has recorded a round yet: no report", file=sys.stderr)
        return 0
    print(f"report of {len(files)} runs in {out}:", flush=True)
    return report_cli.main([f"--out={out}", *files])


def main(argv: list[str]) -> int:
    try:
        values = settings(argv)
        grid = grid_of(values)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if values.pop("dry_run", False):
        for run in grid.runs:
            print(f"{run.name}: python -m inas_jax.main {shlex.join(run.flags)}")
        return 0
    from inas_jax.grid.runner import run_grid
    try:
        result = run_grid(grid, values.get("address"), values.get("max_running"), int(values["attempts"]))
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for outcome in result.outcomes:
        if outcome.status != "finished":
            print(f"{outcome.name}: {outcome.status}" + (f" (exit {outcome.exit_code})" if outcome.exit_code else "")
                  + (f": {outcome.message}" if outcome.message else ""), file=sys.stderr)
    finished = sum(o.status == "finished" for o in result.outcomes)
    print(f"{finished} of {len(grid.runs)} runs finished", flush=True)
    out = values.get("report") or os.path.join(str(values["root"]), "report")
    if not result.interrupted and out != "off":
        report(grid, out)
    return result.exit_status


def run() -> None:
    """The console entry point `inas-jax-grid`."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()

"""The CIFAR-10 studies at CPU scale: every query x strategy x seed of a preset (experiments/paper.py).

  python experiments/study.py run                        # the cifar_plateau study's declared runs, resuming
  python experiments/study.py run --jobs=2               # two runs at once, one core each
  python experiments/study.py status                     # each run done, under way or to run; core-hours left
  python experiments/study.py report                     # figures and the .md tables from the committed runs
  python experiments/study.py verify cifar10_inas_sr_seed0   # rerun one configuration, compare
  python experiments/study.py --study=cifar_cpu verify cifar10_fixed1x2_sr_seed0   # the first study

`run` works in runs/STUDY/NAME (checkpoints; not committed) and copies each finished run's
results.json to experiments/results/STUDY/runs/NAME.json. It runs the study on the grid runner
(inas_jax.grid, a local Ray cluster): with --jobs=N, N runs at once, each pinned to one CPU of its
own (one XLA:CPU thread, as the committed runs were made) and logging to its workdir's driver.log,
while a progress line shows each run's round. A run whose strategy and seed another run has already
taken through its first round starts from that round (--first_round_from: the same results, ~12%
less compute; its record carries that round's CPU time); it does not start beside a sibling still
computing that round while another run can start instead. A run killed by a signal restarts from
its workdir; one that fails is reported with its error line while the others go on. Stopping it
(Ctrl-C) at any moment loses at most the work since the last checkpoint: the same command resumes.
`verify` reruns one configuration from scratch in runs/STUDY/verify/NAME, pinned to as many CPUs
as the run recorded, keeps the rerun's results.json in experiments/results/STUDY/verify/ and checks
that the labelled indices (sha1 per round), architectures, candidate scores and accuracies equal the
committed file; exit status 1 if they do not. A rerun takes as long as the run: one stopped (Ctrl-C,
a crash, the machine taken back) resumes from that workdir when the same verify is run again, and
the workdir is removed once the rerun is compared, so the next verify starts from scratch. It
compares bit for bit where the rerun's rounds all ran on the CPU model the run recorded; otherwise
(XLA:CPU's floats differ between models) it checks the accuracies within binomial noise.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import paper
from inas_jax.grid import Grid, Run, run_grid
from inas_jax.grid.plan import is_finished
from inas_jax.store import FIRST_ROUND
from inas_jax.config import PRESETS
from inas_jax.report.checking import group_runs, load_runs
from inas_jax.report.classes import classes_text, pool_labels
from inas_jax.report.convergence import convergence_text
from inas_jax.report.statistics import round_cpu_hours

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DEFAULT_NPZ = "../shared/data/cifar10.npz"
STUDIES = ("cifar_plateau", "cifar_cpu")
# Extra rows of a study's accuracy table: published accuracies of a ResNet-18 trained on random CIFAR-10
# labels (the low-budget literature's reruns, rounded).
REFERENCES = {"cifar_plateau": ["ResNet-18 random (published)=1000:0.47,2000:0.58,3000:0.67,4000:0.73"]}
# Equivalence margins declared in a study's README before its runs (comparison=margin, AUC as a fraction).
EQUIVALENCE = {"cifar_plateau": ["random: iNAS - A(1,2)=0.01"]}
# CIFAR-10's class names, in label order (the header of classes.md).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def study(name: str, npz: str, seeds: list[int] | None) -> list[tuple[str, list[str]]]:
    """(run name, driver command) of every configuration of study `name`, in paper.py's order: its
    declared seeds, or those of them among `seeds`."""
    return [(workdir_of(cmd).name, cmd) for cmd in paper.commands(name, f"npz:{npz}", seeds, None)]


def runs_dir(study_name: str) -> pathlib.Path:
    """Where study `study_name` keeps the results.json of its finished runs."""
    return RESULTS / study_name / "runs"


def committed_file(study_name: str, name: str) -> pathlib.Path:
    """The finished results.json of run `name` of study `study_name`."""
    return runs_dir(study_name) / f"{name}.json"


def workdir_of(cmd: list[str]) -> pathlib.Path:
    return ROOT / next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))


def comparable(results: dict) -> list[dict]:
    """The per-round records without timings and the CPU model (checked apart, by verify): what a rerun
    with the same seed must reproduce."""
    def strip(r):
        out = {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")}
        if "environment" in r:
            out["environment"] = {k: v for k, v in r["environment"].items() if k not in ("cpu_model", "cpu_vector")}
        return out
    return [strip(r) for r in results["rounds"]]


def _round_cpu_models(results: dict) -> list[str | None]:
    """The CPU model each round recorded (None where unrecorded)."""
    return [r.get("environment", {}).get("cpu_model") for r in results["rounds"]]


def _models_text(models: list[str | None]) -> str:
    return " / ".join(dict.fromkeys(m or "an unrecorded CPU" for m in models))


def verify_workdir(cmd: list[str], name: str) -> pathlib.Path:
    """Where verify reruns run `name` (driver command `cmd`): verify/NAME beside the run's own workdir."""
    return workdir_of(cmd).parent / "verify" / name


def statistical_check(want: list[dict], got: list[dict], test_size: int) -> tuple[list[str], bool]:
    """Per-round test-accuracy differences of a rerun on another CPU model, each against the sd of a
    difference of two independent accuracies on `test_size` images; (lines, every |difference| < 3 sd)."""
    lines, ok = [], True
    for a, b in zip(want, got):
        p, q = a["test_accuracy"], b["test_accuracy"]
        sd = ((p * (1 - p) + q * (1 - q)) / test_size) ** 0.5
        ok &= abs(q - p) < 3 * sd
        lines.append(f"round {a['round']}: committed {p:.4f}, rerun {q:.4f}, difference {q - p:+.4f} "
                     f"({(q - p) / sd:+.1f} binomial sd); architecture {a['arch']} / {b['arch']}")
    return lines, ok


def recorded_cpus(results: dict) -> int | None:
    """The CPU threads the run's rounds ran with (XLA:CPU's numbers depend on it), None if unrecorded."""
    counts = {r["environment"]["cpu_threads"] for r in results["rounds"] if "environment" in r}
    if len(counts) > 1:
        raise ValueError(f"its rounds ran with different CPU thread counts {sorted(counts)}: it cannot be reproduced")
    return counts.pop() if counts else None


def start_pinned(cmd: list[str], cpus, stdout=None) -> subprocess.Popen:
    """Starts a driver command pinned to `cpus`: pinned as it starts, long before it imports jax, which
    sizes XLA:CPU's thread pool (and so the run's floats) by the CPUs it may use."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    os.sched_setaffinity(proc.pid, cpus)
    return proc


def _flags(cmd: list[str]) -> dict[str, str]:
    """{name: value} of a driver command's --name=value flags."""
    return dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)


def _settings(cmd: list[str]) -> dict[str, str]:
    """A driver command's flags but --query, --workdir and --first_round_from: runs equal in these share
    their first round."""
    return {k: v for k, v in _flags(cmd).items() if k not in ("query", "workdir", "first_round_from")}


def first_round_source(cmd: list[str], todo: list[tuple[str, list[str]]]) -> pathlib.Path | None:
    """The workdir of another run of `todo` that differs from `cmd` only in its query and has kept its
    finished first round, if any."""
    for _, other in todo:
        source = workdir_of(other)
        if source != workdir_of(cmd) and _settings(other) == _settings(cmd) and (source / FIRST_ROUND).is_dir():
            return source
    return None


def driver_run(name: str, cmd: list[str]) -> Run:
    """The grid's run of a driver command `python -m inas_jax.main FLAGS...`."""
    if cmd[1:3] != ["-m", "inas_jax.main"]:
        raise ValueError(f"{name}: not a driver command: {cmd[:3]}")
    return Run(name, tuple(cmd[3:]))


def run(args) -> int:
    """Every unfinished configuration of the study (in paper.py's order) on the grid runner, `args.jobs`
    at once, each pinned to one CPU; a finished run's results.json is copied to RESULTS/STUDY/runs/.
    Finished runs whose workdir is still here go to the grid too (it skips them), to lend their first
    round."""
    allowed = len(os.sched_getaffinity(0))
    if not 1 <= args.jobs <= allowed:
        print(f"error: --jobs={args.jobs} must be between 1 and the {allowed} CPUs this process may use",
              file=sys.stderr)
        return 2
    runs_dir(args.study).mkdir(parents=True, exist_ok=True)
    todo = study(args.study, args.npz, args.seeds)
    runs = []
    for i, (name, cmd) in enumerate(todo):
        done = committed_file(args.study, name).exists()
        print(f"[{i + 1}/{len(todo)}] {name}: {'done' if done else 'to run'}", flush=True)
        if not done or is_finished(workdir_of(cmd)):
            runs.append(driver_run(name, cmd))
    grid = Grid(tuple(runs), cwd=str(ROOT), cpus_per_run=1)

    def commit(finished: Run) -> None:
        if not committed_file(args.study, finished.name).exists():
            shutil.copyfile(grid.workdir(finished) / "results.json", committed_file(args.study, finished.name))

    return run_grid(grid, max_running=args.jobs, on_finished=commit).exit_status


def _strategy_of(cmd: list[str]) -> str:
    """The strategy of a driver command, "inas" or "fixed A,B": runs of one strategy cost about the same."""
    flags = _flags(cmd)
    return flags.get("strategy", "inas") + (f" {flags['arch']}" if "arch" in flags else "")


def _cpu_hours(results: dict, rounds: int | None = None) -> float:
    """CPU hours of the first `rounds` (default: all) rounds recorded in a results.json (0 when a round
    was recorded without them)."""
    hours = round_cpu_hours(results, len(results["rounds"]) if rounds is None else rounds)
    return 0.0 if hours is None else float(hours.sum())


def status(args) -> int:
    """Prints every configuration of the study as done (final accuracy, CPU hours), under way (rounds
    done and their CPU hours, the last line of its driver.log) or to run, then the CPU hours the
    unfinished runs still need, at the mean cost of the finished runs of the same strategy (of all
    finished runs when that strategy has none yet), less their round 1 for runs that will start from
    a sibling's (one kept it, or an earlier unfinished sibling will)."""
    todo = study(args.study, args.npz, args.seeds)
    done_hours: dict[str, list[float]] = {}
    first_hours: dict[str, list[float]] = {}
    lines, unfinished, computing_first = [], [], []
    for i, (name, cmd) in enumerate(todo):
        committed = committed_file(args.study, name)
        workdir = workdir_of(cmd)
        head = f"[{i + 1}/{len(todo)}] {name}:"
        if committed.exists():
            results = json.loads(committed.read_text())
            last, hours = results["rounds"][-1], _cpu_hours(results)
            done_hours.setdefault(_strategy_of(cmd), []).append(hours)
            first_hours.setdefault(_strategy_of(cmd), []).append(_cpu_hours(results, 1))
            lines.append(f"{head} done, test accuracy {last['test_accuracy']:.4f} at {last['num_labelled']:,} "
                         f"labels, {hours:.2f} CPU h")
            continue
        spent, state = 0.0, "to run"
        if workdir.exists():
            partial = workdir / "results.json"
            results = json.loads(partial.read_text()) if partial.exists() else {"rounds": []}
            spent = _cpu_hours(results)
            log = workdir / "driver.log"
            tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
            state = f"under way, {len(results['rounds'])} rounds done ({spent:.2f} CPU h)" + (
                f"; {tail[0]}" if tail else "")
        lines.append(f"{head} {state}")
        shares = spent == 0 and (first_round_source(cmd, todo) is not None
                                 or any(_settings(other) == _settings(cmd) for other in computing_first))
        if spent == 0 and not shares:
            computing_first.append(cmd)
        unfinished.append((_strategy_of(cmd), spent, shares))
    print("\n".join(lines))
    every = [h for hours in done_hours.values() for h in hours]
    if not unfinished:
        print(f"all {len(todo)} runs done")
    elif not every:
        print(f"{len(unfinished)} runs unfinished; no run has finished yet to estimate their cost from")
    else:
        def mean(by_strategy: dict[str, list[float]], strategy: str) -> float:
            values = by_strategy.get(strategy) or [h for hours in by_strategy.values() for h in hours]
            return sum(values) / len(values)

        left = sum(max(0.0, mean(done_hours, strategy) - (mean(first_hours, strategy) if shares else 0.0) - spent)
                   for strategy, spent, shares in unfinished)
        cpus = len(os.sched_getaffinity(0))
        print(f"{len(unfinished)} runs unfinished: about {left:.1f} CPU hours left at the mean cost of the finished "
              f"runs ({left / cpus:.1f} hours on this process's {cpus} CPUs, one run per CPU)")
    return 0


def report(args) -> int:
    """The report of the study's committed runs (of args.seeds only, when given): figures, summary.md and
    numbers.md into experiments/results/STUDY/, convergence.md from its convergence.json where it has
    one, and classes.md where the pool's labels (--npz) are here."""
    results = RESULTS / args.study
    files = report_files(args.study, args.seeds)
    if not files:
        which = "" if args.seeds is None else f" of seeds {args.seeds}"
        print(f"error: no results under {runs_dir(args.study)}{which}; run the study first", file=sys.stderr)
        return 2
    references = [f"--reference={r}" for r in REFERENCES.get(args.study, [])]
    margins = [f"--equivalence={m}" for m in EQUIVALENCE.get(args.study, [])]
    code = subprocess.run([sys.executable, "-m", "inas_jax.report", f"--out={results}", *references, *margins,
                           *files],
                          cwd=ROOT).returncode
    if code == 0 and (results / "convergence.json").exists():
        print(write_convergence(args.study))
    if code == 0 and pathlib.Path(ROOT, args.npz).exists():
        print(write_classes(args.study, files, pathlib.Path(ROOT, args.npz)))
    return code


def report_files(study_name: str, seeds: list[int] | None) -> list[str]:
    """The committed run files of the study, sorted; only those of `seeds` when given."""
    files = sorted(runs_dir(study_name).glob("*.json"))
    if seeds is not None:
        files = [f for f in files if json.loads(f.read_text())["config"]["seed"] in seeds]
    return [str(f) for f in files]


def write_classes(study_name: str, files: list[str], npz: pathlib.Path) -> pathlib.Path:
    """Writes RESULTS/STUDY/classes.md: the classes of the points each run of `files` queried, counted
    from the labels of the pool in `npz` (its y_train)."""
    path = RESULTS / study_name / "classes.md"
    path.write_text(classes_text(group_runs(load_runs(files)), pool_labels(npz), CIFAR10_CLASSES))
    return path


def write_convergence(study_name: str) -> pathlib.Path:
    """Writes RESULTS/STUDY/convergence.md from its convergence.json, S being the preset's passes over
    the labelled set and the AUC weights those of the label counts of the study's committed runs."""
    results = RESULTS / study_name
    cells = json.loads((results / "convergence.json").read_text())
    labels = sorted({r["num_labelled"] for f in runs_dir(study_name).glob("*.json")
                     for r in json.loads(f.read_text())["rounds"]})
    path = results / "convergence.md"
    path.write_text(convergence_text(cells, PRESETS[study_name]["train_passes"], labels))
    return path


def verify(args) -> int:
    """Reruns args.name from scratch on as many CPUs as it ran with, keeps the rerun's results in
    RESULTS/STUDY/verify/NAME.json and compares every recorded field of every round but the timings."""
    committed = committed_file(args.study, args.name)
    if not committed.exists():
        print(f"error: no committed results for {args.name!r} in {committed.parent}", file=sys.stderr)
        return 2
    results = json.loads(committed.read_text())
    try:
        cpus = args.cpus or recorded_cpus(results)
    except ValueError as err:
        print(f"error: {args.name}: {err}", file=sys.stderr)
        return 2
    allowed = sorted(os.sched_getaffinity(0))
    if cpus is not None and cpus > len(allowed):
        print(f"error: {args.name} ran with {cpus} CPU threads and this process may use {len(allowed)}; its "
              "floats depend on the thread count, so verify it where that many CPUs are free", file=sys.stderr)
        return 2
    seed = int(args.name.rsplit("seed", 1)[1])
    cmd = dict(study(args.study, args.npz, [seed])).get(args.name)
    if cmd is None:
        print(f"error: {args.name!r} is not a run of the {args.study} study's plan", file=sys.stderr)
        return 2
    workdir = verify_workdir(cmd, args.name)
    if workdir.exists():
        print(f"{args.name}: resuming the rerun in {workdir} (remove it to start over)")
    cmd = [a if not a.startswith("--workdir=") else f"--workdir={workdir}" for a in cmd]
    if start_pinned(cmd, allowed[:cpus]).wait() != 0:
        return 1
    fresh = json.loads((workdir / "results.json").read_text())
    rerun = RESULTS / args.study / "verify" / f"{args.name}.json"
    rerun.parent.mkdir(parents=True, exist_ok=True)
    rerun.write_text(json.dumps(fresh, indent=1))
    shutil.rmtree(workdir)
    want, got = comparable(results), comparable(fresh)
    made_on, rerun_on = _round_cpu_models(results), _round_cpu_models(fresh)
    if any(made_on) and made_on != rerun_on:
        lines, ok = statistical_check(want, got, getattr(args, "test_size", 10_000))
        print("\n".join(lines))
        print(f"{args.name}: made on {_models_text(made_on)}, rerun on {_models_text(rerun_on)}: XLA:CPU's floats "
              f"differ between CPU models, so this is a statistical check, not bit for bit: "
              f"{'every' if ok else 'NOT every'} round's accuracy within 3 binomial sd")
        return 0 if ok else 1
    if not any(made_on):
        print(f"{args.name} recorded no CPU model; comparing bit for bit on {_models_text(rerun_on)} (a mismatch "
              "may be the CPU's)")
    wrong = [f"round {a['round']} {key}: committed {a[key]!r} != rerun {b.get(key)!r}"
             for a, b in zip(want, got) for key in a if a[key] != b.get(key)]
    if len(want) != len(got):
        wrong.append(f"{len(want)} rounds committed, {len(got)} rerun")
    if not wrong:
        print(f"{args.name}: reproduced ({len(got)} rounds: labelled indices, architectures, accuracies)")
        return 0
    print("\n".join(wrong))
    print(f"{args.name}: NOT reproduced", file=sys.stderr)
    return 1


def _seeds(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=STUDIES[0], choices=STUDIES, help="the preset of the study")
    parser.add_argument("--npz", default=DEFAULT_NPZ, help="CIFAR-10 in the npz format (relative to the repo root)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--seeds", default=None, type=_seeds, help="only these of the declared seeds")
    p.add_argument("--jobs", default=1, type=int, help="configurations at once, each pinned to one CPU of its own")
    p = sub.add_parser("status")
    p.add_argument("--seeds", default=None, type=_seeds, help="only these of the declared seeds")
    p = sub.add_parser("report")
    p.add_argument("--seeds", default=None, type=_seeds, help="only the runs of these seeds (default: every run)")
    p = sub.add_parser("verify")
    p.add_argument("name", help="a run name, e.g. cifar10_inas_sr_seed0")
    p.add_argument("--cpus", type=int, default=None,
                   help="CPU threads of the rerun (default: those its rounds recorded, else every allowed CPU)")
    p.add_argument("--test_size", type=int, default=10_000, help="test images, for the check across CPU models")
    args = parser.parse_args()
    return {"run": run, "status": status, "report": report, "verify": verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

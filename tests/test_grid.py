"""inas_jax.grid on a real local Ray cluster: a tiny grid equals its runs made one by one, also when a
driver is SIGKILLed mid-training; a run with bad flags is reported once, not retried; Ctrl-C stops the
runs and the same grid resumes them; a finished grid is skipped; the command line; the run order,
first-round sharing, CPU taking and progress line."""
import json
import os
import pathlib
import signal
import sys
import threading
import time

import pytest

from conftest import TINY, results_of, run_cli, without_timings

ray = pytest.importorskip("ray")

from inas_jax.grid import cli, progress, runner, task  # noqa: E402
import inas_jax.grid.plan as grid_plan  # noqa: E402
from inas_jax.grid.plan import Grid, Run, parse_strategies, product_grid  # noqa: E402

# Two queries x two seeds of the tiny run on a fixed A(1,1), checkpointing every epoch (so a kill
# lands between checkpoints of a training).
QUERIES, SEEDS = ["random", "sr"], [0, 1]
SHARED = [*TINY, "--checkpoint_seconds=0"]


def driver_pid(workdir: pathlib.Path) -> int | None:
    """The pid of the driver working in `workdir`, from /proc/*/cmdline."""
    want = f"--workdir={workdir}".encode()
    for entry in pathlib.Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"inas_jax.main" in args and want in args:
            return int(entry.name)
    return None


def kill_mid_training(workdir: pathlib.Path, killed: list) -> None:
    """SIGKILLs the driver of `workdir` once its first training has checkpointed (within 300 s)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        training = workdir / "training"
        pid = driver_pid(workdir) if training.is_dir() and any(training.iterdir()) else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def grid_run(cluster, tmp_path_factory):
    """The tiny grid, run once with one driver SIGKILLed mid-training: (grid, result, killed pids). One
    run at a time, so the order is the plan's (random before sr) whatever the machine's load: with two
    at once, an sr run could find its killed sibling still without a first round when a slot freed
    and start beside it (plan.next_run leaves no slot idle, as a test below shows)."""
    root = tmp_path_factory.mktemp("grid")
    grid = product_grid(str(root), ["digits"], QUERIES, [("fixed", "1,1")], SEEDS, SHARED)
    victim = grid.workdir(grid.runs[0])
    killed: list = []
    killer = threading.Thread(target=kill_mid_training, args=(victim, killed), daemon=True)
    killer.start()
    result = runner.run_grid(grid, max_running=1)
    killer.join()
    return grid, result, killed


def one_by_one(flags: tuple[str, ...], workdir: pathlib.Path) -> None:
    """The run of `flags` made alone with the driver in `workdir`, on one CPU like the grid's: in this
    process when it may use one CPU only (XLA:CPU then has one thread here too), else a subprocess."""
    flags = [f for f in flags if not f.startswith(("--workdir=", "--first_round_from="))] + [f"--workdir={workdir}"]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        assert run_cli(flags) == 0
        return
    import subprocess
    cmd = [sys.executable, "-m", "inas_jax.grid.pinned", f"--cpus={cpus[0]}", "--", sys.executable, "-m",
           "inas_jax.main", *flags]
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0


def test_a_grid_with_a_driver_killed_mid_training_equals_its_runs_made_one_by_one(grid_run, tmp_path):
    """Every run finishes; the SIGKILLed one restarted once from its workdir; each results.json (timings
    aside) equals the same run's made alone with `python -m inas_jax.main`, on one thread."""
    grid, result, killed = grid_run
    assert killed, "the driver was never seen mid-training"
    assert result.exit_status == 0 and [o.status for o in result.outcomes] == ["finished"] * 4
    attempts = {o.name: o.attempts for o in result.outcomes}
    assert attempts[grid.runs[0].name] == 2 and sum(attempts.values()) == 5
    assert (grid.workdir(grid.runs[0]) / "driver.log").read_text().count("grid: starting") == 2
    for run in grid.runs:
        one_by_one(run.flags, tmp_path / run.name)
        got = without_timings(results_of(grid.workdir(run)))
        assert got == without_timings(results_of(tmp_path / run.name)), run.name
        assert {r["environment"]["cpu_threads"] for r in got["rounds"]} == {1}


def test_a_run_starts_from_its_siblings_first_round(grid_run):
    """The sr run of a seed was started from its random sibling's first round, never beside it."""
    grid, _, _ = grid_run
    for seed in SEEDS:
        log = (pathlib.Path(grid.runs[0].workdir).parent / f"digits_fixed1x1_sr_seed{seed}" / "driver.log").read_text()
        assert f"starting from the first round of {pathlib.Path(grid.runs[0].workdir).parent}" in log


def test_rerunning_a_finished_grid_starts_nothing(grid_run, monkeypatch, capsys):
    """Every run is found finished: no cluster is contacted, no driver started; on_finished hears each."""
    grid, _, _ = grid_run
    logs = {r.name: (grid.workdir(r) / "driver.log").read_text() for r in grid.runs}
    monkeypatch.setattr(runner, "connected", lambda address: pytest.fail("the grid contacted Ray"))
    heard = []
    again = runner.run_grid(grid, on_finished=heard.append)
    assert again.exit_status == 0 and {o.attempts for o in again.outcomes} == {0}
    assert heard == list(grid.runs)
    assert logs == {r.name: (grid.workdir(r) / "driver.log").read_text() for r in grid.runs}
    assert "4 runs: 4 finished, 0 to run" in capsys.readouterr().out


def test_ctrl_c_stops_the_runs_and_the_same_grid_resumes_them(cluster, tmp_path, capsys, monkeypatch):
    """Ctrl-C while a driver works, arriving as Ray waits and dropped there (Ray turns a KeyboardInterrupt
    raised in its C++ wait into a status of its own, which it may lose): the grid stops all the same, the
    driver is stopped (SIGINT, its own interrupt path), every run is reported cancelled, the result is
    interrupted (exit 130); the same grid again finishes both runs. The runs train 300 epochs a round
    (seconds), so the driver that has started its run is still at work when the interrupt reaches it."""
    flags = [*SHARED, "--epochs=300", "--checkpoint_seconds=60"]
    grid = product_grid(str(tmp_path), ["digits"], ["sr"], [("fixed", "1,1")], SEEDS, flags)
    first = grid.workdir(grid.runs[0])
    seen: list = []
    wait = ray.wait

    def wait_that_drops_a_ctrl_c(refs, **kwargs):
        log = first / "driver.log"
        pid = driver_pid(first) if not seen and log.is_file() and "new run:" in log.read_text() else None
        if pid is not None:
            seen.append(pid)
            try:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C as Ray waits ...
            except KeyboardInterrupt:
                pass  # ... dropped by it
        return wait(refs, **kwargs)

    monkeypatch.setattr(ray, "wait", wait_that_drops_a_ctrl_c)
    result = runner.run_grid(grid, max_running=1)
    assert seen and result.interrupted and result.exit_status == 130
    assert [o.status for o in result.outcomes] == ["cancelled", "cancelled"]
    assert "interrupted: stopping 1 runs" in capsys.readouterr().err
    deadline = time.monotonic() + 30
    while driver_pid(first) is not None:
        assert time.monotonic() < deadline, "the driver outlived the grid's Ctrl-C"
        time.sleep(0.1)
    again = runner.run_grid(grid, max_running=1)
    assert again.exit_status == 0 and [o.status for o in again.outcomes] == ["finished", "finished"]


def test_a_run_with_bad_flags_is_reported_once_and_not_retried(cluster, tmp_path, capsys):
    """The CLI: the driver's error line is printed once, the run started once, exit status 1."""
    argv = [f"--root={tmp_path}", "--queries=sr", "--strategies=fixed:1,1", "--seeds=0", "--report=off", "--",
            *TINY, "--width=0"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("digits_fixed1x1_sr_seed0 failed (exit 2): error: --width") == 1, err
    assert "digits_fixed1x1_sr_seed0: failed (exit 2): error: --width" in err
    assert (tmp_path / "digits_fixed1x1_sr_seed0" / "driver.log").read_text().count("grid: starting") == 1


def test_the_command_line_and_its_config_file(tmp_path, capsys):
    """--strategies items with architectures, the flags after --, a --config file the flags override."""
    assert parse_strategies("inas,fixed:1,2,fixed:2,4,longtail") == [("inas", None), ("fixed", "1,2"),
                                                                     ("fixed", "2,4"), ("longtail", None)]
    for bad in ("fixed:1,,2", "1,2", ""):
        with pytest.raises(grid_plan.ConfigError, match="--strategies"):
            parse_strategies(bad)
    values = cli.settings(["--root=r", "--queries=random,sr", "--strategies=inas,fixed:1,2", "--seeds=0,1", "--",
                           "--width=8", "--budget=300"])
    grid = cli.grid_of(values)
    assert [r.name for r in grid.runs][:4] == ["digits_inas_random_seed0", "digits_inas_sr_seed0",
                                               "digits_fixed1x2_random_seed0", "digits_fixed1x2_sr_seed0"]
    assert len(grid.runs) == 8 and grid.runs[2].flags == (
        "--dataset=digits", "--strategy=fixed", "--arch=1,2", "--query=random", "--seed=0", "--width=8",
        "--budget=300", "--workdir=r/digits_fixed1x2_random_seed0")
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({"root": "g", "datasets": ["digits"], "queries": "sr", "strategies": ["fixed:1,2"],
                                  "seeds": [3], "flags": ["--width=8"], "cpus_per_run": 2}))
    grid = cli.grid_of(cli.settings([f"--config={config}", "--seeds=4", "--", "--budget=300"]))
    assert [r.name for r in grid.runs] == ["digits_fixed1x2_sr_seed4"] and grid.cpus_per_run == 2
    assert grid.runs[0].flags[-3:] == ("--width=8", "--budget=300", "--workdir=g/digits_fixed1x2_sr_seed4")
    assert grid.resources() == {"num_cpus": 2, "num_gpus": 0.0, "resources": {}}
    config.write_text(json.dumps({"queries": "sr", "seed": 3}))
    assert cli.main([f"--config={config}"]) == 2
    assert "unknown fields ['seed']" in capsys.readouterr().err
    assert cli.main(["--seeds=0", "--", "--seed=1"]) == 2
    assert "the shared flags set --seed" in capsys.readouterr().err
    assert cli.main(["--root=r", "--seeds=0,1", "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "digits_inas_sr_seed1: python -m inas_jax.main --dataset=digits --strategy=inas --query=sr --seed=1 "
        "--workdir=r/digits_inas_sr_seed1")


def test_a_run_waits_for_a_sibling_computing_its_first_round_unless_nothing_else_can_start(tmp_path):
    """(Replaces test_study's next_run test.) Runs equal but for the query are siblings; one whose
    running sibling has not kept its first round yet waits while another can start, and starts from
    that round once kept."""
    def run(query, seed, *extra):
        return Run(f"{query}{seed}", (f"--query={query}", f"--seed={seed}", f"--workdir={query}{seed}", *extra))

    grid = Grid((run("random", 0), run("sr", 0), run("random", 1), run("coreset", 0, "--mc_passes=3")),
                cwd=str(tmp_path))
    random0, sr0, random1, coreset0 = grid.runs
    assert grid_plan.sibling_key(sr0) == grid_plan.sibling_key(coreset0) != grid_plan.sibling_key(random1)
    assert grid_plan.next_run([sr0, random1], [random0], grid.workdir) == 1
    assert grid_plan.next_run([sr0], [random0], grid.workdir) == 0  # nothing else to start: no idle slot
    assert grid_plan.with_first_round(sr0, grid.runs, grid.workdir) == sr0
    (tmp_path / "random0" / "first_round").mkdir(parents=True)
    assert grid_plan.next_run([sr0, random1], [random0], grid.workdir) == 0
    assert grid_plan.with_first_round(sr0, grid.runs, grid.workdir).flags[-1] == (
        f"--first_round_from={tmp_path / 'random0'}")


def test_runs_on_one_node_take_disjoint_cpus_and_share_only_when_none_is_free(tmp_path, monkeypatch):
    """(Replaces test_study's --jobs/cpu_groups test.) Each run holds its CPUs' locks until it ends."""
    monkeypatch.setattr(task, "lock_dir", lambda: tmp_path)
    first, locks1, shared1 = task.take_cpus(2, [0, 1, 2, 3])
    second, locks2, shared2 = task.take_cpus(2, [0, 1, 2, 3])
    third, locks3, shared3 = task.take_cpus(1, [0, 1, 2, 3])
    assert (first, second, third) == ([0, 1], [2, 3], [0]) and not shared1 and not shared2 and shared3
    for fd in locks1:
        os.close(fd)
    assert task.take_cpus(2, [0, 1, 2, 3])[:1] == ([0, 1],)
    with pytest.raises(ValueError, match="asks for 5 CPUs and this node lets it use 4"):
        task.take_cpus(5, [0, 1, 2, 3])


def test_the_progress_line_and_how_runs_end(tmp_path):
    """Rounds from results.json (and config.json before it), time left at the finished runs' mean; exit
    statuses: 0 finished, 3 waiting, a signal or 130 restarts, anything else fails."""
    (tmp_path / "results.json").write_text(json.dumps({"config": {"bad": 1}, "rounds": [{"seconds": {"a": 2.0}}]}))
    assert progress.read_progress(tmp_path) == progress.RunProgress(1, None, 2.0)
    half = progress.RunProgress(2, 4, 60.0)
    assert progress.seconds_left([600.0, 840.0], [half], to_run=3, slots=2) == 720 * 3.5 / 2
    assert progress.seconds_left([], [half], 3, 2) is None
    assert progress.progress_line(3, [("a", half), ("b", progress.RunProgress(0, None, 0.0))], 5, 720.0) == (
        "done 3 / running 2 / to run 5; running: a round 3/4, b round 1/?; about 12 min left")
    assert [runner.classify(c) for c in (0, 1, 2, 3, 130, -9)] == ["finished", "failed", "failed", "waiting",
                                                                   "killed", "killed"]
    assert runner.why_killed(-9) == "killed by SIGKILL"
    assert runner.slots({"CPU": 16.0, "GPU": 2.0}, Grid((), cpus_per_run=4, gpus_per_run=1)) == 2
    (tmp_path / "driver.log").write_text("old\nerror: before\n12:00 grid: starting\nerror: bad flag\nTraceback\n")
    assert task.last_error(tmp_path / "driver.log", len("old\nerror: before\n")) == "error: bad flag"

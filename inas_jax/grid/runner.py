"""run_grid: every unfinished run of a Grid as a Ray task (task.run_attempt), as many at once as the
cluster has room for, with a progress line at each change.

Finished runs (results.json says so) are skipped. A run starts with --first_round_from a sibling's
workdir when one has kept its first round, and is not started beside a sibling still computing
that round while another run can start instead (plan.next_run). A run whose driver is killed by a
signal, or whose worker or node dies, restarts from its workdir, up to `attempts` times; a run that
fails for its own reasons (exit 1 or 2) is reported once with its last error line; exit 3 is a run
waiting for a person's labels. Ctrl-C cancels the tasks: each stops its driver (SIGINT, then SIGKILL),
and a driver whose worker is gone is killed by the kernel (inas_jax.grid.pinned).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sys
import threading
import time
from typing import Callable

from inas_jax.grid.plan import Grid, Run, is_finished, next_run, with_first_round
from inas_jax.grid.progress import progress_line, read_progress, seconds_left
from inas_jax.grid.task import STOP_SECONDS, run_attempt

ATTEMPTS = 3
POLL_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: finished, failed, waiting (for labels), killed (each attempt) or cancelled;
    attempts 0 for a run found finished."""

    name: str
    status: str
    exit_code: int | None = None
    message: str = ""
    attempts: int = 0


@dataclasses.dataclass(frozen=True)
class GridResult:
    outcomes: tuple[Outcome, ...]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(o.status == "finished" for o in self.outcomes)

    @property
    def exit_status(self) -> int:
        """0 when every run finished, 130 after Ctrl-C, else 1."""
        return 130 if self.interrupted else 0 if self.ok else 1


def classify(exit_code: int) -> str:
    """finished (0), waiting (3: a person's labels), killed (a signal, or 130/137: interrupted; the run
    restarts from its workdir) or failed (anything else: its own error, not retried)."""
    if exit_code == 0:
        return "finished"
    if exit_code == 3:
        return "waiting"
    return "killed" if exit_code < 0 or exit_code in (130, 137) else "failed"


def why_killed(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return "interrupted" if exit_code is not None else "its worker or node died"


def slots(total: dict, grid: Grid) -> int:
    """How many runs the cluster's total resources hold at once (at least 1)."""
    need = {"CPU": grid.cpus_per_run, "GPU": grid.gpus_per_run, "TPU": grid.tpus_per_run}
    return max(1, int(min(total.get(k, 0) // v for k, v in need.items() if v)))


def _first_line(text: str, last: bool = False) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [""]
    return lines[-1 if last else 0]


def say(line: str, error: bool = False) -> None:
    print(line, file=sys.stderr if error else sys.stdout, flush=True)


@contextlib.contextmanager
def connected(address: str | None):
    """Ray, connected: the session already open in this process, else `address` (or $RAY_ADDRESS, as
    `ray job submit` sets it), else a new local cluster on the CPUs this process may use (shut down
    on exit). ImportError, saying how to install it, without Ray."""
    try:
        import ray
    except ImportError:
        raise ImportError("the grid runs on Ray: pip install 'inas-jax[grid]' (ray>=2.9)") from None
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def noting_interrupts():
    """A threading.Event that every Ctrl-C (SIGINT) sets while the context lasts, its handler raising
    KeyboardInterrupt as Python's own does. Ray's C++ code turns a KeyboardInterrupt raised while it
    waits into a status of its own, which can be dropped: the event keeps the Ctrl-C. Only Python's own
    handler is replaced, in the main thread: where SIGINT is ignored (a background job) or handled
    otherwise, the event is never set."""
    interrupted = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield interrupted
        return

    def note(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_grid(grid: Grid, address: str | None = None, max_running: int | None = None, attempts: int = ATTEMPTS,
             on_finished: Callable[[Run], None] | None = None) -> GridResult:
    """Runs every unfinished run of `grid` on Ray (see the module); `max_running` caps the runs at once
    (default: as many as the cluster's resources hold); `on_finished(run)` is called for each run
    finished, found so or just done. Starts no cluster when every run is finished."""
    finished = [r for r in grid.runs if is_finished(grid.workdir(r))]
    for run in finished:
        if on_finished:
            on_finished(run)
    outcomes = [Outcome(r.name, "finished") for r in finished]
    todo = [r for r in grid.runs if r not in finished]
    say(f"{len(grid.runs)} runs: {len(finished)} finished, {len(todo)} to run")
    if not todo:
        return GridResult(tuple(outcomes))
    with connected(address) as ray:
        scheduler = _Scheduler(ray, grid, todo, max_running, attempts, on_finished)
        interrupted = scheduler.loop()
    return GridResult(tuple(outcomes) + tuple(scheduler.outcomes), interrupted)


class _Scheduler:
    """The grid's state while it runs: runs pending, in flight (ref -> run, attempt) and ended."""

    def __init__(self, ray, grid: Grid, todo: list[Run], max_running: int | None, attempts: int,
                 on_finished: Callable[[Run], None] | None):
        self.ray, self.grid, self.pending = ray, grid, list(todo)
        self.max_running, self.attempts, self.on_finished = max_running, attempts, on_finished
        self.inflight: dict = {}
        self.tries: collections.Counter = collections.Counter()
        self.outcomes: list[Outcome] = []
        self.recorded = [read_progress(grid.workdir(r)).seconds for r in grid.runs if r not in todo]
        self.measured: list[float] = []
        self.remote = ray.remote(max_retries=0)(run_attempt)
        self.shown, self.stopping = None, False

    def capacity(self) -> int:
        return self.max_running or slots(self.ray.cluster_resources(), self.grid)

    def start(self) -> None:
        """Submits pending runs while the cluster has room, the one plan.next_run picks first."""
        while self.pending and len(self.inflight) < self.capacity():
            running = [run for run, _, _ in self.inflight.values()]
            run = self.pending.pop(next_run(self.pending, running, self.grid.workdir))
            started = with_first_round(run, self.grid.runs, self.grid.workdir)
            self.tries[run.name] += 1
            say(f"start {run.name}: {shlex.join(started.flags)}")
            ref = self.remote.options(**self.grid.resources()).remote(
                started.flags, run.workdir, self.grid.cwd, self.grid.cpus_per_run)
            self.inflight[ref] = (run, self.tries[run.name], time.monotonic())

    def loop(self) -> bool:
        """Runs until every run has ended; True if stopped by Ctrl-C, even one that Ray swallowed."""
        with noting_interrupts() as interrupted:
            try:
                while self.pending or self.inflight:
                    self.start()
                    ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight),
                                             timeout=POLL_SECONDS)
                    for ref in ready:
                        self.settle(ref)
                    self.show()
                    if interrupted.is_set():
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                self.stop()
                return True
        return False

    def settle(self, ref) -> None:
        """Records how the task of `ref` ended, or puts its run back to restart from its workdir."""
        run, attempt, started = self.inflight.pop(ref)
        status, code, message = self.result(ref)
        if status in ("cancelled", "killed") and is_finished(self.grid.workdir(run)):
            status, code, message = "finished", 0, ""  # it ended as it was being stopped
        elif self.stopping and status == "killed":
            status = "cancelled"
        if status == "killed" and attempt < self.attempts:
            say(f"{run.name} was {why_killed(code)}; restarting it from its workdir (attempt {attempt + 1} of "
                f"{self.attempts})", error=True)
            self.pending.insert(0, run)
            return
        self.outcomes.append(Outcome(run.name, status, code, message, attempt))
        if status == "finished":
            say(f"finished {run.name}")
            self.measured.append(time.monotonic() - started)
            if self.on_finished:
                self.on_finished(run)
        elif status == "killed":
            say(f"{run.name} was {why_killed(code)} {attempt} times: rerun the grid to resume it", error=True)
        elif status != "cancelled":
            what = "is waiting for labels" if status == "waiting" else "failed"
            say(f"{run.name} {what} (exit {code}): {message}", error=True)

    def result(self, ref) -> tuple[str, int | None, str]:
        """(status, exit status, message) of a task: the driver's, or killed when its worker or node
        died, failed when the task's own code raised, cancelled."""
        exceptions = self.ray.exceptions
        try:
            attempt = self.ray.get(ref)
        except exceptions.TaskCancelledError:
            return "cancelled", None, "interrupted"
        except exceptions.RayTaskError as err:  # the task's own code raised: no node's fault
            return "failed", None, f"error: {_first_line(str(err), last=True)}"
        except exceptions.RayError as err:
            return "killed", None, f"{type(err).__name__}: {_first_line(str(err))}"
        return classify(attempt.exit_code), attempt.exit_code, attempt.message

    def show(self) -> None:
        """Prints the progress line when a run has started, ended or moved to another round."""
        running = [(run.name, read_progress(self.grid.workdir(run))) for run, _, _ in self.inflight.values()]
        done = len(self.grid.runs) - len(self.pending) - len(running)
        failed = sum(o.status != "finished" for o in self.outcomes)
        key = (done, failed, tuple((n, p.rounds, p.total) for n, p in running), len(self.pending))
        if key != self.shown:
            self.shown = key
            durations = self.measured or self.recorded  # wall times of this grid's runs, else their records
            left = seconds_left(durations, [p for _, p in running], len(self.pending), self.capacity())
            say(progress_line(done - failed, running, len(self.pending), left, failed))

    def stop(self) -> None:
        """Ctrl-C: cancels every task (each stops its driver), force-cancels those still going after
        STOP_SECONDS (their drivers die with their workers); runs that ended meanwhile are recorded as
        they ended, the others as cancelled."""
        self.stopping, refs = True, list(self.inflight)
        say(f"interrupted: stopping {len(refs)} runs; run the same command again to resume them", error=True)
        for ref in refs:
            self.ray.cancel(ref)
        ready, rest = self.ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 5) if refs else ([], [])
        for ref in rest:
            self.ray.cancel(ref, force=True)
        for ref in ready:
            self.settle(ref)
        for run, attempt, _ in self.inflight.values():
            self.outcomes.append(Outcome(run.name, "cancelled", None, "interrupted", attempt))
        self.outcomes += [Outcome(run.name, "cancelled", None, "not started") for run in self.pending]
        self.inflight, self.pending = {}, []

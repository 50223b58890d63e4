"""One attempt at one run, inside a Ray task on some node: take CPUs there, start the driver pinned to
them (inas_jax.grid.pinned) with its output appended to WORKDIR/driver.log, wait, say how it ended.

CPUs are taken through one lock file per CPU on the node (released by the kernel when the task's
worker dies), so runs that Ray places on one node get disjoint CPUs, as experiments/study.py's
pinned runs did; where the node has no free CPU left (Ray told it has more than this process may
use), the run shares one and says so in its log, still with its own thread count.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

# Seconds a driver has to stop on SIGINT (its own interrupt path) before it is killed.
STOP_SECONDS = 10.0
# How much of the end of a driver.log is searched for the attempt's error line.
TAIL_BYTES = 65536


@dataclasses.dataclass(frozen=True)
class Attempt:
    """How an attempt ended: the driver's exit status (negative: killed by that signal), its last
    error line, where it ran."""

    exit_code: int
    message: str
    node: str
    cpus: tuple[int, ...] = ()


def lock_dir() -> pathlib.Path:
    """This user's directory of CPU lock files on this node."""
    path = pathlib.Path(tempfile.gettempdir()) / f"inas_jax_grid_cpus_{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def take_cpus(n: int, allowed: list[int]) -> tuple[list[int], list[int], bool]:
    """(cpus, lock fds, shared): `n` of the `allowed` CPUs, the free ones first (each locked until its
    fd closes), then busy ones if too few are free. ValueError if fewer than `n` are allowed."""
    if n > len(allowed):
        raise ValueError(f"a run asks for {n} CPUs and this node lets it use {len(allowed)}")
    cpus, fds, where = [], [], lock_dir()
    for cpu in allowed:
        if len(cpus) == n:
            break
        fd = os.open(where / f"cpu{cpu}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        cpus.append(cpu)
        fds.append(fd)
    shared = len(cpus) < n
    cpus += [c for c in allowed if c not in cpus][:n - len(cpus)]
    return sorted(cpus), fds, shared


def last_error(log: pathlib.Path, offset: int) -> str:
    """The attempt's message in its log (from `offset`): its last `error:` or `waiting for labels:`
    line, else its last line."""
    try:
        with open(log, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    chosen = [line for line in lines if line.startswith(("error:", "waiting for labels:"))]
    return (chosen or lines or [""])[-1]


def wait(proc: subprocess.Popen) -> int:
    """The driver's exit status. On KeyboardInterrupt (ray.cancel) it stops the driver, then re-raises;
    the wait polls so that the interrupt is seen while the driver runs."""
    try:
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
    except KeyboardInterrupt:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """SIGINT (the driver closes its workdir and exits 130), then SIGKILL after STOP_SECONDS."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def driver_command(flags: tuple[str, ...], cpus: list[int]) -> list[str]:
    """The driver with `flags`, started through the pinning shim with this process as its parent."""
    return [sys.executable, "-m", "inas_jax.grid.pinned", f"--cpus={','.join(map(str, cpus))}",
            f"--parent={os.getpid()}", "--", sys.executable, "-m", "inas_jax.main", *flags]


def run_attempt(flags: tuple[str, ...], workdir: str, cwd: str, cpus_per_run: int) -> Attempt:
    """Runs the driver with `flags` once, in `cwd`, pinned to `cpus_per_run` CPUs of this node, its
    output appended to WORKDIR/driver.log; exit status 2 with a message when it cannot start here."""
    node = socket.gethostname()
    if not os.path.isdir(cwd):
        return Attempt(2, f"error: the grid's directory {cwd} is not on node {node}: workdirs and data must be on "
                          "storage every node mounts at the same path", node)
    log = pathlib.Path(cwd, workdir) / "driver.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        cpus, locks, shared = take_cpus(cpus_per_run, sorted(os.sched_getaffinity(0)))
    except (OSError, ValueError) as err:
        return Attempt(2, f"error: cannot start on node {node}: {getattr(err, 'strerror', None) or err}", node)
    proc = None
    try:
        with open(log, "ab") as out:
            offset = out.tell()
            note = " (no free CPU left on this node: shared with another run)" if shared else ""
            out.write(f"{time.strftime('%H:%M:%S')} grid: starting on {node}, CPUs {cpus}{note}\n".encode())
            out.flush()
            proc = subprocess.Popen(driver_command(flags, cpus), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            code = wait(proc)
    except OSError as err:
        return Attempt(2, f"error: cannot run the driver on node {node}: {err.strerror or err}", node)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in locks:
            os.close(fd)
    return Attempt(code, last_error(log, offset), node, tuple(cpus))

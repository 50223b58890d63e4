"""python -m inas_jax.grid.pinned --cpus=0,1 --parent=PID -- COMMAND...: runs COMMAND pinned to those CPUs,
killed with its parent.

The grid's Ray task starts each driver through this: the affinity is set before the driver starts,
long before it imports jax, which sizes XLA:CPU's thread pool (and so the run's floats) by the CPUs
it may use; SIGINT, which the Ray worker's thread blocks (and exec keeps blocked), is unblocked, so
the task can stop its driver; and the kernel kills the driver when the task's worker dies (a crash,
a forced cancel, a node shut down), so no driver outlives its task and holds its workdir's lock.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks Linux to SIGKILL this process when its parent dies (kept across exec); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    """Parses --cpus and --parent, then execs the command after `--` (returns only on a usage error)."""
    if "--" not in argv:
        print("usage: python -m inas_jax.grid.pinned --cpus=0,1 --parent=PID -- COMMAND...", file=sys.stderr)
        return 2
    options = dict(a[2:].split("=", 1) for a in argv[:argv.index("--")] if a.startswith("--") and "=" in a)
    command = argv[argv.index("--") + 1:]
    die_with_parent()
    if "parent" in options and os.getppid() != int(options["parent"]):
        return 137  # the parent died before the request took hold
    if options.get("cpus"):
        os.sched_setaffinity(0, {int(c) for c in options["cpus"].split(",")})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

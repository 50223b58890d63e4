"""Whole-process time of the default run on a cold and on a warm persistent compilation cache.

  python experiments/bench_startup.py                 # best of 3 each
  python experiments/bench_startup.py --repeats=1 -- --width=4   # extra driver flags after --
  python experiments/bench_startup.py --malloc=both   # also without the huge-page restart

Cold: a fresh, empty cache directory per run. Warm: the same directory again after a run filled it.
Every run uses a fresh workdir, so it trains everything; the difference is compilation. Prints each
run's wall time and the driver's own count of XLA compilations and cache reads. --malloc=default runs
the driver with INAS_JAX_DEFAULT_MALLOC=1 and without glibc.malloc.hugetlb (inas_jax.runtime.allocator);
--malloc=both alternates the two run by run, so a change of the machine's load hits both alike.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def malloc_env(malloc: str) -> dict:
    """This process's environment for a driver run with the huge-page restart (`huge`) or without it."""
    if malloc == "huge":
        return {k: v for k, v in os.environ.items() if k != "INAS_JAX_DEFAULT_MALLOC"}
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":")
                if t and not t.startswith("glibc.malloc.hugetlb=")]
    return dict(os.environ, INAS_JAX_DEFAULT_MALLOC="1", GLIBC_TUNABLES=":".join(tunables))


def one_run(cache: str, workdir: str, extra: list[str], malloc: str = "huge") -> tuple[float, str]:
    env = dict(malloc_env(malloc), INAS_JAX_COMPILATION_CACHE=cache)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "inas_jax.main", f"--workdir={workdir}", *extra], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    counts = re.search(r"\d+ XLA compilations \(\d+ read from the persistent cache\)", proc.stderr)
    return seconds, counts.group(0) if counts else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--malloc", choices=("huge", "default", "both"), default="huge",
                        help="the driver with its huge-page restart, without it (INAS_JAX_DEFAULT_MALLOC=1), or both")
    parser.add_argument("extra", nargs="*", help="driver flags")
    args = parser.parse_args()
    if args.repeats < 1:
        sys.exit("error: --repeats must be positive")
    mallocs = ("huge", "default") if args.malloc == "both" else (args.malloc,)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("cold", "warm"):
            for i in range(args.repeats):
                for malloc in mallocs:
                    cache = os.path.join(tmp, f"cache{i}{malloc}")
                    if kind == "cold":
                        os.makedirs(cache)
                    seconds, counts = one_run(cache, os.path.join(tmp, f"{kind}{i}{malloc}"), args.extra, malloc)
                    best[kind, malloc] = min(seconds, best.get((kind, malloc), seconds))
                    print(f"{kind} run {i + 1} ({malloc} malloc): {seconds:.1f} s, {counts}", flush=True)
    for malloc in mallocs:
        print(f"default run, whole process, {malloc} malloc, best of {args.repeats}: cold cache "
              f"{best['cold', malloc]:.1f} s, warm cache {best['warm', malloc]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

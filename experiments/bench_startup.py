"""Whole-process time of the default run on a cold and on a warm persistent compilation cache.

  python experiments/bench_startup.py                 # best of 3 each
  python experiments/bench_startup.py --repeats=1 -- --width=4   # extra driver flags after --

Cold: a fresh, empty cache directory per run. Warm: the same directory again after a run filled it.
Every run uses a fresh workdir, so it trains everything; the difference is compilation. Prints each
run's wall time and the driver's own count of XLA compilations and cache reads.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def one_run(cache: str, workdir: str, extra: list[str]) -> tuple[float, str]:
    env = dict(os.environ, INAS_JAX_COMPILATION_CACHE=cache)
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
    parser.add_argument("extra", nargs="*", help="driver flags")
    args = parser.parse_args()
    if args.repeats < 1:
        sys.exit("error: --repeats must be positive")
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("cold", "warm"):
            times = []
            for i in range(args.repeats):
                cache = os.path.join(tmp, f"cache{i}")
                if kind == "cold":
                    os.makedirs(cache)
                seconds, counts = one_run(cache, os.path.join(tmp, f"{kind}{i}"), args.extra)
                times.append(seconds)
                print(f"{kind} run {i + 1}: {seconds:.1f} s, {counts}", flush=True)
            best[kind] = min(times)
    print(f"default run, whole process, best of {args.repeats}: cold cache {best['cold']:.1f} s, "
          f"warm cache {best['warm']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Nothing computed changes: tiny runs' rounds equal, bit for bit, those recorded before a refactor.

Three driver runs on the bundled digits (iNAS with softmax response; fixed A(1,1) with MC-dropout and
with TypiClust, queries that take random keys), each in its own process pinned to one CPU, give
every round's labelled-set sha1, architecture, candidate scores, accuracies and losses. XLA:CPU's
floats depend on the CPU model and the jax version, so a recording is kept per environment in
golden/pinned_rounds.json; `python tests/test_pinned_numerics.py` records the running one (only
from code whose numbers are known to be right: before the change being checked).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden" / "pinned_rounds.json"
ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = ["--initial_size=40", "--query_sizes=20,20", "--budget=80", "--epochs=2", "--epoch_size=128",
         "--batch_size=32", "--inas_epochs=1", "--width=4", "--mc_passes=8", "--checkpoint_seconds=0"]
RUNS = {"inas_sr": ["--strategy=inas", "--query=sr"],
        "fixed_mcdropout": ["--strategy=fixed", "--arch=1,1", "--query=mcdropout"],
        "fixed_typiclust": ["--strategy=fixed", "--arch=1,1", "--query=typiclust"]}
NUMERIC = ("jax", "backend", "devices", "cpu_threads", "cpu_model", "cpu_vector")


def _comparable(rounds: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds", "environment")} for r in rounds]


def pinned_runs(pythonpath: str = str(ROOT)) -> tuple[str, dict]:
    """(environment key, {run: comparable rounds}) of the RUNS made with the code at `pythonpath`."""
    env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu")
    out, key = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RUNS.items():
            cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), sys.executable, "-m", "inas_jax.main",
                   *FLAGS, *extra, f"--workdir={tmp}/{name}"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
            assert proc.returncode == 0, proc.stderr[-2000:]
            rounds = json.loads(pathlib.Path(tmp, name, "results.json").read_text())["rounds"]
            environment = rounds[0]["environment"]
            key = " | ".join(f"{k}={environment.get(k)}" for k in NUMERIC)
            out[name] = _comparable(rounds)
    return key, out


def expected_key() -> str:
    """The environment key the pinned runs will record here (one CPU thread, this jax and CPU model)."""
    from inas_jax.runtime.environment import environment
    now = dict(environment(), cpu_threads=1, devices=1)
    return " | ".join(f"{k}={now.get(k)}" for k in NUMERIC)


def test_tiny_runs_reproduce_their_recorded_rounds():
    recorded = json.loads(GOLDEN.read_text())
    if expected_key() not in recorded:  # known before running: XLA:CPU's floats are this environment's own
        pytest.skip(f"no recording for this environment ({expected_key()}); recorded: {sorted(recorded)}")
    key, got = pinned_runs()
    assert key == expected_key()
    assert got == recorded[key]


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else str(ROOT)
    key, rounds = pinned_runs(where)
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    recorded[key] = rounds
    GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"recorded {key} from {where}")

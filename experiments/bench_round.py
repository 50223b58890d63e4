"""Peak memory (and time) of one active round on real CIFAR-10, for growing pool sizes N.

  python experiments/bench_round.py                      # N = 12,500 / 25,000 / 50,000, coreset query
  python experiments/bench_round.py --npz=PATH --query=mcdropout --sizes=50000

Each size runs in a fresh process (so peak RSS is its own): one round of fixed A(1,1) at --width,
trained --epochs epochs on 2,000 labels, evaluated, then --query picks 2,000 points from the pool.
Prints peak RSS next to what one N x N float32 matrix would take: memory must grow with N, not N^2.
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import json
import pathlib
import resource
import subprocess
import sys
import time

from absl import app, flags

NPZ = flags.DEFINE_string("npz", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10.npz"),
                          "CIFAR-10 in the npz format.")
SIZES = flags.DEFINE_list("sizes", ["12500", "25000", "50000"], "Pool sizes N (first N training images).")
QUERY = flags.DEFINE_string("query", "coreset", "Query function.")
WIDTH = flags.DEFINE_integer("width", 16, "Base width.")
EPOCHS = flags.DEFINE_integer("epochs", 1, "Training epochs (of 2,048 samples).")
CHILD = flags.DEFINE_integer("child", 0, "Internal: run one round with this pool size and print JSON.")


def one_round(n: int) -> dict:
    import numpy as np

    from inas_jax.loop import round as active
    from inas_jax.loop.state import initial_state
    from inas_jax.config import from_preset
    from inas_jax.data import Dataset, load_npz

    full = load_npz(NPZ.value)
    ds = Dataset(full.name, full.x_train[:n], full.y_train[:n], full.x_test, full.y_test, full.num_classes)
    cfg = from_preset("cpu", "cifar10", query=QUERY.value, strategy="fixed", arch="1,1", initial_size=2000,
                      query_sizes=(2000,), budget=4000, epochs=EPOCHS.value, epoch_size=2048, batch_size=128,
                      width=WIDTH.value)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    state = active.run_round(initial_state(cfg, n), ds, cfg)
    record = state.history[0]
    return {"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_loading_mb": before, "seconds": time.perf_counter() - t,
            "query_seconds": record["seconds"]["query"], "queried": record["num_queried"],
            "nxn_matrix_mb": n * n * 4 / 2 ** 20, "test_accuracy": record["test_accuracy"],
            "distinct": int(len(np.unique(state.labelled_idx)))}


def main(_):
    if CHILD.value:
        print(json.dumps(one_round(CHILD.value)))
        return
    if not pathlib.Path(NPZ.value).exists():
        sys.exit(f"error: {NPZ.value} not found; pass --npz=PATH to CIFAR-10 in the npz format")
    print(f"one round, fixed A(1,1) width {WIDTH.value}, 2,000 labels, {QUERY.value} query of 2,000")
    print(f"{'N':>7} {'peak RSS MB':>12} {'after load MB':>14} {'N x N fp32 MB':>14} {'round s':>8} {'query s':>8}")
    for n in SIZES.value:
        out = subprocess.run([sys.executable, __file__, f"--child={n}", f"--npz={NPZ.value}", f"--query={QUERY.value}",
                              f"--width={WIDTH.value}", f"--epochs={EPOCHS.value}"], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["distinct"] == 4000 and r["queried"] == 2000
        print(f"{r['n']:7d} {r['peak_rss_mb']:12.0f} {r['rss_after_loading_mb']:14.0f} {r['nxn_matrix_mb']:14.0f} "
              f"{r['seconds']:8.1f} {r['query_seconds']:8.1f}", flush=True)


if __name__ == "__main__":
    app.run(main)

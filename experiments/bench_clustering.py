"""BADGE and TypiClust: inas_jax.queries vs straightforward numpy / scikit-learn, time and peak memory.

  python experiments/bench_clustering.py --out experiments/results/bench_clustering_cpu.txt
  python experiments/bench_clustering.py --pool 5000 --only badge,typiclust           # quick look

Synthetic pool: N=--pool ReLU features (N, D=--dim) of C class blobs and softmax probs (N, C) of a
random linear head; --labelled random points labelled; key 0. Every row is a fresh subprocess:
make the inputs, reset the peak-RSS mark (/proc/self/clear_refs), run, read it again, so
"peak MB" is the process's peak resident memory during the query minus its resident memory
before it (inputs and imports excluded; JAX's compilation and runtime included). The numpy and
scikit-learn rows run with OMP/OpenBLAS threads = "thr" (each of --baseline_threads): on a shared
2-core machine their thread pools can be 10x slower with 2 threads than with 1. inas_jax rows
use XLA's default thread pool ("-").
Variants:
  badge              inas_jax.queries.badge.badge. "compile" = first call - best warm call.
  badge-np-explicit  numpy k-means++ over the explicit (N_u, C*D) float32 gradient embeddings (one
                     gemv per pick, rng.choice D^2 sampling); run once to max(--picks), the time
                     at each b read on the way (its first b picks are the b-pick query).
  badge-np-factor    the same with the factorised distance of the BADGE reference code
                     (|a|^2|h|^2 terms and (A a_c) * (H h_c) per pick), no (N, C*D) matrix.
  typiclust          inas_jax.queries.typiclust.typiclust (k = |labelled| + b clusters; k-means++, then
                     Lloyd iterations until one gains < 0.1%, at most 10: its defaults).
  typiclust-sklearn  the reference's algorithm: scikit-learn MiniBatchKMeans(k, batch_size=5000)
                     (what it runs for k > 50), its cluster order and, per pick, NearestNeighbors
                     over the cluster's unlabelled points (it uses faiss); where its rotation
                     reaches a cluster with no unlabelled point left (it fails there), the next.
"inertia" (TypiClust rows) = mean squared distance of a point to its cluster's centroid; for
inas_jax, `kmeans` is rerun after the timing with typiclust's settings (the same clustering).
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

VARIANTS = ("badge", "badge-np-explicit", "badge-np-factor", "typiclust", "typiclust-sklearn")


def make_pool(n: int, d: int, c: int, n_labelled: int, seed: int = 0):
    """Embeddings (n, d) float32 (ReLU of c class blobs), probs (n, c) float32, labelled (n,) bool.
    Built in chunks so that making them peaks near their own size."""
    rng = np.random.default_rng(seed)
    centres = 2 * rng.standard_normal((c, d), np.float32)
    head = rng.standard_normal((d, c), np.float32) * np.float32(3 / np.sqrt(d))
    h = np.empty((n, d), np.float32)
    for s in range(0, n, 4096):
        part = h[s:s + 4096]
        rng.standard_normal(part.shape, np.float32, out=part)
        part += centres[rng.integers(0, c, len(part))]
        np.maximum(part, 0, out=part)
    mean = h.mean(0)
    probs = np.empty((n, c), np.float32)
    for s in range(0, n, 4096):
        logits = (h[s:s + 4096] - mean) @ head
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs[s:s + 4096] = e / e.sum(1, keepdims=True)
    labelled = np.zeros(n, bool)
    labelled[rng.choice(n, n_labelled, replace=False)] = True
    return h, probs, labelled


def sha1(idx) -> str:
    return hashlib.sha1(np.asarray(idx, np.int64).tobytes()).hexdigest()[:10]


def resident_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def np_badge(probs, h, labelled, bs, seed, explicit: bool):
    """numpy BADGE k-means++ to max(bs) picks; returns picks and {b: seconds} at each b in bs."""
    t0 = time.perf_counter()
    free = np.flatnonzero(~labelled)
    a = probs[free].copy()
    a[np.arange(len(free)), a.argmax(1)] -= 1
    hf = h[free]
    if explicit:
        g = (a[:, :, None] * hf[:, None, :]).reshape(len(free), -1)  # (N_u, C*D)
        sq = np.einsum("ij,ij->i", g, g)

        def dist(i):
            return sq + sq[i] - 2 * (g @ g[i])
    else:
        sq = np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", hf, hf)

        def dist(i):
            return sq + sq[i] - 2 * (a @ a[i]) * (hf @ hf[i])
    rng = np.random.default_rng(seed)
    picks = [int(np.argmax(sq))]
    d2 = np.maximum(dist(picks[0]), 0)
    d2[picks[0]] = 0
    times = {}
    for t in range(1, max(bs)):
        i = int(rng.choice(len(d2), p=d2 / d2.sum()))
        picks.append(i)
        d2 = np.minimum(d2, np.maximum(dist(i), 0))
        d2[i] = 0
        if t + 1 in bs:
            times[t + 1] = time.perf_counter() - t0
    return free[picks], times


def sklearn_typiclust(h, labelled, b, seed, knn=20, min_size=6):
    """The reference's selection with MiniBatchKMeans and, per pick, sklearn NearestNeighbors."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.neighbors import NearestNeighbors
    k = int(labelled.sum()) + b
    km = MiniBatchKMeans(n_clusters=k, batch_size=5000, random_state=seed).fit(h)
    labels = km.labels_.copy()
    size = np.bincount(labels, minlength=k)
    existing = np.bincount(labels[labelled], minlength=k)
    keep = np.flatnonzero(size >= min_size)
    order = keep[np.lexsort((-size[keep], existing[keep]))]
    labels[labelled] = -1
    picks, turn = [], 0
    for _ in range(b):
        idx = []
        while not len(idx):  # the reference fails on a cluster without unlabelled points left: skip it
            if turn >= len(order) * (b + 1):
                raise ValueError("the clusters of >= min_size points ran out of unlabelled points")
            idx = np.flatnonzero(labels == order[turn % len(order)])
            turn += 1
        nn = min(knn, len(idx) // 2)
        dist, _ = NearestNeighbors(n_neighbors=nn + 1).fit(h[idx]).kneighbors(h[idx])
        typicality = 1 / ((dist[:, 1:] ** 2).mean(1) + 1e-5)  # faiss IndexFlatL2: squared distances
        picks.append(idx[typicality.argmax()])
        labels[picks[-1]] = -1
    return np.array(picks), km.inertia_ / len(h)


def inertia(x, centroids, assignment) -> float:
    return float(sum(((x[s:s + 4096] - centroids[assignment[s:s + 4096]]) ** 2).sum() for s in range(0, len(x), 4096))
                 / len(x))


def child(spec: dict) -> dict:
    h, probs, labelled = make_pool(spec["pool"], spec["dim"], spec["classes"], spec["labelled"])
    variant, bs, repeats = spec["variant"], spec["picks"], spec["repeats"]
    out = {"load_before": os.getloadavg()[0]}
    import jax
    from inas_jax.queries import badge, kmeans, typiclust
    key = jax.random.key(0)
    base, _ = resident_mb()
    reset_peak()
    rows = []
    if variant in ("badge", "typiclust"):
        (b,) = bs
        if variant == "badge":
            def run():
                return badge.badge(probs, h, labelled, b, key)
        else:
            def run():
                return typiclust.typiclust(h, labelled, b, key)
        t = time.perf_counter()
        picks = run()
        first = time.perf_counter() - t
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            again = run()
            warm.append(time.perf_counter() - t)
            assert np.array_equal(again, picks)
        row = {"b": b, "seconds": min(warm), "warm_all": warm, "compile": first - min(warm), "sha1": sha1(picks)}
        peak = resident_mb()[1]
        if variant == "typiclust":
            k = int(labelled.sum()) + b
            row["note"] = f"k={k}"
            row["inertia"] = inertia(h, *kmeans.kmeans(h, k, key, iters=10, tol=1e-3, chunk=1024))
        rows.append(row)
    elif variant.startswith("badge-np"):
        picks, times = np_badge(probs, h, labelled, bs, 0, explicit=variant == "badge-np-explicit")
        peak = resident_mb()[1]
        rows = [{"b": b, "seconds": times[b], "sha1": sha1(picks[:b])} for b in bs]
    else:
        (b,) = bs
        t = time.perf_counter()
        picks, mbk_inertia = sklearn_typiclust(h, labelled, b, 0)
        rows.append({"b": b, "seconds": time.perf_counter() - t, "sha1": sha1(picks), "inertia": mbk_inertia,
                     "note": f"k={int(labelled.sum()) + b}"})
        peak = resident_mb()[1]
    out.update(rows=rows, peak_mb=peak - base, base_mb=base, load_after=os.getloadavg()[0])
    return out


def plan(args) -> list[dict]:
    common = dict(pool=args.pool, dim=args.dim, labelled=args.labelled, repeats=args.repeats, threads=None)
    specs = []
    for variant in args.only:
        threads = [None] if variant in ("badge", "typiclust") else args.baseline_threads
        for thr in threads:
            if variant.startswith("badge"):
                classes = [args.explicit_classes] if variant == "badge-np-explicit" else args.classes
                for c in classes:
                    if variant == "badge":
                        specs += [dict(common, variant=variant, classes=c, picks=[b]) for b in args.picks]
                    else:
                        specs.append(dict(common, variant=variant, classes=c, picks=sorted(args.picks), threads=thr))
            else:
                specs += [dict(common, variant=variant, classes=args.classes[0], picks=[b], threads=thr)
                          for b in args.picks]
    return specs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=50_000, help="Pool size N.")
    parser.add_argument("--dim", type=int, default=512, help="Embedding dimension D.")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100], help="Class counts C for BADGE.")
    parser.add_argument("--explicit_classes", type=int, default=10,
                        help="C for the explicit-matrix numpy BADGE (its matrix is N*C*D*4 bytes).")
    parser.add_argument("--labelled", type=int, default=1000, help="Labelled points.")
    parser.add_argument("--picks", type=int, nargs="+", default=[1000, 2000], help="Batch sizes b.")
    parser.add_argument("--baseline_threads", type=int, nargs="+", default=[1, 2],
                        help="OMP/OpenBLAS thread counts for the numpy and scikit-learn rows.")
    parser.add_argument("--repeats", type=int, default=2, help="Warm calls timed for the inas_jax rows (best kept).")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(VARIANTS),
                        help=f"Comma-separated variants of {','.join(VARIANTS)}.")
    parser.add_argument("--out", help="Also write the table to this file.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    unknown = set(args.only) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")

    import jax
    lines = [f"# python {' '.join(sys.argv)}",
             f"# jax {jax.__version__}, {os.cpu_count()} CPUs, N={args.pool} D={args.dim} labelled={args.labelled}; "
             f"seconds: inas_jax rows best of {args.repeats} warm calls",
             f"{'variant':<18} {'thr':>3} {'C':>4} {'b':>5} {'seconds':>8} {'compile':>8} {'peak MB':>8} "
             f"{'inertia':>8} {'load':>9}  picks sha1  note"]
    print("\n".join(lines), flush=True)
    for spec in plan(args):
        env = dict(os.environ)
        if spec["threads"]:
            env.update({v: str(spec["threads"]) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                              env=env)
        thr = spec["threads"] or "-"
        if proc.returncode:
            line = f"{spec['variant']:<18} {thr:>3} {spec['classes']:>4} failed: {proc.stderr.strip()[-300:]}"
            print(line, flush=True)
            lines.append(line)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        for row in res["rows"]:
            compile_s = f"{row['compile']:.1f}" if "compile" in row else "-"
            inertia_s = f"{row['inertia']:.2f}" if "inertia" in row else "-"
            line = (f"{spec['variant']:<18} {thr:>3} {spec['classes']:>4} {row['b']:>5} {row['seconds']:>8.2f} "
                    f"{compile_s:>8} {res['peak_mb']:>8.0f} {inertia_s:>8} "
                    f"{res['load_before']:>4.1f}-{res['load_after']:<4.1f} {row['sha1']}  {row.get('note', '')}")
            print(line, flush=True)
            lines.append(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()

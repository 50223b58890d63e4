"""Image folders: the time to decode one cold and to read it back from the decode cache, and peak memory.

  python experiments/bench_folder.py                  # 50,000 random 32x32 RGB PNGs, 10 classes
  python experiments/bench_folder.py --images=5000    # a quick look

Writes the PNGs into a temporary train/<class>/ folder, then loads it twice with `load_folder`, each time in a
fresh process with an empty then a filled $INAS_JAX_FOLDER_CACHE: cold (hash every file, decode, write the
cache) and cached (hash every file, read the cache). The files sit in the OS page cache both times. Memory:
each process's peak RSS (getrusage) less its RSS just before the load, over the decoded arrays' bytes.
Prints one JSON line; the targets are decode <= 30 s, cache load <= 3 s, peak <= 2x the arrays.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = """
import json, resource, sys, time
from PIL import Image
from inas_jax.data.folder import load_folder

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

before = rss_mb()
start = time.perf_counter()
ds = load_folder(sys.argv[1])
seconds = time.perf_counter() - start
arrays = (ds.x_train.nbytes + ds.x_test.nbytes) / 2 ** 20
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(seconds=seconds, arrays_mb=arrays, before_mb=before, peak_mb=peak, shape=ds.x_train.shape)))
"""


def write_folder(root: str, images: int, size: int, classes: int, seed: int = 0) -> None:
    """root/train/<class>/img_NNNNNN.png: `images` random size x size RGB PNGs, round-robin over the classes."""
    from PIL import Image

    for c in range(classes):
        os.makedirs(os.path.join(root, "train", f"class_{c}"), exist_ok=True)

    def write(start):
        rng = np.random.default_rng([seed, start])
        for i in range(start, min(start + 1000, images)):
            pixels = rng.integers(0, 256, (size, size, 3), np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, "train", f"class_{i % classes}", f"img_{i:06d}.png"))

    with concurrent.futures.ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(write, range(0, images, 1000)))


def load_in_child(root: str, cache: str) -> dict:
    """One load_folder(root) in a fresh process with the decode cache at `cache`: its time and memory."""
    env = dict(os.environ, INAS_JAX_FOLDER_CACHE=cache)
    proc = subprocess.run([sys.executable, "-c", CHILD, root], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    if args.images < 2 * args.classes or args.classes < 2 or args.size < 8:
        sys.exit("error: need --classes >= 2, --images >= 2 per class and --size >= 8")
    with tempfile.TemporaryDirectory(prefix="bench_folder_") as tmp:
        root, cache = os.path.join(tmp, "images"), os.path.join(tmp, "cache")
        start = time.perf_counter()
        write_folder(root, args.images, args.size, args.classes)
        write_s = time.perf_counter() - start
        cold, cached = load_in_child(root, cache), load_in_child(root, cache)
    out = dict(images=args.images, size=args.size, classes=args.classes, write_s=round(write_s, 1),
               decode_s=round(cold["seconds"], 2), cache_load_s=round(cached["seconds"], 2),
               arrays_mb=round(cold["arrays_mb"], 1),
               decode_peak_over_arrays=round((cold["peak_mb"] - cold["before_mb"]) / cold["arrays_mb"], 2),
               cache_peak_over_arrays=round((cached["peak_mb"] - cached["before_mb"]) / cached["arrays_mb"], 2),
               decode_peak_rss_mb=round(cold["peak_mb"]), rss_before_load_mb=round(cold["before_mb"]),
               threads=len(os.sched_getaffinity(0)), cpu=cpu_model(), load_average=os.getloadavg()[0])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

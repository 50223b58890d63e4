"""Training-step throughput of the A(B,i,j) grid vs the PyTorch peer, measured in one run.

  python experiments/bench_train.py                       # A(1,1) A(1,2) A(2,2) A(2,4), width 64, batch 128
  python experiments/bench_train.py --archs=1,1 --steps=5 --peer_python=/path/to/torch-venv/bin/python
  python experiments/bench_train.py --archs=1,1 --profile_top=15   # where a step's time goes, per XLA op

Each row times `--repeats` epochs of `--steps` SGD steps of inas_jax.loop.train.train_epoch (after a
compile/warm-up epoch; the best counts) on random 32x32x3 uint8 images, with augmentation off (the
peer's setting) and on, alternating epoch by epoch, and counts the minor page faults per step. It then runs
../shared/tools/peer_resnet_torch.py (its best of `--repeats` timed runs) with the same architecture in
every configuration a PyTorch user would try: eager NCHW, --channels_last, --channels_last --compile,
each as shipped and with the huge-page malloc tunable this script restarts itself with (`+h`;
inas_jax.allocator, it speeds PyTorch up as well). It prints every peer's images/s, jax's ratio to the
best of them, augmentation's cost (jax / jax+aug - 1) and the fraction of this machine's fp32 matmul
rate (measured first) jax reaches, counted with the direct convolution's FLOPs (the Winograd
convolutions do 2.25x fewer multiplications, so it is an effective rate). With
--profile_top=K it also traces the timed steps (jax.profiler, XLA:CPU per-op trace events) and prints
the K most expensive compiled ops with the JAX operation each came from.
The peer needs torch: give its interpreter with --peer_python (see the README's benchmark section).
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import collections
import gzip
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from inas_jax.runtime.allocator import TUNABLE, huge_pages_active, with_huge_pages  # noqa: E402
from inas_jax.config import ModelConfig, TrainConfig
from inas_jax.model.conv import PATCH_MAX_SIZE, XLA_MAX_CHANNELS
from inas_jax.model.network import build_model, forward_flops
from inas_jax.model.search_space import Arch, num_params
from inas_jax.loop.train import init_state, sgd_step, train_epoch

PEER = pathlib.Path(__file__).resolve().parents[2] / "shared" / "tools" / "peer_resnet_torch.py"

FLAGS = flags.DEFINE_multi_string("archs", ["1,1", "1,2", "2,2", "2,4"], "Architectures BLOCKS,STACKS.")
WIDTH = flags.DEFINE_integer("width", 64, "Base width.")
BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per epoch.", lower_bound=1)
REPEATS = flags.DEFINE_integer("repeats", 3, "Timed epochs (and peer runs) per architecture; the best counts.",
                              lower_bound=1)
PEER_PY = flags.DEFINE_string("peer_python", None, "Python with torch for the peer; skipped when absent.")
PATCH_MAX = flags.DEFINE_integer("patch_max_size", PATCH_MAX_SIZE, "Patch-GEMM convolutions up to this output size "
                                 "(4 was the rule before; with INAS_JAX_DEFAULT_MALLOC=1, the old setup).")
WINOGRAD = flags.DEFINE_bool("winograd", True, "Winograd F(2x2,3x3) for 3x3 stride-1 convs (--nowinograd: patch "
                             "GEMMs and XLA's convolution only).")
XLA_MAX = flags.DEFINE_integer("xla_max_channels", XLA_MAX_CHANNELS, "XLA's convolution for stride-1 convs with at "
                               "most this many channels in and out (0: none, the cifar_plateau study's lowering).")
PROFILE_TOP = flags.DEFINE_integer("profile_top", 0, "Print the K most expensive XLA ops per step (0: off).")


STATS = (np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))  # per-channel mean, std


def jax_images_per_s(arch: Arch, profile: bool = False) -> tuple[float, float, float]:
    """(images/s without augmentation, images/s with it, minor page faults per step), each the best of
    REPEATS timed epochs; the two settings alternate epoch by epoch, so a change of the machine's load
    or state during the run hits both alike. With `profile`, one traced epoch without augmentation."""
    cfgs = [TrainConfig(epochs=1, epoch_size=BATCH.value * STEPS.value, batch_size=BATCH.value, flip=augmented,
                        max_shift=4 if augmented else 0, max_rotation=15.0 if augmented else 0.0)
            for augmented in (False, True)]
    model = build_model(arch, 10, ModelConfig(width=WIDTH.value, patch_max_size=PATCH_MAX.value,
                                              winograd=WINOGRAD.value, xla_max_channels=XLA_MAX.value), STATS)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (BATCH.value * 4, 32, 32, 3), np.uint8))
    y = jnp.asarray(rng.integers(0, 10, (BATCH.value * 4,), np.int32))
    batches = rng.integers(0, len(x), (cfgs[0].steps_per_epoch, BATCH.value)).astype(np.int32)
    states = [init_state(model, cfg, jax.random.key(0), (32, 32, 3)) for cfg in cfgs]
    states = [train_epoch(state, model, x, y, batches, jax.random.key(1), cfg)[0] for state, cfg in zip(states, cfgs)]
    jax.block_until_ready(states)  # compiled and warm
    trace_dir = tempfile.mkdtemp(prefix="bench_train_trace_") if profile else None
    if profile:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    best = [float("inf"), float("inf")]
    for repeat in range(1 if profile else REPEATS.value):
        for i in range(1 if profile else 2):
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            states[i], losses, _ = train_epoch(states[i], model, x, y, batches, jax.random.key(2 + repeat), cfgs[i])
            jax.block_until_ready(losses)
            best[i] = min(best[i], time.perf_counter() - t)
            if i == 0:
                faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / STEPS.value
    plain, aug = (BATCH.value * STEPS.value / t for t in best)
    if profile:
        jax.profiler.stop_trace()
        idx = jnp.asarray(batches[0])
        hlo = sgd_step.lower(states[0], model, x[idx], y, idx, jax.random.key(2),
                             cfg=cfgs[0].step_config()).compile().as_text()
        print_op_profile(trace_dir, hlo, 1e3 * BATCH.value / plain)
        shutil.rmtree(trace_dir)
    return plain, aug, faults


def print_op_profile(trace_dir: str, hlo: str, step_ms: float) -> None:
    """The PROFILE_TOP compiled ops that took longest per step, from the trace in trace_dir, each with
    the JAX operation it came from (HLO metadata; weight-gradient convolutions carry none)."""
    trace = next(pathlib.Path(trace_dir).rglob("*.trace.json.gz"))
    origin = dict(re.findall(r"%([\w.-]+) = .*?metadata=\{op_name=\"([^\"]+)\"", hlo))
    shapes = dict(re.findall(r"^\s*%([\w.-]+) = (\S+)", hlo, re.M))
    total = collections.Counter()
    for event in json.load(gzip.open(trace))["traceEvents"]:
        if event.get("ph") == "X" and event["name"] in shapes:
            total[event["name"]] += event.get("dur", 0) / 1e3 / STEPS.value
    print(f"  step {step_ms:.1f} ms; traced ops sum to {sum(total.values()):.1f} ms (two threads overlap)")
    for name, ms in total.most_common(PROFILE_TOP.value):
        where = origin.get(name, "").removeprefix("jit(sgd_step)/")
        print(f"  {ms:7.2f} ms {100 * ms / step_ms:5.1f}%  {name:28} {shapes[name]:24} {where}")


def train_gflop_per_image(arch: Arch) -> float:
    """Training FLOPs per image / 1e9 at this width (models.forward_flops x 3)."""
    return 3 * forward_flops(arch, 10, WIDTH.value) / 1e9


def matmul_ceiling_gflops(n: int = 2048, repeats: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) through XLA, best of `repeats`."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


PEER_CONFIGS = {  # name -> (peer flags, with the huge-page tunable)
    "eager": ([], False), "cl": (["--channels_last"], False), "cl+compile": (["--channels_last", "--compile"], False),
    "eager+h": ([], True), "cl+h": (["--channels_last"], True), "cl+compile+h": (["--channels_last", "--compile"], True),
}


def peer_images_per_s(arch: Arch, flags_: list[str], huge_pages: bool) -> float | None:
    """The peer's images/s (its own best of REPEATS timed runs after a warm-up) with extra flags
    (--channels_last, --compile), without GLIBC_TUNABLES or with inas_jax's (huge pages)."""
    if not PEER_PY.value or not PEER.exists():
        return None
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env = with_huge_pages(plain) if huge_pages else plain
    out = subprocess.run([PEER_PY.value, str(PEER), "--blocks", str(arch.blocks), "--stacks", str(arch.stacks),
                          "--width", str(WIDTH.value), "--batch", str(BATCH.value), "--steps", str(STEPS.value),
                          "--repeats", str(REPEATS.value), *flags_],
                         capture_output=True, text=True, check=True, env=env).stdout
    return float(re.search(r"images_per_s=([\d.]+)", out).group(1))


def cell(value: float | None, width: int, digits: int = 1, suffix: str = "") -> str:
    """value right-aligned in `width` characters, or n/a when there is none (no peer)."""
    return f"{value:{width - len(suffix)}.{digits}f}{suffix}" if value else f"{'n/a':>{width}}"


def main(_):
    if PROFILE_TOP.value:  # XLA:CPU emits per-op trace events only with this flag, read at backend start
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
    ceiling = matmul_ceiling_gflops()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, width {WIDTH.value}, batch {BATCH.value}, "
          f"{STEPS.value} steps x {REPEATS.value}; fp32 matmul ceiling {ceiling:.0f} GFLOP/s (jitted 2048^2 "
          f"matmul); GLIBC_TUNABLES={TUNABLE} {'on' if huge_pages_active() else 'off'}, patch GEMMs up to "
          f"{PATCH_MAX.value}x{PATCH_MAX.value}, Winograd {'on' if WINOGRAD.value else 'off'}, XLA convolutions up to "
          f"{XLA_MAX.value} channels")
    print(f"{'arch':8} {'params':>10} {'GFLOP/img':>9} {'jax':>8} {'faults':>7} {'jax+aug':>8} {'aug cost':>8} "
          + " ".join(f"{name:>12}" for name in PEER_CONFIGS) + f" {'jax/best':>8} {'jax %ceil':>9}")
    for text in FLAGS.value:
        arch = Arch.parse(text)
        flop = train_gflop_per_image(arch)
        plain, aug, faults = jax_images_per_s(arch)
        peers = {name: peer_images_per_s(arch, f, h) for name, (f, h) in PEER_CONFIGS.items()}
        best = max((v for v in peers.values() if v), default=None)
        print(f"{str(arch):8} {num_params(arch, 10, WIDTH.value):10,d} {flop:9.3f} {plain:8.1f} {faults:7.0f} "
              f"{aug:8.1f} {100 * (plain / aug - 1):7.1f}% " + " ".join(cell(v, 12) for v in peers.values())
              + f" {cell(best and plain / best, 8, 2)} {cell(100 * plain * flop / ceiling, 9, 1, '%')}", flush=True)
        if PROFILE_TOP.value:
            jax_images_per_s(arch, profile=True)


if __name__ == "__main__":
    app.run(main)

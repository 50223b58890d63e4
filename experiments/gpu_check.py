"""A GPU check in one command: what a first session on an accelerator should measure, ready to run.

  PYTHONPATH=. python experiments/gpu_check.py                      # at most 8 minutes on one H100
  PYTHONPATH=. python experiments/gpu_check.py --quick --out=/tmp/gpu_check.json   # a CPU, tiny sizes

Installs nothing and needs neither tensorflow-datasets nor Pillow. It prints, and writes to one JSON
(--out, default ./gpu_check.json):

1. environment: python, jax, jaxlib, flax, optax, orbax (and CUDA/TPU plugin) versions, the devices,
   their kind, jax's default matmul precision, one device's published dense peak for float32 and
   bfloat16 (PEAKS by device_kind; "peak unknown" and no fraction elsewhere) and the rate of one large
   jitted matmul in each dtype. Float32 peaks assume jax's default precision: TF32 tensor cores on
   GPUs from Ampere, one bfloat16 pass on TPUs.
2. digits_run: the default digits run, `python -m inas_jax.main` (--quick: a tiny fixed-arch one), a
   subprocess of this interpreter with a fresh workdir and a fresh (cold) compilation cache: wall
   time, exit code, final test accuracy (results.json) and the driver's own count of XLA
   compilations. It runs before this process starts the device, so XLA's GPU memory preallocation
   here cannot starve it.
3. throughput: training images/s of A(1,2) and A(2,4) at the paper's width 64 and batch 128 (--quick:
   8 and 16), in float32 and bfloat16 (ModelConfig.compute_dtype; parameters stay float32), on random
   32x32x3 uint8 images without augmentation: the package's jitted `sgd_step` compiled ahead, warm-up
   steps, then the best of `repeats` epochs of `steps` steps, synchronised with block_until_ready.
   FLOPs per image: XLA's cost analysis of that train step compiled for the CPU with direct
   convolutions in float32 (the convention of forward_flops and cloud_cost.py), used for the fraction
   of peak; the count of the timed executable itself is recorded beside it (flops_per_image_device):
   on GPU it can miss the cuBLAS/cuDNN calls (jax issues #16008, #22249).
4. paper_epoch: one epoch of --preset=paper's final training (its width, batch, epoch size, LR
   schedule and augmentation, float32) on a random CIFAR-sized pool for A(1,2) and A(2,4), run step
   by step as `train_step` runs it: `augmented_batch`, then the throughput's `sgd_step` executable.

Compilations are counted with inas_jax.runtime.compilation (jax.monitoring's backend-compile events)
around each part. Every part checks a global deadline (--deadline_s: 420 s, --quick 300 s) between
steps, starts only with MIN_PART_S left, and the JSON names what stopped early or was skipped. Exit 0
when every part ran in full and the digits run exited 0, else 1.
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.runtime import compilation  # registers the compilation counters before anything compiles
from inas_jax.config import ModelConfig, TrainConfig, from_preset
from inas_jax.loop.train import TrainState, augmented_batch, epoch_batches, init_state, make_optimizer, sgd_step
from inas_jax.model.network import build_model
from inas_jax.model.search_space import Arch
from inas_jax.runtime.environment import cpu_threads

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHS = (Arch(1, 2), Arch(2, 4))
DTYPES = ("float32", "bfloat16")
STATS = (np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))  # per-channel mean, std (as bench_train)
IMAGE = (32, 32, 3)
# The digits run of --quick: one architecture, one round of 40 labels (no query), one epoch of 64 samples.
TINY_DIGITS = ("--strategy=fixed", "--arch=1,1", "--initial_size=40", "--budget=40", "--epochs=1",
               "--inas_epochs=1", "--epoch_size=64", "--batch_size=16", "--width=4")

# Published dense (no sparsity) peaks per device in TFLOP/s: (device_kind substring, name, float32 on
# CUDA cores, TF32 tensor cores, bfloat16). First match wins, so the more specific names come first.
# TPUs have no float32 matrix unit: at jax's default precision a float32 matmul is one bfloat16 pass.
PEAKS = (
    ("H100 NVL", "NVIDIA H100 NVL", 60.0, 417.5, 835.5),
    ("H100 PCIe", "NVIDIA H100 PCIe", 51.2, 378.0, 756.0),
    ("H100", "NVIDIA H100 SXM", 67.0, 494.7, 989.4),
    ("H200 NVL", "NVIDIA H200 NVL", 60.0, 417.5, 835.5),
    ("H200", "NVIDIA H200 SXM", 67.0, 494.7, 989.4),
    ("A100", "NVIDIA A100", 19.5, 156.0, 312.0),
    ("L4", "NVIDIA L4", 30.3, 60.0, 121.0),
    ("V100-PCIE", "NVIDIA V100 PCIe", 14.0, None, None),  # no TF32 and no bfloat16 tensor cores
    ("V100", "NVIDIA V100 SXM2", 15.7, None, None),
    ("TPU v4", "TPU v4", None, None, 275.0),
    ("TPU v5 lite", "TPU v5e", None, None, 197.0),
    ("TPU v5e", "TPU v5e", None, None, 197.0),
    ("TPU v5", "TPU v5p", None, None, 459.0),
    ("TPU v6", "TPU v6e", None, None, 918.0),
)
# A part starts only with this many seconds left of the deadline (about one compilation on a GPU).
MIN_PART_S = 30.0
# jax_default_matmul_precision values that keep float32 matmuls on the tensor cores (TF32 on GPU, one
# bfloat16 pass on TPU): jax's default (None) leans to speed, docs.jax.dev "Matmul precision".
FAST_PRECISIONS = (None, "default", "fastest", "bfloat16", "tensorfloat32", "TF32_TF32_F32", "BF16_BF16_F32")


@dataclasses.dataclass(frozen=True)
class Mode:
    """The sizes of one mode of the check."""

    name: str
    width: int
    batch: int
    warmup_steps: int
    steps: int  # timed steps per throughput epoch
    repeats: int  # timed throughput epochs; the best counts
    matmul_n: int
    paper_pool: int  # images of the random pool the paper epoch draws from
    paper_steps: int | None  # None: the preset's whole epoch
    deadline_s: float
    after_digits_s: float  # seconds kept for the parts after the digits run
    digits_flags: tuple[str, ...]
    conv_impl: str  # the networks' lowering: auto (the default) or xla (what auto takes on accelerators)
    xla_flags: str  # added to XLA_FLAGS after the digits run, before this process starts the device


PAPER = from_preset("paper", "cifar10")
# The paper's width (64) and batch (128); the pool is CIFAR-sized.
FULL = Mode("full", PAPER.model.width, PAPER.train.batch_size, 5, 50, 3, 8192, 50_000, None, 420.0, 240.0, (), "auto",
            "")
# On a CPU, conv_impl=xla compiles what a GPU run compiles (auto takes XLA's convolution there), and
# quickly: one op per convolution where the CPU's Winograd transforms take ~1 s each to compile. LLVM
# at level 0 compiles the check's own programs ~30% faster; their speed on a CPU means nothing here.
QUICK = Mode("quick", 8, 16, 1, 3, 2, 256, 256, 4, 300.0, 60.0, TINY_DIGITS, "xla",
             "--xla_backend_optimization_level=0")


class Deadline:
    """Seconds left of the check's wall-clock budget."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def device_peaks(device_kind: str, precision=None) -> dict:
    """The published dense peaks (TFLOP/s) of one device of a device_kind: float32 at the given
    jax_default_matmul_precision (TF32 on GPUs from Ampere, a bfloat16 pass on TPUs, unless the
    precision asks for full float32), and bfloat16. None where unknown."""
    for key, name, simt, tf32, bf16 in PEAKS:
        if key.lower() in device_kind.lower():
            break
    else:
        return {"device": None, "float32": None, "float32_mode": None, "bfloat16": None}
    fast = precision in FAST_PRECISIONS
    if name.startswith("TPU"):
        f32, f32_mode = (bf16, "one bfloat16 pass (TPU default precision)") if fast else (None, "multi-pass")
    elif fast and tf32:
        f32, f32_mode = tf32, "TF32 tensor cores (jax's default precision on GPU)"
    else:
        f32, f32_mode = simt, "float32 CUDA cores"
    return {"device": name, "float32": f32, "float32_mode": f32_mode, "bfloat16": bf16}


def fraction(flop_per_s: float | None, peak_tflops: float | None) -> float | None:
    """flop_per_s as a fraction of a peak in TFLOP/s; None when either is unknown."""
    if not flop_per_s or not peak_tflops:
        return None
    return flop_per_s / (peak_tflops * 1e12)


def xla_flops(compiled) -> float | None:
    """The "flops" of a compiled executable's cost analysis: a dict on jax 0.10 (a list of one dict per
    program on jax 0.4.3x and before; the API promises no structure), None when absent or <= 0."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends implement none
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = cost.get("flops") if isinstance(cost, dict) else None
    return float(flops) if flops and flops > 0 else None


def versions() -> dict:
    """The Python packages the numbers depend on (no device is started)."""
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
    plugins = sorted(f"{d.metadata['Name']} {d.version}" for d in importlib.metadata.distributions()
                     if (d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda", "libtpu")))
    return {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": version("jaxlib"),
            "flax": version("flax"), "optax": version("optax"), "orbax": version("orbax-checkpoint"),
            "numpy": np.__version__, "plugins": plugins}


def matmul_tflops(dtype: str, n: int, repeats: int = 5) -> float:
    """The rate (TFLOP/s) of one jitted n x n matmul in `dtype` at jax's default precision, best of repeats."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def device_environment(mode: Mode) -> dict:
    """Starts the device (with mode.xla_flags): the devices, the published peaks of one (every figure
    is measured on the first device) and the measured matmul rates."""
    if mode.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {mode.xla_flags}".strip()
    devices = jax.devices()
    kind, n = devices[0].device_kind, mode.matmul_n if devices[0].platform != "cpu" else min(mode.matmul_n, 1024)
    precision = jax.config.jax_default_matmul_precision
    return {"backend": jax.default_backend(), "devices": [str(d) for d in devices], "device_count": len(devices),
            "device_kind": kind, "default_matmul_precision": precision,
            "peak_tflops": device_peaks(kind, precision),
            "matmul_tflops": {dtype: round(matmul_tflops(dtype, n), 3) for dtype in DTYPES}, "matmul_n": n,
            "cpu_threads": cpu_threads(), "xla_flags": os.environ.get("XLA_FLAGS")}


def digits_run(mode: Mode, deadline: Deadline) -> dict:
    """`python -m inas_jax.main` (the default digits run; --quick a tiny one) in a fresh workdir with a
    fresh compilation cache, as a subprocess of this interpreter: its real flags and exit code."""
    flags_ = list(mode.digits_flags)
    timeout = max(30.0, deadline.left() - mode.after_digits_s)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        cmd = [sys.executable, "-m", "inas_jax.main", f"--workdir={tmp}/run", f"--compilation_cache={tmp}/cache",
               *flags_]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            code, stderr = None, err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr
        wall = time.perf_counter() - t
        results = pathlib.Path(tmp, "run", "results.json")
        rounds = json.loads(results.read_text())["rounds"] if code == 0 and results.exists() else []
    counts = re.search(r"(\d+) XLA compilations \((\d+) read from the persistent cache\)", stderr or "")
    return {"command": " ".join(["python -m inas_jax.main --workdir=TMP --compilation_cache=TMP/cache", *flags_]),
            "exit_code": code, "timed_out": code is None, "timeout_s": round(timeout, 1), "wall_s": round(wall, 2),
            "rounds": len(rounds), "test_accuracy": rounds[-1]["test_accuracy"] if rounds else None,
            "compilations": int(counts.group(1)) if counts else None,
            "compilations_from_disk": int(counts.group(2)) if counts else None,
            "stderr_tail": None if code == 0 else (stderr or "")[-2000:]}


def paper_settings(mode: Mode, dtype: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """--preset=paper's network and training settings (width, batch, epoch size, LR schedule,
    augmentation); --quick: mode's width and batch, epochs of mode.paper_steps steps. Convolutions as
    mode.conv_impl; `dtype` replaces the compute dtype."""
    model_cfg, train = dataclasses.replace(PAPER.model, conv_impl=mode.conv_impl), PAPER.train
    if mode.paper_steps is not None:
        train = train.replace(batch_size=mode.batch, epoch_size=mode.batch * mode.paper_steps)
        model_cfg = dataclasses.replace(model_cfg, width=mode.width)
    return dataclasses.replace(model_cfg, compute_dtype=dtype or model_cfg.compute_dtype), train


def pool(mode: Mode, caches: dict) -> tuple[jax.Array, jax.Array]:
    """The random CIFAR-sized pool (mode.paper_pool uint8 32x32x3 images, labels in 0..9) on the device,
    made once: every step of the check draws its batches from it."""
    if "pool" not in caches:
        rng = np.random.default_rng(0)
        caches["pool"] = (jnp.asarray(rng.integers(0, 256, (mode.paper_pool, *IMAGE), np.uint8)),
                          jnp.asarray(rng.integers(0, 10, (mode.paper_pool,), np.int32)))
    return caches["pool"]


def compiled_step(arch: Arch, dtype: str, mode: Mode, caches: dict) -> dict:
    """{model, train, step, compile_s}: arch in dtype with paper_settings and the package's jitted
    `sgd_step` compiled ahead for the pool's shapes, once per (arch, dtype): the throughput times this
    executable and the paper epoch runs it."""
    if (arch, dtype) not in caches:
        model_cfg, train = paper_settings(mode, dtype)
        model = jax.device_put(build_model(arch, 10, model_cfg, STATS))
        x, y = pool(mode, caches)
        t, idx = time.perf_counter(), jnp.arange(train.batch_size, dtype=jnp.int32)
        state = init_state(model, train, jax.random.key(0), IMAGE)
        step = sgd_step.lower(state, model, x[idx], y, idx, jax.random.key(1), cfg=train.step_config()).compile()
        caches[arch, dtype] = dict(model=model, train=train, step=step, compile_s=time.perf_counter() - t)
    return caches[arch, dtype]


def step_flops(arch: Arch, dtype: str, mode: Mode, device, conv_impl: str) -> float | None:
    """FLOPs per image of one `sgd_step` as compiled_step builds it, compiled for `device` with conv_impl,
    as XLA's cost analysis counts them; lowered from shapes alone, so nothing is allocated."""
    model_cfg, train = paper_settings(mode, dtype)
    model = build_model(arch, 10, dataclasses.replace(model_cfg, conv_impl=conv_impl), STATS)
    variables = jax.eval_shape(lambda key: model.init(key, IMAGE), jax.random.key(0))
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=variables["params"],
                       batch_stats=variables["batch_stats"],
                       opt_state=jax.eval_shape(make_optimizer(train).init, variables["params"]))
    shapes = (state, model, jax.ShapeDtypeStruct((train.batch_size, *IMAGE), jnp.uint8),
              jax.ShapeDtypeStruct((mode.paper_pool,), jnp.int32), jax.ShapeDtypeStruct((train.batch_size,), jnp.int32),
              jax.eval_shape(lambda: jax.random.key(0)))
    on_device = jax.sharding.SingleDeviceSharding(device)
    args = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_device), shapes)
    flops = xla_flops(sgd_step.lower(*args, cfg=train.step_config()).compile())
    return flops / train.batch_size if flops else None


def reference_flops(arch: Arch, mode: Mode, own: float | None, caches: dict) -> float | None:
    """FLOPs per image of arch's train step as XLA counts them compiled for the CPU with direct
    convolutions in float32, once per arch (`own`: the timed float32 executable's count, which is that
    count when it ran on a CPU with conv_impl=xla); None without a CPU backend."""
    if ("flops", arch) not in caches:
        if jax.devices()[0].platform == "cpu" and mode.conv_impl == "xla":
            caches["flops", arch] = own
        else:
            try:
                caches["flops", arch] = step_flops(arch, "float32", mode, jax.devices("cpu")[0], "xla")
            except RuntimeError:  # no CPU backend (JAX_PLATFORMS names only the accelerator)
                caches["flops", arch] = None
    return caches["flops", arch]


def steps_that_fit(deadline: Deadline, step_s: float, wanted: int) -> int:
    """How many of `wanted` steps of step_s seconds fit before the deadline, keeping MIN_PART_S / 2; >= 1."""
    return max(1, min(wanted, int((deadline.left() - MIN_PART_S / 2) / max(step_s, 1e-9))))


def timed_steps(step, state, model, batches, y, key, deadline: Deadline, mode: Mode, step_s: float):
    """(state, best seconds per step, steps in that epoch, loss, epochs timed): `step` over `batches`
    (images, idx) mode.repeats times, each epoch ended by block_until_ready. Near the deadline the
    first epoch is shortened (step_s: the warm-up's seconds per step) and no other starts."""
    best, steps, repeats = math.inf, 0, 0
    for _ in range(mode.repeats):
        n = steps_that_fit(deadline, min(best, step_s), len(batches))
        if repeats and n < len(batches):
            break
        t = time.perf_counter()
        for images, idx in batches[:n]:
            state, loss, _ = step(state, model, images, y, idx, key)
        jax.block_until_ready((state, loss))
        per_step, repeats = (time.perf_counter() - t) / n, repeats + 1
        best, steps = min((best, steps), (per_step, n))
    return state, best, steps, float(loss), repeats


def throughput(arch: Arch, dtype: str, mode: Mode, deadline: Deadline, peaks: dict, caches: dict) -> dict:
    """Training images/s of arch in dtype: compiled_step's executable (the jitted `sgd_step`; its cost
    analysis is that of the executable timed), mode.warmup_steps steps, then the best of mode.repeats
    epochs of mode.steps steps on pool batches (no augmentation: the gathers are done beforehand)."""
    before, t = compilation.snapshot(), time.perf_counter()
    c = compiled_step(arch, dtype, mode, caches)
    model, step, key, (x, y) = c["model"], c["step"], jax.random.key(1), pool(mode, caches)
    idx = [jnp.asarray(i) for i in np.random.default_rng(1).integers(0, len(x), (mode.steps, mode.batch), np.int32)]
    batches = [(x[i], i) for i in idx]
    state, t_warm = init_state(model, c["train"], jax.random.key(0), IMAGE), time.perf_counter()
    for images, i in batches[:mode.warmup_steps]:
        state, loss, _ = step(state, model, images, y, i, key)
    jax.block_until_ready(state)
    now = time.perf_counter()
    compiled, warmup_s, step_s = compilation.snapshot().since(before), now - t, (now - t_warm) / mode.warmup_steps
    state, best, steps, loss, repeats = timed_steps(step, state, model, batches, y, key, deadline, mode, step_s)
    images_per_s, own = mode.batch / best, xla_flops(step)
    own = own and own / mode.batch
    used = reference_flops(arch, mode, own, caches) if dtype == "float32" or ("flops", arch) in caches else None
    flop_per_s = used and used * images_per_s
    return {"images_per_s": round(images_per_s, 1), "step_ms": round(1e3 * best, 3),
            "width": model.module.width, "batch": mode.batch, "steps": steps, "repeats": repeats,
            "stopped_early": repeats < mode.repeats or steps < mode.steps, "warmup_s": round(warmup_s, 2),
            "final_loss": loss,
            "compilations": compiled.compiled, "compilations_from_disk": compiled.from_disk,
            "dtype_via": "ModelConfig.compute_dtype (parameters float32)", "conv_impl": mode.conv_impl,
            "flops_per_image": used, "flops_source": used and "xla_cost_analysis_cpu_direct_conv_float32",
            "flops_per_image_device": own, "tflops": flop_per_s and round(flop_per_s / 1e12, 4),
            "peak_tflops": peaks[dtype], "fraction_of_peak": fraction(flop_per_s, peaks[dtype])}


def paper_epoch(arch: Arch, mode: Mode, deadline: Deadline, caches: dict) -> dict:
    """One epoch of --preset=paper's final training (paper_settings) on the random pool: per step
    `train_step`'s two jitted calls, `augmented_batch` then compiled_step's `sgd_step` (shared with the
    throughput); 2 warm-up steps, then chunks of up to 50 steps, stopped and extrapolated near the
    deadline."""
    before, shared = compilation.snapshot(), (arch, paper_settings(mode)[0].compute_dtype) in caches
    c = compiled_step(arch, paper_settings(mode)[0].compute_dtype, mode, caches)
    model, train, step, key, (x, y) = c["model"], c["train"], c["step"], jax.random.key(4), pool(mode, caches)
    batches = epoch_batches(jax.random.key(3), len(x), train)

    def run(state, rows):
        for idx in rows:
            idx = jnp.asarray(idx)
            images = augmented_batch(state.step, x, idx, key, flip=train.flip, max_shift=train.max_shift,
                                     max_rotation=train.max_rotation)
            state, loss, _ = step(state, model, images, y, idx, key)
        return jax.block_until_ready(state)

    state = init_state(model, train, jax.random.key(0), IMAGE)
    t = time.perf_counter()
    state = run(state, batches[:2])
    seconds, done, warm_step_s = 0.0, 0, (time.perf_counter() - t) / 2
    while done < len(batches):
        wanted = min(50, len(batches) - done)
        n = steps_that_fit(deadline, seconds / done if done else warm_step_s, wanted)
        if done and n < wanted:
            break
        t = time.perf_counter()
        state = run(state, batches[done:done + n])
        seconds, done = seconds + time.perf_counter() - t, done + n
    compiled = compilation.snapshot().since(before)
    return {"width": model.module.width, "batch": train.batch_size, "epoch_size": train.epoch_size,
            "compute_dtype": str(model.module.dtype), "step_shared_with_throughput": shared,
            "augmentation": dict(flip=train.flip, max_shift=train.max_shift, max_rotation=train.max_rotation),
            "steps_per_epoch": len(batches), "steps_run": done, "stopped_early": done < len(batches),
            "seconds": round(seconds, 3), "epoch_s": round(seconds * len(batches) / done, 3),
            "images_per_s": round(done * train.batch_size / seconds, 1),
            "compilations": compiled.compiled, "compilations_from_disk": compiled.from_disk}


def guarded(part: str, report: dict, deadline: Deadline, fn, *args):
    """fn(*args), or None with the error recorded in report["errors"] under `part`, so one failing part
    keeps the others; None and the part named in report["skipped"] once the deadline is too near."""
    if deadline.left() < MIN_PART_S:
        report["skipped"].append(part)
        print(f"{part}: skipped, {deadline.left():.0f} s left of the deadline", flush=True)
        return None
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - a check reports every failure and goes on
        report["errors"][part] = f"{type(err).__name__}: {err}"[:2000]
        print(f"{part}: FAILED {report['errors'][part][:300]}", flush=True)
        return None


def shown(value, fmt: str = ",.1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def print_environment(env: dict) -> None:
    peak = env.get("peak_tflops") or {}
    print(f"python {env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, flax {env['flax']}, "
          f"optax {env['optax']}, orbax {env['orbax']} {' '.join(env['plugins'])}")
    if "device_kind" not in env:
        return
    print(f"devices: {env['device_count']} x {env['device_kind']} ({env['backend']}); default matmul precision "
          f"{env['default_matmul_precision']}")
    if peak.get("device"):
        print(f"peak ({peak['device']}, dense): float32 {shown(peak['float32'])} TFLOP/s ({peak['float32_mode']}), "
              f"bfloat16 {shown(peak['bfloat16'])} TFLOP/s")
    else:
        print("peak unknown for this device: no fraction of peak is given")
    for dtype, rate in env["matmul_tflops"].items():
        print(f"  {env['matmul_n']}^2 matmul, {dtype}: {rate:,.2f} TFLOP/s"
              + (f" = {shown(fraction(rate * 1e12, peak.get(dtype)), '.1%')} of peak" if peak.get(dtype) else ""))


def print_throughput(arch: Arch, dtype: str, r: dict) -> None:
    gflop = r["flops_per_image"] and r["flops_per_image"] / 1e9
    print(f"  {str(arch):7} {dtype:9} {r['images_per_s']:>11,.1f} images/s  {r['step_ms']:8.2f} ms/step  "
          f"{shown(gflop, '.4f')} GFLOP/image  {shown(r['tflops'], '.3f')} TFLOP/s  "
          f"{shown(r['fraction_of_peak'], '.2%')} of peak  {r['compilations']} compilations"
          + ("  (stopped early)" if r["stopped_early"] else ""), flush=True)


def stopped_early(report: dict) -> list[str]:
    """The measurements the deadline cut short (fewer timed epochs, or part of the paper epoch)."""
    parts = [(f"throughput {arch} {dtype}", r) for arch, rs in report["throughput"].items() for dtype, r in rs.items()]
    parts += [(f"paper_epoch {arch}", r) for arch, r in report["paper_epoch"].items()]
    return [name for name, r in parts if r and r["stopped_early"]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file written (default ./gpu_check.json)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds on a CPU, the same JSON keys")
    parser.add_argument("--deadline_s", type=float, default=None,
                        help=f"wall-clock budget (default {FULL.deadline_s:.0f} s, --quick {QUICK.deadline_s:.0f} s)")
    return parser.parse_args(argv)


def measure(report: dict, mode: Mode, deadline: Deadline, save) -> None:
    """The throughput of every arch and dtype, then the paper epoch of every arch, into `report`;
    save() after each."""
    peaks = report["environment"].get("peak_tflops") or {"float32": None, "bfloat16": None}
    report["throughput"], report["paper_epoch"], caches = {str(a): {} for a in ARCHS}, {}, {}
    print(f"throughput, width {paper_settings(mode)[0].width}, batch {mode.batch}, random 32x32x3, no augmentation:",
          flush=True)
    for arch in ARCHS:
        for dtype in DTYPES:
            r = report["throughput"][str(arch)][dtype] = guarded(f"throughput {arch} {dtype}", report, deadline,
                                                                 throughput, arch, dtype, mode, deadline, peaks, caches)
            save()
            if r:
                print_throughput(arch, dtype, r)
    print("one epoch of --preset=paper's final training, random CIFAR-sized data:", flush=True)
    for arch in ARCHS:
        r = report["paper_epoch"][str(arch)] = guarded(f"paper_epoch {arch}", report, deadline, paper_epoch, arch,
                                                       mode, deadline, caches)
        save()
        if r:
            print(f"  {str(arch):7} {r['steps_per_epoch']} steps of {r['batch']} (width {r['width']}, "
                  f"{r['compute_dtype']}): {r['epoch_s']:.2f} s per epoch, {r['images_per_s']:,.1f} images/s, "
                  f"{r['compilations']} compilations" + ("  (stopped early: extrapolated)" * r["stopped_early"]),
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = QUICK if args.quick else FULL
    deadline = Deadline(args.deadline_s or mode.deadline_s)
    out_path, start = pathlib.Path(args.out).resolve(), time.perf_counter()
    report = {"mode": mode.name, "deadline_s": args.deadline_s or mode.deadline_s, "environment": versions(),
              "errors": {}, "skipped": [], "stopped_early": [], "digits_run": None, "throughput": {},
              "paper_epoch": {}}

    def save() -> None:  # after every part, so a run killed from outside keeps what it measured
        report.update(stopped_early=stopped_early(report), elapsed_s=round(time.perf_counter() - start, 1),
                      compilations_total=compilation.snapshot().compiled)
        out_path.write_text(json.dumps(report, indent=2) + "\n")

    print_environment(report["environment"])
    print("digits run:", " ".join(mode.digits_flags) or "(defaults)", flush=True)
    report["digits_run"] = digits = guarded("digits_run", report, deadline, digits_run, mode, deadline)
    save()
    if digits:
        print(f"  exit {digits['exit_code']}, {digits['wall_s']:.1f} s, {digits['rounds']} rounds, test accuracy "
              f"{shown(digits['test_accuracy'], '.4f')}, {shown(digits['compilations'], 'd')} XLA compilations",
              flush=True)
    report["environment"].update(guarded("environment", report, deadline, device_environment, mode) or {})
    save()
    print_environment(report["environment"])
    measure(report, mode, deadline, save)
    save()
    print(f"{report['elapsed_s']:.0f} s, {report['compilations_total']} compilations in this process; wrote {out_path}")
    return 0 if not report["errors"] and not report["skipped"] and digits and digits["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

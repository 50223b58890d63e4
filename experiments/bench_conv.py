"""One convolution's forward plus backward under each lowering: the measurements behind `ConvLowering`'s rule.

  python experiments/bench_conv.py                    # the shapes of the width-8, -16 and -64 networks, batch 128
  python experiments/bench_conv.py --batch=32 --shapes=16x16:16-16,2x2:128-128

For each shape (output size, input and output channels, stride) it compiles the gradient of
sum(conv(x, k) * g) with respect to the kernel and, except for the stem (3 or fewer input channels,
whose input is data), the input, under XLA's convolution, the patch GEMM and Winograd F(2x2, 3x3)
(stride 1 only); it prints the best of 3 timed loops in ms per call, each lowering's compile time,
and what conv_impl="auto" picks. One process; run it on a quiet machine (the times move with load).
"""
from __future__ import annotations

from inas_jax.runtime.allocator import reexec_if_main

reexec_if_main(__name__)  # first, before jax loads: glibc reads its tunables only at process start

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.model.conv import ConvLowering, convolve

# (input size, input channels, output channels, stride): the stems, first stacks and stage changes of
# the width-16 CIFAR network, the width-8 digits network and wider or smaller maps for contrast.
SHAPES = ("32x32:3-16", "16x16:16-16", "16x16:16-32/2", "8x8:32-32", "8x8:32-64/2", "4x4:64-64", "2x2:128-128",
          "32x32:3-64", "16x16:32-32", "16x16:64-64", "8x8:16-16", "2x2:32-32",
          "8x8:1-8", "4x4:8-8", "2x2:16-16", "1x1:32-32")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'HxW:CIN-COUT[/STRIDE]' -> (size, cin, cout, stride); square maps only."""
    size, rest = text.split(":")
    channels, _, stride = rest.partition("/")
    cin, cout = channels.split("-")
    return int(size.split("x")[0]), int(cin), int(cout), int(stride or 1)


def weighted_output(impl: str, stride: int, x, k, g):
    """sum(conv(x, k) * g): its gradient is the convolution's backward pass with cotangent g."""
    return jnp.sum(convolve(impl, x, k, stride) * g)


def time_call(fn, *args) -> float:
    """Best of 3 loops of ~0.3 s each, in ms per call."""
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    n = max(3, int(0.3 / max(time.perf_counter() - t, 1e-5)))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / n)
    return 1e3 * best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="HxW:CIN-COUT[/STRIDE],...")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.default_backend()}, batch {args.batch}; forward + backward, ms per call "
          "(compile s)")
    print(f"{'shape':>16} | {'xla':>14} | {'patches':>14} | {'winograd':>14} | auto")
    for text in args.shapes.split(","):
        size, cin, cout, stride = parse_shape(text)
        out = (size + 2 - 3) // stride + 1
        x = jnp.asarray(rng.standard_normal((args.batch, size, size, cin), np.float32))
        k = jnp.asarray(rng.standard_normal((3, 3, cin, cout), np.float32) * 0.1)
        g = jnp.asarray(rng.standard_normal((args.batch, out, out, cout), np.float32))
        cells = []
        for impl in ("xla", "patches", "winograd"):
            if impl == "winograd" and stride != 1:
                cells.append(f"{'-':>14}")
                continue
            loss = functools.partial(weighted_output, impl, stride)
            grad = jax.jit(jax.grad(loss, argnums=(0, 1) if cin > 3 else 1))
            t = time.perf_counter()
            compiled = grad.lower(x, k, g).compile()
            compile_s = time.perf_counter() - t
            cells.append(f"{time_call(compiled, x, k, g):7.3f} ({compile_s:4.2f})")
        auto = ConvLowering().choose(3, stride, cin, cout, out)
        print(f"{text:>16} | {' | '.join(cells)} | {auto}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

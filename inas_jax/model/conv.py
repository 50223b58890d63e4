"""Convolution lowerings: how the network's convolutions are computed, and the rule that picks one.

Every lowering computes the same function up to float rounding: XLA's convolution, a patch GEMM
(`conv_patches`) or Winograd F(2x2, 3x3) (`inas_jax.winograd`). `ConvLowering` holds the choice and
is the network's conv factory (`GridResNet.conv`), as flax's ResNet example injects `conv: ModuleDef`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from inas_jax.model.winograd import conv3x3_winograd

from inas_jax.config import CONV_IMPLS, PATCH_MAX_SIZE, XLA_MAX_CHANNELS  # noqa: F401  (the rule's constants)
# conv_impl="auto" on the CPU: Winograd from 16 input channels and 2x2 outputs (in effect from 17 input
# channels, or 16 into more outputs, since XLA takes the narrower ones). Below, the transforms cost
# about what they save (8 channels: 0.96-1.34x the patch GEMM's time); a 1x1 output is padded to one
# 2x2 tile, 2.5x slower.
WINOGRAD_MIN_CHANNELS = 16

_conv_init = nn.initializers.he_normal()


@dataclasses.dataclass(frozen=True)
class ConvLowering:
    """How `Conv` computes a convolution, and the factory of the network's `Conv` modules.

    impl: "xla" (lax.conv), "patches" (conv_patches), "winograd" (conv3x3_winograd for 3x3 stride-1
    convs, patches for the others) or "auto". On the CPU, auto takes XLA for narrow stride-1 convs (at
    most `xla_max_channels` channels in and out, outputs of at least 2x2), Winograd for the other 3x3
    stride-1 convs with at least WINOGRAD_MIN_CHANNELS input channels and outputs of at least 2x2 when
    `winograd` is set, else patches where they beat XLA's convolution (output at most
    `patch_max_size` pixels a side, or <= 4 input channels), else XLA; on accelerators always XLA.
    Forward plus backward at batch 128 on a 2-core CPU (experiments/bench_conv.py): a 16x16x16 conv
    takes 5.2 ms with XLA, 8.6 with Winograd and 11.7 as a patch GEMM, the 3-channel stem into 16
    channels at 32x32 3.8 ms with XLA and 6.6 as a patch GEMM; from 32 channels XLA's convolution falls
    behind (8x8x32: 4.0 ms, Winograd 2.8) and collapses at small sizes (2x2x128: 11.3 ms, Winograd 1.7,
    patches 1.9). At width 64 a Winograd conv takes 0.5-0.75x the patch GEMM's time. Frozen and hashable, so a model that
    holds it is a valid jit static argument.
    """

    impl: str = "auto"
    patch_max_size: int = PATCH_MAX_SIZE
    winograd: bool = True
    xla_max_channels: int = XLA_MAX_CHANNELS

    def __post_init__(self):
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl={self.impl!r} is unknown: choose one of {', '.join(CONV_IMPLS)}")

    def __call__(self, features: int, kernel_size: int, stride: int = 1, dtype: Any = jnp.float32,
                 name: str | None = None) -> "Conv":
        """A `Conv` module computed with this lowering."""
        return Conv(features, kernel_size, stride, dtype, self, name=name)

    def choose(self, kernel_size: int, stride: int, in_channels: int, out_channels: int, out_size: int) -> str:
        """The lowering ("xla", "patches" or "winograd") of one convolution on this backend."""
        winograd_fits = kernel_size == 3 and stride == 1
        impl = self.impl
        if impl == "auto":
            if jax.default_backend() != "cpu":
                return "xla"
            if (kernel_size > 1 and stride == 1 and max(in_channels, out_channels) <= self.xla_max_channels
                    and out_size >= 2):
                return "xla"
            if self.winograd and winograd_fits and in_channels >= WINOGRAD_MIN_CHANNELS and out_size >= 2:
                return "winograd"
            return "patches" if out_size <= self.patch_max_size or in_channels <= 4 else "xla"
        if impl == "winograd" and not winograd_fits:
            return "patches"
        return impl


def conv_patches(x: jax.Array, kernel: jax.Array, stride: int, pad: int) -> jax.Array:
    """A convolution as patch extraction + one matmul (im2col). x (B, H, W, Cin), kernel (k, k, Cin, Cout).

    XLA:CPU's convolution collapses at small spatial size with many channels (a 2x2x512 3x3 conv
    runs ~50x slower than this GEMM); the result is the same convolution up to float rounding.
    """
    k, _, cin, cout = kernel.shape
    b, h, w, _ = x.shape
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = [x[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride, :]
            for i in range(k) for j in range(k)]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, -1)
    out = patches.reshape(b * ho * wo, k * k * cin) @ kernel.reshape(k * k * cin, cout)
    return out.reshape(b, ho, wo, cout)


def convolve(impl: str, x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """x (B, H, W, Cin) convolved with kernel (k, k, Cin, Cout), padding (k-1)/2, computed by `impl`
    ("xla", "patches" or "winograd", as ConvLowering.choose names it)."""
    pad = (kernel.shape[0] - 1) // 2
    if impl == "winograd":
        return conv3x3_winograd(x, kernel)
    if impl == "patches":
        return conv_patches(x, kernel, stride, pad)
    return jax.lax.conv_general_dilated(x, kernel, (stride,) * 2, [(pad, pad)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """k x k convolution with bias, padding (k-1)/2, He-normal init: nn.Conv's parameters and result,
    computed as `lowering` chooses."""

    features: int
    kernel_size: int
    stride: int = 1
    dtype: Any = jnp.float32
    lowering: ConvLowering = ConvLowering()

    @nn.compact
    def __call__(self, x):
        k, cin = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", _conv_init, (k, k, cin, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        pad = (k - 1) // 2
        out_size = (min(x.shape[1], x.shape[2]) + 2 * pad - k) // self.stride + 1
        impl = self.lowering.choose(k, self.stride, cin, self.features, out_size)
        return convolve(impl, x, kernel, self.stride) + bias.astype(self.dtype)

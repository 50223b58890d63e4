"""The A(B, i, j) ResNet search space of active-iNAS: architectures, the iNAS neighbour rule, the model.

A(i, j) has j stacks of i basic blocks each (SPEC.md). Stack s (1-based) has width
`width * 2**(s-1)`; its first block has stride 2 when s >= 2, with a 1x1 stride-2 conv + BN
projection shortcut. The head is global average pool -> dropout (embedding only) -> dense.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from inas_jax.winograd import conv3x3_winograd

MAX_BLOCKS = 12
MAX_STACKS = 5


@dataclasses.dataclass(frozen=True, order=True)
class Arch:
    """One point A(blocks, stacks) of the search grid; blocks in 1..12, stacks in 1..5."""

    blocks: int
    stacks: int

    def __post_init__(self):
        if not (1 <= self.blocks <= MAX_BLOCKS and 1 <= self.stacks <= MAX_STACKS):
            raise ValueError(
                f"Arch({self.blocks}, {self.stacks}) is outside the grid: blocks must be in "
                f"1..{MAX_BLOCKS} and stacks in 1..{MAX_STACKS}")

    def __str__(self) -> str:
        return f"A({self.blocks},{self.stacks})"

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """Parses "2,4" (or "2x4", "A(2,4)") into Arch(2, 4); raises ValueError naming the text."""
        cleaned = text.strip().removeprefix("A(").removesuffix(")").replace("x", ",")
        parts = [p for p in cleaned.split(",") if p.strip()]
        try:
            blocks, stacks = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"cannot parse architecture {text!r}: expected BLOCKS,STACKS such as 2,4") from None
        return cls(blocks, stacks)


def neighbours(arch: Arch) -> list[Arch]:
    """The iNAS candidates of `arch`: itself, one more block per stack, one more stack.

    Deeper: A(i+1, j) if i < 12. Wider: A(floor(i*j/(j+1)) + 1, j+1) if j < 5, which keeps
    the total number of blocks roughly constant while adding a stack. The current
    architecture comes first, so ties in score keep it (the search stops there).
    """
    out = [arch]
    if arch.blocks < MAX_BLOCKS:
        out.append(Arch(arch.blocks + 1, arch.stacks))
    if arch.stacks < MAX_STACKS:
        out.append(Arch(arch.blocks * arch.stacks // (arch.stacks + 1) + 1, arch.stacks + 1))
    return out


def num_params(arch: Arch, num_classes: int, width: int = 64, in_channels: int = 3) -> int:
    """Trainable parameters of A(arch) in closed form: conv kernels+biases, BN scale+offset, dense."""
    def conv(cin, cout, k):
        return k * k * cin * cout + cout

    def bn(c):
        return 2 * c

    total = conv(in_channels, width, 3) + bn(width)
    cin = width
    for s in range(arch.stacks):
        cout = width * 2 ** s
        for b in range(arch.blocks):
            total += conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
            if s > 0 and b == 0:
                total += conv(cin, cout, 1) + bn(cout)
            cin = cout
    return total + cin * num_classes + num_classes


def dropout(embedding: jax.Array, key: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout of the embedding (N, D) with an explicit key; identity when rate == 0.

    The model and the head-only MC-dropout path both call this, so the same key drops the same units.
    """
    if key is None or rate == 0.0:
        return embedding
    keep = jax.random.bernoulli(key, 1.0 - rate, embedding.shape)
    return jnp.where(keep, embedding / (1.0 - rate), 0.0).astype(embedding.dtype)


def head_logits(params: Any, embedding: jax.Array) -> jax.Array:
    """The dense head alone: logits (N, C) of embeddings (N, D), with the model's `head` params."""
    head = params["head"]
    return embedding @ head["kernel"] + head["bias"]


_conv_init = nn.initializers.he_normal()
CONV_IMPLS = ("auto", "xla", "patches", "winograd")
PATCH_MAX_SIZE = 16  # conv_impl="auto" on the CPU: patch GEMMs for outputs up to 16x16
# conv_impl="auto" on the CPU: Winograd from 16 input channels and 2x2 outputs. Below, the transforms
# cost about what they save (8 channels: 0.96-1.34x the patch GEMM's time); a 1x1 output is padded
# to one 2x2 tile, 2.5x slower.
WINOGRAD_MIN_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class ConvLowering:
    """How `Conv` computes a convolution; every choice is the same function up to float rounding.

    impl: "xla" (lax.conv), "patches" (conv_patches), "winograd" (conv3x3_winograd for 3x3 stride-1
    convs, patches for the others) or "auto". On the CPU, auto takes Winograd for 3x3 stride-1 convs
    with at least WINOGRAD_MIN_CHANNELS input channels and outputs of at least 2x2 when `winograd` is
    set, else patches where they beat XLA's convolution (output at most `patch_max_size` pixels a
    side, or <= 4 input channels), else XLA; on accelerators always XLA. At width 64 and batch 128 on
    a 2-core CPU, a Winograd conv's forward plus backward takes 0.5-0.75x the patch GEMM's time, and
    patches take ~0.9x XLA's at 16x16 and 8x8 and ~1/50 at 2x2.
    """

    impl: str = "auto"
    patch_max_size: int = PATCH_MAX_SIZE
    winograd: bool = True

    def __post_init__(self):
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl={self.impl!r} is unknown: choose one of {', '.join(CONV_IMPLS)}")

    def choose(self, kernel_size: int, stride: int, in_channels: int, out_size: int) -> str:
        """The lowering ("xla", "patches" or "winograd") of one convolution on this backend."""
        winograd_fits = kernel_size == 3 and stride == 1
        impl = self.impl
        if impl == "auto":
            if jax.default_backend() != "cpu":
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


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """3x3 max-pool, stride 2, SAME padding (as nn.max_pool) of x (B, H, W, C), computed separably:
    a max over 3 strided row slices, then over 3 strided column slices.

    Same values as XLA's reduce_window; its gradient is cheap selects instead of select_and_scatter
    (2.4x faster fwd+bwd at 128x32x32x64 on the CPU).
    """
    (pt, pb), (pl, pr) = jax.lax.padtype_to_pads(x.shape[1:3], (3, 3), (2, 2), "SAME")
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
    ho, wo = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    rows = [x[:, i:i + 2 * (ho - 1) + 1:2] for i in range(3)]
    x = jnp.maximum(jnp.maximum(rows[0], rows[1]), rows[2])
    cols = [x[:, :, j:j + 2 * (wo - 1) + 1:2] for j in range(3)]
    return jnp.maximum(jnp.maximum(cols[0], cols[1]), cols[2])


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
        impl = self.lowering.choose(k, self.stride, cin, out_size)
        if impl == "winograd":
            y = conv3x3_winograd(x, kernel)
        elif impl == "patches":
            y = conv_patches(x, kernel, self.stride, pad)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (self.stride,) * 2, [(pad, pad)] * 2,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU."""

    features: int
    stride: int
    dtype: Any = jnp.float32
    lowering: ConvLowering = ConvLowering()

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda f, k, s, name: Conv(f, k, s, self.dtype, self.lowering, name=name)  # noqa: E731
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name)
        y = nn.relu(norm("bn1")(conv(self.features, 3, self.stride, "conv1")(x)))
        y = norm("bn2")(conv(self.features, 3, 1, "conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = norm("proj_bn")(conv(self.features, 1, self.stride, "proj_conv")(x))
        return nn.relu(y + x)


class GridResNet(nn.Module):
    """A(blocks, stacks) of SPEC.md. Input (N, H, W, C) float, normalised; H, W >= 1.

    Returns (logits (N, num_classes) float32, embedding (N, width * 2**(stacks-1)) float32).
    Dropout acts on the embedding only, with an explicit `dropout_key`; rate 0 when training.
    `dtype` is the compute dtype (bfloat16 on accelerators); parameters stay float32.
    `lowering` chooses how convolutions are computed (`ConvLowering`); every choice gives the same
    function up to float rounding.
    """

    arch: Arch
    num_classes: int
    width: int = 64
    dtype: Any = jnp.float32
    lowering: ConvLowering = ConvLowering()

    @nn.compact
    def __call__(self, x, train: bool = False, dropout_key=None, dropout_rate: float = 0.0):
        x = x.astype(self.dtype)
        x = Conv(self.width, 3, 1, self.dtype, self.lowering, name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_bn")(x)
        x = max_pool_3x3_s2(nn.relu(x))
        for s in range(self.arch.stacks):
            for b in range(self.arch.blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                x = BasicBlock(self.width * 2 ** s, stride, self.dtype, self.lowering,
                               name=f"stack{s + 1}_block{b + 1}")(x, train)
        embedding = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        dropped = dropout(embedding, dropout_key, dropout_rate)
        logits = nn.Dense(self.num_classes, name="head")(dropped)
        return logits, embedding

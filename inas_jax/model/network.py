"""The network: the A(blocks, stacks) grid ResNet (flax linen) and `Model`, the network together with
the normalisation of the data it is trained on, which training, inference and queries share.

The search space (`Arch`, neighbours, sizes) is in `search_space`; how convolutions are computed in
`conv`. Stack s (1-based) has width `width * 2**(s-1)`; its first block has stride 2 when s >= 2,
with a 1x1 stride-2 conv + BN projection shortcut. The head is global average pool -> dropout
(embedding only) -> dense.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from inas_jax.model.conv import ConvLowering
from inas_jax.model.search_space import Arch


def dropout(embedding: jax.Array, key: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout of the embedding (N, D) with an explicit key; identity when rate == 0.

    The model and the head-only MC-dropout path both call this, so the same key drops the same units.
    """
    if key is None or rate == 0.0:
        return embedding
    keep = keep_mask(key, 1.0 - rate, embedding.shape)
    return jnp.where(keep, embedding / (1.0 - rate), 0.0).astype(embedding.dtype)


def keep_mask(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
    """Independent Bernoulli(p) booleans of `shape`. For p = 0.5 (the paper's MC-dropout) each is one
    bit of a random uint32 word, 32 per word: ~5x cheaper than a uniform draw per element, which is
    most of the cost of 100 MC passes over a pool."""
    if p != 0.5:
        return jax.random.bernoulli(key, p, shape)
    size = math.prod(shape)
    words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return bits.reshape(-1)[:size].reshape(shape).astype(bool)


def head_logits(head: Any, embedding: jax.Array) -> jax.Array:
    """The dense head alone: logits (N, C) of embeddings (N, D), with the `head` params {kernel, bias}."""
    return embedding @ head["kernel"] + head["bias"]


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


class BasicBlock(nn.Module):
    """ResNet v1 basic block: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU."""

    features: int
    stride: int
    dtype: Any = jnp.float32
    conv: Any = ConvLowering()  # conv factory: (features, kernel_size, stride, dtype, name) -> module

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.BatchNorm(  # noqa: E731
            use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name)
        y = nn.relu(norm("bn1")(self.conv(self.features, 3, self.stride, self.dtype, name="conv1")(x)))
        y = norm("bn2")(self.conv(self.features, 3, 1, self.dtype, name="conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = norm("proj_bn")(self.conv(self.features, 1, self.stride, self.dtype, name="proj_conv")(x))
        return nn.relu(y + x)


class GridResNet(nn.Module):
    """A(blocks, stacks). Input (N, H, W, C) float, normalised; H, W >= 1.

    Returns (logits (N, num_classes) float32, embedding (N, width * 2**(stacks-1)) float32).
    Dropout acts on the embedding only, with an explicit `dropout_key`. `dtype` is the compute dtype
    (bfloat16 on accelerators); parameters stay float32. `conv` builds the convolutions (a hashable
    factory, by default `ConvLowering()`); every lowering gives the same function up to float rounding.
    """

    arch: Arch
    num_classes: int
    width: int = 64
    dtype: Any = jnp.float32
    conv: Any = ConvLowering()

    @nn.compact
    def __call__(self, x, train: bool = False, dropout_key=None, dropout_rate: float = 0.0):
        x = x.astype(self.dtype)
        x = self.conv(self.width, 3, 1, self.dtype, name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_bn")(x)
        x = max_pool_3x3_s2(nn.relu(x))
        for s in range(self.arch.stacks):
            for b in range(self.arch.blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                x = BasicBlock(self.width * 2 ** s, stride, self.dtype, self.conv,
                               name=f"stack{s + 1}_block{b + 1}")(x, train)
        embedding = jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
        dropped = dropout(embedding, dropout_key, dropout_rate)
        logits = nn.Dense(self.num_classes, name="head")(dropped)
        return logits, embedding


def normalise(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8-valued images (B, H, W, C) -> float32 with per-channel train statistics (C,)."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


@flax.struct.dataclass
class Model:
    """A network and the normalisation of its data: built once per training, passed to everything
    that runs it. A pytree: `module` and `dropout` are static (part of the jit cache key), the
    statistics are arrays.

    module: the GridResNet; mean, std: (C,) float32 per-channel statistics of the train images in
    [0, 1]; dropout: training-time dropout rate on the embedding (0 in the paper's setting).
    """

    module: GridResNet = flax.struct.field(pytree_node=False)
    mean: jax.Array
    std: jax.Array
    dropout: float = flax.struct.field(pytree_node=False, default=0.0)

    @property
    def arch(self) -> Arch:
        return self.module.arch

    def init(self, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
        """Fresh variables {params, batch_stats} (He-normal weights from `key`) for images (H, W, C)."""
        if isinstance(key, jax.core.Tracer):  # under eval_shape or an outer jit: part of that computation
            return _fresh_variables(self.module, key, tuple(image_shape))
        return _compiled_init(self.module, tuple(image_shape), jax.default_backend())(key)

    def apply(self, variables: dict, images: jax.Array, train: bool = False, **kwargs):
        """The network on uint8-valued images (B, H, W, C), normalised here; kwargs go to flax's apply
        (mutable, dropout_key, dropout_rate). Returns what GridResNet returns."""
        return self.module.apply(variables, normalise(images, self.mean, self.std), train=train, **kwargs)


def _fresh_variables(module: GridResNet, key: jax.Array, image_shape: tuple[int, ...]) -> dict:
    """flax's init of `module` on one zero image (1, *image_shape): {params, batch_stats}."""
    return module.init(key, jnp.zeros((1, *image_shape), jnp.float32))


# XLA options of the initialisation's executable on the CPU. It runs once per training but, with one
# random draw per parameter, takes as long to compile as the train step at full optimisation; LLVM's
# level 1 compiles it 3-5x faster with the same values (tested; level 0 changes them).
INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 1}}


@functools.lru_cache(maxsize=64)
def _compiled_init(module: GridResNet, image_shape: tuple[int, ...], backend: str):
    """The jitted, compiled `module.init(key, zeros (1, *image_shape))`, once per module and shape."""
    init = jax.jit(lambda key: _fresh_variables(module, key, image_shape))
    return init.lower(jax.random.key(0)).compile(compiler_options=INIT_COMPILER_OPTIONS.get(backend, {}))


def build_model(arch: Arch, num_classes: int, cfg, stats: tuple[np.ndarray, np.ndarray]) -> Model:
    """The Model of `arch` as configured by cfg (a config.ModelConfig), for data with channel
    statistics stats = (mean (C,), std (C,))."""
    module = GridResNet(arch, num_classes, cfg.width, jnp.dtype(cfg.compute_dtype),
                        ConvLowering(cfg.conv_impl, cfg.patch_max_size, cfg.winograd, cfg.xla_max_channels))
    return Model(module, np.asarray(stats[0], np.float32), np.asarray(stats[1], np.float32), cfg.dropout)


def forward_flops(arch: Arch, num_classes: int, width: int, image_shape: tuple[int, ...] = (32, 32, 3)) -> float:
    """FLOPs of one image's inference pass as XLA counts them for the plain-convolution network (direct
    convolutions, not Winograd). A training step costs about 3x this per image (backward ~2x forward)."""
    module = GridResNet(arch, num_classes, width, conv=ConvLowering("xla"))
    variables = jax.eval_shape(lambda: _fresh_variables(module, jax.random.key(0), image_shape))
    forward = jax.jit(lambda v, x: module.apply(v, x)[0])
    return float(forward.lower(variables, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
                 .compile().cost_analysis()["flops"])

import functools
from unittest import mock

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inas_jax.model.conv import XLA_MAX_CHANNELS, Conv, ConvLowering
from inas_jax.model.network import GridResNet, dropout, head_logits
from inas_jax.model.search_space import Arch, neighbours, num_params

from conftest import init_variables, normal

# Trainable parameters at width 64 (the paper's counts).
PAPER_COUNTS = [((1, 1), 10, 76_682), ((1, 2), 10, 307_850), ((2, 2), 10, 677_642), ((2, 3), 10, 2_779_914),
               ((2, 4), 10, 11_178_762), ((12, 5), 10, 296_285_194), ((2, 4), 100, 11_224_932)]


def _count_module_params(arch, classes, width=64, shape=(1, 32, 32, 3)):
    variables = jax.eval_shape(lambda: GridResNet(arch, classes, width).init(jax.random.key(0), jnp.zeros(shape)))
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("grid,classes,expected", PAPER_COUNTS)
def test_param_counts_match_spec(grid, classes, expected):
    arch = Arch(*grid)
    assert num_params(arch, classes) == expected
    assert _count_module_params(arch, classes) == expected


def test_param_count_other_width_and_channels():
    arch = Arch(3, 3)
    assert num_params(arch, 7, width=8, in_channels=1) == _count_module_params(arch, 7, 8, (1, 8, 8, 1))


def test_neighbours_spec_examples():
    assert neighbours(Arch(1, 1)) == [Arch(1, 1), Arch(2, 1), Arch(1, 2)]
    assert neighbours(Arch(2, 3)) == [Arch(2, 3), Arch(3, 3), Arch(2, 4)]


def test_neighbours_grid_edges():
    assert neighbours(Arch(12, 5)) == [Arch(12, 5)]
    assert neighbours(Arch(12, 2)) == [Arch(12, 2), Arch(9, 3)]
    assert neighbours(Arch(3, 5)) == [Arch(3, 5), Arch(4, 5)]
    for b in range(1, 13):
        for s in range(1, 6):
            for n in neighbours(Arch(b, s)):  # monotone: never fewer stacks, never smaller depth at equal stacks
                assert n.stacks >= s and (n.stacks > s or n.blocks >= b)


@pytest.mark.parametrize("bad", [(0, 1), (13, 1), (1, 0), (1, 6), (-1, 2)])
def test_arch_outside_grid_is_refused(bad):
    with pytest.raises(ValueError, match="outside the grid"):
        Arch(*bad)


def test_arch_parse():
    assert Arch.parse("2,4") == Arch(2, 4) == Arch.parse("A(2,4)") == Arch.parse("2x4")
    with pytest.raises(ValueError, match="cannot parse"):
        Arch.parse("resnet18")


def test_forward_small_one_channel_inputs_past_1x1():
    """8x8 digits through 5 stacks: spatial size reaches 1x1 at stack 3 and must stay valid."""
    model = GridResNet(Arch(1, 5), 10, width=4)
    x = jnp.ones((3, 8, 8, 1))
    variables = init_variables(model, jax.random.key(0), x)
    logits, emb = jax.jit(model.apply)(variables, x)
    assert logits.shape == (3, 10) and emb.shape == (3, 4 * 16)
    assert np.isfinite(np.asarray(logits)).all()


def test_dropout_only_on_embedding_and_head_matches():
    model = GridResNet(Arch(1, 2), 10, width=4)
    x = normal((5, 16, 16, 3), seed=1)
    variables = init_variables(model, jax.random.key(0), x)
    key = jax.random.key(7)
    # both passes in one program (one compilation, not one per operation)
    (det_logits, emb), (drop_logits, drop_emb) = jax.jit(lambda v, x, k: (
        model.apply(v, x), model.apply(v, x, dropout_key=k, dropout_rate=0.5)))(variables, x, key)
    np.testing.assert_allclose(head_logits(variables["params"]["head"], emb), det_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(drop_emb, emb)  # the embedding itself is never dropped
    assert not np.allclose(drop_logits, det_logits)
    np.testing.assert_allclose(head_logits(variables["params"]["head"], dropout(emb, key, 0.5)), drop_logits,
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
    model = GridResNet(Arch(1, 1), 10, width=4, dtype=jnp.bfloat16)
    x = jnp.ones((2, 8, 8, 3))
    variables = init_variables(model, jax.random.key(0), x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
    logits, emb = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 10) and emb.dtype == jnp.float32


def _plain_flax_conv(features, kernel_size, stride=1, dtype=jnp.float32, name=None):
    pad = (kernel_size - 1) // 2
    return flax.linen.Conv(features, (kernel_size,) * 2, (stride,) * 2, padding=[(pad, pad)] * 2, dtype=dtype,
                           name=name)


def _loss_and_grads(model, variables, x, y):
    def loss_fn(params):
        (logits, _), updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                           train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates
    (loss, updates), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
    return loss, grads, updates


@functools.lru_cache(maxsize=None)
def _batch():
    """32 images of 16x16x3 (enough samples for well-conditioned BN at 1x1) and their labels."""
    return normal((32, 16, 16, 3), seed=1), jnp.arange(32) % 10


def _shapes(tree):
    return jax.tree.structure(tree), [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(tree)]


@functools.lru_cache(maxsize=None)
def _plain_flax(grid):
    """(variables, (loss, gradients, BN statistics)) of the width-8 network `grid` built from flax's own
    conv and max-pool: the reference every lowering of `grid` is held to, computed once."""
    from inas_jax.model import network as models
    x, y = _batch()
    with mock.patch.object(models, "max_pool_3x3_s2", lambda h: flax.linen.max_pool(h, (3, 3), (2, 2), "SAME")):
        plain = GridResNet(Arch(*grid), 10, width=8, conv=_plain_flax_conv)
        variables = init_variables(plain, jax.random.key(0), x)
        return variables, _loss_and_grads(plain, variables, x, y)


@pytest.mark.parametrize("impl", ["auto", "patches", "xla", "winograd"])
@pytest.mark.parametrize("grid", [(1, 1), (1, 5)])
def test_fast_paths_equal_plain_flax_conv_and_pool(impl, grid):
    """Patch-GEMM and Winograd convs and the separable max-pool give plain flax's loss, gradients and
    BN stats (spatial sizes 8, 4, 2 and 1 (odd) with a 16x16 input), from the same variables. A(1,5)
    holds every convolution of A(1,2), A(1,3) and A(1,4) (stacks 1-4 have their channels and sizes), and
    a fifth stack whose stride-2 convolutions see a 1x1 input; a second block of a stack repeats the
    shape of the first block's second convolution, so A(2,K) adds no convolution to lower."""
    x, y = _batch()
    variables, want = _plain_flax(grid)
    fast = GridResNet(Arch(*grid), 10, width=8, conv=ConvLowering(impl))
    assert _shapes(jax.eval_shape(fast.init, jax.random.key(0), x)) == _shapes(variables)  # the same parameters
    got = _loss_and_grads(fast, variables, x, y)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    # conv biases feeding BN have mathematically zero gradients: compare on the whole gradient's scale
    scale = max(float(np.abs(w).max()) for w in jax.tree.leaves(want[1]))
    for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-5 * scale)
    for g, w in zip(jax.tree.leaves(got[2]), jax.tree.leaves(want[2])):  # BN running statistics
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_max_pool_matches_reduce_window_on_odd_and_tiny_inputs():
    from inas_jax.model.network import max_pool_3x3_s2
    for shape in [(2, 32, 32, 3), (2, 7, 9, 1), (1, 1, 1, 4), (3, 2, 2, 5)]:
        x = normal(shape)
        np.testing.assert_array_equal(max_pool_3x3_s2(x), flax.linen.max_pool(x, (3, 3), (2, 2), "SAME"))


def _lowered_ops(module, x) -> str:
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    return str(jax.make_jaxpr(module.apply)(variables, x))


@pytest.mark.parametrize("patch_max_size, lowered_by_xla", [(16, False), (8, True), (4, True)])
def test_auto_lowering_uses_patch_gemms_up_to_patch_max_size(patch_max_size, lowered_by_xla):
    """Without Winograd, conv_impl=auto on the CPU runs a 16x16-output conv as a patch GEMM iff
    patch_max_size >= 16."""
    jaxpr = _lowered_ops(Conv(32, 3, 1, lowering=ConvLowering("auto", patch_max_size, winograd=False)),
                         jnp.ones((2, 16, 16, 32)))
    assert ("conv_general_dilated" in jaxpr) == lowered_by_xla
    assert "custom_vjp" not in jaxpr


def test_auto_lowering_uses_winograd_for_3x3_stride_1_convs_only():
    """The default on the CPU: Winograd for 3x3 stride-1 convs with >= 16 input channels, more than 16
    channels in or out and >= 2x2 outputs; patches for strided, 1x1, wide-output stem and 1x1-output
    convs; XLA's for none of these."""
    x = jnp.ones((2, 16, 16, 16))
    assert "custom_vjp" in _lowered_ops(Conv(32, 3, 1), x)
    for conv, inputs in [(Conv(8, 3, 2), x), (Conv(8, 1, 1), x), (Conv(32, 3, 1), jnp.ones((2, 16, 16, 3))),
                         (Conv(32, 3, 1), jnp.ones((2, 1, 1, 16)))]:
        jaxpr = _lowered_ops(conv, inputs)
        assert "custom_vjp" not in jaxpr and "conv_general_dilated" not in jaxpr
    assert ConvLowering().choose(3, 1, 64, 64, 32) == "winograd"
    assert ConvLowering("winograd").choose(3, 2, 64, 128, 8) == "patches"  # Winograd F(2x2,3x3) is stride 1
    assert ConvLowering("xla").choose(3, 1, 64, 64, 8) == "xla"
    assert ConvLowering(winograd=False).choose(3, 1, 64, 64, 32) == "xla"


@pytest.mark.parametrize("cin, cout, size", [(16, 16, 16), (3, 16, 32), (1, 8, 8), (16, 16, 2), (8, 8, 4)])
def test_auto_lowering_gives_narrow_stride_1_convs_to_xla(cin, cout, size):
    """Stride-1 convs with at most 16 channels in and out and >= 2x2 outputs (the width-16 network's
    first stack and stem, the digits network) run as XLA's convolution: fastest there on the CPU."""
    assert "conv_general_dilated" in _lowered_ops(Conv(cout, 3, 1), jnp.ones((2, size, size, cin)))
    assert ConvLowering().choose(3, 1, cin, cout, size) == "xla"
    assert ConvLowering().choose(3, 1, cin, 2 * XLA_MAX_CHANNELS, size) != "xla"
    assert ConvLowering().choose(3, 2, cin, cout, size) != "xla"  # strided: patches
    assert ConvLowering().choose(3, 1, cin, cout, 1) != "xla"


def test_the_plateau_preset_builds_the_network_its_study_ran_with():
    """cifar_plateau's xla_max_channels=0 reaches the model: its width-16 CIFAR network has no XLA
    convolution (stem as a patch GEMM, first stack by Winograd); the default's has."""
    from inas_jax.config import from_preset
    from inas_jax.model.network import build_model
    stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
    for settings, has_xla in [({}, False), ({"xla_max_channels": 16}, True)]:
        module = build_model(Arch(1, 2), 10, from_preset("cifar_plateau", "cifar10", **settings).model, stats).module
        jaxpr = _lowered_ops(module, jnp.zeros((2, 32, 32, 3)))
        assert ("conv_general_dilated" in jaxpr) == has_xla
        assert "custom_vjp" in jaxpr  # Winograd for the second stack's 32-channel convs either way


def test_unknown_conv_impl_is_refused():
    with pytest.raises(ValueError, match="conv_impl='im2col' is unknown"):
        ConvLowering("im2col")


@pytest.mark.parametrize("p", [0.5, 0.8])
def test_keep_mask_is_bernoulli_p_and_independent(p):
    """One-bit masks (p = 0.5) and uniform-draw masks alike: the right rate, uncorrelated neighbours
    (bit k and bit k+1 of a word, and across words), different per key, any shape."""
    from inas_jax.model.network import keep_mask
    mask = np.asarray(keep_mask(jax.random.key(0), p, (4000, 50)))
    assert mask.shape == (4000, 50) and mask.dtype == bool
    assert abs(mask.mean() - p) < 0.01
    flat = mask.reshape(-1).astype(float)
    for lag in (1, 31, 32, 33):
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < 0.01
    assert (np.asarray(keep_mask(jax.random.key(1), p, (4000, 50))) != mask).mean() > 0.3
    assert keep_mask(jax.random.key(0), p, (3, 5, 7)).shape == (3, 5, 7)


def test_init_compiled_at_a_lower_optimisation_level_gives_the_same_variables():
    """Model.init compiles with INIT_COMPILER_OPTIONS (faster) and must equal the plain jitted init. (Its
    traced path, under eval_shape, builds every driver run's checkpoint template.)"""
    from inas_jax.config import ModelConfig
    from inas_jax.model.network import build_model
    stats = (np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    model = build_model(Arch(1, 2), 10, ModelConfig(width=4), stats)
    fast = model.init(jax.random.key(3), (8, 8, 3))
    plain = jax.jit(lambda k: model.module.init(k, jnp.zeros((1, 8, 8, 3))))(jax.random.key(3))
    assert jax.tree.structure(fast) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


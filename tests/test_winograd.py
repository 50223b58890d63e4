"""Winograd F(2x2, 3x3): the convolution, its hand-written backward pass, and each transform's transpose."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inas_jax.model import winograd

from conftest import normal


def _conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(1, 1)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("shape", [(2, 8, 8, 5), (3, 7, 5, 4), (1, 1, 1, 6), (2, 2, 6, 3)])
def test_equals_the_convolution_and_its_gradients(shape):
    """Values and gradients (x and kernel) of the SAME 3x3 convolution, even, odd and 1x1 sizes."""
    x = normal(shape, seed=0)
    kernel = normal((3, 3, shape[-1], 7), seed=1)
    dy = normal(shape[:3] + (7,), seed=2)
    got, got_vjp = jax.vjp(winograd.conv3x3_winograd, x, kernel)
    want, want_vjp = jax.vjp(_conv, x, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_vjp(dy), want_vjp(dy)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_jitted_gradient_matches_under_a_loss():
    x = normal((4, 6, 6, 8), seed=1)
    kernel = normal((3, 3, 8, 8), seed=2, scale=0.1)
    loss = lambda f: (lambda x, k: jnp.sum(jnp.tanh(f(x, k))))  # noqa: E731
    got = jax.jit(jax.grad(loss(winograd.conv3x3_winograd), (0, 1)))(x, kernel)
    want = jax.grad(loss(_conv), (0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform, transpose, shape", [
    (winograd.input_transform, winograd.input_transform_t, (2, 6, 4, 3)),
    (winograd.output_transform, winograd.output_transform_t, (16, 2, 3, 2, 3)),
    (winograd.kernel_transform, winograd.kernel_transform_t, (3, 3, 2, 5)),
])
def test_each_backward_transform_is_the_transpose_of_its_forward(transform, transpose, shape):
    """The hand-written transposes equal autodiff's (which runs 3x slower on XLA:CPU)."""
    primal = normal(shape, seed=3)
    out, vjp = jax.vjp(transform, primal)
    cotangent = normal(out.shape, seed=4)
    np.testing.assert_allclose(transpose(cotangent), vjp(cotangent)[0], rtol=1e-6, atol=1e-5)


def test_refuses_a_kernel_that_is_not_3x3():
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        winograd.conv3x3_winograd(jnp.ones((1, 4, 4, 2)), jnp.ones((5, 5, 2, 2)))

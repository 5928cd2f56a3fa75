"""fast_gelu: its documented error bounds against exact GELU, and its hand-written backward."""

import math

import numpy as np
import pytest

import mlx_hjepa  # noqa: F401  (before mlx.core: BLAS preload)
import mlx.core as mx
import mlx.nn as nn

from mlx_hjepa import _ops
from mlx_hjepa._ops import fast_gelu

CLAMP_X = math.sqrt(_ops.S_CLAMP)  # where the rational part hands over to relu
X = np.concatenate([
    np.linspace(-10, 10, 40001),
    np.linspace(CLAMP_X - 1e-3, CLAMP_X + 1e-3, 101),
    -np.linspace(CLAMP_X - 1e-3, CLAMP_X + 1e-3, 101),
    [-1e4, -60.0, 60.0, 1e4, 0.0],
]).astype(np.float32)
X64 = X.astype(np.float64)
ERF = np.vectorize(math.erf)(X64 / math.sqrt(2))
EXACT = 0.5 * X64 * (1 + ERF)
EXACT_GRAD = 0.5 * (1 + ERF) + X64 * np.exp(-0.5 * X64**2) / math.sqrt(2 * math.pi)


def grad_of(fn, x):
    return mx.grad(lambda t: fn(t).sum())(x)


def test_forward_within_documented_error_of_exact_gelu():
    err = np.abs(np.array(fast_gelu(mx.array(X))) - EXACT).max()
    assert err < 1e-5  # documented: 5.0e-6 measured
    # and clearly better than MLX's tanh approximation, the usual cheap choice
    assert err < np.abs(np.array(nn.gelu_approx(mx.array(X))) - EXACT).max() / 10


def test_backward_within_documented_error_of_exact_derivative():
    err = np.abs(np.array(grad_of(fast_gelu, mx.array(X))) - EXACT_GRAD).max()
    assert err < 1e-4  # documented: 5.9e-5 measured


def test_custom_backward_is_the_derivative_of_the_forward():
    x = mx.array(np.linspace(-7, 7, 2001).astype(np.float32))
    autodiff = grad_of(_ops._gelu_forward, x)  # MLX differentiates the same formula op by op
    assert np.abs(np.array(grad_of(fast_gelu, x)) - np.array(autodiff)).max() < 1e-5


def test_tails_are_relu_and_compiled_matches_eager():
    x = mx.array([-1e4, -30.0, 30.0, 1e4])
    assert np.array_equal(np.array(fast_gelu(x)), [0.0, 0.0, 30.0, 1e4])
    assert np.array_equal(np.array(grad_of(fast_gelu, x)), [0.0, 0.0, 1.0, 1.0])
    h = mx.random.normal((2, 5, 64), key=mx.random.key(0)) * 3
    eager = mx.vjp(fast_gelu, [h], [mx.ones_like(h)])
    compiled = mx.compile(lambda h: mx.vjp(fast_gelu, [h], [mx.ones_like(h)]))(h)
    for a, b in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        assert np.allclose(np.array(a), np.array(b), atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_keeps_shape_and_dtype(dtype):
    h = mx.random.normal((2, 3, 8), key=mx.random.key(1)).astype(dtype)
    out, grad = fast_gelu(h), grad_of(fast_gelu, h)
    assert out.shape == h.shape and out.dtype == dtype and grad.dtype == dtype

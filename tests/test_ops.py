"""fast_gelu: its documented error bounds against exact GELU, and its hand-written backward; the
linear and layer-norm layers whose backward is written for the CPU: same values and gradients as MLX's."""

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


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_mlx_linear_forward_and_gradients(bias):
    from mlx_hjepa.models.vit import Linear

    ours, theirs = Linear(12, 20, bias=bias), nn.Linear(12, 20, bias=bias)
    theirs.update(ours.parameters())
    x = mx.random.normal((3, 5, 12), key=mx.random.key(2))
    target = mx.random.normal((3, 5, 20), key=mx.random.key(3))

    def loss(params, module, x):
        module.update(params)
        return ((module(x) * target) ** 2).sum()

    for module in (ours, theirs):
        assert isinstance(module, nn.Linear)
    np.testing.assert_allclose(np.array(ours(x)), np.array(theirs(x)), rtol=1e-6, atol=1e-6)
    grad_fn = mx.grad(loss, argnums=(0, 2))
    g_ours, gx_ours = grad_fn(ours.parameters(), ours, x)
    g_theirs, gx_theirs = grad_fn(theirs.parameters(), theirs, x)
    assert sorted(g_ours) == sorted(g_theirs) == (["bias", "weight"] if bias else ["weight"])
    for name in g_ours:
        assert g_ours[name].shape == g_theirs[name].shape
        np.testing.assert_allclose(np.array(g_ours[name]), np.array(g_theirs[name]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(gx_ours), np.array(gx_theirs), rtol=1e-5, atol=1e-5)


def test_linear_backward_under_compile_equals_eager():
    w = mx.random.normal((6, 4), key=mx.random.key(4))
    b = mx.random.normal((6,), key=mx.random.key(5))
    x = mx.random.normal((2, 3, 4), key=mx.random.key(6))
    f = mx.grad(lambda w, b, x: mx.tanh(_ops.linear(x, w, b)).sum(), argnums=(0, 1, 2))
    for eager, compiled in zip(f(w, b, x), mx.compile(f)(w, b, x)):
        np.testing.assert_allclose(np.array(eager), np.array(compiled), rtol=1e-6, atol=1e-6)


def _layer_norm_case(seed, shape=(3, 7, 48)):
    keys = mx.random.split(mx.random.key(seed), 4)
    # an offset mean and a spread of scales: the two-pass statistics must not cancel
    x = 5.0 + 3.0 * mx.random.normal(shape, key=keys[0])
    weight = 1.0 + mx.random.normal(shape[-1:], key=keys[1])
    bias = mx.random.normal(shape[-1:], key=keys[2])
    cotangent = mx.random.normal(shape, key=keys[3])
    return x, weight, bias, cotangent


@pytest.mark.parametrize("seed", [0, 1])
def test_layer_norm_matches_mlx_values_and_gradients(seed):
    x, weight, bias, cotangent = _layer_norm_case(seed)
    ours = _ops._layer_norm_fn(1e-6)
    reference = lambda x, w, b: mx.fast.layer_norm(x, w, b, 1e-6)  # noqa: E731
    np.testing.assert_allclose(np.array(ours(x, weight, bias)), np.array(reference(x, weight, bias)),
                               rtol=1e-5, atol=1e-5)
    (_, grads_ours), (_, grads_ref) = (mx.vjp(f, [x, weight, bias], [cotangent]) for f in (ours, reference))
    for name, g, r in zip(("x", "weight", "bias"), grads_ours, grads_ref):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(np.array(g), np.array(r), rtol=1e-4, atol=1e-4, err_msg=name)


def test_layer_norm_compiled_equals_eager_and_cpu_float32_takes_it():
    x, weight, bias, cotangent = _layer_norm_case(2, (2, 5, 16))
    f = lambda x, w, b: mx.vjp(lambda *a: _ops.layer_norm(*a, 1e-6), [x, w, b], [cotangent])  # noqa: E731
    eager, compiled = f(x, weight, bias), mx.compile(f)(x, weight, bias)
    for e, c in zip(eager[0] + eager[1], compiled[0] + compiled[1]):
        np.testing.assert_allclose(np.array(e), np.array(c), rtol=1e-6, atol=1e-6)
    # The dispatch: float32 on the CPU is the matmul version (a different graph, so not bit-equal to
    # mx.fast.layer_norm's), bfloat16 goes to mx.fast.layer_norm unchanged.
    with mx.stream(mx.cpu):
        assert mx.array_equal(_ops.layer_norm(x, weight, bias, 1e-6), _ops._layer_norm_fn(1e-6)(x, weight, bias))
        xb, wb, bb = (a.astype(mx.bfloat16) for a in (x, weight, bias))
        out = _ops.layer_norm(xb, wb, bb, 1e-6)
        assert out.dtype == mx.bfloat16 and mx.array_equal(out, mx.fast.layer_norm(xb, wb, bb, 1e-6))


def test_vit_layer_norm_is_an_nn_layer_norm_with_its_parameters():
    from mlx_hjepa.models.vit import LayerNorm

    ours, theirs = LayerNorm(16, eps=1e-6), nn.LayerNorm(16, eps=1e-6)
    assert isinstance(ours, nn.LayerNorm)
    assert sorted(k for k, _ in ours.parameters().items()) == sorted(k for k, _ in theirs.parameters().items())
    x, weight, bias, _ = _layer_norm_case(3, (4, 16))
    ours.update({"weight": weight, "bias": bias})
    theirs.update({"weight": weight, "bias": bias})
    np.testing.assert_allclose(np.array(ours(x)), np.array(theirs(x)), rtol=1e-5, atol=1e-5)

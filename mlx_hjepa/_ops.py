"""Cheap operations for MLX's CPU backend: a GELU built from multiply/add/divide (what
`model.activation: auto` runs there), a linear layer whose weight gradient arrives in the
weight's own layout, and a layer norm whose reductions are matrix products.

`fast_gelu` is GELU with erf replaced by a rational function: only multiply, add, divide
and comparisons, which `mx.compile` fuses into one vectorisable kernel each way, where
exact GELU runs erf as scalar code on one thread. Its backward is written out (the exact
derivative of the same rational function), so autodiff neither stores nor replays the
dozen intermediate arrays.

Accuracy in fp32 against exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), for any x:
    forward  max |error| 5.0e-6
    backward max |error| 5.9e-5 (against Phi(x) + x * phi(x))
tests/test_ops.py checks both. For scale: MLX's tanh approximation nn.gelu_approx is off by 4.7e-4.

Use it inside a compiled function (the train step is): at ViT-S/16 @ 224, batch 32, GELU
forward+backward under mx.compile took 95 ms against 337 ms for exact GELU on a 2-core
EPYC (benchmarks/cpu_ops.py). Called eagerly under mx.grad it is no faster than nn.gelu,
because MLX runs the inner compiled kernels op by op inside a transformation.
"""

import functools
import math

import mlx.core as mx

# erf(z) ~= z * ERF_P(z^2) / ERF_Q(z^2) for |z| < 4 (erf(4) = 1 - 1.5e-8). Fitted for this module by
# weighted least squares with Lawson reweighting towards the minimax GELU error. ERF_Q's
# coefficients are positive, so it has no poles.
ERF_P = (1.1284908056259155, 0.16929060220718384, 0.051370032131671906, 0.0016947711119428277)
ERF_Q = (1.0, 0.48393714427948, 0.10571065545082092, 0.013263151980936527, 8.526119927410036e-05)
ERF_CLAMP = 4.0

# GELU(x) = x/2 + x erf(x/sqrt2)/2, and x erf(x/sqrt2)/2 is even in x: with s = x^2 it is
# s P(s)/Q(s), and its derivative is x N(s)/Q(s)^2. Beyond the clamp GELU is relu(x).
S_CLAMP = 2 * ERF_CLAMP**2
P = [c / (2 * math.sqrt(2) * 2**i) for i, c in enumerate(ERF_P)]
Q = [c / 2**i for i, c in enumerate(ERF_Q)]


def _polymul(a, b):
    out = [0.0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _polysub(a, b):
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0.0) - (b[i] if i < len(b) else 0.0) for i in range(n)]


# d/dx [s P/Q] = 2x (Q (P + s P') - s P Q') / Q^2, so N = 2 (Q A - s P Q') with A = d(sP)/ds.
_A = [(i + 1) * c for i, c in enumerate(P)]
_dQ = [i * c for i, c in enumerate(Q)][1:]
N = [2 * c for c in _polysub(_polymul(Q, _A), [0.0] + _polymul(P, _dQ))]


def _estrin(coefficients, s):
    """Polynomial in s by Estrin's scheme: shallow graphs fuse into one kernel under mx.compile."""
    terms = list(coefficients)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] * s if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        s = s * s
    return terms[0]


@mx.compile
def _gelu_forward(x):
    s = mx.minimum(x * x, S_CLAMP)
    inside = x * x < S_CLAMP
    return 0.5 * x + mx.where(inside, s * _estrin(P, s) / _estrin(Q, s), 0.5 * mx.abs(x))


@mx.compile
def _gelu_backward(x, cotangent):
    # x^2 as `square`, not `x * x`: inside one compiled step, MLX's compiler merges operations
    # equal to the forward's (same op, same inputs), and a merged value feeds two fused kernels,
    # so it is written out to memory: x * x, the clamp and the comparison became three extra
    # kernels and arrays (1.66x slower at ViT-S/16 @224's MLP width, same values).
    sq = mx.square(x)
    s = mx.minimum(sq, S_CLAMP)
    inside = sq < S_CLAMP
    q = _estrin(Q, s)
    slope = (cotangent * x) * _estrin(N, s) / (q * q) + 0.5 * cotangent
    return mx.where(inside, slope, mx.where(x > 0, cotangent, 0))


@mx.custom_function
def fast_gelu(x):
    """GELU within 5e-6 of exact (fp32), built from multiply/add/divide, with its own backward."""
    return _gelu_forward(x)


@fast_gelu.vjp
def _fast_gelu_vjp(x, cotangent, output):
    return _gelu_backward(x, cotangent)


@mx.custom_function
def linear(x, weight, bias):
    """x @ weight.T + bias, as nn.Linear, with a backward that writes the weight gradient row-major.

    MLX differentiates x @ weight.T through the transpose: the gradient is computed as x^T g,
    shape (in, out), and handed back as a transposed view. Every consumer of it then runs a strided
    loop against the row-major weight (AdamW's moments and update, the gradient norm, the EMA),
    which MLX's CPU backend does not vectorise. Here the same product is computed as g^T x, shape
    (out, in): same FLOPs, BLAS reads the transposed operand in place, and the optimiser's fused
    kernels take their contiguous path (3-4% of the ViT-Ti/16 @96 step on one x86 core).
    """
    return mx.addmm(bias, x, weight.T)


@linear.vjp
def _linear_vjp(primals, cotangent, output):
    x, weight, _ = primals
    g = cotangent.reshape(-1, cotangent.shape[-1])
    return cotangent @ weight, g.T @ x.reshape(-1, x.shape[-1]), g.sum(axis=0)


@functools.cache
def _layer_norm_fn(eps):
    """The float32 layer norm with epsilon `eps`, as an mx.custom_function of (x, weight, bias).

    MLX's CPU backend has no layer norm kernel: mx.fast.layer_norm runs as separate mean and
    variance reductions over the last axis, which its CPU reduction code does as scalar loops, and
    autodiff adds two more reductions in the backward. Here every reduction over the feature axis
    is a product with a column of 1/D, so BLAS does it: forward and backward together 2.4x faster
    than mx.fast.layer_norm at ViT-S/16 @224's shapes (6272 x 384) and 1.35x at ViT-Ti/16 @96's
    (1152 x 192), one core. The statistics are the same two-pass ones (mean, then the mean square
    of x - mean), so the values agree with mx.fast.layer_norm to float32 round-off."""

    def stats(x):
        mean_col = mx.full((x.shape[-1], 1), 1.0 / x.shape[-1], dtype=x.dtype)
        centred = x - x @ mean_col
        return mean_col, centred, mx.rsqrt((centred * centred) @ mean_col + eps)

    @mx.custom_function
    def layer_norm(x, weight, bias):
        _, centred, rstd = stats(x)
        return centred * rstd * weight + bias

    @layer_norm.vjp
    def layer_norm_vjp(primals, cotangent, output):
        x, weight, _ = primals
        mean_col, centred, rstd = stats(x)
        normed = centred * rstd
        g = cotangent * weight
        dx = rstd * (g - g @ mean_col - normed * ((g * normed) @ mean_col))
        # Weight and bias gradients sum over every row: a row of ones times the (rows, D) matrix.
        rows = cotangent.reshape(-1, x.shape[-1])
        ones_row = mx.ones((1, rows.shape[0]), dtype=x.dtype)
        dweight = (ones_row @ (rows * normed.reshape(rows.shape)))[0]
        return dx, dweight, (ones_row @ rows)[0]

    return layer_norm


def layer_norm(x, weight, bias, eps):
    """mx.fast.layer_norm(x, weight, bias, eps) for a layer norm with both weight and bias (shape
    (D,)), with its reductions done by BLAS on MLX's CPU backend for float32 (`_layer_norm_fn`);
    elsewhere (a GPU, another dtype) mx.fast.layer_norm itself, which has fused kernels there."""
    if x.dtype != mx.float32 or mx.default_device().type != mx.DeviceType.cpu:
        return mx.fast.layer_norm(x, weight, bias, eps)
    return _layer_norm_fn(eps)(x, weight, bias)

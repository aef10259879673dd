"""Differentiable primitives: conv2d, maxpool2d, relu, dense, log_softmax, cross_entropy.

Nothing here knows about MNIST or models. Every function takes and returns plain
arrays (or autograd boxes of them) and keeps the input dtype: float32 in, float32 out.

Why primitives. autograd can differentiate ``np.pad``/slicing/``np.max`` compositions,
but their gradients go through ``np.add.at`` and per-element bookkeeping that cost
3-15x more than the arithmetic. Instead, conv2d and maxpool2d are
``autograd.extend.primitive`` functions computed with strided views and one matmul,
and their vector-Jacobian products (VJPs) are written with *other primitives of this
module*. The set

    conv2d(x, w)              y = x (*) w           (cross-correlation, 'valid')
    conv2d_input_grad(g, w)   dx = adjoint of x -> conv2d(x, w), applied to g
    conv2d_weight_grad(g, x)  dw = adjoint of w -> conv2d(x, w), applied to g

is closed under taking VJPs (each one's VJP is written with the other two), so
gradients of any order exist: grad(loss, x) can itself be differentiated w.r.t. the
weights (double backpropagation, Drucker & LeCun 1992). Pooling is the same idea with
``maxpool2d`` / ``_pool_scatter`` / ``_pool_gather``.

Tie conventions follow PyTorch (so input gradients agree with it exactly):
ReLU has derivative 0 at 0; max pooling sends the whole gradient to the *first*
maximal entry of each window, in row-major order.
"""
import numpy as onp
import autograd.numpy as np
from autograd.extend import primitive, defvjp
from autograd.tracer import getval

__all__ = [
    "conv2d", "conv2d_input_grad", "conv2d_weight_grad",
    "maxpool2d", "relu", "dense", "flatten", "log_softmax", "cross_entropy",
    "one_hot",
]


# ---------------------------------------------------------------------------
# Convolution (stride 1, no padding, cross-correlation as in every framework)
# ---------------------------------------------------------------------------

def _im2col(x, kh, kw):
    """(N, C, H, W) -> (N, C*kh*kw, H'*W') patch matrix, channel-major rows (one copy).

    ``as_strided`` is used only here, inside primitives, where autograd never sees it.
    The (C, kh, kw, H', W') order makes the innermost copied run a whole output row.
    """
    n, c, h, w = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    s = x.strides
    win = onp.lib.stride_tricks.as_strided(
        x, shape=(n, c, kh, kw, ho, wo),
        strides=(s[0], s[1], s[2], s[3], s[2], s[3]), writeable=False)
    return onp.ascontiguousarray(win).reshape(n, c * kh * kw, ho * wo)


@primitive
def conv2d(x, w):
    """2-D cross-correlation, stride 1, 'valid' padding.

    x: (N, C, H, W); w: (O, C, kh, kw)  ->  (N, O, H-kh+1, W-kw+1), dtype of x.
    y[n, o, p, q] = sum_{c, i, j} w[o, c, i, j] * x[n, c, p + i, q + j]
    (PyTorch ``F.conv2d`` / Keras ``Conv2D(padding='valid')`` without bias.)
    Computed as one batched matmul (O, CK) @ (N, CK, P) whose result is already NCHW.
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    y = onp.matmul(w.reshape(o, -1), _im2col(x, kh, kw))      # (N, O, P)
    return y.reshape(n, o, h - kh + 1, wd - kw + 1)


@primitive
def conv2d_input_grad(g, w, x_shape):
    """Adjoint of x -> conv2d(x, w): the gradient w.r.t. x given g = dL/dy.

    g: (N, O, H', W'); w: (O, C, kh, kw); x_shape: (N, C, H, W)  ->  (N, C, H, W).
    dx[n, c, p + i, q + j] += sum_o w[o, c, i, j] * g[n, o, p, q]  ("full" correlation).
    """
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    ho, wo = h - kh + 1, wd - kw + 1
    dcols = onp.matmul(w.reshape(o, -1).T, g.reshape(n, o, ho * wo))   # (N, CK, P)
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)
    dx = onp.zeros(x_shape, dtype=onp.result_type(g, w))
    for i in range(kh):          # col2im: 25 shifted adds beat np.add.at by far
        for j in range(kw):
            dx[:, :, i:i + ho, j:j + wo] += dcols[:, :, i, j]
    return dx


@primitive
def conv2d_weight_grad(g, x, w_shape):
    """Adjoint of w -> conv2d(x, w): the gradient w.r.t. w given g = dL/dy.

    g: (N, O, H', W'); x: (N, C, H, W); w_shape: (O, C, kh, kw)  ->  (O, C, kh, kw).
    dw[o, c, i, j] = sum_{n, p, q} g[n, o, p, q] * x[n, c, p + i, q + j]
    """
    o, c, kh, kw = w_shape
    n = x.shape[0]
    cols = _im2col(x, kh, kw)                                  # (N, CK, P)
    dw = onp.matmul(g.reshape(n, o, -1), cols.transpose(0, 2, 1)).sum(axis=0)
    return dw.reshape(w_shape)


# conv2d is bilinear in (x, w); each adjoint is bilinear in its two array arguments.
# <h, conv2d_input_grad(g, w)> = <conv2d(h, w), g>  and
# <h, conv2d_weight_grad(g, x)> = <conv2d(x, h), g>  give every VJP below.
defvjp(conv2d,
       lambda y, x, w: lambda g: conv2d_input_grad(g, w, x.shape),
       lambda y, x, w: lambda g: conv2d_weight_grad(g, x, w.shape))
defvjp(conv2d_input_grad,
       lambda dx, g, w, s: lambda h: conv2d(h, w),
       lambda dx, g, w, s: lambda h: conv2d_weight_grad(g, h, w.shape))
defvjp(conv2d_weight_grad,
       lambda dw, g, x, s: lambda h: conv2d(x, h),
       lambda dw, g, x, s: lambda h: conv2d_input_grad(g, h, x.shape))


# ---------------------------------------------------------------------------
# 2x2 max pooling, stride 2, first-max tie rule
# ---------------------------------------------------------------------------

_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))   # row-major order inside a window


def _first_max_masks(x):
    """Four boolean masks (N, C, H/2, W/2): which entry of each 2x2 window is the first max.

    Exactly one mask is True per window; on ties the earlier entry in row-major order
    wins (PyTorch's choice).
    """
    a, b, c, d = (x[:, :, i::2, j::2] for i, j in _OFFSETS)
    m = onp.maximum(onp.maximum(a, b), onp.maximum(c, d))
    ma = a == m
    taken = ma.copy()
    mb = (b == m) & ~taken
    taken |= mb
    mc = (c == m) & ~taken
    taken |= mc
    return ma, mb, mc, ~taken


def _check_pool_shape(x):
    if x.ndim != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"maxpool2d expects x of shape (N, C, H, W) with even H and W, "
                         f"got {x.shape}")


@primitive
def maxpool2d(x):
    """2x2 max pooling with stride 2.  x: (N, C, H, W), H and W even -> (N, C, H/2, W/2).

    The gradient goes wholly to the first maximal entry of each window (row-major),
    as in PyTorch ``F.max_pool2d``; ``np.max`` would split it among ties.
    """
    _check_pool_shape(x)
    a, b, c, d = (x[:, :, i::2, j::2] for i, j in _OFFSETS)
    return onp.maximum(onp.maximum(a, b), onp.maximum(c, d))


@primitive
def _pool_scatter(g, x):
    """Route g: (N, C, H/2, W/2) to the first-max positions of x: (N, C, H, W)."""
    out = onp.empty(x.shape, dtype=onp.result_type(g, x))
    for mask, (i, j) in zip(_first_max_masks(x), _OFFSETS):
        onp.multiply(g, mask, out=out[:, :, i::2, j::2])
    return out


@primitive
def _pool_gather(h, x):
    """Read h: (N, C, H, W) at the first-max positions of x -> (N, C, H/2, W/2)."""
    out = None
    for mask, (i, j) in zip(_first_max_masks(x), _OFFSETS):
        part = h[:, :, i::2, j::2] * mask
        out = part if out is None else out + part
    return out.astype(onp.result_type(h, x), copy=False)


# The window choice is piecewise constant in x, so the x-derivatives of scatter and
# gather are 0 (None); scatter and gather are each other's adjoint in their first argument.
defvjp(maxpool2d, lambda y, x: lambda g: _pool_scatter(g, x))
defvjp(_pool_scatter, lambda out, g, x: lambda h: _pool_gather(h, x), None)
defvjp(_pool_gather, lambda out, h, x: lambda g: _pool_scatter(g, x), None)


# ---------------------------------------------------------------------------
# Pointwise and dense layers, softmax, loss
# ---------------------------------------------------------------------------

def relu(x):
    """max(x, 0) with derivative exactly 0 at 0 (``np.maximum`` would give 0.5 there)."""
    return x * (getval(x) > 0)


def dense(x, w, b):
    """Affine layer as ``torch.nn.Linear``.  x: (N, I); w: (O, I); b: (O,) -> (N, O)."""
    return np.dot(x, w.T) + b


def flatten(x):
    """(N, C, H, W) -> (N, C*H*W) in C-order, i.e. PyTorch's ``flatten(1)`` order."""
    return np.reshape(x, (x.shape[0], -1))


def log_softmax(z):
    """Row-wise log-softmax with the log-sum-exp shift.  z: (N, K) -> (N, K).

    The shift m = max(z) is a constant for differentiation (its gradient cancels
    exactly), which keeps ties in the max from entering the derivative.
    """
    m = onp.max(getval(z), axis=1, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=1, keepdims=True))


def one_hot(y, k, dtype):
    """Integer labels (N,) -> (N, k) one-hot matrix of the given dtype."""
    out = onp.zeros((len(y), k), dtype=dtype)
    out[onp.arange(len(y)), y] = 1
    return out


def cross_entropy(logits, y):
    """Mean cross-entropy over the batch from logits.  logits: (N, K); y: (N,) int -> scalar.

    L = -(1/N) sum_n log softmax(logits_n)[y_n]  (averaged over examples, not classes).
    """
    logp = log_softmax(logits)
    t = one_hot(y, logits.shape[1], getval(logits).dtype)
    return -np.sum(logp * t) / logits.shape[0]

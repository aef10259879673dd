"""Differentiable primitives: conv2d, maxpool2d, relu, dense, log_softmax, cross_entropy
(and its per-example form).

Nothing here knows about MNIST or models. Every function takes and returns plain
arrays (or autograd boxes of them) and keeps the input dtype: float32 in, float32 out.

Why primitives. autograd can differentiate ``np.pad``/slicing/``np.max`` compositions,
but their gradients go through ``np.add.at`` and per-element bookkeeping that cost
3-15x more than the arithmetic. Instead, conv2d and maxpool2d are
``autograd.extend.primitive`` functions computed with strided views and matmuls,
and their vector-Jacobian products (VJPs) are written with *other primitives of this
module*. The set

    conv2d(x, w)              y = x (*) w           (cross-correlation, 'valid')
    conv2d_input_grad(g, w)   dx = adjoint of x -> conv2d(x, w), applied to g
    conv2d_weight_grad(g, x)  dw = adjoint of w -> conv2d(x, w), applied to g

is closed under taking VJPs (each one's VJP is written with the other two), so
gradients of any order exist: grad(loss, x) can itself be differentiated w.r.t. the
weights (double backpropagation, Drucker & LeCun 1992). Pooling is the same idea with
``_pool_scatter`` / ``_pool_gather``, which route gradients with the first-max masks
computed once in the forward pass.

Tie conventions follow PyTorch (so input gradients agree with it exactly):
ReLU has derivative 0 at 0; max pooling sends the whole gradient to the *first*
maximal entry of each window, in row-major order.
"""
import numpy as onp
import autograd.numpy as np
from autograd.extend import primitive, defvjp, defvjp_argnums
from autograd.tracer import getval, isbox

from .threads import get_threads, map_groups

__all__ = [
    "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "conv_pool",
    "maxpool2d", "relu", "dense", "flatten", "log_softmax", "cross_entropy",
    "per_example_cross_entropy", "one_hot",
]


# ---------------------------------------------------------------------------
# Convolution (stride 1, no padding, cross-correlation as in every framework)
# ---------------------------------------------------------------------------
#
# Speed comes from memory layout only; every output is the same sum of products.
#
# Flat rows. An image channel (H, W) is read as one flat row of H*W values. Output
# pixel (p, q) sits at flat position l = p*W + q and its patch entry (i, j) is
# x_flat[l + i*W + j], so for one kernel offset (i, j) the inputs of *all* output
# pixels are the contiguous slice x_flat[i*W + j : i*W + j + L], L = (H'-1)*W + W'.
# Columns l with l % W >= W' wrap around the row edge: they are computed and dropped
# (W/W' extra multiply-adds: 1.17x for 28->24, 1.5x for 12->8). In exchange every copy
# moves runs of L values instead of W' (24 or 8), 2-3x faster than classic im2col.
#
# Chunks. The full patch matrix is 25x the size of its input (8-12 MB for a batch of
# 128) and would travel through main memory several times. It is built for a few
# images at a time (about _CHUNK_BYTES, well inside the L2 cache) and consumed at once,
# by ONE matrix product per chunk: the chunk's images sit side by side as columns
# (n, l), so BLAS sees a few large products instead of one small product per image
# (which cost 2-4x more in packing and call overhead, the more so without a small-matrix
# kernel). Chunks are independent, which is what :mod:`scratchadv.threads` shares out.
#
# Kernel-column unfolds. The input gradient does not need the full patch matrix:
# unfolding g along kernel columns only (kw shifted copies, 5x instead of 25x) leaves
# the kernel rows as kh shifted adds into dx.

_CHUNK_BYTES = 1 << 21


def _geometry(x_shape, kh, kw):
    """(H', W, W', L) of a 'valid' kh x kw convolution of an (N, C, H, W) input."""
    h, w = x_shape[2], x_shape[3]
    ho, wo = h - kh + 1, w - kw + 1
    return ho, w, wo, (ho - 1) * w + wo


def _chunks(n, item_bytes):
    """(step, [(start, stop), ...]): n images in chunks of about _CHUNK_BYTES of work space.

    ``step`` (the largest chunk, >= 1 even for n = 0) sizes the buffers. The cut depends
    on the shapes only, never on the thread count.
    """
    step = max(1, min(n, _CHUNK_BYTES // max(1, item_bytes)))
    return step, [(a, min(n, a + step)) for a in range(0, n, step)]


def _strided(base, shape, strides):
    """A strided view of the C-contiguous array ``base`` (element 0 at base's start).

    What ``as_strided`` does, through the ``ndarray`` constructor: a few microseconds
    less per call (it matters for one-image batches), and a view reaching past the end
    of ``base`` is an error instead of a read of foreign memory. Used only inside these
    primitives, where autograd never sees it.
    """
    return onp.ndarray(shape, base.dtype, buffer=base, strides=strides)


def _unfold(x, kh, kw, buf):
    """Patch matrix (kh*kw*C, m*L) of x: (m, C, H, W) contiguous, rows ordered (i, j, c).

    cols[(i, j, c), n*L + l] = x[n, c].flat[i*W + j + l], written into the flat
    buffer ``buf`` (reused across chunks).
    """
    m, c = x.shape[:2]
    _, w, _, L = _geometry(x.shape, kh, kw)
    s0, s1, _, s3 = x.strides
    win = _strided(x, (kh, kw, c, m, L), (w * s3, s3, s1, s0, s3))
    cols = buf[:win.size].reshape(win.shape)
    onp.copyto(cols, win)
    return cols.reshape(kh * kw * c, m * L)


def _pixels(rows, m, ho, w, wo, L):
    """View (O, m, H', W') of the (O, m*L) product of a chunk (wrap-around columns skipped)."""
    s = rows.itemsize
    return _strided(rows, (rows.shape[0], m, ho, wo), (m * L * s, L * s, w * s, s))


def _flat_rows(g, w, L, buf):
    """(o, m*L) flat-row form of g: (m, o, H', W'): g[n, o, p, q] at column n*L + p*W + q,
    zeros in the wrap-around columns. Written into the flat buffer ``buf``."""
    m, o, ho, wo = g.shape
    s = buf.itemsize
    rows = buf[:o * m * L]
    if wo < w and ho > 1:
        _strided(rows[wo:], (o, m, ho - 1, w - wo), (m * L * s, L * s, w * s, s))[...] = 0
    _strided(rows, (o, m, ho, wo), (m * L * s, L * s, w * s, s))[...] = g.transpose(1, 0, 2, 3)
    return rows.reshape(o, m * L)


def _w_rows(w, dtype):
    """(O, C, kh, kw) -> (O, kh*kw*C), columns ordered (i, j, c) like the patch rows."""
    return onp.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=dtype).reshape(w.shape[0], -1)


def _check_conv(x_shape, w_shape):
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d expects x (N, C, H, W) and w (O, C, kh, kw), "
                         f"got {tuple(x_shape)} and {tuple(w_shape)}")
    if x_shape[1] != w_shape[1] or x_shape[2] < w_shape[2] or x_shape[3] < w_shape[3]:
        raise ValueError(f"conv2d: x {tuple(x_shape)} does not fit w {tuple(w_shape)} "
                         f"(channels must match, kernel no larger than the image)")


@primitive
def conv2d(x, w):
    """2-D cross-correlation, stride 1, 'valid' padding.

    x: (N, C, H, W); w: (O, C, kh, kw)  ->  (N, O, H-kh+1, W-kw+1), dtype of x.
    y[n, o, p, q] = sum_{c, i, j} w[o, c, i, j] * x[n, c, p + i, q + j]
    (PyTorch ``F.conv2d`` / Keras ``Conv2D(padding='valid')`` without bias.)

    Per chunk: one matmul (O, K) @ (K, m*L), output pixels as its columns. Identical
    patches (saturated strokes, blank background) need not give bit-identical outputs:
    OpenBLAS rounds some columns of a product differently from others (measured on a
    constant image of 128: values one ulp apart for 2% of conv2's pixels, none of
    conv1's), so which of several equal-looking maxima pooling takes is the BLAS's
    decision, as it is PyTorch's; the tests compare tie *rules*, not tied values. Each
    chunk's product is copied into the (N, O, H', W') output while it is still in cache,
    dropping the wrap-around columns on the way.
    """
    _check_conv(x.shape, w.shape)
    return _conv_output(x, w, None)


def _conv_output(x, w, bias):
    """conv2d(x, w) (+ bias per output channel, when given) as an (N, O, H', W') array."""
    y = onp.empty(_conv_shape(x.shape, w.shape), dtype=onp.result_type(x, w))

    def emit(a, b, pix):
        y[a:b] = pix.transpose(1, 0, 2, 3)

    _conv_chunks(x, w, bias, emit)
    return y


def _conv_shape(x_shape, w_shape):
    ho, _, wo, _ = _geometry(x_shape, w_shape[2], w_shape[3])
    return x_shape[0], w_shape[0], ho, wo


def _conv_chunks(x, w, bias, emit):
    """The convolution's chunk loop: for each chunk of images a:b, one matmul, then
    ``emit(a, b, pix)`` with ``pix`` the chunk's outputs (plus ``bias`` when given) as an
    (O, b-a, H', W') view of the product, still in cache. Chunks are shared out over
    :mod:`scratchadv.threads`; ``emit`` writes chunk a:b's part of its outputs only."""
    x = onp.ascontiguousarray(x)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, _, wo, L = _geometry(x.shape, kh, kw)
    dt = onp.result_type(x, w)
    w2 = _w_rows(w, dt)
    k = w2.shape[1]
    step, chunks = _chunks(n, (k * x.itemsize + o * onp.dtype(dt).itemsize) * L)
    if bias is not None:
        bias = onp.asarray(bias, dtype=dt)

    def work(group):
        buf = onp.empty(k * step * L, dtype=x.dtype)
        rows = onp.empty(step * L * o, dtype=dt)
        for a, b in group:
            r = rows[:(b - a) * L * o].reshape(o, -1)
            onp.matmul(w2, _unfold(x[a:b], kh, kw, buf), out=r)
            if bias is not None:      # one add over the chunk's sums, in cache
                r += bias[:, None]
            emit(a, b, _pixels(r, b - a, ho, wd, wo, L))
        return group

    map_groups(work, chunks)


@primitive
def conv2d_input_grad(g, w, x_shape):
    """Adjoint of x -> conv2d(x, w): the gradient w.r.t. x given g = dL/dy.

    g: (N, O, H', W'); w: (O, C, kh, kw); x_shape: (N, C, H, W)  ->  (N, C, H, W).
    dx[n, c, p + i, q + j] += sum_o w[o, c, i, j] * g[n, o, p, q]  ("full" correlation).

    Computed without the (N, kh*kw*C, L) patch matrix: per chunk, g is unfolded along
    kernel columns only (kw copies of g, shifted by j), one matmul with K = kw*O
    contracts (j, o), and the kh kernel rows are kh shifted adds into dx.
    """
    _check_conv(x_shape, w.shape)
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    ho, _, wo, L = _geometry(x_shape, kh, kw)
    lp = L + kw - 1
    pad = kw - 1 + ho * wd
    dt = onp.result_type(g, w)
    # wt[(i, c), (j', o)] = w[o, c, i, kw-1-j']: the j-reversal turns the shifts into reads.
    wt = onp.ascontiguousarray(w[:, :, :, ::-1].transpose(2, 1, 3, 0), dtype=dt).reshape(kh * c, kw * o)
    step, chunks = _chunks(n, (o * pad + kw * o * lp) * g.itemsize + kh * c * lp * onp.dtype(dt).itemsize)
    dx = onp.zeros((n, c, h * wd), dtype=dt)

    def work(group):
        # gp[n, o, kw-1 + l] = flat-row g (zeros in wrap-around columns and in front),
        # zeroed once: every chunk writes the same positions
        gp = onp.zeros((step, o, pad), dtype=g.dtype)
        gj = onp.empty(kw * o * step * lp, dtype=g.dtype)
        s = gp.itemsize
        for a, b in group:
            m = b - a
            gp[:m, :, kw - 1:].reshape(m, o, ho, wd)[:, :, :, :wo] = g[a:b]
            # gj[j', o, n, t] = gp[n, o, j' + t]
            cols = gj[:kw * o * m * lp].reshape(kw, o, m, lp)
            onp.copyto(cols, _strided(gp, (kw, o, m, lp), (s, pad * s, o * pad * s, s)))
            part = onp.matmul(wt, cols.reshape(kw * o, m * lp)).reshape(kh, c, m, lp)
            for i in range(kh):
                dx[a:b, :, i * wd:i * wd + lp] += part[i].transpose(1, 0, 2)
        return group

    map_groups(work, chunks)
    return dx.reshape(x_shape)


@primitive
def conv2d_weight_grad(g, x, w_shape):
    """Adjoint of w -> conv2d(x, w): the gradient w.r.t. w given g = dL/dy.

    g: (N, O, H', W'); x: (N, C, H, W); w_shape: (O, C, kh, kw)  ->  (O, C, kh, kw).
    dw[o, c, i, j] = sum_{n, p, q} g[n, o, p, q] * x[n, c, p + i, q + j]

    Per chunk: the patch matrix (as in the forward pass) and g in flat rows, contracted
    over (n, l) by one matmul (O, m*L) @ (m*L, K). The chunks' sums are added in chunk
    order, so the result does not depend on the thread count.
    """
    _check_conv(x.shape, w_shape)
    x = onp.ascontiguousarray(x)
    o, c, kh, kw = w_shape
    n, _, h, wd = x.shape
    ho, _, wo, L = _geometry(x.shape, kh, kw)
    k = kh * kw * c
    step, chunks = _chunks(n, (k * x.itemsize + o * g.itemsize) * L)

    def work(group):
        buf = onp.empty(k * step * L, dtype=x.dtype)
        gbuf = onp.empty(o * step * L, dtype=g.dtype)
        # np.dot, not np.matmul: matmul keeps the GIL when its output is small (this one
        # is O x K), which would leave the other threads waiting
        return [onp.dot(_flat_rows(g[a:b], wd, L, gbuf), _unfold(x[a:b], kh, kw, buf).T)
                for a, b in group]

    dw = onp.zeros((o, k), dtype=onp.result_type(g, x))
    for part in map_groups(work, chunks):
        dw += part
    return onp.ascontiguousarray(dw.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))


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

#: element-wise passes over fewer bytes than this stay on the calling thread
_SPLIT_MIN_BYTES = 1 << 18


def _over_images(fn, n, nbytes):
    """``fn(a, b)`` on consecutive image ranges covering 0..n: one range per thread
    (:mod:`scratchadv.threads`) when the pass touches at least _SPLIT_MIN_BYTES, else
    one range. For element-wise passes, whose results do not depend on the cut."""
    t = max(1, min(get_threads(), n)) if nbytes >= _SPLIT_MIN_BYTES else 1
    parts = [(n * i // t, n * (i + 1) // t) for i in range(t)]
    map_groups(lambda group: [fn(a, b) for a, b in group], parts)


def _window_max(x):
    n, c, h, w = x.shape
    m = onp.empty((n, c, h // 2, w // 2), dtype=x.dtype)

    def part(a, b):
        tl, tr, bl, br = (x[a:b, :, i::2, j::2] for i, j in _OFFSETS)
        onp.maximum(onp.maximum(tl, tr), onp.maximum(bl, br), out=m[a:b])

    _over_images(part, n, x.nbytes)
    return m


def _max_and_masks(x):
    """Window maxima (N, C, H/2, W/2) and first-max masks (4, N, C, H/2, W/2) bool.

    masks[k] marks the windows whose first maximal entry is the k-th in row-major
    order (_OFFSETS): exactly one mask is True per window, and on ties the earlier
    entry wins (PyTorch's choice).
    """
    m = _window_max(x)
    masks = onp.empty((4,) + m.shape, dtype=bool)

    def part(a, b):
        _first_max([x[a:b, :, i::2, j::2] for i, j in _OFFSETS], m[a:b], masks[:, a:b])

    _over_images(part, len(x), x.nbytes)
    return m, masks


def _first_max(quads, m, masks):
    """masks[k] = where quads[k] is the first of the four window entries equal to their
    maximum m (quads in _OFFSETS order; all of one shape, any strides)."""
    taken = None
    for k in range(3):
        mk = masks[k]
        onp.equal(quads[k], m, out=mk)
        if taken is None:
            taken = mk.copy()
        else:
            mk &= ~taken
            taken |= mk
    onp.logical_not(taken, out=masks[3])


def pool_argmax(x):
    """Which entry of each 2x2 window receives the gradient: (N, C, H/2, W/2) int8 in 0..3.

    0..3 number the window's entries in row-major order (top-left, top-right,
    bottom-left, bottom-right); on ties the first maximal one, as :func:`maxpool2d`
    routes it. x: (N, C, H, W) with even H and W. Not differentiable (an index).
    Used to compare this tie rule with another framework's routing.
    """
    _check_pool_shape(x)
    _, masks = _max_and_masks(onp.asarray(getval(x)))
    return onp.argmax(masks, axis=0).astype(onp.int8)


def _check_pool_shape(x):
    if np.ndim(x) != 4 or np.shape(x)[2] % 2 or np.shape(x)[3] % 2:
        raise ValueError(f"maxpool2d expects x of shape (N, C, H, W) with even H and W, "
                         f"got {np.shape(x)}")


@primitive
def _pool_select(x, masks, y):
    """The window maxima y of x (computed with ``masks`` by the caller), on the tape."""
    return y


@primitive
def _pool_scatter(g, masks):
    """Route g: (N, C, H/2, W/2) to the first-max positions -> (N, C, H, W)."""
    n, c, h, w = g.shape
    out = onp.empty((n, c, 2 * h, 2 * w), dtype=g.dtype)

    def part(a, b):
        for mk, (i, j) in zip(masks, _OFFSETS):
            onp.multiply(g[a:b], mk[a:b], out=out[a:b, :, i::2, j::2])

    _over_images(part, n, out.nbytes)
    return out


@primitive
def _pool_gather(h, masks):
    """Read h: (N, C, H, W) at the first-max positions -> (N, C, H/2, W/2)."""
    n, c, hh, w = h.shape
    out = onp.empty((n, c, hh // 2, w // 2), dtype=onp.result_type(h.dtype, masks.dtype))

    def part(a, b):
        onp.multiply(h[a:b, :, 0::2, 0::2], masks[0, a:b], out=out[a:b])
        for mk, (i, j) in zip(masks[1:], _OFFSETS[1:]):
            out[a:b] += h[a:b, :, i::2, j::2] * mk[a:b]

    _over_images(part, n, h.nbytes)
    return out


# The window choice is piecewise constant in x, so the masks are constants for
# differentiation; scatter and gather are each other's adjoint.
defvjp(_pool_select, lambda y, x, masks, y0: lambda g: _pool_scatter(g, masks), None, None)
defvjp(_pool_scatter, lambda out, g, masks: lambda h: _pool_gather(h, masks), None)
defvjp(_pool_gather, lambda out, h, masks: lambda g: _pool_scatter(g, masks), None)


def maxpool2d(x):
    """2x2 max pooling with stride 2.  x: (N, C, H, W), H and W even -> (N, C, H/2, W/2).

    The gradient goes wholly to the first maximal entry of each window (row-major),
    as in PyTorch ``F.max_pool2d``; ``np.max`` would split it among ties. The masks
    are built (once, here) only when x is being differentiated.
    """
    _check_pool_shape(x)
    if not isbox(x):
        return _window_max(x)
    y, masks = _max_and_masks(getval(x))
    return _pool_select(x, masks, y)


# ---------------------------------------------------------------------------
# Convolution + bias + pooling in one pass (the lecture's Conv, MaxPool blocks)
# ---------------------------------------------------------------------------

def conv_pool(x, w, b):
    """``maxpool2d(conv2d(x, w) + b[None, :, None, None])``, the chunks pooled while in cache.

    x: (N, C, H, W); w: (O, C, kh, kw); b: (O,); H-kh+1 and W-kw+1 even
    -> (N, O, (H-kh+1)/2, (W-kw+1)/2), dtype of x.

    The same values, gradients (of every order) and first-max routing as the
    composition, bit for bit. Each chunk's sums get the bias added right after its matmul,
    in cache; when nothing is differentiated they are pooled there too, so the
    full-resolution output never goes to memory. The gradient is the composition's,
    written with the same primitives (:func:`_pool_scatter` once, then the two adjoints of
    conv2d, and the bias's sum in the order autograd's broadcasting takes it).
    """
    _check_conv(np.shape(x), np.shape(w))
    n, o, ho, wo = _conv_shape(np.shape(x), np.shape(w))
    if ho % 2 or wo % 2:
        raise ValueError(f"conv_pool: the convolution's output {(ho, wo)} must have an even "
                         f"height and width to be pooled 2x2")
    if np.shape(b) != (o,):
        raise ValueError(f"conv_pool: expected a bias of shape ({o},), got {np.shape(b)}")
    xv, wv = getval(x), getval(w)
    dt = onp.result_type(xv, wv)
    if isbox(x) or isbox(w) or isbox(b):
        # the masks are quicker over the whole output than chunk by chunk (their views'
        # rows are only W'/2 long): the chunks write conv + bias, then one pooling pass
        pooled, masks = _max_and_masks(_conv_output(xv, wv, getval(b)))
        return _conv_pool_select(x, w, b, masks, pooled)
    pooled = onp.empty((n, o, ho // 2, wo // 2), dtype=dt)

    def emit_pooled(a, bb, pix):
        quads = [pix[:, :, i::2, j::2] for i, j in _OFFSETS]       # (O, m, H'/2, W'/2) each
        out = pooled[a:bb].transpose(1, 0, 2, 3)
        onp.maximum(onp.maximum(quads[0], quads[1]), onp.maximum(quads[2], quads[3]), out=out)

    _conv_chunks(xv, wv, b, emit_pooled)
    return pooled


@primitive
def _conv_pool_select(x, w, b, masks, pooled):
    """The pooled outputs of :func:`conv_pool` (computed there), on the tape."""
    return pooled


def _bias_grad(full):
    # as autograd's broadcasting adjoint sums a (1, O, 1, 1) bias: one axis at a time
    for axis in (0, 2, 3):
        full = np.sum(full, axis=axis, keepdims=True)
    return np.reshape(full, (-1,))


def _conv_pool_vjp(argnums, ans, args, kwargs):
    x, w, _, masks, _ = args

    def vjp(g):
        full = _pool_scatter(g, masks)          # the gradient w.r.t. conv2d(x, w) + b, once
        grads = {0: lambda: conv2d_input_grad(full, w, np.shape(x)),
                 1: lambda: conv2d_weight_grad(full, x, np.shape(w)),
                 2: lambda: _bias_grad(full)}
        return tuple(grads[i]() for i in argnums)
    return vjp


defvjp_argnums(_conv_pool_select, _conv_pool_vjp)


# ---------------------------------------------------------------------------
# Pointwise and dense layers, softmax, loss
# ---------------------------------------------------------------------------

@primitive
def relu(x):
    """max(x, 0) with derivative exactly 0 at 0 (``np.maximum``'s VJP would give 0.5 there)."""
    return onp.maximum(x, 0)


# The derivative (x > 0) is a constant mask, so the VJP is a product with a constant
# and stays differentiable (its own derivative in x is 0 almost everywhere).
defvjp(relu, lambda y, x: lambda g: g * (y > 0))


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


def per_example_cross_entropy(logits, y):
    """Cross-entropy of each row from logits.  logits: (N, K); y: (N,) int -> (N,), logits' dtype.

    L_n = -log softmax(logits_n)[y_n]; its sum over n is N * cross_entropy(logits, y).
    It validates nothing: the attacks call it at every step on inputs they checked once,
    at their entry; :func:`scratchadv.losses.per_example_loss` is this after its checks.
    """
    return -np.sum(log_softmax(logits) * one_hot(y, logits.shape[1], logits.dtype), axis=1)

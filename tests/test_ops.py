"""The primitives of scratchadv.ops against naive loop references, finite differences
(to second order), the PyTorch tie conventions, and dtype preservation.

References are plain Python loops in float64, written from the definitions in the
docstrings of ``ops`` (cross-correlation, first-max pooling, ...), so that they share no
code or layout trick with the implementation. Gradient checks run in float64 (float32
finite differences are too coarse for a second-order check).
"""
import itertools
import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, make_vjp
from autograd.test_util import check_grads

from scratchadv import ops
from scratchadv.losses import gradient_regularized_loss, input_gradient, loss
from scratchadv.model import init_params, predict

RTOL = 1e-12


# ---------------------------------------------------------------------------
# Naive references (float64 loops)
# ---------------------------------------------------------------------------

def ref_conv2d(x, w):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    y = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for a, b, p, q in itertools.product(range(n), range(o), range(h - kh + 1), range(wd - kw + 1)):
        y[a, b, p, q] = np.sum(w[b] * x[a, :, p:p + kh, q:q + kw])
    return y


def ref_conv2d_input_grad(g, w, x_shape):
    dx = np.zeros(x_shape)
    n, o, ho, wo = g.shape
    kh, kw = w.shape[2:]
    for a, b, p, q in itertools.product(range(n), range(o), range(ho), range(wo)):
        dx[a, :, p:p + kh, q:q + kw] += w[b] * g[a, b, p, q]
    return dx


def ref_conv2d_weight_grad(g, x, w_shape):
    dw = np.zeros(w_shape)
    n, o, ho, wo = g.shape
    kh, kw = w_shape[2:]
    for a, b, p, q in itertools.product(range(n), range(o), range(ho), range(wo)):
        dw[b] += g[a, b, p, q] * x[a, :, p:p + kh, q:q + kw]
    return dw


def ref_first_max(x, a, ch, p, q):
    """(i, j) of the first maximal entry of window (p, q), scanning row-major."""
    best = (0, 0)
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if x[a, ch, 2 * p + i, 2 * q + j] > x[a, ch, 2 * p + best[0], 2 * q + best[1]]:
            best = (i, j)
    return best


def ref_maxpool2d(x):
    n, c, h, w = x.shape
    y = np.zeros((n, c, h // 2, w // 2))
    for a, ch, p, q in itertools.product(range(n), range(c), range(h // 2), range(w // 2)):
        y[a, ch, p, q] = max(x[a, ch, 2 * p + i, 2 * q + j] for i in range(2) for j in range(2))
    return y


def ref_maxpool2d_grad(x, g):
    """Gradient of sum(g * maxpool2d(x)) w.r.t. x with PyTorch's first-max rule."""
    dx = np.zeros(x.shape)
    n, c, h, w = x.shape
    for a, ch, p, q in itertools.product(range(n), range(c), range(h // 2), range(w // 2)):
        i, j = ref_first_max(x, a, ch, p, q)
        dx[a, ch, 2 * p + i, 2 * q + j] += g[a, ch, p, q]
    return dx


def ref_relu(x):
    return np.array([v if v > 0 else 0.0 for v in x.ravel()]).reshape(x.shape)


def ref_dense(x, w, b):
    n, i_ = x.shape
    o = w.shape[0]
    y = np.zeros((n, o))
    for a, k in itertools.product(range(n), range(o)):
        y[a, k] = b[k] + sum(x[a, t] * w[k, t] for t in range(i_))
    return y


def ref_log_softmax(z):
    out = np.zeros(z.shape)
    for a in range(z.shape[0]):
        m = max(z[a])
        lse = m + math.log(sum(math.exp(v - m) for v in z[a]))
        out[a] = [v - lse for v in z[a]]
    return out


def ref_cross_entropy(z, y):
    lp = ref_log_softmax(z)
    return -sum(lp[a, y[a]] for a in range(len(y))) / len(y)


# ---------------------------------------------------------------------------
# Forward values and adjoints against the references
# ---------------------------------------------------------------------------

CONV_CASES = [  # (x shape, w shape)
    ((2, 1, 28, 28), (10, 1, 5, 5)),     # the lecture's conv1
    ((2, 10, 12, 12), (20, 10, 5, 5)),   # the lecture's conv2
    ((3, 2, 7, 9), (4, 2, 3, 2)),        # non-square image and kernel
    ((1, 3, 4, 4), (2, 3, 4, 4)),        # kernel as large as the image: one output pixel
    ((2, 1, 5, 6), (1, 1, 1, 1)),        # 1x1 kernel
]


@pytest.fixture(params=[None, 1], ids=["default-chunks", "one-image-chunks"])
def chunking(request, monkeypatch):
    """Run a test with the default chunk size and with one image per chunk."""
    if request.param is not None:
        monkeypatch.setattr(ops, "_CHUNK_BYTES", request.param)


@pytest.mark.parametrize("xs, ws", CONV_CASES)
def test_conv2d_and_adjoints_match_loops(xs, ws, chunking):
    r = np.random.default_rng(0)
    x, w = r.standard_normal(xs), r.standard_normal(ws)
    y = ops.conv2d(x, w)
    np.testing.assert_allclose(y, ref_conv2d(x, w), rtol=RTOL, atol=1e-12)
    g = r.standard_normal(y.shape)
    np.testing.assert_allclose(ops.conv2d_input_grad(g, w, x.shape),
                               ref_conv2d_input_grad(g, w, x.shape), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_weight_grad(g, x, w.shape),
                               ref_conv2d_weight_grad(g, x, w.shape), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [5000, 20000])
def test_conv2d_with_a_shorter_last_chunk(chunk_bytes, monkeypatch):
    """Chunk buffers are reused: a last chunk with fewer images must not see stale rows."""
    monkeypatch.setattr(ops, "_CHUNK_BYTES", chunk_bytes)
    r = np.random.default_rng(10)
    x, w = r.standard_normal((5, 2, 7, 9)), r.standard_normal((3, 2, 3, 2))
    g = r.standard_normal((5, 3, 5, 8))
    np.testing.assert_allclose(ops.conv2d(x, w), ref_conv2d(x, w), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_input_grad(g, w, x.shape),
                               ref_conv2d_input_grad(g, w, x.shape), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ops.conv2d_weight_grad(g, x, w.shape),
                               ref_conv2d_weight_grad(g, x, w.shape), rtol=RTOL, atol=1e-12)


def test_conv2d_adjoint_identities():
    """<conv(x, w), g> = <x, input_grad(g, w)> = <w, weight_grad(g, x)> (float64, generic data)."""
    r = np.random.default_rng(1)
    x, w = r.standard_normal((5, 3, 11, 10)), r.standard_normal((4, 3, 5, 3))
    g = r.standard_normal(ops.conv2d(x, w).shape)
    lhs = np.sum(ops.conv2d(x, w) * g)
    assert lhs == pytest.approx(np.sum(x * ops.conv2d_input_grad(g, w, x.shape)), rel=1e-12)
    assert lhs == pytest.approx(np.sum(w * ops.conv2d_weight_grad(g, x, w.shape)), rel=1e-12)


def test_conv2d_accepts_non_contiguous_input():
    r = np.random.default_rng(2)
    big = r.standard_normal((3, 2, 16, 14))
    x = big[:, :, ::2, :]                      # strided view (3, 2, 8, 14)
    w = r.standard_normal((2, 2, 3, 3))
    np.testing.assert_allclose(ops.conv2d(x, w), ref_conv2d(np.array(x), w), rtol=RTOL, atol=1e-12)
    g = r.standard_normal((3, 2, 6, 12))
    np.testing.assert_allclose(ops.conv2d_weight_grad(g, x, w.shape),
                               ref_conv2d_weight_grad(g, np.array(x), w.shape), rtol=RTOL, atol=1e-12)


def test_empty_batch():
    x, w = np.zeros((0, 2, 8, 8), np.float32), np.ones((3, 2, 5, 5), np.float32)
    g = np.zeros((0, 3, 4, 4), np.float32)
    assert ops.conv2d(x, w).shape == (0, 3, 4, 4)
    assert ops.conv2d_input_grad(g, w, x.shape).shape == x.shape
    np.testing.assert_array_equal(ops.conv2d_weight_grad(g, x, w.shape), np.zeros(w.shape))
    assert ops.maxpool2d(x).shape == (0, 2, 4, 4)


@pytest.mark.parametrize("xs, ws, match", [
    ((2, 3, 8, 8), (4, 2, 3, 3), "channels"),
    ((2, 1, 4, 4), (1, 1, 5, 5), "kernel"),
    ((1, 8, 8), (1, 1, 3, 3), "N, C, H, W"),
])
def test_conv2d_rejects_bad_shapes(xs, ws, match):
    with pytest.raises(ValueError, match=match):
        ops.conv2d(np.zeros(xs), np.zeros(ws))


def test_maxpool2d_matches_loops():
    r = np.random.default_rng(3)
    x = r.standard_normal((3, 2, 6, 8))
    np.testing.assert_array_equal(ops.maxpool2d(x), ref_maxpool2d(x))
    g = r.standard_normal((3, 2, 3, 4))
    vjp, _ = make_vjp(ops.maxpool2d)(x)
    np.testing.assert_array_equal(vjp(g), ref_maxpool2d_grad(x, g))


@pytest.mark.parametrize("shape", [(2, 1, 5, 6), (1, 2, 4, 3), (4, 4)])
def test_maxpool2d_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="even H and W"):
        ops.maxpool2d(np.zeros(shape))


def test_relu_dense_log_softmax_cross_entropy_match_loops():
    r = np.random.default_rng(4)
    x = r.standard_normal((3, 4, 5))
    x[0, 0, :3] = 0.0
    np.testing.assert_array_equal(ops.relu(x), ref_relu(x))
    a, w, b = r.standard_normal((4, 6)), r.standard_normal((3, 6)), r.standard_normal(3)
    np.testing.assert_allclose(ops.dense(a, w, b), ref_dense(a, w, b), rtol=RTOL)
    z = 30 * r.standard_normal((5, 10))        # large logits: needs the log-sum-exp shift
    np.testing.assert_allclose(ops.log_softmax(z), ref_log_softmax(z), rtol=1e-12, atol=1e-12)
    y = r.integers(0, 10, 5)
    assert ops.cross_entropy(z, y) == pytest.approx(ref_cross_entropy(z, y), rel=1e-12)
    np.testing.assert_array_equal(ops.flatten(x[:, None]), x.reshape(3, -1))


# ---------------------------------------------------------------------------
# Finite differences, to second order (float64)
# ---------------------------------------------------------------------------

def _check(f, *args):
    np.random.seed(0)           # check_grads draws its directions from numpy's global generator
    check_grads(f, modes=["rev"], order=2)(*args)


def test_check_grads_conv2d_and_its_adjoints():
    r = np.random.default_rng(5)
    x, w = r.standard_normal((2, 2, 7, 6)), r.standard_normal((3, 2, 3, 2))
    g = r.standard_normal((2, 3, 5, 5))
    _check(lambda xx: ops.conv2d(xx, w), x)
    _check(lambda ww: ops.conv2d(x, ww), w)
    _check(lambda gg: ops.conv2d_input_grad(gg, w, x.shape), g)
    _check(lambda ww: ops.conv2d_input_grad(g, ww, x.shape), w)
    _check(lambda gg: ops.conv2d_weight_grad(gg, x, w.shape), g)
    _check(lambda xx: ops.conv2d_weight_grad(g, xx, w.shape), x)


def _composed_conv_pool(x, w, b):
    return ops.maxpool2d(ops.conv2d(x, w) + anp.reshape(b, (1, -1, 1, 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c, o, hw, chunk_bytes", [(1, 10, 28, None), (10, 20, 12, None),
                                                   (2, 3, 10, 3000)])
def test_conv_pool_is_the_composition_bit_for_bit(dtype, c, o, hw, chunk_bytes, monkeypatch):
    """Values, the gradient w.r.t. each argument and a second-order gradient: the fused
    block is conv2d + bias, then maxpool2d, exactly (also on tied windows)."""
    if chunk_bytes:
        monkeypatch.setattr(ops, "_CHUNK_BYTES", chunk_bytes)
    r = np.random.default_rng(11)
    n = 9
    x = r.random((n, c, hw, hw)).astype(dtype)
    x[:3] = 0.5                                  # constant images: tied windows
    w = r.standard_normal((o, c, 5, 5)).astype(dtype)
    b = r.standard_normal(o).astype(dtype)
    got = ops.conv_pool(x, w, b)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _composed_conv_pool(x, w, b))
    g = r.standard_normal(got.shape).astype(dtype)
    for argnum in range(3):
        fused = grad(lambda *a: anp.sum(ops.conv_pool(*a) * g), argnum)(x, w, b)
        composed = grad(lambda *a: anp.sum(_composed_conv_pool(*a) * g), argnum)(x, w, b)
        np.testing.assert_array_equal(fused, composed, err_msg=f"argument {argnum}")

    def second(block, argnum):
        def h(*params):
            args = (x,) + params
            inner = grad(lambda xx: anp.sum(block(xx, *args[1:]) ** 2))(x)
            return anp.sum(inner ** 2)
        return grad(h, argnum)(w, b)
    for argnum in (0, 1):
        np.testing.assert_array_equal(second(ops.conv_pool, argnum), second(_composed_conv_pool, argnum))


def test_conv_pool_matches_the_loop_references():
    r = np.random.default_rng(12)
    x, w, b = r.standard_normal((2, 2, 9, 7)), r.standard_normal((3, 2, 4, 2)), r.standard_normal(3)
    ref = ref_maxpool2d(ref_conv2d(x, w) + b[None, :, None, None])
    np.testing.assert_allclose(ops.conv_pool(x, w, b), ref, rtol=RTOL, atol=1e-13)


def test_check_grads_conv_pool():
    r = np.random.default_rng(13)
    x, w, b = r.standard_normal((2, 2, 7, 7)), r.standard_normal((3, 2, 4, 4)), r.standard_normal(3)
    _check(lambda xx: ops.conv_pool(xx, w, b), x)
    _check(lambda ww: ops.conv_pool(x, ww, b), w)
    _check(lambda bb: ops.conv_pool(x, w, bb), b)


@pytest.mark.parametrize("xs, ws, bs, match", [
    ((2, 1, 9, 9), (3, 1, 3, 3), (3,), "even height and width"),
    ((2, 1, 8, 8), (3, 1, 3, 3), (4,), r"expected a bias of shape \(3,\)"),
    ((2, 2, 8, 8), (3, 1, 3, 3), (3,), "channels must match"),
])
def test_conv_pool_rejects_bad_shapes(xs, ws, bs, match):
    with pytest.raises(ValueError, match=match):
        ops.conv_pool(np.zeros(xs), np.zeros(ws), np.zeros(bs))


def test_check_grads_pooling_relu_dense_softmax():
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 3, 4, 6))        # continuous values: no ties, no zeros
    _check(ops.maxpool2d, x)
    _check(lambda xx: ops.maxpool2d(ops.relu(xx)) ** 2, x)
    a, w, b = r.standard_normal((4, 5)), r.standard_normal((3, 5)), r.standard_normal(3)
    _check(lambda aa: ops.dense(aa, w, b), a)
    _check(lambda ww: ops.dense(a, ww, b), w)
    _check(lambda bb: ops.dense(a, w, bb), b)
    y = np.array([0, 2, 1, 2])
    _check(ops.log_softmax, a)
    _check(lambda z: ops.cross_entropy(z, y), a)


def _generic_model(seed=7, n=3):
    """float64 params with non-zero biases and images without exact ties or zeros."""
    r = np.random.default_rng(seed)
    params = init_params(seed, dtype=np.float64)
    params = {k: v + 0.05 * r.standard_normal(v.shape) for k, v in params.items()}
    x = r.uniform(0.05, 0.95, size=(n, 1, 28, 28))
    y = r.integers(0, 10, n)
    return params, x, y


def test_check_grads_loss_wrt_params_and_input():
    params, x, y = _generic_model()
    _check(lambda p: loss(p, x, y), params)
    _check(lambda xx: loss(params, xx, y), x)


def test_check_grads_gradient_regularized_loss_wrt_params():
    params, x, y = _generic_model(seed=8, n=2)
    _check(lambda p: gradient_regularized_loss(p, x, y, 0.7), params)


# ---------------------------------------------------------------------------
# Ties: PyTorch's conventions
# ---------------------------------------------------------------------------

def test_relu_gradient_is_zero_at_zero():
    x = np.array([-1.0, 0.0, -0.0, 1e-300, 2.0])
    np.testing.assert_array_equal(grad(lambda v: anp.sum(ops.relu(v)))(x), [0, 0, 0, 1, 1])
    # and the second derivative exists (it is 0)
    hvp = grad(lambda v: anp.sum(grad(lambda u: anp.sum(ops.relu(u) ** 2))(v)))(x)
    np.testing.assert_array_equal(hvp, [0, 0, 0, 2, 2])


def test_pooling_ties_go_to_the_first_max_in_row_major_order():
    # every 2x2 window with entries in {0, 1, 2}: 81 windows, most of them with ties
    windows = np.array(list(itertools.product([0.0, 1.0, 2.0], repeat=4)))   # (81, 4)
    x = np.zeros((1, 81, 2, 2))
    x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1] = windows.T
    g = np.arange(1.0, 82.0).reshape(1, 81, 1, 1)
    vjp, y = make_vjp(ops.maxpool2d)(x)
    np.testing.assert_array_equal(y, ref_maxpool2d(x))
    dx = vjp(g)
    np.testing.assert_array_equal(dx, ref_maxpool2d_grad(x, g))
    # exactly one entry per window receives the whole gradient
    np.testing.assert_array_equal(np.count_nonzero(dx, axis=(2, 3)), np.ones((1, 81)))
    # spot checks written out by hand
    k = {tuple(wi): idx for idx, wi in enumerate(windows.tolist())}
    assert dx[0, k[(2, 2, 2, 2)], 0, 0] == g[0, k[(2, 2, 2, 2)], 0, 0]
    assert dx[0, k[(0, 2, 2, 0)], 0, 1] != 0
    assert dx[0, k[(1, 0, 2, 2)], 1, 0] != 0
    assert dx[0, k[(0, 1, 1, 2)], 1, 1] != 0


def test_pooling_second_order_routes_like_the_first():
    """The VJP of the pooling VJP reads the same first-max positions (used by double backprop)."""
    r = np.random.default_rng(9)
    x = r.integers(0, 3, size=(2, 3, 4, 6)).astype(np.float64)      # many ties
    h = r.standard_normal(x.shape)

    def routed(g):   # <VJP(g), h>, linear in g: its gradient is h read at the first maxima
        vjp, _ = make_vjp(ops.maxpool2d)(x)
        return anp.sum(vjp(g) * h)
    got = grad(routed)(np.ones((2, 3, 2, 3)))
    want = np.zeros((2, 3, 2, 3))
    for a, c, p, q in itertools.product(range(2), range(3), range(2), range(3)):
        i, j = ref_first_max(x, a, c, p, q)
        want[a, c, p, q] = h[a, c, 2 * p + i, 2 * q + j]
    np.testing.assert_array_equal(got, want)


def _tie_heavy(n, dtype, seed=0):
    """MNIST-like images: exact-zero background and 8-bit quantized strokes."""
    r = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28))
    for a in range(n):
        cy, cx = r.integers(7, 21, size=2)
        x[a, 0, cy - 5:cy + 5, cx - 3:cx + 4] = r.integers(0, 256, size=(10, 7)) / 255
        x[a, 0, cy - 5:cy + 5, cx] = 1.0                       # a saturated stroke: ties at the max
    return x.astype(dtype), r.integers(0, 10, n)


def _biased_params(seed=3):
    """float64 lecture-CNN weights with non-zero biases (no pre-activation sits on 0 by design)."""
    params = init_params(seed, dtype=np.float64)
    r = np.random.default_rng(seed)
    return {k: (v + 0.1 * r.standard_normal(v.shape) if k.endswith("bias") else v)
            for k, v in params.items()}


# --- the tie rules, primitive against primitive: identical inputs, no rounding involved ---

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pooling_tie_rule_is_pytorchs(dtype):
    """On crafted exact ties, our max-pool routes first and second order as F.max_pool2d."""
    torch = pytest.importorskip("torch")
    windows = np.array(list(itertools.product([0.0, 1.0, 2.0], repeat=4)))   # 81 windows
    x = np.zeros((2, 81, 2, 4), dtype=dtype)
    x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1] = windows.T
    x[1] = np.random.default_rng(0).integers(0, 2, size=(81, 2, 4))           # more ties
    g = np.random.default_rng(1).standard_normal((2, 81, 1, 2)).astype(dtype)
    h = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(g).requires_grad_(True)
    yt = torch.nn.functional.max_pool2d(xt, 2)
    dxt, = torch.autograd.grad(yt, xt, gt, create_graph=True)
    # second order: the derivative of <dx, h> w.r.t. g reads h at the chosen entries
    ddt, = torch.autograd.grad((dxt * torch.from_numpy(h)).sum(), gt)
    vjp, y_ours = make_vjp(ops.maxpool2d)(x)
    np.testing.assert_array_equal(y_ours, yt.detach().numpy())
    np.testing.assert_array_equal(vjp(g), dxt.detach().numpy())
    dd = grad(lambda gg: anp.sum(make_vjp(ops.maxpool2d)(x)[0](gg) * h))(g)
    np.testing.assert_array_equal(dd, ddt.numpy())
    # and the index ops.pool_argmax reports is where the gradient went
    k = ops.pool_argmax(x)
    routed = np.stack([dxt.detach().numpy()[:, :, i::2, j::2] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1))])
    np.testing.assert_array_equal(np.take_along_axis(routed, k[None].astype(np.intp), 0)[0], g)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_tie_rule_is_pytorchs(dtype):
    torch = pytest.importorskip("torch")
    x = np.array([-1.0, -0.0, 0.0, 1e-30, 3.0], dtype=dtype)
    xt = torch.from_numpy(x).requires_grad_(True)
    theirs, = torch.autograd.grad(torch.relu(xt).sum(), xt)
    ours = grad(lambda v: anp.sum(ops.relu(v)))(x)
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(ours, [0, 0, 0, 1, 1])


# --- the whole network against PyTorch ---

def _kink_margins(params, x):
    """How far (params, x) is from every kink of the lecture CNN: the smallest |pre-activation|
    of each ReLU, and per pooling layer the smallest relative gap between a window's
    largest and second-largest entry (windows whose maximum is above 0)."""
    pre, gaps, h = [], [], x
    for layer in ("conv1", "conv2"):
        z = ops.conv2d(h, params[layer + ".weight"]) + params[layer + ".bias"].reshape(1, -1, 1, 1)
        pre.append(np.min(np.abs(z)))
        a = ops.relu(z)
        n, c, hh, ww = a.shape
        w = np.sort(a.reshape(n, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5)
                    .reshape(n, c, hh // 2, ww // 2, 4), -1)
        top = w[..., 3] > 0
        gaps.append(np.min((w[..., 3] - w[..., 2])[top] / w[..., 3][top]))
        h = ops.maxpool2d(a)
    z = ops.dense(ops.flatten(h), params["dense1.weight"], params["dense1.bias"])
    pre.append(np.min(np.abs(z)))
    return pre, gaps


def test_against_pytorch_away_from_ties():
    """Jittered off every tie (as gradcheck does), the two libraries agree to 1e-10 on
    logits, loss, weight gradients, input gradient, double backprop and a PGD step:
    nothing is left for rounding to decide."""
    pytest.importorskip("torch")
    from conftest import load_script
    from scratchadv.gradcheck import generic_point
    ct = load_script("compare_torch")
    x, y = _tie_heavy(6, np.float64)
    params, x = generic_point(_biased_params(), x, np.random.default_rng(4))
    pre, gaps = _kink_margins(params, x)
    # the precondition, checked rather than assumed: no kink within rounding distance
    assert min(pre) > 1e-9 and min(gaps) > 1e-9, (pre, gaps)
    rows = ct.compare(params, x, y, lam=0.5)
    over = [r for r in rows if not r["rel_err"] <= 1e-10]
    assert not over, ct.format_rows(rows, 1e-10)
    route = rows[-1]
    assert route["quantity"] == "pooling routing" and route["windows_routed_differently"] == 0


def _tie_nudge(ours_pool, torch_pool):
    """(layer, delta, window): a window of the 2nd pooling layer that both libraries route
    alike although its maximum is an exact tie for us, and a delta that lifts PyTorch's
    value at our second maximal entry a few ulps above its window's maximum."""
    from scratchadv.ops import pool_argmax
    h, ht = ours_pool[1], torch_pool[1]
    n, c, hh, ww = h.shape
    win = h.reshape(n, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hh // 2, ww // 2, 4)
    m = win.max(-1)
    tied = ((win == m[..., None]).sum(-1) > 1) & (m > 0) & (pool_argmax(h) == pool_argmax(ht))
    assert tied.any(), "the tie-heavy images should hold exact ties in the second pooling layer"
    a, ch, p, q = np.argwhere(tied)[0]
    k = np.flatnonzero(win[a, ch, p, q] == m[a, ch, p, q])[1]
    i, j = divmod(int(k), 2)
    tw = ht[a, ch, 2 * p:2 * p + 2, 2 * q:2 * q + 2]
    top = tw.max()
    delta = np.zeros_like(ht)
    delta[a, ch, 2 * p + i, 2 * q + j] = (top - ht[a, ch, 2 * p + i, 2 * q + j]) \
        + 4 * (np.nextafter(top, np.inf) - top)
    return 1, delta, (a, ch, p, q)


@pytest.mark.parametrize("nudge", [False, True], ids=["as-computed", "one-tie-broken-by-ulps"])
def test_against_pytorch_on_tie_heavy_inputs(nudge):
    """Exact zeros and saturated strokes: many pooling windows hold exact ties.

    The tie rule is the same (tests above), but which entry PyTorch's max-pool picks also
    depends on the last ulp of its own convolution outputs, which varies with the CPU's
    kernels (on an AMD EPYC, identical patches came out one ulp apart). So: find the
    windows the two libraries route differently, each on its own values; require that
    those are near-ties (rounding, not a rule), and agreement everywhere else: logits on
    every image, the input gradient outside those windows' receptive fields, and the
    weight gradients (double backprop included) on the images without such a window.
    ``nudge`` breaks one tie in PyTorch by a few ulps, as such a CPU does, so the
    test's handling of it is exercised on every machine.
    """
    pytest.importorskip("torch")
    from conftest import load_script
    ct = load_script("compare_torch")
    params = _biased_params()
    x, y = _tie_heavy(6, np.float64)
    a = ct.ours(params, x, y, lam=0.5)
    b = ct.theirs(params, x, y, lam=0.5)
    arg = None
    if nudge:
        layer, delta, window = _tie_nudge(a["pool_inputs"], b["pool_inputs"])
        arg = (layer, delta)
        b = ct.theirs(params, x, y, lam=0.5, nudge=arg)
    route = ct.routing(a["pool_inputs"], b["pool_inputs"], len(x))
    counts = [(r["ours_exact_ties"], r["torch_exact_ties"], r["routed_differently"])
              for r in route["layers"]]
    if nudge:
        assert route["differs"][1][window], counts
    # a differently routed window is a near-tie on both sides: rounding decided, not a rule
    assert all(r["near_tie_max_rel_gap"] <= 1e-13 for r in route["layers"]), route["layers"]
    assert sum(r["ours_exact_ties"] for r in route["layers"]) > 10, counts    # ties exercised
    assert np.sum(x == 0) > 0.8 * x.size
    # forward: every image
    assert ct.errors(a["logits"], b["logits"])[1] <= 1e-10
    # input gradient: outside the receptive fields of the differently routed windows
    affected = ct.affected_pixels(route["differs"])[:, None]
    scale = np.max(np.abs(b["grad_x"]))
    diff = np.abs(a["grad_x"] - b["grad_x"])
    assert np.mean(affected) < 0.5, counts
    assert np.max(diff[~affected]) <= 1e-10 * scale, counts
    if nudge:    # the broken tie does move gradient there: setting it aside is needed
        assert np.max(diff[affected]) > 1e-6 * scale
    # weight gradients, double backprop, PGD step: on the images without such a window
    rows = ct.compare(params, x, y, lam=0.5, nudge=arg)
    over = [r for r in rows if not r["rel_err"] <= 1e-10]
    assert not over, ct.format_rows(rows, 1e-10)
    assert rows[-1]["images_set_aside"] >= int(route["images"].sum())
    assert rows[-1]["images_set_aside"] <= len(x) // 2, counts
    assert all(r["images_compared"] >= len(x) - len(x) // 2 for r in rows if "images_compared" in r)


# ---------------------------------------------------------------------------
# dtypes: float32 stays float32 (forward, gradients, second order); float64 stays float64
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    x, y = _tie_heavy(4, dtype, seed=1)
    params = init_params(0, dtype=dtype)
    r = np.random.default_rng(0)
    w = r.standard_normal((3, 2, 3, 3)).astype(dtype)
    xs = r.standard_normal((2, 2, 6, 8)).astype(dtype)
    g = r.standard_normal((2, 3, 4, 6)).astype(dtype)
    outs = {
        "conv2d": ops.conv2d(xs, w),
        "conv2d_input_grad": ops.conv2d_input_grad(g, w, xs.shape),
        "conv2d_weight_grad": ops.conv2d_weight_grad(g, xs, w.shape),
        "maxpool2d": ops.maxpool2d(xs),
        "maxpool2d vjp": make_vjp(ops.maxpool2d)(xs)[0](ops.maxpool2d(xs)),
        "relu": ops.relu(xs),
        "log_softmax": ops.log_softmax(xs[:, 0, 0]),
        "cross_entropy": ops.cross_entropy(xs[:, 0, 0], np.array([0, 1])),
        "predict": predict(params, x),
        "input_gradient": input_gradient(params, x, y),
    }
    outs.update({"grad loss " + k: v for k, v in grad(loss)(params, x, y).items()})
    outs.update({"grad reg " + k: v for k, v in
                 grad(gradient_regularized_loss)(params, x, y, 0.1).items()})
    outs["grad reg x"] = grad(gradient_regularized_loss, 1)(params, x, y, 0.1)
    bad = {k: np.asarray(v).dtype for k, v in outs.items() if np.asarray(v).dtype != dtype}
    assert not bad, f"expected {np.dtype(dtype)} everywhere, got {bad}"

"""The norm geometry of the eps-bounded attacks: start draws, step directions, the map into
ball ∩ [0, 1] (exact in float32), the one step-size rule."""
import numpy as np
import pytest

from scratchadv import defenses
from scratchadv.attacks import NORMS, default_step_size, get_norm
from scratchadv.attacks.geometry import L2, LINF, L2Ball, LinfBox, l2_scale_then_clip, linf_box

EPS_FLOAT32_HARD = (0.1, 0.3, 1 / 3, 0.07, 2 / 3, 1e-3)   # none exactly representable


def edge_images(n=4, dtype=np.float32, seed=0):
    """Images with pixels at 0, at 1, at grey levels k/255 and random values."""
    r = np.random.default_rng(seed)
    x = (r.integers(0, 256, size=(n, 1, 28, 28)) / 255).astype(dtype)
    x[:, :, :3] = 0
    x[:, :, 3:6] = 1
    x[:, :, 6:9] = r.random((n, 1, 3, 28)).astype(dtype)
    return x


def l2_dist(a, b):
    d = a.reshape(len(a), -1).astype(np.float64) - b.reshape(len(b), -1).astype(np.float64)
    return np.sqrt((d * d).sum(1))


# --- Linf: the inward-rounded box ----------------------------------------------

@pytest.mark.parametrize("eps", EPS_FLOAT32_HARD)
def test_linf_box_is_inside_the_ball_and_as_large_as_float32_allows(eps):
    x = edge_images()
    lo, hi = linf_box(x, eps)
    xd, lod, hid = (v.astype(np.float64) for v in (x, lo, hi))
    assert lo.dtype == hi.dtype == np.float32
    assert np.all((0 <= lod) & (lod <= xd) & (xd <= hid) & (hid <= 1))
    assert np.all(xd - lod <= eps) and np.all(hid - xd <= eps)          # exactly, no slack
    # rounded inwards by no more than needed: one float32 further out leaves ball or box
    out_lo = np.nextafter(lo, np.float32(-np.inf)).astype(np.float64)
    out_hi = np.nextafter(hi, np.float32(np.inf)).astype(np.float64)
    assert np.all((out_lo < 0) | (xd - out_lo > eps))
    assert np.all((out_hi > 1) | (out_hi - xd > eps))


def test_linf_box_rounding_matters_in_float32():
    # the naive float32 box x -/+ eps leaves the ball somewhere: the test above has teeth
    x = edge_images()
    naive = [np.abs(np.clip(x + s * np.float32(e), 0, 1).astype(np.float64) - x).max() > e
             for e in EPS_FLOAT32_HARD for s in (-1, 1)]
    assert any(naive)


def test_linf_clip_is_the_projection_and_stays_in_ball_and_box():
    x = edge_images()
    r = np.random.default_rng(1)
    eps = np.array([0.1, 0.3, 1 / 3, 0.07])            # one radius per image
    box = LINF.feasible(x, eps)
    assert isinstance(box, LinfBox)
    v = (x + r.uniform(-2, 2, size=x.shape)).astype(np.float32)
    out = box.clip(v)
    lo, hi = linf_box(x, eps)
    np.testing.assert_array_equal(out, np.minimum(np.maximum(v, lo), hi))   # nearest point
    assert out.dtype == np.float32
    d = np.abs(out.astype(np.float64) - x.astype(np.float64)).reshape(4, -1).max(1)
    assert np.all(d <= eps) and out.min() >= 0 and out.max() <= 1
    inside = box.clip(out)                                                  # idempotent
    np.testing.assert_array_equal(inside, out)
    sub = box.take(np.array([2, 0]))
    np.testing.assert_array_equal(sub.clip(v[[2, 0]]), out[[2, 0]])


# --- L2: scale onto the ball, then clip to the box --------------------------------

@pytest.mark.parametrize("eps", [0.05, 0.5, 1.5, 1 / 3, 7.0])
def test_l2_scale_then_clip_stays_in_ball_and_box_exactly(eps):
    x = edge_images(6)
    r = np.random.default_rng(2)
    for scale in (0.01, 0.1, 1.0, 10.0):
        v = (x + scale * r.standard_normal(x.shape)).astype(np.float32)
        out = L2.feasible(x, eps).clip(v)
        assert out.dtype == np.float32 and out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1
        assert np.all(l2_dist(out, x) <= eps)                               # exactly


def test_l2_clip_scales_radially_when_the_box_does_not_bind():
    x = np.full((3, 1, 28, 28), 0.5, dtype=np.float32)
    r = np.random.default_rng(3)
    d = r.standard_normal(x.shape)
    length = np.array([0.1, 0.4, 1.0])           # inside, and twice and five times outside
    d *= (length / l2_dist(d, np.zeros_like(d))).reshape(-1, 1, 1, 1)
    v = (x + d).astype(np.float32)               # coordinates stay far from 0 and 1
    eps = np.array([0.2, 0.2, 0.2])
    out = L2Ball.around(x, eps).clip(v)
    np.testing.assert_array_equal(out[0], v[0])                 # inside: unchanged
    for i in (1, 2):                                            # outside: on the sphere,
        np.testing.assert_allclose(l2_dist(out[i:i + 1], x[:1]), 0.2, rtol=1e-5)
        want = x[i] + (v[i] - x[i]) * 0.2 / l2_dist(v[i:i + 1], x[i:i + 1])[0]
        np.testing.assert_allclose(out[i], want, atol=1e-6)    # along the same ray


def test_l2_clip_is_feasible_but_not_always_the_nearest_point():
    """When ball and box both bind, scale-then-clip is a point of the intersection, and a
    closer one exists (why it is not called a projection)."""
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 0, 0] = 0.5
    v = x.copy()
    v[0, 0, 0, 0] = 0.5 + 0.6          # pushed beyond the box's 1
    v[0, 0, 0, 1] = -0.8               # and below its 0
    out = l2_scale_then_clip(x, v, 0.5)
    assert l2_dist(out, x)[0] <= 0.5
    nearer = x.copy()
    nearer[0, 0, 0, 0] = 1.0           # clip to the box first: inside the ball, closer to v
    assert l2_dist(nearer, x)[0] <= 0.5
    assert l2_dist(nearer, v)[0] < l2_dist(out, v)[0]


# --- random starts: the same draws as before -----------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_start_draws_are_the_documented_streams(dtype):
    n, restarts = 3, 2
    got = LINF.draw_start(np.random.default_rng(5), n, restarts, dtype)
    ref = np.random.default_rng(5).uniform(-1.0, 1.0, size=(n, restarts, 784))
    np.testing.assert_array_equal(got, ref.reshape(n, restarts, 1, 28, 28).astype(dtype))
    assert got.dtype == dtype and np.abs(got).max() <= 1
    got = L2.draw_start(np.random.default_rng(5), n, restarts, dtype)
    z = np.random.default_rng(5).standard_normal(size=(n, restarts, 786))   # S^(d+1), Voelker et al.
    ref = z[..., :784] / np.sqrt((z * z).sum(-1, keepdims=True))
    np.testing.assert_array_equal(got, ref.reshape(n, restarts, 1, 28, 28).astype(dtype))
    assert np.all(l2_dist(got.reshape(-1, 1, 28, 28), np.zeros((n * restarts, 1, 28, 28))) <= 1 + 1e-6)


@pytest.mark.parametrize("name", NORMS)
def test_a_batch_draws_what_its_images_draw_one_after_another(name):
    norm = get_norm(name)
    batch = norm.draw_start(np.random.default_rng(9), 4, 3, np.float64)
    rng = np.random.default_rng(9)
    singles = np.concatenate([norm.draw_start(rng, 1, 3, np.float64) for _ in range(4)])
    np.testing.assert_array_equal(batch, singles)


def test_l2_start_fills_the_ball_not_the_sphere():
    u = L2.draw_start(np.random.default_rng(0), 200, 1, np.float64).reshape(200, -1)
    r = np.sqrt((u * u).sum(1))
    # the radius of a uniform point in the d-ball has P(r <= t) = t^d: almost all near 1,
    # but strictly inside
    assert np.all(r < 1) and np.all(r > 0.98)


# --- step directions ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_directions(dtype):
    r = np.random.default_rng(4)
    g = r.standard_normal((3, 1, 28, 28)).astype(dtype)
    g[1] = 0                                                   # no gradient: no step
    g[2, 0, :20] = 0                                           # ties at 0
    s = LINF.direction(g)
    np.testing.assert_array_equal(s, np.sign(g))
    assert s.dtype == dtype
    u = L2.direction(g)
    assert u.dtype == dtype
    n = l2_dist(u, np.zeros_like(u))
    np.testing.assert_allclose(n[[0, 2]], 1.0, rtol=1e-6)
    assert n[1] == 0
    for i in (0, 2):                                           # parallel to g
        np.testing.assert_allclose(u[i], g[i] / l2_dist(g[i:i + 1], 0 * g[i:i + 1])[0],
                                   rtol=1e-6, atol=1e-7)


def test_directions_are_steepest_for_their_norm():
    # <g, d> over the unit ball of the norm is maximised by the direction
    r = np.random.default_rng(6)
    g = r.standard_normal((1, 1, 28, 28))
    best = {"linf": np.abs(g).sum(), "l2": np.sqrt((g * g).sum())}   # the dual norms
    for name in NORMS:
        d = get_norm(name).direction(g)
        np.testing.assert_allclose((g * d).sum(), best[name], rtol=1e-12)


# --- lookup, diameters, the step-size rule ----------------------------------------------

def test_get_norm_and_diameters():
    assert get_norm("linf") is LINF and get_norm("l2") is L2 and NORMS == ("linf", "l2")
    with pytest.raises(ValueError, match="norm.*l3"):
        get_norm("l3")
    zeros = np.zeros((1, 1, 28, 28))
    ones = np.ones((1, 1, 28, 28))
    assert LINF.diameter == np.abs(ones - zeros).max()
    assert L2.diameter == l2_dist(ones, zeros)[0] == 28.0


def test_one_step_size_rule():
    assert default_step_size(0.3, 40) == 2.5 * 0.3 / 40
    np.testing.assert_array_equal(default_step_size(np.array([0.1, 0.2]), 4),
                                  2.5 * np.array([0.1, 0.2]) / 4)
    for eps, steps in ((0.1, 7), (0.3, 5), (1 / 3, 3)):
        assert defenses.default_step_size(eps, steps) == default_step_size(eps, steps)
    assert defenses.default_step_size(eps=0.3, steps=7) == default_step_size(0.3, 7)

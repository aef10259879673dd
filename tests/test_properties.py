"""Property-based tests (hypothesis) of the attack invariants over random shapes, eps and seeds.

For every bounded attack: results lie inside the eps-ball (Linf or L2) and in [0, 1],
keep the input dtype and shape, eps = 0 is the identity, and the same seed gives the
same bits.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchadv import attacks
from scratchadv.model import get_architecture

ARCHS = {name: get_architecture(name) for name in ("lecture-cnn-v1", "mlp-v1")}
PARAMS = {name: a.init_params(7) for name, a in ARCHS.items()}

common = settings(max_examples=25, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    r = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "binary", "sparse"]))
    if kind == "uniform":
        x = r.random((n, 1, 28, 28), dtype=np.float32)
    elif kind == "binary":            # many pixels exactly at the box edges 0 and 1
        x = (r.random((n, 1, 28, 28)) > 0.7).astype(np.float32)
    else:                             # digit-like: blank background, exact ties
        x = np.zeros((n, 1, 28, 28), np.float32)
        x[:, :, 8:20, 10:18] = r.random((n, 1, 12, 8), dtype=np.float32)
    y = r.integers(0, 10, size=n).astype(np.int64)
    return x, y, seed


def run(method, arch, x, y, eps, norm, seed, steps=2):
    p, f = PARAMS[arch], ARCHS[arch].predict
    rng = np.random.default_rng(seed)
    if method == "fgsm":
        return attacks.fgsm(p, x, y, eps=eps, norm=norm, predict_fn=f)
    step = max(eps / 2, 1e-3)
    return attacks.pgd(p, x, y, eps=eps, steps=steps, step_size=step, norm=norm, restarts=2,
                       rng=rng, predict_fn=f)


@common
@given(b=batches(), eps=st.floats(0.0, 0.6), norm=st.sampled_from(["linf", "l2"]),
       method=st.sampled_from(["fgsm", "pgd"]), arch=st.sampled_from(sorted(ARCHS)))
def test_inside_ball_and_box(b, eps, norm, method, arch):
    x, y, seed = b
    if norm == "l2":
        eps *= 5                     # L2 radii are larger in pixel units
    res = run(method, arch, x, y, eps, norm, seed)
    xa = res.x_adv
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert xa.min() >= 0.0 and xa.max() <= 1.0
    d = (xa.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    if norm == "linf":
        assert np.abs(d).max(initial=0.0) <= eps + 1e-6
    else:
        assert np.sqrt((d ** 2).sum(1)).max() <= eps * (1 + 1e-5) + 1e-6
    assert res.loss.shape == (len(x),) and np.all(res.loss >= res.loss_start - 1e-5)


@common
@given(b=batches(), norm=st.sampled_from(["linf", "l2"]),
       method=st.sampled_from(["fgsm", "pgd"]), arch=st.sampled_from(sorted(ARCHS)))
def test_eps_zero_is_identity(b, norm, method, arch):
    x, y, seed = b
    res = run(method, arch, x, y, 0.0, norm, seed)
    np.testing.assert_array_equal(res.x_adv, x)
    assert np.all(res.linf == 0)


@settings(max_examples=10, deadline=None)
@given(b=batches(), eps=st.floats(0.01, 0.4), norm=st.sampled_from(["linf", "l2"]))
def test_same_seed_same_bits(b, eps, norm):
    x, y, seed = b
    a = run("pgd", "lecture-cnn-v1", x, y, eps, norm, seed)
    c = run("pgd", "lecture-cnn-v1", x, y, eps, norm, seed)
    np.testing.assert_array_equal(a.x_adv, c.x_adv)

"""APGD and APGD-T (Croce & Hein 2020) and the DLR losses.

Unit tests run on the lecture CNN with random weights and synthetic digits (float64);
the cross-check against the original implementation (pyautoattack, same weights in
PyTorch) and the comparison with PGD-40 are marked ``mnist``: they train a small model
on 2,000 MNIST images for one epoch (~2 s) in the test itself.
"""
from fractions import Fraction
import math

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from scratchadv.attacks import get_norm, pgd
from scratchadv.attacks.apgd import apgd, apgd_targeted, checkpoints, halving_rule
from scratchadv.attacks.losses import cross_entropy, dlr_loss, targeted_dlr_loss
from scratchadv.model import init_params, predict
from scratchadv.ops import per_example_cross_entropy

from conftest import TINY_N, tiny_images

N = TINY_N


def other_target(y):
    return ((y + 1) % 10).astype(np.int64)


# --- the DLR losses ------------------------------------------------------------------

def test_dlr_values_by_hand():
    z = np.array([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0]])
    # y = 0: -(3 - 1) / (3 - 0); y = 2: -(0 - 3) / (3 - 0)
    np.testing.assert_allclose(dlr_loss(z, np.array([0, 2])), [-2 / 3, 1.0], rtol=1e-12)
    # y = 0, t = 1: -(3 - 1) / (3 - (0 - 1) / 2); y = 3, t = 0: -(-1 - 3) / 3.5
    np.testing.assert_allclose(targeted_dlr_loss(z, np.array([0, 3]), np.array([1, 0])),
                               [-2 / 3.5, 4 / 3.5], rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e3])
def test_dlr_is_invariant_to_shifting_and_scaling_the_logits(scale):
    r = np.random.default_rng(0)
    z = r.normal(size=(200, 10))
    y = r.integers(0, 10, size=200)
    t = (y + r.integers(1, 10, size=200)) % 10
    shift = r.normal(size=(200, 1)) * 100
    zz = scale * z + shift
    # equal up to rounding of the shifted logits (|shift| ~ 100 costs ~1e-14 * 100 / scale)
    tol = 1e-10 / min(scale, 1.0)
    np.testing.assert_allclose(dlr_loss(zz, y), dlr_loss(z, y), rtol=tol, atol=tol)
    np.testing.assert_allclose(targeted_dlr_loss(zz, y, t), targeted_dlr_loss(z, y, t),
                               rtol=tol, atol=tol)
    # cross-entropy is not: scaling changes it (the test can tell the two apart)
    assert not np.allclose(cross_entropy(zz, y), cross_entropy(z, y))


def test_dlr_sign_tells_misclassification():
    r = np.random.default_rng(1)
    z = r.normal(size=(500, 10))
    y = r.integers(0, 10, size=500)
    assert np.array_equal(dlr_loss(z, y) > 0, z.argmax(1) != y)
    t = (y + 3) % 10
    assert np.array_equal(targeted_dlr_loss(z, y, t) > 0, z[np.arange(500), t] > z[np.arange(500), y])


def test_dlr_losses_are_differentiable():
    r = np.random.default_rng(2)
    z = r.normal(size=(8, 10))          # no ties: the ranking is locally constant
    y = r.integers(0, 10, size=8)
    t = (y + 1) % 10
    check_grads(lambda v: dlr_loss(v, y), modes=["rev"], order=2)(z)
    check_grads(lambda v: targeted_dlr_loss(v, y, t), modes=["rev"], order=2)(z)
    # the gradient only touches the classes in the formula
    g = grad(lambda v: np.sum(dlr_loss(v, y)))(z)
    assert (np.count_nonzero(g, axis=1) <= 4).all()


def test_cross_entropy_is_the_ops_one():
    r = np.random.default_rng(3)
    z = r.normal(size=(5, 10))
    y = r.integers(0, 10, size=5)
    np.testing.assert_array_equal(cross_entropy(z, y), per_example_cross_entropy(z, y))


@pytest.mark.parametrize("call, exc, word", [
    (lambda: dlr_loss(np.zeros(10), np.zeros(1, dtype=np.int64)), ValueError, "logits"),
    (lambda: dlr_loss([[1.0, 2.0, 3.0]], np.zeros(1, dtype=np.int64)), TypeError, "logits"),
    (lambda: dlr_loss(np.zeros((2, 2)), np.zeros(2, dtype=np.int64)), ValueError, "K >= 3"),
    (lambda: dlr_loss(np.zeros((2, 10), dtype=np.int64), np.zeros(2, dtype=np.int64)),
     TypeError, "dtype"),
    (lambda: dlr_loss(np.zeros((2, 10)), np.zeros(3, dtype=np.int64)), ValueError, "y"),
    (lambda: dlr_loss(np.zeros((2, 10)), np.array([0, 10])), ValueError, "y"),
    (lambda: targeted_dlr_loss(np.zeros((2, 3)), np.zeros(2, dtype=np.int64),
                               np.ones(2, dtype=np.int64)), ValueError, "K >= 4"),
    (lambda: targeted_dlr_loss(np.zeros((2, 10)), np.zeros(2, dtype=np.int64),
                               np.array([1.0, 2.0])), TypeError, "target"),
    (lambda: cross_entropy(np.zeros((2, 10)), np.zeros(1, dtype=np.int64)), ValueError, "y"),
])
def test_losses_refuse_bad_inputs(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# --- the schedule ------------------------------------------------------------------------

def test_checkpoints_are_the_papers_list_for_100_steps():
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # the paper's formula in exact arithmetic: w_j = ceil(p_j N) <= N
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    assert [math.ceil(q * 100) for q in p if q * 100 <= 100] == checkpoints(100)


def test_checkpoints_for_other_lengths():
    assert checkpoints(1) == [0, 1]
    assert checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]    # windows of at least 1
    w = checkpoints(1000)
    assert w[:4] == [0, 220, 410, 570] and w[-1] <= 1000
    assert min(np.diff(w)) == 60


def _raised(trace):
    """How many steps of a loss trace raised the loss (the paper's count)."""
    trace = np.asarray(trace, dtype=float)
    return int(np.sum(trace[1:] > trace[:-1]))


def test_halving_rule_on_a_crafted_loss_trace():
    # first window (22 steps): 16 of 22 raised the loss is fewer than 0.75 * 22 = 16.5
    base = np.cumsum(np.ones(23))
    sixteen = base.copy()                           # six steps down (each then up again)
    sixteen[[3, 7, 11, 15, 19, 21]] = sixteen[[2, 6, 10, 14, 18, 20]] - 0.5
    assert _raised(sixteen) == 16
    seventeen = base.copy()
    seventeen[[3, 7, 11, 15, 19]] = seventeen[[2, 6, 10, 14, 18]] - 0.5
    assert _raised(seventeen) == 17
    first = dict(window=22, rho=0.75, best=np.array([23.0]), best_last=np.array([1.0]),
                 halved_last=np.array([True]))
    assert halving_rule([_raised(sixteen)], **first).tolist() == [True]
    assert halving_rule([_raised(seventeen)], **first).tolist() == [False]
    # "fewer than": exactly rho * window (12 of 16) does not halve, 11 does
    later = dict(window=16, rho=0.75, best=np.array([5.0]), best_last=np.array([4.0]),
                 halved_last=np.array([False]))
    assert halving_rule([12], **later).tolist() == [False]
    assert halving_rule([11], **later).tolist() == [True]
    # condition 2: no better loss since the last checkpoint and the step was not halved
    # there -> halve; if it was halved there, only condition 1 counts
    stalled = dict(window=16, rho=0.75, best=np.array([4.0, 4.0]), best_last=np.array([4.0, 4.0]))
    assert halving_rule([16, 16], halved_last=np.array([False, True]), **stalled).tolist() \
        == [True, False]


# --- the algorithm -----------------------------------------------------------------------

def _unit_start(norm, rng, n, dtype):
    u = get_norm(norm).draw_start(rng, n, 1, dtype)[:, 0]
    flat = u.reshape(n, -1)
    size = np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))
    return u / size.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_first_step_is_the_papers(norm, eps, params, data):
    """x0 = P(x + eps u), |u| = 1 (the original's start); x1 = P(x0 + 2 eps d(g(x0)))."""
    x, y = data
    geometry = get_norm(norm)
    ball = geometry.feasible(x, np.full(N, eps))
    x0 = ball.clip(x + eps * _unit_start(norm, np.random.default_rng(4), N, x.dtype))
    assert np.allclose(x0, np.clip(x0, 0, 1))
    g = grad(lambda v: np.sum(per_example_cross_entropy(predict(params, v), y)))(x0)
    x1 = ball.clip(x0 + 2 * eps * geometry.direction(g))
    res = apgd(params, x, y, eps=eps, norm=norm, steps=1, rng=np.random.default_rng(4))
    z0, z1 = predict(params, x0), predict(params, x1)
    f0, f1 = per_example_cross_entropy(z0, y), per_example_cross_entropy(z1, y)
    # the first successful point, else the higher loss
    take1 = (z0.argmax(1) == y) & ((z1.argmax(1) != y) | (f1 > f0))
    assert take1.any()
    want = np.where(take1.reshape(-1, 1, 1, 1), x1, x0)
    np.testing.assert_allclose(res.x_adv, want, atol=1e-12)
    assert np.array_equal(res.steps, take1.astype(int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0), ("linf", 0.1 + 1e-9)])
@pytest.mark.parametrize("which", ["apgd-ce", "apgd-dlr", "apgd-t", "apgd-targeted"])
def test_results_inside_the_ball_exactly(which, norm, eps, dtype, params):
    p = {k: v.astype(dtype) for k, v in params.items()}
    x = tiny_images(N, seed=2, dtype=dtype)
    y = np.argmax(predict(p, x), 1).astype(np.int64)
    kw = dict(eps=eps, norm=norm, steps=8, rng=np.random.default_rng(0))
    res = {"apgd-ce": lambda: apgd(p, x, y, **kw),
           "apgd-dlr": lambda: apgd(p, x, y, loss="dlr", **kw),
           "apgd-t": lambda: apgd_targeted(p, x, y, n_targets=2, **kw),
           "apgd-targeted": lambda: apgd(p, x, y, target=other_target(y), **kw)}[which]()
    assert res.x_adv.dtype == dtype and res.x_adv.shape == x.shape
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    d = res.x_adv.astype(np.float64) - x.astype(np.float64)
    size = np.abs(d).reshape(N, -1).max(1) if norm == "linf" else \
        np.sqrt((d ** 2).reshape(N, -1).sum(1))
    assert (size <= eps).all(), size.max() - eps
    assert np.array_equal(res.pred, predict(p, res.x_adv).argmax(1))


def test_eps_zero_returns_x(params, data):
    x, y = data
    res = apgd(params, x, y, eps=0.0, steps=5)
    np.testing.assert_array_equal(res.x_adv, x)
    assert not res.success.any()


def test_already_fooled_images_are_not_attacked(params, data):
    x, y = data
    wrong = y.copy()
    wrong[:3] = (y[:3] + 1) % 10          # the clean x already misclassifies these
    res = apgd(params, x, wrong, eps=0.1, steps=5)
    np.testing.assert_array_equal(res.x_adv[:3], x[:3])
    assert res.success[:3].all() and (res.steps[:3] == 0).all()
    assert not np.may_share_memory(res.x_adv, x)


def test_attacks_succeed_and_stop_at_first_success(params, data):
    x, y = data
    res = apgd(params, x, y, eps=0.3, steps=20)
    assert res.success.all()               # random weights flip easily at eps 0.3
    assert np.array_equal(res.success, res.pred != y)
    assert (res.steps < 20).all()          # each stopped at its first success
    # targeted: success means the target's class
    t = other_target(y)
    for loss in ("ce", "dlr"):
        r = apgd(params, x, y, eps=0.3, steps=30, loss=loss, target=t)
        assert np.array_equal(r.target, t)
        assert np.array_equal(r.success, r.pred == t) and r.success.mean() >= 0.5


def test_apgd_t_counts_misclassification_and_targets_ranked_classes(params, data):
    x, y = data
    res = apgd_targeted(params, x, y, eps=0.3, steps=20)
    assert res.target is None and np.array_equal(res.success, res.pred != y)
    assert res.success.all()
    # a given target: apgd on the targeted DLR loss, then the targeted CE on the images left
    t = other_target(y)
    rng = np.random.default_rng(1)
    a = apgd_targeted(params, x, y, eps=0.05, steps=10, target=t, rng=np.random.default_rng(1))
    b = apgd(params, x, y, eps=0.05, steps=10, loss="dlr", target=t, rng=rng)
    left = np.flatnonzero(~b.success)
    assert 0 < len(left) < len(x)                      # both runs have work at this eps
    c = apgd(params, x[left], y[left], eps=0.05, steps=10, loss="ce", target=t[left], rng=rng)
    np.testing.assert_array_equal(a.x_adv[b.success], b.x_adv[b.success])
    np.testing.assert_array_equal(a.x_adv[left], c.x_adv)
    np.testing.assert_array_equal(a.success, a.pred == t)
    assert a.success.sum() == b.success.sum() + c.success.sum()
    assert a.loss_history.shape == b.loss_history.shape


def test_more_steps_never_hurt_on_average(params, data):
    x, y = data
    few = apgd(params, x, y, eps=0.02, steps=2, loss="dlr")
    many = apgd(params, x, y, eps=0.02, steps=40, loss="dlr")
    assert many.success.sum() >= few.success.sum()


RUNS = {
    "ce-linf": lambda p, x, y, r, **k: apgd(p, x, y, eps=0.05, steps=12, rng=r, **k),
    "dlr-l2-restarts": lambda p, x, y, r, **k: apgd(p, x, y, eps=0.5, norm="l2", loss="dlr",
                                                   steps=12, restarts=2, rng=r, **k),
    "targeted": lambda p, x, y, r, **k: apgd(p, x, y, eps=0.05, steps=12,
                                             target=other_target(y), rng=r, **k),
    "apgd-t": lambda p, x, y, r, **k: apgd_targeted(p, x, y, eps=0.03, steps=12, n_targets=3,
                                                    rng=r, **k),
}
FIELDS = ("x_adv", "success", "steps", "l2", "linf", "probs", "loss", "loss_start")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_batch_equals_one_by_one(name, params, data):
    x, y = data
    run = RUNS[name]
    batch = run(params, x, y, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    singles = [run(params, x[i:i + 1], y[i:i + 1], rng) for i in range(N)]
    chunked = run(params, x, y, np.random.default_rng(11), batch_size=4)
    for f in FIELDS:
        got = getattr(batch, f)
        for want in (np.concatenate([getattr(s, f) for s in singles]), getattr(chunked, f)):
            if got.dtype.kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f)
            else:
                np.testing.assert_array_equal(got, want, err_msg=f)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_same_seed_same_bits(name, params, data):
    x, y = data
    a = RUNS[name](params, x, y, np.random.default_rng(5))
    b = RUNS[name](params, x, y, np.random.default_rng(5))
    c = RUNS[name](params, x, y, None)
    d = RUNS[name](params, x, y, None)
    for f in FIELDS:
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes(), f
        assert getattr(c, f).tobytes() == getattr(d, f).tobytes(), f
    other = RUNS[name](params, x, y, np.random.default_rng(6))
    assert not np.array_equal(a.x_adv, other.x_adv)


# --- bad inputs -------------------------------------------------------------------------

def _bad_calls(params, x, y):
    for f in (apgd, apgd_targeted):
        yield f, dict(x=x[:, 0]), ValueError, "x"
        yield f, dict(x=(x * 2)), ValueError, "x"
        yield f, dict(y=y[:-1]), ValueError, "y"
        yield f, dict(y=y.astype(float)), TypeError, "y"
        yield f, dict(eps=-0.1), ValueError, "eps"
        yield f, dict(eps="0.1"), TypeError, "eps"
        yield f, dict(norm="l1"), ValueError, "norm"
        yield f, dict(steps=0), ValueError, "steps"
        yield f, dict(steps=2.5), TypeError, "steps"
        yield f, dict(restarts=0), ValueError, "restarts"
        yield f, dict(rho=0.0), ValueError, "rho"
        yield f, dict(rho=1.5), ValueError, "rho"
        yield f, dict(target=y), ValueError, "target"
        yield f, dict(target=10), ValueError, "target"
        yield f, dict(rng=0), TypeError, "rng"
        yield f, dict(batch_size=0), ValueError, "batch_size"
        yield f, dict(verbose="yes"), TypeError, "verbose"
        yield f, dict(params={"w": np.zeros(3)}), ValueError, "params"
    yield apgd, dict(loss="cw"), ValueError, "loss"
    yield apgd_targeted, dict(n_targets=0), ValueError, "n_targets"
    yield apgd_targeted, dict(n_targets=10), ValueError, "n_targets"


def test_bad_inputs_are_refused_with_the_parameters_name(params, data):
    x, y = data
    n = 0
    for f, change, exc, word in _bad_calls(params, x, y):
        args = dict(params=params, x=x, y=y, eps=0.1, steps=2)
        args.update(change)
        p, xx, yy = args.pop("params"), args.pop("x"), args.pop("y")
        with pytest.raises(exc, match=word):
            f(p, xx, yy, **args)
        n += 1
    assert n == 39


# --- full data: against PGD-40 and the original implementation -------------------------

N_CROSS = 200        # test images of the cross-check
TOL = 0.015          # the 1.5 points (3 images of 200; random starts differ)


@pytest.fixture(scope="module")
def small_model(mnist):
    from scratchadv.train import fit
    x_train, y_train, x_test, y_test = mnist
    p, _ = fit(init_params(0), x_train[:2000], y_train[:2000], epochs=1, batch_size=128,
               seed=0, verbose=False)
    return p, x_test[:N_CROSS], y_test[:N_CROSS]


@pytest.fixture(scope="module")
def ours(small_model):
    """Our results, computed once per (attack, norm, eps)."""
    p, x, y = small_model
    cache = {}

    def get(which, norm, eps, n=N_CROSS):
        key = (which, norm, eps, n)
        if key not in cache:
            if which == "apgd-t":
                cache[key] = apgd_targeted(p, x[:n], y[:n], eps=eps, norm=norm)
            else:
                cache[key] = apgd(p, x[:n], y[:n], eps=eps, norm=norm, loss=which[5:])
        return cache[key]
    return get


@pytest.mark.mnist
@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 1.5)])
def test_apgd_beats_pgd40(norm, eps, small_model, ours):
    p, x, y = small_model
    base = pgd(p, x, y, eps=eps, norm=norm, steps=40, step_size=2.5 * eps / 40)
    assert ours("apgd-ce", norm, eps).success.sum() >= base.success.sum()
    assert ours("apgd-dlr", norm, eps).success.sum() >= base.success.sum()


@pytest.fixture
def torch1():
    """torch on one thread for the test (two threads fight over the two shared cores)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.mark.mnist
@pytest.mark.parametrize("which, norm, eps, n", [
    ("apgd-ce", "linf", 0.1, N_CROSS), ("apgd-dlr", "linf", 0.1, N_CROSS),
    ("apgd-ce", "l2", 1.5, N_CROSS), ("apgd-dlr", "l2", 1.5, N_CROSS),
    ("apgd-t", "linf", 0.1, 100)])
def test_robust_accuracy_matches_pyautoattack(which, norm, eps, n, small_model, ours, torch1):
    torch = torch1
    base = pytest.importorskip("pyautoattack.autopgd_base")
    from scratchadv.torch_model import to_torch
    p, x, y = small_model
    x, y = x[:n], y[:n]
    module = to_torch(p)
    rn = {"linf": "Linf", "l2": "L2"}[norm]
    if which == "apgd-t":
        ref = base.APGDAttack_targeted(module, n_iter=100, norm=rn, eps=eps, seed=0,
                                       device="cpu", n_target_classes=9)
    else:
        ref = base.APGDAttack(module, n_iter=100, norm=rn, eps=eps, loss=which[5:], seed=0,
                              device="cpu")
    adv = ref.perturb(torch.from_numpy(x), torch.from_numpy(y))
    with torch.no_grad():
        ref_acc = float(np.mean(module(adv).argmax(1).numpy() == y))
    res = ours(which, norm, eps, n)
    acc = float(np.mean(res.pred == y))
    assert abs(acc - ref_acc) <= TOL + 1e-9, (acc, ref_acc)
    # and the attack really works on this model: far below the clean accuracy
    assert acc < np.mean(predict(p, x).argmax(1) == y) - 0.3


def test_explicit_target_dlr_is_the_papers_while_y_leads_then_targets_the_rival():
    """With success ``pred == target`` the targeted DLR compares the target with its
    strongest rival: the paper's formula while y leads, and it keeps pushing once a third
    class has overtaken y (the paper's, comparing with y only, would not)."""
    from scratchadv.attacks.apgd import _dlr_to_target, _dlr_towards
    lab = np.array([[0, 2], [0, 2]])
    z = np.array([[3.0, 1.0, 0.5, 0.2, 0.0, -1, -1, -1, -1, -1],     # y = 0 leads
                  [2.0, 3.0, 0.5, 0.2, 0.0, -1, -1, -1, -1, -1]])    # class 1 overtook y
    ours, paper = _dlr_to_target(z, lab), _dlr_towards(z, lab)
    assert ours[0] == pytest.approx(paper[0])
    assert ours[1] < paper[1]                 # the target is further from winning than from y
    den = 3.0 - (0.5 + 0.2) / 2              # z_pi1 - (z_pi3 + z_pi4) / 2
    assert ours[1] == pytest.approx(-(3.0 - 0.5) / den) and paper[1] == pytest.approx(-(2.0 - 0.5) / den)

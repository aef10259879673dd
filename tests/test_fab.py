"""FAB and FAB-T (scratchadv.attacks.fab): projections against brute force, the first step
on a linear model, the AttackResult contract, bad inputs, and a cross-check against the
original implementation (pyautoattack's FABAttack_PT) on the same weights.
"""
import itertools

import autograd.numpy as anp
import numpy as np
import pytest

from scratchadv.attacks.fab import (fab, fab_targeted, project_l2, project_linf,
                                    ranked_wrong_classes)
from scratchadv.model import get_architecture, predict

from conftest import TINY_N, tiny_images

N = TINY_N
EPS = {"linf": 0.1, "l2": 1.5}
PER_SAMPLE_FIELDS = ("x_adv", "success", "steps", "l1", "l2", "linf", "probs", "pred", "loss",
                     "loss_start", "eps")


# --- the projections against brute force ---------------------------------------------

def random_problem(rng, n, d, scale=1.0):
    t = rng.uniform(0, 1, (n, d))
    t[:, 0] = rng.integers(0, 2, n)          # some coordinates on the box's faces
    w = rng.normal(size=(n, d))
    w[:, 1] *= rng.integers(0, 2, n)         # and some zero normals
    b = (w * t).sum(1) + scale * rng.normal(size=n)
    return t, w, b


def l2_brute_force(t, w, b):
    """min ||d||_2, <w, t + d> = b, 0 <= t + d <= 1 by trying every active set: each
    coordinate at its lower bound, its upper bound, or free (d_free = mu w_free)."""
    lo, hi = -t, 1 - t
    c = b - w @ t
    best, best_norm = None, np.inf
    for pattern in itertools.product((0, 1, 2), repeat=len(t)):
        p = np.array(pattern)
        d = np.where(p == 0, lo, np.where(p == 1, hi, 0.0))
        free = p == 2
        rest = c - w[~free] @ d[~free]
        wf = w[free]
        if wf @ wf > 1e-12:
            d[free] = rest / (wf @ wf) * wf
        elif abs(rest) > 1e-9:
            continue
        ok = np.all(d >= lo - 1e-9) and np.all(d <= hi + 1e-9) and abs(w @ d - c) < 1e-9
        if ok and np.linalg.norm(d) < best_norm:
            best, best_norm = d, np.linalg.norm(d)
    return best


def linf_lp(t, w, b):
    """min ||d||_inf by linear programming over (d, lam): the optimal value, or None."""
    from scipy.optimize import linprog
    d = len(t)
    cost = np.r_[np.zeros(d), 1.0]
    eye = np.eye(d)
    a_ub = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    bounds = [(-ti, 1 - ti) for ti in t] + [(0, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None],
                  b_eq=[b - w @ t], bounds=bounds, method="highs")
    return res.x[-1] if res.status == 0 else None


def corner(t, w, b):
    """The box corner farthest along the side of the hyperplane (where it misses the box)."""
    toward = np.sign(b - w @ t) * np.sign(w)
    return np.where(toward > 0, 1 - t, np.where(toward < 0, -t, 0.0))


def test_l2_projection_is_the_exact_minimiser():
    rng = np.random.default_rng(0)
    t, w, b = random_problem(rng, 40, 5)
    d = project_l2(t, w, b)
    hits = 0
    for i in range(len(t)):
        want = l2_brute_force(t[i], w[i], b[i])
        if want is None:                     # hyperplane misses the box
            np.testing.assert_allclose(d[i], corner(t[i], w[i], b[i]), atol=1e-12)
        else:
            hits += 1
            np.testing.assert_allclose(d[i], want, atol=1e-9)
    assert 10 < hits < 40                    # both cases were exercised


def test_linf_projection_reaches_the_lp_optimum():
    rng = np.random.default_rng(1)
    t, w, b = random_problem(rng, 40, 6)
    d = project_linf(t, w, b)
    hits = 0
    for i in range(len(t)):
        opt = linf_lp(t[i], w[i], b[i])
        if opt is None:
            np.testing.assert_allclose(d[i], corner(t[i], w[i], b[i]), atol=1e-12)
            continue
        hits += 1
        assert abs(w[i] @ (t[i] + d[i]) - b[i]) < 1e-9
        assert np.all(t[i] + d[i] >= -1e-12) and np.all(t[i] + d[i] <= 1 + 1e-12)
        assert np.abs(d[i]).max() == pytest.approx(opt, abs=1e-8)
    assert 10 < hits < 40


@pytest.mark.parametrize("proj", [project_linf, project_l2])
def test_projection_of_a_point_on_the_hyperplane_is_zero(proj):
    rng = np.random.default_rng(2)
    t, w, _ = random_problem(rng, 5, 7)
    np.testing.assert_array_equal(proj(t, w, (w * t).sum(1)), 0.0)


@pytest.mark.parametrize("name", ["linf", "l2"])
def test_projections_agree_with_the_original(name):
    torch = pytest.importorskip("torch")
    fab_projections = pytest.importorskip("pyautoattack.fab_projections")
    ref = {"linf": fab_projections.projection_linf, "l2": fab_projections.projection_l2}[name]
    ours = {"linf": project_linf, "l2": project_l2}[name]
    rng = np.random.default_rng(3)
    for scale in (0.01, 1.0, 30.0):          # from deep inside to beyond the box
        t, w, b = random_problem(rng, 50, 40, scale)
        want = ref(torch.tensor(t), torch.tensor(w), torch.tensor(b)).numpy()
        np.testing.assert_allclose(ours(t, w, b), want, atol=1e-12)


# --- a linear model: the first step is the exact minimal perturbation -------------------

def linear_model(dtype=np.float64):
    """softmax regression whose classes 0 and 1 are the only contenders (others at -100)."""
    arch = get_architecture("softmax-v1")
    p = arch.init_params(5, dtype=dtype)
    rng = np.random.default_rng(5)
    p["dense1.weight"] = (rng.normal(size=p["dense1.weight"].shape) * 0.05).astype(dtype)
    b = np.full(10, -100.0)
    b[:2] = 0.0
    p["dense1.bias"] = b.astype(dtype)
    x = np.full((1, 1, 28, 28), 0.5, dtype=dtype)
    z = arch.predict(p, x)[0]
    y = int(np.argmax(z[:2]))
    p["dense1.bias"][1 - y] = z[y] - z[1 - y] - 0.3     # margin 0.3: the box never binds
    return arch, p, x, np.array([y]), 1 - y


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_first_step_on_a_linear_model_lands_on_the_boundary(norm, targeted):
    arch, p, x, y, t = linear_model()
    w = (p["dense1.weight"][t] - p["dense1.weight"][y[0]]).ravel()
    f = float(arch.predict(p, x)[0, t] - arch.predict(p, x)[0, y[0]])
    assert f == pytest.approx(-0.3)
    exact = -f * (np.sign(w) / np.abs(w).sum() if norm == "linf" else w / (w @ w))
    res = fab(p, x, y, norm=norm, steps=1, eta=1.0 + 1e-6, predict_fn=arch.predict,
              target=t if targeted else None)
    assert res.success[0] and res.pred[0] == t
    d = (res.x_adv - x).ravel() / (1.0 + 1e-6)
    np.testing.assert_allclose(d, exact, rtol=1e-6, atol=1e-12)
    z = arch.predict(p, x + d.reshape(x.shape))[0]
    assert abs(z[t] - z[y[0]]) < 1e-9                # x + d is on the decision boundary
    assert res.eps[0] == pytest.approx(np.abs(exact).max() if norm == "linf"
                                       else np.linalg.norm(exact), rel=1e-5)


# --- the AttackResult contract ------------------------------------------------------------

@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("which", ["fab", "fab-target", "fab-t"])
def test_in_ball_exactly_and_in_box(norm, which, params):
    x = tiny_images(N, seed=2, dtype=np.float32)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    y = np.argmax(predict(p32, x), 1).astype(np.int64)
    eps = {"linf": 0.03, "l2": 0.3}[norm]    # some images fall, some do not
    if which == "fab-t":
        res = fab_targeted(p32, x, y, eps=eps, norm=norm, n_targets=3, steps=10)
    else:
        target = (y + 1) % 10 if which == "fab-target" else None
        res = fab(p32, x, y, eps=eps, norm=norm, steps=10, target=target)
    assert res.x_adv.dtype == np.float32
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    size = getattr(res, norm)
    assert np.all(size <= eps)              # float64 of the stored values, no slack
    np.testing.assert_array_equal(res.x_adv[~res.success], x[~res.success])
    assert res.success.any() and not res.success.all()
    if which == "fab-target":
        np.testing.assert_array_equal(res.success, res.pred == res.target)
    else:
        np.testing.assert_array_equal(res.success, res.pred != y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_norm_mode_reports_the_norm_found(norm, params, data):
    x, y = data
    res = fab(params, x, y, norm=norm, steps=20)
    assert res.success.all()
    np.testing.assert_array_equal(res.eps, getattr(res, norm))
    bounded = fab(params, x, y, norm=norm, steps=20, eps=float(np.median(res.eps)))
    # the same trajectories: success within eps exactly where the minimal norm is <= eps
    np.testing.assert_array_equal(bounded.success, res.eps <= np.median(res.eps))


def test_misclassified_images_are_kept(params, data):
    x, y = data
    wrong = y.copy()
    wrong[:2] = (y[:2] + 1) % 10
    res = fab(params, x, wrong, steps=5)
    assert res.success[:2].all() and np.all(res.eps[:2] == 0) and np.all(res.steps[:2] == 0)
    np.testing.assert_array_equal(res.x_adv[:2], x[:2])


def test_final_search_only_shrinks(params, data):
    x, y = data
    plain = fab(params, x, y, norm="l2", steps=8)
    searched = fab(params, x, y, norm="l2", steps=8, final_search=3)
    assert searched.success.all()
    assert np.all(searched.l2 <= plain.l2) and np.any(searched.l2 < plain.l2)


def test_restarts_never_hurt_and_start_off_x(params, data):
    x, y = data
    one = fab(params, x, y, steps=10, rng=np.random.default_rng(0))
    three = fab(params, x, y, steps=10, restarts=3, rng=np.random.default_rng(0))
    assert np.all(three.linf <= one.linf)
    assert np.any(three.linf < one.linf)


def test_fab_targeted_runs_the_ranked_classes(params, data):
    x, y = data
    z = predict(params, x)
    ranked = ranked_wrong_classes(z, y, 9)
    assert ranked.shape == (N, 9) and not np.any(ranked == y[:, None])
    assert np.all(np.diff(np.take_along_axis(z, ranked, 1), axis=1) <= 0)
    eps = 0.02
    one = fab_targeted(params, x, y, eps=eps, n_targets=1, steps=10)
    # one target: the same run as fab towards the runner-up, counted as misclassification
    direct = fab(params, x, y, eps=eps, steps=10, target=ranked[:, 0])
    assert np.all(one.success >= direct.success)
    nine = fab_targeted(params, x, y, eps=eps, steps=10)
    assert one.target is None and np.all(nine.success >= one.success)


# --- batch == one by one; seeds ----------------------------------------------------------

def smooth_predict(p, x):
    """A tanh network: smooth, so rounding-level differences between a batch and its images
    stay rounding-level. (On a ReLU network an iterate ~1e-16 off can sit on the other side
    of a kink, where the gradient differs by O(1): FAB's trajectories then part, which no
    bookkeeping can prevent.)"""
    h = anp.tanh(anp.reshape(x, (x.shape[0], -1)) @ p["w1"].T + p["b1"])
    return h @ p["w2"].T + p["b2"]


@pytest.fixture(scope="module")
def smooth(data):
    r = np.random.default_rng(9)
    p = {"w1": r.normal(size=(32, 784)) * 0.1, "b1": np.zeros(32),
         "w2": r.normal(size=(10, 32)), "b2": np.zeros(10)}
    x, _ = data
    return p, x, np.argmax(smooth_predict(p, x), 1).astype(np.int64)


def run_smooth(attack, **kw):
    return lambda p, x, y, r: attack(p, x, y, predict_fn=smooth_predict, rng=r, **kw)


ALL = {
    "fab-linf-min": run_smooth(fab, steps=6, restarts=2),
    "fab-l2-bounded": run_smooth(fab, norm="l2", eps=0.3, steps=6, restarts=2),
    "fab-target": lambda p, x, y, r: fab(p, x, y, steps=6, target=(y + 3) % 10, rng=r,
                                         predict_fn=smooth_predict),
    "fab-t": run_smooth(fab_targeted, eps=0.02, n_targets=3, steps=5, restarts=2),
    "fab-t-early": run_smooth(fab_targeted, eps=0.02, n_targets=3, steps=5, early_stop=True),
    # one step: more steps of regula falsi converge onto the boundary itself, where the
    # rounding of the batch decides the side
    "fab-final-search": run_smooth(fab, norm="l2", steps=4, final_search=1),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_batch_equals_one_by_one(name, smooth):
    p, x, y = smooth
    batch = ALL[name](p, x, y, np.random.default_rng(11))
    assert batch.success.any()
    rng = np.random.default_rng(11)
    singles = [ALL[name](p, x[i:i + 1], y[i:i + 1], rng) for i in range(N)]
    for f in PER_SAMPLE_FIELDS:
        got, want = getattr(batch, f), np.concatenate([getattr(s, f) for s in singles])
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f)


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_seed_same_bits(name, smooth):
    p, x, y = smooth
    a = ALL[name](p, x, y, np.random.default_rng(5))
    b = ALL[name](p, x, y, np.random.default_rng(5))
    for f in PER_SAMPLE_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_another_seed_other_restarts(params, data):
    x, y = data
    a = fab(params, x, y, steps=6, restarts=2, rng=np.random.default_rng(1))
    b = fab(params, x, y, steps=6, restarts=2, rng=np.random.default_rng(2))
    assert not np.array_equal(a.x_adv, b.x_adv)


def test_early_stop_keeps_success(params, data):
    x, y = data
    full = fab_targeted(params, x, y, eps=0.03, n_targets=3, steps=10)
    early = fab_targeted(params, x, y, eps=0.03, n_targets=3, steps=10, early_stop=True)
    np.testing.assert_array_equal(full.success, early.success)
    assert np.all(early.linf <= 0.03)


# --- bad inputs --------------------------------------------------------------------------

BAD = [
    (dict(norm="l1"), ValueError, "norm"),
    (dict(eps=-0.1), ValueError, "eps"),
    (dict(eps="0.1"), TypeError, "eps"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.5), TypeError, "steps"),
    (dict(restarts=0), ValueError, "restarts"),
    (dict(alpha_max=1.5), ValueError, "alpha_max"),
    (dict(eta=0.0), ValueError, "eta"),
    (dict(beta=0.0), ValueError, "beta"),
    (dict(beta=1.2), ValueError, "beta"),
    (dict(final_search=-1), ValueError, "final_search"),
    (dict(early_stop=1), TypeError, "early_stop"),
    (dict(early_stop=True), ValueError, "early_stop"),      # without eps
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(rng=0), TypeError, "rng"),
]


@pytest.mark.parametrize("kw,exc,word", BAD)
def test_fab_bad_settings(kw, exc, word, params, data):
    x, y = data
    with pytest.raises(exc, match=word):
        fab(params, x, y, **kw)


@pytest.mark.parametrize("kw,exc,word", BAD[1:] + [(dict(n_targets=0), ValueError, "n_targets"),
                                                 (dict(n_targets=10), ValueError, "n_targets")])
def test_fab_targeted_bad_settings(kw, exc, word, params, data):
    x, y = data
    kw = {"eps": 0.1, **kw}
    if word == "early_stop" and exc is ValueError:
        kw["eps"] = None
    with pytest.raises(exc, match=word):
        fab_targeted(params, x, y, **kw)


@pytest.mark.parametrize("attack", [fab, lambda *a, **k: fab_targeted(*a, eps=0.1, **k)])
def test_bad_images_labels_model(attack, params, data):
    x, y = data
    with pytest.raises(ValueError, match="x"):
        attack(params, x * 2, y)
    with pytest.raises(TypeError, match="x"):
        attack(params, x.astype(np.int64), y)
    with pytest.raises(ValueError, match="y"):
        attack(params, x, y[:-1])
    with pytest.raises(ValueError, match="dense1.weight"):
        attack({k: v for k, v in params.items() if k != "dense1.weight"}, x, y)


def test_bad_target(params, data):
    x, y = data
    with pytest.raises(ValueError, match="target"):
        fab(params, x, y, target=y)
    with pytest.raises(ValueError, match="target"):
        fab(params, x, y, target=10)


def test_bad_projection_problems():
    t, w, b = np.full((2, 3), 0.5), np.ones((2, 3)), np.zeros(2)
    with pytest.raises(ValueError, match="t, w, b"):
        project_linf(t, w[:, :2], b)
    with pytest.raises(ValueError, match="t: expected points in"):
        project_l2(t + 1, w, b)
    with pytest.raises(ValueError, match="finite"):
        project_l2(t, w * np.nan, b)


# --- against the original on the same weights (full data) --------------------------------

@pytest.fixture(scope="module")
def small_model(mnist):
    """The one-hidden-layer MLP after one epoch on 4000 training images (a second). An MLP
    rather than the CNN keeps the 9 x 100 FAB steps of both implementations within seconds;
    the algorithm sees only logits and gradients, whatever the network."""
    from scratchadv.train import fit
    arch = get_architecture("mlp-v1")
    x_train, y_train, _, _ = mnist
    params, _ = fit(arch.init_params(0), x_train[:4000], y_train[:4000], epochs=1,
                    batch_size=64, seed=0, verbose=False, predict_fn=arch.predict)
    return arch, params


@pytest.fixture
def one_torch_thread():
    """The reference on one thread: on a shared machine two threads of each library fight."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_fab(module, norm, eps, targeted, n_targets=9):
    from pyautoattack.fab_pt import FABAttack_PT
    return FABAttack_PT(module, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1,
                        n_iter=100, eps=eps, targeted=targeted, n_target_classes=n_targets,
                        device="cpu")


@pytest.mark.mnist
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_robust_accuracy_matches_the_original(norm, small_model, mnist, one_torch_thread):
    """FAB-T at Linf eps 0.1 / L2 eps 1.5 on 100 test images: robust accuracy within 1.5
    points of FABAttack_PT's. Both runs start from x with no randomness, so only float32
    (theirs) against float64 (our projections) rounding separates the trajectories; 1.5
    points is one image of 100."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyautoattack")
    from scratchadv.torch_model import to_torch
    arch, params = small_model
    _, _, x_test, y_test = mnist
    x, y = x_test[:100], y_test[:100].astype(np.int64)
    eps = EPS[norm]
    ours = fab_targeted(params, x, y, eps=eps, norm=norm, predict_fn=arch.predict)
    module = to_torch(params, arch.name)
    adv = reference_fab(module, norm, eps, True).perturb(torch.from_numpy(x), torch.from_numpy(y))
    with torch.no_grad():
        ref_robust = float((module(adv).argmax(1).numpy() == y).mean())
    robust = float((ours.pred == y).mean())
    assert abs(robust - ref_robust) <= 0.015, (robust, ref_robust)
    assert 0.05 < robust < 0.95              # the comparison has something to compare
    assert np.all(getattr(ours, norm) <= eps)


@pytest.mark.mnist
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimal_norms_match_the_original(norm, small_model, mnist, one_torch_thread):
    """Minimal-norm FAB-T along the runner-up class's boundary, on the correctly classified
    of 60 test images: median norm within 5% of the original's single run
    (FABAttack_PT.attack_single_run, which returns its closest adversarial point whatever
    eps; success: misclassification). Same start, same steps: only rounding separates them."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pyautoattack")
    from scratchadv.torch_model import to_torch
    arch, params = small_model
    _, _, x_test, y_test = mnist
    x, y = x_test[:60], y_test[:60].astype(np.int64)
    correct = np.argmax(arch.predict(params, x), 1) == y
    x, y = x[correct], y[correct]
    ours = fab_targeted(params, x, y, eps=None, norm=norm, n_targets=1, predict_fn=arch.predict)
    module = to_torch(params, arch.name)
    ref = reference_fab(module, norm, EPS[norm], True)
    ref.target_class = 2                     # the second-highest logit: our runner-up
    adv = ref.attack_single_run(torch.from_numpy(x), torch.from_numpy(y), is_targeted=True)
    d = (adv.numpy() - x).reshape(len(x), -1).astype(np.float64)
    ref_norms = np.abs(d).max(1) if norm == "linf" else np.sqrt((d * d).sum(1))
    with torch.no_grad():
        ref_ok = module(adv).argmax(1).numpy() != y
    assert abs(ours.success.mean() - ref_ok.mean()) <= 0.02
    ours_med, ref_med = np.median(ours.eps[ours.success]), np.median(ref_norms[ref_ok])
    assert abs(ours_med / ref_med - 1) <= 0.05, (ours_med, ref_med)

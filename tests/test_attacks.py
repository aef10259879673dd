"""Attacks: the properties every attack must have, on a tiny model and synthetic digits.

Unit tests run in float64 on the lecture CNN with random weights (fast, and its
predictions flip easily); the full-data checks at the end are marked ``mnist``.
"""
import numpy as np
import pytest

from scratchadv.attacks import (AttackResult, fake_image, fgsm, gradient_ascent,
                                minimal_perturbation, penalty_attack, pgd)
from scratchadv.losses import per_example_loss
from scratchadv.model import get_architecture, init_params, predict

from conftest import TINY_N, tiny_images

N = TINY_N


def other_target(y):
    return ((y + 3) % 10).astype(np.int64)


def ce(params, x, labels):
    return per_example_loss(params, x, labels)


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# every eps-bounded attack configuration: name -> callable(params, x, y, eps, rng)
BOUNDED = {
    "fgsm-linf": lambda p, x, y, e, r, **k: fgsm(p, x, y, eps=e, **k),
    "fgsm-l2": lambda p, x, y, e, r, **k: fgsm(p, x, y, eps=e, norm="l2", **k),
    "bim-linf": lambda p, x, y, e, r, **k: pgd(p, x, y, eps=e, steps=5, step_size=e / 4,
                                                random_start=False, **k),
    "pgd-linf": lambda p, x, y, e, r, **k: pgd(p, x, y, eps=e, steps=5, step_size=e / 4,
                                                rng=r, **k),
    "pgd-l2": lambda p, x, y, e, r, **k: pgd(p, x, y, eps=e, steps=5, step_size=e / 4,
                                              norm="l2", rng=r, **k),
    "pgd-linf-restarts": lambda p, x, y, e, r, **k: pgd(p, x, y, eps=e, steps=3,
                                                         step_size=e / 3, restarts=3, rng=r, **k),
}
EPS = {"linf": 0.1, "l2": 1.5}


def norm_of(name):
    return "l2" if "l2" in name else "linf"


# --- eps = 0, the ball and the box -------------------------------------------

@pytest.mark.parametrize("name", sorted(BOUNDED))
@pytest.mark.parametrize("targeted", [False, True])
def test_eps_zero_returns_x_unchanged(name, targeted, params, data):
    x, y = data
    kw = {"target": other_target(y)} if targeted else {}
    r = BOUNDED[name](params, x, y, 0.0, np.random.default_rng(0), **kw)
    assert np.array_equal(r.x_adv, x)
    assert r.x_adv is not x and not np.shares_memory(r.x_adv, x)
    assert np.all(r.linf == 0) and np.all(r.l2 == 0) and np.all(r.l1 == 0)
    assert np.array_equal(r.loss, r.loss_start)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_results_stay_in_ball_and_box(name, dtype, params):
    p = {k: v.astype(dtype) for k, v in params.items()}
    # include pixels at 0 and 1 and a grey level, so the box constraint is active
    x = tiny_images(N, seed=2, dtype=dtype)
    x[:, :, :2] = 1.0
    x[:, :, 5:7] = dtype(128 / 255)
    y = np.argmax(predict(p, x), 1).astype(np.int64)
    norm = norm_of(name)
    eps = EPS[norm]
    r = BOUNDED[name](p, x, y, eps, np.random.default_rng(0))
    assert r.x_adv.dtype == dtype and r.x_adv.shape == x.shape
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    d = r.x_adv.astype(np.float64) - x.astype(np.float64)    # exact difference
    if norm == "linf":
        assert np.abs(d).max() <= eps
    else:
        assert np.sqrt((d.reshape(N, -1) ** 2).sum(1)).max() <= eps
    assert np.abs(d).max() > 0          # the attack did move
    np.testing.assert_array_equal(r.linf, np.abs(d).reshape(N, -1).max(1))
    np.testing.assert_allclose(r.l2, np.sqrt((d.reshape(N, -1) ** 2).sum(1)), rtol=1e-12)
    np.testing.assert_allclose(r.l1, np.abs(d).reshape(N, -1).sum(1), rtol=1e-12)


def test_ball_is_exact_for_eps_not_representable_in_float32():
    # x - eps and x + eps rounded to float32 can fall one ulp outside the ball
    p = init_params(0)
    x = (np.arange(784 * 4, dtype=np.float32).reshape(4, 1, 28, 28) % 256) / np.float32(255)
    y = np.argmax(predict(p, x), 1)
    for eps in (0.1, 0.3, 1 / 3, 0.07):
        r = pgd(p, x, y, eps=eps, steps=3, step_size=eps, rng=np.random.default_rng(0))
        assert (r.x_adv.astype(np.float64) - x.astype(np.float64)).__abs__().max() <= eps
        assert r.linf.max() <= eps


# --- the attacked loss, the target's probability -------------------------------

@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_untargeted_loss_never_ends_below_start(name, params, data):
    x, y = data
    r = BOUNDED[name](params, x, y, EPS[norm_of(name)], np.random.default_rng(0))
    assert np.all(r.loss >= r.loss_start)
    assert np.mean(r.loss > r.loss_start) > 0.5
    np.testing.assert_allclose(r.loss_start, ce(params, x, y), rtol=1e-12)
    np.testing.assert_allclose(r.loss, ce(params, r.x_adv, y), rtol=1e-10)
    # success, prediction and probabilities describe the returned images
    z = predict(params, r.x_adv)
    np.testing.assert_array_equal(r.pred, z.argmax(1))
    np.testing.assert_array_equal(r.success, z.argmax(1) != y)
    np.testing.assert_allclose(r.probs, softmax(z), atol=1e-12)


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_targeted_raises_target_probability(name, params, data):
    x, y = data
    t = other_target(y)
    r = BOUNDED[name](params, x, y, EPS[norm_of(name)], np.random.default_rng(0), target=t)
    p0 = softmax(predict(params, x))[np.arange(N), t]
    p1 = r.probs[np.arange(N), t]
    assert np.all(p1 >= p0)
    assert np.mean(p1 > p0) > 0.5
    assert np.all(r.loss <= r.loss_start)        # the target's cross-entropy went down
    np.testing.assert_allclose(r.loss, ce(params, r.x_adv, t), rtol=1e-10)
    np.testing.assert_array_equal(r.success, r.pred == t)
    np.testing.assert_array_equal(r.target, t)


def test_targeted_pgd_reaches_target_with_large_eps(params, data):
    x, y = data
    t = other_target(y)
    r = pgd(params, x, y, eps=0.5, steps=30, step_size=0.05, target=t,
            rng=np.random.default_rng(0))
    assert r.success.all()
    np.testing.assert_array_equal(r.pred, t)


def test_iterative_beats_single_step(params, data):
    x, y = data
    f = fgsm(params, x, y, eps=0.05)
    p = pgd(params, x, y, eps=0.05, steps=10, step_size=0.01, random_start=False)
    assert np.mean(p.loss) > np.mean(f.loss)


def test_pgd_matches_the_textbook_update(params, data):
    """BIM with keep_best=False is exactly x <- clip(x + a sign(g)) projected, step by step."""
    x, y = data
    eps, a = 0.1, 0.03
    r = pgd(params, x, y, eps=eps, steps=4, step_size=a, random_start=False, keep_best=False)
    from scratchadv.losses import input_gradient
    xa = x.copy()
    for _ in range(4):
        g = input_gradient(params, xa, y)
        xa = np.clip(np.clip(xa + a * np.sign(g), x - eps, x + eps), 0, 1)
    np.testing.assert_allclose(r.x_adv, xa, atol=1e-12)
    assert np.all(r.steps == 4)


def test_l2_step_is_normalized_per_sample(params, data):
    """One L2 step of length a moves every image by exactly a (when no clipping binds)."""
    x, y = data
    xg = np.full_like(x, 0.5)      # grey images: the box cannot bind for a small step
    yg = np.argmax(predict(params, xg), 1)
    r = pgd(params, xg, yg, eps=1.0, steps=1, step_size=0.2, norm="l2", random_start=False,
            keep_best=False)
    np.testing.assert_allclose(r.l2, 0.2, rtol=1e-9)


# --- restarts ---------------------------------------------------------------

def _strength(r, i):
    return (bool(r.success[i]), float(r.loss[i]))


@pytest.mark.parametrize("keep_best", [True, False])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_never_lower_per_sample_strength(norm, keep_best, params, data):
    # for one image, restart 0 of a 4-restart run draws the same start as a 1-restart run
    x, y = data
    eps = EPS[norm]
    for i in range(N):
        kw = dict(eps=eps, steps=3, step_size=eps / 3, norm=norm, keep_best=keep_best)
        one = pgd(params, x[i:i + 1], y[i:i + 1], restarts=1, rng=np.random.default_rng(i), **kw)
        four = pgd(params, x[i:i + 1], y[i:i + 1], restarts=4, rng=np.random.default_rng(i), **kw)
        assert _strength(four, 0) >= _strength(one, 0)


def test_restarts_pick_per_sample_not_per_batch(params, data):
    """The batch result equals each image's own best restart, run one by one."""
    x, y = data
    kw = dict(eps=0.1, steps=2, step_size=0.03, restarts=3)
    batch = pgd(params, x, y, rng=np.random.default_rng(7), **kw)
    rng = np.random.default_rng(7)
    for i in range(N):
        single = pgd(params, x[i:i + 1], y[i:i + 1], rng=rng, **kw)
        np.testing.assert_allclose(batch.x_adv[i], single.x_adv[0], atol=1e-12)
        assert batch.success[i] == single.success[0]


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_stop_keeps_success_and_saves_work(norm, targeted, params, data):
    x, y = data
    eps = {"linf": 0.02, "l2": 0.4}[norm]      # some images fall, some do not
    kw = dict(eps=eps, steps=8, step_size=eps / 4, norm=norm, restarts=3,
              target=other_target(y) if targeted else None)
    full = pgd(params, x, y, rng=np.random.default_rng(0), **kw)
    fast = pgd(params, x, y, rng=np.random.default_rng(0), early_stop=True, **kw)
    assert 0 < full.success.sum() < N
    np.testing.assert_array_equal(fast.success, full.success)
    np.testing.assert_array_equal(fast.success, fast.pred != y if not targeted
                                  else fast.pred == other_target(y))
    # images that failed ran the same trajectory (up to rounding of smaller batches)
    np.testing.assert_allclose(fast.x_adv[~full.success], full.x_adv[~full.success], atol=1e-12)
    # successful ones stopped no later than the full run found its best
    assert np.all(fast.steps[full.success] <= 8)
    with pytest.raises(ValueError, match="early_stop"):
        pgd(params, x, y, eps=0.1, early_stop=True, keep_best=False)


# --- batch == one by one; seeds --------------------------------------------

def _one_by_one(run, x, y, seed):
    rng = np.random.default_rng(seed)
    return [run(x[i:i + 1], y[i:i + 1], rng) for i in range(len(x))]


ALL = {
    "fgsm": lambda p, x, y, r: fgsm(p, x, y, eps=0.1),
    "pgd-linf": lambda p, x, y, r: pgd(p, x, y, eps=0.1, steps=4, step_size=0.03, rng=r),
    "pgd-l2": lambda p, x, y, r: pgd(p, x, y, eps=1.0, steps=4, step_size=0.3, norm="l2",
                                      restarts=2, rng=r),
    "pgd-targeted": lambda p, x, y, r: pgd(p, x, y, eps=0.1, steps=4, step_size=0.03,
                                            target=other_target(y), rng=r),
    "pgd-early-stop": lambda p, x, y, r: pgd(p, x, y, eps=0.1, steps=6, step_size=0.03,
                                              restarts=2, early_stop=True, rng=r),
    "ascent": lambda p, x, y, r: gradient_ascent(p, x, y, steps=6),
    "penalty": lambda p, x, y, r: penalty_attack(p, x, other_target(y), steps=6, lr=0.5),
    "minimal-linf": lambda p, x, y, r: minimal_perturbation(p, x, y, search_steps=4, steps=5,
                                                            rng=r),
    "minimal-l2": lambda p, x, y, r: minimal_perturbation(p, x, y, norm="l2", search_steps=4,
                                                          steps=5, rng=r),
}
PER_SAMPLE_FIELDS = ("x_adv", "success", "steps", "l1", "l2", "linf", "probs", "pred", "loss",
                     "loss_start", "eps")


@pytest.mark.parametrize("name", sorted(ALL))
def test_batch_equals_one_by_one(name, params, data):
    x, y = data
    run = ALL[name]
    batch = run(params, x, y, np.random.default_rng(11))
    singles = _one_by_one(lambda xi, yi, r: run(params, xi, yi, r), x, y, 11)
    for f in PER_SAMPLE_FIELDS:
        got = getattr(batch, f)
        want = np.concatenate([getattr(s, f) for s in singles])
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f)
        else:
            np.testing.assert_array_equal(got, want, err_msg=f)


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_seed_same_bits(name, params, data):
    x, y = data
    a = ALL[name](params, x, y, np.random.default_rng(5))
    b = ALL[name](params, x, y, np.random.default_rng(5))
    for f in PER_SAMPLE_FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_different_seeds_give_different_random_starts(params, data):
    x, y = data
    a = pgd(params, x, y, eps=0.1, steps=1, step_size=0.01, rng=np.random.default_rng(1),
            keep_best=False)
    b = pgd(params, x, y, eps=0.1, steps=1, step_size=0.01, rng=np.random.default_rng(2),
            keep_best=False)
    assert not np.array_equal(a.x_adv, b.x_adv)


def test_chunking_does_not_change_results(params, data):
    x, y = data
    a = pgd(params, x, y, eps=0.1, steps=3, step_size=0.03, restarts=2,
            rng=np.random.default_rng(3))
    b = pgd(params, x, y, eps=0.1, steps=3, step_size=0.03, restarts=2,
            rng=np.random.default_rng(3), batch_size=4)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-12)


def test_fake_image_same_seed_same_bits(params):
    a = fake_image(params, 3, n=2, rng=np.random.default_rng(4), verbose=False)
    b = fake_image(params, 3, n=2, rng=np.random.default_rng(4), verbose=False)
    assert np.array_equal(a.x_adv, b.x_adv)
    c = fake_image(params, 3, n=2, rng=np.random.default_rng(5), verbose=False)
    assert not np.array_equal(a.x_adv, c.x_adv)


# --- result type ------------------------------------------------------------

def test_result_types_do_not_depend_on_n(params, data):
    x, y = data
    for n in (1, N):
        r = pgd(params, x[:n], y[:n], eps=0.1, steps=2, step_size=0.03)
        assert isinstance(r, AttackResult) and len(r) == n
        assert r.x_adv.shape == (n, 1, 28, 28) and r.x_adv.dtype == x.dtype
        assert r.success.dtype == bool and r.success.shape == (n,)
        assert r.steps.dtype == np.int64 and r.pred.dtype == np.int64
        for f in ("l1", "l2", "linf", "loss", "loss_start", "eps"):
            assert getattr(r, f).shape == (n,) and getattr(r, f).dtype == np.float64
        assert r.probs.shape == (n, 10)
        np.testing.assert_allclose(r.probs.sum(1), 1.0)
    with pytest.raises(Exception):
        r.x_adv = None          # frozen


# --- the lecture's attacks ----------------------------------------------------

def test_gradient_ascent_follows_the_lecture_rule(params, data):
    x, y = data
    r = gradient_ascent(params, x, y, steps=20)
    assert set(r.snapshots) == {0, 5, 10, 15, 20}
    np.testing.assert_array_equal(r.snapshots[0], x)
    np.testing.assert_array_equal(r.snapshots[20], r.x_adv)
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    # each step moves the most sensitive pixel by at most 0.05 (exactly, unless clipped)
    assert np.all(r.linf <= 0.05 * r.steps + 1e-12)
    assert np.all(r.loss >= r.loss_start)
    assert r.success.any()
    for i in np.flatnonzero(r.success):
        k = int(r.steps[i])
        # stopped at the first misclassified step: k - 1 steps were still correct
        if k - 1 >= 0:
            prev = gradient_ascent(params, x[i:i + 1], y[i:i + 1], steps=20,
                                   snapshot_steps=())
            assert prev.steps[0] == k
            if k > 1:
                before = gradient_ascent(params, x[i:i + 1], y[i:i + 1], steps=k - 1,
                                         snapshot_steps=())
                assert not before.success[0]
    # snapshot probabilities are those of the snapshot images
    for k, v in r.snapshots.items():
        np.testing.assert_allclose(r.snapshot_probs[k], softmax(predict(params, v)), atol=1e-12)


def test_gradient_ascent_leaves_misclassified_images_alone(params, data):
    x, y = data
    wrong = ((y + 1) % 10).astype(np.int64)
    r = gradient_ascent(params, x, wrong, steps=5)
    assert np.array_equal(r.x_adv, x)
    assert np.all(r.steps == 0) and r.success.all()


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_penalty_attack_lowers_target_loss_and_objective(penalty, params, data):
    x, y = data
    t = other_target(y)
    r = penalty_attack(params, x, t, penalty=penalty, steps=20, lr=0.5)
    assert np.all(r.loss <= r.loss_start)
    p0 = softmax(predict(params, x))[np.arange(N), t]
    assert np.all(r.probs[np.arange(N), t] > p0)
    assert r.loss_history.shape == (21, N)
    if penalty == "l2":     # smooth objective, small steps: gradient descent lowers it
        assert np.all(r.loss_history[-1] < r.loss_history[0])
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    if penalty == "l2":     # a larger penalty keeps the image closer
        r_hi = penalty_attack(params, x, t, penalty=penalty, lam=300.0, steps=20, lr=0.5)
        assert np.all(r_hi.l2 < r.l2)


def test_penalty_attack_allows_the_true_label_as_target(params, data):
    x, y = data
    r = penalty_attack(params, x, y, steps=5, lr=0.5)       # the lecture's "7 -> 7" cell
    assert r.success.all()
    assert np.all(r.loss <= r.loss_start)


def test_fake_image_reaches_target_and_prints_loss(params, capsys):
    t = np.arange(10, dtype=np.int64)
    r = fake_image(params, t, steps=30, lr=5.0, rng=np.random.default_rng(0))
    out = capsys.readouterr().out
    assert out.count("loss") == 31
    assert r.loss_history.shape == (31, 10)
    assert np.all(r.loss_history[-1] < r.loss_history[0])
    np.testing.assert_array_equal(r.pred, t)
    assert r.success.all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1 and r.x_adv.dtype == np.float64
    one = fake_image(params, 4, rng=np.random.default_rng(0), verbose=False)
    assert len(one) == 1 and one.target.tolist() == [4]
    assert capsys.readouterr().out == ""


def test_minimal_perturbation_is_minimal_and_successful(params, data):
    x, y = data
    r = minimal_perturbation(params, x, y, search_steps=8, steps=10,
                             rng=np.random.default_rng(0))
    assert np.all(np.isfinite(r.eps)) and r.success.all()
    assert np.all(r.linf <= r.eps)
    assert np.all(r.pred != y)
    # bisection on [0, 1] with 8 halvings: eps is a positive multiple of 2**-8
    k = r.eps * 2 ** 8
    assert np.all(k == np.round(k)) and np.all(k >= 1)
    # already misclassified images need no perturbation
    wrong = ((y + 1) % 10).astype(np.int64)
    r0 = minimal_perturbation(params, x, wrong, search_steps=2, steps=2)
    assert np.all(r0.eps == 0) and np.array_equal(r0.x_adv, x)


def test_minimal_perturbation_reports_inf_when_max_eps_is_too_small(params, data):
    x, y = data
    r = minimal_perturbation(params, x, y, max_eps=1e-6, search_steps=2, steps=2)
    assert np.all(np.isinf(r.eps)) and not r.success.any()
    assert np.all(r.linf <= 1e-6)


def test_shallow_models_are_attacked_through_their_predict(data):
    x, _ = data
    for name in ("softmax-v1", "mlp-v1"):
        arch = get_architecture(name)
        p = arch.init_params(0, dtype=np.float64)
        y = np.argmax(arch.predict(p, x), 1)
        r = pgd(p, x, y, eps=0.2, steps=10, step_size=0.05, predict_fn=arch.predict)
        assert np.all(r.loss >= r.loss_start) and r.linf.max() <= 0.2
        with pytest.raises(ValueError, match="params"):
            pgd(p, x, y, eps=0.1, predict_fn=predict)      # wrong architecture for predict


# --- input validation ---------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda p, x, y: pgd(p, x, y, eps=-0.1), "eps"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, steps=0), "steps"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, step_size=-0.01), "step_size"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, norm="l1"), "norm"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, restarts=0), "restarts"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, target=y), "target"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, target=11), "target"),
    (lambda p, x, y: pgd(p, x, y[:-1], eps=0.1), "y"),
    (lambda p, x, y: pgd(p, x * 255, y, eps=0.1), "x"),
    (lambda p, x, y: pgd(p, x[:, 0], y, eps=0.1), "x"),
    (lambda p, x, y: fgsm(p, x, y.astype(np.float64), eps=0.1), "y"),
    (lambda p, x, y: fgsm(p, x, y, eps=float("nan")), "eps"),
    (lambda p, x, y: gradient_ascent(p, x, y, steps=0), "steps"),
    (lambda p, x, y: penalty_attack(p, x, 3, penalty="l3"), "penalty"),
    (lambda p, x, y: penalty_attack(p, x, 3, lam=-1), "lam"),
    (lambda p, x, y: fake_image(p, 12), "target"),
    (lambda p, x, y: fake_image(p, np.arange(3), n=4), "n"),
    (lambda p, x, y: minimal_perturbation(p, x, y, max_eps=0), "max_eps"),
    (lambda p, x, y: pgd(p, x, y, eps=0.1, rng=np.random.RandomState(0)), "rng"),
])
def test_bad_inputs_are_refused_with_a_clear_message(call, match, params, data):
    x, y = data
    with pytest.raises((ValueError, TypeError), match=match):
        call(params, x, y)


# --- the gradient machinery: validated once, the same numbers -----------------------

def test_per_example_cross_entropy_is_per_example_loss_bit_for_bit(params, data):
    from autograd import make_vjp
    from scratchadv.ops import per_example_cross_entropy
    x, y = data
    for dt in (np.float32, np.float64):
        p = {k: v.astype(dt) for k, v in params.items()}
        xx = x.astype(dt)
        a = per_example_cross_entropy(predict(p, xx), y)
        assert a.dtype == dt and a.shape == (N,)
        np.testing.assert_array_equal(a, per_example_loss(p, xx, y))
        ga = make_vjp(lambda v: per_example_cross_entropy(predict(p, v), y))(xx)[0](np.ones(N, dt))
        gb = make_vjp(lambda v: per_example_loss(p, v, y))(xx)[0](np.ones(N, dt))
        np.testing.assert_array_equal(ga, gb)


def test_loops_do_not_revalidate(params, data, monkeypatch):
    """The public entry checks the images once; the steps go through the unchecked loss."""
    import sys
    from scratchadv import losses
    x, y = data
    calls = {"entry": 0}
    pgd_module = sys.modules["scratchadv.attacks.pgd"]
    real = pgd_module.check_images

    def counting(*a, **k):
        calls["entry"] += 1
        return real(*a, **k)

    def refuse(*a, **k):
        raise AssertionError("a loop re-validated through losses")

    monkeypatch.setattr(pgd_module, "check_images", counting)
    monkeypatch.setattr(losses, "_check", refuse)
    pgd(params, x, y, eps=0.1, steps=4, step_size=0.03, restarts=2)
    minimal_perturbation(params, x, y, search_steps=2, steps=2)
    assert calls["entry"] == 2
    fgsm(params, x, y, eps=0.1)
    gradient_ascent(params, x, y, steps=2)
    penalty_attack(params, x, other_target(y), steps=2)
    fake_image(params, 3, steps=2, verbose=False)


# --- full data (frugal: one shared trained model, a few hundred images) ---------

@pytest.mark.mnist
def test_natural_model_falls_to_pgd(natural_model, mnist):
    params = natural_model[0]
    _, _, x_test, y_test = mnist
    x, y = x_test[:200], y_test[:200]
    clean = np.argmax(predict(params, x), 1) == y
    assert clean.mean() > 0.97
    strong = pgd(params, x, y, eps=0.3, steps=40, step_size=0.01, rng=np.random.default_rng(0))
    assert np.mean(strong.pred == y) <= 0.01
    f = fgsm(params, x, y, eps=0.1)
    p = pgd(params, x, y, eps=0.1, steps=40, step_size=0.01, rng=np.random.default_rng(0))
    assert np.mean(p.pred == y) < np.mean(f.pred == y)
    t = ((y[:50] + 1 + np.arange(50) % 9) % 10).astype(np.int64)   # a wrong class each
    tg = pgd(params, x[:50], y[:50], eps=0.3, steps=40, step_size=0.01, target=t,
             rng=np.random.default_rng(0))
    assert np.mean(tg.success[clean[:50]]) >= 0.98


@pytest.mark.mnist
def test_natural_model_fake_images_and_lecture_attacks(natural_model, mnist):
    params = natural_model[0]
    _, _, x_test, y_test = mnist
    t = np.arange(10, dtype=np.int64)
    r = fake_image(params, t, steps=10, lr=2.0, rng=np.random.default_rng(0), verbose=False)
    assert np.all(r.probs[t, t] >= 0.99)
    x, y = x_test[:100], y_test[:100]
    a = gradient_ascent(params, x, y)
    ok = np.argmax(predict(params, x), 1) == y
    assert a.success[ok].mean() >= 0.9
    seven = x_test[np.flatnonzero(y_test == 7)[:1]].repeat(10, 0)
    pen = penalty_attack(params, seven, t)
    assert pen.success.all()


# --- command line -------------------------------------------------------------

def test_cli_fake_writes_metrics_and_figure(random_model_file, tmp_path, capsys):
    import json
    from scratchadv.cli import main
    m, f = tmp_path / "fake.json", tmp_path / "fake.png"
    rc = main(["fake", "--model", random_model_file, "--target", "all", "--steps", "3",
               "--metrics", str(m), "--figure", str(f)])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("loss") >= 4                # the loss at each step, as in the lecture
    d = json.loads(m.read_text())
    assert sorted(d["target_prob"]) == [str(c) for c in range(10)]
    assert all(len(v) == 4 for v in d["loss_per_step"].values())
    assert f.read_bytes()[:4] == b"\x89PNG"
    r = fake_image(init_params(0), np.arange(10, dtype=np.int64), steps=3,
                   rng=np.random.default_rng(0), verbose=False)
    np.testing.assert_allclose([d["target_prob"][str(c)] for c in range(10)], r.probs[range(10), range(10)])


@pytest.mark.parametrize("argv, match", [
    (["--target", "ten"], "--target"),
    (["--target", "10"], "--target"),
    (["--steps", "0"], "--steps"),
    (["--lr", "-1"], "--lr"),
])
def test_cli_fake_refuses_bad_values(random_model_file, argv, match, capsys):
    from scratchadv.cli import main
    assert main(["fake", "--model", random_model_file, *argv]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--method", "ascent", "--eps", "0.1"], "--eps"),
    (["--method", "ascent", "--target", "3"], "--target"),
    (["--method", "penalty"], "--target"),
    (["--method", "fgsm", "--steps", "3"], "--steps"),
    (["--method", "pgd", "--lam", "3"], "--lam"),
    (["--method", "pgd", "--n", "0"], "--n"),
    (["--method", "pgd", "--eps", "-1"], "--eps"),
    (["--method", "pgd", "--metrics", "/proc/no/such/dir/m.json"], "--metrics"),
])
def test_cli_attack_refuses_bad_values_before_work(random_model_file, argv, match, capsys):
    from scratchadv.cli import main
    assert main(["attack", "--model", random_model_file, *argv]) == 2
    assert match in capsys.readouterr().err


def test_cli_attack_target_must_be_a_class_or_each(random_model_file, capsys):
    from scratchadv.cli import main
    with pytest.raises(SystemExit) as e:
        main(["attack", "--model", random_model_file, "--method", "pgd", "--target", "x"])
    assert e.value.code == 2
    assert "--target" in capsys.readouterr().err


@pytest.mark.mnist
def test_cli_attack_metrics_match_the_library(random_model_file, tmp_path, mnist):
    import json
    from scratchadv.cli import main
    m, f = tmp_path / "a.json", tmp_path / "a.png"
    assert main(["attack", "--model", random_model_file, "--method", "pgd", "--eps", "0.1",
                 "--steps", "3", "--n", "20", "--seed", "2", "--metrics", str(m),
                 "--figure", str(f), "--quiet"]) == 0
    d = json.loads(m.read_text())
    _, _, x_test, y_test = mnist
    p = init_params(0)
    r = pgd(p, x_test[:20], y_test[:20], eps=0.1, steps=3, step_size=0.01,
            rng=np.random.default_rng(2))
    assert d["n"] == 20
    assert d["robust_acc"] == pytest.approx(np.mean(r.pred == y_test[:20]))
    assert d["clean_acc"] == pytest.approx(np.mean(np.argmax(predict(p, x_test[:20]), 1) == y_test[:20]))
    for k in ("success_rate", "mean_linf", "median_linf", "mean_l2", "median_l2", "mean_l1", "median_l1"):
        assert k in d
    assert d["median_linf"] <= 0.1
    assert f.read_bytes()[:4] == b"\x89PNG"
    t = tmp_path / "t.json"
    assert main(["attack", "--model", random_model_file, "--method", "pgd", "--eps", "0.3",
                 "--steps", "5", "--step-size", "0.1", "--target", "each", "--n", "3",
                 "--metrics", str(t), "--quiet"]) == 0
    d = json.loads(t.read_text())
    assert d["attacks"] == 27 and 0 <= d["success_rate"] <= 1

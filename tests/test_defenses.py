"""Defenses: the adversarial batch stays in the eps-ball, the warm-up schedule, the
gradient-regularized loss and its double-backprop gradient, and that adversarial
training buys robustness on a problem built to need it."""
import numpy as np
import pytest
from autograd import grad

from conftest import tiny_images
from scratchadv.defenses import (DEFAULTS, adversarial_batch_transform, eps_at_epoch,
                                 gradreg_loss_fn, make_defense, pgd_linf_max_loss)
from scratchadv.losses import input_gradient, loss, per_example_loss
from scratchadv.model import get_architecture, init_params


def _batch(n=16, seed=0, dtype=np.float32):
    x = tiny_images(n, seed=seed, dtype=dtype)
    y = np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)
    return x, y


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_pgd_stays_in_ball_and_raises_loss(eps):
    params = init_params(0)
    x, y = _batch()
    xa = pgd_linf_max_loss(params, x, y, eps=eps, steps=5, step_size=eps / 2,
                           rng=np.random.default_rng(0))
    assert xa.dtype == np.float32 and xa.shape == x.shape
    assert np.abs(xa.astype(np.float64) - x).max() <= eps + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1
    assert float(loss(params, xa, y)) > float(loss(params, x, y))


@pytest.mark.parametrize("eps", [0.1, 0.3, 1 / 3])
def test_pgd_ball_is_exact_in_float32(eps):
    """The training PGD clips to the attacks' inward-rounded box: |x_adv - x| <= eps holds
    for the stored float32 values, with no slack (a box x -/+ float32(eps) can be an ulp
    outside), and the step still reaches the box's edge."""
    params = init_params(0)
    x, y = _batch()
    x[:, :, 5:7] = np.float32(128 / 255)          # grey pixels: the ball binds, not [0, 1]
    xa = pgd_linf_max_loss(params, x, y, eps=eps, steps=4, step_size=eps,
                           rng=np.random.default_rng(0))
    d = np.abs(xa.astype(np.float64) - x.astype(np.float64))
    assert d.max() <= eps
    assert d.max() > eps - 1e-7


def test_pgd_same_seed_same_bits_and_zero_eps_is_identity():
    params = init_params(0)
    x, y = _batch()
    a = pgd_linf_max_loss(params, x, y, eps=0.1, steps=3, step_size=0.03, rng=np.random.default_rng(5))
    b = pgd_linf_max_loss(params, x, y, eps=0.1, steps=3, step_size=0.03, rng=np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert np.array_equal(pgd_linf_max_loss(params, x, y, eps=0.0, steps=3, step_size=0.03,
                                            rng=np.random.default_rng(5)), x)


def test_eps_warmup_schedule():
    assert [eps_at_epoch(0.3, e, 3) for e in range(6)] == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    assert [eps_at_epoch(0.1, e, 0) for e in range(3)] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize("clean_frac", [0.0, 0.25, 1.0])
def test_batch_transform_mixes_and_keeps_ball(clean_frac):
    params = init_params(0)
    x, y = _batch(16)
    t = adversarial_batch_transform(eps=0.2, pgd_steps=3, clean_frac=clean_frac, eps_warmup=1)
    for epoch, eps in ((0, 0.1), (1, 0.2)):
        xb, yb = t(params, x, y, np.random.default_rng(0), epoch)
        assert yb is y and xb.dtype == x.dtype and xb.shape == x.shape
        d = np.abs(xb.astype(np.float64) - x).reshape(len(x), -1).max(1)
        assert d.max() <= eps + 1e-6
        assert xb.min() >= 0 and xb.max() <= 1
        # exactly round(clean_frac * B) images untouched (the random start moves all others)
        assert int(np.sum(d == 0)) == round(clean_frac * len(x))
    assert np.array_equal(x, _batch(16)[0])  # the input batch is not modified in place


def test_gradreg_loss_equals_loss_at_lam_zero_and_explicit_penalty():
    params = {k: v.astype(np.float64) for k, v in init_params(1).items()}
    x, y = _batch(6, dtype=np.float64)
    assert float(gradreg_loss_fn(0.0)(params, x, y)) == pytest.approx(float(loss(params, x, y)), rel=1e-12)
    # explicit: each example's own gradient, one at a time, squared L2 norm, batch mean
    sq = [np.sum(grad(lambda xi: per_example_loss(params, xi, y[i:i + 1])[0])(x[i:i + 1]) ** 2)
          for i in range(len(x))]
    lam = 3.0
    expected = float(loss(params, x, y)) + lam * np.mean(sq)
    assert float(gradreg_loss_fn(lam)(params, x, y)) == pytest.approx(expected, rel=1e-10)
    # and the batched input gradient is that per-example gradient
    assert np.sum(input_gradient(params, x, y) ** 2) / len(x) == pytest.approx(np.mean(sq), rel=1e-10)


def test_gradreg_weight_gradient_matches_finite_differences():
    """Double backprop: d/dW of (loss + lam * mean ||d loss_i/d x_i||^2) vs central differences."""
    r = np.random.default_rng(0)
    # random biases and noisy images: away from ReLU kinks and pooling ties, where the
    # input gradient (hence the penalty) is not differentiable w.r.t. W
    params = {k: (v + (0.1 * r.standard_normal(v.shape) if k.endswith("bias") else 0)).astype(np.float64)
              for k, v in init_params(2).items()}
    x = r.uniform(0, 1, (4, 1, 28, 28))
    y = r.integers(0, 10, 4).astype(np.int64)
    f = gradreg_loss_fn(10.0)
    g = grad(f)(params, x, y)
    for _ in range(3):
        d = {k: r.standard_normal(v.shape) for k, v in params.items()}
        h = 1e-6
        fp = f({k: v + h * d[k] for k, v in params.items()}, x, y)
        fm = f({k: v - h * d[k] for k, v in params.items()}, x, y)
        fd = (fp - fm) / (2 * h)
        an = sum(np.sum(g[k] * d[k]) for k in params)
        assert an == pytest.approx(fd, rel=1e-5, abs=1e-8)
    # the penalty contributes: its gradient differs from the plain loss's
    g0 = grad(loss)(params, x, y)
    assert max(np.abs(g[k] - g0[k]).max() for k in params) > 1e-6


def test_make_defense_defaults_and_errors():
    assert make_defense("none") == (None, None, {"defense": "none"})
    lf, bt, cfg = make_defense("gradreg")
    assert bt is None and cfg == {"defense": "gradreg", "lam": DEFAULTS["gradreg"]["lam"]}
    lf, bt, cfg = make_defense("pgd", eps=0.1)
    assert lf is None and callable(bt)
    assert cfg["eps"] == 0.1 and cfg["pgd_steps"] == DEFAULTS["pgd"]["pgd_steps"]
    assert cfg["pgd_step_size"] == pytest.approx(2.5 * 0.1 / DEFAULTS["pgd"]["pgd_steps"])
    _, _, cfg = make_defense("pgd", eps=0.3, eps_warmup=4.0, clean_frac=0.25, epochs=10)
    assert cfg["eps_warmup"] == 4 and cfg["clean_frac"] == 0.25
    with pytest.raises(ValueError, match="lam"):
        make_defense("pgd", lam=1.0)
    with pytest.raises(ValueError, match="eps"):
        make_defense("gradreg", eps=0.1)
    with pytest.raises(ValueError, match="defense"):
        make_defense("madry")
    with pytest.raises(ValueError, match="eps_warmup"):
        make_defense("pgd", eps=0.3, eps_warmup=10, epochs=10)
    with pytest.raises(ValueError, match="eps"):
        make_defense("pgd", eps=1.5)
    with pytest.raises(ValueError, match="lam"):
        make_defense("gradreg", lam=-1.0)


def _robust_vs_nonrobust_data(n, seed):
    """Two classes (labels 0/1) separable two ways (Tsipras et al. 2019, sec. 2.1):

    - a robust feature: a 6x6 block at +-0.35 from gray, agreeing with the label 90% of the time;
    - a non-robust one: every other pixel shifted by +-0.05 plus noise (std 0.15), which
      together predict the label almost perfectly but flip under an eps 0.1 attack.
    """
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n).astype(np.int64)
    s = (2 * y - 1).astype(np.float64)[:, None, None, None]
    x = 0.5 + 0.05 * s + 0.15 * r.standard_normal((n, 1, 28, 28))
    agree = np.where(r.random(n) < 0.9, 1.0, -1.0)[:, None, None, None]
    x[:, :, :6, :6] = 0.5 + 0.35 * s * agree
    return np.clip(x, 0, 1).astype(np.float32), y


def test_adversarial_training_improves_robust_accuracy():
    from scratchadv.train import fit
    arch = get_architecture("softmax-v1")
    x, y = _robust_vs_nonrobust_data(1024, 0)
    xt, yt = _robust_vs_nonrobust_data(400, 1)

    def robust_acc(p):
        xa = pgd_linf_max_loss(p, xt, yt, eps=0.1, steps=20, step_size=0.01,
                               rng=np.random.default_rng(9), predict_fn=arch.predict)
        return float(np.mean(np.argmax(arch.predict(p, xa), 1) == yt))

    common = dict(epochs=8, batch_size=64, seed=0, predict_fn=arch.predict, verbose=False)
    nat, _ = fit(arch.init_params(0), x, y, **common)
    _, bt, _ = make_defense("pgd", eps=0.1, pgd_steps=5, predict_fn=arch.predict)
    adv, _ = fit(arch.init_params(0), x, y, batch_transform=bt, **common)
    clean_nat = float(np.mean(np.argmax(arch.predict(nat, xt), 1) == yt))
    assert clean_nat > 0.85                      # natural training learns the task ...
    r_nat, r_adv = robust_acc(nat), robust_acc(adv)
    assert r_nat < 0.2                           # ... but not robustly
    assert r_adv > r_nat + 0.5 and r_adv > 0.8   # adversarial training uses the robust block

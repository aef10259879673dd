"""TRADES (Zhang et al. 2019), the eps-dependent defaults and robust model selection.

The loss and its weight gradient against finite differences in float64, the KL's
direction and reduction as the reference code computes them, the inner maximisation,
beta = 0 as plain cross-entropy training, TRADES against natural training on a problem
built to need robustness, the default rule (eps 0.1 unchanged, eps 0.3 the measured
schedule), selection of the most robust epoch, and bad inputs named by parameter or flag.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from autograd import grad
from autograd.tracer import getval

from conftest import tiny_images
from test_defenses import _robust_vs_nonrobust_data
from scratchadv.defenses import (DEFAULTS, LARGE_EPS, defaults_for, make_defense,
                                 pgd_linf_max_loss, robust_accuracy, robust_selection,
                                 trades_batch_transform, trades_kl, trades_linf_max_kl,
                                 trades_loss, trades_loss_fn)
from scratchadv.gradcheck import check_gradients, generic_point
from scratchadv.losses import loss
from scratchadv.model import get_architecture, init_params
from scratchadv.ops import cross_entropy, log_softmax
from scratchadv.optim import sgd
from scratchadv.train import fit, plan_training


def _batch(n=8, seed=0, dtype=np.float32):
    x = tiny_images(n, seed=seed, dtype=dtype)
    y = np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)
    return x, y


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --- the loss -----------------------------------------------------------------------

def test_kl_is_clean_first_summed_over_classes_and_averaged_over_the_batch():
    """KLDivLoss(reduction='sum')(log_softmax(z'), softmax(z)) / N = (1/N) sum p (log p - log q)."""
    r = np.random.default_rng(0)
    z, za = 3 * r.standard_normal((5, 10)), 3 * r.standard_normal((5, 10))
    p, q = _softmax(z), _softmax(za)
    expected = np.sum(p * (np.log(p) - np.log(q))) / 5
    assert float(trades_kl(z, za)) == pytest.approx(expected, rel=1e-12)
    # the direction matters: KL(q || p) is another number
    assert abs(float(trades_kl(za, z)) - expected) > 1e-3
    assert float(trades_kl(z, z)) == pytest.approx(0, abs=1e-15)
    assert float(trades_kl(z, z + 7.0)) == pytest.approx(0, abs=1e-12)   # shift-invariant
    # a batch mean, not a sum: repeating the batch keeps the value
    assert float(trades_kl(np.vstack([z, z]), np.vstack([za, za]))) == pytest.approx(expected, rel=1e-12)


def test_trades_loss_is_ce_plus_beta_kl():
    params = {k: v.astype(np.float64) for k, v in init_params(1).items()}
    x, y = _batch(6, dtype=np.float64)
    xa = np.clip(x + 0.05 * np.random.default_rng(1).standard_normal(x.shape), 0, 1)
    arch = get_architecture("lecture-cnn-v1")
    z, za = arch.predict(params, x), arch.predict(params, xa)
    for beta in (0.0, 1.0, 6.0):
        expected = float(cross_entropy(z, y)) + beta * float(trades_kl(z, za))
        assert float(trades_loss(params, x, xa, y, beta)) == pytest.approx(expected, rel=1e-10)
    # the fit hook on the (clean, adversarial) pair is the same number
    pair = trades_loss_fn(6.0)(params, np.concatenate([x, xa]), np.concatenate([y, y]))
    assert float(pair) == pytest.approx(float(trades_loss(params, x, xa, y, 6.0)), rel=1e-12)


def test_trades_weight_gradient_matches_finite_differences_through_both_branches():
    r = np.random.default_rng(0)
    params, x = generic_point(init_params(2), tiny_images(4, seed=3), r)
    y = r.integers(0, 10, 4).astype(np.int64)
    xa = np.clip(x + 0.1 * r.uniform(-1, 1, x.shape), 0, 1)
    beta = 5.0
    rows = check_gradients(lambda p: trades_loss(p, x, xa, y, beta), (params,), names=["params"],
                           coords=6, directions=2, rtol=1e-5, atol=1e-9)
    assert len(rows) == len(params) and all(row["passed"] for row in rows)

    # the clean branch of the KL carries gradient too: stopping it changes the result
    def adv_branch_only(p):
        n = len(x)
        z = get_architecture("lecture-cnn-v1").predict(p, np.concatenate([x, xa]))
        zc = z[:n]
        lp = log_softmax(getval(zc))
        kl = np.sum(np.exp(lp) * (lp - log_softmax(z[n:]))) / n
        return cross_entropy(zc, y) + beta * kl
    g, g_adv = grad(lambda p: trades_loss(p, x, xa, y, beta))(params), grad(adv_branch_only)(params)
    assert float(adv_branch_only(params)) == pytest.approx(float(trades_loss(params, x, xa, y, beta)))
    assert max(np.abs(g[k] - g_adv[k]).max() for k in params) > 1e-6


# --- the inner maximisation ---------------------------------------------------------

@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_inner_max_raises_the_kl_and_stays_in_the_ball(eps):
    params = init_params(0)
    x, _ = _batch(16)
    x[:, :, 5:7] = np.float32(128 / 255)        # grey pixels: the ball binds, not [0, 1]
    kw = dict(eps=eps, step_size=eps / 4, rng=None)

    def kl_at(steps, seed=0):
        xa = trades_linf_max_kl(params, x, steps=steps, **{**kw, "rng": np.random.default_rng(seed)})
        return xa, float(trades_kl(get_architecture("lecture-cnn-v1").predict(params, x),
                                   get_architecture("lecture-cnn-v1").predict(params, xa)))
    start, kl0 = kl_at(0)
    xa, kl = kl_at(10)
    assert kl > 10 * kl0 and kl > 1e-3
    for v in (start, xa):
        assert v.dtype == np.float32 and v.shape == x.shape
        assert np.abs(v.astype(np.float64) - x.astype(np.float64)).max() <= eps   # exact, no slack
        assert v.min() >= 0 and v.max() <= 1
    # the start is the paper's x + 0.001 N(0, 1), clipped to the box
    noise = np.float32(0.001) * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    assert np.array_equal(start, np.clip(x + noise, 0, 1))
    assert np.array_equal(kl_at(10)[0], xa)                      # same seed, same bits
    assert np.array_equal(trades_linf_max_kl(params, x, steps=3, **{**kw, "eps": 0.0,
                                             "rng": np.random.default_rng(0)}), x)


def test_batch_transform_pairs_clean_and_adversarial_under_the_warmup():
    params = init_params(0)
    x, y = _batch(8)
    t = trades_batch_transform(eps=0.2, pgd_steps=3, eps_warmup=1)
    for epoch, eps in ((0, 0.1), (1, 0.2)):
        xb, yb = t(params, x, y, np.random.default_rng(0), epoch)
        assert xb.shape == (16, 1, 28, 28) and np.array_equal(xb[:8], x)
        assert np.array_equal(yb, np.concatenate([y, y]))
        d = np.abs(xb[8:].astype(np.float64) - x).max()
        assert eps - 1e-6 < d <= eps


# --- training ---------------------------------------------------------------------

def test_beta_zero_is_plain_cross_entropy_training():
    arch = get_architecture("softmax-v1")
    x, y = _robust_vs_nonrobust_data(256, 0)
    lf, bt, cfg = make_defense("trades", eps=0.1, beta=0.0, pgd_steps=2, predict_fn=arch.predict)
    assert cfg["beta"] == 0.0
    p = arch.init_params(0)
    xb, yb = bt(p, x[:32], y[:32], np.random.default_rng(0), 0)
    g, g0 = grad(lf)(p, xb, yb), grad(loss)(p, x[:32], y[:32], arch.predict)
    assert float(lf(p, xb, yb)) == pytest.approx(float(loss(p, x[:32], y[:32], arch.predict)), rel=1e-6)
    assert all(np.allclose(g[k], g0[k], rtol=1e-5, atol=1e-7) for k in p)
    common = dict(epochs=2, batch_size=32, seed=0, predict_fn=arch.predict, verbose=False)
    nat, _ = fit(arch.init_params(0), x, y, **common)
    tr, _ = fit(arch.init_params(0), x, y, loss_fn=lf, batch_transform=bt, **common)
    assert all(np.allclose(nat[k], tr[k], rtol=1e-4, atol=1e-5) for k in nat)


def test_trades_beats_natural_training_under_pgd():
    """The synthetic problem of test_defenses: a robust 6x6 block (90% agreement) and a
    non-robust texture that an eps 0.1 attack flips; TRADES must learn the block."""
    arch = get_architecture("softmax-v1")
    x, y = _robust_vs_nonrobust_data(1024, 0)
    xt, yt = _robust_vs_nonrobust_data(400, 1)

    def accuracy(p, xx):
        return float(np.mean(np.argmax(arch.predict(p, xx), 1) == yt))

    def robust(p):
        return accuracy(p, pgd_linf_max_loss(p, xt, yt, eps=0.1, steps=20, step_size=0.01,
                                             rng=np.random.default_rng(9), predict_fn=arch.predict))

    # SGD: under RMSprop the TRADES weights of this two-class problem (ten outputs) swing
    # between the robust solution and one that lets a whole class be flipped (robust
    # accuracy 0.91 <-> 0.49 from one epoch to the next); SGD with momentum settles
    common = dict(epochs=12, batch_size=64, seed=0, predict_fn=arch.predict, verbose=False,
                  optimizer=sgd())
    nat, _ = fit(arch.init_params(0), x, y, **common)
    lf, bt, _ = make_defense("trades", eps=0.1, beta=6.0, pgd_steps=5, predict_fn=arch.predict)
    tr, _ = fit(arch.init_params(0), x, y, loss_fn=lf, batch_transform=bt, **common)
    assert accuracy(nat, xt) > 0.85 and robust(nat) < 0.2
    assert accuracy(tr, xt) > 0.8
    assert robust(tr) > robust(nat) + 0.5 and robust(tr) > 0.8


# --- defaults that depend on eps ----------------------------------------------------

#: make_defense('pgd') at eps 0.1 as it was before the eps rule (the README's models)
PGD_EPS01 = {"defense": "pgd", "eps": 0.1, "pgd_steps": 7, "pgd_step_size": 2.5 * 0.1 / 7,
             "clean_frac": 0.0, "eps_warmup": 0, "pgd_step_size_rule": "2.5*eps/pgd_steps",
             "pgd_random_start": True}


@pytest.mark.parametrize("kw", [{}, {"eps": 0.1}, {"eps": 0.1, "epochs": 10}, {"eps": 0.1, "epochs": 3}])
def test_eps_01_config_is_unchanged(kw):
    cfg = make_defense("pgd", **kw)[2]
    assert cfg == PGD_EPS01 and list(cfg) == list(PGD_EPS01)
    assert defaults_for("pgd", kw.get("eps"), kw.get("epochs")) == DEFAULTS["pgd"]
    plan = plan_training(defense="pgd", defense_options={"eps": kw.get("eps")})
    assert list(plan.config) == ["epochs", "batch_size", "optimizer", "opt_lr", "opt_rho",
                                 "opt_eps", "seed", *PGD_EPS01]
    assert {k: plan.config[k] for k in PGD_EPS01} == PGD_EPS01
    # up to and including LARGE_EPS nothing but eps changes
    assert defaults_for("pgd", LARGE_EPS, 10) == DEFAULTS["pgd"]
    assert defaults_for("trades", LARGE_EPS, 10) == DEFAULTS["trades"]


def test_eps_03_defaults_are_the_measured_schedule():
    explicit = make_defense("pgd", eps=0.3, eps_warmup=4, clean_frac=0.25, pgd_steps=5, epochs=10)[2]
    assert make_defense("pgd", eps=0.3, epochs=10)[2] == explicit      # what the README's row used
    assert make_defense("pgd", eps=0.3)[2] == explicit                 # epochs None: fit's 10
    # warm-up over 40% of the epochs, rounded down, always shorter than the run
    assert [make_defense("pgd", eps=0.3, epochs=e)[2]["eps_warmup"] for e in (1, 2, 3, 4, 5, 10, 20)] \
        == [0, 0, 1, 1, 2, 4, 8]
    cfg = make_defense("trades", eps=0.3, epochs=10)[2]
    assert (cfg["eps_warmup"], cfg["pgd_steps"], cfg["beta"]) == (4, 5, DEFAULTS["trades"]["beta"])
    assert cfg["pgd_step_size"] == pytest.approx(2.5 * 0.3 / 5)
    # options given explicitly win over the rule
    cfg = make_defense("pgd", eps=0.3, epochs=10, eps_warmup=0, clean_frac=0.0, pgd_steps=7)[2]
    assert (cfg["eps_warmup"], cfg["clean_frac"], cfg["pgd_steps"]) == (0, 0.0, 7)
    assert plan_training(defense="trades", defense_options={"eps": 0.3}).config["eps_warmup"] == 4


def test_trades_config():
    lf, bt, cfg = make_defense("trades")
    assert callable(lf) and callable(bt)
    assert cfg == {"defense": "trades", "eps": 0.1, "beta": 1.0, "pgd_steps": 7,
                   "pgd_step_size": pytest.approx(2.5 * 0.1 / 7), "pgd_step_size_rule": "2.5*eps/pgd_steps",
                   "eps_warmup": 0, "trades_start": "x+0.001*N(0,1)"}
    cfg = make_defense("trades", eps=0.2, beta=6, pgd_steps=40, pgd_step_size=0.01)[2]
    assert (cfg["beta"], cfg["pgd_step_size"], cfg["pgd_step_size_rule"]) == (6.0, 0.01, "fixed")


# --- model selection ----------------------------------------------------------------

def test_robust_selection_keeps_the_most_robust_epoch():
    arch = get_architecture("softmax-v1")
    x, y = _robust_vs_nonrobust_data(512, 0)
    xh, yh = _robust_vs_nonrobust_data(200, 2)
    nat, _ = fit(arch.init_params(0), x, y, epochs=4, batch_size=64, seed=0,
                 predict_fn=arch.predict, verbose=False)
    _, bt, _ = make_defense("pgd", eps=0.1, pgd_steps=5, predict_fn=arch.predict)
    adv, _ = fit(arch.init_params(0), x, y, epochs=4, batch_size=64, seed=0, batch_transform=bt,
                 predict_fn=arch.predict, verbose=False)
    cb, sel = robust_selection(xh, yh, eps=0.1, steps=10, predict_fn=arch.predict)
    assert sel["params"] is None and sel["epoch"] is None
    for epoch, p in enumerate([nat, adv, nat]):           # the robust weights come second
        cb(epoch, {}, p)
    accs = sel["per_epoch"]
    assert list(accs) == [1, 2, 3] and accs[1] == accs[3] < accs[2]
    assert sel["epoch"] == 2 and sel["robust_accuracy"] == accs[2]
    assert all(np.array_equal(sel["params"][k], adv[k]) for k in adv)
    k = next(iter(adv))
    assert sel["params"][k] is not adv[k]                 # a copy, not the caller's arrays
    # the same (x, seed) meet the same starts: the measure is a function of the weights
    assert robust_accuracy(adv, xh, yh, eps=0.1, steps=10, predict_fn=arch.predict) == accs[2]
    # through fit: the best of the measured epochs, and never worse than the last one
    cb, sel = robust_selection(xh, yh, eps=0.1, steps=10, predict_fn=arch.predict)
    last, _ = fit(arch.init_params(0), x, y, epochs=3, batch_size=64, seed=0, batch_transform=bt,
                  predict_fn=arch.predict, verbose=False, callbacks=[cb])
    assert sel["robust_accuracy"] == max(sel["per_epoch"].values()) >= sel["per_epoch"][3]


# --- bad inputs ---------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda: make_defense("trades", beta=-1.0), "beta"),
    (lambda: make_defense("trades", eps=0.0), "eps"),
    (lambda: make_defense("trades", eps=0.3, eps_warmup=10, epochs=10), "eps_warmup"),
    (lambda: make_defense("trades", clean_frac=0.25), "clean_frac"),
    (lambda: make_defense("trades", lam=1.0), "lam"),
    (lambda: make_defense("pgd", beta=1.0), "beta"),
    (lambda: make_defense("gradreg", beta=1.0), "beta"),
    (lambda: make_defense("none", beta=1.0), "beta"),
    (lambda: trades_loss_fn(-0.5), "beta"),
    (lambda: defaults_for("madry", 0.3), "defense"),
    (lambda: robust_selection(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64), eps=2.0), "eps"),
    (lambda: trades_loss_fn(1.0)(init_params(0), *_batch(3)), "pair"),
])
def test_bad_inputs_are_named(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "scratchadv", "train", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, flag", [
    (["--beta", "1"], "--beta"),                              # no defense
    (["--defense", "pgd", "--beta", "1"], "beta"),
    (["--defense", "trades", "--beta", "-1"], "--beta:"),
    (["--defense", "trades", "--clean-frac", "0.5"], "clean_frac"),
    (["--defense", "gradreg", "--holdout", "100"], "--holdout"),
    (["--defense", "trades", "--holdout", "0"], "--holdout"),
    (["--defense", "pgd", "--limit", "500", "--holdout", "500"], "--holdout"),
])
def test_cli_bad_trades_flags_fail_before_training(tmp_path, args, flag):
    r = _cli(*args, "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 2, r.stderr
    assert flag in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(tmp_path / "m.npz")


@pytest.mark.mnist
def test_cli_trades_with_holdout_selection_on_real_images(tmp_path, mnist):
    from scratchadv.checkpoint import load_model
    out = tmp_path / "m.npz"
    r = _cli("--defense", "trades", "--eps", "0.3", "--epochs", "3", "--limit", "600",
             "--holdout", "100", "--pgd-steps", "2", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    params, meta = load_model(out)
    sel = meta["selection"]
    assert meta["config"]["holdout"] == 100 and meta["config"]["eps_warmup"] == 1
    assert sel["n"] == 100 and sel["eps"] == 0.3 and len(sel["per_epoch"]) == 3
    assert sel["robust_accuracy"] == max(sel["per_epoch"].values())
    assert "selected epoch" in r.stdout
    assert not os.path.exists(tmp_path / "m.state.select.npz")

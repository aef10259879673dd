"""Carlini-Wagner L2 (scratchadv.attacks.cw): adversarial, never below the true minimal
distance, improving with the binary search, batched, validated, and cross-checked
against Foolbox 3.3.4 on the same weights."""
import numpy as np
import pytest

from conftest import tiny_images
from scratchadv.attacks.cw import (cw_l2, is_adversarial, margin, next_const, to_image,
                                  to_tanh_space)
from scratchadv.model import get_architecture, init_params, predict
from test_deepfool import foolbox_images, small_model_fixture  # noqa: F401 (the fixture)

SOFTMAX = get_architecture("softmax-v1")


def linear_problem(n=6, seed=0):
    """Softmax regression in float64 on images near 0.5 (no box constraint binds near the
    nearest boundary) and each image's exact minimal L2 distance to a boundary."""
    r = np.random.default_rng(seed)
    p = {"dense1.weight": r.normal(0, 0.05, (10, 784)), "dense1.bias": np.zeros(10)}
    x = 0.5 + r.uniform(-0.1, 0.1, (n, 1, 28, 28))
    z = SOFTMAX(p, x)
    y = z.argmax(1)
    w = p["dense1.weight"]
    d = np.array([min(abs(z[i, k] - z[i, y[i]]) / np.linalg.norm(w[k] - w[y[i]])
                      for k in range(10) if k != y[i]) for i in range(n)])
    return p, x, y, d


def test_linear_model_more_binary_steps_smaller_norm_never_below_the_minimum():
    p, x, y, d = linear_problem()
    norms = []
    for b in (1, 4, 9, 10):           # 10: the last round repeats the smallest success
        r = cw_l2(p, x, y, predict_fn=SOFTMAX, binary_steps=b, steps=1000)
        pred = SOFTMAX(p, r.x_adv).argmax(1)
        np.testing.assert_array_equal(r.success, pred != y)        # re-checked
        np.testing.assert_array_equal(r.eps, np.where(r.success, r.l2, np.inf))
        assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
        norms.append(r.eps)
    norms = np.array(norms)
    assert np.all(norms[1:] <= norms[:-1])              # the search keeps the best so far
    assert np.sum(norms[-1] < norms[0]) >= 5            # and improves on 5 images of 6
    assert np.all(np.isfinite(norms[2]))                # 9 steps (the default): all flipped
    # no adversarial is closer than the nearest boundary; C&W gets within 25% of it
    assert np.all(norms[-1] >= d * (1 - 1e-9))
    assert np.all(norms[-1] <= 1.25 * d)


def test_confidence_is_a_margin_on_the_returned_images():
    p, x, y, _ = linear_problem()
    plain = cw_l2(p, x, y, predict_fn=SOFTMAX, steps=300)
    sure = cw_l2(p, x, y, predict_fn=SOFTMAX, steps=300, confidence=1.0)
    z = SOFTMAX(p, sure.x_adv)
    rows = np.arange(len(y))
    other = np.where(np.eye(10, dtype=bool)[y], -np.inf, z).max(1)
    ok = sure.success
    assert ok.sum() >= 4
    assert np.all(other[ok] - z[rows, y][ok] >= 1.0)        # wins by the confidence
    assert np.all(sure.eps[ok] > plain.eps[ok])


def test_targeted_reaches_the_target():
    p, x, y, _ = linear_problem()
    t = ((y + 1) % 10).astype(np.int64)
    r = cw_l2(p, x, y, predict_fn=SOFTMAX, steps=300, target=t)
    np.testing.assert_array_equal(r.target, t)
    assert r.success.all()
    np.testing.assert_array_equal(SOFTMAX(p, r.x_adv).argmax(1), t)
    with pytest.raises(ValueError, match="target"):
        cw_l2(p, x, y, predict_fn=SOFTMAX, steps=3, target=y)


def test_margin_and_criterion():
    z = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.5]])
    lab = np.array([0, 2])
    np.testing.assert_allclose(margin(z, lab, False), [3.0 - 2.0, 4.5 - 5.0])
    np.testing.assert_allclose(margin(z, lab, True), [2.0 - 3.0, 5.0 - 4.5])
    np.testing.assert_array_equal(is_adversarial(z, lab, False, 0.0), [False, True])
    np.testing.assert_array_equal(is_adversarial(z, lab, False, 1.0), [False, False])
    np.testing.assert_array_equal(is_adversarial(z, np.array([2, 1]), True, 0.4), [False, True])
    np.testing.assert_array_equal(is_adversarial(z, np.array([2, 1]), True, 0.6), [False, False])


def test_the_search_over_c_grows_tenfold_then_bisects():
    const, lo, hi = np.full(3, 1e-3), np.zeros(3), np.full(3, np.inf)
    seen = []
    for found in ([0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 1]):
        const, lo, hi = next_const(const, lo, hi, np.array(found, dtype=bool))
        seen.append(const.copy())
    # the bracket's lower end is the largest failing c, its upper end the smallest success
    np.testing.assert_allclose(seen, [[1e-2, 1e-2, 5e-4], [1e-1, 5.5e-3, 2.5e-4],
                                      [5.5e-2, 7.75e-3, 3.75e-4], [7.75e-2, 8.875e-3, 3.125e-4]])
    np.testing.assert_allclose(lo, [5.5e-2, 7.75e-3, 2.5e-4])
    np.testing.assert_allclose(hi, [1e-1, 1e-2, 3.75e-4])


def test_tanh_space_round_trip():
    x = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32).reshape(1, 1, 1, 4)
    w = to_tanh_space(x)
    assert w.dtype == np.float32 and np.all(np.isfinite(w))
    np.testing.assert_allclose(to_image(w), x, atol=1e-6)
    assert to_image(np.array([-50.0, 50.0])).tolist() == [0.0, 1.0]    # the box, always


def test_cnn_reproducible_in_the_box_and_misclassified_left_alone():
    params = init_params(0)
    x = tiny_images(4)
    y = predict(params, x).argmax(1)
    y[0] = (y[0] + 1) % 10                     # image 0 is misclassified from the start
    r = cw_l2(params, x, y, binary_steps=3, steps=40, initial_const=1.0)
    assert r.x_adv.dtype == np.float32 and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.x_adv[0].tobytes() == x[0].tobytes() and r.eps[0] == 0 and r.steps[0] == 0
    np.testing.assert_array_equal(r.success, predict(params, r.x_adv).argmax(1) != y)
    assert r.success[1:].any()
    assert np.all(r.steps[1:][r.success[1:]] >= 1)
    again = cw_l2(params, x, y, binary_steps=3, steps=40, initial_const=1.0)
    assert again.x_adv.tobytes() == r.x_adv.tobytes()          # same inputs, same bits


@pytest.mark.parametrize("abort_early", [True, False])
def test_batch_equals_one_by_one(abort_early):
    params = init_params(0, dtype=np.float64)
    x = tiny_images(4, dtype=np.float64)
    y = predict(params, x).argmax(1)
    kw = dict(binary_steps=3, steps=30, initial_const=1.0, abort_early=abort_early)
    batch = cw_l2(params, x, y, **kw)
    assert batch.success.any()
    for i in range(len(x)):
        one = cw_l2(params, x[i:i + 1], y[i:i + 1], **kw)
        np.testing.assert_allclose(one.x_adv[0], batch.x_adv[i], atol=1e-9)
        assert one.steps[0] == batch.steps[i]
    chunked = cw_l2(params, x, y, batch_size=3, **kw)
    np.testing.assert_allclose(chunked.x_adv, batch.x_adv, atol=1e-9)


def test_abort_early_stops_stalled_rounds():
    p, x, _, _ = linear_problem(n=2)
    p = {"dense1.weight": np.zeros((10, 784)), "dense1.bias": np.eye(10)[3] * 5.0}
    y = np.array([3, 3], dtype=np.int64)      # constant logits: the loss never moves
    calls = []

    def counted(params, xx):
        calls.append(len(xx))
        return SOFTMAX(params, xx)

    for abort, per_round in ((True, 11), (False, 100)):
        calls.clear()
        r = cw_l2(p, x, y, predict_fn=counted, binary_steps=2, steps=100, abort_early=abort)
        assert not r.success.any() and r.x_adv.tobytes() == x.tobytes()
        # the clean logits, then per round the steps up to the failed check at step 10
        # (or all 100), then the re-check of the returned and the clean images
        assert len(calls) == 1 + 2 * per_round + 2


def test_verbose_shows_progress(capsys):
    params = init_params(0)
    x = tiny_images(1)
    cw_l2(params, x, predict(params, x).argmax(1), binary_steps=1, steps=2, verbose=True)
    assert "cw-l2" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, err, match", [
    ({"binary_steps": 0}, ValueError, "binary_steps"),
    ({"initial_const": 0.0}, ValueError, "initial_const"),
    ({"initial_const": "1"}, TypeError, "initial_const"),
    ({"steps": 0}, ValueError, "steps"),
    ({"lr": 0.0}, ValueError, "lr"),
    ({"confidence": -1.0}, ValueError, "confidence"),
    ({"abort_early": 1}, TypeError, "abort_early"),
    ({"target": 10}, ValueError, "target"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"predict_fn": "predict"}, TypeError, "predict_fn"),
])
def test_bad_options(kwargs, err, match):
    params = init_params(0)
    x = tiny_images(2)
    with pytest.raises(err, match=match):
        cw_l2(params, x, np.zeros(2, dtype=np.int64), steps=kwargs.pop("steps", 2), **kwargs)


def test_bad_inputs():
    params = init_params(0)
    x = tiny_images(2)
    y = np.zeros(2, dtype=np.int64)
    with pytest.raises(TypeError, match="x"):
        cw_l2(params, list(x), y)
    with pytest.raises(ValueError, match="x"):
        cw_l2(params, x[:, :, :27], y)
    with pytest.raises(TypeError, match="y"):
        cw_l2(params, x, y.astype(np.float32))
    with pytest.raises(ValueError, match="params"):
        cw_l2({**params, "extra": params["dense2.bias"]}, x, y)


# --- cross-check against Foolbox 3.3.4 on the same weights ------------------------

CROSS_STEPS = 200      # Adam steps per round on both sides (the default 10000 is minutes)


@pytest.mark.mnist
def test_median_l2_matches_foolbox(small_model, mnist):
    """Median L2 over the images both flip, on 40 test images, at most 5% above
    Foolbox's L2CarliniWagnerAttack with the same settings (9 binary-search steps,
    const 1e-3, Adam 1e-2, abort-early, confidence 0) and 200 steps per round on both
    sides. Measured on 100 images: 2.0718 vs 2.0687, both flipping the same 92."""
    params = small_model
    _, _, x_test, y_test = mnist
    x, y = x_test[:40], y_test[:40]
    raw = foolbox_images(params, lambda fb: fb.attacks.L2CarliniWagnerAttack(steps=CROSS_STEPS),
                         x, y)
    # Foolbox returns an all-zero image where it found nothing (its best_advs start at
    # zeros); such a "success" is no adversarial it found
    theirs_ok = (predict(params, raw).argmax(1) != y) & (raw.reshape(len(x), -1).max(1) > 0)
    theirs = np.sqrt(((raw - x).reshape(len(x), -1).astype(np.float64) ** 2).sum(1))
    ours = cw_l2(params, x, y, steps=CROSS_STEPS)
    clean = predict(params, x).argmax(1) == y
    both = clean & theirs_ok & ours.success
    assert both.sum() >= 0.95 * (clean & theirs_ok).sum()       # we flip what they flip
    assert np.median(ours.eps[both]) <= 1.05 * np.median(theirs[both])

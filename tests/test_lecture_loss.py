"""The slides' own loss (loss="lecture"): Keras's binary_crossentropy with its arguments swapped."""
import numpy as np
import pytest
from autograd.test_util import check_grads

from conftest import tiny_images
from scratchadv.attacks import fake_image, gradient_ascent, penalty_attack
from scratchadv.attacks.lecture import KERAS_EPSILON, slides_loss
from scratchadv.model import init_params, predict


def keras_bce_swapped(logits, labels, eps=KERAS_EPSILON):
    """keras.metrics.binary_crossentropy(y_true=softmax(logits), y_pred=one_hot(labels)),
    written from Keras's definition: clip y_pred to [eps, 1 - eps], mean over the last axis."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    t = np.clip(np.eye(logits.shape[1])[labels], eps, 1 - eps)
    return -np.mean(p * np.log(t) + (1 - p) * np.log(1 - t), axis=1)


def test_slides_loss_is_kerass_swapped_bce_and_linear_in_p():
    r = np.random.default_rng(0)
    z = 3 * r.standard_normal((7, 10))
    t = r.integers(0, 10, 7)
    got = slides_loss(z, t)
    np.testing.assert_allclose(got, keras_bce_swapped(z, t), rtol=1e-12)
    p = np.exp(z - z.max(1, keepdims=True))
    p_t = (p / p.sum(1, keepdims=True))[np.arange(7), t]
    e = KERAS_EPSILON
    formula = (2 * (1 - p_t) * np.log(1 / e) - (8 + 2 * p_t) * np.log(1 - e)) / 10
    np.testing.assert_allclose(got, formula, rtol=1e-10)
    # ~ 3.22 (1 - p_t): the slides' trace (3.039 on noise) means p_target ~ 0.057
    assert 2 * np.log(1 / e) / 10 == pytest.approx(3.2236, abs=1e-4)


def test_slides_loss_gradients_to_second_order():
    r = np.random.default_rng(1)
    z = r.standard_normal((3, 10))
    t = np.array([0, 4, 9])
    check_grads(lambda v: slides_loss(v, t), modes=["rev"], order=2)(z)


def test_slides_loss_keeps_float32():
    z = np.random.default_rng(2).standard_normal((2, 10)).astype(np.float32)
    assert slides_loss(z, np.array([1, 2])).dtype == np.float32


def test_fake_image_descends_the_slides_loss(params):
    r = fake_image(params, 3, n=2, loss="lecture", rng=np.random.default_rng(0), verbose=False)
    x0 = np.random.default_rng(0).uniform(0, 1, size=(2, 1, 28, 28))
    np.testing.assert_allclose(r.loss_history[0], slides_loss(predict(params, x0), np.array([3, 3])))
    assert np.all(r.loss_history[-1] < r.loss_history[0])
    # loss / loss_start stay the target's cross-entropy, whichever loss was descended
    np.testing.assert_allclose(r.loss, -np.log(r.probs[:, 3]), rtol=1e-9)
    ce = fake_image(params, 3, n=2, rng=np.random.default_rng(0), verbose=False)
    np.testing.assert_array_equal(ce.loss_start, r.loss_start)
    assert not np.allclose(ce.x_adv, r.x_adv)


def test_ascent_takes_the_same_steps_with_either_loss(params):
    """After g / max|g| the two losses' gradients differ by a positive factor per image."""
    x = tiny_images(4, seed=1, dtype=np.float64)
    y = np.argmax(predict(params, x), 1).astype(np.int64)
    a = gradient_ascent(params, x, y, steps=6)
    b = gradient_ascent(params, x, y, steps=6, loss="lecture")
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-9)
    np.testing.assert_array_equal(a.steps, b.steps)
    assert not np.allclose(a.loss_history, b.loss_history)     # different objectives recorded


def test_penalty_attack_with_the_slides_loss(params):
    x = tiny_images(2, seed=2, dtype=np.float64)
    t = np.array([1, 5])
    r = penalty_attack(params, x, t, steps=4, lr=0.5, loss="lecture")
    d = (r.x_adv - x).reshape(2, -1)
    want = slides_loss(predict(params, r.x_adv), t) + 30.0 * np.abs(d).mean(1)
    np.testing.assert_allclose(r.loss_history[-1], want, rtol=1e-9)
    np.testing.assert_allclose(r.loss, -np.log(r.probs[np.arange(2), t]), rtol=1e-9)


@pytest.mark.parametrize("call", [
    lambda p: fake_image(p, 1, loss="bce", verbose=False),
    lambda p: gradient_ascent(p, tiny_images(1, dtype=np.float64), np.array([0]), loss="mse"),
    lambda p: penalty_attack(p, tiny_images(1, dtype=np.float64), 1, loss=None),
])
def test_an_unknown_loss_is_refused(params, call):
    with pytest.raises(ValueError, match="loss: expected one of"):
        call(params)


def test_cli_fake_with_the_slides_loss(random_model_file, tmp_path, capsys):
    import json
    from scratchadv.cli import main
    m = tmp_path / "fake.json"
    assert main(["fake", "--model", random_model_file, "--target", "all", "--steps", "3", "--loss", "lecture",
                 "--metrics", str(m), "--quiet"]) == 0
    d = json.loads(m.read_text())
    assert d["loss"] == "lecture"
    r = fake_image(init_params(0), np.arange(10, dtype=np.int64), steps=3, loss="lecture",
                   rng=np.random.default_rng(0), verbose=False)
    np.testing.assert_allclose(d["mean_loss_per_step"], r.loss_history.mean(1), rtol=1e-6)
    assert max(d["mean_loss_per_step"]) < 3.3          # ~3.22 (1 - p): never above c


def test_cli_loss_only_for_the_lecture_attacks(random_model_file, capsys):
    from scratchadv.cli import main
    assert main(["attack", "--model", random_model_file, "--method", "pgd", "--loss", "lecture"]) == 2
    assert "--loss" in capsys.readouterr().err

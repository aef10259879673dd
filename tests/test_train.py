"""Training loop: reproducible, resumable bit for bit, stops on divergence, learns."""
import numpy as np
import pytest
from conftest import tiny_images

from scratchadv.losses import loss
from scratchadv.model import accuracy, get_architecture, init_params
from scratchadv.optim import adam, sgd
from scratchadv.train import TrainingDiverged, TrainingInterrupted, fit, plan_training, train_model


def toy(n=96, seed=0):
    x = tiny_images(n, seed)
    # label = which quadrant holds the blob's centre of mass: learnable by every model
    cy = (x[:, 0].sum(2) * np.arange(28)).sum(1) / x[:, 0].sum((1, 2))
    cx = (x[:, 0].sum(1) * np.arange(28)).sum(1) / x[:, 0].sum((1, 2))
    y = ((cy > 14).astype(np.int64) * 2 + (cx > 14)).astype(np.int64)
    return x, y


def same(p, q):
    return all(np.array_equal(p[k], q[k]) for k in p)


def test_loss_falls_and_history_is_complete():
    x, y = toy()
    p0 = init_params(0)
    p, h = fit(p0, x, y, x_val=x, y_val=y, epochs=4, batch_size=16, verbose=False)
    assert set(h) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(len(v) == 4 for v in h.values())
    assert h["val_loss"][-1] < 0.8 * h["val_loss"][0]
    assert float(loss(p, x, y)) < float(loss(p0, x, y))
    assert all(v.dtype == np.float32 for v in p.values())


def test_same_seed_same_bits_other_seed_differs():
    x, y = toy(64)
    a, _ = fit(init_params(0), x, y, epochs=2, batch_size=16, seed=5, verbose=False)
    b, _ = fit(init_params(0), x, y, epochs=2, batch_size=16, seed=5, verbose=False)
    c, _ = fit(init_params(0), x, y, epochs=2, batch_size=16, seed=6, verbose=False)
    assert same(a, b) and not same(a, c)


@pytest.mark.parametrize("stop_at", [(0, 2), (1, 0), (1, 3)])
def test_interrupt_and_resume_is_bit_identical(tmp_path, stop_at):
    x, y = toy(80)
    kw = dict(epochs=3, batch_size=16, seed=1, optimizer=adam(), verbose=False)
    ref, ref_hist = fit(init_params(0), x, y, x_val=x, y_val=y, **kw)

    calls = []

    def interrupt(params, xb, yb, rng, epoch):      # Ctrl-C at a chosen batch
        calls.append(epoch)
        if (epoch, len([c for c in calls if c == epoch]) - 1) == stop_at:
            raise KeyboardInterrupt
        return xb, yb

    state = str(tmp_path / "state.npz")
    with pytest.raises(TrainingInterrupted):
        fit(init_params(0), x, y, x_val=x, y_val=y, checkpoint_path=state,
            batch_transform=interrupt, **kw)
    out, hist = fit(init_params(0), x, y, x_val=x, y_val=y, checkpoint_path=state,
                    resume=True, **kw)
    assert same(out, ref)
    assert hist["val_loss"] == ref_hist["val_loss"] and hist["accuracy"] == ref_hist["accuracy"]


def test_resume_refuses_a_different_run(tmp_path):
    x, y = toy(32)
    state = str(tmp_path / "state.npz")
    fit(init_params(0), x, y, epochs=1, batch_size=16, checkpoint_path=state, verbose=False)
    with pytest.raises(ValueError, match="batch_size"):
        fit(init_params(0), x, y, epochs=2, batch_size=8, checkpoint_path=state, resume=True,
            verbose=False)


def test_divergence_stops_and_keeps_last_good_state(tmp_path):
    x, y = toy(32)
    state = str(tmp_path / "state.npz")
    fit(init_params(0), x, y, epochs=1, batch_size=16, checkpoint_path=state, verbose=False)
    good = open(state, "rb").read()

    def exploding(params, xb, yb):
        return loss(params, xb, yb) * np.nan
    with pytest.raises(TrainingDiverged, match="diverged") as e:
        fit(init_params(0), x, y, epochs=2, batch_size=16, loss_fn=exploding,
            checkpoint_path=state, resume=True, verbose=False)
    assert open(state, "rb").read() == good
    assert "(lr)" in str(e.value) and "--" not in str(e.value)     # a parameter, not a flag


def test_other_architectures_train():
    x, y = toy(64)
    for name in ("softmax-v1", "mlp-v1"):
        arch = get_architecture(name)
        p0 = arch.init_params(0)
        p, h = fit(p0, x, y, epochs=3, batch_size=16, optimizer=sgd(lr=0.05),
                   predict_fn=arch.predict, verbose=False)
        assert h["loss"][-1] < h["loss"][0]


def test_bad_arguments_are_named():
    x, y = toy(16)
    with pytest.raises(ValueError, match="batch_size"):
        fit(init_params(0), x, y, batch_size=0, verbose=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(init_params(0), x, y, epochs=0, verbose=False)
    with pytest.raises(TypeError, match="params"):
        fit(init_params(0, dtype=np.float64), x, y, verbose=False)
    with pytest.raises(ValueError, match="y"):
        fit(init_params(0), x, y[:5], verbose=False)


# --- plan_training / train_model: a run's settings, checked once, recorded once -----------

def test_plan_records_the_settings_in_one_config():
    plan = plan_training("mlp-v1", epochs=3, batch_size=16, optimizer="sgd", lr=0.05, seed=2,
                         defense="gradreg", defense_options={"lam": 0.25}, notes={"limit": 96})
    assert plan.architecture.name == "mlp-v1" and plan.batch_transform is None
    assert plan.loss_fn is not None and plan.optimizer.hyper["lr"] == 0.05
    assert list(plan.config) == ["epochs", "batch_size", "optimizer", "opt_lr", "opt_momentum",
                                 "seed", "limit", "defense", "lam"]
    assert plan.config == {"epochs": 3, "batch_size": 16, "optimizer": "sgd", "opt_lr": 0.05,
                           "opt_momentum": 0.9, "seed": 2, "limit": 96, "defense": "gradreg",
                           "lam": 0.25}
    pgd = plan_training(defense="pgd", defense_options={"eps": 0.2, "pgd_steps": None})
    assert pgd.loss_fn is None and pgd.batch_transform is not None
    assert pgd.config["eps"] == 0.2 and pgd.config["pgd_steps"] == 7      # None: the default


@pytest.mark.parametrize("kw, name", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed"),
    ({"lr": -1.0}, "lr"), ({"optimizer": "adagrad"}, "optimizer"),
    ({"architecture": "resnet"}, "architecture"),
    ({"defense": "pgd", "defense_options": {"eps": -1}}, "eps"),
    ({"defense": "none", "defense_options": {"lam": 1.0}}, "lam"),
    ({"optimizer": adam(), "lr": 0.1}, "lr"),
])
def test_plan_names_the_bad_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        plan_training(**kw)


def test_train_model_is_fit_with_the_plan():
    x, y = toy(64)
    plan = plan_training("softmax-v1", epochs=2, batch_size=16, optimizer="adam", seed=4,
                         defense="gradreg", defense_options={"lam": 0.1})
    p, h, cfg = train_model(plan, x, y, x_val=x[:16], y_val=y[:16], verbose=False,
                            config={"name": "toy"})
    arch = get_architecture("softmax-v1")
    ref, ref_h = fit(arch.init_params(4), x, y, x_val=x[:16], y_val=y[:16], epochs=2,
                     batch_size=16, optimizer=adam(), seed=4, loss_fn=plan.loss_fn,
                     predict_fn=arch.predict, verbose=False)
    assert same(p, ref) and h["val_loss"] == ref_h["val_loss"]
    assert cfg["architecture"] == "softmax-v1" and cfg["n_train"] == 64 and cfg["name"] == "toy"
    assert cfg["lam"] == 0.1 and len(cfg["data"]) == 16


@pytest.mark.mnist
def test_short_run_on_real_images_learns(mnist):
    x_train, y_train, x_test, y_test = mnist
    p, h = fit(init_params(0), x_train[:600], y_train[:600], epochs=2, batch_size=32,
               verbose=False)
    assert h["loss"][1] < h["loss"][0]
    assert accuracy(p, x_test[:500], y_test[:500]) > 0.6


@pytest.mark.mnist
@pytest.mark.slow
def test_lecture_training_reaches_the_lecture_accuracy(natural_model, mnist):
    """Issue criterion: 10 epochs, RMSprop, batch 128, seed 0 -> test >= 99.0%, train >= 99.3%."""
    params, history = natural_model
    x_train, y_train, x_test, y_test = mnist
    assert accuracy(params, x_test, y_test) >= 0.990
    assert accuracy(params, x_train, y_train) >= 0.993
    assert history["val_accuracy"][-1] == pytest.approx(accuracy(params, x_test, y_test))


@pytest.mark.parametrize("defense", ["gradreg", "trades"])
def test_a_defense_step_takes_its_accuracy_from_the_losss_own_forward_pass(defense):
    """The logits behind the running accuracy are those of the loss's forward pass on the
    batch (no pass of their own), equal to a separate forward; loss and gradient unchanged."""
    from autograd import value_and_grad
    from scratchadv.defenses import make_defense
    from scratchadv.model import predict
    from scratchadv.train import _value_grad_logits
    calls = []

    def counting(p, x):
        calls.append(len(x))
        return predict(p, x)

    params = {k: v.astype(np.float64) for k, v in init_params(2).items()}
    x = tiny_images(8, seed=4, dtype=np.float64)
    y = np.arange(8, dtype=np.int64) % 10
    loss_fn, transform, _ = make_defense(defense, **({"pgd_steps": 2} if defense == "trades" else {}),
                                         predict_fn=counting)
    if transform is not None:
        x, y = transform(params, x, y, np.random.default_rng(0), 0)
    calls.clear()
    value, grads, logits = _value_grad_logits(loss_fn, counting, params, x, y)
    in_step = len(calls)
    calls.clear()
    ref_value, ref_grads = value_and_grad(loss_fn)(params, x, y)
    assert in_step == len(calls)                     # the loss's own passes and nothing more
    np.testing.assert_allclose(logits, predict(params, x), rtol=1e-12, atol=1e-12)
    assert value == pytest.approx(float(ref_value), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-12, atol=1e-14)
    # a loss that does not name its model: the accuracy pays a forward pass of its own
    calls.clear()
    _, _, logits2 = _value_grad_logits(lambda p, xb, yb: loss_fn(p, xb, yb), counting, params, x, y)
    assert len(calls) == in_step + 1
    np.testing.assert_allclose(logits2, logits, rtol=1e-12, atol=1e-12)

"""Optimizers: the Keras update rules, purity, dtype, and agreement with PyTorch."""
import numpy as np
import pytest

from scratchadv.optim import adam, get_optimizer, rmsprop, sgd


def quadratic_grads(p):
    return {k: 2 * (v - 1) for k, v in p.items()}      # minimum at 1


@pytest.mark.parametrize("make", [rmsprop, sgd, adam])
def test_converges_on_a_quadratic_and_is_pure(make):
    opt = make(lr=0.05)
    p = {"a": np.zeros((3, 2), np.float32), "b": np.full(4, 3.0, np.float32)}
    before = {k: v.copy() for k, v in p.items()}
    s = opt.init(p)
    p1, s1 = opt.update(p, quadratic_grads(p), s)
    for k in p:                                       # inputs untouched
        np.testing.assert_array_equal(p[k], before[k])
    assert int(s1["step"]) == 1 and int(s["step"]) == 0
    for _ in range(400):
        p1, s1 = opt.update(p1, quadratic_grads(p1), s1)
    for v in p1.values():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, 1.0, atol=0.05)


def test_rmsprop_matches_the_formula():
    lr, rho, eps = 1e-3, 0.9, 1e-7
    opt = rmsprop()
    assert opt.hyper == {"lr": lr, "rho": rho, "eps": eps}
    w = np.array([0.5, -1.0, 2.0])
    gs = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.0, 0.2])]
    p, s = {"w": w}, opt.init({"w": w})
    v, ref = np.zeros(3), w.copy()
    for g in gs:
        p, s = opt.update(p, {"w": g}, s)
        v = rho * v + (1 - rho) * g * g
        ref = ref - lr * g / np.sqrt(v + eps)      # tf.keras: epsilon inside the root
    np.testing.assert_allclose(p["w"], ref, rtol=1e-14)


def test_unknown_optimizer_and_bad_lr():
    with pytest.raises(ValueError, match="optimizer"):
        get_optimizer("adagrad")
    with pytest.raises(ValueError, match="lr"):
        rmsprop(lr=-1)


def test_agrees_with_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    w0 = r.normal(size=(5, 3))
    grads = [r.normal(size=(5, 3)) for _ in range(5)]
    cases = [
        # the two RMSprop forms differ only in where epsilon goes: equal at eps = 0
        (rmsprop(eps=0.0), lambda t: torch.optim.RMSprop([t], lr=1e-3, alpha=0.9, eps=0.0)),
        (sgd(lr=0.01, momentum=0.9), lambda t: torch.optim.SGD([t], lr=0.01, momentum=0.9)),
    ]
    for ours, theirs in cases:
        t = torch.tensor(w0.copy(), requires_grad=True)
        topt = theirs(t)
        p, s = {"w": w0.copy()}, ours.init({"w": w0})
        for g in grads:
            p, s = ours.update(p, {"w": g}, s)
            t.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(p["w"], t.detach().numpy(), rtol=1e-12, atol=1e-14)

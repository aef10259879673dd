"""Finite-difference checks: the checker itself, and the network's gradients to second order."""
import json

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.extend import defvjp, primitive

from conftest import tiny_images
from scratchadv.gradcheck import (GradientCheckError, check_gradients, check_network,
                                  directional_derivative, format_table, generic_point,
                                  numerical_gradient)
from scratchadv.losses import gradient_regularized_loss, input_gradient, loss
from scratchadv.model import ARCHITECTURES, get_architecture


# ---------------------------------------------------------------------------
# The checker on functions with known derivatives
# ---------------------------------------------------------------------------

def test_numerical_gradient_of_a_known_function():
    r = np.random.default_rng(0)
    a = r.standard_normal((3, 4))
    x = r.standard_normal((3, 4))
    f = lambda z: anp.sum(a * z ** 3)             # noqa: E731   grad = 3 a z^2
    np.testing.assert_allclose(numerical_gradient(f, x), 3 * a * x ** 2, rtol=1e-8, atol=1e-9)
    d = {"u": x, "v": r.standard_normal(2)}
    g = numerical_gradient(lambda p: anp.sum(p["u"] ** 2) + anp.prod(p["v"]), d)
    np.testing.assert_allclose(g["u"], 2 * x, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(g["v"], d["v"][::-1], rtol=1e-8, atol=1e-9)
    v = r.standard_normal((3, 4))
    assert directional_derivative(f, x, v) == pytest.approx(np.sum(3 * a * x ** 2 * v), rel=1e-8)


def test_check_gradients_passes_on_correct_gradients_and_reports_each_array():
    r = np.random.default_rng(1)
    p = {"w": r.standard_normal((4, 3)), "b": r.standard_normal(4)}
    x = r.standard_normal((5, 3))

    def f(params, inputs):
        return anp.sum(anp.tanh(anp.dot(inputs, params["w"].T) + params["b"]) ** 2)
    rows = check_gradients(f, (p, x), order=2)
    assert [(r_["order"], r_["name"]) for r_ in rows] == [
        (1, "params[w]"), (1, "params[b]"), (1, "inputs"),
        (2, "params[w]"), (2, "params[b]"), (2, "inputs")]
    assert all(r_["passed"] and r_["rel_err"] < 1e-7 for r_ in rows)
    assert rows[0]["checked"] == "all 12 + 2 dir"


def _wrong_first_derivative():
    @primitive
    def cube(x):
        return x ** 3
    defvjp(cube, lambda ans, x: lambda g: g * 3.003 * x ** 2)      # 0.1% too large
    return cube


def _wrong_second_derivative():
    """A cube whose first derivative is right but whose derivative's derivative is not."""
    @primitive
    def dcube(x):
        return 3 * x ** 2
    defvjp(dcube, lambda ans, x: lambda g: g * 6.6 * x)            # should be 6 x

    @primitive
    def cube(x):
        return x ** 3
    defvjp(cube, lambda ans, x: lambda g: g * dcube(x))
    return cube


def test_a_wrong_first_derivative_fails_with_a_table():
    cube = _wrong_first_derivative()
    p = {"ok": np.linspace(0.5, 1.5, 6), "bad": np.linspace(-1, 1, 5) + 0.1}

    def f(q):
        return anp.sum(q["ok"] ** 3) + anp.sum(cube(q["bad"]))
    with pytest.raises(GradientCheckError) as e:
        check_gradients(f, (p,))
    msg = str(e.value)
    assert "FAIL" in msg and "q[bad]" in msg
    by_name = {r["name"]: r for r in e.value.rows}
    assert by_name["q[ok]"]["passed"] and not by_name["q[bad]"]["passed"]
    assert by_name["q[bad]"]["rel_err"] == pytest.approx(1e-3, rel=0.05)


def test_a_wrong_second_derivative_passes_order_1_and_fails_order_2():
    cube = _wrong_second_derivative()
    x = np.linspace(0.2, 1.0, 7)
    f = lambda z: anp.sum(cube(z))               # noqa: E731
    assert all(r["passed"] for r in check_gradients(f, (x,), order=1))
    with pytest.raises(GradientCheckError) as e:
        check_gradients(f, (x,), order=2)
    assert [r["passed"] for r in e.value.rows] == [True, False]
    assert "order" in format_table(e.value.rows)


def test_check_gradients_refuses_float32_and_bad_arguments():
    f = lambda z: anp.sum(z ** 2)                # noqa: E731
    with pytest.raises(TypeError, match="float64"):
        check_gradients(f, (np.ones(3, dtype=np.float32),))
    with pytest.raises(ValueError, match="order"):
        check_gradients(f, (np.ones(3),), order=3)
    with pytest.raises(ValueError, match="scalar"):
        check_gradients(lambda z: z * 2, (np.ones(3),))
    with pytest.raises(TypeError, match="rng"):
        check_gradients(f, (np.ones(3),), rng=0)
    with pytest.raises(ValueError, match="wrt"):
        check_gradients(f, (np.ones(3),), wrt=1)


def test_same_rng_same_report():
    p = get_architecture("mlp-v1").init_params(0, dtype=np.float64)
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 28, 28))
    f = lambda q: loss(q, x, np.array([1, 2]), ARCHITECTURES["mlp-v1"].predict)  # noqa: E731
    a = check_gradients(f, (p,), rng=np.random.default_rng(5))
    b = check_gradients(f, (p,), rng=np.random.default_rng(5))
    assert a == b


def test_exact_ties_are_flagged_as_kinks_not_hidden():
    """Blank images with zero biases sit on ReLU kinks: the report must say so."""
    params = get_architecture("lecture-cnn-v1").init_params(0, dtype=np.float64)
    x = tiny_images(2, dtype=np.float64)
    y = np.array([3, 7])
    rows = check_gradients(lambda p: loss(p, x, y), (params,), raise_on_failure=False)
    bad = [r for r in rows if not r["passed"]]
    assert bad and all("kink" in r["note"] for r in bad)
    assert {r["name"] for r in bad} <= {"p[conv1.bias]", "p[conv2.bias]"}
    # moved off the ties, the same check passes
    p2, x2 = generic_point(params, x, np.random.default_rng(0))
    assert all(r["passed"] for r in check_gradients(lambda p: loss(p, x2, y), (p2,)))


def test_generic_point_keeps_images_valid_and_nonzero_biases():
    params = get_architecture("lecture-cnn-v1").init_params(0)
    x = tiny_images(3)
    p, xx = generic_point(params, x, np.random.default_rng(0))
    assert xx.dtype == np.float64 and 1e-3 <= xx.min() and xx.max() <= 1 - 1e-3
    assert np.max(np.abs(xx - x)) <= 3e-3 and np.mean(xx == 0) == 0
    assert all(np.all(p[k] != 0) for k in p if k.endswith(".bias"))
    np.testing.assert_array_equal(p["conv1.weight"], params["conv1.weight"].astype(np.float64))


# ---------------------------------------------------------------------------
# The network: every parameter, to second order, float64
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_network_gradients_to_second_order(arch):
    a = get_architecture(arch)
    r = np.random.default_rng(0)
    params, x = generic_point(a.init_params(0, dtype=np.float64),
                              np.concatenate([tiny_images(1, dtype=np.float64),
                                              r.uniform(0, 1, (1, 1, 28, 28))]), r)
    y = np.array([2, 5])
    results = check_network(params, x, y, predict_fn=a.predict, lam=1.0, order=2, rng=r)
    titles = [t for t, _ in results]
    assert titles == ["loss / params", "loss / x", "penalty / params",
                      "gradreg loss (lam=1) / params"]
    for title, rows in results:
        assert all(row["passed"] for row in rows), format_table(rows, title)
        if title.endswith("/ params"):
            for order in (1, 2):
                assert sorted(row["name"] for row in rows if row["order"] == order) == \
                    sorted(f"params[{k}]" for k in a.param_shapes())


def test_double_backprop_penalty_differs_from_plain_loss_gradient():
    """The penalty check exercises something: its gradient is not a multiple of the loss's."""
    params, x = generic_point(get_architecture("lecture-cnn-v1").init_params(0, np.float64),
                              tiny_images(2, dtype=np.float64), np.random.default_rng(0))
    y = np.array([0, 1])
    g0 = grad(loss)(params, x, y)
    g1 = grad(gradient_regularized_loss)(params, x, y, 10.0)
    gp = grad(lambda p: anp.sum(input_gradient(p, x, y) ** 2) / 2)(params)
    for k in params:
        np.testing.assert_allclose(g1[k], g0[k] + 10.0 * gp[k], rtol=1e-10, atol=1e-14)
    assert max(np.max(np.abs(gp[k])) for k in gp) > 1e-6


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def test_cli_gradcheck_prints_the_table_and_writes_json(tmp_path, capsys):
    from scratchadv.cli import main
    out = tmp_path / "gc.json"
    rc = main(["gradcheck", "--architecture", "mlp-v1", "--images", "random", "--n", "2",
               "--order", "2", "--metrics", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "loss / x" in text and "penalty / params" in text and "params[dense1.weight]" in text
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["order"] == 2
    assert len(doc["checks"]["loss / params"]) == 8          # 4 arrays x 2 orders


def test_cli_gradcheck_on_a_model_file(tmp_path, capsys):
    from scratchadv.checkpoint import save_model
    from scratchadv.cli import main
    p = get_architecture("softmax-v1").init_params(0)
    p["dense1.bias"] += np.float32(0.1)
    save_model(tmp_path / "m.npz", p, "softmax-v1")
    assert main(["gradcheck", "--model", str(tmp_path / "m.npz"), "--images", "random"]) == 0
    assert str(tmp_path / "m.npz") in capsys.readouterr().out
    assert main(["gradcheck", "--n", "0"]) == 2


def test_cli_gradcheck_exits_1_when_a_check_fails(capsys):
    """Zero tolerance: finite differences always differ by rounding, so every row fails."""
    from scratchadv.cli import main
    rc = main(["gradcheck", "--architecture", "softmax-v1", "--images", "random", "--n", "1",
               "--rtol", "0", "--atol", "0"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 of 7 arrays pass" in out

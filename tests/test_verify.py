"""scratchadv.verify: scratchadv against PyTorch, JAX and TensorFlow (each optional)."""
import json

import numpy as np
import pytest

from conftest import tiny_images
from scratchadv import verify as V
from scratchadv.model import ARCHITECTURES, get_architecture


def batch(n=6, seed=0):
    """Blank-background digits (exact ReLU zeros and pooling ties) and uniform noise."""
    r = np.random.default_rng(seed)
    x = np.concatenate([tiny_images(n - n // 2, seed),
                        r.uniform(0, 1, (n // 2, 1, 28, 28)).astype(np.float32)])
    return x, r.integers(0, 10, n).astype(np.int64)


def shifted(arch, seed=1):
    """Non-zero biases: blank pixels then hold equal positive values, tied in every window."""
    return {k: v + np.float32(0.05) if k.endswith(".bias") else v
            for k, v in get_architecture(arch).init_params(seed).items()}


def need(framework):
    pytest.importorskip({"tensorflow": "tensorflow"}.get(framework, framework))


def assert_within(rows, dtype, framework):
    over = [r for r in rows if not r["rel_err"] <= V.TARGETS[dtype]]
    assert not over, V.format_rows(rows, V.TARGETS[dtype], framework=framework)


CASES = [("lecture-cnn-v1", "float64"), ("lecture-cnn-v1", "float32")] + \
    [(a, "float64") for a in sorted(ARCHITECTURES) if a != "lecture-cnn-v1"]


@pytest.mark.parametrize("framework", ["jax", "tensorflow"])
@pytest.mark.parametrize("arch,dtype", CASES)
def test_every_quantity_matches(framework, arch, dtype):
    need(framework)
    x, y = batch()
    a = get_architecture(arch)
    for params in (a.init_params(0), shifted(arch)):      # zero biases: exact ReLU kinks
        rows = V.compare(params, x.astype(dtype), y, framework=framework, architecture=arch)
        names = [r["quantity"] for r in rows]
        for k in a.param_shapes():
            for label in ("grad W", "double-backprop W", "penalty W"):
                assert f"{label} [{k}]" in names
        for q in ("logits", "loss", "grad x", "hvp x", "pgd step (x_adv - x)"):
            assert q in names
        assert_within(rows, dtype, framework)
        assert all(r["scale"] > 0 for r in rows
                   if r["quantity"] not in ("pgd step (x_adv - x)", "pooling routing"))
        assert rows[-1]["rule"] == "first" and rows[-1]["images_set_aside"] < len(x)
        assert not any("correction" in r for r in rows)


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_a_tie_broken_by_rounding_is_set_aside(framework):
    """A few ulps on one tied entry of the framework's second pooling layer (what a
    CPU's convolution rounding may do) routes that window elsewhere: found, its image set
    aside, the rest still agrees to 1e-10."""
    need(framework)
    from scratchadv.ops import pool_argmax
    x, y = batch()
    x = x.astype(np.float64)
    params = shifted("lecture-cnn-v1")
    a = V.ours(params, x, y)
    h = a["pool_inputs"][1]
    w = V._windows(h)
    m = w.max(-1)
    tied = ((w == m[..., None]).sum(-1) > 1) & (m > 0)
    assert tied.any()
    i, c, p, q = np.argwhere(tied)[0]
    k = np.flatnonzero(w[i, c, p, q] == m[i, c, p, q])[1]           # the second maximum
    # lift the framework's own value there a few ulps above its window's maximum
    ht = V.theirs(params, x, y, framework=framework)["pool_inputs"][1]
    r, s = 2 * p + k // 2, 2 * q + k % 2
    top = ht[i, c, 2 * p:2 * p + 2, 2 * q:2 * q + 2].max()
    delta = np.zeros_like(h)
    delta[i, c, r, s] = (top - ht[i, c, r, s]) + 4 * (np.nextafter(top, np.inf) - top)
    b = V.theirs(params, x, y, framework=framework, nudge=(1, delta))
    route = V.routing(a["pool_inputs"], b["pool_inputs"], len(x), framework)
    assert route["differs"][1][i, c, p, q] and pool_argmax(b["pool_inputs"][1])[i, c, p, q] == k
    assert route["layers"][1]["near_tie_max_rel_gap"] <= 1e-13
    rows = V.compare(params, x, y, framework=framework, nudge=(1, delta))
    assert_within(rows, "float64", framework)
    assert 1 <= rows[-1]["images_set_aside"] <= len(x) // 2
    assert rows[-1]["layers"][1][f"{framework}_exact_ties"] >= 0
    # without setting it aside the input gradient would differ there
    assert V.errors(a["grad_x"], b["grad_x"])[1] > 1e-6


def test_another_tie_rule_is_compared_on_jittered_images():
    """The correction for a framework whose pooling does not route to the first maximum:
    its tied windows count as routed differently, and compare() jitters the images."""
    need("torch")
    x, y = batch()
    x = x.astype(np.float64)
    params = shifted("lecture-cnn-v1")
    a = V.ours(params, x, y)
    b = V.theirs(params, x, y)
    first = V.routing(a["pool_inputs"], b["pool_inputs"], len(x), "torch", rule="first")
    split = V.routing(a["pool_inputs"], b["pool_inputs"], len(x), "torch", rule="split")
    assert sum(la["routed_differently"] for la in split["layers"]) > \
        sum(la["routed_differently"] for la in first["layers"])
    rows = V.compare(params, x, y, framework="torch", rule="split")
    assert all(r.get("correction") == "jittered" for r in rows[:-1])
    assert rows[-1]["images_set_aside"] == 0           # jittered: no tie left
    assert_within(rows, "float64", "torch")
    assert "jittered" in V.format_rows(rows, 1e-10, framework="torch")
    # softmax regression has no pooling: nothing to correct
    rows = V.compare(shifted("softmax-v1"), x, y, architecture="softmax-v1", rule="split")
    assert not any("correction" in r for r in rows)


def test_errors_and_argument_checks():
    assert V.errors(np.ones(3), np.ones(3)) == (0.0, 0.0)
    assert V.errors(np.ones(2), np.zeros(2))[1] == float("inf")
    assert V.check_frameworks("jax, torch,jax") == ("jax", "torch")
    assert V.check_dtypes([np.float32, "float64"]) == ("float32", "float64")
    with pytest.raises(ValueError, match="^against: .*'mxnet'"):
        V.check_frameworks("torch,mxnet")
    with pytest.raises(ValueError, match="^against: .*none"):
        V.check_frameworks(",")
    with pytest.raises(ValueError, match="^dtypes: .*'float16'"):
        V.check_dtypes("float16")
    with pytest.raises(ValueError, match="^n: "):
        V.verify({"w": (shifted("mlp-v1"), "mlp-v1")}, n=0)
    with pytest.raises(ValueError, match="^images: "):
        V.verify({"w": (shifted("mlp-v1"), "mlp-v1")}, images="cifar")


def test_a_missing_framework_gets_one_line_and_nothing_verified_fails(monkeypatch):
    need("torch")
    real = V.framework_version
    monkeypatch.setattr(V, "framework_version", lambda fw: None if fw != "torch" else real(fw))
    lines = []
    doc = V.verify({"w": (shifted("mlp-v1"), "mlp-v1")}, against="torch,tensorflow",
                   dtypes="float64", n=2, images="random", verbose=False, out=lines.append)
    assert doc["passed"] is True and doc["frameworks"]["tensorflow"] == {"installed": False,
                                                                         "version": None}
    assert "tensorflow: not installed, skipped (pip install 'scratchadv[tensorflow]')" in lines
    doc = V.verify({"w": (shifted("mlp-v1"), "mlp-v1")}, against="tensorflow", n=2,
                   images="random", verbose=False, out=lines.append)
    assert doc["passed"] is False and lines[-1].startswith("nothing verified")


def test_the_probes_read_scratchadv_conventions():
    t = V.conventions(())
    assert set(t) == {"scratchadv"} and "autograd" in t["scratchadv"]["version"]
    for dt in ("float64", "float32"):
        c = t["scratchadv"][dt]
        assert c["relu_grad_at_0"] == 0.0 and c["maximum_grad_at_0"] == 0.5
        assert c["pool_tie"] == "first" and c["reduce_max_tie"] == "split"
        assert c["log_softmax_at_1000"] == "stable"
    assert t["scratchadv"]["float64"]["dtype_out"] == "float64"
    assert t["scratchadv"]["float32"]["dtype_out"].startswith("float32")
    md = V.format_conventions(t)
    assert md.splitlines()[0].startswith("| convention | scratchadv ")
    assert "| tied 2x2 max-pool window: gradient to | first |" in md


def test_the_probes_can_tell_the_rules_apart():
    """A split or last-max pooling is recognised as such (the probes can fail)."""
    from autograd import grad
    import autograd.numpy as anp

    def pooled(x):                 # one np.max over each window's 4 entries: ties split
        n, c, h, w = x.shape
        win = anp.reshape(anp.transpose(anp.reshape(x, (n, c, h // 2, 2, w // 2, 2)),
                                        (0, 1, 2, 4, 3, 5)), (n, c, h // 2, w // 2, 4))
        return anp.sum(anp.max(win, axis=-1))
    assert V._pool_probe({"pool_grad": grad(pooled)}) == "split"
    from scratchadv.ops import maxpool2d

    def last(x):                   # first max of the mirrored windows = last max
        return anp.sum(maxpool2d(x[:, :, ::-1, ::-1]))
    assert V._pool_probe({"pool_grad": grad(last)}) == "last"
    assert V._classify([np.array([1.0, 0.0]), np.array([0.5, 0.5])]) == "mixed: first, split"


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_the_probes_of_each_framework(framework):
    need(framework)
    t = V.conventions([framework])[framework]
    assert t["installed"] and t["version"]
    for dt in ("float64", "float32"):
        c = t[dt]
        assert c["relu_grad_at_0"] == 0.0 and c["pool_tie"] == "first"
        assert c["reduce_max_tie"] == "split" and c["log_softmax_at_1000"] == "stable"
        assert c["dtype_out"] == dt
    assert V.pool_rule(framework) == "first"


def test_cli_bad_inputs_are_one_line_naming_the_flag(tmp_path, capsys):
    from scratchadv.checkpoint import save_model
    from scratchadv.cli import main
    m = tmp_path / "mlp.npz"
    save_model(m, get_architecture("mlp-v1").init_params(0), "mlp-v1")
    for argv, flag in ((["--against", "torch,mxnet"], "--against"),
                       (["--dtype", "float16"], "--dtype"),
                       (["--model", str(m), "--architecture", "lecture-cnn-v1"], "--model"),
                       (["--model", str(tmp_path / "none.npz")], "--model"),
                       (["--architecture", "resnet"], "--architecture"),
                       (["--n", "0"], "--n")):
        assert main(["verify"] + argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"scratchadv verify: error: {flag}:"), err


def test_cli_writes_a_json_report_and_prints_conventions(tmp_path, capsys):
    need("torch")
    from scratchadv.cli import main
    out = tmp_path / "r.json"
    assert main(["verify", "--against", "torch", "--architecture", "mlp-v1", "--n", "3",
                 "--images", "random", "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["frameworks"]["torch"]["installed"]
    assert doc["frameworks"]["torch"]["worst"]["float64"]["hvp x"] <= 1e-10
    assert "all within target" in capsys.readouterr().out
    assert main(["verify", "--conventions", "--against", "torch"]) == 0
    text = capsys.readouterr().out
    assert "| convention | scratchadv" in text and "torch " in text.splitlines()[0]


@pytest.mark.mnist
def test_trained_model_matches_every_framework_on_real_digits(natural_model_path):
    from scratchadv.checkpoint import load_model
    params, meta = load_model(natural_model_path)
    lines = []
    doc = V.verify({"natural": (params, meta["architecture"])}, n=32, images="mnist",
                   verbose=False, out=lines.append)
    installed = [fw for fw, e in doc["frameworks"].items() if e["installed"]]
    assert doc["passed"] is True, "\n".join(lines)
    for fw in installed:
        worst = doc["frameworks"][fw]["worst"]
        assert worst["float64"]["grad x"] <= 1e-10 and worst["float32"]["hvp x"] <= 1e-4
        case = doc["frameworks"][fw]["cases"][0]
        assert case["zero_pixel_fraction"] > 0.5              # real digits: mostly zeros
    if "jax" in installed:         # the split-tie convention would move the gradient by percents
        from scratchadv.verify import image_sets
        x, y, _ = image_sets(32, 0, which=("mnist",))["mnist"]
        impact = V.tie_rule_impact(params, x, y)
        print("input-gradient change on 32 real digits:", impact)
        assert all(v["jittered"] <= 1e-10 for v in impact.values()), impact
        assert impact["max-pool as jnp.max (split ties)"]["as_given"] > 1e-3, impact


def test_float32_rows_pass_when_each_side_is_right_to_float32():
    """A float32 difference of two roundings: each library within target of float64."""
    row = {"rel_err": 1.02e-4, "ours_vs_f64": 3.9e-5, "theirs_vs_f64": 6.7e-5}
    assert V.row_passes(row, 1e-4)
    assert not V.row_passes({**row, "ours_vs_f64": 2e-4}, 1e-4)
    assert not V.row_passes({"rel_err": 2e-10}, 1e-10)          # float64: no such excuse
    assert V.row_passes({"rel_err": 5e-11}, 1e-10)

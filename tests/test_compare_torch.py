"""scripts/compare_torch.py: scratchadv and PyTorch agree on every quantity (torch: optional)."""
import json
import os

import numpy as np
import pytest

from conftest import load_script, tiny_images
from scratchadv.verify import row_passes
from scratchadv.model import ARCHITECTURES, get_architecture

HERE = os.path.dirname(os.path.abspath(__file__))


ct = load_script("compare_torch")


def batch(n=6, seed=0):
    """Blank-background digits (exact ReLU zeros and pooling ties) and uniform noise."""
    r = np.random.default_rng(seed)
    x = np.concatenate([tiny_images(n - n // 2, seed),
                        r.uniform(0, 1, (n // 2, 1, 28, 28)).astype(np.float32)])
    return x, r.integers(0, 10, n).astype(np.int64)


def test_errors_definition():
    a = np.array([1.0, 2.0, -4.0])
    assert ct.errors(a, a) == (0.0, 0.0)
    d, r = ct.errors(a + np.array([0.0, 0.1, 0.0]), a)
    assert d == pytest.approx(0.1) and r == pytest.approx(0.1 / 4)
    assert ct.errors(np.zeros(2), np.zeros(2)) == (0.0, 0.0)
    assert ct.errors(np.ones(2), np.zeros(2))[1] == float("inf")
    with pytest.raises(ValueError, match="shapes"):
        ct.errors(np.ones(2), np.ones(3))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_quantity_matches_torch(arch, dtype):
    pytest.importorskip("torch")
    a = get_architecture(arch)
    x, y = batch()
    # zero biases (fresh init): blank pixels sit exactly on the ReLU kink; then non-zero ones
    shifted = {k: v + np.float32(0.05) if k.endswith(".bias") else v
               for k, v in a.init_params(1).items()}
    for params in (a.init_params(0), shifted):
        rows = ct.compare(params, x.astype(dtype), y, architecture=arch, lam=1.0, eps=0.3,
                          step_size=0.01)
        names = [r["quantity"] for r in rows]
        for k in a.param_shapes():
            for label in ("grad W", "double-backprop W", "penalty W"):
                assert f"{label} [{k}]" in names
        for q in ("logits", "loss", "grad x", "pgd step (x_adv - x)"):
            assert q in names
        over = [r for r in rows if not r["rel_err"] <= ct.TARGETS[dtype]]
        assert not over, ct.format_rows(rows, ct.TARGETS[dtype])
        assert all(r["scale"] > 0 for r in rows
                   if r["quantity"] not in ("pgd step (x_adv - x)", "pooling routing"))
        route = rows[names.index("pooling routing")]
        assert route["images_set_aside"] < len(x)        # something was compared
        if dtype == "float32":      # each library against the float64 result, for context
            assert all(("ours_vs_f64" in r) == (not r["quantity"].startswith("pgd")) for r in rows
                       if r["quantity"] != "pooling routing")
        pgd = rows[names.index("pgd step (x_adv - x)")]
        assert pgd["scale"] == pytest.approx(0.01, rel=1e-5) and pgd["flips_where_determined"] == 0


def test_a_different_tie_convention_is_caught(monkeypatch):
    """np.maximum's ReLU (derivative 1/2 at 0) must show up as a mismatch on blank images."""
    pytest.importorskip("torch")
    import autograd.numpy as anp
    import scratchadv.model as model
    x, y = batch()
    params = get_architecture("lecture-cnn-v1").init_params(0)   # zero biases: exact kinks
    monkeypatch.setattr(model, "relu", lambda z: anp.maximum(z, 0.0))
    rows = ct.compare(params, x.astype(np.float64), y)
    worst = {r["quantity"]: r["rel_err"] for r in rows}
    assert worst["logits"] <= 1e-10                  # same forward pass...
    assert worst["grad x"] > 1e-3                    # ...different gradients


def test_main_writes_a_json_report(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "r.json"
    rc = ct.main(["--n", "3", "--images", "random", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] is True
    assert {c["dtype"] for c in doc["cases"]} == {"float64", "float32"}
    assert doc["worst"]["float64"]["grad x"] <= 1e-10
    assert "all within target" in capsys.readouterr().out
    assert ct.main(["--n", "0"]) == 2
    assert ct.main(["--dtypes", "float16"]) == 2


def test_main_json_to_stdout_is_pure_json(capsys):
    pytest.importorskip("torch")
    assert ct.main(["--n", "2", "--images", "random", "--dtypes", "float64", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


@pytest.mark.mnist
def test_trained_model_matches_torch_on_real_digits(natural_model_path):
    pytest.importorskip("torch")
    from scratchadv.checkpoint import load_model
    params, meta = load_model(natural_model_path)
    sets = ct.image_sets(32, seed=0, which=("mnist",))
    x, y, _ = sets["mnist"]
    assert np.mean(x == 0) > 0.5                     # real digits: mostly exact zeros
    for dtype in ("float64", "float32"):
        rows = ct.compare(params, x.astype(dtype), y, architecture=meta["architecture"])
        over = [r for r in rows if not row_passes(r, ct.TARGETS[dtype])]
        assert not over, ct.format_rows(rows, ct.TARGETS[dtype])

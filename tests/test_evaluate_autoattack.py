"""evaluate_model(suite="autoattack"): the ensemble at every eps, its checks, resume."""
import numpy as np
import pytest

from conftest import tiny_images
from scratchadv.evaluate import SUITES, evaluate_model
from scratchadv.model import init_params, predict
from test_autoattack import CHEAP

from scratchadv.attacks.autoattack import COMPONENTS


@pytest.fixture
def cheap(monkeypatch):
    """The ensemble's logic with cheap attacks (the attacks themselves are tested elsewhere)."""
    for k, f in CHEAP.items():
        monkeypatch.setitem(COMPONENTS, k, f)


@pytest.fixture(scope="module")
def setup():
    r = np.random.default_rng(0)
    p = {k: v.astype(np.float64) for k, v in init_params(3).items()}
    p = {k: (v + 0.05 * r.standard_normal(v.shape) if k.endswith("bias") else v) for k, v in p.items()}
    x = tiny_images(12, seed=4, dtype=np.float64)
    return p, x, np.argmax(predict(p, x), 1).astype(np.int64)


def evaluate(setup, **kw):
    p, x, y = setup
    return evaluate_model(p, x, y, suite="autoattack", eps_list=[0.0, 0.01, 0.02], verbose=False,
                          batch_size=5, **kw)


def test_autoattack_suite(setup, cheap):
    assert SUITES["autoattack"] == ("fgsm", "autoattack")
    rep = evaluate(setup)
    assert rep["suite"] == "autoattack" and rep["attacks"] == ["fgsm", "autoattack"]
    for r in rep["results"][1:]:
        acc = r["accuracy"]
        assert acc["worst_case"] <= min(acc["fgsm"], acc["autoattack"])
        after = r["autoattack_after"]
        assert list(after) == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert after["square"] == pytest.approx(acc["autoattack"])      # cumulative, over all n
        assert r["autoattack"]["checks"]["within_eps"]
    names = [c["name"] for c in rep["sanity"]]
    assert "black-box Square does not beat the white-box attacks" in names
    d = rep["doubled_steps"]
    assert d["attack"] == "apgd-ce" and d["steps"] == 100
    from scratchadv.evaluate import format_markdown
    md = format_markdown(rep)
    assert "## AutoAttack, attack by attack" in md and "| 0.02 | " in md


class Stop(Exception):
    pass


def test_autoattack_suite_resumes_to_the_same_report(setup, cheap, tmp_path, monkeypatch):
    full = evaluate(setup, checks=False)
    calls = {"n": 0}
    original = COMPONENTS["apgd-t"]

    def breaking(*a):
        calls["n"] += 1
        if calls["n"] == 3:            # at the second eps's ensemble, inside APGD-T
            raise Stop
        return original(*a)
    monkeypatch.setitem(COMPONENTS, "apgd-t", breaking)
    with pytest.raises(Stop):
        evaluate(setup, checks=False, state_dir=str(tmp_path))
    monkeypatch.setitem(COMPONENTS, "apgd-t", original)
    resumed = evaluate(setup, checks=False, state_dir=str(tmp_path), resume=True)
    for a, b in zip(full["results"], resumed["results"]):
        assert a["masks"] == b["masks"] and a["accuracy"] == b["accuracy"]
        assert a.get("autoattack_after") == b.get("autoattack_after")


def test_bad_suite_and_resume(setup):
    p, x, y = setup
    with pytest.raises(ValueError, match="suite"):
        evaluate_model(p, x, y, suite="aa", verbose=False)
    with pytest.raises(ValueError, match="resume"):
        evaluate_model(p, x, y, resume=True, verbose=False)


@pytest.mark.mnist
def test_cli_evaluate_suite_autoattack(tmp_path, capsys):
    import json
    from scratchadv.checkpoint import save_model
    from scratchadv.cli import main
    model = tmp_path / "random.npz"
    save_model(model, init_params(0), "lecture-cnn-v1")
    rc = main(["evaluate", "--model", str(model), "--n", "6", "--suite", "autoattack", "--eps", "0.05",
               "--quiet", "--report", str(tmp_path / "rep")])
    assert rc == 0
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["suite"] == "autoattack" and rep["attacks"] == ["fgsm", "autoattack"]
    assert not (tmp_path / "rep" / "state").exists()          # a finished run keeps no state
    assert "autoattack" in capsys.readouterr().out
    assert "AutoAttack, attack by attack" in (tmp_path / "rep" / "report.md").read_text()

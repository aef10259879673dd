"""Evaluation: worst case is the per-sample AND, the sanity checks pass on an honest model
and flag a gradient-masked one, reports are written, and the CLI runs end to end."""
import json
import os

import autograd.numpy as anp
import numpy as np
import pytest

from scratchadv.evaluate import (ATTACKS, FINAL_EPS, attack_correct, compare_reports,
                                 evaluate_file, evaluate_model, format_markdown, load_report,
                                 mask_string, parse_mask, sanity_checks, worst_case,
                                 write_comparison, write_report, zero_gradient_fraction)
from scratchadv.model import predict_softmax


def _halves_data(n, seed=0):
    """Class 0: left half brighter (0.6 vs 0.4); class 1: right half. Plus noise."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n).astype(np.int64)
    x = np.full((n, 1, 28, 28), 0.4) + 0.05 * r.standard_normal((n, 1, 28, 28))
    x[y == 0, :, :, :14] += 0.2
    x[y == 1, :, :, 14:] += 0.2
    return np.clip(x, 0, 1).astype(np.float32), y


def _halves_model():
    """Softmax regression that sums the left half (class 0) and the right half (class 1)."""
    w = np.zeros((10, 1, 28, 28), dtype=np.float32)
    w[0, :, :, :14] = 0.5
    w[1, :, :, 14:] = 0.5
    b = np.zeros(10, dtype=np.float32)
    b[2:] = -1e3            # the other classes never win
    return {"dense1.weight": w.reshape(10, 784), "dense1.bias": b}


def masked_predict(params, x):
    """The same model behind a quantiser: a step function of x, gradient zero everywhere."""
    return predict_softmax(params, anp.round(x * 4) / 4)


FAST = dict(eps_list=(0.0, 0.1, 0.2), attacks=("fgsm", "pgd", "pgd-l2"), steps=10, restarts=2,
            verbose=False, batch_size=16)


def test_worst_case_is_per_sample_and():
    clean = np.array([1, 1, 1, 1, 0], bool)
    by = {"fgsm": np.array([1, 0, 1, 1, 1], bool), "pgd": np.array([1, 1, 0, 1, 1], bool)}
    w = worst_case(clean, by)
    assert w.tolist() == [True, False, False, True, False]
    # the AND is below the smallest per-attack accuracy when attacks fool different samples
    assert w.mean() < min(v.mean() for v in by.values())


def test_restarts_only_remove_samples():
    params = _halves_model()
    x, y = _halves_data(40)
    one, first = attack_correct("pgd", params, x, y, eps=0.1, steps=5, restarts=1, predict_fn=predict_softmax)
    three, first3 = attack_correct("pgd", params, x, y, eps=0.1, steps=5, restarts=3, predict_fn=predict_softmax)
    assert np.array_equal(first, first3)         # restart 0 is the same run
    assert not np.any(three & ~one)              # more restarts never make a sample robust again


def test_report_worst_case_equals_and_of_its_masks():
    params = _halves_model()
    x, y = _halves_data(48)
    rep = evaluate_model(params, x, y, predict_fn=predict_softmax, **FAST)
    assert rep["eps"][-1] == FINAL_EPS and rep["eps"][0] == 0.0
    for row in rep["results"]:
        masks = {a: parse_mask(row["masks"][a]) for a in rep["attacks"]}
        clean = parse_mask(row["masks"]["clean"])
        w = clean.copy()
        for a in rep["attacks"]:
            w &= masks[a]
            assert row["accuracy"][a] == pytest.approx(masks[a].mean())
        assert np.array_equal(parse_mask(row["masks"]["worst_case"]), w)
        assert row["accuracy"]["worst_case"] == pytest.approx(w.mean())
        assert row["accuracy"]["worst_case"] <= min(row["accuracy"][a] for a in rep["attacks"])
    # recompute one cell independently: FGSM at eps 0.1 from the attack itself
    from scratchadv.attacks import fgsm
    xa = fgsm(params, x, y, eps=0.1, predict_fn=predict_softmax).x_adv
    direct = np.mean(np.argmax(predict_softmax(params, xa), 1) == y)
    row = [r for r in rep["results"] if r["eps"] == 0.1][0]
    assert row["accuracy"]["fgsm"] == pytest.approx(direct)


def test_honest_model_passes_all_checks():
    params = _halves_model()
    x, y = _halves_data(48)
    rep = evaluate_model(params, x, y, predict_fn=predict_softmax, **FAST)
    assert rep["clean_accuracy"] > 0.9
    failed = [c for c in rep["sanity"] if not c["passed"]]
    assert not failed, failed
    assert rep["zero_gradient_fraction"] == 0.0
    assert len(rep["sanity"]) == 5


@pytest.mark.filterwarnings("ignore:Output seems independent of input")
def test_gradient_masked_model_is_flagged():
    params = _halves_model()
    x, y = _halves_data(48)
    assert zero_gradient_fraction(params, x, y, masked_predict) == 1.0
    rep = evaluate_model(params, x, y, predict_fn=masked_predict, **FAST)
    by = {c["name"]: c for c in rep["sanity"]}
    assert not by["almost no all-zero input gradients"]["passed"]
    # the attacks see no gradient, so accuracy at eps 0.5 stays far above chance
    assert not by["accuracy falls with eps, <= 10% at eps 0.5"]["passed"]
    row = [r for r in rep["results"] if r["eps"] == FINAL_EPS][0]
    assert row["accuracy"]["pgd"] > 0.5
    # ... while the same weights without the quantiser fall to 0
    honest = evaluate_model(params, x, y, predict_fn=predict_softmax, **FAST)
    assert [r for r in honest["results"] if r["eps"] == FINAL_EPS][0]["accuracy"]["worst_case"] == 0.0


def _fake_report(acc_rows, doubled=None, zero=0.0):
    attacks = ["fgsm", "pgd"]
    return {"attacks": attacks, "results": [
        {"eps": e, "accuracy": {"fgsm": f, "pgd": p, "noise": nz, "worst_case": min(f, p)}}
        for e, f, p, nz in acc_rows], "doubled_steps": doubled, "zero_gradient_fraction": zero}


def test_sanity_check_logic_on_numbers():
    good = _fake_report([(0, .99, .99, .99), (.1, .7, .5, .98), (.3, .2, .01, .9), (.5, .05, 0, .5)],
                        {"attack": "pgd", "eps": .1, "steps": 40, "accuracy": .5, "doubled_accuracy": .49})
    assert all(c["passed"] for c in sanity_checks(good))
    bad = _fake_report([(0, .99, .99, .99), (.1, .5, .7, .4), (.3, .6, .6, .9), (.5, .3, .3, .5)],
                       {"attack": "pgd", "eps": .1, "steps": 40, "accuracy": .5, "doubled_accuracy": .6},
                       zero=0.3)
    by = {c["name"]: c["passed"] for c in sanity_checks(bad)}
    assert by == {"iterative beats single-step": False,
                  "doubling steps does not raise accuracy": False,
                  "accuracy falls with eps, <= 10% at eps 0.5": False,
                  "random noise hurts less than the attack": False,
                  "almost no all-zero input gradients": False}


@pytest.mark.filterwarnings("ignore:Output seems independent of input")
def test_reports_are_written_and_compared(tmp_path):
    params = _halves_model()
    x, y = _halves_data(24)
    fast = dict(FAST, attacks=("fgsm", "pgd"), restarts=1)
    a = evaluate_model(params, x, y, predict_fn=predict_softmax, name="plain", **fast)
    b = evaluate_model(params, x, y, predict_fn=masked_predict, name="masked", checks=False, **fast)
    paths = write_report(a, tmp_path / "a")
    for p in paths.values():
        assert os.path.getsize(p) > 0
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert load_report(tmp_path / "a") == json.loads(json.dumps(a))
    assert "| 0.1 |" in format_markdown(a)
    cmp_paths = write_comparison([a, b], tmp_path / "cmp")
    table = open(cmp_paths["md"]).read()
    assert "plain" in table and "masked" in table
    assert [m["name"] for m in compare_reports([a, b])["models"]] == ["plain", "masked"]
    assert not [f for f in os.listdir(tmp_path / "cmp") if f.endswith(".tmp")]


def test_mask_strings_round_trip():
    m = np.array([True, False, False, True, True])
    assert mask_string(m) == "10011"
    assert parse_mask(mask_string(m)).tolist() == m.tolist()
    assert parse_mask("").shape == (0,)


def test_evaluate_file_is_evaluate_model_on_the_stored_model(tmp_path):
    from scratchadv.checkpoint import save_model
    params = _halves_model()
    x, y = _halves_data(24)
    path = tmp_path / "halves.npz"
    save_model(path, params, architecture="softmax-v1", config={"lr": 0.1})
    fast = dict(FAST, attacks=("fgsm", "pgd"), restarts=1)
    rep = evaluate_file(path, x, y, data="24 synthetic images", **fast)
    direct = evaluate_model(params, x, y, predict_fn=predict_softmax, name="halves", **fast)
    extra = {"model": os.path.abspath(path), "architecture": "softmax-v1",
             "model_config": {"lr": 0.1}, "data": "24 synthetic images"}
    rep.pop("seconds"), direct.pop("seconds")
    assert rep == {**direct, **extra}
    assert evaluate_file(path, x, y, name="other", checks=False, **fast)["name"] == "other"
    assert "data" not in evaluate_file(path, x, y, checks=False, **fast)


def test_evaluate_file_refuses_images_of_another_dtype(tmp_path):
    from scratchadv.checkpoint import save_model
    path = tmp_path / "halves.npz"
    save_model(path, _halves_model(), architecture="softmax-v1")
    x, y = _halves_data(4)
    with pytest.raises(ValueError, match=r"^path: parameters are float32, images are float64$"):
        evaluate_file(path, x.astype(np.float64), y, verbose=False)


def test_cli_evaluate_on_synthetic_data(tmp_path, monkeypatch, capsys):
    """The command around evaluate_file: its report, its printout, its error in flags."""
    import scratchadv.data
    from scratchadv.checkpoint import save_model
    from scratchadv.cli import main
    x, y = _halves_data(24)
    monkeypatch.setattr(scratchadv.data, "load_mnist", lambda folder=None: (x, y, x, y))
    save_model(tmp_path / "halves.npz", _halves_model(), architecture="softmax-v1")
    save_model(tmp_path / "wide.npz", {k: v.astype(np.float64) for k, v in _halves_model().items()},
               architecture="softmax-v1")
    flags = ["--n", "16", "--eps", "0,0.1", "--attacks", "fgsm,pgd", "--steps", "3", "--restarts", "1",
             "--quiet"]
    assert main(["evaluate", "--model", str(tmp_path / "halves.npz"), "--report", str(tmp_path / "r"),
                 *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    rep = load_report(tmp_path / "r")
    assert out[0] == f"halves: clean accuracy {rep['clean_accuracy']:.4f} on 16 test images"
    assert out[1] == "   eps  " + "".join(f"{c:>11}" for c in ("fgsm", "pgd", "noise", "worst_case"))
    assert len(out) == 2 + 3 + 5 + 1 and out[-1].startswith(f"report: {tmp_path / 'r' / 'report.md'}")
    assert rep["data"] == "MNIST test set, first n images" and rep["n"] == 16
    assert main(["evaluate", "--model", str(tmp_path / "wide.npz"), "--report", str(tmp_path / "w"),
                 *flags]) == 2
    assert capsys.readouterr().err == \
        "scratchadv evaluate: error: --model: parameters are float64, images are float32\n"


def test_bad_arguments_are_refused():
    params = _halves_model()
    x, y = _halves_data(4)
    with pytest.raises(ValueError, match="attacks"):
        evaluate_model(params, x, y, predict_fn=predict_softmax, attacks=("cw",), verbose=False)
    with pytest.raises(ValueError, match="eps"):
        evaluate_model(params, x, y, predict_fn=predict_softmax, eps_list=(0.1, 2.0), verbose=False)
    with pytest.raises(ValueError, match="y"):
        evaluate_model(params, x, y[:3], predict_fn=predict_softmax, verbose=False)
    assert set(ATTACKS) >= {"fgsm", "pgd", "pgd-l2"}


@pytest.mark.mnist
def test_cli_evaluate_and_compare_natural_model(natural_model_path, tmp_path, capsys):
    """The lecture CNN, naturally trained: PGD beats FGSM and accuracy falls to ~0 (frugal: 100 images)."""
    from scratchadv.cli import main
    out = tmp_path / "rep"
    rc = main(["evaluate", "--model", natural_model_path, "--n", "100", "--eps", "0,0.1,0.3",
               "--attacks", "fgsm,pgd", "--steps", "20", "--restarts", "1", "--report", str(out), "--quiet"])
    assert rc == 0
    rep = load_report(out)
    acc = {r["eps"]: r["accuracy"] for r in rep["results"]}
    assert rep["clean_accuracy"] > 0.95
    assert acc[0.3]["pgd"] <= 0.05 and acc[0.1]["pgd"] <= acc[0.1]["fgsm"]
    assert "PASSED" in capsys.readouterr().out
    rc = main(["compare", str(out), str(out / "report.json"), "--report", str(tmp_path / "cmp")])
    assert rc == 2    # two reports of the same model have the same name: refused


def test_square_in_an_evaluation_restarts_on_the_images_left_and_joins_the_worst_case():
    """`square` as an evaluation attack: restarts only lower accuracy, and the worst case is
    the AND with the other attacks; the doubled-steps check ignores it (it has no steps)."""
    from conftest import tiny_images
    from scratchadv.evaluate import evaluate_model, parse_mask
    from scratchadv.model import init_params, predict
    p = {k: v.astype(np.float64) for k, v in init_params(3).items()}
    x = tiny_images(10, seed=4, dtype=np.float64)
    y = np.argmax(predict(p, x), 1).astype(np.int64)
    kw = dict(eps_list=[0.05], attacks=["fgsm", "pgd", "square"], steps=3, batch_size=5,
              checks=True, verbose=False)
    one = evaluate_model(p, x, y, restarts=1, **kw)
    two = evaluate_model(p, x, y, restarts=2, **kw)
    row1, row2 = (next(r for r in rep["results"] if r["eps"] == 0.05) for rep in (one, two))
    assert row2["accuracy"]["square"] <= row1["accuracy"]["square"]
    assert row1["accuracy"]["square"] < 1.0                       # it turns some images
    masks = {a: parse_mask(row2["masks"][a]) for a in ("fgsm", "pgd", "square", "clean")}
    np.testing.assert_array_equal(parse_mask(row2["masks"]["worst_case"]),
                                  masks["clean"] & masks["fgsm"] & masks["pgd"] & masks["square"])
    assert two["doubled_steps"]["attack"] == "pgd"


def test_pgd_in_the_evaluation_stops_each_image_at_its_first_success(params, data, monkeypatch):
    """The evaluation's PGD drops an image once it is fooled: the report is the one of
    PGD running every step on every image, and fewer images go through the network."""
    import scratchadv.evaluate.protocol as protocol
    from scratchadv.model import predict
    x, y = data
    seen = []

    def counting(p, xb):
        seen.append(len(xb))
        return predict(p, xb)

    kw = dict(eps_list=(0.0, 0.01, 0.02, 0.04), attacks=("pgd",), steps=8, restarts=2, verbose=False,
              predict_fn=counting)
    fast = evaluate_model(params, x, y, **kw)
    fast_images = sum(seen)
    seen.clear()
    every_step = protocol.pgd
    monkeypatch.setattr(protocol, "pgd", lambda *a, **k: every_step(*a, **{**k, "early_stop": False}))
    full = evaluate_model(params, x, y, **kw)
    full_images = sum(seen)
    accs = [r["accuracy"]["pgd"] for r in full["results"] if 0 < r["eps"] < FINAL_EPS]
    assert any(0 < a < 1 for a in accs), accs          # some images fall, some do not
    for a, b in zip(fast["results"], full["results"]):
        assert a["masks"] == b["masks"] and a["first_restart_accuracy"] == b["first_restart_accuracy"]
    assert fast["doubled_steps"] == full["doubled_steps"]
    assert fast_images < 0.8 * full_images, (fast_images, full_images)

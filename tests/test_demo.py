"""The demo: argument checks, the package's names and the quick run end to end (real MNIST).

The model cache is tested in test_cache.py, the report from a stored results.json in
test_demo_report.py.
"""
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest

from scratchadv import demo


# --- the package's names ---------------------------------------------------------

def test_demo_reexports_the_cache_and_its_figures():
    from scratchadv import cache, plots
    assert demo.cached_fit is cache.cached_fit and demo.cache_key is cache.cache_key
    assert demo.default_cache_dir is cache.default_cache_dir
    assert demo.plot_learning_curves is plots.plot_learning_curves
    assert set(demo.SECTION_FUNCTIONS) == set(demo.SECTIONS) == set(demo.TITLES)


def test_run_demo_checks_its_arguments_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="sections"):
        demo.run_demo(tmp_path / "out", sections=["train", "nonsense"], cache=tmp_path / "c")
    with pytest.raises(ValueError, match="seed"):
        demo.run_demo(tmp_path / "out", seed=-1, cache=tmp_path / "c")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"^out\b"):       # the parameter, not a flag
        demo.run_demo(blocker, cache=tmp_path / "c")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_cli_demo_names_its_flags_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([sys.executable, "-m", "scratchadv", "demo", "--out", str(blocker),
                        "--cache", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_demo_rejects_a_bad_seed_in_one_line():
    r = subprocess.run([sys.executable, "-m", "scratchadv", "demo", "--seed", "-2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--seed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- the quick demo, end to end (real MNIST) --------------------------------------

@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Two `scratchadv demo --quick --workers 2` runs sharing a model cache: (out folder,
    [run1, run2]); two worker processes, so the parallel paths run end to end as well."""
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "report", root / "cache"
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "scratchadv", "demo", "--quick", "--out", str(out),
                            "--cache", str(cache), "--workers", "2"], capture_output=True, text=True,
                           timeout=1200)
        results = out / "results.json"
        runs.append({"seconds": time.perf_counter() - t0, "stdout": r.stdout, "stderr": r.stderr,
                     "returncode": r.returncode,
                     "results": json.loads(results.read_text()) if results.is_file() else None})
    return out, runs


def training_seconds(results):
    """Seconds each of the six models spent training in this run (0: loaded from the cache)."""
    s = results["sections"]
    shallow = s["shallow_vs_deep"]["table"]
    return {"natural": s["train"]["train_seconds"], "softmax": shallow[0]["train_seconds"],
            "mlp": shallow[1]["train_seconds"],
            "pgd-trained": s["adversarial_training"]["train_seconds"],
            "trades": s["adversarial_training"]["trades"]["train_seconds"],
            "gradreg": s["gradient_regularization"]["train_seconds"]}


@pytest.mark.mnist
def test_quick_demo_writes_a_complete_report(quick_runs):
    out, runs = quick_runs
    assert runs[0]["returncode"] == 0, runs[0]["stderr"][-3000:]
    for name in ("README.md", "results.json", "comparison.md"):
        assert (out / name).is_file(), name
    for model in ("natural", "pgd-trained", "trades", "gradreg"):
        for suffix in ("", "-autoattack"):
            assert (out / f"evaluation-{model}{suffix}.json").is_file(), (model, suffix)
    # one summary line per section on the terminal
    for i, key in enumerate(demo.SECTIONS):
        assert f"[{i + 1}/7] {key}:" in runs[0]["stdout"]
    readme = (out / "README.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 13 and "fig6-robust-accuracy-trades.png" in pngs
    for png in pngs:                                   # every figure is shown in the report
        assert f"]({png})" in readme, png
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):   # and every image it shows exists
        assert (out / ref).is_file(), ref
    for key in demo.SECTIONS:
        assert f"## {demo.TITLES[key]}" in readme


@pytest.mark.mnist
def test_quick_demo_results_are_sane(quick_runs):
    out, runs = quick_runs
    res = json.loads((out / "results.json").read_text())
    assert res["quick"] is True and set(res["sections"]) == set(demo.SECTIONS)
    assert res["workers"] == 2 and res["command"].endswith("--workers 2")
    s = res["sections"]

    def frac(v):
        return isinstance(v, float) and 0.0 <= v <= 1.0

    t = s["train"]
    assert len(t["history"]["loss"]) == res["settings"]["epochs"]
    assert frac(t["train_accuracy"]) and t["val_accuracy"] > 0.6       # far above chance (0.1)
    f = s["fake"]
    assert len(f["target_probability"]) == 10 and all(frac(p) for p in f["target_probability"])
    assert f["loss"] == "lecture"                       # the slides' own loss, CE beside it
    assert f["cross_entropy"]["n_success"] >= 5         # the descent works for most classes
    for run in (f, f["cross_entropy"]):
        assert all(row[-1] < row[0] for row in run["loss_per_step"])
    u = s["untargeted"]
    assert u["ascent"]["success_rate"] > 0.5
    rows = u["rows"]
    assert [r["eps"] for r in rows] == sorted(r["eps"] for r in rows) and rows[0]["eps"] == 0
    for a, b in zip(rows, rows[1:]):                    # stronger attack, larger eps: never better
        assert b["worst_case"] <= a["worst_case"] + 1e-12
    for r in rows:
        assert r["worst_case"] <= min(r["fgsm"], r["pgd"]) + 1e-12
        assert r["pgd"] <= r["fgsm"] + 0.05
    assert rows[-1]["pgd"] < 0.1
    sd = s["shallow_vs_deep"]
    assert [r["architecture"] for r in sd["table"]] == ["softmax-v1", "mlp-v1", "lecture-cnn-v1"]
    for r in sd["table"]:
        assert 0 < r["median_linf"] <= sd["max_linf"] and 0 < r["median_l2"] <= sd["max_l2"]
        assert r["median_l2"] > r["median_linf"]        # ||d||_2 >= ||d||_inf for any d
        assert frac(r["fgsm025_error"]) and frac(r["test_accuracy"])
    tg = s["targeted"]
    assert sum(tg["grid"]["l1"]["success"]) >= 5 and sum(tg["grid"]["l2"]["success"]) >= 5
    assert "lecture-l1" in tg["grid"] and frac(tg["stats"]["penalty-lecture-l1"]["success_rate"])
    for k in ("penalty-l1", "penalty-l2", "pgd-linf"):
        assert frac(tg["stats"][k]["success_rate"]) and tg["stats"][k]["success_rate"] > 0.3
    assert tg["stats"]["pgd-linf"]["median_linf"] <= res["settings"]["targeted_pgd_eps"] + 1e-6
    check_minimal_norms(sd["minimal_norms"], res["settings"])
    adv, reg = s["adversarial_training"], s["gradient_regularization"]
    for d in (adv, adv["trades"], reg):
        assert frac(d["clean_accuracy"]) and d["clean_accuracy"] > 0.2
        assert len(d["sanity"]) == 5 and all(isinstance(c["passed"], bool) for c in d["sanity"])
        assert d["rows"][0]["eps"] == 0 and math.isclose(d["rows"][0]["worst_case"], d["clean_accuracy"])
        check_autoattack(d["autoattack"], res["settings"])
    check_autoattack(adv["autoattack_natural"], res["settings"])
    # TRADES: the library's defaults, the same training settings as the other defended models
    from scratchadv.defenses import DEFAULTS
    t, st = adv["trades"]["config"], res["settings"]
    assert t["defense"] == "trades" and t["beta"] == DEFAULTS["trades"]["beta"] and t["eps"] == DEFAULTS["trades"]["eps"]
    assert t["pgd_steps"] == (st["pgd_train_steps"] or DEFAULTS["trades"]["pgd_steps"])
    for k in ("epochs", "batch_size", "seed", "n_train"):
        assert t[k] == adv["config"][k] == reg["config"][k], k
    comp = reg["comparison"]
    assert list(comp) == ["natural", "pgd-trained", "trades", "gradreg"]
    # one AutoAttack evaluation per model: the comparison shows the sections' own numbers
    for name, own in (("natural", adv["autoattack_natural"]), ("pgd-trained", adv["autoattack"]),
                      ("trades", adv["trades"]["autoattack"]), ("gradreg", reg["autoattack"])):
        assert comp[name]["autoattack"] == own, name
        full = json.loads((out / f"evaluation-{name}-autoattack.json").read_text())
        row = next(r for r in full["results"] if r["eps"] == st["aa_eps"])
        assert full["suite"] == "autoattack" and full["n"] == st["aa_n"]
        assert row["accuracy"]["autoattack"] == own["robust_accuracy"]
    readme = (out / "README.md").read_text()
    assert "### TRADES" in readme and "### The four models side by side" in readme


def check_minimal_norms(m, settings):
    """Section 4's minimal-norm comparison: every model, both norms, the smallest named right."""
    assert m["n"] == settings["minnorm_n"] and m["attacks"] == settings["minnorm_attacks"]
    models = ["softmax regression", "MLP (1 hidden layer)", "lecture CNN"]
    assert [(r["model"], r["norm"]) for r in m["rows"]] == [(k, n) for k in models for n in ("l2", "linf")]
    for r in m["rows"]:
        expected = [a for a in settings["minnorm_attacks"] if not (a == "cw" and r["norm"] == "linf")]
        assert r["attacks"] == expected and set(r["by_attack"]) == set(expected)
        assert 0 < r["n_correct"] <= m["n"]
        med = {a: b["median"] for a, b in r["by_attack"].items()}
        for a in ("pgd", "deepfool"):              # both flip most images of these weak models
            assert 0 < med[a] < math.inf and r["by_attack"][a]["flipped"] > r["n_correct"] // 2, (r["model"], a)
        assert med[r["smallest"]] == min(med.values())
        assert m["smallest"][r["model"]][r["norm"]] == r["smallest"]
        if r["norm"] == "linf":
            assert med["pgd"] <= 1.0
        assert "sizes" not in r["by_attack"][expected[0]]    # per-image sizes stay out of results.json


def check_autoattack(a, settings):
    """One model's AutoAttack summary: consistent numbers, the checks and the Square warning."""
    assert a["n"] == settings["aa_n"] and a["eps"] == settings["aa_eps"]
    assert list(a["after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    after = list(a["after"].values())
    assert all(y <= x for x, y in zip(after, after[1:]))        # each attack runs on the survivors
    assert after[0] <= a["clean_accuracy"] and after[-1] == a["robust_accuracy"]
    assert a["worst_case"] <= min(a["robust_accuracy"], a["fgsm"])
    # AutoAttack is at least as strong as PGD with one restart on the same images (one image of slack)
    assert a["robust_accuracy"] <= a["pgd_worst_case"] + 1.0 / a["n"] + 1e-12
    assert isinstance(a["square_warning"], bool)
    assert a["closing_check"]["within_eps"] and a["closing_check"]["in_range"] and a["closing_check"]["nan"] == 0
    names = [c["name"] for c in a["sanity"]]
    assert len(names) == 6 and "Square" in names[-1]
    assert a["sanity"][-1]["passed"] is (not a["square_warning"])
    assert a["sanity_passed"] == all(c["passed"] for c in a["sanity"])


@pytest.mark.mnist
def test_quick_demo_second_run_reuses_every_model_and_trains_none(quick_runs):
    out, runs = quick_runs
    assert runs[1]["returncode"] == 0, runs[1]["stderr"][-3000:]
    reused = runs[1]["stdout"].count("reusing cached model")
    assert reused == 6, runs[1]["stdout"]              # natural, softmax, mlp, pgd-trained, trades, gradreg
    assert runs[0]["stdout"].count("reusing cached model") == 0
    # the work a second run saves, counted rather than timed: every model trained in the
    # first run, none in the second
    first, second = (training_seconds(r["results"]) for r in runs)
    assert all(v > 0 for v in first.values()), first
    assert all(v == 0.0 for v in second.values()), second
    res = json.loads((out / "results.json").read_text())
    assert res["sections"]["train"]["reused_cache"] is True
    # a reused model reports the training time measured when it was trained, not 0
    t = res["sections"]["train"]
    assert t["train_seconds"] == 0.0 and t["trained_seconds"] > 0
    assert t["trained_seconds"] == pytest.approx(sum(t["seconds_per_epoch"]))
    readme = (out / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("- training time per model:"))
    for name in ("natural", "softmax regression", "MLP", "pgd-trained", "trades", "gradreg"):
        assert name in line, line
    assert line.count("(cached, measured when it was trained)") == 6, line


@pytest.mark.mnist
def test_a_failure_beside_is_raised_after_the_other_sections_are_written(tmp_path, monkeypatch):
    """With workers=2 'fake' runs beside; its process failing stops nothing else: the
    other sections finish and are written, then the error is raised."""
    import scratchadv.parallel as parallel
    started = []

    class FailingBeside:
        def __init__(self, fn, keys, *args):
            started.append(list(keys))

        def done(self):
            return True

        def result(self):
            raise RuntimeError("Beside: the call failed in its process: on purpose")

        def close(self):
            pass

    monkeypatch.setattr(parallel, "Beside", FailingBeside)
    out = tmp_path / "report"
    with pytest.raises(RuntimeError, match="on purpose"):
        demo.run_demo(out, quick=True, cache=tmp_path / "cache", sections=("train", "fake", "untargeted"),
                      verbose=False, workers=2)
    assert started == [["fake"]]
    res = json.loads((out / "results.json").read_text())
    assert list(res["sections"]) == ["train", "untargeted"] and res["beside"] == ["fake"]
    assert "Incomplete report" in (out / "README.md").read_text()

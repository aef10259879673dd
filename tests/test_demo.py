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
    """Two `scratchadv demo --quick` runs sharing a model cache: (out folder, [run1, run2])."""
    root = tmp_path_factory.mktemp("demo")
    out, cache = root / "report", root / "cache"
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "scratchadv", "demo", "--quick", "--out", str(out),
                            "--cache", str(cache)], capture_output=True, text=True, timeout=1200)
        runs.append({"seconds": time.perf_counter() - t0, "stdout": r.stdout, "stderr": r.stderr,
                     "returncode": r.returncode})
    return out, runs


@pytest.mark.mnist
def test_quick_demo_writes_a_complete_report(quick_runs):
    out, runs = quick_runs
    assert runs[0]["returncode"] == 0, runs[0]["stderr"][-3000:]
    for name in ("README.md", "results.json", "comparison.md", "evaluation-natural.json",
                 "evaluation-pgd-trained.json", "evaluation-gradreg.json"):
        assert (out / name).is_file(), name
    # one summary line per section on the terminal
    for i, key in enumerate(demo.SECTIONS):
        assert f"[{i + 1}/7] {key}:" in runs[0]["stdout"]
    readme = (out / "README.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) >= 12
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
    for key in ("adversarial_training", "gradient_regularization"):
        d = s[key]
        assert frac(d["clean_accuracy"]) and d["clean_accuracy"] > 0.2
        assert len(d["sanity"]) == 5 and all(isinstance(c["passed"], bool) for c in d["sanity"])
        assert d["rows"][0]["eps"] == 0 and math.isclose(d["rows"][0]["worst_case"], d["clean_accuracy"])
    assert set(s["gradient_regularization"]["comparison"]) == {"natural", "pgd-trained", "gradreg"}


@pytest.mark.mnist
def test_quick_demo_second_run_reuses_every_model_and_is_faster(quick_runs):
    out, runs = quick_runs
    assert runs[1]["returncode"] == 0, runs[1]["stderr"][-3000:]
    reused = runs[1]["stdout"].count("reusing cached model")
    assert reused == 5, runs[1]["stdout"]              # natural, softmax, mlp, pgd-trained, gradreg
    assert runs[0]["stdout"].count("reusing cached model") == 0
    assert runs[1]["seconds"] < runs[0]["seconds"]
    res = json.loads((out / "results.json").read_text())
    assert res["sections"]["train"]["reused_cache"] is True
    # a reused model reports the training time measured when it was trained, not 0
    t = res["sections"]["train"]
    assert t["train_seconds"] == 0.0 and t["trained_seconds"] > 0
    assert t["trained_seconds"] == pytest.approx(sum(t["seconds_per_epoch"]))
    readme = (out / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("- training time per model:"))
    for name in ("natural", "softmax regression", "MLP", "pgd-trained", "gradreg"):
        assert name in line, line
    assert line.count("(cached, measured when it was trained)") == 5, line

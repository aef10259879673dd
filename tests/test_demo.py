"""The demo: model cache (key, reuse, resume, damaged files) and the quick run end to end."""
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import tiny_images
from scratchadv import demo
from scratchadv.checkpoint import load_model


def tiny_data(n=64, seed=0):
    x = tiny_images(n, seed=seed)
    y = (np.arange(n) % 10).astype(np.int64)
    return x, y


# --- cache key ----------------------------------------------------------------

def test_cache_key_depends_on_every_setting_and_the_library_version(monkeypatch):
    base = {"architecture": "lecture-cnn-v1", "epochs": 10, "seed": 0, "defense": "none"}
    k = demo.cache_key(base)
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    assert demo.cache_key(dict(reversed(list(base.items())))) == k      # key order is irrelevant
    for field, value in (("epochs", 9), ("seed", 1), ("defense", "pgd"), ("architecture", "mlp-v1")):
        assert demo.cache_key({**base, field: value}) != k, field
    monkeypatch.setattr(demo, "__version__", "999.0")
    assert demo.cache_key(base) != k


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHADV_CACHE", str(tmp_path))
    assert demo.default_cache_dir() == os.path.join(str(tmp_path), "models")
    monkeypatch.delenv("SCRATCHADV_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "scratchadv", "models")


# --- cached_fit -----------------------------------------------------------------

def fit_tiny(cache, capsys=None, **kw):
    x, y = tiny_data()
    opts = dict(x_val=x[:16], y_val=y[:16], epochs=2, batch_size=16, seed=3, cache=str(cache),
                verbose=False)
    opts.update(kw)
    return demo.cached_fit("tiny", "softmax-v1", x, y, **opts)


def test_cached_fit_trains_once_then_reuses_the_file(tmp_path, capsys):
    p1, h1, info1 = fit_tiny(tmp_path)
    assert not info1["reused"] and os.path.isfile(info1["path"])
    assert os.listdir(tmp_path) == [os.path.basename(info1["path"])]     # state file removed
    saved, meta = load_model(info1["path"])
    assert meta["config"]["cache_key"] == info1["key"] and meta["config"]["epochs"] == 2
    capsys.readouterr()
    p2, h2, info2 = fit_tiny(tmp_path)
    assert info2["reused"] and info2["path"] == info1["path"]
    assert info1["trained_seconds"] == pytest.approx(sum(h1["seconds"])) and info1["trained_seconds"] > 0
    assert info2["trained_seconds"] == pytest.approx(info1["trained_seconds"]) and info2["train_seconds"] == 0.0
    assert "reusing cached model" in capsys.readouterr().out
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert h2["val_accuracy"] == pytest.approx(h1["val_accuracy"])
    # another setting is another model
    _, _, info3 = fit_tiny(tmp_path, epochs=3)
    assert not info3["reused"] and info3["key"] != info1["key"]


def test_cached_fit_resumes_an_interrupted_training_bit_for_bit(tmp_path, monkeypatch, capsys):
    import scratchadv.train as train
    from scratchadv.train import TrainingInterrupted
    reference, _, _ = fit_tiny(tmp_path / "a")

    real_fit = train.fit

    def stop_after_first_epoch(epoch, history, params):
        if epoch == 0:
            raise KeyboardInterrupt

    def interrupted_fit(*args, **kw):
        return real_fit(*args, **{**kw, "callbacks": [stop_after_first_epoch]})

    monkeypatch.setattr(train, "fit", interrupted_fit)
    with pytest.raises(TrainingInterrupted):
        fit_tiny(tmp_path / "b")
    monkeypatch.setattr(train, "fit", real_fit)
    states = [f for f in os.listdir(tmp_path / "b") if f.endswith(".state.npz")]
    assert len(states) == 1
    capsys.readouterr()
    resumed, _, info = fit_tiny(tmp_path / "b", verbose=True)
    assert "resuming from" in capsys.readouterr().out
    assert not info["reused"]
    for k in reference:
        np.testing.assert_array_equal(reference[k], resumed[k])


def test_cached_fit_trains_again_over_a_damaged_file(tmp_path, capsys):
    _, _, info = fit_tiny(tmp_path)
    with open(info["path"], "wb") as f:
        f.write(b"not an npz")
    capsys.readouterr()
    p, _, info2 = fit_tiny(tmp_path)
    assert "cannot reuse" in capsys.readouterr().out
    assert not info2["reused"]
    load_model(info2["path"])          # a valid file again


def test_run_demo_checks_its_arguments_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="sections"):
        demo.run_demo(tmp_path / "out", sections=["train", "nonsense"], cache=tmp_path / "c")
    with pytest.raises(ValueError, match="seed"):
        demo.run_demo(tmp_path / "out", seed=-1, cache=tmp_path / "c")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="--out"):
        demo.run_demo(blocker, cache=tmp_path / "c")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


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
    assert f["n_success"] >= 5                          # the descent works for most classes
    assert all(row[-1] < row[0] for row in f["loss_per_step"])
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

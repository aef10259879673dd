"""The AutoAttack ensemble: order, per-image AND, re-check of returned images, resume."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import tiny_images
from scratchadv.attacks import apgd, apgd_targeted, square
from scratchadv.attacks.autoattack import COMPONENTS, STANDARD, autoattack
from scratchadv.attacks.fab import fab_targeted
from scratchadv.checkpoint import CheckpointError
from scratchadv.model import init_params, predict

N = 12


@pytest.fixture(scope="module")
def params():
    r = np.random.default_rng(0)
    p = {k: v.astype(np.float64) for k, v in init_params(3).items()}
    return {k: (v + 0.05 * r.standard_normal(v.shape) if k.endswith("bias") else v) for k, v in p.items()}


@pytest.fixture(scope="module")
def data(params):
    x = tiny_images(N, seed=4, dtype=np.float64)
    return x, np.argmax(predict(params, x), 1).astype(np.int64)     # all correct clean


# cheap versions of the four attacks: the ensemble's logic, not the attacks, is tested here
CHEAP = {
    "apgd-ce": lambda p, x, y, e, n, r, f: apgd(p, x, y, eps=e, norm=n, steps=5, rng=r, predict_fn=f),
    "apgd-t": lambda p, x, y, e, n, r, f: apgd_targeted(p, x, y, eps=e, norm=n, n_targets=2, steps=5,
                                                        rng=r, predict_fn=f),
    "fab-t": lambda p, x, y, e, n, r, f: fab_targeted(p, x, y, eps=e, norm=n, n_targets=2, steps=5,
                                                      rng=r, predict_fn=f),
    "square": lambda p, x, y, e, n, r, f: square(p, x, y, eps=e, norm=n, queries=30, rng=r, predict_fn=f),
}


def run(params, data, **kw):
    x, y = data
    kw.setdefault("components", CHEAP)
    return autoattack(params, x, y, eps=kw.pop("eps", 0.02), batch_size=kw.pop("batch_size", 5), **kw)


def test_standard_version_is_the_four_attacks_in_order():
    assert STANDARD == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert set(COMPONENTS) == set(STANDARD)


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.2)])
def test_robust_is_the_per_image_and_and_rechecked(params, data, norm, eps):
    x, y = data
    r = run(params, data, norm=norm, eps=eps)
    d = r.details
    assert 0 < d["robust_accuracy"] < 1, "the test needs some images fooled and some not"
    # what the model says about the returned images decides, nothing else
    robust = np.argmax(predict(params, r.x_adv), 1) == y
    np.testing.assert_array_equal(~r.success, robust)
    assert d["robust_accuracy"] == pytest.approx(robust.mean())
    # cumulative: never rises; each image is counted for the first attack that turned it
    after = [d["after"][a] for a in STANDARD]
    assert all(b <= a for a, b in zip(after, after[1:])) and after[-1] == d["robust_accuracy"]
    assert sum(d["fooled"].values()) == int((~robust).sum())
    assert set(np.unique(d["fooled_by"])) <= {-1, 0, 1, 2, 3}
    np.testing.assert_array_equal(d["fooled_by"] == -1, robust)
    # robust images come back unchanged; the others inside the ball
    np.testing.assert_array_equal(r.x_adv[robust], x[robust])
    size = r.linf if norm == "linf" else r.l2
    assert np.all(size <= eps) and d["checks"]["within_eps"] and d["checks"]["in_range"]
    assert d["checks"]["nan"] == 0 and d["checks"]["labels_consistent"]
    assert d["replaced"] == sorted(CHEAP)


def test_each_attack_sees_only_the_points_still_robust(params, data):
    seen = []

    def spy(name):
        def f(p, x, y, e, n, r, fn):
            seen.append((name, len(x)))
            return CHEAP[name](p, x, y, e, n, r, fn)
        return f
    r = run(params, data, components={k: spy(k) for k in CHEAP}, batch_size=100)
    counts = dict(seen)
    assert counts["apgd-ce"] == N
    left = N - r.details["fooled"]["apgd-ce"]
    assert counts.get("apgd-t", 0) == left


def test_an_attack_that_lies_about_success_is_not_believed(params, data):
    """An attack's own success flag is ignored: the labels of its images are recomputed."""
    def liar(p, x, y, e, n, r, f):
        res = CHEAP["apgd-ce"](p, x, y, e, n, r, f)
        return res.__class__(**{**res.__dict__, "success": np.ones(len(x), dtype=bool)})
    r = run(params, data, attacks=("apgd-ce",), components={"apgd-ce": liar})
    honest = run(params, data, attacks=("apgd-ce",))
    assert r.details["robust_accuracy"] == honest.details["robust_accuracy"] > 0


def test_square_warning(params, data):
    """Square lowering the white-box result by more than the tolerance is flagged."""
    def nothing(p, x, y, e, n, r, f):            # a white-box attack that finds nothing
        return CHEAP["apgd-ce"](p, x, y, 0.0, n, r, f)
    r = run(params, data, attacks=("apgd-ce", "square"), components={"apgd-ce": nothing, "square": CHEAP["square"]},
            eps=0.2)
    assert r.details["after"]["square"] < r.details["after"]["apgd-ce"] - 0.005
    assert r.details["square_warning"] is True
    ok = run(params, data, attacks=("apgd-ce", "square"), eps=0.2)
    assert ok.details["square_warning"] is (ok.details["after"]["square"] < ok.details["after"]["apgd-ce"] - 0.005)
    assert run(params, data, attacks=("apgd-ce",)).details["square_warning"] is None


def test_same_seed_same_bits_other_seed_other_starts(params, data):
    a, b = run(params, data, seed=3), run(params, data, seed=3)
    assert np.array_equal(a.x_adv, b.x_adv) and np.array_equal(a.details["fooled_by"], b.details["fooled_by"])
    c = run(params, data, seed=4)
    assert not np.array_equal(a.x_adv, c.x_adv)


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_the_uninterrupted_result(params, data, tmp_path):
    full = run(params, data)
    calls = {"n": 0}

    def breaking(name):
        def f(*args):
            calls["n"] += 1
            if calls["n"] == 4:             # inside the second attack
                raise Interrupt
            return CHEAP[name](*args)
        return f
    state = tmp_path / "aa.npz"
    with pytest.raises(Interrupt):
        run(params, data, components={k: breaking(k) for k in CHEAP}, state_path=state)
    assert state.exists()
    resumed = run(params, data, state_path=state, resume=True)
    np.testing.assert_array_equal(resumed.x_adv, full.x_adv)
    np.testing.assert_array_equal(resumed.details["fooled_by"], full.details["fooled_by"])
    assert resumed.details["after"] == full.details["after"]


def test_resume_refuses_other_settings_or_data(params, data, tmp_path):
    state = tmp_path / "aa.npz"
    run(params, data, state_path=state, attacks=("apgd-ce",))
    with pytest.raises(CheckpointError, match="eps"):
        run(params, data, state_path=state, resume=True, attacks=("apgd-ce",), eps=0.03)
    x, y = data
    with pytest.raises(CheckpointError, match="data"):
        run(params, (x[::-1].copy(), y[::-1].copy()), state_path=state, resume=True, attacks=("apgd-ce",))


SCRIPT = r"""
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from test_autoattack import CHEAP, N
from conftest import tiny_images
from scratchadv.attacks.autoattack import autoattack
from scratchadv.model import init_params, predict
r = np.random.default_rng(0)
p = {{k: v.astype(np.float64) for k, v in init_params(3).items()}}
p = {{k: (v + 0.05 * r.standard_normal(v.shape) if k.endswith("bias") else v) for k, v in p.items()}}
x = tiny_images(N, seed=4, dtype=np.float64)
y = np.argmax(predict(p, x), 1).astype(np.int64)
slow = {{k: (lambda f: lambda *a: (time.sleep({delay}), f(*a))[1])(f) for k, f in CHEAP.items()}}
res = autoattack(p, x, y, eps=0.02, batch_size=5, components=slow, state_path={state!r},
                 resume=True)
np.save({out!r}, res.x_adv)
"""


def test_resume_after_sigkill(tmp_path):
    """A run killed with SIGKILL in the middle and started again ends exactly as one run."""
    tests = os.path.dirname(os.path.abspath(__file__))
    state, out, ref = tmp_path / "s.npz", tmp_path / "a.npy", tmp_path / "ref.npy"

    def script(delay, state_path, out_path):
        f = tmp_path / f"run{delay}.py"
        f.write_text(SCRIPT.format(tests=tests, delay=delay, state=str(state_path), out=str(out_path)))
        return [sys.executable, str(f)]
    env = {**os.environ, "SCRATCHADV_PROGRESS": "0"}
    assert subprocess.run(script(0, tmp_path / "ref-state.npz", ref), env=env, timeout=300).returncode == 0
    proc = subprocess.Popen(script(0.4, state, out), env=env)
    deadline = time.time() + 120
    from scratchadv.checkpoint import read_npz
    while time.time() < deadline:            # kill once a few batches are on disk
        time.sleep(0.2)
        if state.exists():
            try:
                meta = read_npz(state)[1]
            except CheckpointError:
                continue                       # never seen: writes are atomic
            if meta["attack"] >= 1:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists(), "the run finished before it could be killed"
    assert subprocess.run(script(0, state, out), env=env, timeout=300).returncode == 0
    np.testing.assert_array_equal(np.load(out), np.load(ref))


@pytest.mark.parametrize("kw, match", [
    ({"eps": -0.1}, "eps"),
    ({"norm": "l1"}, "norm"),
    ({"attacks": ()}, "attacks"),
    ({"attacks": ("apgd-ce", "pgd")}, "attacks"),
    ({"attacks": ("apgd-ce", "apgd-ce")}, "attacks"),
    ({"seed": -1}, "seed"),
    ({"batch_size": 0}, "batch_size"),
    ({"resume": True}, "resume"),
    ({"components": {"apgd-ce": 3}}, "components"),
])
def test_bad_arguments(params, data, kw, match):
    x, y = data
    with pytest.raises((ValueError, TypeError), match=match):
        autoattack(params, x, y, **{"eps": 0.1, **kw})


@pytest.mark.mnist
@pytest.mark.parametrize("argv", [
    ["--method", "apgd", "--steps", "5", "--eps", "0.05"],
    ["--method", "apgd", "--loss", "dlr", "--steps", "5", "--norm", "l2", "--eps", "0.5"],
    ["--method", "apgd-t", "--steps", "3", "--eps", "0.05"],
    ["--method", "apgd-t", "--steps", "3", "--eps", "0.05", "--target", "3"],
    ["--method", "fab", "--steps", "3", "--eps", "0.05"],
    ["--method", "square", "--queries", "20", "--eps", "0.05"],
    ["--method", "autoattack", "--eps", "0.05"],
    ["--method", "deepfool", "--steps", "10"],
    ["--method", "deepfool", "--norm", "linf", "--steps", "10"],
    ["--method", "cw", "--steps", "20", "--binary-steps", "2"],
    ["--method", "cw", "--norm", "l2", "--steps", "20", "--binary-steps", "2"],   # says what cw is
])
def test_cli_runs_each_new_method(random_model_file, tmp_path, argv, capsys):
    import json
    from scratchadv.cli import main
    m = tmp_path / "m.json"
    assert main(["attack", "--model", random_model_file, "--n", "6", "--quiet", "--metrics", str(m), *argv]) == 0
    d = json.loads(m.read_text())
    assert d["n"] == 6 and 0 <= d["robust_acc"] <= d["clean_acc"] <= 1
    assert d["config"]["method"] == argv[1]
    assert d["norms_over"] == ("flipped" if argv[1] in ("deepfool", "cw") else "attacked")
    if argv[1] == "autoattack":
        assert set(d["details"]["after"]) == set(STANDARD)
        assert d["details"]["robust_accuracy"] == pytest.approx(d["robust_acc"])
        assert "closing check" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["--method", "autoattack", "--target", "3"], "--target"),
    (["--method", "square", "--steps", "3"], "--steps"),
    (["--method", "pgd", "--queries", "3"], "--queries"),
    (["--method", "fgsm", "--loss", "dlr"], "--loss"),
    (["--method", "apgd", "--loss", "lecture"], "--loss"),
    (["--method", "square", "--queries", "0"], "--queries"),
    (["--method", "deepfool", "--target", "3"], "--target"),
    (["--method", "pgd", "--binary-steps", "3"], "--binary-steps"),
    (["--method", "cw", "--eps", "0.3"], "--eps"),
    (["--method", "pgd", "--workers", "2"], "--workers"),
    (["--method", "autoattack", "--workers", "0"], "--workers"),
])
def test_cli_refuses_options_of_other_methods(random_model_file, argv, flag, capsys):
    from scratchadv.cli import main
    assert main(["attack", "--model", random_model_file, *argv]) == 2
    assert flag in capsys.readouterr().err

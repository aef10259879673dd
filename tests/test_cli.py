"""The command line: train/info end to end, one-line errors, interruption and resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scratchadv.checkpoint import load_model


def run(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "scratchadv", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("train", "info"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args, name", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--limit", "0"], "--limit"),
    (["train", "--lr", "-1"], "lr"),
    (["train", "--architecture", "resnet"], "architecture"),
    (["train", "--eps", "0.1"], "--eps"),
    (["info", "/nonexistent/model.npz"], "no such file"),
])
def test_bad_arguments_give_one_line_and_status_2(tmp_path, args, name):
    r = run(*args, "--out", str(tmp_path / "m.npz")) if args[0] == "train" else run(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert name in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "m.npz")


def test_library_errors_are_reported_in_flags():
    """The library names its parameters; the command line names the flag that sets them."""
    from scratchadv.cli import build_parser, flag_names, to_flags
    flags = flag_names(build_parser().commands["train"])
    assert flags["pgd_steps"] == "--pgd-steps" and flags["eps_warmup"] == "--eps-warmup"
    assert to_flags("lr: expected a number > 0, got -1", flags) == "--lr: expected a number > 0, got -1"
    assert to_flags("params['conv1.weight']: bad", flags) == "params['conv1.weight']: bad"
    assert to_flags("no such file x", flags) == "no such file x"
    assert to_flags("x.npz: use fmt='keras'", flag_names(build_parser().commands["import"])) \
        == "x.npz: use --format keras"
    eval_flags = flag_names(build_parser().commands["evaluate"])
    assert to_flags("eps_list: expected ...", eval_flags) == "--eps: expected ..."


@pytest.mark.parametrize("args, shown, hidden", [
    # make_defense raises "eps_warmup: ...", the user sees the flag
    (["--defense", "pgd", "--eps-warmup", "20", "--epochs", "10"], "--eps-warmup:", "eps_warmup"),
    (["--defense", "pgd", "--pgd-steps", "0"], "--pgd-steps:", "pgd_steps"),
])
def test_a_library_error_names_the_flag(tmp_path, args, shown, hidden):
    r = run("train", *args, "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 2, r.stderr
    assert shown in r.stderr and hidden not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unwritable_output_fails_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "blocker").write_text("a file where a folder is needed")
    t = time.perf_counter()
    r = run("train", "--out", str(ro / "blocker" / "m.npz"), "--epochs", "50")
    assert r.returncode == 2 and "--out" in r.stderr
    assert time.perf_counter() - t < 60


@pytest.mark.mnist
def test_train_writes_model_and_metrics(tmp_path):
    out, met = tmp_path / "m.npz", tmp_path / "m.json"
    r = run("train", "--limit", "256", "--epochs", "2", "--batch-size", "64", "--out", str(out),
            "--metrics", str(met))
    assert r.returncode == 0, r.stderr
    m = json.loads(met.read_text())
    for key in ("train_acc", "test_acc", "epochs", "seconds", "history"):
        assert key in m
    assert m["epochs"] == 2 and len(m["history"]["val_accuracy"]) == 2
    params, meta = load_model(out)
    assert meta["config"]["limit"] == 256 and meta["test_acc"] == m["test_acc"]
    info = run("info", str(out))
    assert info.returncode == 0 and "lecture-cnn-v1" in info.stdout


def _train_cmd(out):
    return [sys.executable, "-m", "scratchadv", "train", "--limit", "2048", "--epochs", "3",
            "--batch-size", "32", "--seed", "3", "--out", str(out)]


@pytest.mark.mnist
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_training_resumes_to_identical_weights(tmp_path, sig):
    env = {**os.environ, "SCRATCHADV_PROGRESS": "0"}
    ref = tmp_path / "ref.npz"
    subprocess.run(_train_cmd(ref), check=True, env=env, capture_output=True, timeout=600)

    out = tmp_path / "m.npz"
    state = tmp_path / "m.state.npz"
    proc = subprocess.Popen(_train_cmd(out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # wait for the first epoch's state, then a bit into the second epoch
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert proc.returncode in (130, 0), err
        if proc.returncode == 130:
            assert "state saved" in err and "Traceback" not in err
    assert not out.exists() or proc.returncode == 0
    r = subprocess.run(_train_cmd(out) + ["--resume"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    a, _ = load_model(out)
    b, _ = load_model(ref)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.mnist
def test_diverging_training_stops_with_one_line_and_keeps_state(tmp_path):
    out = tmp_path / "m.npz"
    r = run("train", "--limit", "512", "--epochs", "2", "--batch-size", "64", "--optimizer", "sgd",
            "--lr", "1e30", "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "diverged" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("preset, expected", [(None, "1"), ("3", "3")])
def test_the_command_gives_numpys_blas_one_thread_unless_told(preset, expected):
    """The command sets OPENBLAS_NUM_THREADS before NumPy loads, which works only because
    importing scratchadv.cli does not import NumPy; a user's own setting is kept."""
    code = ("import os, sys\n"
            "from scratchadv import cli\n"
            "assert 'numpy' not in sys.modules, 'scratchadv.cli imports NumPy'\n"
            "cli._one_blas_thread()\n"
            "print(os.environ['OPENBLAS_NUM_THREADS'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected

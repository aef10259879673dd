"""Every public entry point refuses bad input at once, naming the argument.

One table of (call, exception type, words the message must contain) across the API,
and one across the command line (one-line error, exit status 2, no partial files).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_images

from scratchadv import attacks, defenses, evaluate, losses, model, optim, train
from scratchadv.checkpoint import CheckpointError, load_model, save_model

P = model.init_params(0)
X = tiny_images(4)
Y = np.array([1, 2, 3, 4], dtype=np.int64)


def without(d, k):
    return {kk: v for kk, v in d.items() if kk != k}


def with_(d, k, v):
    return {**d, k: v}


API = {
    # images
    "x list": (lambda: losses.loss(P, X.tolist(), Y), TypeError, ["x", "numpy array"]),
    "x int dtype": (lambda: losses.loss(P, (X * 255).astype(np.uint8), Y), TypeError, ["x", "uint8"]),
    "x object dtype": (lambda: losses.loss(P, X.astype(object), Y), TypeError, ["x", "object"]),
    "x no channel axis": (lambda: losses.loss(P, X[:, 0], Y), ValueError, ["x", "(4, 28, 28)"]),
    "x wrong size": (lambda: losses.loss(P, np.zeros((4, 1, 32, 32), np.float32), Y), ValueError, ["x", "32"]),
    "x in 0..255": (lambda: losses.loss(P, X * 255, Y), ValueError, ["x", "[0, 1]"]),
    "x negative": (lambda: losses.loss(P, X - 0.5, Y), ValueError, ["x", "[0, 1]"]),
    "x NaN": (lambda: losses.loss(P, with_nan(X), Y), ValueError, ["x", "NaN"]),
    "x Inf": (lambda: losses.input_gradient(P, with_inf(X), Y), ValueError, ["x", "Inf"]),
    "x empty": (lambda: losses.loss(P, X[:0], Y[:0]), ValueError, ["x", "empty"]),
    "predict_batched x list": (lambda: model.predict_batched(P, [[0.0]]), TypeError, ["x"]),
    # labels
    "y float": (lambda: losses.loss(P, X, Y.astype(np.float32)), TypeError, ["y", "float32"]),
    "y 10": (lambda: losses.loss(P, X, np.array([1, 2, 3, 10])), ValueError, ["y", "10"]),
    "y negative": (lambda: losses.loss(P, X, np.array([1, -1, 3, 4])), ValueError, ["y", "-1"]),
    "y short": (lambda: losses.loss(P, X, Y[:3]), ValueError, ["y", "3"]),
    "y 2-D": (lambda: losses.loss(P, X, Y[:, None]), ValueError, ["y", "(4, 1)"]),
    "accuracy y short": (lambda: model.accuracy(P, X, Y[:2]), ValueError, ["y"]),
    # params
    "params missing": (lambda: losses.loss(without(P, "conv1.bias"), X, Y), ValueError, ["params", "conv1.bias"]),
    "params extra": (lambda: losses.loss(with_(P, "conv3.weight", P["conv1.bias"]), X, Y), ValueError, ["params", "conv3.weight"]),
    "params shape": (lambda: losses.loss(with_(P, "dense1.weight", P["dense1.weight"].T), X, Y), ValueError, ["dense1.weight", "(320, 100)"]),
    "params int": (lambda: losses.loss(with_(P, "dense2.bias", np.zeros(10, np.int64)), X, Y), TypeError, ["dense2.bias", "int64"]),
    "params list": (lambda: losses.loss(list(P.values()), X, Y), TypeError, ["params", "dict"]),
    "params float64 with float32 x": (lambda: losses.loss(model.init_params(0, np.float64), X, Y), TypeError, ["params", "float32"]),
    "lam negative": (lambda: losses.gradient_regularized_loss(P, X, Y, -1.0), ValueError, ["lam"]),
    # attacks
    "fgsm eps < 0": (lambda: attacks.fgsm(P, X, Y, eps=-0.1), ValueError, ["eps", "-0.1"]),
    "fgsm eps nan": (lambda: attacks.fgsm(P, X, Y, eps=float("nan")), ValueError, ["eps"]),
    "fgsm norm": (lambda: attacks.fgsm(P, X, Y, eps=0.1, norm="l3"), ValueError, ["norm", "l3"]),
    "pgd steps 0": (lambda: attacks.pgd(P, X, Y, eps=0.1, steps=0), ValueError, ["steps", "0"]),
    "pgd steps float": (lambda: attacks.pgd(P, X, Y, eps=0.1, steps=2.5), TypeError, ["steps", "2.5"]),
    "pgd step_size < 0": (lambda: attacks.pgd(P, X, Y, eps=0.1, step_size=-0.01), ValueError, ["step_size"]),
    "pgd restarts 0": (lambda: attacks.pgd(P, X, Y, eps=0.1, restarts=0), ValueError, ["restarts"]),
    "pgd workers 0": (lambda: attacks.pgd(P, X, Y, eps=0.1, workers=0), ValueError, ["workers"]),
    "pgd target = label": (lambda: attacks.pgd(P, X, Y, eps=0.1, target=2), ValueError, ["target", "label"]),
    "pgd target 10": (lambda: attacks.pgd(P, X, Y, eps=0.1, target=10), ValueError, ["target", "10"]),
    "pgd target length": (lambda: attacks.pgd(P, X, Y, eps=0.1, target=np.array([0, 0])), ValueError, ["target"]),
    "pgd rng": (lambda: attacks.pgd(P, X, Y, eps=0.1, rng="seed"), TypeError, ["rng"]),
    "pgd empty batch": (lambda: attacks.pgd(P, X[:0], Y[:0], eps=0.1), ValueError, ["x", "empty"]),
    "fake target 11": (lambda: attacks.fake_image(P, 11, verbose=False), ValueError, ["target", "11"]),
    "fake steps 0": (lambda: attacks.fake_image(P, 3, steps=0, verbose=False), ValueError, ["steps"]),
    "ascent steps 0": (lambda: attacks.gradient_ascent(P, X, Y, steps=0), ValueError, ["steps"]),
    "penalty lam < 0": (lambda: attacks.penalty_attack(P, X, 0, lam=-1.0), ValueError, ["lam"]),
    "penalty kind": (lambda: attacks.penalty_attack(P, X, 0, penalty="linf"), ValueError, ["penalty", "linf"]),
    "minimal norm": (lambda: attacks.minimal_perturbation(P, X, Y, norm="l0"), ValueError, ["norm", "l0"]),
    # training
    "fit batch_size 0": (lambda: train.fit(P, X, Y, batch_size=0, verbose=False), ValueError, ["batch_size", "0"]),
    "fit epochs 0": (lambda: train.fit(P, X, Y, epochs=0, verbose=False), ValueError, ["epochs"]),
    "fit seed -1": (lambda: train.fit(P, X, Y, seed=-1, verbose=False), ValueError, ["seed"]),
    "fit y mismatch": (lambda: train.fit(P, X, Y[:2], verbose=False), ValueError, ["y", "4"]),
    "fit x_val alone": (lambda: train.fit(P, X, Y, x_val=X, verbose=False), ValueError, ["x_val"]),
    "fit x_val range": (lambda: train.fit(P, X, Y, x_val=X * 2, y_val=Y, verbose=False), ValueError, ["x_val"]),
    "optimizer name": (lambda: optim.get_optimizer("adagrad"), ValueError, ["optimizer", "adagrad"]),
    "rmsprop lr 0": (lambda: optim.rmsprop(lr=0), ValueError, ["lr"]),
    "sgd momentum 2": (lambda: optim.sgd(momentum=2.0), ValueError, ["momentum"]),
    "architecture": (lambda: model.get_architecture("vgg"), ValueError, ["architecture", "vgg"]),
    "defense name": (lambda: defenses.make_defense("magic"), ValueError, ["magic"]),
    "defense eps < 0": (lambda: defenses.make_defense("pgd", eps=-0.1), ValueError, ["eps"]),
    "defense lam < 0": (lambda: defenses.make_defense("gradreg", lam=-1.0), ValueError, ["lam"]),
    "evaluate eps < 0": (lambda: evaluate.evaluate_model(P, X, Y, eps_list=[-0.1], verbose=False), ValueError, ["eps"]),
    "evaluate attack name": (lambda: evaluate.evaluate_model(P, X, Y, attacks=("cw",), verbose=False), ValueError, ["cw"]),
    # files
    "load missing file": (lambda: load_model("/nonexistent/m.npz"), CheckpointError, ["/nonexistent/m.npz"]),
    "save other architecture": (lambda: save_model("/tmp/unused.npz", P, "mlp-v1"), CheckpointError, ["mlp-v1", "missing"]),
}


def with_nan(x):
    x = x.copy()
    x[0, 0, 0, 0] = np.nan
    return x


def with_inf(x):
    x = x.copy()
    x[1, 0, 3, 3] = np.inf
    return x


@pytest.mark.parametrize("case", sorted(API))
def test_api_rejects(case):
    call, exc, words = API[case]
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{case}: {w!r} not in {msg!r}"


def test_table_is_large_enough():
    assert len(API) + len(CLI) >= 40


CLI = {
    "train epochs 0": (["train", "--epochs", "0"], "--epochs"),
    "train batch 0": (["train", "--batch-size", "0"], "--batch-size"),
    "train lr < 0": (["train", "--lr", "-0.1"], "lr"),
    "train optimizer": (["train", "--optimizer", "adagrad"], "--optimizer"),
    "train eps w/o defense": (["train", "--eps", "0.1"], "--eps"),
    "train defense eps < 0": (["train", "--defense", "pgd", "--eps", "-1"], "eps"),
    "attack eps < 0": (["attack", "--model", "{model}", "--method", "pgd", "--eps", "-0.1"], "eps"),
    "attack steps 0": (["attack", "--model", "{model}", "--method", "pgd", "--steps", "0"], "steps"),
    "attack method": (["attack", "--model", "{model}", "--method", "jsma"], "--method"),
    "attack missing model": (["attack", "--model", "/nonexistent.npz", "--method", "fgsm"], "/nonexistent.npz"),
    "attack target 12": (["attack", "--model", "{model}", "--method", "pgd", "--target", "12"], "target"),
    "attack n 0": (["attack", "--model", "{model}", "--method", "fgsm", "--n", "0"], "n"),
    "fake target": (["fake", "--model", "{model}", "--target", "ten"], "target"),
    "evaluate eps": (["evaluate", "--model", "{model}", "--eps", "a,b"], "--eps"),
    "evaluate n 0": (["evaluate", "--model", "{model}", "--n", "0"], "n"),
    "evaluate workers 0": (["evaluate", "--model", "{model}", "--workers", "0"], "workers"),
    "train workers 0": (["train", "--defense", "pgd", "--workers", "0"], "workers"),
    "demo workers 0": (["demo", "--workers", "0"], "workers"),
    "export format": (["export", "--format", "onnx", "{model}", "{out}"], "--format"),
    "import not weights": (["import", "--format", "torch", "{model_txt}", "{out}"], "{model_txt}"),
    "info garbage": (["info", "{model_txt}"], "{model_txt}"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    m = d / "m.npz"
    save_model(m, P)
    txt = d / "notes.npz"
    txt.write_text("not a zip file")
    return {"model": str(m), "model_txt": str(txt), "out": str(d / "out" / "result.npz")}


@pytest.mark.parametrize("case", sorted(CLI))
def test_cli_rejects(case, files, tmp_path):
    args, word = CLI[case]
    args = [a.format(**files) for a in args]
    word = word.format(**files)
    metrics = tmp_path / "metrics.json"
    if args[0] in ("train", "attack"):
        args += ["--metrics", str(metrics)]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "model.npz")]
    r = subprocess.run([sys.executable, "-m", "scratchadv", *args], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "SCRATCHADV_DATA": "/nonexistent"})
    assert r.returncode == 2, (case, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert word in lines[-1], (case, r.stderr)
    assert len(lines) == 1, r.stderr
    assert not metrics.exists() and not os.path.exists(files["out"])
    assert not (tmp_path / "model.npz").exists()

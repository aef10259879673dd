"""Weight interchange: PyTorch state_dict layout, Keras layout (channels-last flatten), files."""
import os

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from conftest import tiny_images
from scratchadv.checkpoint import CheckpointError, load_model, save_model
from scratchadv.interchange import (
    export_weights, from_keras_layout, from_torch_layout, identify_architecture, import_weights,
    keras_names, load_arrays, save_arrays, to_keras_layout, to_torch_layout)
from scratchadv.model import ARCHITECTURES, get_architecture

ARCHS = sorted(ARCHITECTURES)


def random_params(arch, seed=0, dtype=np.float64):
    """Glorot weights plus non-zero biases, so that every entry matters."""
    a = get_architecture(arch)
    r = np.random.default_rng(seed)
    return {k: (v + 0.1 * r.standard_normal(v.shape)).astype(dtype)
            for k, v in a.init_params(seed, dtype=np.float64).items()}


def images(n=6, seed=0, dtype=np.float64):
    """Half blank-background digits (exact ties), half uniform noise."""
    r = np.random.default_rng(seed)
    x = np.concatenate([tiny_images(n - n // 2, seed, dtype=dtype),
                        r.uniform(0, 1, (n // 2, 1, 28, 28)).astype(dtype)])
    return x


# ---------------------------------------------------------------------------
# A Keras-order forward pass written independently, in plain NumPy (NHWC)
# ---------------------------------------------------------------------------

def keras_conv(x, kernel, bias):
    """Conv2D(padding='valid'), channels-last: x (N,H,W,C), kernel (kh,kw,C,O) -> (N,H',W',O)."""
    kh, kw = kernel.shape[:2]
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))          # (N, H', W', C, kh, kw)
    return np.einsum("npqcij,ijco->npqo", win, kernel) + bias


def keras_pool(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def keras_forward(weights, arch, x_nchw):
    """Logits of the Keras model holding ``weights`` (Keras names) for NCHW images: a
    channels-last walk over the architecture's layers, naming them as Keras does."""
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    h = x_nchw.transpose(0, 2, 3, 1)                                  # NHWC, as Keras sees it
    seen = {"Conv": 0, "Dense": 0}
    for layer in get_architecture(arch).layers:
        kind = type(layer).__name__
        if kind in seen:
            base = "conv2d" if kind == "Conv" else "dense"
            name = base if seen[kind] == 0 else f"{base}_{seen[kind]}"
            seen[kind] += 1
            k, b = weights[name + "/kernel"], weights[name + "/bias"]
            h = keras_conv(h, k, b) if kind == "Conv" else h @ k + b
        elif kind == "Relu":
            h = relu(h)
        elif kind == "MaxPool":
            h = keras_pool(h)
        else:
            assert kind == "Flatten"
            h = h.reshape(len(h), -1)                                 # Flatten(): (H, W, C) order
    return h


@pytest.mark.parametrize("arch", ARCHS)
def test_keras_layout_gives_the_same_logits_in_a_channels_last_forward_pass(arch):
    p = random_params(arch, seed=1)
    x = images()
    ours = get_architecture(arch).predict(p, x)
    theirs = keras_forward(to_keras_layout(p, arch), arch, x)
    np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-12)


def test_without_the_flatten_permutation_the_keras_logits_differ():
    """The permutation of dense1's rows is necessary (guards against a no-op)."""
    arch = "lecture-cnn-v1"
    p = random_params(arch, seed=2)
    x = images()
    w = to_keras_layout(p, arch)
    w["dense/kernel"] = p["dense1.weight"].T.copy()                 # naive transpose only
    assert np.max(np.abs(keras_forward(w, arch, x) - get_architecture(arch).predict(p, x))) > 1e-3


def test_keras_names_shapes_and_order():
    w = to_keras_layout(random_params("lecture-cnn-v1"), "lecture-cnn-v1")
    assert list(w) == keras_names("lecture-cnn-v1") == [
        "conv2d/kernel", "conv2d/bias", "conv2d_1/kernel", "conv2d_1/bias",
        "dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]
    assert w["conv2d/kernel"].shape == (5, 5, 1, 10)
    assert w["conv2d_1/kernel"].shape == (5, 5, 10, 20)
    assert w["dense/kernel"].shape == (320, 100)
    assert w["dense_1/kernel"].shape == (100, 10)
    assert keras_names("mlp-v1") == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]


def test_keras_flatten_permutation_maps_each_feature():
    """Keras row (h*4 + w)*20 + c holds our column c*16 + h*4 + w."""
    p = random_params("lecture-cnn-v1")
    k = to_keras_layout(p, "lecture-cnn-v1")["dense/kernel"]
    for c, h, w in [(0, 0, 0), (3, 1, 2), (19, 3, 3), (7, 0, 3)]:
        np.testing.assert_array_equal(k[(h * 4 + w) * 20 + c], p["dense1.weight"][:, c * 16 + h * 4 + w])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layout_round_trips_are_exact(arch, dtype):
    p = random_params(arch, seed=3, dtype=dtype)
    back, found = from_keras_layout(to_keras_layout(p, arch))
    assert found == arch and list(back) == list(p)
    for k in p:
        assert back[k].dtype == dtype
        np.testing.assert_array_equal(back[k], p[k])
    back, found = from_torch_layout(to_torch_layout(p, arch))
    assert found == arch
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])


def test_identify_architecture_and_refusals():
    assert identify_architecture({"dense/kernel": (784, 10), "dense/bias": (10,)},
                                 "keras") == "softmax-v1"
    p = random_params("lecture-cnn-v1")
    with pytest.raises(ValueError, match="match no architecture"):
        from_torch_layout({k: v for k, v in p.items() if k != "conv1.bias"})
    bad = dict(p)
    bad["dense1.weight"] = bad["dense1.weight"].T.copy()
    with pytest.raises(ValueError, match="dense1.weight"):
        from_torch_layout(bad, "lecture-cnn-v1")
    bad = dict(p)
    bad["conv1.bias"] = np.full(10, np.nan)
    with pytest.raises(ValueError, match="NaN"):
        from_torch_layout(bad, "lecture-cnn-v1")
    bad = dict(p)
    bad["conv1.bias"] = bad["conv1.bias"].astype(np.float32)
    with pytest.raises(TypeError, match="one dtype"):
        from_torch_layout(bad, "lecture-cnn-v1")
    with pytest.raises(TypeError, match="float32 or float64"):
        from_torch_layout({k: v.astype(np.int64) for k, v in p.items()}, "lecture-cnn-v1")


# ---------------------------------------------------------------------------
# Files and the CLI
# ---------------------------------------------------------------------------

def test_export_import_files_round_trip_and_hold_only_weights(tmp_path):
    p = random_params("lecture-cnn-v1", dtype=np.float32)
    save_model(tmp_path / "m.npz", p, "lecture-cnn-v1")
    for fmt in ("torch", "keras"):
        out = tmp_path / f"w.{fmt}.npz"
        assert export_weights(tmp_path / "m.npz", out, fmt) == "lecture-cnn-v1"
        with np.load(out, allow_pickle=False) as z:
            names = list(z.files)
        assert "__meta__" not in names
        assert names == (list(p) if fmt == "torch" else keras_names("lecture-cnn-v1"))
        assert import_weights(out, tmp_path / f"back.{fmt}.npz", fmt) == "lecture-cnn-v1"
        back, meta = load_model(tmp_path / f"back.{fmt}.npz")
        assert meta["architecture"] == "lecture-cnn-v1"
        for k in p:
            np.testing.assert_array_equal(back[k], p[k])


def test_import_refuses_pickles_junk_and_the_wrong_format(tmp_path):
    p = random_params("mlp-v1", dtype=np.float32)
    save_arrays(tmp_path / "torch.npz", to_torch_layout(p, "mlp-v1"))
    with pytest.raises(CheckpointError, match="use fmt='torch'"):
        import_weights(tmp_path / "torch.npz", tmp_path / "m.npz", "keras")
    assert not (tmp_path / "m.npz").exists()

    obj = np.empty(1, dtype=object)
    obj[0] = {"x": 1}
    np.savez(tmp_path / "pickled.npz", **{"dense1.weight": obj})
    with pytest.raises(CheckpointError, match="pickled"):
        load_arrays(tmp_path / "pickled.npz")

    raw = (tmp_path / "torch.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt|truncated|not a valid"):
        load_arrays(tmp_path / "cut.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="single .npy"):
        load_arrays(tmp_path / "one.npy")
    with pytest.raises(CheckpointError, match="no such file"):
        load_arrays(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="format"):
        import_weights(tmp_path / "torch.npz", tmp_path / "m.npz", "onnx")


def test_save_arrays_is_atomic_and_refuses_objects(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"a": np.ones(3)})
    with pytest.raises(TypeError):
        save_arrays(path, {"a": np.array([{"x": 1}], dtype=object)})
    with np.load(path) as z:                 # the old file is intact
        np.testing.assert_array_equal(z["a"], np.ones(3))
    assert [q.name for q in tmp_path.iterdir()] == ["w.npz"]


def test_cli_export_and_import(tmp_path, capsys):
    from scratchadv.cli import main
    p = random_params("softmax-v1", dtype=np.float32)
    save_model(tmp_path / "m.npz", p, "softmax-v1")
    assert main(["export", "--format", "keras", str(tmp_path / "m.npz"), str(tmp_path / "k.npz")]) == 0
    assert main(["import", "--format", "keras", str(tmp_path / "k.npz"), str(tmp_path / "b.npz")]) == 0
    back, _ = load_model(tmp_path / "b.npz")
    np.testing.assert_array_equal(back["dense1.weight"], p["dense1.weight"])
    assert main(["import", "--format", "torch", str(tmp_path / "k.npz"), str(tmp_path / "c.npz")]) == 2
    assert "use --format keras" in capsys.readouterr().err
    assert main(["import", "--format", "torch", "--architecture", "mlp-v1",
                 str(tmp_path / "k.npz"), str(tmp_path / "c.npz")]) == 2


# ---------------------------------------------------------------------------
# PyTorch (optional extra; installed in CI)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_exported_state_dict_gives_the_same_logits_in_torch(arch, tmp_path):
    torch = pytest.importorskip("torch")
    from scratchadv.torch_model import build_module
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        p = random_params(arch, seed=4, dtype=dtype)
        save_model(tmp_path / "m.npz", p, arch)
        export_weights(tmp_path / "m.npz", tmp_path / "t.npz", "torch")
        module = build_module(arch, dtype)
        with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
            module.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files}, strict=True)
        x = images(dtype=dtype)
        with torch.no_grad():
            theirs = module(torch.from_numpy(x)).numpy()
        ours = get_architecture(arch).predict(p, x)
        scale = np.max(np.abs(theirs))
        assert np.max(np.abs(ours - theirs)) <= tol * scale
        np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_torch_state_dict_imports_to_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    from scratchadv.torch_model import build_module
    torch.manual_seed(0)
    module = build_module("lecture-cnn-v1", np.float64)
    save_arrays(tmp_path / "sd.npz", {k: v.numpy() for k, v in module.state_dict().items()})
    import_weights(tmp_path / "sd.npz", tmp_path / "m.npz", "torch")
    params, _ = load_model(tmp_path / "m.npz")
    x = images()
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(get_architecture("lecture-cnn-v1").predict(params, x), theirs,
                               rtol=1e-12, atol=1e-12 * np.max(np.abs(theirs)))


# ---------------------------------------------------------------------------
# Full data: every test image, both directions
# ---------------------------------------------------------------------------

def _assert_same_predictions(ours, theirs, dtype):
    """Logits equal to the dtype's rounding, and the same argmax on every image whose two
    largest logits are further apart than that rounding: there the order is determined.
    (Where they are closer, either library's kernel rounding may decide: such images are
    counted, and must be rare.)"""
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    scale = np.max(np.abs(theirs))
    assert np.max(np.abs(ours - theirs)) <= tol * scale
    top2 = np.sort(ours, 1)[:, -2:]
    determined = top2[:, 1] - top2[:, 0] > 2 * tol * scale
    assert np.mean(determined) > 0.999, f"{np.sum(~determined)} near-tied images"
    np.testing.assert_array_equal(ours.argmax(1)[determined], theirs.argmax(1)[determined])


@pytest.mark.mnist
def test_scratchadv_model_exported_predicts_identically_in_torch(mnist, natural_model_path, tmp_path):
    torch = pytest.importorskip("torch")
    from scratchadv.model import predict_batched
    from scratchadv.torch_model import build_module, torch_predict
    _, _, x_test, y_test = mnist
    export_weights(natural_model_path, tmp_path / "t.npz", "torch")
    params, _ = load_model(natural_model_path)
    for dtype in (np.float32, np.float64):
        module = build_module("lecture-cnn-v1", dtype)
        with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
            module.load_state_dict({k: torch.from_numpy(z[k].astype(dtype)) for k in z.files})
        x = x_test.astype(dtype)
        ours = predict_batched({k: v.astype(dtype) for k, v in params.items()}, x)
        theirs = torch_predict(module, x)
        assert len(ours) == 10000
        _assert_same_predictions(ours, theirs, dtype)
    assert np.mean(ours.argmax(1) == y_test) > 0.97          # a real model, not a degenerate one


@pytest.mark.mnist
def test_torch_trained_state_dict_imported_predicts_identically(mnist, tmp_path):
    torch = pytest.importorskip("torch")
    from scratchadv.model import predict_batched
    from scratchadv.torch_model import build_module, torch_predict
    x_train, y_train, x_test, y_test = mnist
    torch.manual_seed(0)
    module = build_module("lecture-cnn-v1", np.float32)
    opt = torch.optim.RMSprop(module.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    xt, yt = torch.from_numpy(x_train[:12800]), torch.from_numpy(y_train[:12800])
    for i in range(0, len(xt), 128):            # 100 steps: a couple of seconds
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xt[i:i + 128]), yt[i:i + 128]).backward()
        opt.step()
    save_arrays(tmp_path / "sd.npz", {k: v.detach().numpy() for k, v in module.state_dict().items()})
    import_weights(tmp_path / "sd.npz", tmp_path / "m.npz", "torch")
    params, meta = load_model(tmp_path / "m.npz")
    assert meta["config"]["format"] == "torch"
    ours = predict_batched(params, x_test)
    theirs = torch_predict(module.eval(), x_test)
    _assert_same_predictions(ours, theirs, np.float32)
    assert np.mean(ours.argmax(1) == y_test) > 0.8            # trained: chance is 0.1


def test_importing_the_library_does_not_import_torch():
    """PyTorch, JAX and TensorFlow are optional extras: no module of the library, the
    framework twins included, imports one at import time."""
    import subprocess
    import sys
    code = ("import sys, pkgutil, importlib, scratchadv\n"
            "for m in pkgutil.walk_packages(scratchadv.__path__, 'scratchadv.'):\n"
            "    importlib.import_module(m.name)\n"
            "from scratchadv.cli import build_parser; build_parser()\n"
            "print(sorted(f for f in ('torch', 'jax', 'tensorflow') if f in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_one_matcher_of_arrays_to_architectures():
    """torch_model.infer_architecture is identify_architecture in the torch layout."""
    from scratchadv.torch_model import infer_architecture
    for arch in ARCHS:
        shapes = get_architecture(arch).param_shapes()
        assert infer_architecture(shapes) == identify_architecture(shapes) == arch
        keras = {k: v.shape for k, v in to_keras_layout(random_params(arch), arch).items()}
        assert identify_architecture(keras, "keras") == arch
    shapes = dict(get_architecture("mlp-v1").param_shapes(), **{"dense2.bias": (11,)})
    with pytest.raises(ValueError, match="(?s)^parameters: .*match no architecture.*mlp-v1"):
        infer_architecture(shapes)
    with pytest.raises(ValueError, match="^weights: .*match no architecture in the torch layout"):
        identify_architecture(shapes)


def test_array_checks_name_the_layout_they_expected():
    p = random_params("mlp-v1")
    k = to_keras_layout(p, "mlp-v1")
    k["dense/kernel"] = k["dense/kernel"].T.copy()
    with pytest.raises(ValueError, match=r"weights\['dense/kernel'\]: expected shape \(784, 100\) "
                                         r"\(the keras layout of 'mlp-v1'\), got \(100, 784\)"):
        from_keras_layout(k, "mlp-v1")
    with pytest.raises(ValueError, match=r"params: expected the names of the torch layout of "
                                         r"'mlp-v1' .*missing \['dense2.bias'\]"):
        to_keras_layout({n: v for n, v in p.items() if n != "dense2.bias"}, "mlp-v1")


def test_importing_the_torch_twin_module_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, scratchadv.frameworks.torch, scratchadv.torch_model\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

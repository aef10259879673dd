"""Shared fixtures. Full-data fixtures are session-scoped so each costly thing is done once."""
import os

import numpy as np
import pytest

# CI exports a path relative to the checkout; tests may change directory or start
# subprocesses elsewhere, so pin it down once.
if os.environ.get("SCRATCHADV_DATA"):
    os.environ["SCRATCHADV_DATA"] = os.path.abspath(os.environ["SCRATCHADV_DATA"])
os.environ.setdefault("SCRATCHADV_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def mnist():
    """(x_train, y_train, x_test, y_test) of the real data set."""
    from scratchadv.data import load_mnist
    return load_mnist()


@pytest.fixture(scope="session")
def natural_model(mnist, tmp_path_factory):
    """The lecture CNN trained as `scratchadv train --epochs 10 --seed 0` does: (params, history).

    Trained once per test session (about a minute here) and shared by the full-data tests.
    """
    from scratchadv.model import init_params
    from scratchadv.train import fit
    x_train, y_train, x_test, y_test = mnist
    params, history = fit(init_params(0), x_train, y_train, x_val=x_test, y_val=y_test,
                          epochs=10, batch_size=128, seed=0, verbose=False)
    return params, history


@pytest.fixture(scope="session")
def natural_model_path(natural_model, tmp_path_factory):
    """The natural model saved as a model file."""
    from scratchadv.checkpoint import save_model
    path = tmp_path_factory.mktemp("models") / "natural.npz"
    save_model(path, natural_model[0], "lecture-cnn-v1", config={"epochs": 10, "seed": 0},
               history=natural_model[1])
    return str(path)


#: the number of images of the ``data`` fixture
TINY_N = 6


@pytest.fixture(scope="module")
def params():
    """The lecture CNN with fresh (seed 3) weights in float64: the attacks' small model.
    A module may define its own ``params`` instead."""
    from scratchadv.model import init_params
    return {k: v.astype(np.float64) for k, v in init_params(3).items()}


@pytest.fixture(scope="module")
def data(params):
    """TINY_N digit-like float64 images labelled with the model's own predictions (so all
    are correctly classified; labels repeat)."""
    from scratchadv.model import predict
    x = tiny_images(TINY_N, seed=1, dtype=np.float64)
    return x, np.argmax(predict(params, x), 1).astype(np.int64)


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory):
    """A model file of the lecture CNN with fresh (seed 0) float32 weights, for CLI tests."""
    from scratchadv.checkpoint import save_model
    from scratchadv.model import init_params
    path = tmp_path_factory.mktemp("models") / "random.npz"
    save_model(path, init_params(0), "lecture-cnn-v1")
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tiny_images(n, seed=0, dtype=np.float32):
    """Synthetic digit-like images: blank background (exact zeros, many ties) + a bright blob."""
    r = np.random.default_rng(seed)
    x = np.zeros((n, 1, 28, 28), dtype=dtype)
    for i in range(n):
        cy, cx = r.integers(8, 20, size=2)
        x[i, 0, cy - 4:cy + 4, cx - 3:cx + 3] = r.uniform(0.5, 1.0, size=(8, 6))
    return x


def load_script(name):
    """A script of scripts/ as a module (the scripts are not part of the package)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

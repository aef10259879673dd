"""The model cache: key, default folder, train once then reuse, resume, damaged files."""
import os
import re

import numpy as np
import pytest

from conftest import tiny_images
from scratchadv import cache
from scratchadv.checkpoint import load_model


def tiny_data(n=64, seed=0):
    x = tiny_images(n, seed=seed)
    y = (np.arange(n) % 10).astype(np.int64)
    return x, y


# --- cache key ----------------------------------------------------------------

def test_cache_key_depends_on_every_setting_and_the_library_version(monkeypatch):
    base = {"architecture": "lecture-cnn-v1", "epochs": 10, "seed": 0, "defense": "none"}
    k = cache.cache_key(base)
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    assert cache.cache_key(dict(reversed(list(base.items())))) == k      # key order is irrelevant
    for field, value in (("epochs", 9), ("seed", 1), ("defense", "pgd"), ("architecture", "mlp-v1")):
        assert cache.cache_key({**base, field: value}) != k, field
    monkeypatch.setattr(cache, "__version__", "999.0")
    assert cache.cache_key(base) != k


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCHADV_CACHE", str(tmp_path))
    assert cache.default_cache_dir() == os.path.join(str(tmp_path), "models")
    monkeypatch.delenv("SCRATCHADV_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "scratchadv", "models")


# --- cached_fit -----------------------------------------------------------------

def fit_tiny(folder, **kw):
    x, y = tiny_data()
    opts = dict(x_val=x[:16], y_val=y[:16], epochs=2, batch_size=16, seed=3, cache=str(folder),
                verbose=False)
    opts.update(kw)
    return cache.cached_fit("tiny", "softmax-v1", x, y, **opts)


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


def test_cached_fit_key_covers_the_defense_and_the_validation_data(tmp_path):
    _, _, plain = fit_tiny(tmp_path, epochs=1)
    _, _, reg = fit_tiny(tmp_path, epochs=1, defense="gradreg", defense_options={"lam": 0.1})
    x, y = tiny_data()
    _, _, val = fit_tiny(tmp_path, epochs=1, x_val=x[16:32], y_val=y[16:32])
    assert len({plain["key"], reg["key"], val["key"]}) == 3
    assert reg["config"]["defense"] == "gradreg" and reg["config"]["lam"] == 0.1
    assert plain["config"]["n_val"] == 16 and plain["config"]["architecture"] == "softmax-v1"

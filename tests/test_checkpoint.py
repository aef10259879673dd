"""Model files: round trip, no pickle, and rejection of every kind of bad file."""
import json
import os

import numpy as np
import pytest

from scratchadv.checkpoint import (CheckpointError, describe, load_model, load_training_state,
                                   save_model, save_training_state, write_npz)
from scratchadv.model import get_architecture, init_params


def test_round_trip(tmp_path):
    p = init_params(3)
    path = tmp_path / "m.npz"
    save_model(path, p, config={"epochs": 2}, history={"loss": [1.0, 0.5]})
    q, meta = load_model(path)
    assert meta["architecture"] == "lecture-cnn-v1" and meta["config"] == {"epochs": 2}
    assert set(q) == set(p)
    for k in p:
        np.testing.assert_array_equal(q[k], p[k])
        assert q[k].dtype == np.float32
    assert "conv1.weight" in describe(path)
    q64, _ = load_model(path, dtype=np.float64)
    assert q64["dense2.bias"].dtype == np.float64


def test_no_pickle_needed(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, init_params(0))
    with np.load(path, allow_pickle=False) as z:          # plain numeric arrays only
        assert all(z[k].dtype != object for k in z.files)


def _payload(params, meta):
    blob = json.dumps(meta).encode()
    return {**params, "__meta__": np.frombuffer(blob, np.uint8)}


def _good_meta():
    return {"format": "scratchadv-model", "format_version": 1, "architecture": "lecture-cnn-v1"}


BAD = {
    "missing key": (lambda p: {k: v for k, v in p.items() if k != "dense1.bias"}, "missing"),
    "extra key": (lambda p: {**p, "dense3.weight": np.zeros((2, 2), np.float32)}, "unexpected"),
    "wrong shape": (lambda p: {**p, "conv1.weight": np.zeros((10, 1, 3, 3), np.float32)}, "shape"),
    "int dtype": (lambda p: {**p, "conv1.bias": np.zeros(10, np.int32)}, "dtype"),
    "nan": (lambda p: {**p, "dense1.bias": np.full(100, np.nan, np.float32)}, "NaN"),
    "mixed dtypes": (lambda p: {**p, "dense2.bias": np.zeros(10, np.float64)}, "mixed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_rejects_bad_parameters(tmp_path, case):
    change, msg = BAD[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **_payload(change(init_params(0)), _good_meta()))
    with pytest.raises(CheckpointError, match=msg):
        load_model(path)


def test_rejects_object_arrays(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"conv1.weight": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(path)


def test_rejects_other_architecture(tmp_path):
    path = tmp_path / "mlp.npz"
    save_model(path, get_architecture("mlp-v1").init_params(0), "mlp-v1")
    with pytest.raises(CheckpointError, match="architecture"):
        load_model(path, architecture="lecture-cnn-v1")
    meta = {**_good_meta(), "architecture": "resnet-50"}
    np.savez(path, **_payload(init_params(0), meta))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(path)


def test_rejects_files_without_metadata_and_bad_json(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, **init_params(0))
    with pytest.raises(CheckpointError, match="__meta__"):
        load_model(path)
    np.savez(path, **init_params(0), __meta__=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(CheckpointError, match="JSON"):
        load_model(path)


@pytest.mark.parametrize("seed", range(6))
def test_truncated_or_corrupted_files_are_rejected(tmp_path, seed):
    path = tmp_path / "m.npz"
    save_model(path, init_params(0))
    blob = bytearray(path.read_bytes())
    r = np.random.default_rng(seed)
    if seed % 2 == 0:
        blob = blob[: int(r.integers(1, len(blob) - 1))]
    else:
        for i in r.integers(0, len(blob), size=8):
            blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))
    try:
        q, _ = load_model(path)
    except CheckpointError as e:
        assert str(path) in str(e)
    else:
        # a flip that hit only zip padding may leave the arrays intact: then they must be exact
        for k, v in init_params(0).items():
            np.testing.assert_array_equal(q[k], v)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope.npz")


def test_training_state_round_trip_and_format_check(tmp_path):
    p = init_params(0)
    opt = {"step": np.asarray(3), "ms/conv1.weight": np.ones((10, 1, 5, 5), np.float32)}
    path = tmp_path / "s.npz"
    save_training_state(path, p, opt, {"architecture": "lecture-cnn-v1", "epoch": 2, "batch": 5})
    q, o, meta = load_training_state(path)
    assert meta["epoch"] == 2 and int(o["step"]) == 3
    np.testing.assert_array_equal(q["conv2.weight"], p["conv2.weight"])
    with pytest.raises(CheckpointError, match="training state"):
        load_model(path)


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, init_params(0))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_npz(path, {"x": np.array([object()], dtype=object)}, {})
    assert path.read_bytes() == before
    assert [f for f in os.listdir(tmp_path)] == ["m.npz"]


def _columns(text):
    """(start column of each "label: value" value, [(name, shape, dtype) columns] of arrays)."""
    lines = text.splitlines()
    i = lines.index("arrays:")
    rows = [ln for ln in lines[i + 1:] if ln.startswith("  ")]
    fields = [ln for ln in lines if ln not in rows and ln != "arrays:"]
    starts = {len(ln) - len(ln.split(":", 1)[1].lstrip()) for ln in fields}
    cols = set()
    for ln in rows:
        name, shape, dtype = ln.split(None, 2)[0], "(" + ln.split("(", 1)[1].rsplit(")", 1)[0] + ")", \
            ln.rsplit(None, 1)[1]
        cols.add((ln.index(name), ln.index(shape, len(name) + 2), ln.rindex(dtype)))
    return fields, starts, rows, cols


def test_describe_lines_up_its_columns(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, init_params(0), config={"epochs": 2, "lr": 0.001},
               history={"loss": [1.0, 0.5], "val_accuracy": [0.9, 0.95]},
               extra={"train_acc": 0.99, "test_acc": 0.98})
    fields, starts, rows, cols = _columns(describe(path))
    assert any(f.startswith("final val_accuracy:") for f in fields)   # the longest label
    assert len(starts) == 1, "\n".join(fields)
    assert len(rows) == 8 and len(cols) == 1, "\n".join(rows)
    # a training state: long array names (param/..., opt/...) still line up
    opt = {"ms/dense1.weight": np.ones((100, 320), np.float32), "step": np.asarray(3)}
    save_training_state(tmp_path / "s.npz", init_params(0), opt,
                        {"architecture": "lecture-cnn-v1", "epoch": 2, "batch": 5})
    fields, starts, rows, cols = _columns(describe(tmp_path / "s.npz"))
    assert len(starts) == 1 and len(rows) == 10 and len(cols) == 1, describe(tmp_path / "s.npz")


def test_bad_parameters_are_refused_by_the_one_checker_with_the_file_named(tmp_path):
    """save_model refuses what validate.check_params refuses, as a CheckpointError."""
    p = init_params(0)
    for bad, msg in [({**p, "conv1.bias": np.full(10, np.inf, np.float32)}, "NaN/Inf"),
                     ({**p, "conv1.weight": np.zeros((10, 1, 3, 3), np.float32)},
                      r"expected shape \(10, 1, 5, 5\) \(architecture 'lecture-cnn-v1'\)")]:
        with pytest.raises(CheckpointError, match=msg) as e:
            save_model(tmp_path / "m.npz", bad)
        assert str(tmp_path / "m.npz") in str(e.value)
    assert not (tmp_path / "m.npz").exists()


def test_marked_blocks_are_read_and_replaced_in_place(tmp_path):
    from scratchadv.fileio import marked_block, replace_marked_block, write_marked_block
    text = "a\n<!-- t -->\nold\n<!-- /t -->\nb\n"
    assert marked_block(text, "<!-- t -->", "<!-- /t -->") == "old\n"
    assert replace_marked_block(text, "<!-- t -->", "<!-- /t -->", "new\n") == "a\n<!-- t -->\nnew\n<!-- /t -->\nb\n"
    path = tmp_path / "R.md"
    path.write_text(text)
    write_marked_block(str(path), "<!-- t -->", "<!-- /t -->", "x\ny\n")
    assert marked_block(path.read_text(), "<!-- t -->", "<!-- /t -->") == "x\ny\n"
    for bad in ("no markers", "<!-- /t -->\n<!-- t -->\n"):          # missing, or in the wrong order
        with pytest.raises(ValueError, match="markers"):
            replace_marked_block(bad, "<!-- t -->", "<!-- /t -->", "new\n", where=str(path))

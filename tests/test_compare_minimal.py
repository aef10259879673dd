"""scripts/compare_minimal.py: our CW-L2 and DeepFool against Foolbox's on the same weights."""
import json

import numpy as np
import pytest

from conftest import load_script

cm = load_script("compare_minimal")


@pytest.mark.parametrize("args, match", [
    (["--attacks", "cw,jsma"], "--attacks"),
    (["--attacks", ","], "--attacks"),
    (["--n", "0"], "--n"),
    (["--cw-steps", "0"], "--cw-steps"),
    (["--threads", "0"], "--threads"),
])
def test_bad_input_exits_2_naming_the_flag(args, match, capsys):
    assert cm.main(["--model", "unused.npz"] + args) == 2
    assert match in capsys.readouterr().err


def test_missing_model_exits_2(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("foolbox")
    assert cm.main(["--model", str(tmp_path / "none.npz")]) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.mnist
def test_both_sides_on_a_few_images(random_model_file, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("foolbox")
    from scratchadv.checkpoint import load_model
    from scratchadv.data import load_mnist
    from scratchadv.model import predict
    out = tmp_path / "m.json"
    # the random model classifies 5 of the first 12 test images correctly
    assert cm.main(["--model", random_model_file, "--n", "12", "--cw-steps", "30",
                    "--cw-binary-steps", "5", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    d = json.loads(out.read_text())
    params, _ = load_model(random_model_file)
    _, _, x, y = load_mnist()
    clean = predict(params, x[:12]).argmax(1) == y[:12]
    assert d["n"] == 12 and d["n_attacked"] == clean.sum() >= 1
    assert d["settings"]["cw"]["steps"] == 30 and d["settings"]["cw"]["binary_search_steps"] == 5
    assert list(d["attacks"]) == ["cw", "deepfool-l2", "deepfool-linf"]
    for name, r in d["attacks"].items():
        assert r["norm"] == ("linf" if name == "deepfool-linf" else "l2") and name in printed
        both = np.ones(d["n_attacked"], dtype=bool)
        for side in ("ours", "theirs"):
            s = r[side]
            size = np.array(s["sizes"], dtype=float)
            assert size.shape == (d["n_attacked"],) and np.all(size > 0)
            assert 0 <= s["success"] <= 1 and s["success"] == pytest.approx(np.isfinite(size).mean())
            assert s["flipped"] == np.isfinite(size).sum()
            assert s["median"] == pytest.approx(np.median(size)) and s["seconds"] > 0
            both &= np.isfinite(size)
        assert r["both_flipped"] == both.sum()
        if np.isfinite(r["theirs"]["median"]):
            assert r["ratio"] == pytest.approx(r["ours"]["median"] / r["theirs"]["median"])
        if both.any():
            assert r["ratio_both"] == pytest.approx(r["ours"]["median_both"]
                                                    / r["theirs"]["median_both"])
    # DeepFool is the same algorithm on both sides: a random model flips fully, alike
    for name in ("deepfool-l2", "deepfool-linf"):
        r = d["attacks"][name]
        assert r["ours"]["success"] == r["theirs"]["success"] == 1.0
        assert r["ratio"] == pytest.approx(1.0, rel=0.05)

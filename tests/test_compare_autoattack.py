"""scripts/compare_autoattack.py: ours and the original AutoAttack on the same weights."""
import json

import numpy as np
import pytest

from conftest import load_script
from scratchadv.checkpoint import save_model
from scratchadv.model import init_params

ca = load_script("compare_autoattack")


def test_reads_the_originals_log_line():
    m = ca._AFTER.search("robust accuracy after APGD-T: 87.50% (total time 12.3 s)")
    assert m.group(1) == "APGD-T" and m.group(2) == "87.50"


@pytest.mark.mnist
def test_both_on_a_few_images(tmp_path, capsys):
    pytest.importorskip("pyautoattack")
    model = tmp_path / "random.npz"
    save_model(model, init_params(0), "lecture-cnn-v1")
    out = tmp_path / "c.json"
    assert ca.main(["--model", str(model), "--n", "3", "--eps", "0.02", "--threads", "1",
                    "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    for w in ("ours", "theirs"):
        r = d[w]
        assert r["clean"] == pytest.approx(d["ours"]["clean"])       # the same model and images
        after = list(r["after"].values())
        assert after and all(b <= a for a, b in zip(after, after[1:])) and r["robust"] <= r["clean"]
    assert set(d["ours"]["after"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert np.isfinite(d["time_ratio"]) and "ours - original" in capsys.readouterr().out

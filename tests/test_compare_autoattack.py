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


def _run(model, eps, which, robust, n=10):
    after = dict(zip(ca.COMPONENTS, [0.8, 0.7, 0.7, robust]))
    return {"model": f"/x/{model}.npz", "n": n, "eps": eps, "norm": "linf", "seed": 0,
            which: {"clean": 0.9, "after": after, "robust": robust, "seconds": 12.0}}


def test_table_merges_the_two_sides_and_replaces_the_readme_block(tmp_path):
    files = []
    for i, r in enumerate([_run("natural", 0.1, "ours", 0.6), _run("natural", 0.1, "theirs", 0.7),
                           _run("gradreg", 0.1, "theirs", 0.5)]):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(r))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{ca.MARK_BEGIN}\nold table\n{ca.MARK_END}\nafter\n")
    assert ca.main(["--table", ",".join(map(str, files)), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("before\n") and text.endswith(f"{ca.MARK_END}\nafter\n")
    rows = [line for line in text.splitlines() if line.startswith("| natural") or line.startswith("| gradreg")]
    assert len(rows) == 3                                    # natural: both sides; gradreg: the original only
    ours = next(r for r in rows if "scratchadv" in r)
    assert "| -10.0 |" in ours and "60.0 (6)" in ours         # 0.6 - 0.7 in points; 6 of 10 images


def test_table_refuses_results_on_different_images(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run("natural", 0.1, "ours", 0.6, n=10)))
    b.write_text(json.dumps(_run("natural", 0.1, "theirs", 0.6, n=20)))
    assert ca.main(["--table", f"{a},{b}"]) == 2
    assert "different images" in capsys.readouterr().err


def test_needs_a_model_or_a_table(capsys):
    assert ca.main([]) == 2 and "--model" in capsys.readouterr().err


def test_ours_from_an_evaluation_report(tmp_path):
    after = {"apgd-ce": 0.7, "apgd-t": 0.6, "fab-t": 0.6, "square": 0.6}
    aa = {"fooled": {"apgd-ce": 2, "apgd-t": 1, "fab-t": 0, "square": 0}, "square_warning": False,
          "checks": {}, "seconds": {"apgd-ce": 1.0, "apgd-t": 2.0, "fab-t": 3.0, "square": 4.0}}
    report = {"n": 10, "clean_accuracy": 0.9, "eps": [0.0, 0.1, 0.5],
              "results": [{"eps": 0.0, "accuracy": {}},
                          {"eps": 0.1, "accuracy": {"autoattack": 0.6}, "autoattack_after": after, "autoattack": aa}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    r = ca.ours_from_report(str(tmp_path), 0.1)
    assert r["robust"] == 0.6 and r["after"] == after and r["seconds"] == 10.0 and r["n"] == 10
    with pytest.raises(ValueError, match="eps 0.3"):
        ca.ours_from_report(str(tmp_path), 0.3)

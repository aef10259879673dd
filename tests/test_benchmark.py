"""scripts/benchmark.py: its README table and its import path (no measurement here)."""
import os
import subprocess
import sys

import pytest

from conftest import load_script

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _row(label, ours, theirs):
    return {"label": label, "scratchadv_s": ours, "torch_s": theirs,
            "ratio": None if theirs is None or ours is None else ours / theirs}


def test_the_markdown_table_has_a_column_per_thread_count():
    bm = load_script("benchmark")
    combined = {"threads": [1, 2], "runs": {
        "1": {"rows": [_row("forward", 0.004, 0.005), _row("train epoch", 7.5, None)]},
        "2": {"rows": [_row("forward", 0.003, 0.002), _row("train epoch", 5.0, 4.0)]}}}
    lines = bm.format_markdown(combined).splitlines()
    assert lines[0] == ("| row | 1 thread: scratchadv / PyTorch (ratio) | "
                        "2 threads: scratchadv / PyTorch (ratio) |")
    assert lines[2] == "| forward | 4.0 ms / 5.0 ms (**0.80x**) | 3.0 ms / 2.0 ms (**1.50x**) |"
    assert lines[3] == "| train epoch | 7.50 s / - (-) | 5.00 s / 4.00 s (**1.25x**) |"


def test_readme_needs_several_thread_counts():
    bm = load_script("benchmark")
    with pytest.raises(SystemExit):
        bm.parse_args(["--threads", "1", "--readme", "README.md"])


def test_the_scripts_folder_does_not_shadow_the_standard_library():
    """scripts/profile.py must not replace `profile` (PyTorch's optimizers import cProfile)."""
    # run from inside scripts/ (so it is first on the path), the script's own import lines,
    # then the import that PyTorch makes
    code = ("import runpy; runpy.run_path({path!r}, run_name='imported')\n"
            "import profile, cProfile; print(profile.__file__)")
    path = os.path.join(ROOT, "scripts", "benchmark.py")
    out = subprocess.run([sys.executable, "-c", code.format(path=path)], capture_output=True,
                         text=True, cwd=os.path.join(ROOT, "scripts"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert not os.path.samefile(out.stdout.strip(), os.path.join(ROOT, "scripts", "profile.py"))


def test_merging_the_two_one_library_runs_computes_ratios_and_targets():
    bm = load_script("benchmark")
    ours = {"config": {"threads": 2, "side": "ours", "torch": None},
            "rows": [dict(_row("forward", 0.004, None), key="forward", target=0.8),
                     dict(_row("pgd", 10.0, None), key="pgd", target=0.8,
                          robust_accuracy={"scratchadv": 0.5})]}
    theirs = {"config": {"threads": 2, "side": "torch", "torch": "2.13.0"},
              "rows": [dict(_row("forward", None, 0.008), key="forward", target=0.8),
                       dict(_row("pgd", None, 10.0), key="pgd", target=0.8,
                            robust_accuracy={"torch": 0.49})]}
    merged = bm.merge_sides(ours, theirs)
    fwd, pgd = merged["rows"]
    assert fwd["ratio"] == pytest.approx(0.5) and fwd["torch_s"] == 0.008
    assert pgd["ratio"] == pytest.approx(1.0)
    assert pgd["robust_accuracy"] == {"scratchadv": 0.5, "torch": 0.49}
    assert merged["targets_missed"] == ["pgd"]
    assert merged["config"]["torch"] == "2.13.0" and merged["config"]["side"] is None


def test_a_short_run_times_each_library_in_its_own_process(tmp_path):
    pytest.importorskip("torch")      # the `torch` extra, installed by the README's test command
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"),
                          "--threads", "1", "--skip-epoch", "--skip-pgd", "--repeats", "1", "--rounds", "2",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode in (0, 1), res.stderr         # 1: a target missed, still a report
    import json
    report = json.loads(out.read_text())
    assert [r["key"] for r in report["rows"]] == ["forward", "fwd_grad_w", "grad_x", "double_backprop"]
    for r in report["rows"]:
        assert r["scratchadv_s"] > 0 and r["torch_s"] > 0
        assert r["ratio"] == pytest.approx(r["scratchadv_s"] / r["torch_s"])
    assert report["config"]["blas"]["threads"] in (1, None)
    assert "=== 1 thread(s): scratchadv" in res.stderr and "=== 1 thread(s): PyTorch" in res.stderr


def test_rounds_pool_each_rows_timings_and_take_their_median():
    bm = load_script("benchmark")
    first = {"config": {"side": "ours"}, "rows": [dict(_row("forward", 0.004, None), key="forward",
                                                      scratchadv_times=[0.004, 0.005, 0.003])]}
    more = {"config": {"side": "ours"}, "rows": [dict(_row("forward", 0.009, None), key="forward",
                                                     scratchadv_times=[0.009, 0.008])]}
    joined = bm.join_rounds(first, more)
    assert joined["rows"][0]["scratchadv_times"] == [0.004, 0.005, 0.003, 0.009, 0.008]
    assert joined["rows"][0]["scratchadv_s"] == 0.005 and joined["config"]["rounds"] == 2

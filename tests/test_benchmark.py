"""scripts/benchmark.py: its README table and its import path (no measurement here)."""
import os
import subprocess
import sys

import pytest

from conftest import load_script

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _row(label, ours, theirs):
    return {"label": label, "scratchadv_s": ours, "torch_s": theirs,
            "ratio": None if theirs is None else ours / theirs}


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

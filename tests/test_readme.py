"""Every Python snippet in README.md runs, in order, in one namespace (as a reader would)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def snippets():
    text = open(README, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_snippets():
    assert len(snippets()) >= 5


def test_readme_commands_match_ci():
    text = open(README, encoding="utf-8").read()
    ci = open(os.path.join(os.path.dirname(README), ".ci", "run"), encoding="utf-8").read()
    test_cmd = re.search(r'pip install -e "\.\[test,torch,tensorflow\]" && python -m pytest', text)
    assert test_cmd, "README must give the test command"
    assert 'python -m pip install -e ".[test,torch,tensorflow]"' in ci and "python -m pytest" in ci
    assert "pip install -e . && scratchadv demo" in text


@pytest.mark.mnist
@pytest.mark.slow
def test_readme_snippets_run(capsys):
    pytest.importorskip("torch")      # the last snippet compares with PyTorch
    namespace = {}
    for i, code in enumerate(snippets()):
        try:
            exec(compile(code, f"README.md snippet {i + 1}", "exec"), namespace)
        except Exception as e:                       # name the snippet that broke
            raise AssertionError(f"README snippet {i + 1} failed: {e!r}\n{code}") from e
    out = capsys.readouterr().out
    assert "same logits in PyTorch (to float32 rounding): True" in out
    assert "P(3 | fake image)" in out


def test_readme_robustness_tables_are_the_committed_results():
    """The AutoAttack comparison and the defenses table are regenerated from the JSON the
    scripts wrote (kept in results/), never typed: formatting them again gives the README's."""
    import glob
    import json

    from conftest import load_script
    from scratchadv.fileio import marked_block
    root = os.path.dirname(README)
    text = open(README, encoding="utf-8").read()
    ds, ca = load_script("defenses"), load_script("compare_autoattack")
    with open(os.path.join(root, "results", "defenses.json"), encoding="utf-8") as f:
        rows = json.load(f)
    assert [r["name"] for r in rows] == [m[0] for m in ds.MODELS]
    assert marked_block(text, ds.MARK_BEGIN, ds.MARK_END, "README") == ds.format_table(rows)
    runs = []
    for p in sorted(glob.glob(os.path.join(root, "results", "autoattack", "*.json"))):
        with open(p, encoding="utf-8") as f:
            runs.append(json.load(f))
    merged = ca.merge(runs)
    assert all("ours" in m and "theirs" in m and m["n"] == 1000 for m in merged.values())
    assert marked_block(text, ca.MARK_BEGIN, ca.MARK_END, "README") == ca.format_table(merged)


def test_readme_benchmark_table_is_the_committed_results():
    """The performance table is benchmark.py's formatting of results/benchmark.json."""
    import json

    from conftest import load_script
    from scratchadv.fileio import marked_block
    bm = load_script("benchmark")
    root = os.path.dirname(README)
    with open(os.path.join(root, "results", "benchmark.json"), encoding="utf-8") as f:
        combined = json.load(f)
    assert combined["threads"] == [1, 2]
    text = open(README, encoding="utf-8").read()
    assert marked_block(text, bm.MARK_BEGIN, bm.MARK_END, "README") == bm.format_markdown(combined)

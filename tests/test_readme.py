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

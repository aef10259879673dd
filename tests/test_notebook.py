"""notebooks/lecture.ipynb: stored without outputs, and it runs top to bottom (small settings)."""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "notebooks", "lecture.ipynb")

SMALL = """\
N_TRAIN = 2000
EPOCHS = 1
SHALLOW_EPOCHS = 1
DEFENSE_EPOCHS = 1
N_EVAL = 100
N_MINIMAL = 20
ATTACK_STEPS = 5
CACHE = {cache!r}
OUT = {out!r}
SEED = 0
"""

FIGURES = ("learning-curves.png", "fake-lecture.png", "fake-ce.png", "ascent.png", "minimal.png",
           "targeted-lecture.png", "targeted-ce.png", "defenses.png")


def load():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_without_outputs_and_valid():
    nb = load()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters' holds the settings"
    # each lecture section is there, Keras way and scratchadv way
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for title in ("The lecture's CNN", "A fake image from noise", "The untargeted attack",
                  "Shallow and deep models", "The targeted attack", "Min-max", "Gradient regularization"):
        assert title in text, title
    assert text.count("```python") >= 4 and "binary_crossentropy" in text


@pytest.mark.mnist
def test_runs_top_to_bottom_with_small_settings(tmp_path):
    nb = load()
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    out = tmp_path / "figures"
    cell.source = SMALL.format(cache=str(tmp_path / "cache"), out=str(out))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                  # raises CellExecutionError on the first failing cell
    for name in FIGURES:
        assert (out / name).is_file() and (out / name).read_bytes()[:4] == b"\x89PNG", name
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(FIGURES)                   # shown inline too
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "P(target)" in printed and "PGD-trained" in printed

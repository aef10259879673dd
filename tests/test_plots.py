"""Figures: each writes a readable PNG atomically and refuses arrays of the wrong shape."""
import os

import numpy as np
import pytest

from scratchadv import plots
from scratchadv.attacks import fake_image, gradient_ascent, penalty_attack
from scratchadv.model import init_params, predict

from conftest import tiny_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def params():
    return init_params(0)


def _png_size(path):
    """(width, height) from the PNG header, after checking the signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _no_temp_files(folder):
    leftovers = [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert leftovers == []


def _probs(n, seed=0):
    p = np.random.default_rng(seed).random((n, 10))
    return p / p.sum(1, keepdims=True)


def test_prediction_figure(tmp_path):
    x = tiny_images(1)[0]
    out = plots.plot_prediction(tmp_path / "p.png", x, _probs(1)[0], true=3)
    w, h = _png_size(out)
    assert w > 1.5 * h                  # image beside the bars
    _no_temp_files(tmp_path)


def test_grid_layout_follows_ncols(tmp_path):
    x = tiny_images(4)
    w1, h1 = _png_size(plots.plot_grid(tmp_path / "a.png", x, _probs(4), ncols=2))
    w2, h2 = _png_size(plots.plot_grid(tmp_path / "b.png", x, _probs(4), ncols=4))
    assert w2 > w1 and h2 < h1           # one row of four is wider and lower than two of two


def test_lecture_figures_from_attack_results(tmp_path, params):
    x = tiny_images(3)
    y = np.argmax(predict(params, x), 1)
    asc = gradient_ascent(params, x, y)
    w, h = _png_size(plots.plot_ascent(tmp_path / "ascent.png", x, asc, 1, true=int(y[1])))
    assert w > 2 * h                     # five snapshots side by side
    seven = np.repeat(x[:1], 10, 0)
    t = np.arange(10, dtype=np.int64)
    pen = penalty_attack(params, seven, t, steps=3)
    _png_size(plots.plot_targeted_grid(tmp_path / "grid.png", pen, true=int(y[0]),
                                       penalty="l1", lam=30))
    fake = fake_image(params, t, steps=2, verbose=False)
    _png_size(plots.plot_fake_images(tmp_path / "fake.png", fake))
    _png_size(plots.plot_perturbation(tmp_path / "pert.png", x[0], pen.x_adv[3],
                                      _probs(1)[0], pen.probs[3], true=int(y[0]), target=3,
                                      title="penalty attack"))
    assert sorted(os.listdir(tmp_path)) == ["ascent.png", "fake.png", "grid.png", "pert.png"]


def test_zero_perturbation_is_drawn(tmp_path):
    x = tiny_images(1)[0]
    _png_size(plots.plot_perturbation(tmp_path / "z.png", x, x.copy(), _probs(1)[0], _probs(1)[0]))


def test_ascent_figure_needs_the_clean_snapshot(tmp_path, params):
    x = tiny_images(2)
    y = np.argmax(predict(params, x), 1)
    asc = gradient_ascent(params, x, y, snapshot_steps=(5, 10))
    with pytest.raises(ValueError, match="snapshot_steps"):
        plots.plot_ascent(tmp_path / "a.png", x, asc, 0)
    assert not os.path.exists(tmp_path / "a.png")


@pytest.mark.parametrize("call, match", [
    (lambda p: plots.plot_prediction(p, np.zeros((2, 28, 28)), _probs(1)[0]), "image"),
    (lambda p: plots.plot_prediction(p, np.zeros((1, 28, 28)), np.ones(9) / 9), "probs"),
    (lambda p: plots.plot_grid(p, tiny_images(3), _probs(2)), "probs"),
])
def test_wrong_shapes_are_refused_and_nothing_is_written(tmp_path, call, match):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=match):
        call(path)
    assert not os.path.exists(path)
    _no_temp_files(tmp_path)


def test_failed_save_leaves_previous_file(tmp_path):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        plots.plot_grid(path, tiny_images(3), _probs(2))
    assert path.read_bytes() == b"old"


# --- evaluation reports ------------------------------------------------------

def _eval_report(name="m", attacks=("fgsm", "pgd", "pgd-l2")):
    """The fields of an evaluation report the figures read, for a model that falls with eps."""
    rows = [{"eps": e, "accuracy": {**{a: 1 - e - 0.1 * k for k, a in enumerate(attacks)},
                                     "noise": 1.0, "worst_case": max(0.0, 1 - 2 * e)}}
            for e in (0.0, 0.1, 0.3, 0.5)]
    return {"name": name, "attacks": list(attacks), "l2_scale": 7.0, "results": rows}


def test_evaluation_figures(tmp_path):
    w, h = _png_size(plots.plot_report(_eval_report(), tmp_path / "report.png"))
    assert 1.2 * h < w < 2 * h
    comparison = {"models": [_eval_report("a"), _eval_report("b", attacks=("pgd",))]}
    w, h = _png_size(plots.plot_comparison(comparison, tmp_path / "comparison.png"))
    assert 1.2 * h < w < 2 * h
    assert sorted(os.listdir(tmp_path)) == ["comparison.png", "report.png"]


def test_importing_and_plotting_leave_the_backend_alone():
    """A notebook's backend survives the library: no module switches it or starts pyplot."""
    import subprocess
    import sys
    code = ("import matplotlib, os, sys, tempfile\n"
            "matplotlib.use('svg')\n"
            "import scratchadv.cli, scratchadv.demo, scratchadv.evaluate as E, scratchadv.plots as P\n"
            "sys.path.insert(0, 'tests')\n"
            "from test_plots import _eval_report\n"
            "r = dict(_eval_report(), n=1, clean_accuracy=1.0, steps=1, restarts=1, step_size_rule='')\n"
            "for row in r['results']: row['eps_l2'] = 7 * row['eps']\n"
            "d = tempfile.mkdtemp()\n"
            "E.write_report(r, d); E.write_comparison([r], d)\n"
            "P.plot_report(r, os.path.join(d, 'r.png'))\n"
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules, len(os.listdir(d)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False", "7"]

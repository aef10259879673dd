"""evaluate.minimal.minimal_norms: the minimal-norm attacks side by side."""
import numpy as np
import pytest

from conftest import tiny_images
from scratchadv.evaluate.minimal import MINIMAL_ATTACKS, minimal_norms
from scratchadv.model import get_architecture


@pytest.fixture(scope="module")
def setup():
    arch = get_architecture("softmax-v1")
    p = {k: v.astype(np.float64) for k, v in arch.init_params(2).items()}
    x = tiny_images(8, seed=3, dtype=np.float64)
    y = np.argmax(arch.predict(p, x), 1).astype(np.int64)
    y[:2] = (y[:2] + 1) % 10                       # two images misclassified: not attacked
    return arch, p, x, y


def test_compares_the_attacks_on_the_same_images(setup):
    arch, p, x, y = setup
    r = minimal_norms(p, x, y, predict_fn=arch.predict, norm="l2", cw_steps=50, cw_binary_steps=3,
                      fab_steps=20, search_steps=6, pgd_steps=10)
    assert r["n_correct"] == 6 and r["attacks"] == list(MINIMAL_ATTACKS)
    sizes = np.array([r["by_attack"][a]["sizes"] for a in r["attacks"]])
    assert sizes.shape == (4, 6) and np.all(sizes > 0)
    best = sizes.min(0)
    assert r["best_median"] == pytest.approx(np.median(best))
    assert sum(r["wins"].values()) == 6
    med = {a: np.median(s) for a, s in zip(r["attacks"], sizes)}
    assert med[r["smallest"]] == min(med.values())
    # on a linear model DeepFool's first step is exact: nobody does much better
    assert r["by_attack"]["deepfool"]["median"] <= 1.05 * r["best_median"]


def test_linf_skips_cw_and_bad_names(setup):
    arch, p, x, y = setup
    r = minimal_norms(p, x, y, predict_fn=arch.predict, norm="linf", attacks=("deepfool", "cw"))
    assert r["attacks"] == ["deepfool"]
    with pytest.raises(ValueError, match="attacks"):
        minimal_norms(p, x, y, predict_fn=arch.predict, attacks=("jsma",))
    with pytest.raises(ValueError, match="norm"):
        minimal_norms(p, x, y, predict_fn=arch.predict, norm="l1")

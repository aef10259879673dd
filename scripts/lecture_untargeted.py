#!/usr/bin/env python
"""Lecture, untargeted attack: normalized gradient ascent until the digit is misread.

    python scripts/lecture_untargeted.py [--model runs/natural.npz] [--out runs/lecture]
                                         [--index 0] [--n 1000]

Per image: ``x <- clip(x + 0.05 * g / max|g|, 0, 1)`` with g the gradient of the true
label's cross-entropy, at most 20 steps, stopping once the prediction is wrong. Writes
the lecture's figure for test image ``--index`` after 5/10/15/20 steps
(``OUT/untargeted.png``), its perturbation (``OUT/untargeted_perturbation.png``), and
statistics over the first ``--n`` test images (``OUT/untargeted.json``): how many are
misclassified within 20 steps, after how many steps, and how large the change is.
If the model file is missing it is trained first (``scratchadv train --epochs 10``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np                                     # noqa: E402

from scratchadv import plots                           # noqa: E402
from scratchadv.attacks import gradient_ascent, summarize  # noqa: E402
from scratchadv.data import load_mnist                 # noqa: E402
from scratchadv.fileio import atomic_write_json        # noqa: E402

from lecture_fake_images import ensure_model           # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default="runs/natural.npz")
    ap.add_argument("--out", default="runs/lecture")
    ap.add_argument("--index", type=int, default=0, help="test image of the figure (default 0, a 7)")
    ap.add_argument("--n", type=int, default=1000, help="images for the statistics")
    a = ap.parse_args(argv)
    params, arch = ensure_model(a.model)
    _, _, x_test, y_test = load_mnist()
    os.makedirs(a.out, exist_ok=True)

    i = a.index
    one = gradient_ascent(params, x_test[i:i + 1], y_test[i:i + 1], predict_fn=arch.predict)
    plots.plot_ascent(os.path.join(a.out, "untargeted.png"), x_test[i:i + 1], one, 0,
                      true=int(y_test[i]))
    plots.plot_perturbation(os.path.join(a.out, "untargeted_perturbation.png"), x_test[i],
                            one.x_adv[0], one.snapshot_probs[0][0], one.probs[0],
                            true=int(y_test[i]),
                            title=f"untargeted ascent, test image {i}: {int(one.steps[0])} steps")
    print(f"test image {i} (label {y_test[i]}):")
    for k in sorted(one.snapshots):
        p = one.snapshot_probs[k][0]
        print(f"  after {k:2d} steps: predicted {int(p.argmax())} ({p.max():.3f}), "
              f"p(label) {p[y_test[i]]:.3f}")

    x, y = x_test[:a.n], y_test[:a.n]
    r = gradient_ascent(params, x, y, predict_fn=arch.predict, verbose=True)
    clean_pred = r.snapshot_probs[0].argmax(1)
    m = summarize(r, y, clean_pred)
    ok = clean_pred == y
    steps = r.steps[ok & r.success]
    m.update({"steps_median": float(np.median(steps)) if len(steps) else None,
              "steps_histogram": np.bincount(steps, minlength=21).tolist(),
              "misclassified_after": {
                  str(k): float(np.mean(r.snapshot_probs[k][ok].argmax(1) != y[ok]))
                  for k in sorted(r.snapshots)},
              "figure_index": i, "model": os.path.abspath(a.model)})
    atomic_write_json(os.path.join(a.out, "untargeted.json"), m)
    print(f"first {a.n} test images: clean acc {m['clean_acc']:.4f}; misclassified within 20 steps: "
          f"{m['success_rate']:.4f} of the correct ones (median {m['steps_median']} steps); "
          f"accuracy after the attack {m['robust_acc']:.4f}")
    print("  misread after k steps: "
          + ", ".join(f"{k}: {v:.3f}" for k, v in m["misclassified_after"].items()))
    print(f"  median change: Linf {m['median_linf']:.3f}, L2 {m['median_l2']:.3f}")
    print(f"figures and numbers in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Lecture, targeted attack: one test "7" pushed to each of the ten classes.

    python scripts/lecture_targeted.py [--model runs/natural.npz] [--out runs/lecture]
                                       [--lam 30] [--steps 100] [--lr 0.1]

Minimises ``CE(target, f(x)) + lam * mean|x - x*|`` (and, second figure, with the
squared penalty ``lam * mean (x - x*)^2``) by gradient descent from the first "7" of the
test set, clipped to [0, 1], for every target 0-9. Writes ``OUT/targeted_l1.png``,
``OUT/targeted_l2.png``, the perturbation of one target (``OUT/targeted_perturbation.png``)
and ``OUT/targeted.json`` (per target: p(target), prediction, L1/L2/Linf change).
If the model file is missing it is trained first (``scratchadv train --epochs 10``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np                                     # noqa: E402

from scratchadv import plots                           # noqa: E402
from scratchadv.attacks import penalty_attack          # noqa: E402
from scratchadv.data import load_mnist                 # noqa: E402
from scratchadv.fileio import atomic_write_json        # noqa: E402

from lecture_fake_images import ensure_model           # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default="runs/natural.npz")
    ap.add_argument("--out", default="runs/lecture")
    ap.add_argument("--lam", type=float, default=30.0, help="the lecture's 30")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--digit", type=int, default=7, help="the class of the source image (default 7)")
    ap.add_argument("--show", type=int, default=3, help="target of the perturbation figure")
    a = ap.parse_args(argv)
    params, arch = ensure_model(a.model)
    _, _, x_test, y_test = load_mnist()
    os.makedirs(a.out, exist_ok=True)
    i = int(np.flatnonzero(y_test == a.digit)[0])
    x = np.repeat(x_test[i:i + 1], 10, 0)
    t = np.arange(10, dtype=np.int64)
    z = np.asarray(arch.predict(params, x_test[i:i + 1]), dtype=np.float64)
    clean_probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()

    out = {"model": os.path.abspath(a.model), "test_index": i, "label": a.digit, "lam": a.lam,
           "steps": a.steps, "lr": a.lr, "clean_probs": clean_probs[0].tolist()}
    for penalty in ("l1", "l2"):
        r = penalty_attack(params, x, t, lam=a.lam, penalty=penalty, steps=a.steps, lr=a.lr,
                           predict_fn=arch.predict)
        plots.plot_targeted_grid(os.path.join(a.out, f"targeted_{penalty}.png"), r, true=a.digit,
                                 penalty=penalty, lam=a.lam)
        if penalty == "l1":
            s = a.show
            plots.plot_perturbation(os.path.join(a.out, "targeted_perturbation.png"), x[s],
                                    r.x_adv[s], clean_probs[0], r.probs[s], true=a.digit, target=s,
                                    title=f"a {a.digit} pushed to {s}: CE(target) + {a.lam:g} mean|d|")
        out[penalty] = {"target_prob": r.probs[t, t].tolist(), "pred": r.pred.tolist(),
                        "success": r.success.tolist(), "l1": r.l1.tolist(), "l2": r.l2.tolist(),
                        "linf": r.linf.tolist()}
        print(f"penalty {penalty} (lam {a.lam:g}): test image {i}, a {a.digit}")
        print("  target   p(target)  pred     L2   Linf")
        for c in t:
            print(f"  {c:6d}   {r.probs[c, c]:9.4f}  {r.pred[c]:4d}  {r.l2[c]:5.2f}  {r.linf[c]:5.2f}")
        print(f"  reached: {int(r.success.sum())}/10")
    atomic_write_json(os.path.join(a.out, "targeted.json"), out)
    print(f"figures and numbers in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

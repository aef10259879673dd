#!/usr/bin/env python
"""Lecture, "Generate Fake Image": images the CNN calls 0-9, made from uniform noise.

    python scripts/lecture_fake_images.py [--model runs/natural.npz] [--out runs/lecture]
                                          [--steps 10] [--lr 0.5] [--seed 0]

With the weights fixed, each image starts as uniform noise and descends the
cross-entropy of its class: ``x <- clip(x - lr * d CE(target)/d x, 0, 1)``. The script
first repeats the lecture's run (class 0, printing the loss at each step), then makes
one image per class with the same settings, and again with a 4x larger step
(``--lr-large``, default 2.0): the lecture's lr 0.5 was tuned for the lecture's Keras
model, and how far 10 steps get depends on the size of the trained model's input
gradients. Writes ``OUT/fake_0.png``, ``OUT/fake_images.png``,
``OUT/fake_images_lr<LR>.png`` and ``OUT/fake_images.json``.
If the model file is missing it is trained first (``scratchadv train --epochs 10``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np                                     # noqa: E402

from scratchadv import plots                           # noqa: E402
from scratchadv.attacks import fake_image              # noqa: E402
from scratchadv.checkpoint import load_model           # noqa: E402
from scratchadv.cli import main as cli                 # noqa: E402
from scratchadv.fileio import atomic_write_json        # noqa: E402
from scratchadv.model import get_architecture          # noqa: E402


def ensure_model(path, seed=0):
    if not os.path.exists(path):
        print(f"{path} not found: training it (scratchadv train --epochs 10 --seed {seed})", flush=True)
        rc = cli(["train", "--epochs", "10", "--seed", str(seed), "--out", path])
        if rc:
            raise SystemExit(f"training failed with status {rc}")
    params, meta = load_model(path)
    return params, get_architecture(meta["architecture"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default="runs/natural.npz")
    ap.add_argument("--out", default="runs/lecture")
    ap.add_argument("--steps", type=int, default=10, help="the lecture's 10")
    ap.add_argument("--lr", type=float, default=0.5, help="the lecture's 0.5")
    ap.add_argument("--lr-large", type=float, default=2.0, help="second run's learning rate")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    params, arch = ensure_model(a.model)
    os.makedirs(a.out, exist_ok=True)

    print(f"fake image for class 0 (steps {a.steps}, lr {a.lr}):")
    zero = fake_image(params, 0, steps=a.steps, lr=a.lr, rng=np.random.default_rng(a.seed),
                      predict_fn=arch.predict, verbose=True)
    print(f"prediction for 0: {zero.probs[0, 0]:.4f} (lecture: 0.998)\n")
    plots.plot_prediction(os.path.join(a.out, "fake_0.png"), zero.x_adv[0], zero.probs[0],
                          target=0, title=f"fake image for 0 ({a.steps} steps, lr {a.lr:g})")

    t = np.arange(10, dtype=np.int64)
    runs = {}
    for lr, name in ((a.lr, "fake_images.png"), (a.lr_large, f"fake_images_lr{a.lr_large:g}.png")):
        r = fake_image(params, t, steps=a.steps, lr=lr, rng=np.random.default_rng(a.seed),
                       predict_fn=arch.predict, verbose=False)
        plots.plot_fake_images(os.path.join(a.out, name), r)
        runs[f"lr={lr:g}"] = {"steps": a.steps, "lr": lr,
                              "target_prob": r.probs[t, t].tolist(), "pred": r.pred.tolist(),
                              "loss_per_step": r.loss_history.T.tolist(), "figure": name}
    print("class  " + "".join(f"{c:>8d}" for c in t))
    for key, v in runs.items():
        p = np.array(v["target_prob"])
        print(f"{key:<7}" + "".join(f"{x:8.4f}" for x in p)
              + f"   min {p.min():.4f}, {int((p >= 0.99).sum())}/10 >= 0.99")
    atomic_write_json(os.path.join(a.out, "fake_images.json"),
                      {"model": os.path.abspath(a.model), "seed": a.seed,
                       "lecture_class0_prob": float(zero.probs[0, 0]), "runs": runs})
    print(f"figures and numbers in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

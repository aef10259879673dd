#!/usr/bin/env python
"""Are shallow nets harder to fool? Median minimal perturbation: softmax, MLP, CNN.

    python scripts/shallow_vs_deep.py [--cnn runs/natural.npz] [--out runs/shallow_vs_deep]
                                      [--cache DIR] [--epochs 10] [--seed 0] [--n 1000]
                                      [--steps 20] [--search-steps 10]
                                      [--minimal pgd,deepfool,cw,fab] [--minimal-n 200]
                                      [--cw-steps 1000] [--cw-binary-steps 9]

The demo's section 4 (:func:`scratchadv.demo.shallow_vs_deep_table`) on its own, with
the full data: softmax regression ("softmax-v1"), a one-hidden-layer MLP ("mlp-v1") and
the lecture CNN, all trained with RMSprop, batch 128, the same seed and epochs on the
60,000 training images (the test set as validation data), through the model cache
(:func:`scratchadv.cache.cached_fit`: the demo's full run and this script share their
models). ``--cnn``: a model file to use as the CNN instead. For each model and each of
the first ``--n`` test images it classifies correctly, the smallest Linf and L2 radius
at which PGD (``--steps`` steps, random start, step 2.5 eps / steps) flips the
prediction is found by bisection (``--search-steps`` halvings of [0, 1] for Linf and
[0, 28] for L2). The random starts are the demo's (section 4's stream), so with the
defaults the table is the full demo's. Writes ``OUT/shallow_vs_deep.md`` (the demo's
table) and ``.json``.

``--minimal``: also compare the minimal-norm attacks on each model
(:func:`scratchadv.evaluate.minimal.minimal_norms_by_model`, which the demo's section 4
calls too: bisection over PGD, DeepFool, CW-L2, FAB without eps) on the first
``--minimal-n`` test images, L2 and Linf (CW: L2 only), and say which finds the smallest
perturbation (median over the correctly classified images; an image an attack does not
flip counts as inf). Writes ``OUT/minimal_norms.md`` (the demo's table,
:func:`scratchadv.demo.format_minimal_norms_table`) and ``.json``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scratchadv.cache import cached_fit, default_cache_dir   # noqa: E402
from scratchadv.checkpoint import load_model              # noqa: E402
from scratchadv.data import load_mnist                    # noqa: E402
from scratchadv.demo import (format_minimal_norms_table, format_shallow_table,  # noqa: E402
                             shallow_vs_deep_table)
from scratchadv.fileio import atomic_write, atomic_write_json  # noqa: E402

#: (table label, architecture, cache name), as the demo's section 4 names them
MODELS = (("softmax regression", "softmax-v1", "softmax"), ("MLP (1 hidden layer)", "mlp-v1", "mlp"),
          ("lecture CNN", "lecture-cnn-v1", "natural"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--cnn", default=None, help="model file of the CNN (default: trained through the cache)")
    ap.add_argument("--out", default="runs/shallow_vs_deep")
    ap.add_argument("--cache", default=None, help="model cache folder (default: the demo's)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--search-steps", type=int, default=10)
    ap.add_argument("--minimal", default=None,
                    help="comma-separated minimal-norm attacks to compare: pgd, deepfool, cw, fab")
    ap.add_argument("--minimal-n", type=int, default=200)
    ap.add_argument("--cw-steps", type=int, default=10000, help="CW Adam steps per binary-search step")
    ap.add_argument("--cw-binary-steps", type=int, default=9)
    args = ap.parse_args(argv)
    x_train, y_train, x_test, y_test = load_mnist()
    models, files = {}, {}
    for label, arch, name in MODELS:
        if arch == "lecture-cnn-v1" and args.cnn:
            params, files[label] = load_model(args.cnn, architecture=arch)[0], os.path.abspath(args.cnn)
        else:
            params, _, info = cached_fit(name, arch, x_train, y_train, x_val=x_test, y_val=y_test,
                                         epochs=args.epochs, seed=args.seed,
                                         cache=args.cache or default_cache_dir())
            files[label] = info["path"]
        models[label] = (params, arch)
    table, _ = shallow_vs_deep_table(models, x_test[:args.n], y_test[:args.n], x_val=x_test, y_val=y_test,
                                     search_steps=args.search_steps, steps=args.steps,
                                     seed=(args.seed, 4), verbose=True)   # the demo's stream: its numbers
    for row in table:
        row["file"] = files[row["model"]]
    text = "\n".join([f"Minimal adversarial perturbation (PGD-{args.steps} + bisection, "
                      f"{args.search_steps} halvings) on the correctly classified images among the "
                      f"first {args.n} MNIST test images.", "", *format_shallow_table(table)]) + "\n"
    with atomic_write(os.path.join(args.out, "shallow_vs_deep.md"), "w") as f:
        f.write(text)
    atomic_write_json(os.path.join(args.out, "shallow_vs_deep.json"), {"settings": vars(args), "rows": table})
    print(text)
    if args.minimal:
        minimal_table(models, x_test[:args.minimal_n], y_test[:args.minimal_n], args)
    return 0


def minimal_table(models, x, y, args):
    """Each minimal-norm attack on each model: median L2 and Linf, and which is smallest."""
    from scratchadv.evaluate.minimal import minimal_norms_by_model
    attacks = [a.strip() for a in args.minimal.split(",") if a.strip()]
    rows = minimal_norms_by_model(models, x, y, attacks=attacks, seed=args.seed,
                                  search_steps=args.search_steps, pgd_steps=args.steps,
                                  cw_steps=args.cw_steps, cw_binary_steps=args.cw_binary_steps,
                                  verbose=True)
    lines = [f"Median minimal perturbation over the correctly classified images among the first "
             f"{len(x)} MNIST test images (smaller is a stronger attack; an image not flipped "
             f"counts as inf). PGD: bisection ({args.search_steps} halvings) over PGD-{args.steps}; "
             f"CW: {args.cw_binary_steps} binary-search steps of {args.cw_steps} Adam steps; "
             "DeepFool: 50 steps, overshoot 0.02; FAB: 100 steps.", "",
             *format_minimal_norms_table(rows, attacks)]
    text = "\n".join(lines) + "\n"
    with atomic_write(os.path.join(args.out, "minimal_norms.md"), "w") as f:
        f.write(text)
    atomic_write_json(os.path.join(args.out, "minimal_norms.json"), {"settings": vars(args), "rows": rows})
    print(text)
    return rows


if __name__ == "__main__":
    sys.exit(main())

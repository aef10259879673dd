#!/usr/bin/env python
"""Are shallow nets harder to fool? Median minimal perturbation: softmax, MLP, CNN.

    python scripts/shallow_vs_deep.py [--cnn runs/natural.npz] [--out runs/shallow_vs_deep]
                                      [--epochs 10] [--seed 0] [--n 1000] [--steps 20]
                                      [--search-steps 10]

Trains softmax regression ("softmax-v1") and a one-hidden-layer MLP ("mlp-v1"), both
built from the same ops as the CNN, with :func:`scratchadv.train.fit` (RMSprop, batch
128, the same seed and epochs as ``scratchadv train``), and compares them with the
lecture CNN (``--cnn``; trained with ``scratchadv train`` if missing). For each model
and each of the first ``--n`` test images it classifies correctly, the smallest Linf and
L2 radius at which PGD (``--steps`` steps, random start, step 2.5 eps / steps) flips the
prediction is found by bisection (``--search-steps`` halvings of [0, 1] for Linf and
[0, 28] for L2). Writes ``OUT/shallow_vs_deep.md`` (the table) and ``.json``; model
files ``OUT/<architecture>.npz`` are reused if present.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np                                     # noqa: E402

from scratchadv.attacks import minimal_perturbation   # noqa: E402
from scratchadv.checkpoint import load_model, save_model  # noqa: E402
from scratchadv.data import load_mnist                 # noqa: E402
from scratchadv.fileio import atomic_write, atomic_write_json  # noqa: E402
from scratchadv.model import get_architecture         # noqa: E402
from scratchadv.train import fit                       # noqa: E402

from lecture_fake_images import ensure_model           # noqa: E402

SHALLOW = ("softmax-v1", "mlp-v1")


def shallow_model(name, out, data, epochs, seed):
    path = os.path.join(out, name + ".npz")
    arch = get_architecture(name)
    if os.path.exists(path):
        print(f"{path} exists: reused (delete it to retrain)", flush=True)
        return load_model(path, architecture=name)[0], arch, path
    x_train, y_train, x_test, y_test = data
    print(f"training {name} ({epochs} epochs, seed {seed})", flush=True)
    params, history = fit(arch.init_params(seed), x_train, y_train, x_val=x_test, y_val=y_test,
                          epochs=epochs, seed=seed, predict_fn=arch.predict, architecture=name)
    save_model(path, params, name, config={"epochs": epochs, "seed": seed, "defense": "none"},
               history=history)
    return params, arch, path


def measure(name, params, arch, x, y, args):
    pred = np.argmax(arch.predict(params, x), 1)
    ok = pred == y
    row = {"model": name, "clean_acc": float(ok.mean()), "n": int(len(y)), "attacked": int(ok.sum())}
    for norm in ("linf", "l2"):
        t0 = time.perf_counter()
        r = minimal_perturbation(params, x[ok], y[ok], norm=norm, steps=args.steps,
                                 search_steps=args.search_steps,
                                 rng=np.random.default_rng(args.seed), predict_fn=arch.predict,
                                 verbose=True)
        size = getattr(r, norm)          # the actual size of the adversarial found
        size = np.where(r.success, size, np.inf)
        row[f"median_{norm}"] = float(np.median(size))
        row[f"mean_{norm}"] = float(np.mean(size[np.isfinite(size)]))
        row[f"median_eps_{norm}"] = float(np.median(r.eps))
        row[f"never_flipped_{norm}"] = int(np.sum(~r.success))
        row[f"seconds_{norm}"] = time.perf_counter() - t0
        print(f"  {name} {norm}: median minimal perturbation {row[f'median_{norm}']:.4f} "
              f"({row[f'seconds_{norm}']:.0f}s)", flush=True)
    return row


def table(rows, args):
    lines = [f"Minimal adversarial perturbation (PGD-{args.steps} + bisection, "
             f"{args.search_steps} halvings) on the correctly classified images among the "
             f"first {args.n} MNIST test images.", "",
             "| model | clean acc | median Linf | median L2 | mean Linf | mean L2 | not flipped (Linf/L2) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['clean_acc']:.4f} | {r['median_linf']:.4f} | "
                     f"{r['median_l2']:.3f} | {r['mean_linf']:.4f} | {r['mean_l2']:.3f} | "
                     f"{r['never_flipped_linf']}/{r['never_flipped_l2']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--cnn", default="runs/natural.npz")
    ap.add_argument("--out", default="runs/shallow_vs_deep")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--search-steps", type=int, default=10)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = load_mnist()
    x, y = data[2][:args.n], data[3][:args.n]
    models = [shallow_model(name, args.out, data, args.epochs, args.seed) for name in SHALLOW]
    cnn, cnn_arch = ensure_model(args.cnn, args.seed)
    models.append((cnn, cnn_arch, args.cnn))
    rows = []
    for params, arch, path in models:
        print(f"{arch.name} ({path})", flush=True)
        rows.append(measure(arch.name, params, arch, x, y, args))
        rows[-1]["file"] = os.path.abspath(path)
    text = table(rows, args)
    with atomic_write(os.path.join(args.out, "shallow_vs_deep.md"), "w") as f:
        f.write(text)
    atomic_write_json(os.path.join(args.out, "shallow_vs_deep.json"),
                      {"settings": vars(args), "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

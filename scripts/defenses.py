#!/usr/bin/env python
"""Defenses experiment: natural vs PGD-trained vs gradient-regularized lecture CNN.

    python scripts/defenses.py [--out runs/defenses] [--epochs 10] [--seed 0] [--n 1000]
                               [--with-eps03] [--quick]
    python scripts/defenses.py lam-search [--lams 0,0.1,1,10,100] [--epochs 2] [--limit N]

The first form trains three models with the same seed, epochs, batch size and
optimizer (RMSprop, batch 128, all 60,000 training images, the test set as validation
data; no defense, ``pgd`` at eps 0.1 and ``gradreg``, each with its defaults) through
the model cache (:func:`scratchadv.cache.cached_fit`; by default the demo's, whose full
run trains the same three models), copies each to ``OUT/<model>.npz``, evaluates them
with the same attacks on the same first ``--n`` test images (``scratchadv evaluate``:
FGSM, PGD-40 Linf and PGD-40 L2 with 5 restarts, uniform noise, per-sample worst case,
sanity checks) into one report folder per model, ``OUT/report/<model>/``, and puts them side by side (``scratchadv compare``)
in ``OUT/report/comparison.{md,json,png}``.
``--with-eps03`` adds PGD training at eps 0.3 with an eps warm-up and clean mixing.
A model trained with the same settings is reused from the cache, and so is a model's
report made after it with the same settings; an interrupted training resumes from its
state file in the cache. Stage times go to ``OUT/timings.json``.

The second form is the search that chose the default ``lam`` of ``--defense gradreg``:
shortened runs (``--epochs``) for each lam, scored by clean accuracy and FGSM / PGD-40
accuracy at eps 0.1 on the first ``--n`` test images (``OUT/lam-search.{json,md}``).
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scratchadv.cache import cached_fit, default_cache_dir  # noqa: E402
from scratchadv.cli import main as cli              # noqa: E402
from scratchadv.data import load_mnist              # noqa: E402
from scratchadv.evaluate import DEFAULT_ATTACKS, DEFAULT_EPS  # noqa: E402
from scratchadv.fileio import atomic_write, atomic_write_json  # noqa: E402

#: (report name, cache name, defense, defense options); the cache names are the demo's
MODELS = [
    ("natural", "natural", "none", {}),
    ("pgd-eps0.1", "pgd-trained", "pgd", {"eps": 0.1}),
    ("gradreg", "gradreg", "gradreg", {}),
]
EPS03 = ("pgd-eps0.3", "pgd-eps0.3", "pgd", {"eps": 0.3, "eps_warmup": 4, "clean_frac": 0.25, "pgd_steps": 5})


def _run(argv):
    print("$ scratchadv " + " ".join(argv), flush=True)
    rc = cli(argv)
    if rc not in (0, None):
        raise SystemExit(f"scratchadv {argv[0]} failed with status {rc}")


def train(model, args, data, timings, limit=None):
    """The model from the cache (trained there if new), copied to OUT/<name>.npz -> that path.

    The copy keeps the cached file's time stamp, so a report made after it stays reusable.
    """
    name, cache_name, defense, options = model
    x_train, y_train, x_test, y_test = data
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    _, _, info = cached_fit(cache_name, "lecture-cnn-v1", x_train, y_train, x_val=x_test, y_val=y_test,
                            epochs=args.epochs, seed=args.seed, defense=defense, defense_options=options,
                            cache=args.cache or default_cache_dir(), verbose=False)
    if not info["reused"]:
        timings[f"train {name}"] = info["train_seconds"]
    path = os.path.join(args.out, name + ".npz")
    if not os.path.exists(path) or os.path.getmtime(path) != os.path.getmtime(info["path"]):
        with open(info["path"], "rb") as src, atomic_write(path) as dst:
            shutil.copyfileobj(src, dst)
        shutil.copystat(info["path"], path)
    return path


def _same_settings(report, args, eps):
    want = {"n": args.n, "steps": args.steps, "restarts": args.restarts, "seed": args.seed,
            "attacks": args.attacks.split(",") if args.attacks else list(DEFAULT_ATTACKS)}
    if any(report.get(k) != v for k, v in want.items()):
        return False
    return sorted(set(eps or DEFAULT_EPS) | {0.0, 0.5}) == report.get("eps")


def evaluate(name, path, args, timings):
    """`scratchadv evaluate` into OUT/report/<name>, reusing a report with the same settings."""
    from scratchadv.evaluate import load_report
    folder = os.path.join(args.out, "report", name)
    eps = [float(e) for e in args.eps.split(",")] if args.eps else None
    if os.path.exists(os.path.join(folder, "report.json")) and \
            os.path.getmtime(os.path.join(folder, "report.json")) > os.path.getmtime(path) and \
            _same_settings(load_report(folder), args, eps):
        print(f"{folder}: evaluated already with these settings: reused", flush=True)
        return folder
    t0 = time.perf_counter()
    _run(["evaluate", "--model", path, "--report", folder, "--n", str(args.n),
          "--restarts", str(args.restarts), "--steps", str(args.steps), "--seed", str(args.seed),
          "--quiet", *(["--eps", args.eps] if args.eps else []),
          *(["--attacks", args.attacks] if args.attacks else [])])
    timings[f"evaluate {name}"] = time.perf_counter() - t0
    return folder


def experiment(args):
    timings = {}
    t_all = time.perf_counter()
    models = MODELS + ([EPS03] if args.with_eps03 else [])
    data = load_mnist()
    paths = [train(model, args, data, timings) for model in models]
    folders = [evaluate(model[0], path, args, timings) for model, path in zip(models, paths)]
    _run(["compare", *folders, "--report", os.path.join(args.out, "report")])
    timings["total (this invocation)"] = time.perf_counter() - t_all
    tpath = os.path.join(args.out, "timings.json")
    if os.path.exists(tpath):            # keep the times of stages reused from earlier runs
        with open(tpath) as fh:
            timings = {**json.load(fh), **timings}
    atomic_write_json(tpath, timings)
    for k, v in timings.items():
        print(f"{k:>24}: {v / 60:6.1f} min")


def lam_search(args):
    import numpy as onp
    from scratchadv.checkpoint import load_model
    from scratchadv.evaluate import attack_correct
    from scratchadv.model import get_architecture

    data = load_mnist()
    x, y = data[2][:args.n], data[3][:args.n]
    rows = []
    for lam in [float(v) for v in args.lams.split(",")]:
        name = f"gradreg-lam{lam:g}-ep{args.epochs}" + (f"-limit{args.limit}" if args.limit else "")
        model = (name, name, "gradreg", {"lam": lam}) if lam > 0 else (name, name, "none", {})
        t0 = time.perf_counter()
        path = train(model, args, data, {}, args.limit)
        seconds = time.perf_counter() - t0
        params, meta = load_model(path)
        f = get_architecture(meta["architecture"]).predict
        clean = float(onp.mean(onp.argmax(f(params, x), 1) == y))
        fg, _ = attack_correct("fgsm", params, x, y, eps=0.1, predict_fn=f)
        pg, _ = attack_correct("pgd", params, x, y, eps=0.1, steps=40, restarts=1, predict_fn=f)
        rows.append({"lam": lam, "epochs": args.epochs, "limit": args.limit, "clean": clean, "fgsm_0.1": float(fg.mean()),
                     "pgd40_0.1": float(pg.mean()), "train_seconds": seconds})
        print(rows[-1], flush=True)
    atomic_write_json(os.path.join(args.out, "lam-search.json"), rows)
    md = ["| lam | epochs | train images | clean | FGSM eps 0.1 | PGD-40 eps 0.1 | train s |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['lam']:g} | {r['epochs']} | {r['limit'] or 60000} | {100 * r['clean']:.1f} | "
           f"{100 * r['fgsm_0.1']:.1f} | {100 * r['pgd40_0.1']:.1f} | {r['train_seconds']:.0f} |"
           for r in rows]
    with atomic_write(os.path.join(args.out, "lam-search.md")) as fh:
        fh.write(("\n".join(md) + "\n").encode())
    print("\n".join(md))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="experiment", choices=["experiment", "lam-search"])
    p.add_argument("--out", default="runs/defenses", help="folder for models and reports")
    p.add_argument("--cache", default=None, help="model cache folder (default: the demo's)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; lam-search 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1000, help="evaluate on the first N test images")
    p.add_argument("--eps", default=None, help="comma-separated eps grid (default: evaluate's)")
    p.add_argument("--attacks", default=None, help="comma-separated attacks (default: evaluate's)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--restarts", type=int, default=5)
    p.add_argument("--with-eps03", action="store_true", help="also PGD-train at eps 0.3 (warm-up + clean mixing)")
    p.add_argument("--lams", default="0,0.1,1,10,100", help="lam-search: values to try (0 = natural)")
    p.add_argument("--limit", type=int, default=None, help="lam-search: train on the first N images only")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.mode == "lam-search" else 10
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    (lam_search if args.mode == "lam-search" else experiment)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

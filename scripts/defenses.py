#!/usr/bin/env python
"""Defenses experiment: the lecture CNN under six defenses (and one variant), one table graded by AutoAttack.

    python scripts/defenses.py [--out runs/defenses] [--n 1000] [--only NAME,...] [--readme README.md]
    python scripts/defenses.py table [--out runs/defenses] [--readme README.md]
    python scripts/defenses.py lam-search [--lams 0,0.1,1,10,100] [--epochs 2] [--limit N]
    python scripts/defenses.py cost [--batches 20]

The first form makes each model of :data:`MODELS` with its README command
(``scratchadv train ... --epochs 10 --seed 0 --out OUT/<name>.npz``; a model file whose
stored config matches is reused, an interrupted training resumes from its state file),
then evaluates it on the first ``--n`` test images with
``scratchadv evaluate --suite autoattack --attacks fgsm,pgd,autoattack --restarts 5``
(FGSM, PGD-40 with 5 restarts, the standard AutoAttack; per-image worst case; sanity
checks; resumable: an interrupted evaluation continues where it stopped) at the eps of
:data:`MODELS`, into ``OUT/report/<name>/``. It writes the table (``OUT/defenses.md``), its
numbers (``OUT/defenses.json``: no per-image masks, small enough to keep beside the
README) and stage times (``OUT/timings.json``); ``--readme`` replaces the table between
the README's ``<!-- defenses-table -->`` markers with the new one. ``table`` rebuilds the
table from the reports alone.

``cost`` times one training batch of each defense in one process, the defenses taking turns
(so a busy machine slows them alike): natural, gradient regularization, PGD-7 and PGD-5
training, TRADES with 7, 5 and the authors' 40 steps; median seconds per batch of 128 and
the ratio to natural training (``OUT/cost.json``).

The lam-search form is the search that chose the default ``lam`` of ``--defense gradreg``:
shortened runs (``--epochs``) for each lam through the model cache, scored by clean
accuracy and FGSM / PGD-40 accuracy at eps 0.1 on the first ``--n`` test images
(``OUT/lam-search.{json,md}``).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scratchadv.cache import cached_fit, default_cache_dir  # noqa: E402
from scratchadv.cli import main as cli              # noqa: E402
from scratchadv.data import load_mnist              # noqa: E402
from scratchadv.fileio import (atomic_write, atomic_write_json, replace_marked_block,  # noqa: E402
                               write_marked_block)

#: (name, label, `scratchadv train` options, eps evaluated); every model 10 epochs (unless
#: its options say otherwise), seed 0
MODELS = [
    ("natural", "natural", [], [0.1, 0.2, 0.3]),
    ("pgd-eps0.1", "PGD-trained, eps 0.1", ["--defense", "pgd", "--eps", "0.1"], [0.1, 0.3]),
    ("gradreg", "gradient-regularized", ["--defense", "gradreg"], [0.1, 0.2, 0.3]),
    ("trades-eps0.1", "TRADES, eps 0.1", ["--defense", "trades", "--eps", "0.1"], [0.1, 0.3]),
    ("pgd-eps0.3", "PGD-trained, eps 0.3", ["--defense", "pgd", "--eps", "0.3"], [0.1, 0.3]),
    ("trades-eps0.3", "TRADES, eps 0.3", ["--defense", "trades", "--eps", "0.3"], [0.1, 0.3]),
    ("pgd-eps0.3-steps10", "PGD-trained, eps 0.3, 10 steps",
     ["--defense", "pgd", "--eps", "0.3", "--pgd-steps", "10"], [0.1, 0.3]),
    ("pgd-eps0.3-steps10-epochs20", "PGD-trained, eps 0.3, 10 steps, 20 epochs",
     ["--defense", "pgd", "--eps", "0.3", "--pgd-steps", "10", "--epochs", "20"], [0.1, 0.3]),
]
ATTACKS = "fgsm,pgd,autoattack"
MARK_BEGIN, MARK_END = "<!-- defenses-table -->", "<!-- /defenses-table -->"


def _run(argv):
    print("$ scratchadv " + " ".join(argv), flush=True)
    rc = cli(argv)
    if rc not in (0, None):
        raise SystemExit(f"scratchadv {argv[0]} failed with status {rc}")


def train_command(options, args, path):
    """The model's `scratchadv train` argv; its own ``--epochs`` (in ``options``) wins."""
    epochs = [] if "--epochs" in options else ["--epochs", str(args.epochs)]
    return ["train", *options, *epochs, "--seed", str(args.seed), "--out", path, "--quiet"]


def _same_model(path, options, args):
    """True if the model file at ``path`` was trained by this command (its stored config)."""
    from scratchadv.checkpoint import load_model
    if not os.path.exists(path):
        return False
    _, meta = load_model(path)
    c = meta.get("config", {})
    want = {"epochs": args.epochs, "seed": args.seed, "defense": "none"}
    for flag, value in zip(options[::2], options[1::2]):     # "--pgd-steps 10" -> pgd_steps: "10"
        want[flag[2:].replace("-", "_")] = value
    return all(str(c.get(k)) == str(v) for k, v in want.items())


def train(model, args, timings):
    """OUT/<name>.npz made by the model's README command (reused if its config matches)."""
    name, _, options, _ = model
    path = os.path.join(args.out, name + ".npz")
    if _same_model(path, options, args):
        print(f"{path}: trained already by the same command: reused", flush=True)
        return path
    t0 = time.perf_counter()
    state = path[:-len(".npz")] + ".state.npz"
    _run(train_command(options, args, path) + (["--resume"] if os.path.exists(state) else []))
    timings[f"train {name}"] = time.perf_counter() - t0
    return path


def evaluate_command(path, folder, eps, args):
    return ["evaluate", "--model", path, "--report", folder, "--n", str(args.n),
            "--suite", "autoattack", "--attacks", ATTACKS, "--eps", ",".join(f"{e:g}" for e in eps),
            "--restarts", str(args.restarts), "--steps", str(args.steps), "--seed", str(args.seed),
            "--workers", str(args.workers), "--quiet", "--resume"]


def _same_settings(report, eps, args):
    want = {"n": args.n, "steps": args.steps, "restarts": args.restarts, "seed": args.seed,
            "attacks": ATTACKS.split(",")}
    return all(report.get(k) == v for k, v in want.items()) and \
        sorted(set(eps) | {0.0, 0.5}) == report.get("eps")


def evaluate(model, path, args, timings):
    """`scratchadv evaluate` into OUT/report/<name>, reusing a report with the same settings."""
    from scratchadv.evaluate import load_report
    name, _, _, eps = model
    folder = os.path.join(args.out, "report", name)
    rpath = os.path.join(folder, "report.json")
    if os.path.exists(rpath) and os.path.getmtime(rpath) > os.path.getmtime(path) and \
            _same_settings(load_report(folder), eps, args):
        print(f"{folder}: evaluated already with these settings: reused", flush=True)
        return folder
    t0 = time.perf_counter()
    _run(evaluate_command(path, folder, eps, args))
    timings[f"evaluate {name}"] = time.perf_counter() - t0
    return folder


def summarize(model, report, epochs=10, seed=0):
    """The table's numbers of one model's report (accuracies as fractions); ``epochs`` and
    ``seed``: those of its training command."""
    name, label, options, _ = model
    out = {"name": name, "label": label, "options": " ".join(options),
           "command": " ".join(["scratchadv", *train_command(
               options, argparse.Namespace(epochs=epochs, seed=seed), f"runs/defenses/{name}.npz")[:-1]]),
           "n": report["n"], "clean": report["clean_accuracy"],
        "workers": report.get("workers", 1),
        "sanity_passed": all(c["passed"] for c in report["sanity"]),
        "sanity_failed": [c["name"] for c in report["sanity"] if not c["passed"]], "eps": {}}
    for r in report["results"]:
        if r["eps"] in (0.0, 0.5):
            continue
        aa = r.get("autoattack", {})
        out["eps"][f"{r['eps']:g}"] = {
            "fgsm": r["accuracy"]["fgsm"], "pgd": r["accuracy"]["pgd"],
            "autoattack": r["accuracy"]["autoattack"], "worst_case": r["accuracy"]["worst_case"],
            "autoattack_after": r.get("autoattack_after", {}),
            "square_warning": aa.get("square_warning"), "autoattack_seconds": aa.get("seconds")}
    return out


def _pct(v):
    return "—" if v is None else f"{100 * v:.1f}"


def format_table(rows):
    """The README table: one line per model, FGSM / PGD-40 x5 / AutoAttack at 0.1 and 0.3."""
    head = ("| model | clean | FGSM 0.1 | PGD 0.1 | AA 0.1 | FGSM 0.3 | PGD 0.3 | AA 0.3 | sanity checks |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for r in rows:
        cells = [_pct(r["eps"].get(e, {}).get(a)) for e in ("0.1", "0.3") for a in ("fgsm", "pgd", "autoattack")]
        sanity = "all pass" if r["sanity_passed"] else "failed: " + ", ".join(r["sanity_failed"])
        lines.append(f"| {r['label']} (`{r['options'] or 'no options'}`) | "
                     f"{_pct(r['clean'])} | " + " | ".join(cells) + f" | {sanity} |")
    extra = [r for r in rows if "0.2" in r["eps"]]
    text = head + "\n".join(lines) + "\n"
    if extra:
        text += ("\n| model | FGSM 0.2 | PGD 0.2 | AA 0.2 | AA 0.2: after APGD-CE / APGD-T / FAB-T / Square |\n"
                 "| --- | --- | --- | --- | --- |\n")
        for r in extra:
            e = r["eps"]["0.2"]
            after = " / ".join(_pct(e["autoattack_after"].get(k)) for k in ("apgd-ce", "apgd-t", "fab-t", "square"))
            text += f"| {r['label']} | {_pct(e['fgsm'])} | {_pct(e['pgd'])} | {_pct(e['autoattack'])} | {after} |\n"
    return text


def replace_block(text, block):
    """``text`` with the part between the defenses-table markers replaced by ``block``."""
    return replace_marked_block(text, MARK_BEGIN, MARK_END, block, where="README")


def write_table(args, models):
    from scratchadv.evaluate import load_report
    rows = []
    for m in models:
        folder = os.path.join(args.out, "report", m[0])
        if os.path.exists(os.path.join(folder, "report.json")):
            rows.append(summarize(m, load_report(folder), args.epochs, args.seed))
    table = format_table(rows)
    atomic_write_json(os.path.join(args.out, "defenses.json"), rows)
    with atomic_write(os.path.join(args.out, "defenses.md")) as fh:
        fh.write(table.encode())
    print(table)
    if args.readme:
        write_marked_block(args.readme, MARK_BEGIN, MARK_END, table)
        print(f"{args.readme}: defenses table replaced", flush=True)


def _models(args):
    if not args.only:
        return MODELS
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in [m[0] for m in MODELS]]
    if unknown:
        raise SystemExit(f"defenses: --only: unknown model(s) {unknown}; expected names from "
                         f"{[m[0] for m in MODELS]}")
    return [m for m in MODELS if m[0] in names]


def experiment(args):
    timings = {}
    t_all = time.perf_counter()
    models = _models(args)
    for model in models:
        path = train(model, args, timings)
        evaluate(model, path, args, timings)
    timings["total (this invocation)"] = time.perf_counter() - t_all
    tpath = os.path.join(args.out, "timings.json")
    if os.path.exists(tpath):            # keep the times of stages reused from earlier runs
        with open(tpath) as fh:
            timings = {**json.load(fh), **timings}
    atomic_write_json(tpath, timings)
    for k, v in timings.items():
        print(f"{k:>28}: {v / 60:6.1f} min")
    write_table(args, MODELS)


def _cached(name, defense, options, args, data, limit=None):
    """lam-search: a shortened model through the model cache -> its path."""
    x_train, y_train, x_test, y_test = data
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    _, _, info = cached_fit(name, "lecture-cnn-v1", x_train, y_train, x_val=x_test, y_val=y_test,
                            epochs=args.epochs, seed=args.seed, defense=defense, defense_options=options,
                            cache=args.cache or default_cache_dir(), verbose=False)
    return info["path"]


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
        t0 = time.perf_counter()
        path = _cached(name, "gradreg" if lam > 0 else "none", {"lam": lam} if lam > 0 else {},
                       args, data, args.limit)
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


#: cost: (label, defense, options) timed per batch
COST = [("natural", "none", {}), ("gradreg (lam 0.5)", "gradreg", {}),
        ("PGD-7, eps 0.1", "pgd", {"eps": 0.1}), ("PGD-5, eps 0.3 (after warm-up)", "pgd", {"eps": 0.3, "eps_warmup": 0}),
        ("TRADES-7, eps 0.1", "trades", {"eps": 0.1}),
        ("TRADES-5, eps 0.3 (after warm-up)", "trades", {"eps": 0.3, "eps_warmup": 0}),
        ("TRADES-40, eps 0.3 (the authors' steps)", "trades", {"eps": 0.3, "pgd_steps": 40, "eps_warmup": 0})]


def cost(args):
    """Seconds per training batch of each defense (median over --batches rounds): the batch
    transform (the attack) and the gradient of the training loss, as `fit` runs them."""
    import numpy as onp
    from autograd import grad
    from scratchadv.defenses import make_defense
    from scratchadv.losses import loss
    from scratchadv.model import init_params
    x, y = load_mnist()[:2]
    xb, yb = x[:128], y[:128]
    params = init_params(args.seed)
    steps = {}
    for label, defense, options in COST:
        loss_fn, transform, _ = make_defense(defense, epochs=1, **options)
        steps[label] = (grad(loss_fn or loss), transform)
    times = {label: [] for label, _, _ in COST}
    for r in range(args.batches):
        for label, _, _ in (COST if r % 2 == 0 else COST[::-1]):
            g, transform = steps[label]
            rng = onp.random.default_rng([args.seed, r])
            t0 = time.perf_counter()
            xt, yt = transform(params, xb, yb, rng, 0) if transform else (xb, yb)
            g(params, xt, yt)
            times[label].append(time.perf_counter() - t0)
    base = float(onp.median(times["natural"]))
    rows = [{"defense": label, "seconds_per_batch": float(onp.median(t)),
             "times_natural": float(onp.median(t)) / base} for label, t in times.items()]
    atomic_write_json(os.path.join(args.out, "cost.json"), rows)
    for r in rows:
        print(f"{r['defense']:>40}: {1000 * r['seconds_per_batch']:8.1f} ms per batch of 128, "
              f"{r['times_natural']:5.1f} x natural")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="experiment", choices=["experiment", "table", "lam-search", "cost"])
    p.add_argument("--out", default="runs/defenses", help="folder for models and reports")
    p.add_argument("--only", default=None, help="comma-separated model names (default: all six)")
    p.add_argument("--readme", default=None, help="replace the defenses table in this README")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; lam-search 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1000, help="evaluate on the first N test images")
    p.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument("--restarts", type=int, default=5, help="PGD restarts (default 5)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the evaluations (`scratchadv evaluate --workers`, default 1); "
                        "a report made with another count is reused: the count only cuts the "
                        "attacks' random draws differently (each report records its own)")
    p.add_argument("--cache", default=None, help="lam-search: model cache folder (default: the demo's)")
    p.add_argument("--lams", default="0,0.1,1,10,100", help="lam-search: values to try (0 = natural)")
    p.add_argument("--limit", type=int, default=None, help="lam-search: train on the first N images only")
    p.add_argument("--batches", type=int, default=20, help="cost: rounds timed (default 20)")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.mode == "lam-search" else 10
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    {"experiment": experiment, "table": lambda a: write_table(a, MODELS), "lam-search": lam_search,
     "cost": cost}[args.mode](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

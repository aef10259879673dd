#!/usr/bin/env python
"""scratchadv's AutoAttack against the original (fra31/auto-attack, packaged as
``pyautoattack==0.2.0``) on the same weights and the same images.

    python scripts/compare_autoattack.py --model runs/natural.npz --n 200 --eps 0.1
        [--norm linf|l2] [--seed 0] [--batch-size 500] [--threads N] [--which ours,theirs] [--json J]
    python scripts/compare_autoattack.py --table J1,J2,... [--readme README.md]

Both run the standard version (APGD-CE, APGD-T, FAB-T, Square) on the first N test
images; the original runs on the model's PyTorch twin (``scratchadv.torch_model.to_torch``,
float32). Reported per implementation: clean accuracy, the robust accuracy left after each
attack (the original's numbers are read from its log, as it prints them), the final robust
accuracy recomputed from the returned images by our own forward pass, and the time.
Random starts differ between the two, so agreement is statistical (the test suite asks
for 1.5 points per component on 500 images, and the issue 1.0 point for the ensemble on
1000). Exit status 0; 2 on bad input or a missing reference library.

``--ours-from REPORT`` takes our side from a report folder of ``scratchadv evaluate
--suite autoattack`` on the same model and first N images instead of running it again
(the same ensemble; its seed is derived from the evaluation's). ``--which ours`` or
``--which theirs`` runs one side (the two can run side by side, one
thread each, into two JSON files); ``--table`` merges such files by (model, eps) into the
README's table, and ``--readme`` replaces the table between the README's
``<!-- autoattack-table -->`` markers with it.
"""
import argparse
import logging
import os
import re
import sys
import time

import numpy as onp

_HERE = os.path.dirname(os.path.abspath(__file__))
# this folder holds profile.py, which would shadow the standard library's profile module
# (PyTorch imports cProfile): keep the folder off the import path, the project root on it
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, os.pardir))

from scratchadv.attacks.autoattack import STANDARD, autoattack  # noqa: E402
from scratchadv.checkpoint import load_model  # noqa: E402
from scratchadv.data import load_mnist  # noqa: E402
from scratchadv.model import get_architecture, predict_batched  # noqa: E402

_AFTER = re.compile(r"robust accuracy after ([A-Z-]+): ([0-9.]+)%")


def ours(params, arch, x, y, *, eps, norm, seed, batch_size):
    t0 = time.perf_counter()
    res = autoattack(params, x, y, eps=eps, norm=norm, seed=seed, predict_fn=arch.predict,
                     batch_size=batch_size)
    d = res.details
    labels = predict_batched(params, res.x_adv, predict_fn=arch.predict).argmax(1)
    return {"clean": d["clean_accuracy"], "after": d["after"], "fooled": d["fooled"],
            "robust": float(onp.mean(labels == y)), "square_warning": d["square_warning"],
            "checks": d["checks"], "seconds_per_attack": d["seconds"],
            "seconds": time.perf_counter() - t0}


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def theirs(params, arch, x, y, *, eps, norm, seed, batch_size):
    import torch
    from pyautoattack import AutoAttack
    from scratchadv.torch_model import to_torch
    module = to_torch(params, arch.name, dtype=onp.float32)
    logger = logging.getLogger("auto-attack")
    capture = _Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        t0 = time.perf_counter()
        aa = AutoAttack(module, eps=eps, norm={"linf": "Linf", "l2": "L2"}[norm], seed=seed,
                        version="standard")
        x_adv, _ = aa.run_standard_evaluation(torch.from_numpy(x), torch.from_numpy(y),
                                              batch_size=batch_size)
        seconds = time.perf_counter() - t0
    finally:
        logger.removeHandler(capture)
    after = {}
    for line in capture.lines:
        m = _AFTER.search(line)
        if m:
            after[m.group(1).lower()] = float(m.group(2)) / 100
    xa = x_adv.detach().cpu().numpy().astype(x.dtype)
    labels = predict_batched(params, xa, predict_fn=arch.predict).argmax(1)
    clean = float(onp.mean(predict_batched(params, x, predict_fn=arch.predict).argmax(1) == y))
    return {"clean": clean, "after": after, "robust": float(onp.mean(labels == y)),
            "seconds": seconds, "log": capture.lines}


def ours_from_report(folder, eps):
    """Our side read from a `scratchadv evaluate` report (AutoAttack at ``eps``)."""
    from scratchadv.evaluate import load_report
    report = load_report(folder)
    rows = [r for r in report["results"] if abs(r["eps"] - eps) < 1e-12 and "autoattack_after" in r]
    if not rows:
        raise ValueError(f"{folder}: no AutoAttack result at eps {eps:g} (evaluated: {report['eps']})")
    r = rows[0]
    return {"clean": report["clean_accuracy"], "after": r["autoattack_after"],
            "fooled": r["autoattack"]["fooled"], "robust": r["accuracy"]["autoattack"],
            "square_warning": r["autoattack"]["square_warning"], "checks": r["autoattack"]["checks"],
            "seconds_per_attack": r["autoattack"]["seconds"],
            "seconds": float(sum(r["autoattack"]["seconds"].values())), "report": os.path.abspath(folder),
            "n": report["n"]}


MARK_BEGIN, MARK_END = "<!-- autoattack-table -->", "<!-- /autoattack-table -->"
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


def merge(results):
    """JSON results of single runs -> {(model name, eps): merged run}, in the order given."""
    out = {}
    for r in results:
        key = (os.path.splitext(os.path.basename(r["model"]))[0], r["eps"])
        m = out.setdefault(key, {k: r[k] for k in ("model", "n", "eps", "norm", "seed")})
        if m["n"] != r["n"] or m["norm"] != r["norm"]:
            raise ValueError(f"{key}: results on different images or norms cannot be merged")
        m.update({w: r[w] for w in ("ours", "theirs") if w in r})
    return out


def format_table(merged):
    """Markdown: per model and eps, both implementations' accuracy after each attack and time."""
    lines = ["| model | eps | images | implementation | clean | after APGD-CE | after APGD-T | after FAB-T "
             "| after Square | robust (ours re-checked) | difference | time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (name, eps), m in merged.items():
        n = m["n"]
        for w, label in (("ours", "scratchadv"), ("theirs", "original AutoAttack")):
            if w not in m:
                continue
            r = m[w]
            after = [r["after"].get(c) for c in COMPONENTS]
            cells = ["—" if v is None else f"{100 * v:.1f} ({round(v * n)})" for v in after]
            diff = ""
            if w == "ours" and "theirs" in m:
                diff = f"{100 * (m['ours']['robust'] - m['theirs']['robust']):+.1f}"
            lines.append(f"| {name} | {eps:g} | {n} | {label} | {100 * r['clean']:.1f} | " + " | ".join(cells)
                         + f" | {100 * r['robust']:.1f} | {diff} | {r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def write_table(paths, readme=None):
    import json
    results = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            results.append(json.load(f))
    table = format_table(merge(results))
    print(table)
    if readme:
        from scratchadv.fileio import write_marked_block
        write_marked_block(readme, MARK_BEGIN, MARK_END, table)
        print(f"{readme}: AutoAttack table replaced")
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a model file written by `scratchadv train`")
    ap.add_argument("--n", type=int, default=200, help="first N test images (default 200)")
    ap.add_argument("--eps", type=float, default=0.1, help="radius (default 0.1)")
    ap.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None, help="BLAS and torch threads")
    ap.add_argument("--which", default="ours,theirs", help="ours, theirs or both (default)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    ap.add_argument("--ours-from", default=None, metavar="REPORT",
                    help="take our side from this `scratchadv evaluate --suite autoattack` report folder")
    ap.add_argument("--table", default=None, help="comma-separated JSON files of earlier runs: print their table")
    ap.add_argument("--readme", default=None, help="with --table: replace the table in this README")
    a = ap.parse_args(argv)
    if a.table:
        try:
            write_table([p for p in a.table.split(",") if p], a.readme)
        except (OSError, ValueError, KeyError) as e:
            print(f"compare_autoattack: error: {e}", file=sys.stderr)
            return 2
        return 0
    if not a.model:
        print("compare_autoattack: error: --model is required (or --table)", file=sys.stderr)
        return 2
    if a.n < 1 or a.eps < 0:
        print("compare_autoattack: error: --n must be >= 1 and --eps >= 0", file=sys.stderr)
        return 2
    which = [w.strip() for w in a.which.split(",") if w.strip()]
    if a.threads:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(a.threads)
        except ImportError:
            pass
        import torch
        torch.set_num_threads(a.threads)
    if "theirs" in which:
        try:
            import pyautoattack  # noqa: F401
        except ImportError:
            print("compare_autoattack: the original AutoAttack is not installed "
                  "(pip install pyautoattack==0.2.0)", file=sys.stderr)
            return 2
    params, meta = load_model(a.model)
    arch = get_architecture(meta["architecture"])
    _, _, x_test, y_test = load_mnist(a.data)
    x, y = x_test[:a.n], y_test[:a.n]
    kw = dict(eps=a.eps, norm=a.norm, seed=a.seed, batch_size=a.batch_size)
    out = {"model": os.path.abspath(a.model), "n": a.n, "eps": a.eps, "norm": a.norm, "seed": a.seed,
           "attacks": list(STANDARD)}
    if a.ours_from:
        try:
            out["ours"] = ours_from_report(a.ours_from, a.eps)
        except (OSError, ValueError, KeyError) as e:
            print(f"compare_autoattack: error: --ours-from: {e}", file=sys.stderr)
            return 2
        if out["ours"].pop("n") != a.n:
            print(f"compare_autoattack: error: --ours-from: the report is on a different number of "
                  f"images than --n {a.n}", file=sys.stderr)
            return 2
        which = [w for w in which if w != "ours"]
    for w, f in (("ours", ours), ("theirs", theirs)):
        if w in which:
            out[w] = f(params, arch, x, y, **kw)
    for w in ("ours", "theirs"):
        if w in out:
            r = out[w]
            print(f"{w:>6}: clean {r['clean']:.4f}, " + ", ".join(
                f"after {k} {v:.4f}" for k, v in r["after"].items())
                + f"; robust {r['robust']:.4f} ({r['seconds']:.0f} s)", flush=True)
    if "ours" in out and "theirs" in out:
        out["difference_points"] = 100 * (out["ours"]["robust"] - out["theirs"]["robust"])
        out["time_ratio"] = out["ours"]["seconds"] / out["theirs"]["seconds"]
        print(f"robust accuracy ours - original: {out['difference_points']:+.1f} points; "
              f"time ratio ours / original {out['time_ratio']:.2f}")
    if a.json:
        from scratchadv.fileio import atomic_write_json
        atomic_write_json(a.json, {k: v for k, v in out.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

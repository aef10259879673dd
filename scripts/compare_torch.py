#!/usr/bin/env python
"""Cross-framework check: the same network, weights and batch in scratchadv and PyTorch.

This is ``scratchadv verify --against torch`` with this script's historical options:
the quantities, the error definition, the targets and the handling of pooling ties
decided by rounding are those of :mod:`scratchadv.verify` (read its module notes),
here always against PyTorch. The functions below are that module's, bound to torch.

Usage::

    python scripts/compare_torch.py                       # random weights, MNIST + noise
    python scripts/compare_torch.py --model runs/natural.npz --json runs/compare_torch.json

Exit status 0 when every quantity is within its target, 1 otherwise, 2 on bad input.
"""
import argparse
import functools
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# this folder holds profile.py, which would shadow the standard library's profile module
# (PyTorch imports cProfile): keep the folder off the import path, the project root on it
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, os.pardir))

from scratchadv import verify as _verify  # noqa: E402
from scratchadv.model import get_architecture  # noqa: E402
from scratchadv.verify import (TARGETS, affected_pixels, errors, image_sets,  # noqa: E402,F401
                               our_pool_inputs, ours, receptive_fields, summary, worst)

theirs = functools.partial(_verify.theirs, framework="torch")
compare = functools.partial(_verify.compare, framework="torch")
format_rows = functools.partial(_verify.format_rows, framework="torch")
run = functools.partial(_verify.run, framework="torch")


def routing(ours_pool_inputs, torch_pool_inputs, n):
    """:func:`scratchadv.verify.routing` against PyTorch (first-max rule on both sides)."""
    return _verify.routing(ours_pool_inputs, torch_pool_inputs, n, framework="torch")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[],
                    help="a model file to check (repeatable); random weights are always checked")
    ap.add_argument("--architecture", default="lecture-cnn-v1",
                    help="architecture of the random weights (default lecture-cnn-v1)")
    ap.add_argument("--no-random", action="store_true", help="skip the random weights")
    ap.add_argument("--n", type=int, default=16, help="images per batch (default 16)")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights and images (default 0)")
    ap.add_argument("--images", default="mnist,random",
                    help="comma-separated: mnist (real digits, exact ties), random (noise)")
    ap.add_argument("--data", default=None, help="folder with the MNIST files")
    ap.add_argument("--dtypes", default="float64,float32", help="default float64,float32")
    ap.add_argument("--lam", type=float, default=1.0, help="gradient-penalty weight (default 1)")
    ap.add_argument("--eps", type=float, default=0.3, help="PGD radius (default 0.3)")
    ap.add_argument("--step-size", type=float, default=0.01, help="PGD step size (default 0.01)")
    ap.add_argument("--json", default=None, help="write the full report as JSON here ('-': stdout)")
    args = ap.parse_args(argv)

    try:
        from scratchadv.torch_model import require_torch
        torch = require_torch()
    except ImportError as e:
        print(f"compare_torch: {e}", file=sys.stderr)
        return 2
    which = tuple(s.strip() for s in args.images.split(",") if s.strip())
    dtypes = tuple(s.strip() for s in args.dtypes.split(",") if s.strip())
    bad = [w for w in which if w not in ("mnist", "random")] + \
        [d for d in dtypes if d not in TARGETS]
    if bad or not which or not dtypes or args.n < 1:
        print(f"compare_torch: error: bad --images/--dtypes/--n value(s) {bad or args.n}",
              file=sys.stderr)
        return 2
    if args.json and args.json != "-":
        from scratchadv.fileio import check_writable
        check_writable(args.json, "--json")
    cases = {}
    if not args.no_random:
        arch = get_architecture(args.architecture)
        cases[f"random weights (seed {args.seed})"] = (arch.init_params(args.seed), arch.name)
    from scratchadv.checkpoint import CheckpointError, load_model
    for path in args.model:
        try:
            params, meta = load_model(path)
        except CheckpointError as e:
            print(f"compare_torch: error: {e}", file=sys.stderr)
            return 2
        cases[path] = (params, meta["architecture"])
    if not cases:
        print("compare_torch: error: nothing to compare (--no-random and no --model)", file=sys.stderr)
        return 2

    if args.json != "-":
        print(f"scratchadv vs PyTorch {torch.__version__}; "
              "rel err = max|ours - torch| / max|torch|")
    report, ok = run(cases, image_sets(args.n, args.seed, args.data, which), lam=args.lam,
                     eps=args.eps, step_size=args.step_size, dtypes=dtypes, verbose=args.json != "-")
    worst_ = summary(report)
    if args.json != "-":
        print("\nworst rel err over all cases:")
        for dt, groups in worst_.items():
            print(f"  {dt} (target {TARGETS[dt]:g}): " +
                  ", ".join(f"{g} {v:.1e}" if isinstance(v, float) else f"{g} {v}"
                            for g, v in groups.items()))
        print("all within target" if ok else "SOME QUANTITIES OVER TARGET")
    doc = {"torch_version": torch.__version__, "passed": ok, "targets": TARGETS,
           "rel_err_definition": "max|ours - torch| / max|torch|", "lam": args.lam,
           "eps": args.eps, "step_size": args.step_size, "worst": worst_, "cases": report}
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    elif args.json:
        from scratchadv.fileio import atomic_write_json
        atomic_write_json(args.json, doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Where the time goes: per primitive and per pass, time and bytes, for four workloads.

    python scripts/profile.py [--threads 1] [--quick] [--model M] [--only epoch,pgd,dbp,autoattack]
                              [--json runs/profile.json]

Workloads (float32, the lecture CNN):

==========  ==========================================================================
epoch       one training epoch, ``train.fit(epochs=1)``: RMSprop, batch 128, 60,000
            images (``--quick``: 10,000)
pgd         ``attacks.pgd`` Linf eps 0.3, 40 steps of 0.01, random start, 1000 test images
            (``--quick``: 200)
dbp         20 steps of the gradient-regularized loss's weight gradient (double
            backpropagation, lam 0.5) on batches of 128
autoattack  the standard AutoAttack, Linf eps 0.1, on the first 100 test images
            (``--quick``: 20) of ``--model`` (skipped without one: on random weights
            every image is misclassified and nothing would be attacked)
==========  ==========================================================================

Each workload runs twice: once plainly (its wall time) and once under a profile hook
(``sys.setprofile``) that times every call of a function of ``scratchadv/ops.py`` and
``scratchadv/optim.py`` by its *self* time (time inside it, less the tracked functions it
calls) and adds up the bytes of the arrays it receives and returns. Those functions are
the primitives (conv2d and its two adjoints, the fused conv + bias + pooling block
``conv_pool``, the pooling select/scatter/gather, relu),
their compositions (dense, log_softmax, cross-entropy) and the optimizer's update; a
primitive's time is NumPy's C code (BLAS and element-wise passes), so the hook's own cost,
paid per Python-level call, barely touches it. What no tracked function accounts for
("everything else": autograd's tape, the attacks' and the trainer's own array work,
Python) is the plain wall time minus the tracked self times.

The pass of each primitive: ``conv2d``, ``conv_pool`` (with its chunk loop
``_conv_chunks``), ``_max_and_masks``, ``_pool_select`` and ``relu`` run in the forward pass; ``conv2d_input_grad``, ``conv2d_weight_grad`` and
``_pool_scatter`` in the backward pass (and, in double backprop, in the backward pass of
the backward pass, with ``_pool_gather``). Bytes are those of the arguments and results
(a lower bound of the memory traffic: temporaries inside are not counted); bytes / self
time is the throughput each reached.
"""
import argparse
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)

WORKLOADS = ("epoch", "pgd", "dbp", "autoattack")
PASS = {"conv2d": "forward", "_max_and_masks": "forward", "_pool_select": "forward", "relu": "forward",
        "dense": "forward", "flatten": "forward", "maxpool2d": "forward",
        "conv2d_input_grad": "backward", "conv2d_weight_grad": "backward", "_pool_scatter": "backward",
        "_pool_gather": "backward (2nd order)", "_window_max": "forward",
        "conv_pool": "forward", "_conv_chunks": "forward", "_first_max": "forward",
        "_conv_pool_select": "forward", "_conv_pool_vjp": "backward", "_bias_grad": "backward",
        "_unfold": "im2col copies", "_flat_rows": "im2col copies", "log_softmax": "loss", "cross_entropy": "loss",
        "per_example_cross_entropy": "loss", "one_hot": "loss"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--quick", action="store_true", help="smaller workloads (seconds, not minutes)")
    p.add_argument("--model", default=None, help="model file for the AutoAttack workload "
                   "(e.g. the PGD-trained model of `scratchadv train --defense pgd --eps 0.1`)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads (default all)")
    p.add_argument("--data", default=None, help="folder with the MNIST files")
    p.add_argument("--json", default=None, help="write the profile as JSON here (atomic)")
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads: expected an integer >= 1, got {a.threads}")
    a.only = [w.strip() for w in a.only.split(",") if w.strip()]
    bad = [w for w in a.only if w not in WORKLOADS]
    if bad or not a.only:
        p.error(f"--only: expected names from {','.join(WORKLOADS)}, got {bad or a.only}")
    return a


class Hook:
    """A ``sys.setprofile`` hook: self time, calls and bytes per function of ``files``."""

    def __init__(self, files):
        self.files = {os.path.abspath(f) for f in files}
        self.stats = {}
        self.stack = []              # [code, start, child time]
        self._codes = {}

    def _tracked(self, code):
        t = self._codes.get(code)
        if t is None:
            t = self._codes[code] = os.path.abspath(code.co_filename) in self.files
        return t

    def __call__(self, frame, event, arg):
        if event == "call" and self._tracked(frame.f_code):
            code = frame.f_code
            names = code.co_varnames[:code.co_argcount]
            nbytes = sum(_nbytes(frame.f_locals.get(n)) for n in names)
            self.stack.append([code, time.perf_counter(), 0.0, nbytes])
        elif event == "return" and self.stack and frame.f_code is self.stack[-1][0]:
            code, t0, child, nbytes = self.stack.pop()
            elapsed = time.perf_counter() - t0
            qual = getattr(code, "co_qualname", code.co_name)
            inner = ".<locals>." in qual     # a primitive's own closure (its chunk loop): its time
            name = qual.split(".<locals>.")[0] if inner else code.co_name   # counts as the primitive's
            if name.startswith("<"):
                name = f"{code.co_name}@{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            s = self.stats.setdefault(name, {"calls": 0, "self_s": 0.0, "bytes_in": 0, "bytes_out": 0,
                                                     "file": os.path.basename(code.co_filename)})
            s["self_s"] += elapsed - child
            if not inner:
                s["calls"] += 1
                s["bytes_in"] += nbytes
                s["bytes_out"] += _nbytes(arg)
            if self.stack:
                self.stack[-1][2] += elapsed


def _nbytes(v):
    v = getattr(v, "_value", v)                  # an autograd box -> its array
    if hasattr(v, "nbytes") and hasattr(v, "dtype"):
        return int(v.nbytes)
    if isinstance(v, (tuple, list)):
        return sum(_nbytes(u) for u in v)
    if isinstance(v, dict):
        return sum(_nbytes(u) for u in v.values())
    return 0


def profile(fn, files):
    """(plain wall seconds, profiled wall seconds, per-function stats) of one call of fn."""
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    hook = Hook(files)
    t0 = time.perf_counter()
    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return wall, time.perf_counter() - t0, hook.stats


def workloads(args):
    """name -> (description, zero-argument callable)."""
    import numpy as onp
    from autograd import grad

    from scratchadv.data import load_mnist
    from scratchadv.losses import gradient_regularized_loss
    from scratchadv.model import init_params
    from scratchadv.train import fit
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    params = init_params(0)
    out = {}
    n = 10000 if args.quick else 60000
    out["epoch"] = (f"one training epoch on {n} images (RMSprop, batch 128)",
                    lambda: fit(params, x_train[:n], y_train[:n], epochs=1, batch_size=128, seed=0, verbose=False))
    m = 200 if args.quick else 1000

    def run_pgd():
        from scratchadv.attacks import pgd
        pgd(params, x_test[:m], y_test[:m], eps=0.3, steps=40, step_size=0.01, norm="linf",
            random_start=True, restarts=1, rng=onp.random.default_rng(0))
    out["pgd"] = (f"PGD Linf eps 0.3, 40 steps, {m} test images", run_pgd)
    g = grad(gradient_regularized_loss)

    def run_dbp():
        for i in range(20):
            g(params, x_train[128 * i:128 * (i + 1)], y_train[128 * i:128 * (i + 1)], 0.5)
    out["dbp"] = ("20 double-backprop weight gradients (lam 0.5), batch 128", run_dbp)
    if args.model:
        from scratchadv.attacks.autoattack import autoattack
        from scratchadv.checkpoint import load_model
        from scratchadv.model import get_architecture
        p, meta = load_model(args.model, dtype=onp.float32)
        f = get_architecture(meta["architecture"]).predict
        k = 20 if args.quick else 100
        out["autoattack"] = (f"AutoAttack standard, Linf eps 0.1, first {k} test images of {args.model}",
                             lambda: autoattack(p, x_test[:k], y_test[:k], eps=0.1, norm="linf", seed=0,
                                                predict_fn=f))
    return out


def summarize(name, description, wall, profiled, stats):
    tracked = sum(s["self_s"] for s in stats.values())
    rows = sorted(({"function": k, "pass": PASS.get(k, "optimizer" if s["file"] == "optim.py" else "loss / other"),
                    **s, "share": s["self_s"] / wall if wall else 0.0,
                    "gb_per_s": (s["bytes_in"] + s["bytes_out"]) / s["self_s"] / 1e9 if s["self_s"] > 0 else None}
                   for k, s in stats.items()), key=lambda r: -r["self_s"])
    by_pass = {}
    for r in rows:
        by_pass[r["pass"]] = by_pass.get(r["pass"], 0.0) + r["self_s"]
    by_pass["everything else"] = max(wall - tracked, 0.0)
    return {"workload": name, "description": description, "wall_s": wall, "profiled_wall_s": profiled,
            "tracked_self_s": tracked, "functions": rows, "by_pass": by_pass}


def format_profile(p):
    lines = [f"== {p['workload']}: {p['description']}: {p['wall_s']:.2f} s "
             f"(profiled run {p['profiled_wall_s']:.2f} s)",
             f"{'function':>22s} {'pass':>22s} {'calls':>7s} {'self s':>8s} {'share':>6s} {'MB in+out':>10s} {'GB/s':>6s}"]
    for r in p["functions"]:
        if r["self_s"] < 0.001 * p["wall_s"]:
            continue
        gbs = "-" if r["gb_per_s"] is None else f"{r['gb_per_s']:.1f}"
        lines.append(f"{r['function']:>22s} {r['pass']:>22s} {r['calls']:>7d} {r['self_s']:>8.2f} "
                     f"{100 * r['share']:>5.1f}% {(r['bytes_in'] + r['bytes_out']) / 1e6:>10.0f} {gbs:>6s}")
    lines.append("by pass: " + ", ".join(f"{k} {v:.2f} s ({100 * v / p['wall_s']:.0f}%)"
                                        for k, v in p["by_pass"].items()))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if "numpy" in sys.modules:
        print("profile: warning: NumPy was imported before the thread count was set", file=sys.stderr)
    from scratchadv import threads
    from scratchadv.data import DataError
    from scratchadv.fileio import atomic_write_json
    threads.set_threads(1)      # the hook follows the calling thread only: keep every chunk on it
    try:
        work = workloads(args)
    except (DataError, OSError, ValueError) as e:
        print(f"profile: error: {e}", file=sys.stderr)
        return 2
    files = [os.path.join(ROOT, "scratchadv", "ops.py"), os.path.join(ROOT, "scratchadv", "optim.py")]
    out = []
    for name in args.only:
        if name not in work:
            print(f"profile: {name}: skipped (needs --model)", file=sys.stderr)
            continue
        description, fn = work[name]
        print(f"profiling {name} ...", file=sys.stderr, flush=True)
        out.append(summarize(name, description, *profile(fn, files)))
        print(format_profile(out[-1]), flush=True)
    if args.json:
        atomic_write_json(args.json, {"threads": args.threads, "quick": args.quick, "workloads": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())

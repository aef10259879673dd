#!/usr/bin/env python
"""Speed of scratchadv beside PyTorch CPU: same network, weights, data, batch and threads.

Rows (float32; the batch rows use one batch of ``--batch-size`` training images):

====================  =====================================================================
forward               ``predict(params, x)``                  vs ``module(x)`` under no_grad
forward + grad W      ``grad(loss)(params, x, y)``            vs ``loss.backward()``
grad x                ``input_gradient(params, x, y)``        vs ``autograd.grad(ce_sum, x)``
double backprop       ``grad(gradient_regularized_loss)``     vs the input gradient taken with
                      (lam 0.1), w.r.t. params                 ``create_graph=True``, differentiated
                                                               again w.r.t. the parameters
train epoch           ``train.fit(epochs=1, verbose=False)``  vs the same loop in PyTorch: same
                      RMSprop (Keras defaults), batch 128     shuffled order, ``optim.RMSprop(lr=1e-3,
                      (at N threads ``workers=N``: data-      alpha=0.9, eps=1e-7)``, loss and
                      parallel, the workers' start included)  accuracy read back every batch
pgd                   ``attacks.pgd`` Linf eps 0.3, 40 steps  vs the same algorithm in PyTorch
                      of 0.01, random start, 1000-image       (random start, sign steps, projection,
                      chunks, on the test images; at N        per-image best iterate, final forward)
                      threads ``workers=N``
autoattack            ``attacks.autoattack`` standard, Linf   vs the original AutoAttack
                      eps 0.1, first ``--aa-n`` (200) test    (``pyautoattack==0.2.0``, standard
                      images of ``--aa-model`` (the PGD-      version) on the model's PyTorch twin,
                      trained model: almost every image       same images, same threads
                      stays robust, so all four attacks run
                      in full); at N threads ``workers=N``
                      (N processes of one BLAS thread)
====================  =====================================================================

Each figure is the median of ``--repeats`` timed runs after one warm-up run; the two
libraries alternate run by run, so a busy machine slows both alike. The ratio is
scratchadv time / PyTorch time (below 1: scratchadv is faster).

Threads: both libraries get ``--threads`` N cores (default: ``$OMP_NUM_THREADS`` or the
number of CPUs). PyTorch gets ``torch.set_num_threads(N)``. scratchadv gets N threads of
its own (``scratchadv.threads.set_threads(N)``: the batch rows; results do not depend on
N) with ONE BLAS thread each, or N worker processes of one BLAS thread (``workers=N``:
the epoch, PGD, AutoAttack). A second BLAS thread only slows this network's small
products down, and two kinds of thread would compete for the cores. The BLAS behind
NumPy reads its thread count when NumPy is first imported, so this script sets
``OPENBLAS_NUM_THREADS=1`` (``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` to N, for PyTorch)
before importing NumPy and checks it with ``threadpoolctl`` when that is installed.

Usage::

    python scripts/benchmark.py                              # all rows (PGD on 10,000 images: minutes)
    python scripts/benchmark.py --quick                      # 3 repeats, epoch on 10,000 images, PGD on 1,000
    python scripts/benchmark.py --skip-pgd --json runs/benchmark.json
    python scripts/benchmark.py --threads 1 --repeats 15 --skip-epoch --skip-pgd
    python scripts/benchmark.py --threads 1,2 --json runs/benchmark.json   # each count in its own process
    python scripts/benchmark.py --aa-model runs/defenses/pgd-eps0.1.npz --skip-epoch --skip-pgd

Exit status 0 when the measured ratios meet their targets (every row at most 0.8x
PyTorch, the training epoch at most 0.6x from two threads on; AutoAttack against the
original), 1 when one misses, 2 on bad input.
"""
import argparse
import os
import platform
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
# this folder holds profile.py, which would shadow the standard library's profile module
# (PyTorch imports cProfile): keep the folder off the import path, the project root on it
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
ROOT = os.path.join(_HERE, os.pardir)
sys.path.insert(0, ROOT)

#: ratio targets (scratchadv / PyTorch, or the original AutoAttack) from the project's issues
TARGETS = {"forward": 0.8, "fwd_grad_w": 0.8, "grad_x": 0.8, "double_backprop": 0.8,
           "train_epoch": 0.8, "pgd": 0.8, "autoattack": 0.8}
#: the training epoch's target from two threads on
EPOCH_TARGET_MULTI = 0.6


def _thread_list(text):
    """'1' or '1,2' -> [1] or [1, 2]."""
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1 or 1,2, got {text!r}")
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts >= 1, got {text!r}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7,
                   help="timed runs per batch row (median reported; default 7)")
    p.add_argument("--epoch-repeats", type=int, default=3,
                   help="timed runs of the training epoch (default 3)")
    p.add_argument("--pgd-repeats", type=int, default=1, help="timed runs of PGD (default 1)")
    p.add_argument("--threads", type=_thread_list, default=None,
                   help="threads for NumPy's BLAS and for PyTorch (default: $OMP_NUM_THREADS "
                        "or the number of CPUs)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lam", type=float, default=0.1,
                   help="lam of the gradient-regularized loss (default 0.1)")
    p.add_argument("--epoch-n", type=int, default=None,
                   help="training images in the timed epoch (default: all 60,000)")
    p.add_argument("--pgd-n", type=int, default=10000,
                   help="test images attacked by PGD (default 10,000)")
    p.add_argument("--skip-epoch", action="store_true", help="do not time a training epoch")
    p.add_argument("--skip-pgd", action="store_true", help="do not time PGD")
    p.add_argument("--aa-model", default=None,
                   help="model file for the AutoAttack row (the README's PGD-trained model, "
                        "`scratchadv train --defense pgd --eps 0.1`); without it the row is skipped")
    p.add_argument("--aa-n", type=int, default=200, help="test images of the AutoAttack row (default 200)")
    p.add_argument("--aa-repeats", type=int, default=3, help="timed runs of AutoAttack (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="bounded run: 3 repeats, 1 epoch run on 10,000 images, PGD on 1,000 images")
    p.add_argument("--no-torch", action="store_true", help="time scratchadv alone")
    p.add_argument("--rounds", type=int, default=3,
                   help="processes per library and thread count for the batch rows, alternating "
                        "the libraries (a process's timings vary more between processes than "
                        "within one); the epoch, PGD and AutoAttack rows run in the first round "
                        "only (default 3)")
    p.add_argument("--side", choices=("ours", "torch"), default=None,
                   help="time one library only, in this process (what the default run does for "
                        "each library in a process of its own)")
    p.add_argument("--model", default=None,
                   help="model file to take the weights from (default: init_params(--seed))")
    p.add_argument("--data", default=None,
                   help="MNIST folder (default: $SCRATCHADV_DATA, then the user cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, batch order, PGD starts")
    p.add_argument("--json", default=None, metavar="PATH", help="write the figures as JSON (atomic)")
    p.add_argument("--readme", default=None, metavar="README",
                   help="with several --threads: replace the table between this file's "
                        "<!-- benchmark-table --> markers with the measured one")
    p.add_argument("--table-from", default=None, metavar="JSON",
                   help="measure nothing: print (and with --readme, write) the table of a JSON "
                        "written by --threads 1,2 --json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
        args.epoch_repeats = 1
        args.pgd_repeats = 1
        args.epoch_n = 10000 if args.epoch_n is None else args.epoch_n
        args.pgd_n = min(args.pgd_n, 1000)
    if args.threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        args.threads = [int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)]
    args.thread_counts = args.threads
    args.threads = args.threads[0]
    if args.readme and len(args.thread_counts) < 2 and not args.table_from:
        p.error("--readme: the README's table has a column per thread count; pass --threads 1,2 "
                "(or --table-from JSON)")
    if args.quick:
        args.aa_repeats = 1
    for name in ("repeats", "epoch_repeats", "pgd_repeats", "batch_size", "pgd_n",
                 "aa_n", "aa_repeats", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    if args.epoch_n is not None and args.epoch_n < 1:
        p.error(f"--epoch-n: expected an integer >= 1, got {args.epoch_n}")
    if args.seed < 0:
        p.error(f"--seed: expected an integer >= 0, got {args.seed}")
    return args


def pin_threads(n):
    """NumPy's BLAS on one thread, the others (PyTorch's OpenMP and MKL) on n, through the
    environment: effective only before NumPy loads. Returns whether it was in time."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)
    for var in ("OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        os.environ[var] = "1"
    return "numpy" not in sys.modules


def blas_threads(n, pinned_before_import):
    """The BLAS thread count as far as it can be known (threadpoolctl, else the pinning)."""
    try:
        import threadpoolctl
    except ImportError:
        return {"threads": n if pinned_before_import else None,
                "how": "environment, set before NumPy was imported" if pinned_before_import
                else "unknown: NumPy was imported before the environment was set"}
    info = [d for d in threadpoolctl.threadpool_info()
            if d.get("user_api") == "blas" and d.get("internal_api") == "openblas"]
    return {"threads": info[0]["num_threads"] if info else None, "how": "threadpoolctl",
            "blas": [{k: d.get(k) for k in ("internal_api", "version", "num_threads")} for d in info]}


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def median(v):
    s = sorted(v)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compare(fns, repeats, warmup=1):
    """Time each of ``fns`` (name -> callable) ``repeats`` times, alternating their order.

    One warm-up call each first. Returns name -> list of seconds.
    """
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    times = {k: [] for k in names}
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(timed(fns[k]))
    return times


# ---------------------------------------------------------------------------
# The PyTorch side
# ---------------------------------------------------------------------------

def torch_side(torch, params, xb, yb, lam):
    """The batch rows in PyTorch on a copy of ``params``: name -> callable."""
    import torch.nn.functional as F
    from scratchadv.torch_model import to_torch

    module = to_torch(params)
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)
    n = len(yb)

    def forward():
        with torch.no_grad():
            module(x)

    def fwd_grad_w():
        module.zero_grad(set_to_none=True)
        F.cross_entropy(module(x), y).backward()

    def grad_x():
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(module(xx), y, reduction="sum"), xx)

    def double_backprop():
        xx = x.clone().requires_grad_(True)
        ce = F.cross_entropy(module(xx), y, reduction="sum")
        gx, = torch.autograd.grad(ce, xx, create_graph=True)
        reg = ce / n + lam * (gx * gx).sum() / n
        torch.autograd.grad(reg, list(module.parameters()))

    return {"forward": forward, "fwd_grad_w": fwd_grad_w, "grad_x": grad_x,
            "double_backprop": double_backprop}


def torch_epoch(torch, params, x, y, batch_size, seed):
    """One RMSprop epoch in PyTorch in the order ``train.fit`` uses for epoch 0.

    ``torch.optim.RMSprop`` adds eps outside the square root where ``optim.rmsprop``
    adds it inside (tf.keras); the work per step is the same.
    """
    import numpy as onp
    import torch.nn.functional as F
    from scratchadv.torch_model import to_torch

    module = to_torch(params).train()
    opt = torch.optim.RMSprop(module.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    perm = torch.from_numpy(onp.random.default_rng([seed, 0]).permutation(len(x)))
    total, correct = 0.0, 0
    for a in range(0, len(x), batch_size):
        idx = perm[a:a + batch_size]
        xb, yb = xt[idx], yt[idx]
        opt.zero_grad(set_to_none=True)
        logits = module(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
    return total / len(x), correct / len(x)


def torch_pgd(torch, module, x, y, eps, steps, step_size, rng, batch_size=1000):
    """Linf PGD with a uniform random start, keeping each image's strongest iterate.

    The same algorithm as ``scratchadv.attacks.pgd`` (success first, then loss; the
    start point and every step count as candidates; a final forward pass scores the
    last step). Returns the robust accuracy.
    """
    import torch.nn.functional as F
    wrong = 0
    for a in range(0, len(x), batch_size):
        xs = torch.from_numpy(x[a:a + batch_size])
        ys = torch.from_numpy(y[a:a + batch_size])
        lo, hi = (xs - eps).clamp(min=0), (xs + eps).clamp(max=1)
        with torch.no_grad():
            logits = module(xs)
            best_succ = logits.argmax(1) != ys
            best_obj = F.cross_entropy(logits, ys, reduction="none")
        start = torch.from_numpy(rng.uniform(-1, 1, size=xs.shape).astype(x.dtype))
        xa = torch.minimum(torch.maximum(xs + eps * start, lo), hi)
        for t in range(steps + 1):
            if t < steps:
                xa.requires_grad_(True)
                logits = module(xa)
                ce = F.cross_entropy(logits, ys, reduction="none")
                g, = torch.autograd.grad(ce.sum(), xa)
                xa, ce, logits = xa.detach(), ce.detach(), logits.detach()
            else:
                with torch.no_grad():
                    logits = module(xa)
                    ce = F.cross_entropy(logits, ys, reduction="none")
            succ = logits.argmax(1) != ys
            better = (succ & ~best_succ) | ((succ == best_succ) & (ce > best_obj))
            best_succ = torch.where(better, succ, best_succ)
            best_obj = torch.where(better, ce, best_obj)
            if t < steps:
                xa = torch.minimum(torch.maximum(xa + step_size * g.sign(), lo), hi)
        wrong += int(best_succ.sum())
    return 1.0 - wrong / len(x)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(rows, header):
    lines = [header, f"{'':44s} {'scratchadv':>11s} {'PyTorch':>11s} {'ratio':>7s}   target"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = ""
        if r.get("target") is not None:
            target = f"<= {r['target']:.1f}x"
            if r["ratio"] is not None:
                target += "  ok" if r["ratio"] <= r["target"] else "  MISSED"
        lines.append(f"{r['label']:44s} {fmt_time(r['scratchadv_s']):>11s} "
                     f"{fmt_time(r['torch_s']):>11s} {ratio:>7s}   {target}")
    return "\n".join(lines)


def make_row(key, label, times, target=None, **extra):
    ours = median(times["scratchadv"]) if times.get("scratchadv") else None
    theirs = median(times["torch"]) if times.get("torch") else None
    return {"key": key, "label": label, "scratchadv_s": ours, "torch_s": theirs,
            "ratio": None if theirs is None or ours is None else ours / theirs, "target": target,
            "scratchadv_times": times.get("scratchadv"), "torch_times": times.get("torch"), **extra}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def autoattack_row(args, x_test, y_test, torch):
    """The AutoAttack row: ours and the original on the same weights, images and threads."""
    import numpy as onp

    from scratchadv.attacks.autoattack import autoattack
    from scratchadv.checkpoint import load_model
    from scratchadv.model import get_architecture, predict_batched
    try:
        params, meta = load_model(args.aa_model, dtype=onp.float32)
    except (OSError, ValueError) as e:
        print(f"error: --aa-model: {e}", file=sys.stderr)
        return None
    arch = get_architecture(meta["architecture"])
    x, y = x_test[:args.aa_n], y_test[:args.aa_n]
    acc = {}

    def ours():
        res = autoattack(params, x, y, eps=0.1, norm="linf", seed=args.seed, predict_fn=arch.predict,
                         workers=args.threads)
        acc["scratchadv"] = float(onp.mean(predict_batched(params, res.x_adv, predict_fn=arch.predict)
                                           .argmax(1) == y))

    fns = {"scratchadv": ours} if args.side != "torch" else {}
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        AutoAttack = None
        log("the original AutoAttack is not installed (pyautoattack==0.2.0): timing ours alone")
    if torch and AutoAttack:
        import logging
        from scratchadv.torch_model import to_torch
        module = to_torch(params, arch.name, dtype=onp.float32)
        logging.getLogger("auto-attack").setLevel(logging.WARNING)

        def theirs():
            aa = AutoAttack(module, eps=0.1, norm="Linf", seed=args.seed, version="standard")
            xa, _ = aa.run_standard_evaluation(torch.from_numpy(x), torch.from_numpy(y), batch_size=500)
            xa = xa.detach().numpy().astype(onp.float32)
            acc["original"] = float(onp.mean(predict_batched(params, xa, predict_fn=arch.predict).argmax(1) == y))
        fns["torch"] = theirs
    log(f"timing AutoAttack standard, Linf eps 0.1, on {len(x)} test images of {args.aa_model} "
        f"({args.aa_repeats} run(s) each) ...")
    return make_row("autoattack", f"AutoAttack standard, Linf 0.1 ({len(x)} images)",
                    compare(fns, args.aa_repeats, warmup=0), TARGETS["autoattack"], robust_accuracy=acc)


def json_writable(path):
    """True when --json is absent or writable; else the error on stderr."""
    if not path:
        return True
    from scratchadv.fileio import check_writable
    try:
        check_writable(path, "--json")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    return True


def each_thread_count(argv, args):
    """One process per thread count and library (BLAS reads its thread count once, when
    NumPy loads; and PyTorch's idle OpenMP threads keep spinning for a while after each
    call, which would slow the other library timed right after it in the same process):
    scratchadv's run first, then PyTorch's, then the rows side by side."""
    import json
    import subprocess
    import tempfile
    argv = list(sys.argv[1:] if argv is None else argv)
    rest, skip = [], False
    for i, a in enumerate(argv):      # drop --threads, --json, --readme: each run gets its own
        if skip:
            skip = False
            continue
        if a in ("--threads", "--json", "--readme", "--side"):
            skip = True
            continue
        if a.startswith(("--threads=", "--json=", "--readme=", "--side=")):
            continue
        rest.append(a)
    if not json_writable(args.json):
        return 2
    sides = ("ours",) if args.no_torch else ("ours", "torch")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.thread_counts:
            got = {}
            for k in range(args.rounds):
                heavy = [] if k == 0 else ["--skip-epoch", "--skip-pgd", "--aa-model", ""]
                for side in (sides if k % 2 == 0 else sides[::-1]):
                    path = os.path.join(tmp, f"threads{n}-{side}-{k}.json")
                    log(f"=== {n} thread(s): {'scratchadv' if side == 'ours' else 'PyTorch'}, "
                        f"round {k + 1}/{args.rounds}")
                    rc = subprocess.call([sys.executable, os.path.abspath(__file__), *rest, *heavy,
                                          "--threads", str(n), "--side", side, "--json", path])
                    if rc != 0 or not os.path.exists(path):
                        return 2
                    with open(path, encoding="utf-8") as f:
                        got[side] = join_rounds(got.get(side), json.load(f))
            runs[n] = merge_sides(got["ours"], got.get("torch"))
    counts = list(runs)
    for n in counts:
        header = f"{n} thread(s), each library in its own process:"
        print(table(runs[n]["rows"], header))
        for r in runs[n]["rows"]:
            if r.get("robust_accuracy"):
                print(f"  {r['label']}: robust accuracy (a sanity check that both ran the same "
                      "attack): " + ", ".join(f"{k} {v:.4f}" for k, v in r["robust_accuracy"].items()))
    if len(counts) > 1:
        lines = [f"{'':44s}" + "".join(f" {f'{n} thread(s): ours / PyTorch':>34s}" for n in counts)]
        for i, r in enumerate(runs[counts[0]]["rows"]):
            cells = []
            for n in counts:
                s = runs[n]["rows"][i]
                ratio = "-" if s["ratio"] is None else f"{s['ratio']:.2f}x"
                cells.append(f" {fmt_time(s['scratchadv_s']):>10s} / {fmt_time(s['torch_s']):>10s} {ratio:>8s}")
            lines.append(f"{r['label']:44s}" + "".join(cells))
        print("\n".join(lines))
    combined = {"threads": counts, "runs": {str(n): runs[n] for n in counts}}
    if args.json:
        from scratchadv.fileio import atomic_write_json
        atomic_write_json(args.json, combined if len(counts) > 1 else runs[counts[0]])
        log(f"wrote {args.json}")
    if args.readme:
        write_readme_table(args.readme, combined)
    return 1 if any(runs[n]["targets_missed"] for n in counts) else 0


MARK_BEGIN, MARK_END = "<!-- benchmark-table -->", "<!-- /benchmark-table -->"


def format_markdown(combined):
    """The README's table from the JSON of ``--threads 1,2 --json``: per row and thread
    count, scratchadv's and PyTorch's medians and their ratio."""
    counts = combined["threads"]
    runs = [combined["runs"][str(n)] for n in counts]
    head = "| row | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}: scratchadv / PyTorch (ratio)"
                                    for n in counts) + " |"
    lines = [head, "| --- |" + " --- |" * len(counts)]
    for i, row in enumerate(runs[0]["rows"]):
        cells = []
        for run in runs:
            r = run["rows"][i]
            ratio = "-" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
            cells.append(f"{fmt_time(r['scratchadv_s'])} / {fmt_time(r['torch_s'])} ({ratio})")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_readme_table(readme, combined):
    from scratchadv.fileio import write_marked_block
    write_marked_block(readme, MARK_BEGIN, MARK_END, format_markdown(combined))
    log(f"{readme}: benchmark table replaced")


def main(argv=None):
    args = parse_args(argv)
    if args.table_from:
        import json
        with open(args.table_from, encoding="utf-8") as f:
            combined = json.load(f)
        print(format_markdown(combined), end="")
        if args.readme:
            write_readme_table(args.readme, combined)
        return 0
    if args.side is None:
        return each_thread_count(argv, args)
    pinned = pin_threads(args.threads)

    import numpy as onp
    from autograd import grad

    from scratchadv.fileio import atomic_write_json
    from scratchadv.losses import gradient_regularized_loss, input_gradient, loss
    from scratchadv.model import init_params, predict

    if not json_writable(args.json):
        return 2
    blas = blas_threads(1, pinned)
    from scratchadv import threads as scratchadv_threads
    scratchadv_threads.set_threads(args.threads)

    torch = None
    if args.side == "torch":
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            log("PyTorch is not installed: timing scratchadv alone")
            torch = None

    if args.model:
        from scratchadv.checkpoint import load_model
        try:
            params, meta = load_model(args.model, architecture="lecture-cnn-v1", dtype=onp.float32)
        except (OSError, ValueError) as e:
            print(f"error: --model: {e}", file=sys.stderr)
            return 2
    else:
        params = init_params(args.seed)

    need_data = not (args.skip_epoch and args.skip_pgd and not args.aa_model)
    from scratchadv.data import DataError, load_mnist
    try:
        x_train, y_train, x_test, y_test = load_mnist(args.data)
        data_note = "MNIST"
    except (DataError, OSError, ValueError) as e:
        if need_data:
            print(f"error: MNIST is needed for the epoch and PGD rows ({e}); point --data or "
                  "SCRATCHADV_DATA at it, or pass --skip-epoch --skip-pgd", file=sys.stderr)
            return 2
        r = onp.random.default_rng(args.seed)     # synthetic digits for the batch rows only
        x_train = onp.zeros((args.batch_size, 1, 28, 28), dtype=onp.float32)
        x_train[:, :, 6:22, 9:19] = r.integers(0, 256, size=(args.batch_size, 1, 16, 10)) / 255
        y_train = r.integers(0, 10, args.batch_size).astype(onp.int64)
        x_test = y_test = None
        data_note = "synthetic digit-like images (MNIST not found)"

    bs = args.batch_size
    xb = onp.ascontiguousarray(x_train[:bs])
    yb = onp.ascontiguousarray(y_train[:bs])
    header = (f"scratchadv benchmark: batch {len(xb)}, float32, {args.threads} thread(s) "
              f"(scratchadv: {scratchadv_threads.get_threads()} threads, NumPy BLAS: "
              f"{blas['threads'] if blas['threads'] is not None else 'unknown'} each; "
              f"PyTorch: {torch.get_num_threads() if torch else '-'}), "
              f"median of {args.repeats} (epoch {args.epoch_repeats}, PGD {args.pgd_repeats}) "
              f"after a warm-up; data: {data_note}")
    rows = []

    # ---- one batch ------------------------------------------------------
    grad_w = grad(loss)
    grad_reg = grad(gradient_regularized_loss)
    ours = {
        "forward": lambda: predict(params, xb),
        "fwd_grad_w": lambda: grad_w(params, xb, yb),
        "grad_x": lambda: input_gradient(params, xb, yb),
        "double_backprop": lambda: grad_reg(params, xb, yb, args.lam),
    }
    theirs = torch_side(torch, params, xb, yb, args.lam) if torch else {}
    labels = {"forward": "forward", "fwd_grad_w": "forward + grad W",
              "grad_x": "grad x", "double_backprop": f"double backprop (lam {args.lam:g})"}
    for key in ours:
        log(f"timing {labels[key]} ...")
        fns = {"scratchadv": ours[key]} if args.side == "ours" else {}
        if key in theirs:
            fns["torch"] = theirs[key]
        rows.append(make_row(key, labels[key], compare(fns, args.repeats),
                             TARGETS.get(key)))

    # ---- one training epoch ---------------------------------------------
    if not args.skip_epoch:
        from scratchadv.train import fit
        n = len(x_train) if args.epoch_n is None else min(args.epoch_n, len(x_train))
        xe, ye = x_train[:n], y_train[:n]
        log(f"timing one training epoch on {n} images ({args.epoch_repeats} run(s) each) ...")
        fns = {"scratchadv": lambda: fit(params, xe, ye, epochs=1, batch_size=bs, seed=args.seed,
                                         verbose=False, workers=args.threads)} if args.side == "ours" else {}
        if torch:
            fns["torch"] = lambda: torch_epoch(torch, params, xe, ye, bs, args.seed)
        rows.append(make_row("train_epoch", f"train epoch ({n} images, RMSprop)",
                             compare(fns, args.epoch_repeats, warmup=0),
                             TARGETS["train_epoch"] if args.threads == 1 else EPOCH_TARGET_MULTI))

    # ---- PGD --------------------------------------------------------------
    if not args.skip_pgd:
        from scratchadv.attacks import pgd
        n = min(args.pgd_n, len(x_test))
        xp, yp = x_test[:n], y_test[:n]
        acc = {}

        def ours_pgd():
            res = pgd(params, xp, yp, eps=0.3, steps=40, step_size=0.01, norm="linf",
                      random_start=True, restarts=1, rng=onp.random.default_rng(args.seed),
                      workers=args.threads)
            acc["scratchadv"] = float(onp.mean(~res.success))

        fns = {"scratchadv": ours_pgd} if args.side == "ours" else {}
        if torch:
            from scratchadv.torch_model import to_torch
            module = to_torch(params)

            def torch_pgd_run():
                acc["torch"] = torch_pgd(torch, module, xp, yp, 0.3, 40, 0.01,
                                         onp.random.default_rng(args.seed))
            fns["torch"] = torch_pgd_run
        log(f"timing PGD Linf eps 0.3, 40 steps on {n} test images ({args.pgd_repeats} run(s) each) ...")
        rows.append(make_row("pgd", f"PGD Linf eps 0.3, 40 steps ({n} images)",
                             compare(fns, args.pgd_repeats, warmup=0), TARGETS["pgd"],
                             robust_accuracy=acc))

    # ---- AutoAttack ------------------------------------------------------
    if args.aa_model:
        row = autoattack_row(args, x_test, y_test, torch)
        if row is None:
            return 2
        rows.append(row)

    print(table(rows, header))
    if args.json:
        import numpy
        atomic_write_json(args.json, {
            "config": {"threads": args.threads, "side": args.side,
                       "scratchadv_threads": scratchadv_threads.get_threads(),
                       "blas": blas, "batch_size": len(xb),
                       "dtype": "float32", "repeats": args.repeats,
                       "epoch_repeats": args.epoch_repeats, "pgd_repeats": args.pgd_repeats,
                       "lam": args.lam, "seed": args.seed, "model": args.model, "data": data_note,
                       "numpy": numpy.__version__,
                       "torch": torch.__version__ if torch else None,
                       "blas_environment": {k: os.environ.get(k) for k in
                                            ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
                       "python": platform.python_version(), "machine": platform.machine(),
                       "cpus": os.cpu_count()},
            "rows": rows})
        log(f"wrote {args.json}")
    return 0


def join_rounds(first, more):
    """One library's report over rounds: each row's timings from every round, their median."""
    if first is None:
        return more
    side = "torch" if more["config"].get("side") == "torch" else "scratchadv"
    by_key = {r["key"]: r for r in more["rows"]}
    for r in first["rows"]:
        extra = by_key.get(r["key"], {}).get(f"{side}_times")
        if extra and r.get(f"{side}_times"):
            r[f"{side}_times"] = r[f"{side}_times"] + extra
            r[f"{side}_s"] = median(r[f"{side}_times"])
    first["config"]["rounds"] = first["config"].get("rounds", 1) + 1
    return first


def merge_sides(ours, theirs):
    """One thread count's report from the two one-library runs: each row's PyTorch (or
    original AutoAttack) timings beside ours, the ratio, the targets missed."""
    by_key = {r["key"]: r for r in (theirs or {"rows": []})["rows"]}
    rows = []
    for r in ours["rows"]:
        t = by_key.get(r["key"], {})
        row = dict(r, torch_s=t.get("torch_s"), torch_times=t.get("torch_times"))
        row["ratio"] = None if row["torch_s"] is None else row["scratchadv_s"] / row["torch_s"]
        if r.get("robust_accuracy") is not None or t.get("robust_accuracy") is not None:
            row["robust_accuracy"] = {**(r.get("robust_accuracy") or {}), **(t.get("robust_accuracy") or {})}
        rows.append(row)
    config = dict(ours["config"], side=None, torch=(theirs or {}).get("config", {}).get("torch"),
                  torch_threads=(theirs or {}).get("config", {}).get("threads"))
    missed = [r["label"] for r in rows
              if r.get("target") is not None and r["ratio"] is not None and r["ratio"] > r["target"]]
    return {"config": config, "rows": rows, "targets_missed": missed}


if __name__ == "__main__":
    sys.exit(main())

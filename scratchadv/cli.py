"""The ``scratchadv`` command: parse, call one library function, print, map errors to flags.

Each sub-command is a pair ``_add_<name>(parser)`` / ``_run_<name>(args)`` registered
with ``@command``. Errors in the user's input (``ValueError``, ``TypeError``,
``DataError``, ``CheckpointError``) become one line on stderr and exit status 2. The
library's errors name its parameters ("lr: expected ..."); :func:`main` names the
command's flag instead ("--lr: expected ...") where the two correspond. SIGTERM is
handled here, once for every command: it raises ``KeyboardInterrupt`` like Ctrl-C, so
a training run saves its state before it stops.
"""
import argparse
import os
import re
import signal
import sys

from . import __version__

_COMMANDS = {}


def command(name, help):
    """Register ``add(parser)`` under ``name``; the run function is attached with ``.run``."""
    def deco(add):
        def run_deco(run):
            _COMMANDS[name] = (help, add, run)
            return run
        add.run = run_deco
        return add
    return deco


def _floats(text):
    """'0,0.05,0.1' -> [0.0, 0.05, 0.1]."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# ---------------------------------------------------------------------------
# Sub-commands are defined below, one section each.
# ---------------------------------------------------------------------------


# --- train -----------------------------------------------------------------

def state_path_for(out):
    """The training-state file kept beside a model file: runs/m.npz -> runs/m.state.npz."""
    root, ext = os.path.splitext(out)
    return root + ".state" + (ext or ".npz")


@command("train", help="train a model on MNIST (optionally with a defense)")
def _add_train(p):
    p.add_argument("--epochs", type=int, default=10, help="passes over the data (default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default 128)")
    p.add_argument("--optimizer", default="rmsprop", choices=["rmsprop", "sgd", "adam"],
                   help="default rmsprop (Keras defaults: lr 1e-3, rho 0.9, eps 1e-7)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, shuffling and attacks (default 0)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    p.add_argument("--architecture", default="lecture-cnn-v1",
                   help="lecture-cnn-v1 (default), mlp-v1 or softmax-v1")
    p.add_argument("--out", default="runs/model.npz", help="model file to write (default runs/model.npz)")
    p.add_argument("--metrics", default=None, help="write a JSON summary here")
    p.add_argument("--resume", action="store_true",
                   help="continue from the training state saved beside --out (OUT.state.npz)")
    p.add_argument("--data", default=None, help="folder with the MNIST files (default: $SCRATCHADV_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    d = p.add_argument_group("defenses")
    d.add_argument("--defense", default="none", choices=["none", "pgd", "gradreg", "trades"],
                   help="pgd: adversarial (min-max) training; gradreg: input-gradient regularization; "
                        "trades: CE + beta * KL(clean || adversarial) (Zhang et al. 2019)")
    d.add_argument("--eps", type=float, default=None,
                   help="pgd, trades: Linf radius of the training attack (default 0.1; above 0.2 "
                        "the defaults change: eps warm-up over 40%% of the epochs, 5 PGD steps, "
                        "pgd: a quarter of each batch clean)")
    d.add_argument("--pgd-steps", type=int, default=None,
                   help="pgd, trades: attack steps per batch (default 7; 5 above eps 0.2)")
    d.add_argument("--pgd-step-size", type=float, default=None,
                   help="pgd, trades: attack step size (default 2.5 * eps / steps)")
    d.add_argument("--clean-frac", type=float, default=None, help="pgd: fraction of clean images per batch")
    d.add_argument("--eps-warmup", type=float, default=None,
                   help="pgd, trades: epochs over which eps ramps up")
    d.add_argument("--lam", type=float, default=None, help="gradreg: weight of the squared input gradient")
    d.add_argument("--beta", type=float, default=None, help="trades: weight of the KL term (default 1)")
    d.add_argument("--holdout", type=int, default=None,
                   help="pgd, trades: keep the last N training images out of training and save the "
                        "epoch's weights with the best PGD-10 accuracy on them (Rice et al. 2020)")
    d.add_argument("--workers", type=int, default=1,
                   help="data-parallel training in this many processes, one part of each batch "
                        "each (its attack too, with pgd/trades); default 1; 2 uses both cores of "
                        "a 2-core machine; recorded in the model's config: the weights' rounding "
                        "depends on it")


@_add_train.run
def _run_train(args):
    import time

    from .checkpoint import save_model
    from .data import load_mnist
    from .fileio import atomic_write_json, check_writable
    from .train import TrainingDiverged, TrainingInterrupted, evaluate_split, plan_training, train_model
    from .validate import check_int

    check_int(args.epochs, "--epochs", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_int(args.seed, "--seed", minimum=0)
    if args.limit is not None:
        check_int(args.limit, "--limit", minimum=1, maximum=60000)
    defense_opts = {k: getattr(args, k) for k in
                    ("eps", "pgd_steps", "pgd_step_size", "clean_frac", "eps_warmup", "lam", "beta")}
    if args.defense == "none":
        given = [k for k, v in defense_opts.items() if v is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')}: only meaningful with "
                             f"--defense pgd|gradreg|trades")
    notes = {"limit": args.limit}
    if args.holdout is not None:
        if args.defense not in ("pgd", "trades"):
            raise ValueError("--holdout: only meaningful with --defense pgd|trades "
                             "(the selection attacks at the defense's eps)")
        check_int(args.holdout, "--holdout", minimum=1, maximum=(args.limit or 60000) - 1)
        notes["holdout"] = args.holdout
    _check_workers_flag(args)
    plan = plan_training(args.architecture, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr, seed=args.seed, defense=args.defense,
                         defense_options=defense_opts, notes=notes, workers=args.workers)
    check_writable(args.out, "--out")
    check_writable(args.metrics, "--metrics")
    state_path = state_path_for(args.out)
    check_writable(state_path, "--out (training state)")

    x_train, y_train, x_test, y_test = load_mnist(args.data)
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    callbacks, selected, select_path = [], None, None
    if args.holdout is not None:   # the last N training images: never trained on, never the test set
        from .checkpoint import load_model
        from .defenses import robust_selection
        x_hold, y_hold = x_train[-args.holdout:], y_train[-args.holdout:]
        x_train, y_train = x_train[:-args.holdout], y_train[:-args.holdout]
        measure, selected = robust_selection(x_hold, y_hold, eps=plan.config["eps"], seed=args.seed,
                                             predict_fn=plan.architecture.predict)
        select_path = os.path.splitext(state_path)[0] + ".select.npz"
        if args.resume and os.path.exists(select_path):   # the epochs measured before the interruption
            best, meta = load_model(select_path, architecture=plan.architecture.name)
            selected.update(meta["selection"], params=best)
            selected["per_epoch"] = {int(k): v for k, v in selected["per_epoch"].items()}

        def keep(epoch, history, params):
            measure(epoch, history, params)
            save_model(select_path, selected["params"], plan.architecture.name,
                       extra={"selection": {k: v for k, v in selected.items() if k != "params"}})
        callbacks = [keep]

    t0 = time.perf_counter()
    try:            # SIGTERM arrives as KeyboardInterrupt (main): fit saves its state
        params, history, _ = train_model(plan, x_train, y_train, x_val=x_test, y_val=y_test,
                                         checkpoint_path=state_path, resume=args.resume,
                                         verbose=not args.quiet, callbacks=callbacks)
    except TrainingInterrupted as e:
        print(f"scratchadv train: {e} (resume with --resume)", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"scratchadv train: error: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    arch = plan.architecture
    extra = {}
    if selected is not None:
        params = selected["params"]
        extra["selection"] = {k: v for k, v in selected.items() if k != "params"}
        print(f"selected epoch {selected['epoch']}: PGD-{selected['steps']} accuracy "
              f"{selected['robust_accuracy']:.4f} at eps {selected['eps']:g} on {selected['n']} "
              f"held-out training images")
    _, train_acc = evaluate_split(params, x_train, y_train, arch.predict)
    test_loss, test_acc = evaluate_split(params, x_test, y_test, arch.predict)
    save_model(args.out, params, arch.name, config=plan.config, history=history,
               extra={"train_acc": train_acc, "test_acc": test_acc, **extra})
    if select_path and os.path.exists(select_path):   # the model file now holds the selection
        os.remove(select_path)
    metrics = {"architecture": arch.name, "train_acc": train_acc, "test_acc": test_acc,
               "test_loss": test_loss, "epochs": args.epochs, "seconds": seconds,
               "seconds_per_epoch": history["seconds"], "config": plan.config, "history": history,
               "model": os.path.abspath(args.out), **extra}
    if args.metrics:
        atomic_write_json(args.metrics, metrics)
    print(f"train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f} "
          f"({seconds:.0f}s) -> {args.out}")
    return 0


# --- info ------------------------------------------------------------------

@command("info", help="print what a model or training-state file holds")
def _add_info(p):
    p.add_argument("model", help="a .npz written by scratchadv")


@_add_info.run
def _run_info(args):
    from .checkpoint import describe
    print(describe(args.model))
    return 0


# --- gradcheck -------------------------------------------------------------

@command("gradcheck", help="check the network's gradients against finite differences (float64)")
def _add_gradcheck(p):
    p.add_argument("--model", default=None, help="model file to check (default: random weights)")
    p.add_argument("--architecture", default="lecture-cnn-v1",
                   help="architecture of the random weights when no --model is given "
                        "(lecture-cnn-v1, mlp-v1, softmax-v1)")
    p.add_argument("--order", type=int, default=1, choices=[1, 2],
                   help="1: first derivatives; 2: also second derivatives (default 1)")
    p.add_argument("--n", type=int, default=4, help="number of images (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, images and picks (default 0)")
    p.add_argument("--images", default="auto", choices=["auto", "mnist", "random"],
                   help="MNIST test images (auto: if the data is found) or uniform noise")
    p.add_argument("--data", default=None, help="folder with the MNIST files")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the gradient penalty (default 1)")
    p.add_argument("--coords", type=int, default=16,
                   help="single entries compared per array, at random when larger (default 16)")
    p.add_argument("--directions", type=int, default=2,
                   help="random unit directions compared per array (default 2)")
    p.add_argument("--no-jitter", action="store_true",
                   help="keep exact ties (blank backgrounds): finite differences then hit kinks")
    p.add_argument("--eps", type=float, default=1e-6,
                   help="finite-difference step (default 1e-6; 1e-5 suits the tiny gradients "
                        "of a confident trained model better)")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (default 1e-6)")
    p.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance (default 1e-8)")
    p.add_argument("--metrics", default=None, help="write the report as JSON here")


@_add_gradcheck.run
def _run_gradcheck(args):
    import numpy as np

    from .fileio import atomic_write_json, check_writable
    from .gradcheck import check_network, format_table, generic_point
    from .model import get_architecture
    from .validate import check_float, check_int

    n = check_int(args.n, "--n", minimum=1, maximum=1000)
    check_int(args.seed, "--seed", minimum=0)
    check_float(args.lam, "--lam", minimum=0)
    check_writable(args.metrics, "--metrics")
    rng = np.random.default_rng(args.seed)
    if args.model:
        from .checkpoint import load_model
        params, meta = load_model(args.model, dtype=np.float64)
        arch = get_architecture(meta["architecture"])
        source = args.model
    else:
        arch = get_architecture(args.architecture)
        params = arch.init_params(rng, dtype=np.float64)
        source = f"random {arch.name} weights (seed {args.seed})"
    x = y = None
    if args.images in ("auto", "mnist"):
        from .data import DataError, load_mnist
        try:
            _, _, x_test, y_test = load_mnist(args.data)
            pick = np.sort(rng.choice(len(x_test), size=n, replace=False))
            x, y = x_test[pick], y_test[pick]
            images = f"{n} MNIST test images {pick.tolist()}"
        except DataError:
            if args.images == "mnist":
                raise
    if x is None:
        x = rng.uniform(0, 1, size=(n, 1, 28, 28))
        y = rng.integers(0, 10, size=n)
        images = f"{n} uniform-noise images"
    params, x = generic_point(params, x, rng, jitter=0 if args.no_jitter else 1e-3)
    print(f"gradient check, float64, order {args.order}: {source}; {images}"
          + ("" if args.no_jitter else " (jittered by 1e-3 off exact ties)"))
    results = check_network(params, x, y, predict_fn=arch.predict, lam=args.lam,
                            order=args.order, coords=args.coords, directions=args.directions,
                            eps=args.eps, rtol=args.rtol, atol=args.atol, rng=rng)
    failed = 0
    for title, rows in results:
        print()
        print(format_table(rows, title=title))
        failed += sum(not r["passed"] for r in rows)
    total = sum(len(rows) for _, rows in results)
    print(f"\n{total - failed} of {total} arrays pass "
          f"(abs err <= {args.atol:g} + {args.rtol:g} * max|numerical|)")
    if args.metrics:
        atomic_write_json(args.metrics, {
            "source": source, "images": images, "order": args.order, "lam": args.lam,
            "eps": args.eps, "rtol": args.rtol, "atol": args.atol, "passed": failed == 0,
            "checks": {title: rows for title, rows in results}})
    return 1 if failed else 0


def _check_workers_flag(args):
    """--workers: an integer from 1 to the library's limit (the error names the flag)."""
    from .parallel import MAX_WORKERS
    from .validate import check_int
    return check_int(args.workers, "--workers", minimum=1, maximum=MAX_WORKERS)


# --- evaluate / compare ----------------------------------------------------

def _add_eval_options(p):
    p.add_argument("--n", type=int, default=1000, help="evaluate on the first N test images (default 1000)")
    p.add_argument("--eps", type=_floats, default=None,
                   help="Linf radii in pixel scale (default 0,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5; "
                        "0.5 is always added for the sanity check)")
    p.add_argument("--suite", default="pgd", choices=["pgd", "autoattack"],
                   help="pgd: FGSM, PGD and L2 PGD with restarts (default); autoattack: FGSM and the "
                        "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at every eps")
    p.add_argument("--attacks", default=None,
                   help="comma-separated from fgsm, pgd (Linf), pgd-l2, autoattack, square "
                        "(default: the suite's)")
    p.add_argument("--steps", type=int, default=40, help="steps of the iterative attacks (default 40)")
    p.add_argument("--restarts", type=int, default=5, help="random restarts of the iterative attacks (default 5)")
    p.add_argument("--l2-scale", type=float, default=None,
                   help="pgd-l2 radius = L2_SCALE x eps (default 7 = sqrt(784)/4)")
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and noise (default 0)")
    p.add_argument("--data", default=None, help="folder with the MNIST files (default: $SCRATCHADV_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a sanity check fails")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation from the state kept in the report folder")
    p.add_argument("--workers", type=int, default=1,
                   help="processes to run the attacks in, one BLAS thread each (default 1; 2 uses "
                        "both cores of a 2-core machine; results are reproducible for a given count)")


def _eval_settings(args):
    from .evaluate import ATTACKS, DEFAULT_EPS, L2_SCALE, SUITES
    from .validate import check_float, check_int
    check_int(args.n, "--n", minimum=1, maximum=10000)
    check_int(args.steps, "--steps", minimum=1)
    check_int(args.restarts, "--restarts", minimum=1)
    check_int(args.seed, "--seed", minimum=0)
    _check_workers_flag(args)
    names = ",".join(SUITES[args.suite]) if args.attacks is None else args.attacks
    attacks = [a.strip() for a in names.split(",") if a.strip()]
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"--attacks: expected names from {sorted(ATTACKS)}, got {a!r}")
    if not attacks:
        raise ValueError("--attacks: expected at least one attack name, got none")
    eps = list(DEFAULT_EPS) if args.eps is None else args.eps
    for e in eps:
        check_float(e, "--eps", minimum=0, maximum=1)
    l2 = L2_SCALE if args.l2_scale is None else check_float(args.l2_scale, "--l2-scale", minimum=0, strict_min=True)
    return {"eps_list": eps, "attacks": attacks, "steps": args.steps, "restarts": args.restarts,
            "seed": args.seed, "l2_scale": l2, "verbose": not args.quiet, "suite": args.suite,
            "workers": args.workers}


def _evaluate_file(path, settings, args, test):
    """Evaluate a model file on the first --n test images -> report dict."""
    from .evaluate import evaluate_file
    x, y = test
    try:
        return evaluate_file(path, x[:args.n], y[:args.n], data="MNIST test set, first n images",
                             **settings)
    except ValueError as e:
        if str(e).startswith("path: "):      # the model file is the one given by --model
            raise ValueError("--model: " + str(e)[len("path: "):]) from None
        raise


def _remove_state(folder):
    """A finished evaluation's state is no longer needed (the report holds the result)."""
    import shutil
    shutil.rmtree(folder, ignore_errors=True)


def _print_report(report):
    from .evaluate import format_sanity
    cols = list(report["attacks"]) + ["noise", "worst_case"]
    print(f"{report['name']}: clean accuracy {report['clean_accuracy']:.4f} on {report['n']} test images")
    print("   eps  " + "".join(f"{c:>11}" for c in cols))
    for r in report["results"]:
        print(f"{r['eps']:6.3f}  " + "".join(f"{r['accuracy'][c]:11.4f}" for c in cols))
    for line in format_sanity(report):
        print("  " + line)


def _load_test(args):
    from .data import load_mnist
    _, _, x_test, y_test = load_mnist(args.data)
    if args.n > len(x_test):
        raise ValueError(f"--n: expected at most {len(x_test)} (the test set), got {args.n}")
    return x_test, y_test


@command("evaluate", help="robust accuracy vs eps under several attacks, worst case, sanity checks")
def _add_evaluate(p):
    p.add_argument("--model", required=True, help="a model file written by `scratchadv train`")
    p.add_argument("--report", default=None,
                   help="folder for report.json, report.md and accuracy.png (default runs/eval-<model>)")
    _add_eval_options(p)


@_add_evaluate.run
def _run_evaluate(args):
    from .evaluate import write_report
    from .fileio import check_writable
    settings = _eval_settings(args)
    if not os.path.isfile(args.model):
        raise ValueError(f"--model: no such file {args.model!r}")
    folder = args.report or os.path.join(
        "runs", "eval-" + os.path.splitext(os.path.basename(args.model))[0])
    check_writable(os.path.join(folder, "report.json"), "--report")
    # the resumable state lives beside the report until the report is written
    state = os.path.join(folder, "state")
    report = _evaluate_file(args.model, {**settings, "state_dir": state, "resume": args.resume},
                            args, _load_test(args))
    paths = write_report(report, folder)
    _remove_state(state)
    _print_report(report)
    print(f"report: {paths['md']}, {paths['json']}, {paths['png']} ({report['seconds']:.0f}s)")
    failed = [c for c in report["sanity"] if not c["passed"]]
    return 1 if (args.strict and failed) else 0


@command("compare", help="evaluate several models with the same attacks: one table, one plot")
def _add_compare(p):
    p.add_argument("models", nargs="+",
                   help="model files (.npz), or report.json files / report folders of `scratchadv evaluate`")
    p.add_argument("--report", required=True, help="folder for comparison.json, .md and .png")
    _add_eval_options(p)


@_add_compare.run
def _run_compare(args):
    from .evaluate import load_report, write_comparison, write_report
    from .fileio import check_writable
    settings = _eval_settings(args)
    for m in args.models:
        if not os.path.exists(m):
            raise ValueError(f"models: no such file or folder {m!r}")
    check_writable(os.path.join(args.report, "comparison.json"), "--report")
    test = None
    reports = []
    for m in args.models:
        if os.path.isdir(m) or m.endswith(".json"):
            reports.append(load_report(m))
            continue
        if test is None:
            test = _load_test(args)
        folder = os.path.join(args.report, os.path.splitext(os.path.basename(m))[0])
        state = os.path.join(folder, "state")
        r = _evaluate_file(m, {**settings, "state_dir": state, "resume": args.resume}, args, test)
        write_report(r, folder)
        _remove_state(state)
        reports.append(r)
    names = [r["name"] for r in reports]
    if len(set(names)) < len(names):
        raise ValueError(f"models: expected distinct names (file names), got {names}")
    paths = write_comparison(reports, args.report)
    for r in reports:
        _print_report(r)
    print(f"comparison: {paths['md']}, {paths['json']}, {paths['png']}")
    failed = [c for r in reports for c in r.get("sanity", []) if not c["passed"]]
    return 1 if (args.strict and failed) else 0


# --- export / import -------------------------------------------------------

@command("export", help="write a model's weights for PyTorch (state_dict names) or Keras (.npz)")
def _add_export(p):
    p.add_argument("--format", required=True, choices=["torch", "keras"],
                   help="torch: state_dict names and layouts; keras: Conv2D/Dense kernels, "
                        "channels-last flatten order")
    p.add_argument("model", help="a model file written by scratchadv")
    p.add_argument("out", help="the .npz to write (weight arrays only, no pickle)")


@_add_export.run
def _run_export(args):
    from .fileio import check_writable
    from .interchange import export_weights
    check_writable(args.out, "out")
    arch = export_weights(args.model, args.out, args.format)
    print(f"{args.model} ({arch}) -> {args.out} ({args.format} layout)")
    return 0


@command("import", help="make a model file from PyTorch (state_dict) or Keras weights in an .npz")
def _add_import(p):
    p.add_argument("--format", required=True, choices=["torch", "keras"],
                   help="layout of the input: torch (state_dict names) or keras (conv2d/kernel ...)")
    p.add_argument("--architecture", default=None,
                   help="expected architecture (default: recognised from names and shapes)")
    p.add_argument("weights", help="an .npz of named weight arrays (read without pickle)")
    p.add_argument("model", help="the model file to write")


@_add_import.run
def _run_import(args):
    from .fileio import check_writable
    from .interchange import import_weights
    check_writable(args.model, "model")
    arch = import_weights(args.weights, args.model, args.format, args.architecture)
    print(f"{args.weights} ({args.format} layout, {arch}) -> {args.model}")
    return 0


# --- attack / fake -----------------------------------------------------------

_ATTACK_METHODS = ("fgsm", "pgd", "ascent", "penalty", "apgd", "apgd-t", "fab", "square", "deepfool",
                   "cw", "autoattack")
_BALL = ("fgsm", "pgd", "apgd", "apgd-t", "fab", "square", "autoattack")     # eps-bounded


def _target_arg(text):
    """'3' -> 3; 'each' -> 'each' (every class other than the label; penalty: all ten)."""
    if text == "each":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class 0-9 or 'each', got {text!r}") from None


def _load_attack_model(path):
    from .checkpoint import load_model
    from .model import get_architecture
    if not os.path.isfile(path):
        raise ValueError(f"--model: no such file {path!r}")
    params, meta = load_model(path)
    return params, get_architecture(meta["architecture"])


@command("attack", help="attack the first N test images (FGSM, PGD, the lecture's ascent or penalty attack)")
def _add_attack(p):
    p.add_argument("--model", required=True, help="a model file written by `scratchadv train`")
    p.add_argument("--method", required=True, choices=_ATTACK_METHODS,
                   help="fgsm, pgd (BIM with --no-random-start), ascent (lecture, untargeted), "
                        "penalty (lecture, targeted), apgd (Auto-PGD, --loss ce|dlr), apgd-t and fab "
                        "(targeted; without --target the 9 highest-ranked wrong classes, as "
                        "AutoAttack), square (gradient-free), deepfool and cw (minimal-norm: metrics' "
                        "norms over the images they flip), autoattack (the standard ensemble)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="the ball (default linf)")
    p.add_argument("--eps", type=float, default=None, help="the ball's radius (default 0.3 Linf, 2.0 L2)")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations (default: pgd 40, ascent 20, penalty 100, apgd/apgd-t/fab 100, "
                        "deepfool 50, cw 10000 per binary-search step)")
    p.add_argument("--queries", type=int, default=None, help="square: model queries per image (default 5000)")
    p.add_argument("--binary-steps", type=int, default=None,
                   help="cw: binary-search steps over the constant c (default 9, Foolbox's)")
    p.add_argument("--workers", type=int, default=1,
                   help="autoattack: processes to run it in, one BLAS thread each (default 1; "
                        "results are reproducible for a given count)")
    p.add_argument("--step-size", type=float, default=None,
                   help="pgd: 0.01 (Linf) or 2.5*eps/steps (L2); ascent: 0.05 (the lecture's); "
                        "penalty: learning rate 0.1")
    p.add_argument("--restarts", type=int, default=1,
                   help="random restarts of pgd, apgd, apgd-t, fab, square (default 1)")
    p.add_argument("--no-random-start", action="store_true", help="pgd: start at x (BIM)")
    p.add_argument("--target", type=_target_arg, default=None,
                   help="a class 0-9, or 'each': every wrong class for each image "
                        "(penalty: all ten classes, as in the lecture's grid); default untargeted")
    p.add_argument("--lam", type=float, default=30.0, help="penalty: weight of the closeness term (default 30)")
    p.add_argument("--penalty", default="l1", choices=["l1", "l2"],
                   help="penalty: mean |x - x*| (l1, default) or mean (x - x*)^2 (l2)")
    p.add_argument("--loss", default="ce", choices=["ce", "lecture", "dlr"],
                   help="ascent/penalty: cross-entropy (ce, default) or the slides' own loss "
                        "(lecture: Keras's binary_crossentropy(pred, target), ~3.2 (1 - p)); "
                        "apgd: ce (default) or dlr (Croce & Hein's difference of logits ratio)")
    p.add_argument("--n", type=int, default=1000, help="attack the first N test images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (default 0)")
    p.add_argument("--metrics", default=None, help="write a JSON summary here")
    p.add_argument("--figure", default=None, help="write a PNG of the first attacked image here")
    p.add_argument("--data", default=None, help="folder with the MNIST files (default: $SCRATCHADV_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_add_attack.run
def _run_attack(args):
    import numpy as np

    from .attacks import attack_dataset, default_step_size
    from .attacks.dataset import check_method_target
    from .fileio import atomic_write_json, check_writable
    from .validate import check_float, check_int

    def flagged(call, *a, **k):
        """The library names its parameter `target`; here it is --target."""
        try:
            return call(*a, **k)
        except (ValueError, TypeError) as e:
            if str(e).startswith("target:"):
                raise type(e)(f"--{e}") from None
            raise

    m = args.method
    n = check_int(args.n, "--n", minimum=1, maximum=10000)
    check_int(args.seed, "--seed", minimum=0)
    check_int(args.restarts, "--restarts", minimum=1)
    if args.steps is not None:
        check_int(args.steps, "--steps", minimum=1)
    if args.step_size is not None:
        check_float(args.step_size, "--step-size", minimum=0, strict_min=True)
    flagged(check_method_target, m, args.target)
    misplaced = {
        "--eps": (args.eps is not None, _BALL),
        "--norm": (args.norm != "linf", _BALL + ("deepfool",)),
        "--restarts": (args.restarts != 1, ("pgd", "apgd", "apgd-t", "fab", "square")),
        "--no-random-start": (args.no_random_start, ("pgd",)),
        "--steps": (args.steps is not None, ("pgd", "ascent", "penalty", "apgd", "apgd-t", "fab",
                                             "deepfool", "cw")),
        "--binary-steps": (args.binary_steps is not None, ("cw",)),
        "--step-size": (args.step_size is not None, ("pgd", "ascent", "penalty")),
        "--queries": (args.queries is not None, ("square",)),
        "--workers": (args.workers != 1, ("autoattack",)),
        "--lam": (args.lam != 30.0, ("penalty",)),
        "--penalty": (args.penalty != "l1", ("penalty",)),
        "--loss": (args.loss != "ce", ("ascent", "penalty", "apgd")),
    }
    if m == "cw" and args.norm == "l2":      # CW is an L2 attack: --norm l2 only says so
        misplaced.pop("--norm")
    for name, (given, methods) in misplaced.items():
        if given and m not in methods:
            raise ValueError(f"{name}: not used by --method {m} (only by {', '.join(methods)})")
    if args.loss == "dlr" and m != "apgd":
        raise ValueError(f"--loss: dlr is a loss of --method apgd, not of {m}")
    if args.loss == "lecture" and m == "apgd":
        raise ValueError("--loss: apgd takes ce or dlr")
    if args.queries is not None:
        check_int(args.queries, "--queries", minimum=1)
    if args.binary_steps is not None:
        check_int(args.binary_steps, "--binary-steps", minimum=1)
    _check_workers_flag(args)
    eps = args.eps if args.eps is not None else (0.3 if args.norm == "linf" else 2.0)
    check_float(eps, "--eps", minimum=0)
    check_writable(args.metrics, "--metrics")
    check_writable(args.figure, "--figure")
    # the method's options with the command's defaults, in the order of the metrics' config
    if m == "fgsm":
        options = {"norm": args.norm, "eps": eps}
    elif m == "pgd":
        steps = args.steps or 40
        a = args.step_size if args.step_size is not None else (
            0.01 if args.norm == "linf" else default_step_size(eps, steps))
        options = {"norm": args.norm, "eps": eps, "steps": steps, "step_size": a,
                   "restarts": args.restarts, "random_start": not args.no_random_start}
    elif m == "ascent":
        options = {"steps": args.steps or 20,
                   "step": args.step_size if args.step_size is not None else 0.05, "loss": args.loss}
    elif m == "penalty":
        options = {"steps": args.steps or 100,
                   "lr": args.step_size if args.step_size is not None else 0.1,
                   "lam": args.lam, "penalty": args.penalty, "loss": args.loss}
    elif m == "apgd":
        options = {"norm": args.norm, "eps": eps, "loss": args.loss, "steps": args.steps or 100,
                   "restarts": args.restarts}
    elif m in ("apgd-t", "fab"):
        options = {"norm": args.norm, "eps": eps, "steps": args.steps or 100, "restarts": args.restarts}
    elif m == "square":
        options = {"norm": args.norm, "eps": eps, "queries": args.queries or 5000,
                   "restarts": args.restarts}
    elif m == "deepfool":
        options = {"norm": args.norm, "steps": args.steps or 50}
    elif m == "cw":                              # L2 only; Foolbox 3.3.4's defaults
        options = {"steps": args.steps or 10000, "binary_steps": args.binary_steps or 9}
    else:                                       # autoattack: seeded by position, not by rng
        options = {"norm": args.norm, "eps": eps, "seed": args.seed}
        if args.workers > 1:
            options["workers"] = args.workers

    params, arch = _load_attack_model(args.model)
    x, y = _load_test(args)
    res, xs, ys, ts, metrics = flagged(
        attack_dataset, params, x[:n], y[:n], m, target=args.target, predict_fn=arch.predict,
        rng=np.random.default_rng(args.seed), verbose=not args.quiet, **options)
    config = {"method": m, "model": os.path.abspath(args.model), "architecture": arch.name,
              "target": args.target, "seed": args.seed, **options}
    metrics["config"] = config
    print(f"{m}{' ' + args.norm if m in _BALL else ''}: clean acc {metrics['clean_acc']:.4f}, "
          f"robust acc {metrics['robust_acc']:.4f}, success rate {metrics['success_rate']:.4f} "
          f"on {n} images ({metrics['seconds']:.1f}s)")
    print(f"  perturbation (median over attacked images): Linf {metrics['median_linf']:.4f}, "
          f"L2 {metrics['median_l2']:.4f}, L1 {metrics['median_l1']:.2f}")
    if m == "autoattack":
        d = metrics["details"]
        print("  robust accuracy after each attack: " + ", ".join(
            f"{a} {d['after'][a]:.4f} ({d['fooled'][a]} turned)" for a in d["attacks"]))
        c = d["checks"]
        print(f"  closing check: max {args.norm} perturbation {c['max_perturbation']:.5f} "
              f"(eps {c['eps']:g}), NaN {c['nan']}, range [{c['min']:g}, {c['max']:g}]"
              + ("; WARNING: Square lowered the white-box result: the gradients may be masked"
                 if d["square_warning"] else ""))
    if args.metrics:
        atomic_write_json(args.metrics, metrics)
    if args.figure:
        _attack_figure(args.figure, m, args, config, xs, ys, ts, res, params, arch)
        print(f"figure: {args.figure}")
    return 0


def _attack_figure(path, method, args, config, xs, ys, ts, res, params, arch):
    """The lecture view for the first image: ascent snapshots, the targeted grid, or
    clean | perturbation | adversarial."""
    import numpy as np

    from . import plots
    from .attacks.result import softmax

    def probs(v):
        return softmax(arch.predict(params, v))

    if method == "ascent":
        return plots.plot_ascent(path, xs, res, 0, true=int(ys[0]), step=config.get("step"))
    if args.target == "each":
        per = 10 if method == "penalty" else 9
        sel = slice(0, per)
        imgs, pr, tg = list(res.x_adv[sel]), list(res.probs[sel]), [int(t) for t in ts[sel]]
        if per == 9:                  # the clean image in its own class's place
            imgs.append(xs[0])
            pr.append(probs(xs[:1])[0])
            tg.append(int(ys[0]))
        order = np.argsort(tg)
        imgs, pr, tg = [imgs[j] for j in order], [pr[j] for j in order], [tg[j] for j in order]
        titles = [f"target {t}" + ("  (clean)" if per == 9 and t == int(ys[0]) else "")
                  for t in tg]
        fit = "CE(target)" if args.loss == "ce" else "slides' loss(target)"
        what = (f"targeted {method}: {fit} + {args.lam:g} * mean{'|d|' if args.penalty == 'l1' else ' d^2'}"
                if method == "penalty" else f"targeted {method} {args.norm}")
        return plots.plot_grid(path, np.stack(imgs), np.stack(pr), titles=titles, targets=tg,
                               trues=[int(ys[0])] * 10, ncols=5,
                               suptitle=f"{what}: a test \"{int(ys[0])}\" to every class")
    i = 0
    target = None if ts is None else int(ts[i])
    what = (f"{method} {config['norm']} eps {config['eps']:g}" if method in ("fgsm", "pgd")
            else f"penalty attack ({config['penalty']}, lam {config['lam']:g})")
    towards = f", target {target}" if target is not None else ""
    return plots.plot_perturbation(path, xs[i], res.x_adv[i], probs(xs[i:i + 1])[0], res.probs[i],
                                   true=int(ys[i]), target=target,
                                   title=f"{what}{towards}: first attacked test image (label {int(ys[i])})")


@command("fake", help="the lecture's fake images: descend a class's loss from uniform noise")
def _add_fake(p):
    p.add_argument("--model", required=True, help="a model file written by `scratchadv train`")
    p.add_argument("--target", default="all", help="a class 0-9 or 'all' (one image per class, default)")
    p.add_argument("--steps", type=int, default=10, help="gradient steps (default 10, the lecture's)")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5, the lecture's)")
    p.add_argument("--loss", default="ce", choices=["ce", "lecture"],
                   help="descend the target's cross-entropy (ce, default) or the slides' own loss "
                        "(lecture: Keras's binary_crossentropy(pred, target), ~3.2 (1 - p_target))")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--figure", default=None, help="write a PNG of the images and their predictions")
    p.add_argument("--metrics", default=None, help="write a JSON summary here")
    p.add_argument("--quiet", action="store_true", help="do not print the loss at each step")


@_add_fake.run
def _run_fake(args):
    import numpy as np

    from . import plots
    from .attacks import fake_image
    from .fileio import atomic_write_json, check_writable
    from .validate import check_float, check_int

    if args.target == "all":
        targets = np.arange(10, dtype=np.int64)
    else:
        try:
            t = int(args.target)
        except ValueError:
            raise ValueError(f"--target: expected a class 0-9 or 'all', got {args.target!r}") from None
        targets = np.array([check_int(t, "--target", minimum=0, maximum=9)], dtype=np.int64)
    check_int(args.steps, "--steps", minimum=1)
    check_float(args.lr, "--lr", minimum=0, strict_min=True)
    check_int(args.seed, "--seed", minimum=0)
    check_writable(args.metrics, "--metrics")
    check_writable(args.figure, "--figure")
    params, arch = _load_attack_model(args.model)
    res = fake_image(params, targets, steps=args.steps, lr=args.lr, loss=args.loss,
                     rng=np.random.default_rng(args.seed), predict_fn=arch.predict,
                     verbose=not args.quiet)
    p = res.probs[np.arange(len(targets)), targets]
    for t, v, k in zip(targets, p, res.pred):
        print(f"target {t}: p(target) {v:.4f}, predicted {k}")
    print(f"min p(target) {p.min():.4f}; {int(np.sum(p >= 0.99))}/{len(p)} at >= 0.99")
    if args.metrics:
        atomic_write_json(args.metrics, {
            "model": os.path.abspath(args.model), "architecture": arch.name,
            "steps": args.steps, "lr": args.lr, "loss": args.loss, "seed": args.seed,
            "target_prob": {str(int(t)): float(v) for t, v in zip(targets, p)},
            "predicted": {str(int(t)): int(k) for t, k in zip(targets, res.pred)},
            "min_target_prob": float(p.min()),
            "loss_per_step": {str(int(t)): res.loss_history[:, i].tolist()
                              for i, t in enumerate(targets)},
            "mean_loss_per_step": res.loss_history.mean(1).tolist()})
    if args.figure:
        if len(targets) > 1:
            plots.plot_fake_images(args.figure, res)
        else:
            plots.plot_prediction(args.figure, res.x_adv[0], res.probs[0], target=int(targets[0]),
                                  title=f"fake image for class {int(targets[0])}")
        print(f"figure: {args.figure}")
    return 0


# --- demo ------------------------------------------------------------------

@command("demo", help="run the lecture start to end: train, attack, defend; write a report folder")
def _add_demo(p):
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="report folder: README.md, results.json, PNG figures (default runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="smaller subsets, fewer epochs and attack steps (a smoke test, under 3 minutes)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed for every init, shuffle and attack (default 0)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="folder of trained models reused by later runs "
                        "(default $SCRATCHADV_CACHE/models or ~/.cache/scratchadv/models)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder with the MNIST files (default: $SCRATCHADV_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="processes for the defended models' data-parallel training and the "
                        "robustness evaluations, one BLAS thread each, and threads of the demo's own "
                        "process; with 2 or more, sections 2, 4 and 5 run in a second process beside "
                        "the others (default: the CPUs available, at most 8; the numbers are "
                        "reproducible for a given count, and defended models trained with another "
                        "count are other models, cached apart)")


@_add_demo.run
def _run_demo(args):
    from .cache import default_cache_dir
    from .demo import run_demo
    from .fileio import check_writable
    from .train import TrainingInterrupted
    from .validate import check_int
    check_int(args.seed, "--seed", minimum=0)
    if args.workers is None:
        from .parallel import available_cpus
        args.workers = available_cpus()
    _check_workers_flag(args)
    check_writable(os.path.join(args.out, "results.json"), "--out")
    check_writable(os.path.join(args.cache or default_cache_dir(), "probe.npz"), "--cache")
    argv = ["scratchadv demo", "--out", args.out] + (["--quick"] if args.quick else []) \
        + (["--seed", str(args.seed)] if args.seed else []) \
        + (["--cache", args.cache] if args.cache else []) + (["--data", args.data] if args.data else []) \
        + (["--workers", str(args.workers)] if args.workers > 1 else [])

    try:            # SIGTERM arrives as KeyboardInterrupt (main): training saves its state
        run_demo(args.out, quick=args.quick, seed=args.seed, cache=args.cache, data=args.data,
                 verbose=not args.quiet, command=" ".join(argv), workers=args.workers)
    except TrainingInterrupted as e:
        print(f"scratchadv demo: {e}; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


# --- verify ----------------------------------------------------------------

@command("verify", help="check every gradient against PyTorch, JAX and TensorFlow on the same "
                        "weights and images; --conventions: their tie and dtype conventions")
def _add_verify(p):
    p.add_argument("--model", default=None, metavar="M",
                   help="a model file to check (default: random weights of --architecture)")
    p.add_argument("--architecture", default=None,
                   help="architecture of the random weights (default lecture-cnn-v1), or the "
                        "one --model must have")
    p.add_argument("--against", default="torch,jax,tensorflow", metavar="F,...",
                   help="frameworks to compare with (default torch,jax,tensorflow)")
    p.add_argument("--dtype", dest="dtypes", default="float64,float32", metavar="D,...",
                   help="float64 (target rel err 1e-10) and/or float32 (1e-4); default both")
    p.add_argument("--n", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--images", default="mnist,random",
                   help="mnist (real digits, exact ties), random (noise); default both")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and images (default 0)")
    p.add_argument("--data", default=None, help="folder with the MNIST files")
    p.add_argument("--json", default=None, metavar="J", help="write the full report as JSON here")
    p.add_argument("--conventions", action="store_true",
                   help="print the measured conventions table (Markdown) instead")
    p.add_argument("--quiet", action="store_true", help="only the summary lines")


@_add_verify.run
def _run_verify(args):
    from . import verify
    from .checkpoint import CheckpointError, load_model
    from .fileio import atomic_write_json, check_writable
    from .model import get_architecture

    against = verify.check_frameworks(args.against)
    if args.conventions:
        table = verify.conventions(against)
        print(verify.format_conventions(table))
        if args.json:
            check_writable(args.json, "--json")
            atomic_write_json(args.json, table)
        return 0
    dtypes = verify.check_dtypes(args.dtypes)
    check_writable(args.json, "--json")
    if args.model is None:
        arch = get_architecture(args.architecture or "lecture-cnn-v1")
        cases = {f"random weights (seed {args.seed})": (arch.init_params(args.seed), arch.name)}
    else:
        if args.architecture is not None:
            get_architecture(args.architecture)
        try:
            params, meta = load_model(args.model, args.architecture)
        except CheckpointError as e:
            raise ValueError(f"model: {e}") from None
        cases = {args.model: (params, meta["architecture"])}
    doc = verify.verify(cases, against=against, dtypes=dtypes, n=args.n, seed=args.seed,
                        data=args.data, images=args.images, verbose=not args.quiet)
    print("all within target" if doc["passed"] else "SOME QUANTITIES OVER TARGET")
    if args.json:
        atomic_write_json(args.json, doc)
    return 0 if doc["passed"] else 1

# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser():
    parser = _Parser(
        prog="scratchadv",
        description="A CNN from scratch in NumPy + autograd: train it, attack it, defend it.")
    parser.add_argument("--version", action="version", version=f"scratchadv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}
    for name, (help, add, _) in _COMMANDS.items():
        parser.commands[name] = sub.add_parser(name, help=help, description=help)
        add(parser.commands[name])
    return parser


#: library parameter names that a command's flag of another name sets
_PARAMETER_FLAGS = {"eps_list": "--eps", "model_path": "--model", "folder": "--report",
                    "target": "--target", "batch_size": "--batch-size", "fmt": "--format"}


def flag_names(subparser):
    """{parameter name: flag} of a sub-command: each option's dest -> its long option
    string ('pgd_steps' -> '--pgd-steps'), positionals -> their own name."""
    out = {}
    for action in subparser._actions:
        if action.option_strings:
            out[action.dest] = max(action.option_strings, key=len)
        elif action.dest != "help":
            out[action.dest] = action.dest
    for param, flag in _PARAMETER_FLAGS.items():
        if flag in out.values():
            out.setdefault(param, flag)
    return out


def to_flags(message, flags):
    """A library error as the command line says it: a leading 'name: ...' (or
    'name[...]: ...') names the flag, and "name='value'" inside reads '--flag value'."""
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?:", message)
    if m and m.group(1) in flags:
        message = flags[m.group(1)] + message[m.end(1):]
    return re.sub(r"\b([a-z_][a-z0-9_]*)='([^']*)'",
                  lambda v: f"{flags[v.group(1)]} {v.group(2)}" if v.group(1) in flags else v.group(0),
                  message)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


#: what the command sets, unless the environment already does, before NumPy loads
BLAS_DEFAULTS = {"OPENBLAS_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


def _one_blas_thread():
    """Give NumPy's BLAS one thread unless the user chose a count: this network's products
    are small, and a second BLAS thread slows every one of them (measured: forward 4.4 ->
    6.4 ms); the cores go to scratchadv's own threads and worker processes instead. Only
    effective before NumPy is first imported (the command imports it lazily)."""
    if "numpy" not in sys.modules:
        for k, v in BLAS_DEFAULTS.items():
            os.environ.setdefault(k, v)


def main(argv=None):
    _one_blas_thread()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run = _COMMANDS[args.command][2]
    from .checkpoint import CheckpointError
    from .data import DataError
    known = (ValueError, TypeError, DataError, CheckpointError)
    old = signal.signal(signal.SIGTERM, _interrupt)   # `kill` stops a command like Ctrl-C
    try:
        return run(args) or 0
    except known as e:
        msg = " ".join(m.strip() for m in str(e).strip().splitlines())
        msg = to_flags(msg, flag_names(parser.commands[args.command]))
        print(f"scratchadv {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scratchadv {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())

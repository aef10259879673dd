"""The ``scratchadv`` command: argument parsing only; the work is done by the modules.

Each sub-command is a pair ``_add_<name>(parser)`` / ``_run_<name>(args)`` registered
with ``@command``. Errors in the user's input (``ValueError``, ``TypeError``,
``DataError``, ``CheckpointError``) become one line on stderr and exit status 2.
"""
import argparse
import os
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


class UsageError(ValueError):
    """A bad command-line value (reported like argparse errors: one line, exit 2)."""


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
    d.add_argument("--defense", default="none", choices=["none", "pgd", "gradreg"],
                   help="pgd: adversarial (min-max) training; gradreg: input-gradient regularization")
    d.add_argument("--eps", type=float, default=None, help="pgd: Linf radius of the training attack")
    d.add_argument("--pgd-steps", type=int, default=None, help="pgd: attack steps per batch")
    d.add_argument("--pgd-step-size", type=float, default=None, help="pgd: attack step size")
    d.add_argument("--clean-frac", type=float, default=None, help="pgd: fraction of clean images per batch")
    d.add_argument("--eps-warmup", type=float, default=None, help="pgd: epochs over which eps ramps up")
    d.add_argument("--lam", type=float, default=None, help="gradreg: weight of the squared input gradient")


@_add_train.run
def _run_train(args):
    import signal
    import time

    from .checkpoint import save_model
    from .data import load_mnist
    from .fileio import atomic_write_json, check_writable
    from .model import get_architecture
    from .optim import get_optimizer
    from .train import TrainingInterrupted, evaluate_split, fit
    from .validate import check_int

    check_int(args.epochs, "--epochs", minimum=1)
    check_int(args.batch_size, "--batch-size", minimum=1)
    check_int(args.seed, "--seed", minimum=0)
    if args.limit is not None:
        check_int(args.limit, "--limit", minimum=1, maximum=60000)
    arch = get_architecture(args.architecture)
    optimizer = get_optimizer(args.optimizer, args.lr)
    check_writable(args.out, "--out")
    check_writable(args.metrics, "--metrics")
    state_path = state_path_for(args.out)
    check_writable(state_path, "--out (training state)")

    loss_fn, transform, defense_cfg = None, None, {"defense": "none"}
    defense_opts = {k: getattr(args, k) for k in
                    ("eps", "pgd_steps", "pgd_step_size", "clean_frac", "eps_warmup", "lam")}
    if args.defense == "none":
        given = [k for k, v in defense_opts.items() if v is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')}: only meaningful with --defense pgd|gradreg")
    else:
        from .defenses import make_defense
        loss_fn, transform, defense_cfg = make_defense(
            args.defense, epochs=args.epochs, predict_fn=arch.predict, **defense_opts)

    x_train, y_train, x_test, y_test = load_mnist(args.data)
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]

    def on_term(signum, frame):          # `kill` saves the state like Ctrl-C does
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    try:
        params, history = fit(
            arch.init_params(args.seed), x_train, y_train, x_val=x_test, y_val=y_test,
            epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer, seed=args.seed,
            loss_fn=loss_fn, batch_transform=transform, predict_fn=arch.predict,
            architecture=arch.name, checkpoint_path=state_path, resume=args.resume,
            verbose=not args.quiet, config={"limit": args.limit, **defense_cfg})
    except TrainingInterrupted as e:
        print(f"scratchadv train: {e}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    seconds = time.perf_counter() - t0
    _, train_acc = evaluate_split(params, x_train, y_train, arch.predict)
    test_loss, test_acc = evaluate_split(params, x_test, y_test, arch.predict)
    config = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": optimizer.name,
              **{"opt_" + k: v for k, v in optimizer.hyper.items()}, "seed": args.seed,
              "limit": args.limit, **defense_cfg}
    save_model(args.out, params, arch.name, config=config, history=history,
               extra={"train_acc": train_acc, "test_acc": test_acc})
    metrics = {"architecture": arch.name, "train_acc": train_acc, "test_acc": test_acc,
               "test_loss": test_loss, "epochs": args.epochs, "seconds": seconds,
               "seconds_per_epoch": history["seconds"], "config": config, "history": history,
               "model": os.path.abspath(args.out)}
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
                            rtol=args.rtol, atol=args.atol, rng=rng)
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
            "rtol": args.rtol, "atol": args.atol, "passed": failed == 0,
            "checks": {title: rows for title, rows in results}})
    return 1 if failed else 0


# --- evaluate / compare ----------------------------------------------------

def _add_eval_options(p):
    p.add_argument("--n", type=int, default=1000, help="evaluate on the first N test images (default 1000)")
    p.add_argument("--eps", type=_floats, default=None,
                   help="Linf radii in pixel scale (default 0,0.05,0.1,0.15,0.2,0.25,0.3,0.4,0.5; "
                        "0.5 is always added for the sanity check)")
    p.add_argument("--attacks", default="fgsm,pgd,pgd-l2",
                   help="comma-separated from fgsm, pgd (Linf), pgd-l2 (default all three)")
    p.add_argument("--steps", type=int, default=40, help="steps of the iterative attacks (default 40)")
    p.add_argument("--restarts", type=int, default=5, help="random restarts of the iterative attacks (default 5)")
    p.add_argument("--l2-scale", type=float, default=None,
                   help="pgd-l2 radius = L2_SCALE x eps (default 7 = sqrt(784)/4)")
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and noise (default 0)")
    p.add_argument("--data", default=None, help="folder with the MNIST files (default: $SCRATCHADV_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a sanity check fails")


def _eval_settings(args):
    from .evaluate import ATTACKS, DEFAULT_EPS, L2_SCALE
    from .validate import check_float, check_int
    check_int(args.n, "--n", minimum=1, maximum=10000)
    check_int(args.steps, "--steps", minimum=1)
    check_int(args.restarts, "--restarts", minimum=1)
    check_int(args.seed, "--seed", minimum=0)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
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
            "seed": args.seed, "l2_scale": l2, "verbose": not args.quiet}


def _evaluate_file(path, settings, args, test):
    """Evaluate a model file on the first --n test images -> report dict."""
    from .checkpoint import load_model
    from .evaluate import evaluate_model
    from .model import get_architecture
    params, meta = load_model(path)
    arch = get_architecture(meta["architecture"])
    x, y = test
    dtype = next(iter(params.values())).dtype
    if dtype != x.dtype:
        raise ValueError(f"--model: parameters are {dtype}, images are {x.dtype}")
    name = os.path.splitext(os.path.basename(path))[0]
    report = evaluate_model(params, x[:args.n], y[:args.n], predict_fn=arch.predict, name=name, **settings)
    report.update({"model": os.path.abspath(path), "architecture": arch.name,
                   "model_config": meta.get("config", {}), "data": "MNIST test set, first n images"})
    return report


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
    report = _evaluate_file(args.model, settings, args, _load_test(args))
    paths = write_report(report, folder)
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
        r = _evaluate_file(m, settings, args, test)
        write_report(r, os.path.join(args.report, r["name"]))
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


# ---------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        prog="scratchadv",
        description="A CNN from scratch in NumPy + autograd: train it, attack it, defend it.")
    parser.add_argument("--version", action="version", version=f"scratchadv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add, _) in _COMMANDS.items():
        add(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    run = _COMMANDS[args.command][2]
    from .data import DataError
    known = (ValueError, TypeError, DataError)
    try:
        from .checkpoint import CheckpointError
        known = known + (CheckpointError,)
    except ImportError:
        pass
    try:
        return run(args) or 0
    except known as e:
        msg = str(e).strip().splitlines()
        print(f"scratchadv {args.command}: error: {' '.join(m.strip() for m in msg)}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scratchadv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

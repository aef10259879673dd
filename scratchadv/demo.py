"""``scratchadv demo``: the lecture on evasion attacks, start to end, as a report folder.

``run_demo(out)`` runs the lecture's sections in order and writes into ``out``:
``README.md`` (the report: what was done, the numbers beside the lecture's and the
papers' numbers, the figures inline), the PNG figures, ``results.json`` (every number
of the report) and ``evaluation-<model>.json`` (the full robustness reports, readable
by ``scratchadv compare``).

======  ===========================================================================
section what
======  ===========================================================================
1       train the lecture CNN (RMSprop, batch 128, 10 epochs); learning curves
2       a fake image from uniform noise for every class, loss per step
3       the lecture's untargeted gradient ascent on a test "7"; FGSM/PGD vs eps
4       shallow vs deep: median minimal perturbation of softmax regression, MLP, CNN
5       the lecture's targeted penalty attack: one "7" to each class; success rates
6       adversarial training (min-max PGD, Madry et al. 2018)
7       gradient regularization (double backprop, Drucker & LeCun 1992; Ross &
        Doshi-Velez 2018); the three models compared, with the sanity checks
======  ===========================================================================

This module only orchestrates: the work is done by :mod:`~scratchadv.train`,
:mod:`~scratchadv.attacks`, :mod:`~scratchadv.defenses`, :mod:`~scratchadv.evaluate`
and :mod:`~scratchadv.plots`. Its own parts are the model cache, the demo-specific
figures (learning curves, loss per step, perturbation-size distributions), and the
report, which is a pure function of ``results.json`` (:func:`format_readme`).

Model cache: each trained model is stored as ``<cache>/<name>-<key>.npz`` where the
key is a SHA-256 of its training configuration (architecture, epochs, batch size,
optimizer and its hyper-parameters, seed, defense settings, fingerprints of the
training and validation data) and the library version. A second run with the same
settings loads the file instead of training; an interrupted run resumes training from
``<name>-<key>.state.npz`` (written by :func:`scratchadv.train.fit` every epoch).
Every file is written atomically.
"""
import datetime
import hashlib
import json
import os
import time

import numpy as onp

from . import __version__
from .fileio import atomic_write, atomic_write_json, check_writable
from .validate import check_int

__all__ = ["PRESETS", "REFERENCES", "SECTIONS", "default_cache_dir", "cache_key", "cached_fit",
           "run_demo", "format_readme", "write_outputs"]

# ---------------------------------------------------------------------------
# Settings and references
# ---------------------------------------------------------------------------

#: full: the lecture's settings; quick: a smoke test of every section in well under 3 minutes
PRESETS = {
    "full": {
        "n_train": 60000, "epochs": 10, "batch_size": 128, "n_val": 10000,
        "fake_steps": 10, "fake_lr": 0.5,
        "ascent_step": 0.05, "ascent_steps": 20, "ascent_n": 1000,
        "eval_n": 1000, "eval_eps": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5],
        "eval_steps": 40, "eval_restarts": 5,
        "shallow_epochs": 10, "minpert_n": 1000, "minpert_search": 10, "minpert_steps": 20,
        "targeted_n": 1000, "penalty_lam": 30.0, "penalty_steps": 100, "penalty_lr": 0.1,
        "targeted_pgd_eps": 0.3, "targeted_pgd_steps": 40,
        "defense_n_train": 60000, "defense_epochs": 10, "pgd_train_steps": None, "gradreg_lam": None,
    },
    "quick": {
        "n_train": 20000, "epochs": 2, "batch_size": 128, "n_val": 2000,
        "fake_steps": 10, "fake_lr": 0.5,
        "ascent_step": 0.05, "ascent_steps": 20, "ascent_n": 200,
        "eval_n": 200, "eval_eps": [0.0, 0.1, 0.2, 0.3, 0.5],
        "eval_steps": 10, "eval_restarts": 1,
        "shallow_epochs": 2, "minpert_n": 50, "minpert_search": 7, "minpert_steps": 10,
        "targeted_n": 50, "penalty_lam": 30.0, "penalty_steps": 100, "penalty_lr": 0.1,
        "targeted_pgd_eps": 0.3, "targeted_pgd_steps": 10,
        "defense_n_train": 4000, "defense_epochs": 2, "pgd_train_steps": 2, "gradreg_lam": None,
    },
}

#: what each setting means, for the report's settings table
SETTING_DOCS = {
    "n_train": "training images (first N of the training set) for the natural CNN and the shallow models",
    "epochs": "epochs of the natural CNN",
    "batch_size": "mini-batch size of every model (RMSprop, Keras defaults)",
    "n_val": "test images used as validation data during training",
    "fake_steps": "gradient steps of the fake-image descent",
    "fake_lr": "learning rate of the fake-image descent",
    "ascent_step": "untargeted ascent: step 0.05 * g / max|g|",
    "ascent_steps": "untargeted ascent: maximum steps",
    "ascent_n": "test images for the ascent's success rate",
    "eval_n": "test images for robust accuracy (sections 3, 6, 7)",
    "eval_eps": "Linf radii evaluated (0.5 is always added for the sanity check)",
    "eval_steps": "PGD steps in the evaluation (the sanity check also runs twice as many)",
    "eval_restarts": "PGD random restarts in the evaluation",
    "shallow_epochs": "epochs of softmax regression and the MLP",
    "minpert_n": "test images for the minimal-perturbation search",
    "minpert_search": "bisection halvings of [0, 1] (Linf) and [0, 28] (L2) in the minimal-perturbation search",
    "minpert_steps": "PGD steps per bisection probe",
    "targeted_n": "test images for the targeted success rates",
    "penalty_lam": "weight of the closeness penalty (lecture: 30)",
    "penalty_steps": "gradient steps of the penalty attack",
    "penalty_lr": "learning rate of the penalty attack",
    "targeted_pgd_eps": "Linf radius of the targeted PGD comparison",
    "targeted_pgd_steps": "steps of the targeted PGD comparison",
    "defense_n_train": "training images for the two defended models",
    "defense_epochs": "epochs of the two defended models",
    "pgd_train_steps": "PGD steps per mini-batch in adversarial training (None: the library default)",
    "gradreg_lam": "gradient-regularization weight (None: the library default)",
}

#: the numbers the report sets ours beside (see DESIGN.md, "Reference results")
REFERENCES = {
    "lecture_train_acc": 0.995,
    "lecture_val_acc": 0.991,
    "lecture_fake_prob_0": 0.998,
    # Goodfellow, Shlens & Szegedy (2015), sec. 4: FGSM at eps 0.25 on MNIST (error, mean confidence)
    "goodfellow_softmax_fgsm025_error": 0.999,
    "goodfellow_softmax_fgsm025_confidence": 0.793,
    "goodfellow_maxout_fgsm025_error": 0.894,
    "goodfellow_maxout_fgsm025_confidence": 0.976,
    # Ross & Doshi-Velez (2018), MNIST, FGSM accuracy at eps 0.1 / 0.2 / 0.3
    "ross_eps": [0.1, 0.2, 0.3],
    "ross_normal_fgsm": [0.727, 0.277, 0.113],
    "ross_doubleback_fgsm": [0.922, 0.652, 0.277],
    "ross_fgsm_advtrain_fgsm": [0.996, 0.992, 0.965],
    # Madry et al. (2018): a larger CNN PGD-trained at eps 0.3, 100-step PGD with restarts
    "madry_pgd03": 0.89,
    "natural_pgd03_max": 0.02,
}

SECTIONS = ("train", "fake", "untargeted", "shallow_vs_deep", "targeted",
            "adversarial_training", "gradient_regularization")

TITLES = {
    "train": "1. Training the lecture's CNN",
    "fake": "2. A fake image from noise, for every class",
    "untargeted": "3. The untargeted attack",
    "shallow_vs_deep": "4. Shallow vs deep: how large must a perturbation be?",
    "targeted": "5. The targeted attack",
    "adversarial_training": "6. Adversarial training (min-max with PGD)",
    "gradient_regularization": "7. Gradient regularization (double backpropagation)",
}

def _pct(v):
    """A fraction as a percentage with one decimal ('n/a' for None)."""
    return "n/a" if v is None else f"{100 * v:.1f}%"


# ---------------------------------------------------------------------------
# Model cache
# ---------------------------------------------------------------------------

def default_cache_dir():
    """``$SCRATCHADV_CACHE/models``, else ``$XDG_CACHE_HOME/scratchadv/models``, else
    ``~/.cache/scratchadv/models`` (beside the MNIST download cache of :mod:`scratchadv.data`)."""
    from .data import cache_dir
    return os.path.join(os.path.dirname(cache_dir()), "models")


def cache_key(config):
    """16 hex digits of SHA-256 over the JSON of ``config`` (sorted keys) and the library version."""
    blob = json.dumps({"config": config, "library_version": __version__}, sort_keys=True,
                      default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _fingerprint(x, y):
    from .train import data_fingerprint
    return None if x is None else data_fingerprint(x, y)


def cached_fit(name, architecture, x, y, *, cache, x_val=None, y_val=None, epochs=10,
               batch_size=128, seed=0, defense="none", defense_options=None, verbose=True):
    """Train ``architecture`` on (x, y) with RMSprop, or load the identical model from ``cache``.

    name: a file-name prefix ('natural', 'pgd-trained', ...); defense: 'none' | 'pgd' |
    'gradreg' with ``defense_options`` passed to :func:`scratchadv.defenses.make_defense`
    (None entries keep the tuned defaults). Training resumes from the state file an
    interrupted call left behind. Returns ``(params, history, info)`` where info holds
    ``path``, ``key``, ``config``, ``reused`` (bool), ``train_seconds`` (this call's
    training time; 0 when reused) and ``trained_seconds`` (the model's own training time,
    summed over its epochs: also known when it was reused).
    """
    from .checkpoint import CheckpointError, load_model, save_model
    from .defenses import make_defense
    from .model import get_architecture
    from .optim import rmsprop
    from .train import fit

    arch = get_architecture(architecture)
    epochs = check_int(epochs, "epochs", minimum=1)
    opts = {k: v for k, v in (defense_options or {}).items() if v is not None}
    loss_fn, transform, defense_cfg = make_defense(defense, epochs=epochs, predict_fn=arch.predict,
                                                   **opts)
    optimizer = rmsprop()
    config = {"name": name, "architecture": arch.name, "epochs": epochs, "batch_size": batch_size,
              "seed": seed, "optimizer": optimizer.name, **{"opt_" + k: v for k, v in optimizer.hyper.items()},
              "n_train": int(len(x)), "data": _fingerprint(x, y),
              "n_val": None if x_val is None else int(len(x_val)), "val_data": _fingerprint(x_val, y_val),
              **defense_cfg}
    key = cache_key(config)
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{name}-{key}.npz")
    state = os.path.join(cache, f"{name}-{key}.state.npz")
    info = {"path": path, "key": key, "config": config, "reused": False, "train_seconds": 0.0}
    if os.path.exists(path):
        try:
            params, meta = load_model(path, architecture=arch.name)
            if meta.get("config", {}).get("cache_key") != key:
                raise CheckpointError(f"{path}: cache key does not match")
            print(f"reusing cached model {path}", flush=True)
            info["reused"] = True
            history = meta.get("history", {})
            return params, history, {**info, "trained_seconds": _epoch_seconds(history)}
        except CheckpointError as e:      # damaged or foreign file: train again, overwrite it
            print(f"cannot reuse {path} ({e}); training again", flush=True)
    if verbose:
        what = arch.name + ("" if defense == "none" else f", defense {defense}")
        print(f"training {name} ({what}, {epochs} epochs on {len(x)} images)", flush=True)
    t0 = time.perf_counter()
    params, history = fit(arch.init_params(seed), x, y, x_val=x_val, y_val=y_val, epochs=epochs,
                          batch_size=batch_size, optimizer=optimizer, seed=seed, loss_fn=loss_fn,
                          batch_transform=transform, predict_fn=arch.predict,
                          architecture=arch.name, checkpoint_path=state, resume=True,
                          verbose=verbose, config=config)
    info["train_seconds"] = time.perf_counter() - t0
    save_model(path, params, arch.name, config={**config, "cache_key": key}, history=history)
    if os.path.exists(state):            # the finished model replaces the resume point
        os.remove(state)
    return params, history, {**info, "trained_seconds": _epoch_seconds(history)}


def _epoch_seconds(history):
    """Total training time of a model: the sum of its epochs' times in ``history``."""
    return float(sum(history.get("seconds", [])))


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _json_default(o):
    if isinstance(o, onp.generic):
        return o.item()
    if isinstance(o, onp.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _jsonable(obj):
    """Plain Python types all the way down (numpy scalars/arrays -> float/int/list)."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))


def _median(v):
    v = onp.asarray(v, dtype=onp.float64)
    return float(onp.median(v)) if len(v) else None


def _say(ctx, line):
    print(line, flush=True)


def _rng(ctx, section):
    """Each section draws from its own stream: its numbers do not depend on the others."""
    return onp.random.default_rng([ctx["seed"], section])


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    return path


def _figure(ctx, name):
    """Absolute path of figure ``name`` in the report folder; remembered for the report."""
    return os.path.join(ctx["out"], name)


def _test_seven(params, predict_fn, x, y):
    """Index of the first test "7" the model classifies correctly (the lecture's example)."""
    from .model import predict_batched
    idx = onp.flatnonzero(y == 7)[:50]
    pred = onp.argmax(predict_batched(params, x[idx], predict_fn=predict_fn), 1)
    ok = idx[pred == 7]
    return int(ok[0] if len(ok) else idx[0])


# ---------------------------------------------------------------------------
# Demo-specific figures
# ---------------------------------------------------------------------------

def plot_learning_curves(path, history, *, ref_train=None, ref_val=None, title=None):
    """Loss and accuracy per epoch (training: running mean over the epoch, as Keras reports;
    validation: after the epoch), with the lecture's final accuracies as dashed lines."""
    fig = _new_figure(10, 3.6)
    ax_l, ax_a = fig.subplots(1, 2)
    ep = onp.arange(1, len(history["loss"]) + 1)
    ax_l.plot(ep, history["loss"], "o-", label="training")
    if history.get("val_loss"):
        ax_l.plot(ep, history["val_loss"], "s-", label="validation (test set)")
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_a.plot(ep, 100 * onp.asarray(history["accuracy"]), "o-", label="training")
    if history.get("val_accuracy"):
        ax_a.plot(ep, 100 * onp.asarray(history["val_accuracy"]), "s-", label="validation (test set)")
    if ref_train is not None:
        ax_a.axhline(100 * ref_train, color="C0", ls="--", lw=1, label=f"lecture, training {100 * ref_train:.1f}%")
    if ref_val is not None:
        ax_a.axhline(100 * ref_val, color="C1", ls="--", lw=1, label=f"lecture, validation {100 * ref_val:.1f}%")
    lo = min(list(100 * onp.asarray(history["accuracy"])) + list(100 * onp.asarray(history.get("val_accuracy") or [100])))
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(max(0, min(lo, 97) - 1), 100.2))
    for ax in (ax_l, ax_a):
        ax.set_xticks(ep)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save_figure(fig, path)


def plot_loss_per_step(path, loss_history, targets, *, title):
    """Cross-entropy of the target class at each step, one line per target (log scale)."""
    h = onp.asarray(loss_history)
    fig = _new_figure(6.5, 3.8)
    ax = fig.subplots()
    steps = onp.arange(h.shape[0])
    for i, t in enumerate(targets):
        ax.plot(steps, onp.maximum(h[:, i], 1e-8), marker="o", ms=3, color=f"C{int(t) % 10}",
                label=f"target {int(t)}")
    ax.set_yscale("log")
    ax.set(xlabel="gradient step", ylabel="cross-entropy of the target class (log scale)", title=title)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return _save_figure(fig, path)


def plot_minimal_perturbations(path, radii, *, title):
    """Empirical CDFs of the minimal perturbation per model, one panel per norm.

    radii: {norm: {model: (N,) minimal radius over correctly classified images, inf if none}}.
    """
    fig = _new_figure(10, 3.8)
    axes = fig.subplots(1, len(radii))
    for ax, (norm, by_model) in zip(onp.atleast_1d(axes), radii.items()):
        for k, (model, r) in enumerate(by_model.items()):
            r = onp.sort(onp.asarray(r, dtype=onp.float64))
            if not len(r):
                continue
            frac = onp.arange(1, len(r) + 1) / len(r)
            fin = onp.isfinite(r)
            ax.step(r[fin], 100 * frac[fin], where="post", color=f"C{k}", label=f"{model} (median {onp.median(r):.3g})")
            ax.axvline(onp.median(r), color=f"C{k}", ls=":", lw=1)
        ax.set(xlabel=f"minimal {'Linf' if norm == 'linf' else 'L2'} perturbation that flips the prediction",
               ylabel="images flipped (%)", title=f"{'Linf' if norm == 'linf' else 'L2'} ball", ylim=(0, 101))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    return _save_figure(fig, path)


def plot_defense_training(path, histories, *, title):
    """Clean validation accuracy and training loss per epoch, one line per model."""
    fig = _new_figure(10, 3.6)
    ax_a, ax_l = fig.subplots(1, 2)
    for k, (name, h) in enumerate(histories.items()):
        ep = onp.arange(1, len(h["loss"]) + 1)
        if h.get("val_accuracy"):
            ax_a.plot(ep, 100 * onp.asarray(h["val_accuracy"]), "o-", color=f"C{k}", label=name)
        ax_l.plot(ep, h["loss"], "o-", color=f"C{k}", label=name)
    ax_a.set(xlabel="epoch", ylabel="clean validation accuracy (%)", title="clean accuracy")
    ax_l.set(xlabel="epoch", ylabel="objective (running mean over the epoch)",
             title="training objective (each model's own)")
    n_ep = max(len(h["loss"]) for h in histories.values())
    for ax in (ax_a, ax_l):
        ax.set_xticks(onp.arange(1, n_ep + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------
# Sections: each takes the run context and returns a JSON-ready dict with a one-line
# ``summary`` and the ``figures`` it wrote (file names inside the report folder).
# ---------------------------------------------------------------------------

def section_train(ctx):
    """1. The lecture CNN with RMSprop, batch 128, 10 epochs; test set as validation data."""
    from .model import ARCHITECTURE, accuracy, predict
    s = ctx["settings"]
    x_tr, y_tr = ctx["x_train"][:s["n_train"]], ctx["y_train"][:s["n_train"]]
    x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
    params, history, info = cached_fit("natural", ARCHITECTURE, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                       epochs=s["epochs"], batch_size=s["batch_size"], seed=ctx["seed"],
                                       cache=ctx["cache"], verbose=ctx["verbose"])
    ctx["models"]["natural"] = (params, predict)
    ctx["histories"]["natural"] = history
    train_full = accuracy(params, x_tr, y_tr)
    fig = "fig1-learning-curves.png"
    plot_learning_curves(_figure(ctx, fig), history, ref_train=REFERENCES["lecture_train_acc"],
                         ref_val=REFERENCES["lecture_val_acc"],
                         title=f"lecture CNN, RMSprop, batch {s['batch_size']}, {s['epochs']} epochs "
                               f"on {len(x_tr)} images")
    r = {"train_accuracy": history["accuracy"][-1], "train_accuracy_full_pass": train_full,
         "val_accuracy": history["val_accuracy"][-1], "val_loss": history["val_loss"][-1],
         "history": history, "n_train": len(x_tr), "n_val": len(x_val), "epochs": s["epochs"],
         "batch_size": s["batch_size"], "model": info["path"], "cache_key": info["key"],
         "reused_cache": info["reused"], "train_seconds": info["train_seconds"],
         "trained_seconds": info["trained_seconds"], "seconds_per_epoch": history.get("seconds", []),
         "figures": [fig]}
    r["summary"] = (f"train {_pct(r['train_accuracy'])} / validation {_pct(r['val_accuracy'])} "
                    f"(lecture 99.5% / 99.1%)" + (" [cached model]" if info["reused"] else ""))
    return r


def section_fake(ctx):
    """2. Lecture "Generate Fake Image": from uniform noise, descend CE(target), weights fixed."""
    from .attacks import fake_image
    from .plots import plot_fake_images
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    targets = onp.arange(10, dtype=onp.int64)
    res = fake_image(params, targets, steps=s["fake_steps"], lr=s["fake_lr"], rng=_rng(ctx, 2),
                     predict_fn=predict_fn, verbose=False)
    figs = ["fig2-fake-images.png", "fig2-fake-loss.png"]
    plot_fake_images(_figure(ctx, figs[0]), res)
    plot_loss_per_step(_figure(ctx, figs[1]), res.loss_history, targets,
                       title=f"fake images: loss per step (lr {s['fake_lr']:g}, from uniform noise)")
    p = res.probs[onp.arange(10), targets]
    r = {"steps": s["fake_steps"], "lr": s["fake_lr"], "target_probability": p.tolist(),
         "min_target_probability": float(p.min()), "success": res.success.tolist(),
         "n_success": int(res.success.sum()), "loss_per_step": res.loss_history.T.tolist(),
         "figures": figs}
    r["summary"] = (f"{r['n_success']}/10 classes reached; P(target) min {p.min():.3f}, "
                    f"for \"0\" {p[0]:.3f} (lecture 0.998)")
    return r


def section_untargeted(ctx):
    """3. The lecture's normalized gradient ascent on a "7", then FGSM/PGD robust accuracy vs eps."""
    from .attacks import gradient_ascent, summarize
    from .evaluate import evaluate_model, plot_report
    from .model import predict_batched
    from .plots import plot_ascent, plot_perturbation
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    x_te, y_te = ctx["x_test"], ctx["y_test"]
    i7 = _test_seven(params, predict_fn, x_te, y_te)
    ctx["seven_index"] = i7
    x7, y7 = x_te[i7:i7 + 1], y_te[i7:i7 + 1]
    snaps = tuple(k for k in (0, 5, 10, 15, 20) if k <= s["ascent_steps"])
    one = gradient_ascent(params, x7, y7, step=s["ascent_step"], steps=s["ascent_steps"],
                          snapshot_steps=snaps, predict_fn=predict_fn)
    figs = ["fig3-ascent.png", "fig3-perturbation.png", "fig3-robust-accuracy.png"]
    plot_ascent(_figure(ctx, figs[0]), x7, one, 0, true=7, steps=snaps)
    plot_perturbation(_figure(ctx, figs[1]), x7[0], one.x_adv[0], one.snapshot_probs[0][0], one.probs[0],
                      true=7, title=f"the \"7\" after the ascent ({int(one.steps[0])} steps)")
    n = s["ascent_n"]
    many = gradient_ascent(params, x_te[:n], y_te[:n], step=s["ascent_step"], steps=s["ascent_steps"],
                           snapshot_steps=(), predict_fn=predict_fn, verbose=ctx["verbose"])
    clean_pred = onp.argmax(predict_batched(params, x_te[:n], predict_fn=predict_fn), 1)
    summary = summarize(many, y_te[:n], clean_pred)
    flipped = many.success & (clean_pred == y_te[:n])
    ascent = {"index": i7, "steps_used": int(one.steps[0]), "success": bool(one.success[0]),
              "final_pred": int(one.pred[0]), "final_prob": float(one.probs[0].max()),
              "linf": float(one.linf[0]), "l2": float(one.l2[0]),
              "probs_by_step": {str(k): v[0].tolist() for k, v in one.snapshot_probs.items()},
              "n": n, "n_clean_correct": summary["attacked"], "success_rate": summary["success_rate"],
              "median_steps": _median(many.steps[flipped]), "median_linf": summary["median_linf"],
              "median_l2": summary["median_l2"], "summary": summary}
    _say(ctx, f"    ascent: the \"7\" (test #{i7}) becomes a {ascent['final_pred']} after "
              f"{ascent['steps_used']} steps; {_pct(ascent['success_rate'])} of {n} images flipped")
    ne = s["eval_n"]
    report = evaluate_model(params, x_te[:ne], y_te[:ne], predict_fn=predict_fn, eps_list=s["eval_eps"],
                            attacks=("fgsm", "pgd"), steps=s["eval_steps"], restarts=s["eval_restarts"],
                            seed=ctx["seed"], checks=True, verbose=ctx["verbose"], name="natural")
    ctx["reports"]["natural"] = report
    atomic_write_json(_figure(ctx, "evaluation-natural.json"), report)
    plot_report(report, _figure(ctx, figs[2]))
    rows = _eval_rows(report)
    r = {"ascent": ascent, "robustness": _strip_masks(report), "rows": rows, "figures": figs}
    acc03 = next((x for x in rows if abs(x["eps"] - 0.3) < 1e-9), None)
    r["summary"] = (f"ascent flips {_pct(ascent['success_rate'])} in <= {s['ascent_steps']} steps; "
                    + (f"PGD-{s['eval_steps']} at eps 0.3: {_pct(acc03['pgd'])} (papers: ~0-2%), "
                       f"FGSM {_pct(acc03['fgsm'])}" if acc03 else ""))
    return r


def _strip_masks(report):
    """The report without per-sample masks (they are in evaluation-<name>.json)."""
    out = dict(report)
    out["results"] = [{k: v for k, v in row.items() if k != "masks"} for row in report["results"]]
    return out


def _eval_rows(report):
    return [{"eps": row["eps"], **row["accuracy"]} for row in report["results"]]


def section_shallow_vs_deep(ctx):
    """4. Median minimal perturbation (Linf, L2) of softmax regression, an MLP and the CNN."""
    from .attacks import fgsm, minimal_perturbation
    from .model import accuracy, get_architecture, predict_batched
    s = ctx["settings"]
    x_tr, y_tr = ctx["x_train"][:s["n_train"]], ctx["y_train"][:s["n_train"]]
    x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
    models = {}
    for label, arch_name, cache_name in (("softmax regression", "softmax-v1", "softmax"),
                                         ("MLP (1 hidden layer)", "mlp-v1", "mlp")):
        arch = get_architecture(arch_name)
        params, history, info = cached_fit(cache_name, arch_name, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                           epochs=s["shallow_epochs"], batch_size=s["batch_size"],
                                           seed=ctx["seed"], cache=ctx["cache"], verbose=ctx["verbose"])
        models[label] = (params, arch.predict, arch_name, info)
    params, predict_fn = ctx["models"]["natural"]
    models["lecture CNN"] = (params, predict_fn, "lecture-cnn-v1", None)
    n = s["minpert_n"]
    x, y = ctx["x_test"][:n], ctx["y_test"][:n]
    table, radii = [], {"linf": {}, "l2": {}}
    for mi, (label, (p, f, arch_name, info)) in enumerate(models.items()):
        ok = onp.argmax(predict_batched(p, x, predict_fn=f), 1) == y    # only these can be flipped
        row = {"model": label, "architecture": arch_name, "test_accuracy": accuracy(p, x_val, y_val, predict_fn=f),
               "n_correct": int(ok.sum())}
        if info is not None:               # the CNN's training is section 1's
            row.update(reused_cache=info["reused"], train_seconds=info["train_seconds"],
                       trained_seconds=info["trained_seconds"])
        for ni, norm in enumerate(("linf", "l2")):
            res = minimal_perturbation(p, x[ok], y[ok], norm=norm, search_steps=s["minpert_search"],
                                       steps=s["minpert_steps"],
                                       rng=onp.random.default_rng([ctx["seed"], 4, mi, ni]),
                                       predict_fn=f, verbose=ctx["verbose"])
            # the size of the adversarial found (<= the bisection radius); inf: never flipped
            size = onp.where(res.success, getattr(res, norm), onp.inf)
            radii[norm][label] = size
            row[f"median_{norm}"] = _median(size)
            fin = size[onp.isfinite(size)]
            row[f"mean_{norm}"] = float(fin.mean()) if len(fin) else None
            row[f"unflipped_{norm}"] = int(onp.sum(~res.success))
        adv = fgsm(p, x, y, eps=0.25, predict_fn=f)
        row["fgsm025_error"] = float(1 - onp.mean(adv.pred == y))
        row["fgsm025_mean_confidence_wrong"] = float(adv.probs[adv.pred != y].max(1).mean()) \
            if onp.any(adv.pred != y) else None
        table.append(row)
    fig = "fig4-minimal-perturbation.png"
    plot_minimal_perturbations(_figure(ctx, fig), radii,
                               title=f"smallest PGD perturbation that flips each correctly classified image "
                                     f"(first {n} test images)")
    r = {"n": n, "search_steps": s["minpert_search"], "pgd_steps": s["minpert_steps"],
         "max_linf": 1.0, "max_l2": 28.0, "table": table, "figures": [fig]}
    r["summary"] = "median minimal Linf / L2: " + ", ".join(
        f"{t['model'].split(' (')[0]} {t['median_linf']:.3f} / {t['median_l2']:.2f}" for t in table)
    return r


def section_targeted(ctx):
    """5. Lecture's targeted penalty attack: one "7" to each class; rates on many test images."""
    from .attacks import penalty_attack, pgd, summarize
    from .model import predict_batched
    from .plots import plot_targeted_grid
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    x_te, y_te = ctx["x_test"], ctx["y_test"]
    i7 = ctx.get("seven_index")
    if i7 is None:
        i7 = _test_seven(params, predict_fn, x_te, y_te)
    ten = onp.repeat(x_te[i7:i7 + 1], 10, axis=0)
    targets = onp.arange(10, dtype=onp.int64)
    figs, grid = [], {}
    for pen in ("l1", "l2"):
        res = penalty_attack(params, ten, targets, lam=s["penalty_lam"], penalty=pen,
                             steps=s["penalty_steps"], lr=s["penalty_lr"], predict_fn=predict_fn)
        fig = f"fig5-targeted-{pen}.png"
        plot_targeted_grid(_figure(ctx, fig), res, true=7, penalty=pen, lam=s["penalty_lam"])
        figs.append(fig)
        grid[pen] = {"target_probability": res.probs[onp.arange(10), targets].tolist(),
                     "success": res.success.tolist(), "l1": res.l1.tolist(), "l2": res.l2.tolist(),
                     "linf": res.linf.tolist()}
    n = s["targeted_n"]
    x, y = x_te[:n], y_te[:n]
    t = ((y + _rng(ctx, 5).integers(1, 10, size=n)) % 10).astype(onp.int64)   # a random wrong class
    clean_pred = onp.argmax(predict_batched(params, x, predict_fn=predict_fn), 1)
    stats = {}
    for pen in ("l1", "l2"):
        res = penalty_attack(params, x, t, lam=s["penalty_lam"], penalty=pen, steps=s["penalty_steps"],
                             lr=s["penalty_lr"], predict_fn=predict_fn, verbose=ctx["verbose"])
        stats[f"penalty-{pen}"] = summarize(res, y, clean_pred)
    eps, k = s["targeted_pgd_eps"], s["targeted_pgd_steps"]
    res = pgd(params, x, y, eps=eps, steps=k, step_size=2.5 * eps / k, norm="linf", target=t,
              rng=_rng(ctx, 50), predict_fn=predict_fn, verbose=ctx["verbose"])
    stats["pgd-linf"] = summarize(res, y, clean_pred)
    r = {"index": i7, "lam": s["penalty_lam"], "steps": s["penalty_steps"], "lr": s["penalty_lr"],
         "grid": grid, "n": n, "n_attacked": stats["pgd-linf"]["attacked"], "stats": stats,
         "pgd_eps": s["targeted_pgd_eps"], "pgd_steps": s["targeted_pgd_steps"], "figures": figs}
    g1 = sum(grid["l1"]["success"])
    r["summary"] = (f"the \"7\" reached {g1}/10 targets (L1 penalty); on {n} images: "
                    + ", ".join(f"{k} {_pct(v['success_rate'])}" for k, v in stats.items()))
    return r


def _defense_section(ctx, *, name, defense, options, number):
    from .evaluate import evaluate_model, plot_report
    from .model import ARCHITECTURE, predict
    s = ctx["settings"]
    x_tr, y_tr = ctx["x_train"][:s["defense_n_train"]], ctx["y_train"][:s["defense_n_train"]]
    x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
    params, history, info = cached_fit(name, ARCHITECTURE, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                       epochs=s["defense_epochs"], batch_size=s["batch_size"],
                                       seed=ctx["seed"], defense=defense, defense_options=options,
                                       cache=ctx["cache"], verbose=ctx["verbose"])
    ctx["models"][name] = (params, predict)
    ctx["histories"][name] = history
    ne = s["eval_n"]
    report = evaluate_model(params, ctx["x_test"][:ne], ctx["y_test"][:ne], predict_fn=predict,
                            eps_list=s["eval_eps"], attacks=("fgsm", "pgd"), steps=s["eval_steps"],
                            restarts=s["eval_restarts"], seed=ctx["seed"], checks=True,
                            verbose=ctx["verbose"], name=name)
    ctx["reports"][name] = report
    atomic_write_json(_figure(ctx, f"evaluation-{name}.json"), report)
    fig = f"fig{number}-robust-accuracy-{name}.png"
    plot_report(report, _figure(ctx, fig))
    defense_cfg = {k: v for k, v in info["config"].items()
                   if k not in ("name", "data", "val_data", "n_val")}
    r = {"model": info["path"], "cache_key": info["key"], "reused_cache": info["reused"],
         "train_seconds": info["train_seconds"], "trained_seconds": info["trained_seconds"],
         "config": defense_cfg, "history": history,
         "clean_accuracy": report["clean_accuracy"], "val_accuracy": history["val_accuracy"][-1],
         "robustness": _strip_masks(report), "rows": _eval_rows(report),
         "sanity": report["sanity"], "sanity_passed": all(c["passed"] for c in report["sanity"]),
         "figures": [fig]}
    return r


def _row_at(rows, eps):
    return next((x for x in rows if abs(x["eps"] - eps) < 1e-9), None)


def section_adversarial_training(ctx):
    """6. Min-max training: each batch replaced by PGD images of the current weights (Madry et al.)."""
    s = ctx["settings"]
    r = _defense_section(ctx, name="pgd-trained", defense="pgd",
                         options={"pgd_steps": s["pgd_train_steps"]}, number=6)
    a = _row_at(r["rows"], 0.1)
    nat = _row_at(_eval_rows(ctx["reports"]["natural"]), 0.1) if "natural" in ctx["reports"] else None
    r["summary"] = (f"clean {_pct(r['clean_accuracy'])}"
                    + (f", worst case at eps 0.1 {_pct(a['worst_case'])} (natural {_pct(nat['worst_case'])})"
                       if a and nat else "")
                    + f"; sanity checks {'all passed' if r['sanity_passed'] else 'NOT all passed'}")
    return r


def section_gradient_regularization(ctx):
    """7. Double backprop: CE + lam * mean ||d loss_i / d x_i||^2; then the three models compared."""
    from .evaluate import write_comparison
    s = ctx["settings"]
    r = _defense_section(ctx, name="gradreg", defense="gradreg", options={"lam": s["gradreg_lam"]},
                         number=7)
    names = [k for k in ("natural", "pgd-trained", "gradreg") if k in ctx["reports"]]
    write_comparison([ctx["reports"][k] for k in names], ctx["out"])
    fig = "fig7-training-curves.png"
    plot_defense_training(_figure(ctx, fig), {k: ctx["histories"][k] for k in names if k in ctx["histories"]},
                          title="natural vs defended training")
    r["figures"] += ["comparison.png", fig]
    r["comparison"] = {k: {"clean_accuracy": ctx["reports"][k]["clean_accuracy"],
                           "rows": _eval_rows(ctx["reports"][k]),
                           "sanity": ctx["reports"][k]["sanity"]} for k in names}
    a = _row_at(r["rows"], 0.1)
    nat = _row_at(_eval_rows(ctx["reports"]["natural"]), 0.1) if "natural" in ctx["reports"] else None
    r["summary"] = (f"clean {_pct(r['clean_accuracy'])}"
                    + (f", FGSM at eps 0.1 {_pct(a['fgsm'])} (natural {_pct(nat['fgsm'])}; "
                       f"Ross & Doshi-Velez 92.2% vs 72.7%)" if a and nat else "")
                    + f"; sanity checks {'all passed' if r['sanity_passed'] else 'NOT all passed'}")
    return r


SECTION_FUNCTIONS = {
    "train": section_train, "fake": section_fake, "untargeted": section_untargeted,
    "shallow_vs_deep": section_shallow_vs_deep, "targeted": section_targeted,
    "adversarial_training": section_adversarial_training,
    "gradient_regularization": section_gradient_regularization,
}


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------

def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def _img(fig, caption, number):
    return [f"![{caption}]({fig})", "", f"*Figure {number}. {caption}*", ""]


def _md_train(r, refs, fig_no):
    lines = [f"The lecture's network (conv 10@5x5, max-pool, conv 20@5x5, max-pool, dense 100, "
             f"dense 10; ReLU; 'valid' convolutions) is trained with RMSprop (Keras defaults: "
             f"lr 0.001, rho 0.9), batch {r['batch_size']}, {r['epochs']} epochs on "
             f"{r['n_train']:,} training images, with {r['n_val']:,} test images as validation data "
             "(as the lecture does). Training accuracy is the running mean over the last epoch's "
             "batches, which is what Keras prints and what the lecture quotes.", "",
             "| | this run | lecture |", "|---|---|---|",
             f"| training accuracy (last epoch, running mean) | {_pct(r['train_accuracy'])} | {_pct(refs['lecture_train_acc'])} |",
             f"| validation accuracy | {_pct(r['val_accuracy'])} | {_pct(refs['lecture_val_acc'])} |",
             f"| training accuracy (final weights, one pass) | {_pct(r['train_accuracy_full_pass'])} | |",
             f"| validation loss | {r['val_loss']:.4f} | |", ""]
    secs = r.get("seconds_per_epoch") or []
    if r["reused_cache"]:
        lines += [f"The model was loaded from the cache (`{os.path.basename(r['model'])}`); "
                  + (f"when it was trained an epoch took {onp.median(secs):.1f} s (median)." if secs else ""), ""]
    elif secs:
        lines += [f"Training took {r['train_seconds']:.0f} s ({onp.median(secs):.1f} s per epoch, median).", ""]
    lines += _img(r["figures"][0], "Learning curves of the lecture CNN; dashed: the lecture's final "
                  "accuracies.", fig_no)
    return lines


def _md_fake(r, refs, fig_no):
    p = r["target_probability"]
    lines = ["Keep the weights fixed, start from uniform noise and descend the cross-entropy of a "
             f"chosen class with respect to the *image*: `x <- clip(x - {r['lr']:g} * dL/dx, 0, 1)`, "
             f"{r['steps']} steps (lecture: 10 steps, learning rate 0.5). The network is confident "
             "about images that look like nothing to a human.", "",
             "| target | " + " | ".join(str(k) for k in range(10)) + " |",
             "|---" * 11 + "|",
             "| P(target) | " + " | ".join(f"{v:.3f}" for v in p) + " |", "",
             f"{r['n_success']}/10 fake images are classified as their target; the smallest target "
             f"probability is {r['min_target_probability']:.3f}. Lecture: {refs['lecture_fake_prob_0']:.3f} "
             f"for \"0\" (here {p[0]:.3f}).", ""]
    lines += _img(r["figures"][0], "Fake images from uniform noise, one per class, with the model's "
                  "prediction vectors (hatched bar: the target).", fig_no)
    lines += _img(r["figures"][1], "Cross-entropy of the target class at each step (log scale).", fig_no + 1)
    return lines


def _robust_table(rows, refs, natural=True):
    head = "| eps (Linf) | FGSM | PGD | worst case | uniform noise |"
    if natural:
        head += " Ross & Doshi-Velez, natural model, FGSM |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    ross = dict(zip(refs["ross_eps"], refs["ross_normal_fgsm"]))
    for x in rows:
        line = (f"| {x['eps']:g} | {_pct(x['fgsm'])} | {_pct(x['pgd'])} | {_pct(x['worst_case'])} | "
                f"{_pct(x['noise'])} |")
        if natural:
            ref = next((v for e, v in ross.items() if abs(e - x["eps"]) < 1e-9), None)
            line += f" {_pct(ref) if ref is not None else ''} |"
        lines.append(line)
    return lines


def _md_untargeted(r, refs, fig_no):
    a, rob = r["ascent"], r["robustness"]
    lines = ["**The lecture's attack.** Start at a correctly classified test \"7\" (test image "
             f"#{a['index']}) and climb the loss of its true label: `x <- clip(x + 0.05 * g / max|g|, 0, 1)` "
             "(the most sensitive pixel moves by 0.05, the others proportionally), at most 20 steps, "
             "stopping as soon as the prediction is wrong.", "",
             f"The \"7\" is classified as **{a['final_pred']}** (probability {a['final_prob']:.3f}) after "
             f"{a['steps_used']} steps; the change has Linf {a['linf']:.3f} and L2 {a['l2']:.2f}. "
             f"On the first {a['n']} test images, the same attack flips {_pct(a['success_rate'])} of the "
             f"{a['n_clean_correct']} correctly classified ones within 20 steps (median "
             f"{_fmt(a['median_steps'], 'g')} steps for those flipped; over all of them, median change "
             f"Linf {_fmt(a['median_linf'])}, L2 {_fmt(a['median_l2'], '.2f')}).", ""]
    lines += _img(r["figures"][0], "The untargeted ascent on a \"7\": the image and the prediction "
                  "vector after 0/5/10/15/20 steps (a stopped image keeps its last state).", fig_no)
    lines += _img(r["figures"][1], "Clean image, the perturbation (colour scale: its own maximum) and "
                  "the adversarial image.", fig_no + 1)
    lines += ["**Robust accuracy against eps.** FGSM (one signed-gradient step, Goodfellow et al. 2015) "
              f"and PGD (Madry et al. 2018: {rob['steps']} steps of 2.5 * eps / steps, uniform random start, "
              f"{rob['restarts']} restart(s)) within the Linf ball of radius eps, on the first {rob['n']} "
              "test images. *Worst case*: an image counts as robust only if it survives every attack and "
              "restart. *Uniform noise*: every pixel moved by a uniform random amount in [-eps, eps] "
              "(then clipped to [0, 1]), for scale.", ""]
    lines += _robust_table(r["rows"], refs)
    at03 = _row_at(r["rows"], 0.3)
    lines += ["", "Reference: naturally trained MNIST CNNs fall to about 0-2% under PGD-40 at eps 0.3"
              + (f"; here {_pct(at03['pgd'])}." if at03 else "."), ""]
    lines += _img(r["figures"][2], "Accuracy of the naturally trained CNN against the Linf radius.", fig_no + 2)
    return lines


def _md_shallow(r, refs, fig_no):
    lines = ["The lecture's claim: shallow networks are more robust, an attacker needs a larger "
             "perturbation to fool them than to fool a deep one. To measure it, for each "
             f"of the first {r['n']} test images that a model classifies correctly, the smallest radius "
             f"at which PGD ({r['pgd_steps']} steps of 2.5 * eps / steps, random start) flips the "
             f"prediction is found by bisection ({r['search_steps']} halvings of [0, {r['max_linf']:g}] "
             f"for Linf, [0, {r['max_l2']:g}] for L2); the table gives the median size of the "
             "adversarial images found (an image never flipped counts as infinitely far). "
             "All three models are trained the same way (RMSprop, "
             "batch 128, same epochs and seed). The last two columns repeat Goodfellow et al. (2015)'s "
             "experiment: FGSM at eps 0.25.", "",
             "| model | test accuracy | images attacked | median minimal Linf | median minimal L2 | "
             "never flipped (Linf / L2) | FGSM error at eps 0.25 | mean confidence of the wrong class |",
             "|---|---|---|---|---|---|---|---|"]
    for t in r["table"]:
        lines.append(f"| {t['model']} | {_pct(t['test_accuracy'])} | {t['n_correct']} | {_fmt(t['median_linf'])} | "
                     f"{_fmt(t['median_l2'], '.2f')} | {t['unflipped_linf']} / {t['unflipped_l2']} | "
                     f"{_pct(t['fgsm025_error'])} | {_fmt(t['fgsm025_mean_confidence_wrong'])} |")
    lines += ["", f"Goodfellow et al. (2015) report, for FGSM at eps 0.25 on MNIST, an error of "
              f"{_pct(refs['goodfellow_softmax_fgsm025_error'])} (mean confidence "
              f"{refs['goodfellow_softmax_fgsm025_confidence']:.3f}) for a shallow softmax "
              f"classifier and {_pct(refs['goodfellow_maxout_fgsm025_error'])} (mean confidence "
              f"{refs['goodfellow_maxout_fgsm025_confidence']:.3f}) for a maxout network: "
              "by their account a linear model is not robust merely for being shallow.", ""]
    by = {t["architecture"]: t for t in r["table"]}
    if all(k in by for k in ("softmax-v1", "lecture-cnn-v1")) and by["softmax-v1"]["median_linf"] is not None \
            and by["lecture-cnn-v1"]["median_linf"] is not None:
        s_, c_ = by["softmax-v1"], by["lecture-cnn-v1"]
        lines += [("Here the shallow model **does** need the larger Linf perturbation "
                   if s_["median_linf"] > c_["median_linf"] else
                   "Here the shallow model does **not** need a larger Linf perturbation ")
                  + f"(median {s_['median_linf']:.3f} for softmax regression vs {c_['median_linf']:.3f} "
                  f"for the CNN; L2 {_fmt(s_['median_l2'], '.2f')} vs {_fmt(c_['median_l2'], '.2f')}).", ""]
    lines += _img(r["figures"][0], "Fraction of correctly classified test images flipped by a "
                  "perturbation of at most the given size (dotted: medians).", fig_no)
    return lines


def _md_targeted(r, refs, fig_no):
    lines = ["The lecture's targeted attack minimises `CE(target, f(x')) + lam * mean|x' - x|` (L1 "
             "penalty) or `+ lam * mean (x' - x)^2` (L2 penalty) by gradient descent from the real "
             f"image, clipped to [0, 1]: lam {r['lam']:g} (the lecture's), {r['steps']} steps of "
             f"learning rate {r['lr']:g}. The penalty keeps the image close to the original instead "
             "of a hard eps-ball.", "",
             f"One \"7\" (test image #{r['index']}) pushed to each class:", "",
             "| target | " + " | ".join(str(k) for k in range(10)) + " |", "|---" * 11 + "|"]
    for pen in ("l1", "l2"):
        g = r["grid"][pen]
        lines.append(f"| P(target), {pen.upper()} penalty | " + " | ".join(f"{v:.2f}" for v in g["target_probability"]) + " |")
        lines.append(f"| L2 of the change, {pen.upper()} penalty | " + " | ".join(f"{v:.2f}" for v in g["l2"]) + " |")
    lines += ["", f"On the first {r['n']} test images, each towards a random wrong class: the success "
              f"rate is the fraction classified as the target among the {r['n_attacked']} correctly "
              "classified images, and the perturbation sizes are medians over the same images "
              "(as `scratchadv attack --metrics` reports them). The eps-bounded counterpart, targeted PGD in the "
              f"Linf ball of radius {r['pgd_eps']:g} ({r['pgd_steps']} steps), is given for comparison "
              "(project target: >= 99% success).", "",
              "| attack | success rate | median L1 | median L2 | median Linf |", "|---|---|---|---|---|"]
    names = {"penalty-l1": f"penalty, L1 (lam {r['lam']:g})", "penalty-l2": f"penalty, L2 (lam {r['lam']:g})",
             "pgd-linf": f"targeted PGD, Linf eps {r['pgd_eps']:g}"}
    for k, v in r["stats"].items():
        lines.append(f"| {names.get(k, k)} | {_pct(v['success_rate'])} | {_fmt(v['median_l1'], '.2f')} | "
                     f"{_fmt(v['median_l2'], '.2f')} | {_fmt(v['median_linf'])} |")
    lines.append("")
    lines += _img(r["figures"][0], "One \"7\" pushed to each class with the L1 penalty (hatched bar: "
                  "the target; outlined: the true class).", fig_no)
    lines += _img(r["figures"][1], "The same with the squared-L2 penalty.", fig_no + 1)
    return lines


def _sanity_lines(sanity):
    return [f"- {'passed' if c['passed'] else '**FAILED**'}: {c['name']} ({c['detail']})" for c in sanity]


def _defense_table(rows, ref_rows=None):
    """rows: defended model; ref_rows: the natural model's, shown beside it."""
    head = "| eps (Linf) | FGSM | PGD | worst case |"
    if ref_rows:
        head += " natural: FGSM | natural: PGD |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for x in rows:
        line = f"| {x['eps']:g} | {_pct(x['fgsm'])} | {_pct(x['pgd'])} | {_pct(x['worst_case'])} |"
        if ref_rows:
            n = _row_at(ref_rows, x["eps"])
            line += f" {_pct(n['fgsm']) if n else ''} | {_pct(n['pgd']) if n else ''} |"
        lines.append(line)
    return lines


def _md_defense_common(r, natural_rows):
    c = r["config"]
    lines = [f"Trained for {c['epochs']} epochs on {c['n_train']:,} images (RMSprop, batch "
             f"{c['batch_size']}, seed {c['seed']}); evaluated like the natural model in section 3.", "",
             f"Clean accuracy on the evaluation images: **{_pct(r['clean_accuracy'])}** "
             f"(validation accuracy after the last epoch: {_pct(r['val_accuracy'])}).", ""]
    lines += _defense_table(r["rows"], natural_rows)
    lines += ["", "Sanity checks (Carlini et al. 2019; Athalye et al. 2018): a defense that fails them "
              "is likely masking gradients rather than being robust.", ""]
    lines += _sanity_lines(r["sanity"]) + [""]
    return lines


def _md_adv(r, refs, fig_no, results):
    c = r["config"]
    nat = results["sections"].get("untargeted", {}).get("rows")
    lines = ["Madry et al. (2018): `min_W E[max_{||d||_inf <= eps} loss(W, x + d, y)]`. Every mini-batch "
             f"is replaced by PGD images of the current weights (eps {c['eps']:g}, {c['pgd_steps']} steps "
             f"of {c['pgd_step_size']:.4g}, uniform random start"
             + (f", {c['clean_frac']:.0%} clean images" if c.get("clean_frac") else "")
             + (f", eps warm-up over {c['eps_warmup']} epochs" if c.get("eps_warmup") else "")
             + "), then the weights take the usual step on them with the true labels.", ""]
    lines += _md_defense_common(r, nat)
    a1 = _row_at(r["rows"], 0.1)
    if a1:
        lines += [f"Project targets for this model (eps 0.1): clean >= 98.0% (here {_pct(r['clean_accuracy'])}), "
                  f"worst case over FGSM and PGD at eps 0.1 >= 90% (here {_pct(a1['worst_case'])}). For scale, "
                  f"Madry et al. reach about {_pct(refs['madry_pgd03'])} at eps 0.3 with a larger network "
                  "trained at eps 0.3.", ""]
    lines += _img(r["figures"][0], "Accuracy of the PGD-trained CNN against the Linf radius.", fig_no)
    return lines


def _md_gradreg(r, refs, fig_no, results):
    c = r["config"]
    nat = results["sections"].get("untargeted", {}).get("rows")
    lines = ["Drucker & LeCun (1992); Ross & Doshi-Velez (2018): minimise "
             f"`CE + lam * mean_i ||d loss_i / d x_i||^2` with lam {c['lam']:g}, the penalty being the "
             "batch mean of each example's own squared input-gradient norm. Its gradient with respect "
             "to the weights is taken by differentiating the input gradient again (double "
             "backpropagation) through the same primitives.", ""]
    lines += _md_defense_common(r, nat)
    lines += ["Ross & Doshi-Velez (2018), FGSM accuracy on MNIST:", "",
              "| eps | this run: natural | this run: gradreg | theirs: natural | theirs: double backprop | "
              "theirs: FGSM adversarial training |", "|---|---|---|---|---|---|"]
    for e, n0, d0, a0 in zip(refs["ross_eps"], refs["ross_normal_fgsm"], refs["ross_doubleback_fgsm"],
                             refs["ross_fgsm_advtrain_fgsm"]):
        mine = _row_at(r["rows"], e)
        natr = _row_at(nat, e) if nat else None
        lines.append(f"| {e:g} | {_pct(natr['fgsm']) if natr else ''} | {_pct(mine['fgsm']) if mine else ''} | "
                     f"{_pct(n0)} | {_pct(d0)} | {_pct(a0)} |")
    lines += [""]
    lines += _img(r["figures"][0], "Accuracy of the gradient-regularized CNN against the Linf radius.", fig_no)
    comp = r.get("comparison") or {}
    if comp:
        lines += ["### The three models side by side", "",
                  "| model | clean | " + " | ".join(f"worst case eps {e:g}" for e in (0.1, 0.2, 0.3)) + " | sanity checks |",
                  "|---|---|---|---|---|---|"]
        for name, m in comp.items():
            cells = [(_pct(_row_at(m["rows"], e)["worst_case"]) if _row_at(m["rows"], e) else "") for e in (0.1, 0.2, 0.3)]
            ok = all(x["passed"] for x in m["sanity"])
            nfail = sum(not x["passed"] for x in m["sanity"])
            lines.append(f"| {name} | {_pct(m['clean_accuracy'])} | " + " | ".join(cells)
                         + f" | {'all passed' if ok else f'{nfail} failed'} |")
        lines += ["", "Sanity checks of the natural model:", ""] + _sanity_lines(comp.get("natural", {}).get("sanity", [])) + [""]
        lines += _img(r["figures"][1], "Worst-case (solid) and FGSM (dashed) accuracy against the Linf "
                      "radius for the three models (also in comparison.md / comparison.json).", fig_no + 1)
        lines += _img(r["figures"][2], ("Clean validation accuracy and training objective per epoch. Each model minimises its own "
                                                 "objective: cross-entropy (natural), cross-entropy on the PGD images (pgd-trained), "
                                                 "cross-entropy + lam * squared input-gradient norm (gradreg), so their heights "
                                                 "are not comparable; their trends are."), fig_no + 2)
    return lines


_MD = {"train": _md_train, "fake": _md_fake, "untargeted": _md_untargeted,
       "shallow_vs_deep": _md_shallow, "targeted": _md_targeted}


def format_readme(results):
    """The report as Markdown, a pure function of ``results`` (the content of results.json)."""
    refs = {**REFERENCES, **results.get("references", {})}
    mode = "quick" if results.get("quick") else "full"
    secs = results.get("sections", {})
    lines = ["# scratchadv demo: evasion attacks on MNIST, from the lecture", "",
             "A convolutional network built from scratch in NumPy and differentiated with `autograd` "
             "is trained on MNIST, attacked (fake images, gradient ascent, FGSM, PGD, the targeted "
             "penalty attack) and defended (adversarial training, gradient regularization), "
             "following the lecture section by section. Every number below was measured by this run.", "",
             f"- command: `{results.get('command', 'scratchadv demo')}`",
             f"- mode: **{mode}**" + (" (smaller subsets, fewer epochs and attack steps: a smoke test; "
                                      "its numbers are not comparable to the references)" if mode == "quick" else ""),
             f"- scratchadv {results.get('library_version')}, seed {results.get('seed')}, "
             f"finished {results.get('finished', 'n/a')}",
             f"- run time: {results.get('seconds', 0):.0f} s"
             + (" (" + ", ".join(f"section {i + 1} {secs[k]['seconds']:.0f} s" for i, k in enumerate(SECTIONS)
                                 if k in secs) + ")" if secs else ""),
             f"- models cached in `{results.get('cache')}`"]
    trained = _training_times(secs)
    if trained:
        lines.append("- training time per model: " + ", ".join(
            f"{name} {sec:.0f} s" + (" (cached, measured when it was trained)" if reused else "")
            for name, sec, reused in trained))
    lines.append("")
    missing = [k for k in SECTIONS if k not in secs]
    if missing:
        lines += [f"**Incomplete report**: sections not yet run: {', '.join(TITLES[k] for k in missing)}.", ""]
    lines += ["Contents: " + " · ".join(f"[{TITLES[k]}](#{_anchor(TITLES[k])})" for k in SECTIONS if k in secs), ""]
    fig_no = 1
    for k in SECTIONS:
        if k not in secs:
            continue
        r = secs[k]
        lines += [f"## {TITLES[k]}", "", f"> {r['summary']}", ""]
        if k in _MD:
            lines += _MD[k](r, refs, fig_no)
        elif k == "adversarial_training":
            lines += _md_adv(r, refs, fig_no, results)
        else:
            lines += _md_gradreg(r, refs, fig_no, results)
        fig_no += len(r.get("figures", []))
    lines += ["## Settings", "", f"The {mode} preset (`scratchadv.demo.PRESETS[{mode!r}]`):", "",
              "| setting | value | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | {v} | {SETTING_DOCS.get(k, '')} |" for k, v in results.get("settings", {}).items()]
    lines += ["", "Files: `results.json` (every number above), `evaluation-<model>.json` (full "
              "robustness reports with per-image results; `scratchadv compare` reads them), "
              "`comparison.md`, and the figures.", ""]
    return "\n".join(lines)


def _training_times(secs):
    """[(model, seconds of training, reused from the cache?)] from the sections' results."""
    out = []
    rows = [("natural", secs.get("train"))]
    rows += [(t["model"], t) for t in secs.get("shallow_vs_deep", {}).get("table", []) if "reused_cache" in t]
    rows += [("pgd-trained", secs.get("adversarial_training")), ("gradreg", secs.get("gradient_regularization"))]
    for name, r in rows:
        if r and r.get("trained_seconds") is not None:
            out.append((name, r["trained_seconds"], bool(r.get("reused_cache"))))
    return out


def _anchor(title):
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return keep.replace(" ", "-")


def write_outputs(out, results):
    """results.json and README.md in ``out`` (atomic writes)."""
    atomic_write_json(os.path.join(out, "results.json"), _jsonable(results))
    with atomic_write(os.path.join(out, "README.md")) as f:
        f.write(format_readme(_jsonable(results)).encode("utf-8"))


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def run_demo(out="runs/demo", *, quick=False, seed=0, cache=None, data=None, verbose=True,
             sections=SECTIONS, command=None):
    """Run the lecture's sections in order and write the report folder ``out``.

    quick: the ``quick`` preset (smoke test) instead of ``full``; seed: for every
    initialisation, shuffle and attack; cache: folder of trained models (default
    :func:`default_cache_dir`); data: MNIST folder (default: ``$SCRATCHADV_DATA`` or the
    cache). ``sections``: a subset of :data:`SECTIONS` (each needs the natural model, so
    'train' always runs). After every section results.json and README.md are rewritten,
    so an interrupted run leaves a readable partial report. Returns the results dict.
    """
    from .data import load_mnist
    seed = check_int(seed, "seed", minimum=0)
    unknown = [k for k in sections if k not in SECTIONS]
    if unknown:
        raise ValueError(f"sections: expected names from {list(SECTIONS)}, got {unknown}")
    sections = [k for k in SECTIONS if k in set(sections) | {"train"}]
    out = os.fspath(out)
    check_writable(os.path.join(out, "results.json"), "--out")
    cache = os.fspath(cache) if cache else default_cache_dir()
    check_writable(os.path.join(cache, "probe.npz"), "--cache")
    settings = dict(PRESETS["quick" if quick else "full"])
    t_start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_mnist(data)
    ctx = {"out": out, "settings": settings, "seed": seed, "cache": cache, "verbose": verbose,
           "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
           "models": {}, "histories": {}, "reports": {}}
    results = {"library_version": __version__, "quick": bool(quick), "seed": seed,
               "command": command or f"scratchadv demo --out {out}" + (" --quick" if quick else "")
               + (f" --seed {seed}" if seed else ""),
               "cache": cache, "settings": settings, "references": REFERENCES, "sections": {}}
    mode = "quick" if quick else "full"
    print(f"scratchadv demo ({mode}): {len(sections)} sections -> {out}", flush=True)
    for i, key in enumerate(sections):
        t0, c0 = time.perf_counter(), time.process_time()
        if verbose:
            print(f"--- {TITLES[key]}", flush=True)
        r = SECTION_FUNCTIONS[key](ctx)
        r["seconds"] = time.perf_counter() - t0
        r["cpu_seconds"] = time.process_time() - c0    # wall time is noisy on a shared machine
        results["sections"][key] = r
        results["seconds"] = time.perf_counter() - t_start
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_outputs(out, results)
        print(f"[{SECTIONS.index(key) + 1}/7] {key}: {r['summary']} ({r['seconds']:.0f}s)", flush=True)
    print(f"report: {os.path.join(out, 'README.md')} ({results['seconds']:.0f}s)", flush=True)
    return results

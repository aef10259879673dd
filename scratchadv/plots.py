"""The lecture's figures: an image beside its 10-bar prediction vector, and grids of them.

Every function takes plain arrays (images ``(N, 1, 28, 28)`` or ``(1, 28, 28)`` in
[0, 1], probabilities ``(N, 10)``) or, for the evaluation figures, the report dicts of
:mod:`scratchadv.evaluate`, draws with matplotlib's object-oriented API on a
fresh ``Figure`` with the Agg canvas (no pyplot, no global backend switch), and saves
a PNG through :func:`scratchadv.fileio.atomic_write`. Each returns the path written.

=============================  ==============================================
figure                         lecture view
=============================  ==============================================
:func:`plot_prediction`        one image and its prediction vector
:func:`plot_grid`              any list of (image, prediction) pairs
:func:`plot_ascent`            untargeted ascent after 0/5/10/15/20 steps
:func:`plot_targeted_grid`     one "7" pushed to each class 0-9
:func:`plot_fake_images`       ten images made from noise, one per class
:func:`plot_report`            accuracy against eps per attack, noise, worst case
:func:`plot_comparison`        worst-case and FGSM accuracy against eps per model
:func:`plot_perturbation`      clean | perturbation (scaled) | adversarial
=============================  ==============================================

Bar colours: the predicted class is red when it is wrong (or not the target), blue
when right; the true class (if given) is outlined in black; a target class is hatched.
"""
import numpy as onp

from .fileio import atomic_write

__all__ = ["plot_prediction", "plot_grid", "plot_ascent", "plot_targeted_grid",
           "plot_fake_images", "plot_perturbation", "draw_image", "draw_bars"]

CLASSES = onp.arange(10)
_OK, _BAD, _OTHER = "#1f77b4", "#d62728", "#b0b0b0"


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=100):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _image2d(img):
    a = onp.asarray(img)
    if a.shape == (28, 28):
        return a
    if a.shape == (1, 28, 28):
        return a[0]
    raise ValueError(f"image: expected shape (1, 28, 28) or (28, 28), got {a.shape}")


def _probs1d(p):
    p = onp.asarray(p, dtype=onp.float64)
    if p.shape != (10,):
        raise ValueError(f"probs: expected 10 class probabilities, got shape {p.shape}")
    return p


def draw_image(ax, image, title=None):
    """Grey-scale digit on ``ax`` with a fixed [0, 1] scale (white = 1, as MNIST is shown)."""
    ax.imshow(_image2d(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def draw_bars(ax, probs, true=None, target=None, ylabel=True, xlabel=True):
    """The 10-bar prediction vector on ``ax``; returns the predicted class."""
    p = _probs1d(probs)
    pred = int(onp.argmax(p))
    right = (pred == target) if target is not None else (true is None or pred == true)
    colors = [_OTHER] * 10
    colors[pred] = _OK if right else _BAD
    bars = ax.bar(CLASSES, p, color=colors, width=0.75)
    if true is not None:
        bars[int(true)].set_edgecolor("black")
        bars[int(true)].set_linewidth(1.5)
    if target is not None:
        bars[int(target)].set_hatch("///")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.6, 9.6)
    ax.set_xticks(CLASSES)
    ax.tick_params(labelsize=7)
    if xlabel:
        ax.set_xlabel("class", fontsize=8)
    if ylabel:
        ax.set_ylabel("probability", fontsize=8)
    else:
        ax.set_yticklabels([])
    return pred


def _pair_title(probs, head=None):
    p = _probs1d(probs)
    k = int(onp.argmax(p))
    text = f"pred {k} ({p[k]:.3f})"
    return f"{head}\n{text}" if head else text


def plot_prediction(path, image, probs, *, true=None, target=None, title=None):
    """One image beside its prediction vector (the lecture's standard view)."""
    fig = _new_figure(6.0, 2.6)
    ax_i, ax_b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6], "wspace": 0.35})
    head = title if title else (f"label {true}" if true is not None else None)
    draw_image(ax_i, image, head)
    draw_bars(ax_b, probs, true=true, target=target)
    ax_b.set_title(_pair_title(probs), fontsize=9)
    return _save(fig, path)


def plot_grid(path, images, probs, *, titles=None, trues=None, targets=None, ncols=5,
              suptitle=None):
    """A grid of (image, bars) cells: image on top, its prediction vector below.

    images: (K, 1, 28, 28); probs: (K, 10); titles/trues/targets: length-K lists or None.
    """
    images = onp.asarray(images)
    probs = onp.asarray(probs)
    k = len(images)
    if len(probs) != k:
        raise ValueError(f"probs: expected {k} rows (one per image), got {len(probs)}")
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig = _new_figure(2.0 * ncols, 3.3 * nrows + (0.4 if suptitle else 0))
    outer = fig.add_gridspec(nrows, ncols, hspace=0.45, wspace=0.25)
    for i in range(k):
        r, c = divmod(i, ncols)
        cell = outer[r, c].subgridspec(2, 1, height_ratios=[1.7, 1], hspace=0.08)
        ax_i = fig.add_subplot(cell[0])
        ax_b = fig.add_subplot(cell[1])
        true = None if trues is None else trues[i]
        target = None if targets is None else targets[i]
        head = titles[i] if titles is not None else None
        draw_image(ax_i, images[i], _pair_title(probs[i], head))
        draw_bars(ax_b, probs[i], true=true, target=target, ylabel=(c == 0),
                  xlabel=(r == nrows - 1))
    if suptitle:
        fig.suptitle(suptitle, fontsize=11, y=1.0)
    return _save(fig, path)


def plot_ascent(path, x, result, index=0, *, true=None, steps=None, step=None):
    """The lecture's untargeted attack: one image after each of ``steps`` steps.

    x: the clean images attacked; result: :func:`scratchadv.attacks.gradient_ascent`'s
    result; index: which image. ``steps``: which snapshots to show (default: all the
    result holds, from 0; the lecture's figure: 0, 5, 10, 15, 20); step 0 is the clean image.
    ``step``: the attack's step size, for the title (it is not part of the result).
    """
    if steps is None:
        steps = sorted({0} | set(result.snapshots))
    imgs, probs, titles = [], [], []
    for k in steps:
        if k == 0:
            imgs.append(x[index])
            probs.append(_clean_probs(result, index))
        elif k in result.snapshots:
            imgs.append(result.snapshots[k][index])
            probs.append(result.snapshot_probs[k][index])
        else:
            continue
        titles.append("original" if k == 0 else f"after {k} steps")
    n_used = int(result.steps[index])
    rule = f" (step {step:g} g / max|g|)" if step is not None else ""
    sup = f"untargeted gradient ascent{rule}: misclassified after {n_used} steps" \
        if result.success[index] else f"untargeted gradient ascent{rule}: still correct after all steps"
    trues = [true] * len(imgs) if true is not None else None
    return plot_grid(path, onp.stack(imgs), onp.stack(probs), titles=titles, trues=trues,
                     ncols=len(imgs), suptitle=sup)


def _clean_probs(result, index):
    if 0 in result.snapshot_probs:
        return result.snapshot_probs[0][index]
    raise ValueError("plot_ascent: step 0 needs the clean probabilities; run gradient_ascent "
                     "with 0 in snapshot_steps (the default snapshot_steps=(0, 5, 10, 15, 20))")


def plot_targeted_grid(path, result, *, true=None, penalty=None, lam=None, loss="ce"):
    """One image pushed to each of the ten classes (the lecture's targeted grid).

    result: an attack result over ten copies of one image with targets 0..9; ``penalty``,
    ``lam``, ``loss`` ("ce" or "lecture", the slides' loss): for the title.
    """
    t = result.target
    titles = [f"target {int(c)}  L2 {result.l2[i]:.2f}" for i, c in enumerate(t)]
    what = "targeted attack"
    if penalty is not None:
        fit = "CE(target)" if loss == "ce" else "slides' BCE(pred, target)"
        what += f": {fit} + {lam:g} * mean{'|d|' if penalty == 'l1' else ' d^2'}"
    return plot_grid(path, result.x_adv, result.probs, titles=titles, targets=list(t),
                     trues=[true] * len(t) if true is not None else None, ncols=5,
                     suptitle=what)


def plot_fake_images(path, result):
    """Ten images made from uniform noise, one per target class, with their predictions."""
    t = result.target
    titles = [f"target {int(c)}" for c in t]
    return plot_grid(path, result.x_adv, result.probs, titles=titles, targets=list(t), ncols=5,
                     suptitle="fake images from uniform noise (weights fixed, input descended)")


# --- evaluation reports ---------------------------------------------------

__all__ += ["plot_report", "plot_comparison"]


def plot_report(report, path):
    """PNG of accuracy against eps: one line per attack, noise, and the worst case.

    report: :func:`scratchadv.evaluate.evaluate_model`'s dict. Returns ``path``.
    """
    eps = [r["eps"] for r in report["results"]]
    fig = _new_figure(6, 4)
    ax = fig.subplots()
    for c in list(report["attacks"]) + ["noise", "worst_case"]:
        # the worst case is drawn wide and pale underneath, so the attack it equals stays visible
        style = {"worst_case": dict(lw=5, color="k", alpha=0.3, zorder=1),
                 "noise": dict(ls=":", color="gray")}.get(c, {"zorder": 2})
        ax.plot(eps, [100 * r["accuracy"][c] for r in report["results"]], marker="o", ms=3,
                label=c.replace("_", " "), **style)
    l2 = "; pgd-l2 uses %g x eps" % report["l2_scale"] if "pgd-l2" in report["attacks"] else ""
    ax.set(xlabel=f"eps (Linf, pixel scale{l2})",
           ylabel="accuracy (%)", ylim=(-2, 102), title=report["name"])
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, dpi=120)


def plot_comparison(comparison, path):
    """PNG: worst-case accuracy (solid) and FGSM accuracy (dashed) against eps, per model.

    comparison: :func:`scratchadv.evaluate.compare_reports`' dict. Returns ``path``.
    """
    fig = _new_figure(6.5, 4.2)
    ax = fig.subplots()
    for k, m in enumerate(comparison["models"]):
        color = f"C{k}"
        eps = [x["eps"] for x in m["results"]]
        ax.plot(eps, [100 * x["accuracy"]["worst_case"] for x in m["results"]], marker="o", ms=3,
                color=color, lw=2, label=f"{m['name']} (worst case)")
        if "fgsm" in m["attacks"]:
            ax.plot(eps, [100 * x["accuracy"]["fgsm"] for x in m["results"]], ls="--",
                    color=color, alpha=0.7, label=f"{m['name']} (FGSM)")
    ax.set(xlabel="eps (Linf, pixel scale)", ylabel="accuracy (%)", ylim=(-2, 102),
           title="accuracy under attack")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, dpi=120)


# --- the lecture's figures (continued) ---------------------------------------

def plot_perturbation(path, x, x_adv, probs_clean, probs_adv, *, true=None, target=None,
                      title=None):
    """Clean image | perturbation x_adv - x (scaled to its own max) | adversarial image.

    x, x_adv: (1, 28, 28); probs_clean, probs_adv: (10,). The perturbation uses a
    diverging map centred on 0 with a colour bar in pixel units.
    """
    d = _image2d(x_adv).astype(onp.float64) - _image2d(x)
    m = float(onp.abs(d).max()) or 1.0
    fig = _new_figure(7.2, 3.9)
    outer = fig.add_gridspec(1, 3, wspace=0.3)
    cells = [outer[0, i].subgridspec(2, 1, height_ratios=[1.7, 1], hspace=0.08) for i in range(3)]
    draw_image(fig.add_subplot(cells[0][0]), x, "clean\n" + _pair_title(probs_clean))
    draw_bars(fig.add_subplot(cells[0][1]), probs_clean, true=true)
    ax = fig.add_subplot(cells[1][0])
    im = ax.imshow(d, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"perturbation (scaled)\nLinf {m:.3f}  L2 {onp.sqrt((d * d).sum()):.2f}",
                 fontsize=9)
    cb_ax = fig.add_subplot(cells[1][1])
    cb_ax.set_axis_off()
    fig.colorbar(im, ax=cb_ax, orientation="horizontal", fraction=0.5, aspect=12,
                 label="x_adv - x (pixel units)").ax.tick_params(labelsize=7)
    draw_image(fig.add_subplot(cells[2][0]), x_adv, "adversarial\n" + _pair_title(probs_adv))
    draw_bars(fig.add_subplot(cells[2][1]), probs_adv, true=true, target=target, ylabel=False)
    if title:
        fig.suptitle(title, fontsize=11, y=1.02)
    return _save(fig, path)


# --- demo figures -------------------------------------------------------------
# The figures of ``scratchadv demo`` beyond the lecture's views: curves per epoch or per
# step and distributions, several panels each, laid out by matplotlib's constrained layout
# (legends and titles of neighbouring panels do not overlap).

def _demo_figure(width, height):
    """:func:`_new_figure` with the constrained layout the multi-panel demo figures need."""
    fig = _new_figure(width, height)
    fig.set_layout_engine("constrained")
    return fig


__all__ += ["plot_learning_curves", "plot_loss_per_step", "plot_minimal_perturbations",
            "plot_defense_training"]


def plot_learning_curves(path, history, *, ref_train=None, ref_val=None, title=None):
    """Loss and accuracy per epoch (training: running mean over the epoch, as Keras reports;
    validation: after the epoch), with the lecture's final accuracies as dashed lines."""
    fig = _demo_figure(10, 3.6)
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
    return _save(fig, path)


def plot_loss_per_step(path, loss_history, targets, *, title):
    """Cross-entropy of the target class at each step, one line per target (log scale)."""
    h = onp.asarray(loss_history)
    fig = _demo_figure(6.5, 3.8)
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
    return _save(fig, path)


def plot_minimal_perturbations(path, radii, *, title):
    """Empirical CDFs of the minimal perturbation per model, one panel per norm.

    radii: {norm: {model: (N,) minimal radius over correctly classified images, inf if none}}.
    """
    fig = _demo_figure(10, 3.8)
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
    return _save(fig, path)


def plot_defense_training(path, histories, *, title):
    """Clean validation accuracy and training loss per epoch, one line per model."""
    fig = _demo_figure(10, 3.6)
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
    return _save(fig, path)



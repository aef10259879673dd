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


def plot_ascent(path, x, result, index=0, *, true=None, steps=(0, 5, 10, 15, 20)):
    """The lecture's untargeted attack: one image after 0, 5, 10, 15 and 20 steps.

    x: the clean images attacked; result: :func:`scratchadv.attacks.gradient_ascent`'s
    result; index: which image. Step 0 is the clean image.
    """
    imgs, probs, titles = [], [], []
    for k in steps:
        if k == 0:
            imgs.append(x[index])
            probs.append(_clean_probs(result, index, k))
        elif k in result.snapshots:
            imgs.append(result.snapshots[k][index])
            probs.append(result.snapshot_probs[k][index])
        else:
            continue
        titles.append("original" if k == 0 else f"after {k} steps")
    n_used = int(result.steps[index])
    sup = f"untargeted gradient ascent (step 0.05 g / max|g|): misclassified after {n_used} steps" \
        if result.success[index] else "untargeted gradient ascent: still correct after all steps"
    trues = [true] * len(imgs) if true is not None else None
    return plot_grid(path, onp.stack(imgs), onp.stack(probs), titles=titles, trues=trues,
                     ncols=len(imgs), suptitle=sup)


def _clean_probs(result, index, k):
    if 0 in result.snapshot_probs:
        return result.snapshot_probs[0][index]
    raise ValueError("plot_ascent: step 0 needs the clean probabilities; run gradient_ascent "
                     "with 0 in snapshot_steps (the default snapshot_steps=(0, 5, 10, 15, 20))")


def plot_targeted_grid(path, result, *, true=None, penalty=None, lam=None):
    """One image pushed to each of the ten classes (the lecture's targeted grid).

    result: an attack result over ten copies of one image with targets 0..9.
    """
    t = result.target
    titles = [f"target {int(c)}  L2 {result.l2[i]:.2f}" for i, c in enumerate(t)]
    what = "targeted attack"
    if penalty is not None:
        what += f": CE(target) + {lam:g} * mean{'|d|' if penalty == 'l1' else ' d^2'}"
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

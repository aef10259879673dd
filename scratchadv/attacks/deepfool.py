"""DeepFool: the minimal perturbation found by stepping to the linearized nearest boundary.

Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method to
fool deep neural networks" (CVPR), Algorithm 2 (multi-class) and its Lp variant (eq. 7).

At the current point x_i, with c_0 the clean prediction and c_1..c_{K-1} the other
candidate classes, each boundary "c_k beats c_0" is linearized::

    f_k = z_{c_k}(x_i) - z_{c_0}(x_i)          w_k = grad_x f_k(x_i)
    l   = argmin_k |f_k| / ||w_k||_q           (q the dual norm: L2 -> L2, Linf -> L1)
    r_i = (|f_l| / ||w_l||_q + 1e-4) * direction(w_l)

where direction is the norm's steepest-ascent direction (L2: w / ||w||_2, Linf:
sign(w); :mod:`scratchadv.attacks.geometry`), so ``r_i`` reaches the linearized
boundary of class c_l (the 1e-4 steps just past it, as in the authors' code and
Foolbox). The steps add up, ``r = sum r_i``, and the next point is
``x_{i+1} = clip(x + (1 + overshoot) r, 0, 1)``: the overshoot scales the *total*
perturbation (the authors' code and Foolbox), not each step. An image leaves the loop
at the first point whose prediction differs from y.

For an affine classifier the first step is the exact minimal L2 (or Linf) perturbation
to the nearest decision boundary, ``min_k |f_k| / ||w_k||`` (the paper's eq. 8 / 3).

Defaults are Foolbox 3.3.4's (``L2DeepFoolAttack`` / ``LinfDeepFoolAttack``), the
paper's settings: overshoot 0.02, at most 50 steps, the 10 most likely classes of the
clean image as candidates, loss "logits" (f_k a difference of logits; Foolbox's other
choice, "crossentropy", is the same function: log-softmax differences are logit
differences). The candidate classes are ranked once, on the clean logits.

Batched: one forward pass per step gives the logits of all images still correctly
classified, then one vector-Jacobian product per candidate class (cotangent
e_{c_k} - e_{c_0} in every row) gives all their w_k at once; every quantity is per
image, so a batch gives its images' results one by one (up to float rounding).
"""
import numpy as onp
from autograd import make_vjp

from ..model import predict
from ..ops import per_example_cross_entropy
from ..progress import Progress
from ..validate import NUM_CLASSES, check_float, check_images, check_int, check_labels
from .geometry import get_norm, per_image
from .gradients import check_model
from .result import build_result, concat_parts, empty_history, perturbation_norms

__all__ = ["deepfool"]

#: the stability terms of the authors' code (and Foolbox): 1e-4 past the linearized
#: boundary, 1e-8 against a zero gradient in the distance's denominator
PAST_BOUNDARY = 1e-4
TINY = 1e-8


def _l2_rows(g):
    """||g||_2 over the trailing axes: (..., 1, 28, 28) -> (...) float64."""
    g = g.astype(onp.float64)
    return onp.sqrt((g * g).sum(axis=(-3, -2, -1)))


def _l1_rows(g):
    """||g||_1 over the trailing axes: (..., 1, 28, 28) -> (...) float64."""
    return onp.abs(g.astype(onp.float64)).sum(axis=(-3, -2, -1))


#: norm name -> its dual norm (the distance to a linearized boundary is |f| / ||w||_dual)
DUAL_NORM = {"l2": _l2_rows, "linf": _l1_rows}

#: norm name -> which of perturbation_norms' (l1, l2, linf) is reported as ``eps``
_SIZE = {"l2": 1, "linf": 2}


def class_gradients(params, x, classes, predict_fn):
    """Logits and the gradients of the logit differences z_{c_k} - z_{c_0}, batched.

    x: (m, 1, 28, 28); classes: (m, K) int, column 0 the reference class.
    -> (logits (m, 10), f (m, K-1) float64, w (m, K-1, 1, 28, 28) of x's dtype).
    One forward pass and K - 1 vector-Jacobian products, each for all m images.
    """
    vjp, z = make_vjp(lambda xx: predict_fn(params, xx))(x)
    rows = onp.arange(len(x))
    c0 = classes[:, 0]
    f, w = [], []
    for k in range(1, classes.shape[1]):
        ck = classes[:, k]
        cot = onp.zeros_like(z)
        cot[rows, ck] = 1
        cot[rows, c0] -= 1
        f.append(z[rows, ck].astype(onp.float64) - z[rows, c0])
        w.append(vjp(cot))
    return z, onp.stack(f, axis=1), onp.stack(w, axis=1)


def _deepfool_core(params, x, y, norm, steps, overshoot, candidates, predict_fn, bar=None):
    """DeepFool on one chunk. No validation (the entry validated).

    -> the per-image ``best`` dict of :mod:`scratchadv.attacks.result` (its ``succ``,
    ``logits`` and ``ce`` are filled in by the caller's re-check).
    """
    geometry, dual = get_norm(norm), DUAL_NORM[norm]
    n = len(x)
    logits0 = onp.asarray(predict_fn(params, x))
    # the top-`candidates` classes of the clean image, most likely first (column 0 is
    # the prediction, = y for every image that is attacked)
    classes = onp.argsort(-logits0, axis=1, kind="stable")[:, :candidates]
    x_adv = x.copy()
    total = onp.zeros(x.shape, dtype=onp.float64)       # r = sum of the steps r_i
    taken = onp.zeros(n, dtype=onp.int64)
    act = onp.flatnonzero(logits0.argmax(1) == y)       # misclassified images stay as they are
    if bar is not None:
        bar.update(n - len(act))
    for _ in range(steps):
        if not len(act):
            break
        z, f, w = class_gradients(params, x_adv[act], classes[act], predict_fn)
        live = z.argmax(1) == y[act]
        act, f, w = act[live], f[live], w[live]
        if bar is not None:
            bar.update(int((~live).sum()))
        if not len(act):
            break
        dist = onp.abs(f) / (dual(w) + TINY)                        # (m, K-1)
        best = dist.argmin(axis=1)
        rows = onp.arange(len(act))
        wl = w[rows, best]
        step = per_image(dist[rows, best] + PAST_BOUNDARY, total) * \
            geometry.direction(wl.astype(onp.float64))
        total[act] += step
        x_adv[act] = onp.clip(x[act] + (1.0 + overshoot) * total[act], 0, 1).astype(x.dtype)
        taken[act] += 1
    if bar is not None:
        bar.update(len(act))
    return {"x": x_adv, "steps": taken}


def deepfool(params, x, y, *, norm="l2", steps=50, overshoot=0.02, candidates=10,
             predict_fn=predict, verbose=False, batch_size=1000):
    """DeepFool (Moosavi-Dezfooli et al. 2016), L2 or Linf: a small perturbation per image.

    x: (N, 1, 28, 28) float32/64 in [0, 1]; y: (N,) int64 true labels.
    norm: 'l2' | 'linf'; steps >= 1 (default 50): the most linearization steps per
    image; overshoot >= 0 (default 0.02): the total perturbation is scaled by
    1 + overshoot; candidates in 2..10 (default 10): how many of the clean image's most
    likely classes are candidate boundaries (Foolbox's defaults, see the module notes).
    Images are processed in chunks of ``batch_size`` (memory only). ``verbose`` shows a
    progress bar.

    -> :class:`~scratchadv.attacks.result.AttackResult`: ``x_adv`` the last point
    reached (in [0, 1], x's dtype), ``steps`` the steps taken, ``success`` whether the
    returned image is misclassified (re-checked on the returned images), ``eps`` the
    size of its perturbation in ``norm`` (L2 or Linf) where it succeeded, ``inf`` where
    it did not; images misclassified from the start are returned unchanged with eps 0.
    DeepFool is deterministic (no ``rng``).
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    get_norm(norm)
    steps = check_int(steps, "steps", minimum=1)
    overshoot = check_float(overshoot, "overshoot", minimum=0)
    candidates = check_int(candidates, "candidates", minimum=2, maximum=NUM_CLASSES)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n = len(x)
    bar = Progress(total=n, desc=f"deepfool {norm}", enable=verbose) if verbose else None
    try:
        parts = [_deepfool_core(params, x[i:i + batch_size], y[i:i + batch_size], norm, steps,
                                overshoot, candidates, predict_fn, bar)
                 for i in range(0, n, batch_size)]
    finally:
        if bar is not None:
            bar.close()
    best = concat_parts(parts)
    return recheck(params, x, y, best, norm, predict_fn, batch_size)


def recheck(params, x, y, best, norm, predict_fn, batch_size, target=None):
    """The result of a minimal-norm attack, every returned image classified again.

    best: {"x": (N, 1, 28, 28) returned images, "steps": (N,)}; target: None or (N,)
    int64. Success is the re-check's ``pred != y`` (targeted: ``pred == target``);
    ``eps`` is the perturbation's size in ``norm`` ('l2' | 'linf') where it succeeded,
    ``inf`` elsewhere; ``loss`` the cross-entropy of the attacked label (y or target).
    -> :class:`~scratchadv.attacks.result.AttackResult`.
    """
    logits = onp.concatenate([onp.asarray(predict_fn(params, best["x"][i:i + batch_size]))
                              for i in range(0, len(x), batch_size)])
    logits0 = onp.concatenate([onp.asarray(predict_fn(params, x[i:i + batch_size]))
                               for i in range(0, len(x), batch_size)])
    labels = y if target is None else target
    succ = logits.argmax(1) != y if target is None else logits.argmax(1) == target
    size = perturbation_norms(best["x"], x)[_SIZE[norm]]
    best = dict(best, succ=succ, logits=logits, ce=per_example_cross_entropy(logits, labels),
                ce0=per_example_cross_entropy(logits0, labels))
    return build_result(x, best, onp.where(succ, size, onp.inf), target,
                        loss_history=empty_history(len(x)))

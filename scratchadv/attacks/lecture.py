"""The lecture's attacks: fake images from noise, normalized ascent, the penalty attack.

=========================  ===============================================================
attack                     source
=========================  ===============================================================
:func:`fake_image`         lecture, "Generate Fake Image": from uniform noise, descend the
                           loss of a chosen class with the weights fixed
:func:`gradient_ascent`    lecture, untargeted: ``x += 0.05 g / max|g|``, clip to [0, 1],
                           stop per image once it is misclassified
:func:`penalty_attack`     lecture, targeted: ``L(target) + lam * mean|x - x*|`` (or squared)
:func:`slides_loss`        the loss the slides' code computes (``loss="lecture"``)
=========================  ===============================================================

None is bounded by a ball: each keeps the image in [0, 1] by clipping, and records
the objective at every step (``loss_history``) for the lecture's figures.

**The slides' loss** (``loss="lecture"``, see :func:`slides_loss`). The slides compute
``keras.metrics.binary_crossentropy(pred, fake_target)``, but Keras's signature is
``binary_crossentropy(y_true, y_pred)``: the model's probabilities are passed as the
labels and the one-hot target as the "prediction", which Keras clips to
[1e-7, 1 - 1e-7]. The mean over the 10 outputs is then
``c * (1 - p_target) + O(1e-7)`` with ``c = 2 log(1/1e-7) / 10 ~ 3.22``: linear in the
target's probability, not ``-log p_target``. That explains the slides' trace (loss
3.039 on noise, p_target ~ 0.057; 0.0079 after 10 steps, p ~ 0.9976) and why
cross-entropy with the same 10 steps of 0.5 can stop short: the slides' gradient
``-c dp/dx`` is cross-entropy's ``-(1/p) dp/dx`` times ``c p``, weaker while p is small
and about three times stronger as p nears 1. Under the ascent's normalization ``g / max|g|`` the two losses
give the same steps (their gradients differ by a positive factor per image). The
library's default stays cross-entropy (``loss="ce"``).
"""
import autograd.numpy as anp
import numpy as onp
from autograd import make_vjp
from autograd.tracer import getval

from ..model import predict
from ..ops import log_softmax, one_hot, per_example_cross_entropy
from ..progress import Progress
from ..validate import check_choice, check_float, check_images, check_int, check_labels, check_target
from .geometry import per_image
from .gradients import capture, check_model, check_rng, loss_grad, loss_only
from .result import build_result, concat_parts, softmax

__all__ = ["fake_image", "gradient_ascent", "penalty_attack", "slides_loss", "LOSSES",
           "KERAS_EPSILON"]

#: Keras's ``backend.epsilon()``, the clipping of ``binary_crossentropy``'s prediction
KERAS_EPSILON = 1e-7


def slides_loss(logits, labels):
    """The slides' loss per example: ``keras.metrics.binary_crossentropy(pred, one_hot)``.

    In the slides' argument order: y_true = the softmax probabilities p of ``logits``,
    y_pred = the one-hot ``labels`` clipped to [eps, 1 - eps] (eps = 1e-7), then Keras's
    mean over the K outputs of ``-(y_true log y_pred + (1 - y_true) log(1 - y_pred))``.
    With t = labels it equals ``(2 (1 - p_t) log(1/eps) - (8 + 2 p_t) log(1 - eps)) / K``
    for K = 10 (see the module notes). logits: (N, K); labels: (N,) int -> (N,), logits'
    dtype; differentiable (to any order) in the logits.
    """
    k = logits.shape[1]
    dt = getval(logits).dtype
    p = anp.exp(log_softmax(logits))
    t = onp.clip(one_hot(getval(labels), k, dt), dt.type(KERAS_EPSILON), dt.type(1 - KERAS_EPSILON))
    return -anp.mean(p * onp.log(t) + (1 - p) * onp.log(1 - t), axis=1)


#: loss option -> per-example objective (logits, labels) -> (N,)
LOSSES = {"ce": per_example_cross_entropy, "lecture": slides_loss}


def _objective(loss):
    return LOSSES[check_choice(loss, "loss", tuple(LOSSES))]


def fake_image(params, target, *, steps=10, lr=0.5, rng=None, n=None, predict_fn=predict,
               verbose=True, dtype=None, loss="ce"):
    """Lecture, "Generate Fake Image": an image the model calls ``target``, made from noise.

    Start from uniform noise U[0, 1), keep the weights fixed and descend the loss of
    the target class:  ``x <- clip(x - lr * d L(target)/d x, 0, 1)`` for ``steps`` steps
    (lecture defaults: 10 steps, lr 0.5), printing the loss at each step when
    ``verbose`` (as the lecture does). ``loss``: "ce" (cross-entropy, the default) or
    "lecture" (the slides' own loss, :func:`slides_loss`; see the module notes).

    target: a class index (with ``n`` images of it, default 1) or an (N,) int64 array
    (one image per entry; ``n`` must then be None or N). dtype: of the images (default:
    the parameters' dtype). -> :class:`AttackResult` with norms measured from the noise
    and ``loss_history`` (steps + 1, N) of the descended loss; ``loss``/``loss_start`` are
    the target's cross-entropy whichever loss was descended.
    """
    check_model(params, predict_fn)
    objective = _objective(loss)
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    rng = check_rng(rng)
    if isinstance(target, onp.ndarray):
        if n is not None and check_int(n, "n", minimum=1) != len(target):
            raise ValueError(f"n: expected None or {len(target)} (the length of target), got {n}")
        t = check_target(target, len(target))
    else:
        n = 1 if n is None else check_int(n, "n", minimum=1)
        t = check_target(target, n)
    if dtype is None:
        dtype = getval(next(iter(params.values()))).dtype
    dtype = onp.dtype(dtype)
    if dtype not in (onp.float32, onp.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    x0 = rng.uniform(0.0, 1.0, size=(len(t), 1, 28, 28)).astype(dtype)
    xa, history = x0, []
    lr_ = dtype.type(lr)
    for k in range(steps + 1):
        if k < steps:
            value, g, logits = loss_grad(params, xa, t, predict_fn, objective)
        else:
            value, logits = loss_only(params, xa, t, predict_fn, objective)
        history.append(onp.asarray(value, dtype=onp.float64))
        if k == 0:
            ce0 = per_example_cross_entropy(logits, t)
        if verbose:
            print(f"step {k:2d}/{steps}: loss {float(onp.mean(value)):.4f}", flush=True)
        if k < steps:
            xa = onp.clip(xa - lr_ * g.astype(dtype, copy=False), 0, 1)
    best = {"x": xa, "succ": logits.argmax(1) == t, "logits": logits,
            "steps": onp.full(len(t), steps, dtype=onp.int64),
            "ce": per_example_cross_entropy(logits, t), "ce0": ce0}
    return build_result(x0, best, onp.full(len(t), onp.inf), t, loss_history=onp.stack(history))


def _chunks(n, batch_size):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def _ascent_chunk(params, x, y, step, steps, snapshot_steps, predict_fn, bar, objective):
    n = len(x)
    xa = x.copy()
    active = onp.ones(n, dtype=bool)
    used = onp.zeros(n, dtype=onp.int64)
    history = onp.zeros((steps + 1, n))
    snapshots = {0: xa.copy()} if 0 in snapshot_steps else {}
    s = x.dtype.type(step)
    for k in range(steps):
        idx = onp.flatnonzero(active)
        if len(idx):
            value, g, logits = loss_grad(params, xa[idx], y[idx], predict_fn, objective)
            history[k:, idx] = onp.asarray(value, dtype=onp.float64)[None]
            if k == 0:                           # every image is active at step 0
                ce0 = per_example_cross_entropy(logits, y)
            wrong = logits.argmax(1) != y[idx]
            active[idx[wrong]] = False           # stop per image once it is misclassified
            idx, g = idx[~wrong], g[~wrong]
        if len(idx):
            # the most sensitive pixel moves by exactly `step`, the others proportionally
            gmax = onp.abs(g).reshape(len(g), -1).max(1).astype(onp.float64)
            inv = onp.where(gmax > 0, 1.0 / onp.maximum(gmax, 1e-300), 0.0)
            xa[idx] = onp.clip(xa[idx] + s * g.astype(x.dtype, copy=False) * per_image(inv, x), 0, 1)
            used[idx] += 1
        if k + 1 in snapshot_steps:
            snapshots[k + 1] = xa.copy()
        if bar is not None:
            bar.update(n)
    value, logits = loss_only(params, xa, y, predict_fn, objective)
    idx = onp.flatnonzero(active)
    history[steps, idx] = onp.asarray(value, dtype=onp.float64)[idx]
    snapshot_probs = {k: softmax(loss_only(params, v, y, predict_fn)[1])
                      for k, v in snapshots.items()}
    best = {"x": xa, "succ": logits.argmax(1) != y, "logits": logits, "steps": used,
            "ce": per_example_cross_entropy(logits, y), "ce0": ce0}
    return best, snapshots, snapshot_probs, history


def gradient_ascent(params, x, y, *, step=0.05, steps=20, snapshot_steps=None,
                    predict_fn=predict, verbose=False, batch_size=1000, loss="ce"):
    """Lecture, untargeted attack: normalized gradient ascent on the true label's loss.

    Per image: ``x <- clip(x + step * g / max|g|, 0, 1)`` with g = d L(y)/d x, for at
    most ``steps`` steps (lecture: 0.05 and 20), stopping as soon as the image is
    misclassified (an image misclassified from the start is not touched). ``loss``:
    "ce" (default) or "lecture" (:func:`slides_loss`); after the normalization both give
    the same steps up to rounding, since their gradients differ by a positive factor.

    x: (N, 1, 28, 28) in [0, 1]; y: (N,) int64. -> :class:`AttackResult` with
    ``snapshots[k]`` / ``snapshot_probs[k]`` the images and probabilities after k steps
    for k in ``snapshot_steps`` (default: 0, 5, 10, 15, 20 up to ``steps``, as in the
    lecture's figure; a stopped image keeps its last state; 0 is the clean image) and
    ``loss_history`` (steps + 1, N) of CE(y) (frozen once an image stops).
    ``batch_size``: images per chunk (memory only). ``verbose``: a progress bar.
    """
    check_model(params, predict_fn)
    objective = _objective(loss)
    check_images(x)
    check_labels(y, len(x))
    step = check_float(step, "step", minimum=0, strict_min=True)
    steps = check_int(steps, "steps", minimum=1)
    if snapshot_steps is None:
        snapshot_steps = tuple(k for k in (0, 5, 10, 15, 20) if k <= steps)
    snapshot_steps = tuple(check_int(k, "snapshot_steps", minimum=0, maximum=steps)
                           for k in snapshot_steps)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n = len(x)
    bar = Progress(total=n * steps, desc="gradient ascent", enable=True) if verbose else None
    parts, snaps, sprobs, hist = [], [], [], []
    try:
        for sl in _chunks(n, batch_size):
            b, sn, sp, h = _ascent_chunk(params, x[sl], y[sl], step, steps, snapshot_steps,
                                         predict_fn, bar, objective)
            parts.append(b)
            snaps.append(sn)
            sprobs.append(sp)
            hist.append(h)
    finally:
        if bar is not None:
            bar.close()
    snapshots = {k: onp.concatenate([d[k] for d in snaps]) for k in snaps[0]}
    snapshot_probs = {k: onp.concatenate([d[k] for d in sprobs]) for k in sprobs[0]}
    return build_result(x, concat_parts(parts), onp.full(n, onp.inf), None, snapshots=snapshots,
                        snapshot_probs=snapshot_probs, loss_history=onp.concatenate(hist, axis=1))


def _penalty_chunk(params, x, t, lam, penalty, steps, lr, predict_fn, bar, objective):
    d = x[0].size
    box = {}
    f = capture(predict_fn, box)

    def total(xx):
        logits = f(params, xx)
        fit = objective(logits, t)
        diff = anp.reshape(xx - x, (len(x), -1))
        pen = anp.sum(anp.abs(diff), 1) if penalty == "l1" else anp.sum(diff * diff, 1)
        box["ce"] = getval(fit) if objective is per_example_cross_entropy \
            else per_example_cross_entropy(box["logits"], t)
        return fit + lam * pen / d

    xa = x.copy()
    history = []
    lr_ = x.dtype.type(lr)
    for k in range(steps + 1):
        vjp, obj = make_vjp(total)(xa)
        history.append(onp.asarray(obj, dtype=onp.float64))
        if k == 0:
            ce0 = box["ce"]
        if k == steps:
            break
        g = vjp(onp.ones_like(obj))
        xa = onp.clip(xa - lr_ * g.astype(x.dtype, copy=False), 0, 1)
        if bar is not None:
            bar.update(len(x))
    logits = box["logits"]
    best = {"x": xa, "succ": logits.argmax(1) == t, "logits": logits,
            "steps": onp.full(len(x), steps, dtype=onp.int64), "ce": box["ce"], "ce0": ce0}
    return best, onp.stack(history)


def penalty_attack(params, x, target, *, lam=30.0, penalty="l1", steps=100, lr=0.1,
                   predict_fn=predict, verbose=False, batch_size=1000, loss="ce"):
    """Lecture, targeted attack with a closeness penalty, by gradient descent from x.

    Minimise, per image, ``L(target, f(x')) + lam * mean_pixels |x' - x|`` (``penalty="l1"``)
    or ``+ lam * mean_pixels (x' - x)^2`` (``"l2"``), lam = 30 as in the lecture, where L
    is the cross-entropy (``loss="ce"``, default) or the slides' own loss
    (``loss="lecture"``, :func:`slides_loss`: it is ~3.2 (1 - p_target), which changes the
    balance against the penalty):
    ``x' <- clip(x' - lr * d objective / d x', 0, 1)`` for ``steps`` steps, from x' = x.
    The penalty keeps the image close to the original instead of a hard eps-ball.

    x: (N, 1, 28, 28) in [0, 1]; target: an int or (N,) int64 (the true label is allowed:
    the lecture's grid pushes a "7" to all ten classes, 7 included).
    -> :class:`AttackResult`; ``loss`` is the target's cross-entropy, ``loss_history``
    (steps + 1, N) the full objective per step. ``batch_size``: images per chunk
    (memory only). ``verbose``: a progress bar.
    """
    check_model(params, predict_fn)
    objective = _objective(loss)
    check_images(x)
    t = check_target(target, len(x))
    lam = check_float(lam, "lam", minimum=0)
    penalty = check_choice(penalty, "penalty", ("l1", "l2"))
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    n = len(x)
    bar = Progress(total=n * steps, desc=f"penalty attack ({penalty})", enable=True) \
        if verbose else None
    parts, hist = [], []
    try:
        for sl in _chunks(n, batch_size):
            b, h = _penalty_chunk(params, x[sl], t[sl], lam, penalty, steps, lr, predict_fn, bar, objective)
            parts.append(b)
            hist.append(h)
    finally:
        if bar is not None:
            bar.close()
    return build_result(x, concat_parts(parts), onp.full(n, onp.inf), t,
                        loss_history=onp.concatenate(hist, axis=1))

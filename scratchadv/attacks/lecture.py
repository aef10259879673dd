"""The lecture's attacks: fake images from noise, normalized ascent, the penalty attack.

=========================  ===============================================================
attack                     source
=========================  ===============================================================
:func:`fake_image`         lecture, "Generate Fake Image": from uniform noise, descend the
                           cross-entropy of a chosen class with the weights fixed
:func:`gradient_ascent`    lecture, untargeted: ``x += 0.05 g / max|g|``, clip to [0, 1],
                           stop per image once it is misclassified
:func:`penalty_attack`     lecture, targeted: ``CE(target) + lam * mean|x - x*|`` (or squared)
=========================  ===============================================================

None is bounded by a ball: each keeps the image in [0, 1] by clipping, and records
the objective at every step (``loss_history``) for the lecture's figures.
"""
import autograd.numpy as anp
import numpy as onp
from autograd import make_vjp
from autograd.tracer import getval

from ..model import predict
from ..ops import per_example_cross_entropy
from ..progress import Progress
from ..validate import check_choice, check_float, check_images, check_int, check_labels, check_target
from .geometry import per_image
from .gradients import capture, check_model, check_rng, loss_grad, loss_only
from .result import build_result, concat_parts, softmax

__all__ = ["fake_image", "gradient_ascent", "penalty_attack"]


def fake_image(params, target, *, steps=10, lr=0.5, rng=None, n=None, predict_fn=predict,
               verbose=True, dtype=None):
    """Lecture, "Generate Fake Image": an image the model calls ``target``, made from noise.

    Start from uniform noise U[0, 1), keep the weights fixed and descend the
    cross-entropy of the target class:  ``x <- clip(x - lr * d CE(target)/d x, 0, 1)``
    for ``steps`` steps (lecture defaults: 10 steps, lr 0.5), printing the loss at each
    step when ``verbose`` (as the lecture does).

    target: a class index (with ``n`` images of it, default 1) or an (N,) int64 array
    (one image per entry; ``n`` must then be None or N). dtype: of the images (default:
    the parameters' dtype). -> :class:`AttackResult` with norms measured from the noise
    and ``loss_history`` (steps + 1, N) of the target's cross-entropy.
    """
    check_model(params, predict_fn)
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
            ce, g, logits = loss_grad(params, xa, t, predict_fn)
        else:
            ce, logits = loss_only(params, xa, t, predict_fn)
        history.append(onp.asarray(ce, dtype=onp.float64))
        if verbose:
            print(f"step {k:2d}/{steps}: loss {float(onp.mean(ce)):.4f}", flush=True)
        if k < steps:
            xa = onp.clip(xa - lr_ * g.astype(dtype, copy=False), 0, 1)
    best = {"x": xa, "succ": logits.argmax(1) == t, "logits": logits,
            "steps": onp.full(len(t), steps, dtype=onp.int64), "ce": ce, "ce0": history[0]}
    return build_result(x0, best, onp.full(len(t), onp.inf), t, loss_history=onp.stack(history))


def _chunks(n, batch_size):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


def _ascent_chunk(params, x, y, step, steps, snapshot_steps, predict_fn, bar):
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
            ce, g, logits = loss_grad(params, xa[idx], y[idx], predict_fn)
            history[k:, idx] = onp.asarray(ce, dtype=onp.float64)[None]
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
    ce, logits = loss_only(params, xa, y, predict_fn)
    idx = onp.flatnonzero(active)
    history[steps, idx] = onp.asarray(ce, dtype=onp.float64)[idx]
    snapshot_probs = {k: softmax(loss_only(params, v, y, predict_fn)[1])
                      for k, v in snapshots.items()}
    best = {"x": xa, "succ": logits.argmax(1) != y, "logits": logits, "steps": used,
            "ce": ce, "ce0": history[0]}
    return best, snapshots, snapshot_probs, history


def gradient_ascent(params, x, y, *, step=0.05, steps=20, snapshot_steps=None,
                    predict_fn=predict, verbose=False, batch_size=1000):
    """Lecture, untargeted attack: normalized gradient ascent on the true label's loss.

    Per image: ``x <- clip(x + step * g / max|g|, 0, 1)`` with g = d CE(y)/d x, for at
    most ``steps`` steps (lecture: 0.05 and 20), stopping as soon as the image is
    misclassified (an image misclassified from the start is not touched).

    x: (N, 1, 28, 28) in [0, 1]; y: (N,) int64. -> :class:`AttackResult` with
    ``snapshots[k]`` / ``snapshot_probs[k]`` the images and probabilities after k steps
    for k in ``snapshot_steps`` (default: 0, 5, 10, 15, 20 up to ``steps``, as in the
    lecture's figure; a stopped image keeps its last state; 0 is the clean image) and
    ``loss_history`` (steps + 1, N) of CE(y) (frozen once an image stops).
    ``batch_size``: images per chunk (memory only). ``verbose``: a progress bar.
    """
    check_model(params, predict_fn)
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
                                         predict_fn, bar)
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


def _penalty_chunk(params, x, t, lam, penalty, steps, lr, predict_fn, bar):
    d = x[0].size
    box = {}
    f = capture(predict_fn, box)

    def objective(xx):
        ce = per_example_cross_entropy(f(params, xx), t)
        diff = anp.reshape(xx - x, (len(x), -1))
        pen = anp.sum(anp.abs(diff), 1) if penalty == "l1" else anp.sum(diff * diff, 1)
        box["ce"] = getval(ce)
        return ce + lam * pen / d

    xa = x.copy()
    history = []
    lr_ = x.dtype.type(lr)
    for k in range(steps + 1):
        vjp, obj = make_vjp(objective)(xa)
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
                   predict_fn=predict, verbose=False, batch_size=1000):
    """Lecture, targeted attack with a closeness penalty, by gradient descent from x.

    Minimise, per image, ``CE(target, f(x')) + lam * mean_pixels |x' - x|`` (``penalty="l1"``)
    or ``+ lam * mean_pixels (x' - x)^2`` (``"l2"``), lam = 30 as in the lecture:
    ``x' <- clip(x' - lr * d objective / d x', 0, 1)`` for ``steps`` steps, from x' = x.
    The penalty keeps the image close to the original instead of a hard eps-ball.

    x: (N, 1, 28, 28) in [0, 1]; target: an int or (N,) int64 (the true label is allowed:
    the lecture's grid pushes a "7" to all ten classes, 7 included).
    -> :class:`AttackResult`; ``loss`` is the target's cross-entropy, ``loss_history``
    (steps + 1, N) the full objective per step. ``batch_size``: images per chunk
    (memory only). ``verbose``: a progress bar.
    """
    check_model(params, predict_fn)
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
            b, h = _penalty_chunk(params, x[sl], t[sl], lam, penalty, steps, lr, predict_fn, bar)
            parts.append(b)
            hist.append(h)
    finally:
        if bar is not None:
            bar.close()
    return build_result(x, concat_parts(parts), onp.full(n, onp.inf), t,
                        loss_history=onp.concatenate(hist, axis=1))

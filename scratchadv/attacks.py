"""Evasion attacks: the lecture's fake images, ascent and penalty attack; FGSM and PGD.

Every attack is a pure, batched function of ``(params, x, ...)`` that returns an
:class:`AttackResult`. The model enters only through its logits, ``predict_fn(params, x)``;
losses come from :mod:`scratchadv.losses`, and the image gradient is the gradient of the
*summed* per-example cross-entropy, so row i is ``d loss_i / d x_i`` whatever the batch
size (the ``grad(loss, 1)`` row of the design table).

=========================  ===============================================================
attack                     source
=========================  ===============================================================
:func:`fake_image`         lecture, "Generate Fake Image": from uniform noise, descend the
                           cross-entropy of a chosen class with the weights fixed
:func:`gradient_ascent`    lecture, untargeted: ``x += 0.05 g / max|g|``, clip to [0, 1],
                           stop per image once it is misclassified
:func:`penalty_attack`     lecture, targeted: ``CE(target) + lam * mean|x - x*|`` (or squared)
:func:`fgsm`               Goodfellow, Shlens & Szegedy (2015), "Explaining and harnessing
                           adversarial examples" (L2 variant: the fast gradient method)
:func:`pgd`                Kurakin et al. (2017) BIM; Madry et al. (2018), "Towards deep
                           learning models resistant to adversarial attacks": projected
                           gradient steps with random start and restarts, Linf or L2 ball
:func:`minimal_perturbation`  per image, the smallest eps at which PGD flips the prediction
=========================  ===============================================================

Conventions shared by all attacks:

- ``x``: float32 (or float64) ``(N, 1, 28, 28)`` in [0, 1]; ``y``: int64 ``(N,)``.
  Results keep x's dtype, stay in [0, 1] and, for eps-bounded attacks, inside the ball
  *exactly* (checked in float64 on the stored values, no rounding slack).
- ``target=None`` is untargeted (raise the true label's loss); otherwise one class for
  the batch or one per image (lower the target's loss). A target equal to the true
  label is refused.
- Per-image bookkeeping everywhere: step sizes, norms, stopping, restarts and the
  choice of the strongest candidate are per image, so a batch gives the same result as
  its images one by one (up to float rounding of the matrix products).
- Randomness only through ``rng`` (a ``numpy.random.Generator``); ``rng=None`` means
  ``numpy.random.default_rng(0)``, so results are reproducible by default.
- The eps-bounded attacks (FGSM, PGD) return, per image, the strongest point they
  evaluated: a misclassified (targeted: target-classified) point beats a correctly
  classified one, then the higher attacked loss wins. The clean image is one of the
  candidates, so the attacked loss never ends below where it started and ``eps=0``
  returns x unchanged. (``keep_best=False`` returns the last iterate of the strongest
  restart instead, as in the papers' pseudo-code.)
"""
from dataclasses import dataclass, field

import numpy as onp
from autograd import make_vjp
from autograd.tracer import getval

from . import losses
from .model import check_model, predict
from .progress import Progress
from .validate import (check_choice, check_float, check_images, check_int, check_labels,
                       check_target)

__all__ = ["AttackResult", "fake_image", "gradient_ascent", "penalty_attack", "fgsm", "pgd",
           "minimal_perturbation", "summarize", "NORMS"]

NORMS = ("linf", "l2")
NUM_CLASSES = 10


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns; every per-image field has length N.

    x_adv:  (N, 1, 28, 28) adversarial images, dtype of the input, in [0, 1].
    success: (N,) bool. Untargeted: ``pred != y``; targeted (and fake images): ``pred == target``.
    steps:  (N,) int64 gradient steps that produced ``x_adv`` (0: the start point was kept).
    l1, l2, linf: (N,) float64 size of ``x_adv - x`` (fake images: ``x_adv - noise``).
    probs:  (N, 10) float64 softmax of the final logits.  pred: (N,) int64 their argmax.
    loss:   (N,) float64 final cross-entropy of the attacked label (y, or the target).
    loss_start: (N,) float64 the same cross-entropy at the start point.
    eps:    (N,) float64 radius each image was attacked with (``inf``: unbounded attack;
            :func:`minimal_perturbation`: the smallest radius found, ``inf`` if none).
    target: (N,) int64 target classes, or None for untargeted attacks.
    snapshots: {step: (N, 1, 28, 28)} intermediate images (:func:`gradient_ascent`).
    snapshot_probs: {step: (N, 10)} their class probabilities.
    loss_history: (K + 1, N) float64 the minimised/maximised objective at each step
            (row 0: the start), for the lecture's iterative attacks; (0, N) otherwise.
    """
    x_adv: onp.ndarray
    success: onp.ndarray
    steps: onp.ndarray
    l1: onp.ndarray
    l2: onp.ndarray
    linf: onp.ndarray
    probs: onp.ndarray
    pred: onp.ndarray
    loss: onp.ndarray
    loss_start: onp.ndarray
    eps: onp.ndarray
    target: object = None
    snapshots: dict = field(default_factory=dict)
    snapshot_probs: dict = field(default_factory=dict)
    loss_history: onp.ndarray = None

    def __len__(self):
        return len(self.x_adv)


# ---------------------------------------------------------------------------
# Shared machinery (private: inputs are validated once, at the public entry)
# ---------------------------------------------------------------------------

def _check_model(params, predict_fn):
    """Known architectures are checked against their parameter shapes."""
    check_model(params, predict_fn)


def _rng(rng):
    if rng is None:
        return onp.random.default_rng(0)
    if not isinstance(rng, onp.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def _capture(predict_fn, box):
    """predict_fn that also stores its (un-boxed) logits in ``box`` (to reuse the forward pass)."""
    def f(p, xx):
        z = predict_fn(p, xx)
        box["logits"] = getval(z)
        return z
    return f


def _loss_grad(params, x, labels, predict_fn):
    """One forward + backward: (ce (N,), d ce_i / d x_i (N,1,28,28), logits (N,10)).

    The gradient is that of the summed per-example loss (losses.per_example_loss), so
    each row is its own image's gradient whatever N is.
    """
    box = {}
    f = _capture(predict_fn, box)
    vjp, ce = make_vjp(lambda xx: losses.per_example_loss(params, xx, labels, f))(x)
    g = vjp(onp.ones_like(ce))
    return ce, g, box["logits"]


def _loss_only(params, x, labels, predict_fn):
    """Forward only: (ce (N,), logits (N, 10))."""
    box = {}
    ce = losses.per_example_loss(params, x, labels, _capture(predict_fn, box))
    return ce, box["logits"]


def _softmax(logits):
    z = onp.asarray(logits, dtype=onp.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = onp.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _norms(a, b):
    """(l1, l2, linf) of each row of a - b, in float64 (the exact difference of the stored
    values: a float32 subtraction could round a difference just under eps up to eps + ulp)."""
    d = onp.abs(a.reshape(len(a), -1).astype(onp.float64) - b.reshape(len(b), -1))
    return d.sum(1), onp.sqrt((d * d).sum(1)), d.max(1, initial=0.0)


def _col(v, x):
    """(N,) -> (N, 1, 1, 1) in x's dtype, to scale images per sample."""
    return onp.asarray(v, dtype=x.dtype).reshape(-1, 1, 1, 1)


def _linf_box(x, eps):
    """Per-pixel bounds [lo, hi] = [x - eps, x + eps] ∩ [0, 1], rounded *inwards*.

    Rounding x -/+ eps to float32 can land one ulp outside the ball; stepping such
    entries one ulp towards x makes ``|clip(v, lo, hi) - x| <= eps`` hold exactly.
    """
    xd = x.astype(onp.float64)
    e = onp.asarray(eps, dtype=onp.float64).reshape(-1, 1, 1, 1)
    lo = onp.maximum(xd - e, 0.0).astype(x.dtype)
    hi = onp.minimum(xd + e, 1.0).astype(x.dtype)
    bad = xd - lo > e
    lo[bad] = onp.nextafter(lo[bad], x[bad])
    bad = hi - xd > e
    hi[bad] = onp.nextafter(hi[bad], x[bad])
    return lo, hi


def _l2_project(x, xa, eps):
    """Project xa onto {v : ||v - x||_2 <= eps} ∩ [0, 1]^d, per image.

    Scaling the offset then clipping stays inside the ball because clipping to the box
    only moves coordinates towards x (x itself is in the box). The radius is shrunk by
    a few ulps so float rounding of the scaled offset cannot leave the ball.
    """
    d = (xa - x).astype(onp.float64)
    norm = onp.sqrt((d.reshape(len(d), -1) ** 2).sum(1))
    radius = onp.asarray(eps, dtype=onp.float64) * (1 - 8 * onp.finfo(x.dtype).eps)
    scale = onp.where(norm > radius, radius / onp.maximum(norm, 1e-300), 1.0)
    out = onp.clip(x + (d * scale.reshape(-1, 1, 1, 1)).astype(x.dtype), 0, 1)
    # paranoid exactness: any image still outside after rounding is pulled back to x
    n2 = _norms(out, x)[1]
    over = n2 > onp.asarray(eps, dtype=onp.float64)
    if onp.any(over):
        out[over] = x[over]
    return out


def _l2_normalize(g):
    """g / ||g||_2 per image (0 where g == 0)."""
    n = onp.sqrt((g.astype(onp.float64).reshape(len(g), -1) ** 2).sum(1))
    inv = onp.where(n > 0, 1.0 / onp.maximum(n, 1e-300), 0.0)
    return g * _col(inv, g)


def _draw_start(rng, n, restarts, norm, dtype):
    """Unit random starts, (n, restarts, 1, 28, 28): scaled by each image's eps later.

    Linf: uniform in [-1, 1]^d. L2: uniform in the unit ball, as the first d coordinates
    of a uniformly random point on the sphere S^(d+1) (Voelker, Gosmann & Stewart 2017,
    "Efficiently sampling vectors and coordinates from the n-sphere and n-ball").
    Each image's draws are one contiguous block of the stream, so a batch draws exactly
    what its images would draw one after another with the same generator.
    """
    d = 28 * 28
    if norm == "linf":
        u = rng.uniform(-1.0, 1.0, size=(n, restarts, d))
    else:
        z = rng.standard_normal(size=(n, restarts, d + 2))
        u = z[..., :d] / onp.sqrt((z * z).sum(-1, keepdims=True))
    return u.reshape(n, restarts, 1, 28, 28).astype(dtype)


def _stronger(succ, obj, best_succ, best_obj):
    """Per image: does (succ, obj) beat the best so far? Success first, then objective."""
    return (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))


def _pgd_core(params, x, labels, targeted, eps, step_size, steps, norm, start, predict_fn,
              keep_best, bar=None, early_stop=False):
    """Projected gradient steps for one chunk. No validation (callers validated).

    x: (c, 1, 28, 28); labels: (c,) the attacked label (y, or the target when
    ``targeted``); eps, step_size: (c,) float64; start: (c, R, 1, 28, 28) unit random
    starts or None (start at x, one run). ``early_stop`` (needs keep_best): an image
    leaves the loop at its first successful iterate. Returns dict of per-image arrays.
    """
    sign = -1.0 if targeted else 1.0
    n = len(x)
    if norm == "linf":
        lo, hi = _linf_box(x, eps)

    def succ_of(logits, lab):
        p = logits.argmax(1)
        return p == lab if targeted else p != lab

    ce0, logits0 = _loss_only(params, x, labels, predict_fn)
    best = {"x": x.copy(), "succ": succ_of(logits0, labels), "obj": sign * ce0,
            "logits": onp.array(logits0), "steps": onp.zeros(n, dtype=onp.int64),
            "ce": onp.array(ce0)}
    # keep_best: the clean image is the first candidate; otherwise the first final
    # iterate is taken whatever it is
    chosen = onp.full(n, bool(keep_best))
    runs = 1 if start is None else start.shape[1]
    for r in range(runs):
        act = onp.flatnonzero(~best["succ"]) if early_stop else onp.arange(n)
        if not len(act):
            if bar is not None:
                bar.update(n * steps * (runs - r))
            break
        xs, ls, es = x[act], labels[act], eps[act]
        a = _col(step_size[act], x)
        if norm == "linf":
            lo_s, hi_s = lo[act], hi[act]
        if start is None:
            xa = xs
        elif norm == "linf":
            xa = onp.clip(xs + start[act, r] * _col(es, x), lo_s, hi_s)
        else:
            xa = _l2_project(xs, xs + start[act, r] * _col(es, x), es)
        for t in range(steps + 1):
            if t < steps:
                ce, g, logits = _loss_grad(params, xa, ls, predict_fn)
            else:
                ce, logits = _loss_only(params, xa, ls, predict_fn)
            if keep_best or t == steps:
                succ, obj = succ_of(logits, ls), sign * ce
                better = _stronger(succ, obj, best["succ"][act], best["obj"][act]) | ~chosen[act]
                if onp.any(better):
                    j = act[better]
                    best["x"][j] = xa[better]
                    best["succ"][j] = succ[better]
                    best["obj"][j] = obj[better]
                    best["ce"][j] = ce[better]
                    best["logits"][j] = logits[better]
                    best["steps"][j] = t
                    chosen[j] = True
            if t == steps:
                break
            if early_stop:            # drop images that have succeeded: nothing left to do
                keep = ~best["succ"][act]
                if not keep.all():
                    act, xa, g, xs, ls, es, a = (v[keep] for v in (act, xa, g, xs, ls, es, a))
                    if norm == "linf":
                        lo_s, hi_s = lo_s[keep], hi_s[keep]
                if not len(act):
                    if bar is not None:
                        bar.update(n * (steps - t))
                    break
            g = g.astype(x.dtype, copy=False)
            if norm == "linf":
                xa = onp.clip(xa + sign * a * onp.sign(g), lo_s, hi_s)
            else:
                xa = _l2_project(xs, xa + sign * a * _l2_normalize(g), es)
            if bar is not None:
                bar.update(n)
    best["ce0"] = ce0
    return best


def _result(x, best, eps, target, **extra):
    x_adv = best["x"]
    if onp.may_share_memory(x_adv, x):      # never hand back (a view of) the caller's array
        x_adv = x_adv.copy()
    l1, l2, linf = _norms(x_adv, x)
    return AttackResult(
        x_adv=x_adv, success=onp.asarray(best["succ"], dtype=bool),
        steps=onp.asarray(best["steps"], dtype=onp.int64), l1=l1, l2=l2, linf=linf,
        probs=_softmax(best["logits"]), pred=onp.asarray(best["logits"]).argmax(1).astype(onp.int64),
        loss=onp.asarray(best["ce"], dtype=onp.float64),
        loss_start=onp.asarray(best["ce0"], dtype=onp.float64),
        eps=onp.asarray(eps, dtype=onp.float64), target=target, **extra)


def _concat(parts):
    out = {}
    for k in parts[0]:
        out[k] = onp.concatenate([p[k] for p in parts])
    return out


def _empty_history(n):
    return onp.zeros((0, n), dtype=onp.float64)


# ---------------------------------------------------------------------------
# FGSM and PGD
# ---------------------------------------------------------------------------

def fgsm(params, x, y, *, eps, norm="linf", target=None, rng=None, predict_fn=predict,
         keep_best=True):
    """Fast gradient sign method: one step of size eps (Goodfellow et al. 2015).

    Linf: ``x' = clip(x + eps * sign(g), 0, 1)``; L2 (fast gradient method):
    ``x' = clip(x + eps * g / ||g||_2, 0, 1)``, with g = d CE(y)/d x per image
    (targeted: the step goes down the target's cross-entropy instead).
    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; eps >= 0 -> :class:`AttackResult`.
    ``rng`` is accepted for a uniform signature and unused (FGSM is deterministic).
    With ``keep_best`` (default) an image whose step does not help keeps x.
    """
    _check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    norm = check_choice(norm, "norm", NORMS)
    t = check_target(target, len(x), y)
    if rng is not None:
        _rng(rng)
    e = onp.full(len(x), eps)
    best = _pgd_core(params, x, y if t is None else t, t is not None, e, e, 1, norm, None,
                     predict_fn, keep_best)
    return _result(x, best, e, t, loss_history=_empty_history(len(x)))


def pgd(params, x, y, *, eps, steps=40, step_size=0.01, norm="linf", random_start=True,
        restarts=1, target=None, rng=None, predict_fn=predict, verbose=False,
        keep_best=True, early_stop=False, batch_size=1000):
    """Projected gradient descent on the loss (Madry et al. 2018); BIM when random_start=False.

    Each of ``restarts`` runs starts at x plus a uniform random point of the eps-ball
    (Linf: uniform in the cube; L2: uniform in the ball) and takes ``steps`` steps

        Linf: x <- Proj(x + step_size * sign(g))          (Madry et al. 2018, eq. 2.2)
        L2:   x <- Proj(x + step_size * g / ||g||_2)

    where g = d CE(y)/d x of each image (targeted: minus the target's gradient) and
    Proj is the projection onto the ball ∩ [0, 1]. Per image, the strongest point over
    all steps and restarts is kept (see the module notes; ``keep_best=False``: the last
    iterate of the strongest restart). Restarts without a random start would repeat the
    same run, so random_start=False runs once.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; eps >= 0; steps >= 1;
    step_size >= 0 (pixel units; L2: Euclidean length); restarts >= 1;
    target: None, an int or (N,) int64; rng: numpy Generator (random starts).
    ``early_stop``: an image stops (steps and restarts) at its first successful iterate.
    Success, and so robust accuracy, is the same as without it, at a fraction of the
    cost when most images fall early; the returned images are then the first successful
    ones rather than the ones of highest loss. Images are processed in chunks of
    ``batch_size`` (memory only: results do not depend on it). ``verbose`` shows a
    progress bar. -> :class:`AttackResult`.
    """
    _check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    steps = check_int(steps, "steps", minimum=1)
    step_size = check_float(step_size, "step_size", minimum=0)
    norm = check_choice(norm, "norm", NORMS)
    restarts = check_int(restarts, "restarts", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    for name, v in (("random_start", random_start), ("keep_best", keep_best),
                    ("early_stop", early_stop)):
        if not isinstance(v, (bool, onp.bool_)):
            raise TypeError(f"{name}: expected True or False, got {v!r}")
    if early_stop and not keep_best:
        raise ValueError("early_stop: needs keep_best=True (the successful iterate must be kept)")
    t = check_target(target, len(x), y)
    rng = _rng(rng)
    labels = y if t is None else t
    n = len(x)
    runs = restarts if random_start else 1
    parts = []
    bar = Progress(total=n * runs * steps, desc=f"pgd {norm} eps={eps:g}", enable=verbose) \
        if verbose else None
    try:
        for i in range(0, n, batch_size):
            xs = x[i:i + batch_size]
            c = len(xs)
            start = _draw_start(rng, c, runs, norm, x.dtype) if random_start else None
            parts.append(_pgd_core(params, xs, labels[i:i + batch_size], t is not None,
                                   onp.full(c, eps), onp.full(c, step_size), steps, norm,
                                   start, predict_fn, keep_best, bar, early_stop))
    finally:
        if bar is not None:
            bar.close()
    best = _concat(parts)
    return _result(x, best, onp.full(n, eps), t, loss_history=_empty_history(n))


def minimal_perturbation(params, x, y, *, norm="linf", max_eps=None, search_steps=10,
                         steps=40, restarts=1, random_start=True, rng=None,
                         predict_fn=predict, verbose=False):
    """Per image, the smallest radius at which PGD flips the prediction (bisection).

    For each image, bisection on eps in [0, max_eps] (default: 1 for Linf, 28 = the
    largest possible L2 distance between two images for L2): PGD with ``steps`` steps of
    size 2.5 * eps / steps (Madry et al. 2018) at the midpoint; success -> upper half
    is discarded, failure -> lower half. ``search_steps`` halvings give a resolution of
    max_eps / 2**search_steps. Images already misclassified get eps 0 (x unchanged);
    images PGD cannot flip even at max_eps get eps inf (and the max_eps attempt).

    Returns an :class:`AttackResult` whose ``eps`` is the smallest successful radius and
    whose ``x_adv`` is the adversarial image found at that radius (its ``linf``/``l2``
    are the actual size, <= eps). Each image draws its random starts from its own
    generator seeded from ``rng``, so batch and one-by-one results agree.
    This is the number behind the lecture's "shallow nets need larger perturbations".
    """
    _check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    norm = check_choice(norm, "norm", NORMS)
    if max_eps is None:
        max_eps = 1.0 if norm == "linf" else 28.0
    max_eps = check_float(max_eps, "max_eps", minimum=0, strict_min=True)
    search_steps = check_int(search_steps, "search_steps", minimum=0)
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    rng = _rng(rng)
    n = len(x)
    runs = restarts if random_start else 1
    seeds = rng.integers(0, 2 ** 63 - 1, size=n)
    gens = [onp.random.default_rng(int(s)) for s in seeds]

    def attack(idx, e):
        start = None
        if random_start:
            start = onp.concatenate([_draw_start(gens[i], 1, runs, norm, x.dtype) for i in idx])
        # only success matters here: each image stops at its first success
        return _pgd_core(params, x[idx], y[idx], False, e, 2.5 * e / steps, steps, norm,
                         start, predict_fn, True, early_stop=True)

    ce0, logits0 = _loss_only(params, x, y, predict_fn)
    correct = logits0.argmax(1) == y
    found = {"x": x.copy(), "succ": ~correct, "obj": ce0.astype(onp.float64),
             "logits": logits0.copy(), "steps": onp.zeros(n, dtype=onp.int64),
             "ce": ce0.astype(onp.float64)}
    lo = onp.zeros(n)
    hi = onp.where(correct, onp.inf, 0.0)
    todo = onp.flatnonzero(correct)
    bar = Progress(total=(search_steps + 1), desc=f"minimal {norm}", enable=verbose) \
        if verbose else None

    def record(idx, e, res, keep_failures=False):
        ok = res["succ"] | keep_failures
        for k in ("x", "succ", "logits", "steps", "ce"):
            found[k][idx[ok]] = res[k][ok]
        good = res["succ"]
        hi[idx[good]] = e[good]
        lo[idx[~good]] = e[~good]

    try:
        if len(todo):          # at max_eps; images not flipped even there keep this attempt
            record(todo, onp.full(len(todo), max_eps), attack(todo, onp.full(len(todo), max_eps)),
                   keep_failures=True)
            lo[todo] = 0.0
        if bar is not None:
            bar.update(1)
        todo = todo[onp.isfinite(hi[todo])]
        for _ in range(search_steps):
            if len(todo):
                mid = (lo[todo] + hi[todo]) / 2
                record(todo, mid, attack(todo, mid))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    found["ce0"] = ce0
    return _result(x, found, hi, None, loss_history=_empty_history(n))


# ---------------------------------------------------------------------------
# The lecture's attacks
# ---------------------------------------------------------------------------

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
    _check_model(params, predict_fn)
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    rng = _rng(rng)
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
            ce, g, logits = _loss_grad(params, xa, t, predict_fn)
        else:
            ce, logits = _loss_only(params, xa, t, predict_fn)
        history.append(onp.asarray(ce, dtype=onp.float64))
        if verbose:
            print(f"step {k:2d}/{steps}: loss {float(onp.mean(ce)):.4f}", flush=True)
        if k < steps:
            xa = onp.clip(xa - lr_ * g.astype(dtype, copy=False), 0, 1)
    best = {"x": xa, "succ": logits.argmax(1) == t, "logits": logits,
            "steps": onp.full(len(t), steps, dtype=onp.int64), "ce": ce, "ce0": history[0]}
    return _result(x0, best, onp.full(len(t), onp.inf), t, loss_history=onp.stack(history))


def _chunks(n, batch_size, bar):
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
            ce, g, logits = _loss_grad(params, xa[idx], y[idx], predict_fn)
            history[k:, idx] = onp.asarray(ce, dtype=onp.float64)[None]
            wrong = logits.argmax(1) != y[idx]
            active[idx[wrong]] = False           # stop per image once it is misclassified
            idx, g = idx[~wrong], g[~wrong]
        if len(idx):
            # the most sensitive pixel moves by exactly `step`, the others proportionally
            gmax = onp.abs(g).reshape(len(g), -1).max(1).astype(onp.float64)
            inv = onp.where(gmax > 0, 1.0 / onp.maximum(gmax, 1e-300), 0.0)
            xa[idx] = onp.clip(xa[idx] + s * g.astype(x.dtype, copy=False) * _col(inv, x), 0, 1)
            used[idx] += 1
        if k + 1 in snapshot_steps:
            snapshots[k + 1] = xa.copy()
        if bar is not None:
            bar.update(n)
    ce, logits = _loss_only(params, xa, y, predict_fn)
    idx = onp.flatnonzero(active)
    history[steps, idx] = onp.asarray(ce, dtype=onp.float64)[idx]
    snapshot_probs = {k: _softmax(_loss_only(params, v, y, predict_fn)[1])
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
    _check_model(params, predict_fn)
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
        for sl in _chunks(n, batch_size, bar):
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
    return _result(x, _concat(parts), onp.full(n, onp.inf), None, snapshots=snapshots,
                   snapshot_probs=snapshot_probs, loss_history=onp.concatenate(hist, axis=1))


def _penalty_chunk(params, x, t, lam, penalty, steps, lr, predict_fn, bar):
    import autograd.numpy as anp
    d = x[0].size
    box = {}
    f = _capture(predict_fn, box)

    def objective(xx):
        ce = losses.per_example_loss(params, xx, t, f)
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
    _check_model(params, predict_fn)
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
        for sl in _chunks(n, batch_size, bar):
            b, h = _penalty_chunk(params, x[sl], t[sl], lam, penalty, steps, lr, predict_fn, bar)
            parts.append(b)
            hist.append(h)
    finally:
        if bar is not None:
            bar.close()
    return _result(x, _concat(parts), onp.full(n, onp.inf), t,
                   loss_history=onp.concatenate(hist, axis=1))


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------

def summarize(result, y, clean_pred):
    """Metrics of an attack on labelled images -> dict of plain floats.

    y: (N,) true labels; clean_pred: (N,) predictions on the clean images.
    ``clean_acc``/``robust_acc``: accuracy before/after. ``success_rate``: among images
    classified correctly before (and, targeted, whose label differs from the target),
    the fraction misclassified after (targeted: classified as the target). Norm
    statistics are over the same images (the ones the attack had work to do).
    """
    y = onp.asarray(y)
    correct = onp.asarray(clean_pred) == y
    pool = correct if result.target is None else correct & (result.target != y)
    out = {"n": int(len(y)), "clean_acc": float(correct.mean()),
           "robust_acc": float(onp.mean(result.pred == y)),
           "success_rate": float(result.success[pool].mean()) if pool.any() else float("nan"),
           "attacked": int(pool.sum())}
    for k in ("linf", "l2", "l1"):
        v = getattr(result, k)[pool]
        out[f"mean_{k}"] = float(v.mean()) if len(v) else float("nan")
        out[f"median_{k}"] = float(onp.median(v)) if len(v) else float("nan")
    return out

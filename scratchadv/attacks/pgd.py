"""The eps-bounded attacks: FGSM, PGD (BIM) and the minimal PGD radius per image.

=============================  ===========================================================
attack                         source
=============================  ===========================================================
:func:`fgsm`                   Goodfellow, Shlens & Szegedy (2015), "Explaining and
                               harnessing adversarial examples" (L2 variant: the fast
                               gradient method)
:func:`pgd`                    Kurakin et al. (2017) BIM; Madry et al. (2018), "Towards deep
                               learning models resistant to adversarial attacks": projected
                               gradient steps with random start and restarts, Linf or L2 ball
:func:`minimal_perturbation`   per image, the smallest eps at which PGD flips the prediction
=============================  ===========================================================

All three are :func:`_pgd_core`, one loop with no per-norm code: the ball's
:class:`~scratchadv.attacks.geometry.Norm` supplies the random start, the step
direction and the map back into ball ∩ [0, 1]. FGSM is one step of size eps from x.

Each returns, per image, the strongest point it evaluated: a misclassified (targeted:
target-classified) point beats a correctly classified one, then the higher attacked
loss wins. The clean image is one of the candidates, so the attacked loss never ends
below where it started and ``eps=0`` returns x unchanged. (``keep_best=False`` returns
the last iterate of the strongest restart instead, as in the papers' pseudo-code.)
"""
from dataclasses import dataclass
from typing import Callable

import numpy as onp

from ..model import predict
from ..parallel import Workers, check_workers, portable
from ..progress import Progress
from ..validate import check_float, check_images, check_int, check_labels, check_target, check_flag
from .geometry import Norm, default_step_size, get_norm, per_image
from .gradients import check_model, check_rng, loss_grad, loss_only
from .result import build_result, concat_parts, empty_history

__all__ = ["fgsm", "pgd", "minimal_perturbation"]


@dataclass(frozen=True)
class _Run:
    """The settings of one attack call, the same for every chunk of images.

    norm: the ball's geometry. steps: gradient steps per restart. targeted: descend the
    target's loss (labels are targets) instead of ascending the true label's.
    keep_best: return each image's strongest iterate (else the last one of its strongest
    restart). early_stop (needs keep_best): an image leaves the loop at its first
    successful iterate. predict_fn: (params, x) -> logits.
    """
    norm: Norm
    steps: int
    targeted: bool
    keep_best: bool
    early_stop: bool
    predict_fn: Callable


def _stronger(succ, obj, best_succ, best_obj):
    """Per image: does (succ, obj) beat the best so far? Success first, then objective."""
    return (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))


def _pgd_core(params, x, labels, eps, step_size, start, run, bar=None):
    """Projected gradient steps for one chunk. No validation (callers validated).

    x: (c, 1, 28, 28); labels: (c,) the attacked label (y, or the target when
    ``run.targeted``); eps, step_size: (c,) float64; start: (c, R, 1, 28, 28) unit
    random starts or None (start at x, one run); run: :class:`_Run`; bar: a Progress or
    None. Returns the per-image ``best`` dict of :mod:`scratchadv.attacks.result`.
    """
    norm, steps, predict_fn = run.norm, run.steps, run.predict_fn
    sign = -1.0 if run.targeted else 1.0
    n = len(x)
    ball = norm.feasible(x, eps)

    def succ_of(logits, lab):
        p = logits.argmax(1)
        return p == lab if run.targeted else p != lab

    ce0, logits0 = loss_only(params, x, labels, predict_fn)
    best = {"x": x.copy(), "succ": succ_of(logits0, labels), "obj": sign * ce0,
            "logits": onp.array(logits0), "steps": onp.zeros(n, dtype=onp.int64),
            "ce": onp.array(ce0)}
    # keep_best: the clean image is the first candidate; otherwise the first final
    # iterate is taken whatever it is
    chosen = onp.full(n, bool(run.keep_best))
    runs = 1 if start is None else start.shape[1]
    for r in range(runs):
        act = onp.flatnonzero(~best["succ"]) if run.early_stop else onp.arange(n)
        if not len(act):
            if bar is not None:
                bar.update(n * steps * (runs - r))
            break
        ls, a, b = labels[act], per_image(step_size[act], x), ball.take(act)
        xa = x[act] if start is None else b.clip(x[act] + start[act, r] * per_image(eps[act], x))
        for t in range(steps + 1):
            if t < steps:
                ce, g, logits = loss_grad(params, xa, ls, predict_fn)
            else:
                ce, logits = loss_only(params, xa, ls, predict_fn)
            if run.keep_best or t == steps:
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
            if run.early_stop:        # drop images that have succeeded: nothing left to do
                keep = ~best["succ"][act]
                if not keep.all():
                    act, xa, g, ls, a = (v[keep] for v in (act, xa, g, ls, a))
                    b = b.take(keep)
                if not len(act):
                    if bar is not None:
                        bar.update(n * (steps - t))
                    break
            g = g.astype(x.dtype, copy=False)
            xa = b.clip(xa + sign * a * norm.direction(g))
            if bar is not None:
                bar.update(n)
    best["ce0"] = ce0
    return best


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
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    geometry = get_norm(norm)
    t = check_target(target, len(x), y)
    if rng is not None:
        check_rng(rng)
    e = onp.full(len(x), eps)
    run = _Run(geometry, 1, t is not None, keep_best, False, predict_fn)
    best = _pgd_core(params, x, y if t is None else t, e, e, None, run)
    return build_result(x, best, e, t, loss_history=empty_history(len(x)))


def pgd(params, x, y, *, eps, steps=40, step_size=0.01, norm="linf", random_start=True,
        restarts=1, target=None, rng=None, predict_fn=predict, verbose=False,
        keep_best=True, early_stop=False, batch_size=1000, workers=1):
    """Projected gradient descent on the loss (Madry et al. 2018); BIM when random_start=False.

    Each of ``restarts`` runs starts at x plus a uniform random point of the eps-ball
    (Linf: uniform in the cube; L2: uniform in the ball) and takes ``steps`` steps

        Linf: x <- Proj(x + step_size * sign(g))          (Madry et al. 2018, eq. 2.2)
        L2:   x <- Proj(x + step_size * g / ||g||_2)

    where g = d CE(y)/d x of each image (targeted: minus the target's gradient) and
    Proj maps back into the ball ∩ [0, 1] (Linf: the projection, clipping to a box; L2:
    scaling onto the ball then clipping to [0, 1], see
    :mod:`scratchadv.attacks.geometry`). Per image, the strongest point over all steps
    and restarts is kept (see the module notes; ``keep_best=False``: the last iterate of
    the strongest restart). Restarts without a random start would repeat the same run,
    so random_start=False runs once.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; eps >= 0; steps >= 1;
    step_size >= 0 (pixel units; L2: Euclidean length); restarts >= 1;
    target: None, an int or (N,) int64; rng: numpy Generator (random starts).
    ``early_stop``: an image stops (steps and restarts) at its first successful iterate.
    Success, and so robust accuracy, is the same as without it, at a fraction of the
    cost when most images fall early; the returned images are then the first successful
    ones rather than the ones of highest loss. Images are processed in chunks of
    ``batch_size`` (memory only: results do not depend on it). ``workers``: processes the
    chunks run in (:mod:`scratchadv.parallel`); the random starts are drawn here, chunk
    after chunk, so the result does not depend on it either. ``verbose`` shows a
    progress bar. -> :class:`AttackResult`.
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    steps = check_int(steps, "steps", minimum=1)
    step_size = check_float(step_size, "step_size", minimum=0)
    geometry = get_norm(norm)
    restarts = check_int(restarts, "restarts", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    random_start = check_flag(random_start, "random_start")
    keep_best = check_flag(keep_best, "keep_best")
    early_stop = check_flag(early_stop, "early_stop")
    if early_stop and not keep_best:
        raise ValueError("early_stop: needs keep_best=True (the successful iterate must be kept)")
    t = check_target(target, len(x), y)
    rng = check_rng(rng)
    labels = y if t is None else t
    n = len(x)
    runs = restarts if random_start else 1
    run = _Run(geometry, steps, t is not None, keep_best, early_stop, predict_fn)
    parts = []
    bar = Progress(total=n * runs * steps, desc=f"pgd {geometry.name} eps={eps:g}",
                   enable=verbose) if verbose else None
    workers = check_workers(workers)
    try:
        if workers == 1:            # chunk after chunk, each start drawn when its chunk runs
            for i in range(0, n, batch_size):
                xs = x[i:i + batch_size]
                c = len(xs)
                start = geometry.draw_start(rng, c, runs, x.dtype) if random_start else None
                parts.append(_pgd_core(params, xs, labels[i:i + batch_size], onp.full(c, eps),
                                       onp.full(c, step_size), start, run, bar))
        else:                       # the same starts, drawn first; the chunks side by side
            tasks = [(i, min(n, i + batch_size) - i, geometry.draw_start(
                rng, min(n, i + batch_size) - i, runs, x.dtype) if random_start else None)
                     for i in range(0, n, batch_size)]
            shared = {"params": params, "x": x, "labels": labels, "eps": eps, "step_size": step_size,
                      "run": (norm, steps, t is not None, keep_best, early_stop, portable(predict_fn))}
            with Workers(workers, shared) as pool:
                for (_, c, _), part in zip(tasks, pool.map(_pgd_chunk, tasks)):
                    parts.append(part)
                    if bar is not None:
                        bar.update(c * runs * steps)
    finally:
        if bar is not None:
            bar.close()
    return build_result(x, concat_parts(parts), onp.full(n, eps), t,
                        loss_history=empty_history(n))


def _pgd_chunk(shared, i, c, start):
    """Images i .. i+c-1 of a :func:`pgd` call (a worker's task) -> their ``best`` dict."""
    norm, steps, targeted, keep_best, early_stop, predict_fn = shared["run"]
    run = _Run(get_norm(norm), steps, targeted, keep_best, early_stop, predict_fn)
    return _pgd_core(shared["params"], shared["x"][i:i + c], shared["labels"][i:i + c],
                     onp.full(c, shared["eps"]), onp.full(c, shared["step_size"]), start, run)


def minimal_perturbation(params, x, y, *, norm="linf", max_eps=None, search_steps=10,
                         steps=40, restarts=1, random_start=True, rng=None,
                         predict_fn=predict, verbose=False):
    """Per image, the smallest radius at which PGD flips the prediction (bisection).

    For each image, bisection on eps in [0, max_eps] (default: the norm's diameter of
    [0, 1]^784, 1 for Linf and 28 for L2): PGD with ``steps`` steps of size
    :func:`~scratchadv.attacks.geometry.default_step_size` (2.5 * eps / steps, Madry et
    al. 2018) at the midpoint; success -> upper half is discarded, failure -> lower half.
    ``search_steps`` halvings give a resolution of max_eps / 2**search_steps. Images
    already misclassified get eps 0 (x unchanged); images PGD cannot flip even at
    max_eps get eps inf (and the max_eps attempt).

    Returns an :class:`AttackResult` whose ``eps`` is the smallest successful radius and
    whose ``x_adv`` is the adversarial image found at that radius (its ``linf``/``l2``
    are the actual size, <= eps). Each image draws its random starts from its own
    generator seeded from ``rng``, so batch and one-by-one results agree.
    This is the number behind the lecture's "shallow nets need larger perturbations".
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    geometry = get_norm(norm)
    if max_eps is None:
        max_eps = geometry.diameter
    max_eps = check_float(max_eps, "max_eps", minimum=0, strict_min=True)
    search_steps = check_int(search_steps, "search_steps", minimum=0)
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    rng = check_rng(rng)
    n = len(x)
    runs = restarts if random_start else 1
    seeds = rng.integers(0, 2 ** 63 - 1, size=n)
    gens = [onp.random.default_rng(int(s)) for s in seeds]
    # only success matters here: each image stops at its first success
    run = _Run(geometry, steps, False, True, True, predict_fn)

    def attack(idx, e):
        start = None
        if random_start:
            start = onp.concatenate([geometry.draw_start(gens[i], 1, runs, x.dtype) for i in idx])
        return _pgd_core(params, x[idx], y[idx], e, default_step_size(e, steps), start, run)

    ce0, logits0 = loss_only(params, x, y, predict_fn)
    correct = logits0.argmax(1) == y
    found = {"x": x.copy(), "succ": ~correct, "obj": ce0.astype(onp.float64),
             "logits": logits0.copy(), "steps": onp.zeros(n, dtype=onp.int64),
             "ce": ce0.astype(onp.float64)}
    lo = onp.zeros(n)
    hi = onp.where(correct, onp.inf, 0.0)
    todo = onp.flatnonzero(correct)
    bar = Progress(total=(search_steps + 1), desc=f"minimal {geometry.name}", enable=verbose) \
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
    return build_result(x, found, hi, None, loss_history=empty_history(n))

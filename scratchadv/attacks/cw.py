"""Carlini & Wagner's L2 attack: the smallest perturbation found by optimization.

Carlini & Wagner (2017), "Towards evaluating the robustness of neural networks" (IEEE
S&P), section V.A. Per image, with a constant c > 0, Adam minimises over w

    ||x'(w) - x||_2^2 + c * max(Z(x')_y - max_{j != y} Z(x')_j + kappa, 0)
    x'(w) = (tanh(w) + 1) / 2                   (the "change of variables": x' is in
                                                 [0, 1] for every w, no clipping)

(targeted: ``max(max_{j != t} Z_j - Z_t + kappa, 0)``), starting from the clean image
(w = arctanh(0.999999 (2x - 1)), the factor keeping arctanh finite at 0 and 1; the
distance is measured to that image's reconstruction, as Foolbox does). A binary search
over c, per image, looks for the smallest c that still gives an adversarial example:
c starts at ``initial_const``; while no adversarial has been found it is multiplied by
10, afterwards it is the midpoint of the bracket [largest failing c, smallest
successful c]. Over all rounds and steps the smallest adversarial iterate is kept; an
iterate counts as adversarial when it beats the attacked label by ``kappa``
(``argmax(Z + kappa e_y) != y``, targeted ``argmax(Z - kappa e_t) == t``).

Defaults are Foolbox 3.3.4's ``L2CarliniWagnerAttack``: 9 binary-search steps,
initial const 1e-3, Adam with step size 1e-2 (betas 0.9, 0.999, epsilon 1e-8), 10000
steps per round with abort-early (every tenth of the steps, stop when the loss did not
fall below 0.9999 of its value at the previous check), confidence 0; with 10 or more
binary-search steps the last round uses the smallest successful c (capped at 1e10).
(Binary steps / initial const / Adam step / steps: CleverHans 4 uses 5 / 1e-2 / 5e-3 /
1000, the authors' code 9 / 1e-3 / 1e-2 / 10000 like Foolbox.)

Differences from Foolbox, both so that a batch gives its images' results one by one:
abort-early is decided per image, on each image's own loss (Foolbox compares the
batch's summed loss); and Adam is :func:`scratchadv.optim.adam`, the form of the
authors' TensorFlow optimizer (epsilon added to sqrt(v) before the bias correction,
Foolbox adds it after: a difference of order 1e-8 in the step).
"""
import math
from dataclasses import dataclass
from typing import Callable

import autograd.numpy as np
import numpy as onp
from autograd import make_vjp
from autograd.tracer import getval

from ..model import predict
from ..optim import adam
from ..progress import Progress
from ..validate import check_float, check_images, check_int, check_labels, check_target, check_flag
from .deepfool import recheck
from .geometry import abs_offsets
from .gradients import check_model
from .result import concat_parts

__all__ = ["cw_l2"]

#: the squeeze of [-1, 1] into the open interval before arctanh (authors' code, Foolbox)
TANH_SQUEEZE = 0.999999
#: abort-early: a check must find the loss below this fraction of the previous check's
ABORT_RATIO = 0.9999
#: the largest constant of a final round that repeats the smallest successful c
MAX_CONST = 1e10


@dataclass(frozen=True)
class _Run:
    """The settings of one call, the same for every chunk and round (see :func:`cw_l2`)."""
    binary_steps: int
    initial_const: float
    steps: int
    lr: float
    kappa: float
    abort_early: bool
    targeted: bool
    predict_fn: Callable


def to_tanh_space(x):
    """[0, 1] -> the unconstrained variable w with (tanh(w) + 1) / 2 ~ x (x's dtype)."""
    return onp.arctanh((2 * x - 1) * x.dtype.type(TANH_SQUEEZE))


def to_image(w):
    """w -> (tanh(w) + 1) / 2, in [0, 1] for every w (differentiable)."""
    return (np.tanh(w) + 1) / 2


def margin(z, attacked, targeted):
    """The C&W objective's f before the hinge, per image: (m, 10) logits -> (m,).

    Untargeted: Z_y - max_{j != y} Z_j (attacked = y); targeted: max_{j != t} Z_j - Z_t.
    The best other class is chosen on the values; the gradient flows through the two
    selected logits only.
    """
    zv = getval(z)
    eye = onp.eye(zv.shape[1], dtype=zv.dtype)
    other = onp.where(eye[attacked] > 0, -onp.inf, zv).argmax(1)
    d = np.sum(z * eye[attacked], axis=1) - np.sum(z * eye[other], axis=1)
    return -d if targeted else d


def is_adversarial(z, attacked, targeted, kappa):
    """Foolbox's criterion with confidence: the attacked label's logit moved by kappa
    (untargeted: raised, must still lose; targeted: lowered, must still win)."""
    shifted = onp.array(z, dtype=onp.float64)
    rows = onp.arange(len(z))
    if targeted:
        shifted[rows, attacked] -= kappa
        return shifted.argmax(1) == attacked
    shifted[rows, attacked] += kappa
    return shifted.argmax(1) != attacked


def _objective(params, w0, x_rec, attacked, const, run):
    """delta -> per-image C&W loss (m,), with the iterate and its logits stored in ``box``."""
    box = {}

    def loss(delta):
        xs = to_image(w0 + delta)
        z = run.predict_fn(params, xs)
        box["x"], box["logits"] = getval(xs), getval(z)
        hinge = np.maximum(margin(z, attacked, run.targeted) + run.kappa, 0)
        d = xs - x_rec
        return const * hinge + np.sum((d * d).reshape(len(d), -1), axis=1)
    return loss, box


def next_const(const, lo, hi, found):
    """One step of the search over c, per image: (m,) float64 arrays and the round's
    (m,) bool ``found`` -> the next (const, lo, hi).

    A success makes c the bracket's upper end, a failure its lower end; the next c is
    ten times larger while no success is known (hi = inf), else the bracket's midpoint.
    """
    hi = onp.where(found, const, hi)
    lo = onp.where(found, lo, const)
    return onp.where(onp.isinf(hi), const * 10, (lo + hi) / 2), lo, hi


def _round(params, x, w0, x_rec, attacked, const, best, base, run):
    """One binary-search round (fresh Adam from w0) on the m images under attack.

    x, w0, x_rec: (m, 1, 28, 28) clean images, their tanh-space start and its image;
    attacked: (m,) labels (y, or the targets); const: (m,) of x's dtype; best: the
    chunk's record, updated in place at rows ``base`` (m,); -> (m,) bool: an
    adversarial iterate was found this round.
    """
    steps = run.steps
    opt = adam(lr=run.lr, eps=1e-8)
    act = onp.arange(len(x))
    delta = onp.zeros_like(w0)
    state = opt.init({"delta": delta})
    found = onp.zeros(len(x), dtype=bool)
    prev = onp.full(len(x), onp.inf)
    check_every = math.ceil(steps / 10)
    for step in range(steps):
        loss, box = _objective(params, w0[act], x_rec[act], attacked[act], const[act], run)
        vjp, value = make_vjp(loss)(delta)
        g = vjp(onp.ones_like(value))
        new, state = opt.update({"delta": delta}, {"delta": g}, state)
        delta = new["delta"]
        stay = onp.ones(len(act), dtype=bool)
        if run.abort_early and step % check_every == 0:
            stay = value <= ABORT_RATIO * prev[act]     # no progress since the last check
            prev[act] = value
        adv = is_adversarial(box["logits"], attacked[act], run.targeted, run.kappa) & stay
        found[act] |= adv
        a = abs_offsets(box["x"], x[act])
        norm = onp.sqrt((a * a).sum(1))
        better = adv & (norm < best["norm"][base[act]])
        if onp.any(better):
            j = base[act[better]]
            best["x"][j] = box["x"][better]
            best["norm"][j] = norm[better]
            best["steps"][j] = best["taken"][j] + 1
        best["taken"][base[act]] += 1
        if not stay.all():
            act, delta = act[stay], delta[stay]
            # Adam's moments are per pixel: keep the rows of the images that go on
            state = {k: v if k == "step" else v[stay] for k, v in state.items()}
            if not len(act):
                break
    return found


def _cw_core(params, x, y, target, run, bar=None):
    """The binary search over c for one chunk. No validation (the entry validated).

    -> {"x": returned images, "steps": (n,)}: the smallest adversarial iterate per image
    (x itself where none was found, or where the clean image already succeeds).
    """
    n = len(x)
    attacked = y if target is None else target
    z0 = onp.asarray(run.predict_fn(params, x))
    done = (z0.argmax(1) == target) if run.targeted else (z0.argmax(1) != y)
    best = {"x": x.copy(), "norm": onp.full(n, onp.inf), "steps": onp.zeros(n, dtype=onp.int64),
            "taken": onp.zeros(n, dtype=onp.int64)}
    base = onp.flatnonzero(~done)               # the images to attack
    if len(base):
        xb = x[base]
        w0 = to_tanh_space(xb)
        x_rec = to_image(w0)
        const = onp.full(len(base), run.initial_const)
        lo, hi = onp.zeros(len(base)), onp.full(len(base), onp.inf)
        rounds = run.binary_steps
        for r in range(rounds):
            if r == rounds - 1 and rounds >= 10:    # Foolbox: repeat the best c once
                const = onp.minimum(hi, MAX_CONST)
            found = _round(params, xb, w0, x_rec, attacked[base], const.astype(x.dtype),
                           best, base, run)
            const, lo, hi = next_const(const, lo, hi, found)
            if bar is not None:
                bar.update(1)
    elif bar is not None:
        bar.update(run.binary_steps)
    return {"x": best["x"], "steps": best["steps"]}


def cw_l2(params, x, y, *, binary_steps=9, initial_const=1e-3, steps=10000, lr=1e-2,
          confidence=0.0, abort_early=True, target=None, predict_fn=predict, verbose=False,
          batch_size=1000):
    """Carlini & Wagner's L2 attack (2017) with Foolbox 3.3.4's defaults (module notes).

    x: (N, 1, 28, 28) float32/64 in [0, 1]; y: (N,) int64 true labels.
    binary_steps >= 1 (default 9): rounds of the search over c; initial_const > 0
    (default 1e-3); steps >= 1 (default 10000): Adam steps per round (the tests use
    200 for the cross-check with Foolbox, on both sides, and 30-1000 in the unit tests);
    lr > 0 (default 1e-2): Adam's step size; confidence >= 0 (kappa, default 0): the
    margin an iterate must win by to count; abort_early (default True): an image's
    round stops when its loss stalls; target: None (untargeted), a class or (N,) int64
    classes. The arithmetic is in x's dtype. Images are processed in chunks of
    ``batch_size`` (memory only). ``verbose`` shows a progress bar. Deterministic (no
    ``rng``).

    -> :class:`~scratchadv.attacks.result.AttackResult`: ``x_adv`` the smallest
    adversarial iterate found per image (x where none was), ``success`` re-checked on the
    returned images (``pred != y``, targeted ``pred == target``), ``eps`` its L2 norm
    where it succeeded, ``inf`` elsewhere; ``steps`` the Adam steps (over all rounds) up
    to it. Images that already succeed are returned unchanged with eps 0.
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    binary_steps = check_int(binary_steps, "binary_steps", minimum=1)
    initial_const = check_float(initial_const, "initial_const", minimum=0, strict_min=True)
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    confidence = check_float(confidence, "confidence", minimum=0)
    abort_early = check_flag(abort_early, "abort_early")
    t = check_target(target, len(x), y)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    run = _Run(binary_steps, initial_const, steps, lr, confidence, abort_early, t is not None,
               predict_fn)
    n = len(x)
    chunks = range(0, n, batch_size)
    bar = Progress(total=len(chunks) * binary_steps, desc="cw-l2", enable=verbose) \
        if verbose else None
    try:
        parts = [_cw_core(params, x[i:i + batch_size], y[i:i + batch_size],
                          None if t is None else t[i:i + batch_size], run, bar)
                 for i in chunks]
    finally:
        if bar is not None:
            bar.close()
    return recheck(params, x, y, concat_parts(parts), "l2", predict_fn, batch_size, target=t)

"""FAB, the fast adaptive boundary attack, and FAB-T, its targeted use in AutoAttack.

Croce & Hein (2020), "Minimally distorted adversarial examples with a fast adaptive
boundary attack", ICML (arXiv:1907.02044); FAB-T as in Croce & Hein (2020),
"Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (AutoAttack), ICML.

FAB looks for the adversarial image *closest* to x. Each step linearizes the
decision boundary between the true class y and one other class k at the iterate x1,

    f(z) ~ f(x1) + <w, z - x1>,   f = z_k - z_y,   w = d f / d x at x1,

and projects both x1 and the clean image x0 onto that hyperplane intersected with
the box [0, 1]^d (:func:`project_linf`, :func:`project_l2`: steps d1, d2). The next
iterate is a convex combination of the two projections, biased towards the one from
x0 (that keeps the perturbation small), with a little overshoot:

    alpha = min(||d1|| / (||d1|| + ||d2||), alpha_max)
    x1 <- clip((1 - alpha) (x1 + eta d1) + alpha (x0 + eta d2), 0, 1)

Whenever x1 is adversarial it is recorded if it is the closest one so far, and then
pulled back towards x0, ``x1 <- x0 + beta (x1 - x0)``, so the search continues from
just inside the boundary. The class k: untargeted, the one whose linearized boundary
is nearest, ``|f_k| / ||w_k||_q`` (q the dual norm); targeted, the target t (one
gradient per step: a single vector-Jacobian product of z_t - z_y).

Defaults (those of the paper and of the original implementation, fra31/auto-attack):
100 steps, alpha_max 0.1, eta 1.05, beta 0.9. Restarts after the first start at a
random point at distance ``min(best norm so far, eps) / 2`` from x0 (on the sphere of
the norm; ``eps`` defaults to 0.3 for Linf and 1.0 for L2 when no bound is given).
The original's optional final search (``final_search`` steps of regula falsi on the
segment between x0 and the adversarial image, 3 when enabled there) is off by
default, as in AutoAttack.

=================  ========================================================================
function           what it is
=================  ========================================================================
:func:`fab`        FAB: minimal-norm (``eps=None``) or bounded by eps; untargeted or
                   towards ``target``
:func:`fab_targeted`  FAB-T of AutoAttack: one run per class among the ``n_targets`` (9)
                   highest-ranked wrong classes of the clean logits, each on the images
                   still robust; success is misclassification within eps
:func:`project_linf`, :func:`project_l2`  the projections onto hyperplane ∩ box
=================  ========================================================================

Both projections solve ``min ||d||_p  s.t.  <w, t + d> = b,  t + d in [0, 1]^d``.
Moving coordinate i in the direction that helps, by at most its room r_i to the box,
the optimum has the form ``|d_i| = min(lam * s_i, r_i)`` for one scalar lam >= 0,
with ``s_i = 1`` for Linf (every free coordinate moves by the same amount, the
norm) and ``s_i = |w_i|`` for L2 (the KKT condition d = lam w, clipped). The
achieved ``<w, d>`` is then piecewise linear and nondecreasing in lam, so sorting
the breakpoints ``r_i / s_i`` gives lam in closed form: the two norms differ only in
``s`` (a small function per norm, chosen once). When the hyperplane does not meet
the box, both return the box corner farthest along the hyperplane's normal (the
point of the box nearest the hyperplane), as the original does. The projections run
in float64 whatever the images' dtype (the iterates are stored in it).

Per image: the closest point, the restarts' radii, the targets and early stopping are
per image, and random directions are drawn up front, one block per image, so a batch
gives its images' one-by-one results up to float rounding. (FAB steps onto the
boundary; on a ReLU network a rounding-level difference can put an iterate on the
other side of a kink, where the gradient is another, and the trajectories part.)
"""
from dataclasses import dataclass
from typing import Callable

import numpy as onp
from autograd import make_vjp

from ..model import NUM_CLASSES, predict
from ..progress import Progress
from ..validate import check_float, check_images, check_int, check_labels, check_target, check_flag
from .geometry import Norm, abs_offsets, get_norm
from .gradients import check_model, check_rng, loss_only
from .result import build_result, empty_history

__all__ = ["fab", "fab_targeted", "project_linf", "project_l2", "ranked_wrong_classes"]


# --- the projection onto hyperplane ∩ box ----------------------------------------

def _project(t, w, c, scale):
    """The least-norm step d with <w, d> = c and t + d in [0, 1]^d (module notes).

    t: (n, d) float64 points in [0, 1]; w: (n, d) float64 normals; c: (n,) float64 the
    required change of <w, .>; scale(|w|) -> s, the per-norm shape of the step
    (``|d_i| = min(lam s_i, r_i)``). -> (n, d) float64. Rows where the hyperplane misses
    the box get the corner of the box farthest along sign(c) w.

    The achieved ``g(lam) = sum_i |w_i| min(lam s_i, r_i)`` is nondecreasing and linear
    between the sorted breakpoints ``r_i / s_i``; a binary search over them (log2 d
    evaluations of g, cheaper than an argsort and the gathers it needs) finds the first
    breakpoint where g reaches c, and lam follows in closed form on the segment before it.
    """
    n, dim = w.shape
    sign = onp.where(c < 0, -1.0, 1.0)
    w = w * sign[:, None]                     # now c >= 0: every coordinate moves along +w
    c = c * sign
    aw = onp.abs(w)
    room = onp.where(w > 0, 1.0 - t, t)       # how far coordinate i can usefully move
    s = scale(aw)
    bp = room / onp.maximum(s, 1e-300)        # lam at which coordinate i hits the box
    bps = onp.sort(bp, 1)
    rows = onp.arange(n)
    lo, hi = onp.zeros(n, dtype=onp.int64), onp.full(n, dim)
    for _ in range(int(onp.ceil(onp.log2(dim + 1)))):     # first k with g(bps[k]) >= c
        mid = (lo + hi) // 2
        lam = bps[rows, onp.minimum(mid, dim - 1)]
        reached = onp.einsum("ij,ij->i", aw, onp.minimum(lam[:, None] * s, room)) >= c
        open_ = lo < hi
        hi = onp.where(open_ & reached, mid, hi)
        lo = onp.where(open_ & ~reached, mid + 1, lo)
    feasible = lo < dim                      # else even the far corner falls short
    free = bp >= bps[rows, onp.minimum(lo, dim - 1)][:, None]
    saturated = onp.where(free, 0.0, aw * room).sum(1)
    slope = onp.where(free, aw * s, 0.0).sum(1)
    lam = onp.where(slope > 0, (c - saturated) / onp.maximum(slope, 1e-300), 0.0)
    step = onp.minimum(onp.maximum(lam, 0.0)[:, None] * s, room)
    return onp.sign(w) * onp.where(feasible[:, None], step, room)


def _unit_scale(aw):
    """Linf: every free coordinate moves by lam (the step's Linf norm)."""
    return onp.ones_like(aw)


def _abs_scale(aw):
    """L2: the free coordinates move by lam |w_i| (d parallel to w)."""
    return aw


def _check_problem(t, w, b):
    t, w, b = (onp.asarray(v, dtype=onp.float64) for v in (t, w, b))
    if t.ndim != 2 or w.shape != t.shape or b.shape != (t.shape[0],):
        raise ValueError(f"t, w, b: expected shapes (n, d), (n, d), (n,), got {t.shape}, "
                         f"{w.shape}, {b.shape}")
    if not (onp.all(onp.isfinite(t)) and onp.all(onp.isfinite(w)) and onp.all(onp.isfinite(b))):
        raise ValueError("t, w, b: expected finite values")
    if t.size and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"t: expected points in [0, 1], got min {t.min():g} and max {t.max():g}")
    return t, w, b


def project_linf(t, w, b):
    """The Linf-smallest step d with <w, t + d> = b and t + d in [0, 1]^d.

    t, w: (n, d) points in [0, 1] and hyperplane normals; b: (n,) offsets -> d (n, d)
    float64. Where the hyperplane misses the box: the box corner nearest to it. The
    solution's norm is unique; d is the one that moves every coordinate with w_i != 0
    by the same amount, except those that hit the box first (module notes).
    """
    t, w, b = _check_problem(t, w, b)
    return _project(t, w, b - (w * t).sum(1), _unit_scale)


def project_l2(t, w, b):
    """The L2-smallest step d with <w, t + d> = b and t + d in [0, 1]^d (unique).

    t, w: (n, d); b: (n,) -> d (n, d) float64: ``d_i = clip(lam w_i)`` to the box for one
    scalar lam (module notes). Where the hyperplane misses the box: the box corner
    nearest to it.
    """
    t, w, b = _check_problem(t, w, b)
    return _project(t, w, b - (w * t).sum(1), _abs_scale)


# --- per-norm parts, chosen once -------------------------------------------------

def _linf_size(v):
    return onp.abs(v).max(-1, initial=0.0)


def _l2_size(v):
    return onp.sqrt((v * v).sum(-1))


def _l1_size(v):
    return onp.abs(v).sum(-1)


@dataclass(frozen=True)
class _FabNorm:
    """What FAB needs to know about a norm p.

    geometry: the ball's :class:`~.geometry.Norm` (its ``draw_start`` gives the random
    restarts' directions). size(v): ||v||_p over the last axis. dual(v): ||v||_q, q the
    dual norm (distance to a linearized boundary is |f| / ||w||_q). scale: the shape of
    the projection's step (:func:`_project`). restart_eps: the restarts' radius when no
    eps is given (the original's defaults).
    """
    geometry: Norm
    size: Callable
    dual: Callable
    scale: Callable
    restart_eps: float


_FAB_NORMS = {"linf": _FabNorm(get_norm("linf"), _linf_size, _l1_size, _unit_scale, 0.3),
              "l2": _FabNorm(get_norm("l2"), _l2_size, _l2_size, _abs_scale, 1.0)}


# --- one run -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Run:
    """The settings of one attack call.

    fnorm: the norm's parts. steps, alpha_max, eta, beta: the paper's parameters.
    targeted: success is ``pred == goal`` (else ``pred != goal``, goal = y).
    early_stop: an image leaves a run once it has an adversarial point within its eps.
    predict_fn: (params, x) -> logits.
    """
    fnorm: _FabNorm
    steps: int
    alpha_max: float
    eta: float
    beta: float
    targeted: bool
    early_stop: bool
    predict_fn: Callable


def _succeeds(logits, goal, targeted):
    p = onp.argmax(logits, 1)
    return p == goal if targeted else p != goal


def _linearize(params, x, cots, run):
    """One forward and K backward passes: logits, and the nearest linearized boundary.

    x: (a, 1, 28, 28); cots: (a, K, 10) the logit combinations m_k (one-hot(k) - one-hot(y));
    an all-zero m_k (k = y) is not a candidate. ``run.targeted`` (towards t, K = 1): the
    class subtracted is t's strongest rival at x instead of y. -> (logits (a, 10), f (a,)
    float64 the value <m, z> of the chosen boundary, w (a, d) float64 its gradient).
    Each gradient is one vector-Jacobian product of the whole batch (row i: image i's).
    """
    vjp, z = make_vjp(lambda xx: run.predict_fn(params, xx))(x)
    zd = onp.asarray(z, dtype=onp.float64)
    if run.targeted:        # t against its strongest rival here (y while x is classified y)
        rows = onp.arange(len(x))
        t = onp.argmax(cots[:, 0], 1)
        others = zd.copy()
        others[rows, t] = -onp.inf
        cots = (onp.eye(cots.shape[2])[t] - onp.eye(cots.shape[2])[onp.argmax(others, 1)])[:, None]
    f = onp.einsum("nc,nkc->nk", zd, cots)
    g = onp.stack([vjp(cots[:, k].astype(z.dtype)).reshape(len(x), -1)
                   for k in range(cots.shape[1])], 1).astype(onp.float64)
    if cots.shape[1] == 1:
        return z, f[:, 0], g[:, 0]
    dist = onp.abs(f) / (1e-12 + run.fnorm.dual(g))
    dist[~onp.any(cots != 0, axis=2)] = onp.inf
    k = onp.argmin(dist, 1)
    rows = onp.arange(len(x))
    return z, f[rows, k], g[rows, k]


def _fab_run(params, x0, x1, cots, goal, best, eps, run):
    """FAB's iterations (Croce & Hein 2020, Algorithm 1) for one chunk, from x1.

    x0: (c, 1, 28, 28) clean images; x1: (c, ...) the start (x0 or a random start);
    cots: (c, K, 10); goal: (c,) labels of the success test; eps: (c,) float64 bound
    (inf: minimal-norm); best: dict over the chunk, ``x``, ``norm`` (float64, the
    smallest distance of an adversarial point so far), ``steps`` -- updated in place.
    """
    fn, dtype, shape = run.fnorm, x0.dtype, x0.shape[1:]
    x0f = x0.reshape(len(x0), -1).astype(onp.float64)
    act = onp.arange(len(x0))
    z, f, w = _linearize(params, x1, cots, run)
    for it in range(1, run.steps + 1):
        a = len(act)
        x1f, x0a = x1.reshape(a, -1).astype(onp.float64), x0f[act]
        # one projection call for both points: the hyperplane f + <w, z - x1> = 0
        d = _project(onp.concatenate([x1f, x0a]), onp.concatenate([w, w]),
                     onp.concatenate([-f, -f + (w * (x1f - x0a)).sum(1)]), fn.scale)
        d1, d2 = d[:a], d[a:]
        a1 = onp.maximum(fn.size(d1), 1e-8)[:, None]
        a2 = onp.maximum(fn.size(d2), 1e-8)[:, None]
        alpha = onp.clip(a1 / (a1 + a2), 0.0, run.alpha_max)
        x1 = onp.clip((x1f + run.eta * d1) * (1 - alpha) + (x0a + run.eta * d2) * alpha,
                      0.0, 1.0).astype(dtype).reshape(a, *shape)
        last = it == run.steps
        if last:            # the last iterate needs no gradient
            z = run.predict_fn(params, x1)
        else:               # linearize here now: reused next step unless x1 moves back
            z, f, w = _linearize(params, x1, cots[act], run)
        adv = _succeeds(z, goal[act], run.targeted)
        if onp.any(adv):
            j = act[adv]
            dist = fn.size(abs_offsets(x1[adv], x0[j]))
            closer = dist < best["norm"][j]
            best["x"][j[closer]] = x1[adv][closer]
            best["norm"][j[closer]] = dist[closer]
            best["steps"][j[closer]] = it
            if not last:    # backward step towards x0, and the boundary there
                x1[adv] = (x0f[j] + run.beta * (x1[adv].reshape(len(j), -1) - x0f[j])
                           ).astype(dtype).reshape(len(j), *shape)
                _, f[adv], w[adv] = _linearize(params, x1[adv], cots[j], run)
        if run.early_stop:
            keep = best["norm"][act] > eps[act]
            if not keep.all():
                act, x1, f, w = act[keep], x1[keep], f[keep], w[keep]
                if not len(act):
                    break


def _final_search(params, x0, adv, goal, steps, run):
    """The original's final search: ``steps`` steps of regula falsi on the segment [x0, adv].

    Each step interpolates linearly the margin z_y - z_l (l: the class at the adversarial
    end) between the two ends and keeps the new point as the adversarial end if it
    succeeds, as the clean end otherwise. Every point stays coordinate-wise between x0
    and adv, so the perturbation never grows. x0: (c, ...); adv: (c, ...) adversarial
    -> (c, ...) adversarial points of x0's dtype.
    """
    rows = onp.arange(len(x0))
    lo, hi = x0.astype(onp.float64), adv.astype(onp.float64)
    lo_b, hi_b = onp.minimum(lo, hi), onp.maximum(lo, hi)
    z_lo = onp.asarray(run.predict_fn(params, x0), dtype=onp.float64)
    z_hi = onp.asarray(run.predict_fn(params, adv), dtype=onp.float64)
    y = onp.argmax(z_lo, 1)
    cls = onp.argmax(z_hi, 1)
    out = adv.copy()
    for _ in range(steps):
        m_lo = z_lo[rows, y] - z_lo[rows, cls]
        m_hi = z_hi[rows, cls] - z_hi[rows, y]
        r = m_lo / (m_lo + m_hi + 1e-10)
        r = onp.where((r >= 0) & (r <= 1), r, 1.0).reshape(-1, 1, 1, 1)
        mid = onp.clip(lo + r * (hi - lo), lo_b, hi_b).astype(x0.dtype)
        z_mid = run.predict_fn(params, mid)
        ok = _succeeds(z_mid, goal, run.targeted)
        z_mid = onp.asarray(z_mid, dtype=onp.float64)
        hi[ok], z_hi[ok], cls[ok], out[ok] = mid[ok], z_mid[ok], onp.argmax(z_mid[ok], 1), mid[ok]
        lo[~ok], z_lo[~ok] = mid[~ok], z_mid[~ok]
    return out


def _sphere(dirs, fnorm):
    """(n, R, 1, 28, 28) unit-ball draws -> the same directions scaled to norm 1."""
    n, r = dirs.shape[:2]
    flat = dirs.reshape(n, r, -1)
    size = fnorm.size(flat)[..., None]
    return (flat / onp.maximum(size, 1e-300)).reshape(dirs.shape)


def _attack(params, x, y, goal, plans, eps, run, rng, final_search, batch_size, verbose, desc):
    """Run ``plans`` one after another, each on the images that still need it.

    plans: list of (cots (n, K, 10), random_start) -- one FAB run each. An image is
    attacked when its clean prediction is y (the boundaries are those of y) and it has
    no adversarial point within eps yet (minimal-norm, eps None: always). Each image
    draws its random-start directions up front, one contiguous block per image, so a
    batch draws what its images draw one by one. -> the ``best`` dict of result.py and
    the per-image radii of the result.
    """
    n = len(x)
    bounded = eps is not None
    cap = onp.full(n, eps if bounded else 0.0)
    stop_eps = onp.full(n, eps if bounded else onp.inf)
    ce0, z0 = loss_only(params, x, goal, run.predict_fn)
    attackable = onp.argmax(z0, 1) == y
    best = {"x": x.copy(), "norm": onp.where(_succeeds(z0, goal, run.targeted), 0.0, onp.inf),
            "steps": onp.zeros(n, dtype=onp.int64)}
    n_random = sum(bool(r) for _, r in plans)
    dirs = None
    if n_random:
        dirs = _sphere(run.fnorm.geometry.draw_start(rng, n, n_random, onp.float64), run.fnorm)
    restart_eps = eps if bounded else run.fnorm.restart_eps
    bar = Progress(total=len(plans), desc=desc, enable=verbose) if verbose else None
    r = 0
    try:
        for cots, random_start in plans:
            todo = onp.flatnonzero(attackable & (best["norm"] > cap))
            for i in range(0, len(todo), batch_size):
                idx = todo[i:i + batch_size]
                x0 = x[idx]
                x1 = x0
                if random_start:
                    radius = 0.5 * onp.minimum(best["norm"][idx], restart_eps)
                    x1 = onp.clip(x0 + radius.reshape(-1, 1, 1, 1) * dirs[idx, r], 0.0, 1.0
                                  ).astype(x.dtype)
                part = {k: v[idx] for k, v in best.items()}
                _fab_run(params, x0, x1, cots[idx], goal[idx], part, stop_eps[idx], run)
                for k, v in part.items():
                    best[k][idx] = v
            r += bool(random_start)
            if bar is not None:
                bar.set_postfix(robust=int(onp.sum(best["norm"] > cap)))
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    found = onp.flatnonzero(attackable & onp.isfinite(best["norm"]))
    for i in range(0, len(found) if final_search else 0, batch_size):
        idx = found[i:i + batch_size]
        best["x"][idx] = _final_search(params, x[idx], best["x"][idx], goal[idx], final_search, run)
        best["norm"][idx] = run.fnorm.size(abs_offsets(best["x"][idx], x[idx]))
    ok = best["norm"] <= (eps if bounded else onp.inf)
    best["x"][~ok] = x[~ok]                      # bounded: only points within eps count
    best["steps"][~ok] = 0
    ce, logits = loss_only(params, best["x"], goal, run.predict_fn)
    ok &= _succeeds(logits, goal, run.targeted)  # the returned image, predicted once more
    radii = onp.full(n, eps) if bounded else onp.where(ok, best["norm"], onp.inf)
    return {"x": best["x"], "succ": ok, "logits": onp.asarray(logits), "steps": best["steps"],
            "ce": ce, "ce0": ce0}, radii


def _check_settings(params, x, y, norm, eps, steps, restarts, alpha_max, eta, beta,
                    final_search, early_stop, rng, predict_fn, batch_size):
    """The checks shared by :func:`fab` and :func:`fab_targeted` -> (run parts, eps, rng)."""
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    fnorm = _FAB_NORMS[get_norm(norm).name]
    if eps is not None:
        eps = check_float(eps, "eps", minimum=0)
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    alpha_max = check_float(alpha_max, "alpha_max", minimum=0, maximum=1)
    eta = check_float(eta, "eta", minimum=0, strict_min=True)
    beta = check_float(beta, "beta", minimum=0, maximum=1, strict_min=True)
    final_search = check_int(final_search, "final_search", minimum=0)
    early_stop = check_flag(early_stop, "early_stop")
    if early_stop and eps is None:
        raise ValueError("early_stop: needs a bound eps (the minimal-norm mode has no "
                         "point at which an image is done)")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return (fnorm, eps, steps, restarts, alpha_max, eta, beta, final_search, early_stop,
            check_rng(rng), batch_size)


def _one_hot(labels):
    return onp.eye(NUM_CLASSES)[labels]


def fab(params, x, y, *, norm="linf", eps=None, steps=100, restarts=1, alpha_max=0.1,
        eta=1.05, beta=0.9, target=None, final_search=0, early_stop=False, rng=None,
        predict_fn=predict, verbose=False, batch_size=1000):
    """The fast adaptive boundary attack (Croce & Hein 2020, ICML), Linf or L2.

    Minimal-norm mode (``eps=None``): per image, the closest adversarial point found in
    ``restarts`` runs of ``steps`` steps; the result's ``eps`` is its distance (``inf``
    where none was found, 0 for images misclassified already). Bounded mode: success
    only within eps (``|x_adv - x|_p <= eps`` exactly, on the stored values), other
    images are returned unchanged, and later restarts run only on the images still
    robust (as the original's ``perturb``).

    Untargeted (``target=None``): each step takes the nearest of the 9 linearized
    boundaries between y and the other classes (10 vector-Jacobian products per step).
    With ``target`` (an int or (N,) int64): success means the target is predicted, and
    each step takes the boundary between the target and its strongest rival at the
    iterate -- y while the iterate is classified y, as in the paper (one vector-Jacobian
    product of z_t - z_y per step); should a third class overtake y, the boundary to it,
    so that the target itself is reached (:func:`fab_targeted` keeps z_t - z_y throughout,
    as the original, since any wrong class counts there). Only images classified as y
    are attacked (the boundaries are y's); targeted, an image already predicted as its
    target succeeds with x itself.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; norm 'linf' | 'l2'; eps None or
    >= 0; steps >= 1 (100); restarts >= 1 (1; the first from x, the others from a random
    point at distance min(best, eps) / 2, eps 0.3 / 1.0 without a bound); alpha_max in
    [0, 1] (0.1); eta > 0 (1.05, overshoot); beta in (0, 1] (0.9, backward step);
    final_search >= 0 (0; the original's 3-step search when enabled); early_stop
    (bounded mode: an image stops at its first point within eps -- same success, less
    work, not the closest point); rng: numpy Generator (random restarts); batch_size:
    images per chunk (memory only). ``verbose`` shows a progress bar over the runs.
    -> :class:`~.result.AttackResult` (``loss``: cross-entropy of y, or of the target).
    """
    (fnorm, eps, steps, restarts, alpha_max, eta, beta, final_search, early_stop, rng,
     batch_size) = _check_settings(params, x, y, norm, eps, steps, restarts, alpha_max, eta,
                                   beta, final_search, early_stop, rng, predict_fn, batch_size)
    t = check_target(target, len(x), y)
    onehot_y = _one_hot(y)
    if t is None:
        cots = onp.eye(NUM_CLASSES)[None] - onehot_y[:, None]      # (N, 10, 10); row y is 0
    else:
        cots = (_one_hot(t) - onehot_y)[:, None]                   # (N, 1, 10)
    run = _Run(fnorm, steps, alpha_max, eta, beta, t is not None, early_stop, predict_fn)
    plans = [(cots, r > 0) for r in range(restarts)]
    desc = f"fab {fnorm.geometry.name}" + ("" if eps is None else f" eps={eps:g}")
    best, radii = _attack(params, x, y, y if t is None else t, plans, eps, run, rng,
                          final_search, batch_size, verbose, desc)
    return build_result(x, best, radii, t, loss_history=empty_history(len(x)))


def ranked_wrong_classes(logits, y, n):
    """(N, n) int64: per row, the n highest-scoring classes other than y, best first
    (ties: the lower class index first)."""
    z = onp.array(logits, dtype=onp.float64)
    z[onp.arange(len(z)), y] = -onp.inf
    return onp.argsort(-z, axis=1, kind="stable")[:, :n].astype(onp.int64)


def fab_targeted(params, x, y, *, eps, norm="linf", n_targets=9, steps=100, restarts=1,
                 alpha_max=0.1, eta=1.05, beta=0.9, final_search=0, early_stop=False,
                 rng=None, predict_fn=predict, verbose=False, batch_size=1000):
    """FAB-T, the targeted FAB of AutoAttack (Croce & Hein 2020, "Reliable evaluation of
    adversarial robustness with an ensemble of diverse parameter-free attacks").

    For each of the ``n_targets`` (9) highest-ranked wrong classes of the clean logits,
    in rank order, ``restarts`` (1) FAB runs along the boundary between y and that class
    (:func:`fab` with ``target``), each only on the images still robust. Success is
    *misclassification* within eps (any wrong class, as in the original), so the result
    is untargeted (``target`` None, ``loss`` the cross-entropy of y). With ``eps=None``
    every run attacks every correctly classified image and the closest point over all
    targets is kept (``eps`` of the result: its distance).

    Arguments as :func:`fab` (defaults: the original's, 100 steps, alpha_max 0.1,
    eta 1.05, beta 0.9); n_targets in 1..9. -> :class:`~.result.AttackResult`.
    """
    (fnorm, eps, steps, restarts, alpha_max, eta, beta, final_search, early_stop, rng,
     batch_size) = _check_settings(params, x, y, norm, eps, steps, restarts, alpha_max, eta,
                                   beta, final_search, early_stop, rng, predict_fn, batch_size)
    n_targets = check_int(n_targets, "n_targets", minimum=1, maximum=NUM_CLASSES - 1)
    _, z0 = loss_only(params, x, y, predict_fn)
    targets = ranked_wrong_classes(z0, y, n_targets)
    onehot_y = _one_hot(y)
    plans = [((_one_hot(targets[:, k]) - onehot_y)[:, None], r > 0)
             for k in range(n_targets) for r in range(restarts)]
    run = _Run(fnorm, steps, alpha_max, eta, beta, False, early_stop, predict_fn)
    desc = f"fab-t {fnorm.geometry.name}" + ("" if eps is None else f" eps={eps:g}")
    best, radii = _attack(params, x, y, y, plans, eps, run, rng, final_search, batch_size,
                          verbose, desc)
    return build_result(x, best, radii, None, loss_history=empty_history(len(x)))

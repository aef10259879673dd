"""Square Attack: score-based, gradient-free random search for adversarial examples.

Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a query-efficient
black-box adversarial attack via random search" (ECCV). The attack reads only the
model's logits (no gradient, so saturated or vanishing gradients cannot hide an
adversarial example from it) and, per image, keeps the best point found:

1. start from a point on the boundary of the ball (Linf: vertical stripes of +-eps;
   L2: a 5 x 5 grid of signed bump patterns scaled to length eps);
2. at iteration i, propose a change of one random s x s square (a window covering a
   fraction p_i of the pixels), query the model, keep the proposal if it lowers the
   loss or fools the model;
3. stop for an image as soon as it is fooled (it is not queried again).

Loss: the margin ``z_y - max_{i != y} z_i`` (untargeted); targeted, the cross-entropy
of the target (the original implementation's choice) with the margin
``max_{i != t} z_i - z_t`` deciding success.

Defaults are those of the original implementation as AutoAttack runs it (Croce & Hein
2020, ``square.py``): 5000 queries, p_init 0.8, p halved after iterations
10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10000-query run (the schedule is
rescaled to the actual number of queries), one restart. The per-norm parts (start
point, proposal, smallest window) are one small function each, chosen once by name
(:data:`SEARCHES`); the map into ball ∩ [0, 1] is the norm geometry's
(:func:`scratchadv.attacks.geometry.get_norm`).

Differences from AutoAttack's code, both to make images independent of each other:
each image draws its own square positions, signs and pattern orientations (AutoAttack
draws one position per iteration for the whole batch; the paper's own code draws them
per image), from its own generator seeded from ``rng``, so a batch gives the results
its images give one by one. Window positions are uniform in ``0 .. 28 - s - 1`` as in
both original codes (the last row and column change only through the start point).
"""
import bisect
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as onp

from ..model import predict
from ..ops import per_example_cross_entropy
from ..progress import Progress
from ..validate import check_float, check_images, check_int, check_labels, check_target, check_flag
from .geometry import Norm, get_norm
from .gradients import check_model, check_rng
from .result import build_result, concat_parts, empty_history

__all__ = ["square", "p_schedule", "window_size", "eta_pattern", "SEARCHES",
           "P_HALVINGS", "SCHEDULE_QUERIES"]

#: iterations after which p is halved, for a run of :data:`SCHEDULE_QUERIES` queries
#: (Andriushchenko et al. 2020, Sec. 4 and their code's ``p_selection``)
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_QUERIES = 10000


def p_schedule(iteration, queries, p_init=0.8):
    """Fraction of pixels the square covers at ``iteration`` (0-based) of ``queries``.

    The iteration is first rescaled to a 10000-query run, ``int(iteration / queries *
    10000)``, then p = p_init / 2**k with k the number of :data:`P_HALVINGS` it has
    passed (p_init up to 10, p_init / 2 in (10, 50], ..., p_init / 512 beyond 8000).
    """
    it = int(iteration / queries * SCHEDULE_QUERIES)
    return p_init / 2 ** bisect.bisect_left(P_HALVINGS, it)


def window_size(p, norm="linf", side=28):
    """Side s of the square covering a fraction p of the ``side x side`` pixels.

    s = round(sqrt(p * side**2)) (Python's round, half to even, as the original), at
    least 1 (Linf) or 3 and odd (L2: the pattern needs a centre and two halves), at
    most ``side``.
    """
    search = SEARCHES[get_norm(norm).name]
    s = max(int(round(math.sqrt(p * side * side))), search.min_size)
    if search.odd and s % 2 == 0:
        s += 1
    return min(s, side)


# --- window indexing -----------------------------------------------------------

def _windows(vh, vw, s, c):
    """Index arrays picking, for each image i, the s x s square at (vh[i], vw[i]) of all
    c channels: ``a[idx]`` is (m, c, s, s) for images a (m, c, h, w); vh, vw: (m,) int."""
    r = onp.arange(s)
    return (onp.arange(len(vh))[:, None, None, None], onp.arange(c)[None, :, None, None],
            (vh[:, None] + r)[:, None, :, None], (vw[:, None] + r)[:, None, None, :])


def _positions(u, s, side):
    """Uniform draws u in [0, 1) -> integer corners in 0 .. side - s - 1 (0 when s = side).
    Computed in float64: u * (side - s) < side - s for every float32 u < 1."""
    return onp.floor(u.astype(onp.float64) * (side - s)).astype(onp.intp)


def _signs(u, dtype):
    """Uniform draws -> -1 / +1 with probability 1/2 each."""
    return onp.where(u < 0.5, -1.0, 1.0).astype(dtype)


def _unit_l2(d):
    """d / (||d||_2 + 1e-12) per image (the original's ``normalize``)."""
    n = onp.sqrt((d * d).sum(axis=(1, 2, 3), keepdims=True))
    return d / (n + 1e-12)


# --- the L2 pattern ------------------------------------------------------------

def _rectangles(a, b):
    """(a, b) nested rectangles around the centre, the k-th ring adding 1 / (k + 1)**2,
    scaled to unit L2 norm (the original's ``eta_rectangles``)."""
    d = onp.zeros((a, b))
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        r0, c0 = ca - k, cb - k
        d[max(r0, 0):min(r0 + 2 * k + 1, a), max(c0, 0):min(c0 + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
    return d / onp.sqrt((d * d).sum())


@lru_cache(maxsize=None)
def eta_pattern(s):
    """(2, s, s) float64: the L2 update pattern of side s and its transpose.

    Upper half (s // 2 rows) of positive nested rectangles, lower half negative, unit L2
    norm (Andriushchenko et al. 2020, Sec. 3.2): its two halves push the square's pixels
    in opposite directions, which the paper found to work better than one sign.
    """
    d = onp.zeros((s, s))
    d[:s // 2] = _rectangles(s // 2, s)
    d[s // 2:] = -_rectangles(s - s // 2, s)
    d /= onp.sqrt((d * d).sum())
    d.setflags(write=False)
    return onp.stack([d, d.T])


def _pick_patterns(s, u_flip, dtype):
    """(m,) uniform draws -> (m, s, s) patterns, transposed where u > 0.5 (the original's
    coin flip), in ``dtype``."""
    return eta_pattern(s).astype(dtype)[(u_flip > 0.5).astype(onp.intp)]


# --- Linf ----------------------------------------------------------------------

def _linf_start(x, eps, u, ball):
    """Vertical stripes: each column of each channel is x + eps or x - eps (one sign per
    column), then mapped into ball ∩ [0, 1]. u: (m, c * w) uniform draws."""
    m, c, _, w = x.shape
    stripes = _signs(u, x.dtype).reshape(m, c, 1, w)
    return ball.clip(x + eps * stripes)


def _linf_propose(x, xb, eps, s, u, ball):
    """Move one s x s square (the same sign over it, per channel) by 2 eps from the current
    best xb, then back into the ball: the square lands on x +- eps (or the [0, 1] bound).
    u: (m, 2 + c) draws: corner (row, column), then a sign per channel."""
    m, c, h, w = x.shape
    idx = _windows(_positions(u[:, 0], s, h), _positions(u[:, 1], s, w), s, c)
    out = xb.copy()
    out[idx] += (2 * eps) * _signs(u[:, 2:2 + c], x.dtype)[:, :, None, None]
    return ball.clip(out)


# --- L2 ------------------------------------------------------------------------

_L2_TILES = 5


def _l2_start(x, eps, u, ball):
    """A 5 x 5 grid of tiles of side 28 // 5, each the L2 pattern (or its transpose) with a
    random sign per channel; the sum scaled to length eps, then into [0, 1].
    u: (m, 25 * (1 + c)) draws: per tile an orientation, then the channel signs."""
    m, c, h, w = x.shape
    s = h // _L2_TILES
    t = _L2_TILES * _L2_TILES
    u = u.reshape(m, t, 1 + c)
    pats = _pick_patterns(s, u[..., 0].ravel(), x.dtype).reshape(m, t, 1, s, s)
    tiles = pats * _signs(u[..., 1:], x.dtype)[..., None, None]          # (m, t, c, s, s)
    grid = tiles.reshape(m, _L2_TILES, _L2_TILES, c, s, s).transpose(0, 3, 1, 4, 2, 5)
    delta = onp.zeros_like(x)
    o, side = (h - s * _L2_TILES) // 2, s * _L2_TILES
    delta[:, :, o:o + side, o:o + side] = grid.reshape(m, c, side, side)
    return ball.clip(x + _unit_l2(delta) * eps)


def _l2_propose(x, xb, eps, s, u, ball):
    """The L2 square update with its mass moving between two windows.

    With d = xb - x, two random squares W1, W2 of side s: the new content of W1 is
    (pattern * sign + d_W1 / ||d_W1||) rescaled to length
    sqrt(max(eps^2 - ||d||^2, 0) / c + ||d_{W1 ∪ W2}||^2), i.e. it takes the
    perturbation mass of both windows plus any unused budget; W2 (outside W1) is
    emptied. The whole perturbation is then scaled to length eps and mapped into
    [0, 1]. u: (m, 5 + c) draws: corners of W1 and W2, the pattern's orientation,
    a sign per channel.
    """
    m, c, h, w = x.shape
    d = xb - x
    w1 = _windows(_positions(u[:, 0], s, h), _positions(u[:, 1], s, w), s, c)
    w2 = _windows(_positions(u[:, 2], s, h), _positions(u[:, 3], s, w), s, c)
    union = onp.zeros(d.shape, dtype=bool)
    union[w1] = True
    union[w2] = True
    norm_union = onp.sqrt((onp.where(union, d, 0) ** 2).sum(axis=(2, 3), keepdims=True))
    norm_image = onp.sqrt((d * d).sum(axis=(1, 2, 3), keepdims=True))
    old = d[w1]
    old = old / (1e-12 + onp.sqrt((old * old).sum(axis=(2, 3), keepdims=True)))
    new = _pick_patterns(s, u[:, 4], x.dtype)[:, None] * _signs(u[:, 5:5 + c], x.dtype)[:, :, None, None]
    new = new + old
    budget = onp.sqrt(onp.maximum(eps * eps - norm_image ** 2, 0) / c + norm_union ** 2)
    new = new / (1e-12 + onp.sqrt((new * new).sum(axis=(2, 3), keepdims=True))) * budget
    d[w2] = 0
    d[w1] = new
    return ball.clip(x + _unit_l2(d) * eps)


@dataclass(frozen=True)
class Search:
    """The per-norm parts of the random search.

    start(x, eps, u, ball) -> the first point (u: (m, start_draws(c, w)) uniform draws);
    propose(x, xb, eps, s, u, ball) -> one proposal per image from the current best xb
    (u: (m, step_draws(c))); min_size, odd: the window size rule (:func:`window_size`).
    """
    start: Callable
    start_draws: Callable
    propose: Callable
    step_draws: Callable
    min_size: int
    odd: bool


#: the random search of each norm, by name
SEARCHES = {
    "linf": Search(_linf_start, lambda c, w: c * w, _linf_propose, lambda c: 2 + c, 1, False),
    "l2": Search(_l2_start, lambda c, w: _L2_TILES ** 2 * (1 + c), _l2_propose,
                 lambda c: 5 + c, 3, True),
}


# --- the loop ------------------------------------------------------------------

@dataclass(frozen=True)
class _Run:
    """Settings of one call. norm: the ball; search: its random search; queries: iterations
    per restart; p_init; targeted: labels are targets; predict_fn: (params, x) -> logits."""
    norm: Norm
    search: Search
    queries: int
    p_init: float
    targeted: bool
    predict_fn: Callable


def _score(logits, labels, targeted):
    """Per image: (loss to minimise, fooled). Untargeted: the margin z_y - max_{i != y} z_i,
    fooled when the argmax is not y. Targeted: the target's cross-entropy, fooled when the
    argmax is the target. (The original stops at margin <= 0; the two differ only on exact
    ties of logits.)"""
    logits = onp.asarray(logits)
    pred = logits.argmax(1)
    if targeted:
        return per_example_cross_entropy(logits, labels), pred == labels
    mine = logits[onp.arange(len(logits)), labels]
    others = onp.where(onp.arange(logits.shape[1]) == labels[:, None], -onp.inf, logits).max(1)
    return mine - others, pred != labels


def _draw(gens, idx, n_start, n_step, queries):
    """Each image's own draws for one restart: (m, n_start) and (m, queries, n_step) float32."""
    u = onp.stack([gens[i].random(n_start + queries * n_step, dtype=onp.float32) for i in idx])
    return u[:, :n_start], u[:, n_start:].reshape(len(idx), queries, n_step)


def _search_once(params, x, labels, eps, run, gens, bar=None):
    """One restart of the random search on images x (m, c, h, w) from their clean points.

    Returns (x_best, logits, loss, fooled, queries) per image; an image leaves the loop
    (and is not queried again) once fooled.
    """
    m, c, h, w = x.shape
    search, predict_fn = run.search, run.predict_fn
    ball = run.norm.feasible(x, eps)
    u0, u = _draw(gens, range(m), search.start_draws(c, w), search.step_draws(c), run.queries)
    xb = search.start(x, eps, u0, ball)
    logits = onp.array(predict_fn(params, xb))
    loss, fooled = _score(logits, labels, run.targeted)
    queries = onp.ones(m, dtype=onp.int64)
    # the still-robust images, compacted: act indexes the chunk; xa, xba, la, ba are theirs
    act = onp.flatnonzero(~fooled)
    xa, xba, la, ya, ba = x[act], xb[act], loss[act], labels[act], ball.take(act)
    for i in range(run.queries):
        if not len(act):
            break
        s = window_size(p_schedule(i, run.queries, run.p_init), run.norm.name, h)
        x_new = search.propose(xa, xba, eps, s, u[act, i], ba)
        z = onp.asarray(predict_fn(params, x_new))
        l_new, f_new = _score(z, ya, run.targeted)
        queries[act] += 1
        better = f_new | (l_new < la)
        xba[better], la[better] = x_new[better], l_new[better]
        j = act[better]
        xb[j], loss[j], logits[j], fooled[j] = x_new[better], l_new[better], z[better], f_new[better]
        if bar is not None:
            bar.update(len(act))
        if f_new.any():              # fooled images leave: nothing more to search for
            keep = ~f_new
            act, xa, xba, la, ya = act[keep], xa[keep], xba[keep], la[keep], ya[keep]
            ba = ba.take(keep)
    return xb, logits, loss, fooled, queries


def _square_chunk(params, x, labels, eps, restarts, run, gens, bar=None):
    """All restarts on one chunk (no validation). -> the ``best`` dict of result.py.

    Candidates per image: the clean image, then each restart's best point; a fooled one
    beats a robust one, then the lower search loss wins. Restart r runs only on the images
    not fooled by the earlier ones.
    """
    n = len(x)
    logits0 = onp.asarray(run.predict_fn(params, x))
    loss0, fooled0 = _score(logits0, labels, run.targeted)
    best = {"x": x.copy(), "succ": fooled0.copy(), "logits": onp.array(logits0),
            "steps": onp.zeros(n, dtype=onp.int64)}
    loss = loss0.copy()
    for _ in range(restarts):
        act = onp.flatnonzero(~best["succ"])
        if not len(act):
            break
        xb, z, l, f, q = _search_once(params, x[act], labels[act], eps, run,
                                      [gens[i] for i in act], bar)
        best["steps"][act] += q
        better = f | (l < loss[act])
        j = act[better]
        best["x"][j], best["logits"][j], best["succ"][j], loss[j] = \
            xb[better], z[better], f[better], l[better]
    best["ce"] = per_example_cross_entropy(best["logits"], labels)
    best["ce0"] = per_example_cross_entropy(logits0, labels)
    return best


def square(params, x, y, *, eps, norm="linf", queries=5000, p_init=0.8, restarts=1,
           target=None, rng=None, predict_fn=predict, verbose=False, batch_size=500):
    """Square Attack (Andriushchenko et al. 2020), Linf or L2, reading only the logits.

    Random search over squares of the eps-ball's boundary (module notes). Per restart,
    each image not yet fooled starts from its norm's start point and makes ``queries``
    proposals, each one model query; a proposal is kept when it lowers the loss (the
    margin z_y - max_{i != y} z_i; targeted: the target's cross-entropy) or fools the
    model, and an image is no longer queried once fooled. The square covers a fraction
    p_schedule(i) of the pixels (:func:`p_schedule`: p_init halved after iterations
    10, 50, ..., 8000 of 10000, rescaled to ``queries``), its side given by
    :func:`window_size`.

    Defaults (AutoAttack's standard Square): queries 5000, p_init 0.8, restarts 1.
    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; eps >= 0; norm 'linf' | 'l2';
    queries >= 1; 0 < p_init <= 1; restarts >= 1; target: None, a class or (N,) int64;
    rng: numpy Generator (default ``default_rng(0)``: each image's draws come from its
    own generator seeded from it); ``batch_size``: images per chunk (memory only:
    results do not depend on it); ``verbose``: a progress bar.

    -> :class:`AttackResult`: per image the fooled point, else the lowest-loss point
    (the clean image included), inside ball ∩ [0, 1] exactly; ``steps``: the model
    queries spent on it (start point + proposals, summed over restarts; at most
    ``restarts * (queries + 1)``; 0 for images already misclassified, which are not
    attacked); ``loss``: the cross-entropy of y (targeted: of the target) at x_adv.
    ``predict_fn`` is only ever called on plain arrays (no autograd).
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    geometry = get_norm(norm)
    queries = check_int(queries, "queries", minimum=1)
    p_init = check_float(p_init, "p_init", minimum=0, strict_min=True, maximum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    verbose = check_flag(verbose, "verbose")
    t = check_target(target, len(x), y)
    rng = check_rng(rng)
    labels = y if t is None else t
    n = len(x)
    gens = [onp.random.default_rng(int(s)) for s in rng.integers(0, 2 ** 63 - 1, size=n)]
    run = _Run(geometry, SEARCHES[geometry.name], queries, p_init, t is not None, predict_fn)
    bar = Progress(total=n * restarts * queries, desc=f"square {geometry.name} eps={eps:g}",
                   enable=True) if verbose else None
    try:
        parts = [_square_chunk(params, x[i:i + batch_size], labels[i:i + batch_size], eps,
                               restarts, run, gens[i:i + batch_size], bar)
                 for i in range(0, n, batch_size)]
    finally:
        if bar is not None:
            bar.close()
    return build_result(x, concat_parts(parts), onp.full(n, eps), t,
                        loss_history=empty_history(n))

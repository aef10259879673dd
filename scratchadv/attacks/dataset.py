"""One attack method on a set of labelled images, with its metrics (``scratchadv attack``).

:func:`attack_dataset` turns a target *request* into per-image targets and back into
per-image robust accuracy:

- ``target=None``: untargeted, every image attacked once.
- ``target=c``: every image whose label is not c is attacked towards c; images labelled
  c are not attacked (a targeted attack towards the true label is meaningless) and keep
  their clean prediction in the robust accuracy. The penalty attack (the lecture's grid
  includes the true label) attacks every image.
- ``target="each"``: every image once per wrong class (nine attacks; the penalty
  attack: all ten classes); an image counts as robust only if it resists all of them.
"""
import inspect
import numbers
import time
from typing import NamedTuple

import numpy as onp

from ..model import predict
from ..validate import check_choice, check_images, check_int, check_labels
from .gradients import check_model
from .lecture import gradient_ascent, penalty_attack
from .apgd import apgd, apgd_targeted
from .autoattack import autoattack
from .cw import cw_l2
from .deepfool import deepfool
from .fab import fab, fab_targeted
from .pgd import fgsm, pgd
from .square import square
from .result import AttackResult, summarize

__all__ = ["METHODS", "DatasetAttack", "attack_dataset", "check_method_target", "method_options"]

NUM_CLASSES = 10

# method -> (function, run(params, x, y, target, predict_fn, rng, verbose, options)).
# fgsm is deterministic (no rng) and silent (no progress bar).
_METHODS = {
    "fgsm": (fgsm, lambda p, x, y, t, f, rng, verbose, o:
             fgsm(p, x, y, target=t, predict_fn=f, **o)),
    "pgd": (pgd, lambda p, x, y, t, f, rng, verbose, o:
            pgd(p, x, y, target=t, rng=rng, predict_fn=f, verbose=verbose, **o)),
    "ascent": (gradient_ascent, lambda p, x, y, t, f, rng, verbose, o:
               gradient_ascent(p, x, y, predict_fn=f, verbose=verbose, **o)),
    "penalty": (penalty_attack, lambda p, x, y, t, f, rng, verbose, o:
                penalty_attack(p, x, t, predict_fn=f, verbose=verbose, **o)),
    "apgd": (apgd, lambda p, x, y, t, f, rng, verbose, o:
             apgd(p, x, y, target=t, rng=rng, predict_fn=f, verbose=verbose, **o)),
    # without a target: AutoAttack's sweep over the 9 highest-ranked wrong classes
    "apgd-t": (apgd_targeted, lambda p, x, y, t, f, rng, verbose, o:
               apgd_targeted(p, x, y, target=t, rng=rng, predict_fn=f, verbose=verbose, **o)),
    "fab": (fab_targeted, lambda p, x, y, t, f, rng, verbose, o:
            fab_targeted(p, x, y, rng=rng, predict_fn=f, verbose=verbose, **o) if t is None else
            fab(p, x, y, target=t, rng=rng, predict_fn=f, verbose=verbose,
                **{k: v for k, v in o.items() if k not in ("n_targets", "final_search", "early_stop")})),
    "square": (square, lambda p, x, y, t, f, rng, verbose, o:
               square(p, x, y, target=t, rng=rng, predict_fn=f, verbose=verbose, **o)),
    "deepfool": (deepfool, lambda p, x, y, t, f, rng, verbose, o:
                 deepfool(p, x, y, predict_fn=f, verbose=verbose, **o)),
    "cw": (cw_l2, lambda p, x, y, t, f, rng, verbose, o:
           cw_l2(p, x, y, target=t, predict_fn=f, verbose=verbose, **o)),
    # AutoAttack draws from its own seed (an option), by batch position
    "autoattack": (autoattack, lambda p, x, y, t, f, rng, verbose, o:
                   autoattack(p, x, y, predict_fn=f, verbose=verbose, **o)),
}

#: the methods :func:`attack_dataset` runs: fgsm, pgd, ascent (the lecture's untargeted
#: ascent), penalty (the lecture's targeted penalty attack), apgd, apgd-t, fab (FAB-T
#: without a target), square, deepfool, cw (minimal-norm), autoattack (the standard ensemble)
METHODS = tuple(_METHODS)
#: the minimal-norm methods (their metrics' norms are over the images they flip)
MINIMAL = ("deepfool", "cw")

# arguments attack_dataset supplies itself, so not options of a method
_SUPPLIED = {"target", "rng", "predict_fn", "verbose", "components", "state_path", "resume"}


class DatasetAttack(NamedTuple):
    """What :func:`attack_dataset` returns (a named tuple: ``res, xs, ys, ts, m = ...``).

    result: the :class:`AttackResult` over the M images attacked.
    x: (M, 1, 28, 28) the images attacked (with ``target="each"``: each image once per
       target, consecutively); y: (M,) int64 their labels.
    target: (M,) int64 the target of each, or None (untargeted), as ``result.target``.
    metrics: dict, see :func:`attack_dataset`.
    """
    result: AttackResult
    x: onp.ndarray
    y: onp.ndarray
    target: object
    metrics: dict


def method_options(method):
    """The options (keyword arguments) a method takes through :func:`attack_dataset`."""
    fn = _METHODS[check_choice(method, "method", METHODS)][0]
    return tuple(k for k, p in inspect.signature(fn).parameters.items()
                 if p.kind is p.KEYWORD_ONLY and k not in _SUPPLIED)


def check_method_target(method, target):
    """Is ``target`` (None, a class, or 'each') a request ``method`` can serve? -> target.

    The lecture's ascent is untargeted; the penalty attack is targeted.
    """
    method = check_choice(method, "method", METHODS)
    if isinstance(target, str) and target != "each":
        raise ValueError(f"target: expected None, a class 0-{NUM_CLASSES - 1} or 'each', "
                         f"got {target!r}")
    if target is not None and not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target: expected None, a class 0-{NUM_CLASSES - 1} or 'each', "
                        f"got {target!r}")
    if method == "ascent" and target is not None:
        raise ValueError("target: the lecture's ascent is untargeted (use method 'penalty' or 'pgd')")
    if method == "deepfool" and target is not None:
        raise ValueError("target: DeepFool is untargeted (use method 'cw' or 'fab' with a target)")
    if method == "autoattack" and target is not None:
        raise ValueError("target: AutoAttack is untargeted (its targeted parts, apgd-t and fab, "
                         "choose their own targets)")
    if method == "penalty" and target is None:
        raise ValueError(f"target: the penalty attack is targeted; give a class "
                         f"0-{NUM_CLASSES - 1} or 'each'")
    if target is not None and not isinstance(target, str):
        target = check_int(target, "target", minimum=0, maximum=NUM_CLASSES - 1)
    return target


def _expand(x, y, clean_pred, method, target):
    """The rows to attack: (xs, ys, ts or None, clean predictions, kept mask or None)."""
    n = len(x)
    if target == "each":
        per = onp.arange(NUM_CLASSES) if method == "penalty" else onp.arange(1, NUM_CLASSES)
        ts = (onp.tile(per, n) if method == "penalty"
              else ((y[:, None] + per[None]) % NUM_CLASSES).ravel()).astype(onp.int64)
        return (onp.repeat(x, len(per), 0), onp.repeat(y, len(per)), ts,
                onp.repeat(clean_pred, len(per)), None)
    if target is None:
        return x, y, None, clean_pred, None
    ts = onp.full(n, target, dtype=onp.int64)
    if method == "penalty":
        return x, y, ts, clean_pred, None
    keep = y != ts
    if not keep.any():
        raise ValueError(f"target: every one of the {n} images has label {target} "
                         "(nothing to attack)")
    return x[keep], y[keep], ts[keep], clean_pred[keep], keep


def attack_dataset(params, x, y, method, *, target=None, predict_fn=predict, rng=None,
                   verbose=False, **options):
    """Attack labelled images with one method and measure it.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64; method: one of :data:`METHODS`;
    target: None, a class 0-9 or 'each' (module notes); rng: numpy Generator (pgd's
    random starts); verbose: progress bars; ``options``: the method's own keyword
    arguments (:func:`method_options`: fgsm eps, norm; pgd eps, steps, step_size, norm,
    random_start, restarts, ...; ascent step, steps; penalty lam, penalty, steps, lr).

    -> :class:`DatasetAttack`. ``metrics`` (plain floats and ints): :func:`summarize`'s
    keys over the attacked rows, with ``n`` = N and ``clean_acc`` over the N images;
    ``robust_acc`` per image (with 'each': robust against every target; with a class:
    images labelled with it count with their clean prediction); with 'each' also
    ``attacks`` (M) and ``success_rate_per_target`` {class: rate among the correctly
    classified images of another label}; with a class (not penalty) ``not_attacked``;
    and ``seconds``, the attack's run time.
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    target = check_method_target(method, target)
    allowed = method_options(method)
    for k in options:
        if k not in allowed:
            raise TypeError(f"{k}: not an option of method {method!r} (its options: "
                            f"{', '.join(allowed)})")
    n = len(x)
    clean_pred = onp.argmax(predict_fn(params, x), 1)
    xs, ys, ts, cps, kept = _expand(x, y, clean_pred, method, target)

    t0 = time.perf_counter()
    res = _METHODS[method][1](params, xs, ys, ts, predict_fn, rng, verbose, options)
    seconds = time.perf_counter() - t0

    # a minimal-norm attack is measured by the norms of the images it flips
    metrics = summarize(res, ys, cps, norms_over="flipped" if method in MINIMAL else "attacked")
    metrics["n"] = n
    metrics["clean_acc"] = float(onp.mean(clean_pred == y))
    if res.details:
        metrics["details"] = {k: v for k, v in res.details.items() if k != "fooled_by"}
    if target == "each":
        metrics["robust_acc"] = float(onp.mean((res.pred == ys).reshape(n, -1).all(1)))
        metrics["attacks"] = int(len(ys))
        pools = {c: (ts == c) & (cps == ys) & (ys != c) for c in range(NUM_CLASSES)}
        metrics["success_rate_per_target"] = {
            str(c): float(onp.mean(res.success[pool])) for c, pool in pools.items() if pool.any()}
    elif kept is not None:
        pred = clean_pred.copy()
        pred[kept] = res.pred
        metrics["robust_acc"] = float(onp.mean(pred == y))
        metrics["not_attacked"] = int(onp.sum(~kept))
    metrics["seconds"] = seconds
    return DatasetAttack(res, xs, ys, ts, metrics)

"""Minimal perturbations: how far each image is from the decision boundary, by several attacks.

A minimal-norm attack returns, per image, the smallest perturbation it found that flips the
prediction (``eps`` in its result: the norm found, ``inf`` if it found none). They are upper
bounds of the true distance, so the smaller the stronger (each returned image is classified
again here before it counts). :func:`minimal_norms` runs them on the same images and says,
per image and in the median, which one came closest:

===========  ==============================================================================
``pgd``      :func:`scratchadv.attacks.minimal_perturbation`: bisection over eps with PGD
``deepfool`` :func:`scratchadv.attacks.deepfool` (Moosavi-Dezfooli et al. 2016)
``cw``       :func:`scratchadv.attacks.cw_l2` (Carlini & Wagner 2017; L2 only)
``fab``      :func:`scratchadv.attacks.fab` without ``eps`` (Croce & Hein 2020)
===========  ==============================================================================
"""
import numpy as onp

from ..attacks import cw_l2, deepfool, fab, minimal_perturbation
from ..model import predict
from ..validate import check_choice, check_images, check_int, check_labels

__all__ = ["MINIMAL_ATTACKS", "minimal_norms"]

MINIMAL_ATTACKS = ("pgd", "deepfool", "cw", "fab")


def _run(name, params, x, y, norm, rng, predict_fn, settings):
    if name == "pgd":
        return minimal_perturbation(params, x, y, norm=norm, search_steps=settings["search_steps"],
                                    steps=settings["pgd_steps"], rng=rng, predict_fn=predict_fn)
    if name == "deepfool":
        return deepfool(params, x, y, norm=norm, predict_fn=predict_fn)
    if name == "cw":
        return cw_l2(params, x, y, steps=settings["cw_steps"], binary_steps=settings["cw_binary_steps"],
                     predict_fn=predict_fn)
    return fab(params, x, y, norm=norm, steps=settings["fab_steps"], rng=rng, predict_fn=predict_fn)


def minimal_norms(params, x, y, *, predict_fn=predict, norm="l2", attacks=MINIMAL_ATTACKS, seed=0,
                  search_steps=10, pgd_steps=20, cw_steps=10000, cw_binary_steps=9, fab_steps=100):
    """The smallest perturbation each attack finds for each correctly classified image.

    x: (N, 1, 28, 28) in [0, 1]; y: (N,) int64; norm: "l2" or "linf" (``cw`` is L2 only
    and is skipped for Linf). Attack ``k`` draws from ``default_rng([seed, k])``.
    Returns a JSON-ready dict: ``n_correct``; per attack ``median``, ``mean`` (over the
    images it flipped), ``flipped``, and ``sizes`` ((n_correct,) floats, ``inf`` where it
    found nothing); ``smallest`` (the attack with the lowest median), ``best_median``
    (median over images of the smallest size any attack found) and ``wins`` (per attack,
    the images where it found the smallest size, ties to the earlier attack).
    """
    check_images(x)
    check_labels(y, len(x))
    norm = check_choice(norm, "norm", ("linf", "l2"))
    for a in attacks:
        check_choice(a, "attacks", MINIMAL_ATTACKS)
    seed = check_int(seed, "seed", minimum=0)
    settings = {"search_steps": search_steps, "pgd_steps": pgd_steps, "cw_steps": cw_steps,
                "cw_binary_steps": cw_binary_steps, "fab_steps": fab_steps}
    ok = onp.argmax(predict_fn(params, x), 1) == y
    xs, ys = x[ok], y[ok]
    run = [a for a in attacks if not (a == "cw" and norm == "linf")]
    out = {"norm": norm, "n": int(len(x)), "n_correct": int(ok.sum()), "attacks": run,
           "settings": settings, "by_attack": {}}
    sizes = {}
    for k, a in enumerate(run):
        res = _run(a, params, xs, ys, norm, onp.random.default_rng([seed, k]), predict_fn, settings)
        flipped = onp.argmax(predict_fn(params, res.x_adv), 1) != ys      # re-checked here
        size = onp.where(flipped, getattr(res, norm), onp.inf)
        sizes[a] = size
        fin = size[onp.isfinite(size)]
        out["by_attack"][a] = {"median": float(onp.median(size)) if len(size) else None,
                               "mean": float(fin.mean()) if len(fin) else None,
                               "flipped": int(flipped.sum()), "sizes": size.tolist()}
    if run:
        stack = onp.stack([sizes[a] for a in run])
        best = stack.min(0)
        out["best_median"] = float(onp.median(best)) if best.size else None
        out["wins"] = {a: int(onp.sum(onp.argmin(stack, 0) == k)) for k, a in enumerate(run)}
        medians = {a: out["by_attack"][a]["median"] for a in run}
        out["smallest"] = min(medians, key=lambda a: (medians[a] if medians[a] is not None else onp.inf))
    return out

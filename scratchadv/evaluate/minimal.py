"""Minimal perturbations: how far each image is from the decision boundary, by several attacks.

A minimal-norm attack returns, per image, the smallest perturbation it found that flips the
prediction (``eps`` in its result: the norm found, ``inf`` if it found none). They are upper
bounds of the true distance, so the smaller the stronger (each returned image is classified
again here before it counts). :func:`minimal_norms` runs them on the same images and says,
per image and in the median, which one came closest; :func:`minimal_norms_by_model` does
so for several models and both norms (the demo's section 4, ``scripts/shallow_vs_deep.py
--minimal``):

===========  ==============================================================================
``pgd``      :func:`scratchadv.attacks.minimal_perturbation`: bisection over eps with PGD
``deepfool`` :func:`scratchadv.attacks.deepfool` (Moosavi-Dezfooli et al. 2016)
``cw``       :func:`scratchadv.attacks.cw_l2` (Carlini & Wagner 2017; L2 only)
``fab``      :func:`scratchadv.attacks.fab` without ``eps`` (Croce & Hein 2020)
===========  ==============================================================================
"""
import numpy as onp

from ..attacks import cw_l2, deepfool, fab, minimal_perturbation
from ..model import get_architecture, predict
from ..validate import check_choice, check_images, check_int, check_labels

__all__ = ["MINIMAL_ATTACKS", "minimal_norms", "minimal_norms_by_model"]

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


def _median_text(v):
    return "n/a" if v is None else f"{v:.4g}"


def minimal_norms_by_model(models, x, y, *, norms=("l2", "linf"), attacks=MINIMAL_ATTACKS, seed=0,
                           search_steps=10, pgd_steps=20, cw_steps=10000, cw_binary_steps=9,
                           fab_steps=100, verbose=False):
    """:func:`minimal_norms` for each model and each norm, on the same images: which attack
    comes closest to each model's decision boundary.

    models: ``{label: (params, architecture name)}`` (as
    :func:`scratchadv.demo.shallow_vs_deep_table` takes them), in table order; x: (N, 1, 28,
    28) in [0, 1]; y: (N,) int64; norms: from "l2", "linf"; the other arguments are
    :func:`minimal_norms`'s, the same ``seed`` for every model and norm. ``verbose``: one
    line per model and norm. Returns a list of JSON-ready rows, model by model and norm by
    norm: ``model`` and :func:`minimal_norms`'s dict, without the per-image ``sizes``.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("models: expected a non-empty dict of label -> (params, architecture name), "
                         f"got {models!r:.80}")
    norms = [check_choice(n, "norms", ("linf", "l2")) for n in norms]
    rows = []
    for label, (params, arch_name) in models.items():
        f = get_architecture(arch_name).predict
        for norm in norms:
            r = minimal_norms(params, x, y, predict_fn=f, norm=norm, attacks=attacks, seed=seed,
                              search_steps=search_steps, pgd_steps=pgd_steps, cw_steps=cw_steps,
                              cw_binary_steps=cw_binary_steps, fab_steps=fab_steps)
            rows.append({"model": label, **{k: v for k, v in r.items() if k != "by_attack"},
                         "by_attack": {a: {k: v for k, v in b.items() if k != "sizes"}
                                       for a, b in r["by_attack"].items()}})
            if verbose:
                print(f"    {label}, {norm}: " + ", ".join(
                    f"{a} {_median_text(b['median'])} ({b['flipped']}/{r['n_correct']} flipped)"
                    for a, b in r["by_attack"].items()) + f"; smallest: {r.get('smallest')}", flush=True)
    return rows

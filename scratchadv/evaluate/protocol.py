"""The evaluation protocol: robust accuracy against eps, per-sample worst case over attacks.

Pure computation: :func:`evaluate_model` returns a JSON-ready report dict and writes
nothing (files: :mod:`scratchadv.evaluate.report`; checks: :mod:`scratchadv.evaluate.checks`).

Radii are Linf in pixel scale [0, 1]. The L2 attack ``pgd-l2`` runs at
``eps_l2 = L2_SCALE * eps`` with ``L2_SCALE = 7 = sqrt(784) / 4``: the L2 norm of a
change of size eps on 1/16 of the pixels (a 7x7 patch, about the stroke area of a digit).
It maps eps 0.3 to 2.1, near the L2 radius 2.0 commonly used for MNIST.

Randomness is derived from ``seed`` by position (like :func:`scratchadv.train.fit`):
attack ``a`` at eps index ``e``, restart ``r`` uses ``default_rng([seed, e, a, r])``, so a
number does not change when other eps or attacks are added to the run.

Two suites (:data:`SUITES`): ``"pgd"`` (FGSM, PGD and L2 PGD with restarts, the 2018
standard) and ``"autoattack"`` (FGSM and the standard AutoAttack,
:func:`scratchadv.attacks.autoattack`, the field's standard since Croce & Hein 2020; FGSM
stays for the "iterative beats single-step" check). The ``autoattack`` column is the
ensemble's robust accuracy; each row also records the accuracy left after each of its four
attacks (``autoattack_after``), the images each turned, its closing check and its Square
warning. ``square`` (in no suite) is the Square Attack alone (5000 queries, p_init 0.8),
each restart a new random search on the images still correct: added to the autoattack
suite with restarts, it follows up a Square warning. With ``state_dir`` a long evaluation
is resumable: each finished (eps, attack) is written there atomically, AutoAttack's own
state after every batch, and ``resume=True`` continues, ending with exactly the result of
an uninterrupted run.
"""
import json
import os
import time

import numpy as onp

from ..attacks import apgd, autoattack, default_step_size, fgsm, pgd, square
from ..data import data_fingerprint
from ..fileio import atomic_write_json
from ..losses import input_gradient
from ..model import predict
from ..parallel import Workers, check_workers, portable, split_evenly
from ..progress import Progress
from ..validate import check_images, check_labels, check_int, check_float, check_names
from .report import mask_string, parse_mask

__all__ = ["ATTACKS", "SUITES", "L2_SCALE", "DEFAULT_EPS", "DEFAULT_ATTACKS", "FINAL_EPS", "l2_radius",
           "pgd_step_size", "worst_case", "attack_correct", "noise_correct",
           "zero_gradient_fraction", "evaluate_model"]

#: attacks by name -> (norm, iterative?)
ATTACKS = {"fgsm": ("linf", False), "pgd": ("linf", True), "pgd-l2": ("l2", True),
           "autoattack": ("linf", True), "square": ("linf", True)}
L2_SCALE = 7.0
DEFAULT_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
#: the attacks of each suite
SUITES = {"pgd": ("fgsm", "pgd", "pgd-l2"), "autoattack": ("fgsm", "autoattack")}
DEFAULT_ATTACKS = SUITES["pgd"]
#: the radius at which any classifier can be driven to chance (every pixel can reach 0.5)
FINAL_EPS = 0.5


def l2_radius(eps, scale=L2_SCALE):
    """The L2 radius paired with the Linf radius ``eps`` (see the module docstring)."""
    return float(eps) * float(scale)


def pgd_step_size(radius, steps):
    """2.5 * radius / steps (Madry et al. 2018): enough to cross the ball and come back.
    The one rule of :func:`scratchadv.attacks.default_step_size`, under the name reports use."""
    return default_step_size(radius, steps)


def worst_case(clean_correct, correct_by_attack):
    """Per-sample AND: robust iff correct clean and under every attack (and restart).

    clean_correct: (N,) bool; correct_by_attack: dict name -> (N,) bool -> (N,) bool.
    """
    out = onp.asarray(clean_correct, dtype=bool).copy()
    for c in correct_by_attack.values():
        out &= onp.asarray(c, dtype=bool)
    return out


def _predict_labels(params, x, predict_fn, batch_size):
    return onp.concatenate([onp.argmax(predict_fn(params, x[i:i + batch_size]), 1)
                            for i in range(0, len(x), batch_size)])


def _check_ball(x_adv, x, norm, radius, name):
    """Refuse an attack result outside [0, 1] or its ball: its accuracy would be meaningless."""
    if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
        raise RuntimeError(f"{name}: returned {x_adv.shape} {x_adv.dtype}, expected {x.shape} {x.dtype}")
    if x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"{name}: images outside [0, 1] ({x_adv.min():g}, {x_adv.max():g})")
    d = (x_adv.astype(onp.float64) - x).reshape(len(x), -1)
    size = onp.abs(d).max(1) if norm == "linf" else onp.sqrt((d * d).sum(1))
    if size.max() > radius * (1 + 1e-5) + 1e-6:
        raise RuntimeError(f"{name}: perturbation {size.max():g} exceeds the {norm} radius {radius:g}")


def _run_one(name, params, x, y, *, eps, steps, rng, predict_fn, l2_scale):
    """One run of attack ``name`` on a batch -> adversarial images (checked)."""
    norm, iterative = ATTACKS[name]
    radius = eps if norm == "linf" else l2_radius(eps, l2_scale)
    if not iterative:
        res = fgsm(params, x, y, eps=radius, norm=norm, predict_fn=predict_fn)
    elif name == "square":      # gradient-free: a restart is a new random search
        res = square(params, x, y, eps=radius, norm=norm, queries=5000, p_init=0.8, restarts=1,
                     rng=rng, predict_fn=predict_fn)
    else:
        # only success counts here: an image leaves the loop at its first successful
        # iterate (the same accuracy as running every step, see pgd's early_stop)
        res = pgd(params, x, y, eps=radius, steps=steps, step_size=pgd_step_size(radius, steps),
                  norm=norm, random_start=True, restarts=1, rng=rng, predict_fn=predict_fn,
                  early_stop=True)
    _check_ball(res.x_adv, x, norm, radius, name)
    return res.x_adv


def _autoattack_correct(params, x, y, correct, *, eps, seed, key, predict_fn, batch_size,
                        state_path, resume, workers=1):
    """AutoAttack on the samples correct clean -> (correct (N,) bool, the ensemble's details)."""
    idx = onp.flatnonzero(correct)
    if not len(idx):
        return correct, None
    aa_seed = int(onp.random.default_rng([seed, *key]).integers(2 ** 31))
    res = autoattack(params, x[idx], y[idx], eps=eps, norm="linf", seed=aa_seed,
                     predict_fn=predict_fn, batch_size=batch_size, state_path=state_path,
                     resume=resume, workers=workers)
    _check_ball(res.x_adv, x[idx], "linf", eps, "autoattack")
    out = correct.copy()
    out[idx] = _predict_labels(params, res.x_adv, predict_fn, batch_size) == y[idx]
    d = res.details
    n = len(x)
    details = {"after": {a: float(v * len(idx) / n) for a, v in d["after"].items()},
               "fooled": d["fooled"], "square_warning": d["square_warning"], "checks": d["checks"],
               "seconds": d["seconds"]}
    return out, details


def attack_correct(name, params, x, y, *, eps, steps=40, restarts=1, seed=0, key=(0, 0),
                   predict_fn=predict, batch_size=500, l2_scale=L2_SCALE, bar=None,
                   state_path=None, resume=False, details=None, workers=1):
    """Which samples stay correct under every restart of attack ``name`` at ``eps``.

    Restart r runs only on the samples no earlier restart has fooled: the result is the
    same as running all restarts on all samples and AND-ing, at a fraction of the cost.
    Returns ``(correct (N,) bool, after_first (N,) bool)``; ``after_first`` is the
    result of restart 0 alone (used by the doubling-steps check). Single-step attacks
    are deterministic and run once whatever ``restarts`` says; so is ``"autoattack"``
    (its own restarts and seeds are the standard version's; ``steps`` does not apply;
    ``state_path``/``resume`` are its state; ``details``, a dict, receives what the
    ensemble reports). The correctness of each sample is recomputed here from the
    returned images. PGD stops each image at its first successful iterate (``early_stop``):
    the same correct samples as running every step, for less work.
    """
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {sorted(ATTACKS)}, got {name!r}")
    correct = _predict_labels(params, x, predict_fn, batch_size) == y
    if eps == 0:
        return correct, correct.copy()
    if name == "autoattack":
        correct, d = _autoattack_correct(params, x, y, correct, eps=eps, seed=seed, key=key,
                                         predict_fn=predict_fn, batch_size=batch_size,
                                         state_path=state_path, resume=resume, workers=workers)
        if details is not None and d is not None:
            details.update(d)
        if bar is not None:
            bar.update(1)
        return correct, correct.copy()
    runs = restarts if ATTACKS[name][1] else 1
    after_first = None
    shared = {"params": params, "x": x, "y": y, "name": name, "eps": eps, "steps": steps,
              "predict_fn": portable(predict_fn), "l2_scale": l2_scale, "batch_size": batch_size}
    with Workers(workers, shared) as pool:
        for r in range(runs):
            idx = onp.flatnonzero(correct)
            if workers == 1:        # one generator for the restart, drawn batch after batch
                rng = onp.random.default_rng([seed, *key, r])
                for i in range(0, len(idx), batch_size):
                    j = idx[i:i + batch_size]
                    correct[j] = _attack_part(shared, j, rng)
            else:                   # each batch cut into `workers` parts, one generator each
                tasks = [(j, onp.random.default_rng([seed, *key, r, b, p]))
                         for b, i in enumerate(range(0, len(idx), batch_size))
                         for p, j in enumerate(split_evenly(idx[i:i + batch_size], workers))]
                for (j, _), still in zip(tasks, pool.map(_attack_part, tasks)):
                    correct[j] = still
            if r == 0:
                after_first = correct.copy()
            if bar is not None:
                bar.update(1)
            if not correct.any():
                if bar is not None:
                    bar.update(runs - r - 1)
                break
    return correct, after_first


def _attack_part(shared, j, rng):
    """One run of the attack on samples j (a worker's task) -> which stay correct."""
    params, predict_fn, y = shared["params"], shared["predict_fn"], shared["y"][j]
    xa = _run_one(shared["name"], params, shared["x"][j], y, eps=shared["eps"],
                  steps=shared["steps"], rng=rng, predict_fn=predict_fn, l2_scale=shared["l2_scale"])
    return _predict_labels(params, xa, predict_fn, shared["batch_size"]) == y


def noise_correct(params, x, y, *, eps, rng, predict_fn=predict, batch_size=500):
    """Correct under uniform noise in [-eps, eps] per pixel (clipped to [0, 1]): (N,) bool."""
    xn = onp.clip(x + rng.uniform(-eps, eps, size=x.shape).astype(x.dtype), 0, 1)
    return _predict_labels(params, xn, predict_fn, batch_size) == y


def zero_gradient_fraction(params, x, y, predict_fn=predict, batch_size=500):
    """Fraction of samples whose input gradient d loss_i / d x_i is exactly zero everywhere.

    A zero gradient gives a gradient attack nothing to follow (a step function, saturated
    softmax in low precision, a quantising input layer): the attack then fails for reasons
    that have nothing to do with robustness.
    """
    zero = 0
    for i in range(0, len(x), batch_size):
        g = input_gradient(params, x[i:i + batch_size], y[i:i + batch_size], predict_fn)
        zero += int(onp.sum(~onp.any(g.reshape(len(g), -1) != 0, axis=1)))
    return zero / len(x)


def evaluate_model(params, x, y, *, predict_fn=predict, eps_list=DEFAULT_EPS,
                   attacks=None, steps=40, restarts=5, seed=0, suite="pgd",
                   batch_size=500, l2_scale=L2_SCALE, checks=True, verbose=True, name="model",
                   state_dir=None, resume=False, workers=1):
    """Accuracy against eps for each attack, the per-sample worst case, and sanity checks.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64. ``eps_list``: Linf radii in pixel
    scale (0 = clean); ``FINAL_EPS`` (0.5) is added if missing, for the sanity check
    that accuracy reaches chance. ``steps``/``restarts``: of the iterative attacks.
    Returns a JSON-ready dict (see :func:`~scratchadv.evaluate.report.write_report`); per
    eps it holds each attack's accuracy, ``noise``, ``worst_case`` and the per-sample masks
    (strings of 0/1, one character per sample) from which the worst case can be recomputed.
    With ``checks``, also the doubled-steps run, the zero-gradient fraction and ``sanity``
    (:func:`~scratchadv.evaluate.checks.sanity_checks`). ``suite``: "pgd" or "autoattack"
    (module notes); ``attacks``: the attack names to run instead of the suite's.
    ``state_dir``: a folder for the resumable state (module notes); ``resume``: continue.
    ``workers``: processes the attacks run in (:mod:`scratchadv.parallel`): each batch is cut
    into that many parts with a generator each, so results are bit-identical for a given
    ``workers`` (and with ``workers=1``, the same as before workers existed).
    """
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {suite!r}")
    if attacks is None:
        attacks = SUITES[suite]
    if resume and state_dir is None:
        raise ValueError("resume: needs state_dir (the folder of the state to continue from)")
    check_images(x, "x")
    check_labels(y, len(x), "y")
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    workers = check_workers(workers)
    attacks = check_names(attacks, "attacks", ATTACKS, what="attack")
    eps_list = sorted({check_float(e, "eps", minimum=0, maximum=1) for e in eps_list}
                      | ({FINAL_EPS} if checks else set()) | {0.0})
    t0 = time.perf_counter()
    clean = _predict_labels(params, x, predict_fn, batch_size) == y
    runs_per_eps = sum(restarts if ATTACKS[a][1] and a != "autoattack" else 1 for a in attacks)
    bar = Progress(total=runs_per_eps * (len(eps_list) - 1), desc=f"evaluate {name}", enable=verbose)
    done = _load_done(state_dir, resume, {"eps": eps_list, "attacks": list(attacks), "steps": steps,
                                          "restarts": restarts, "seed": seed, "n": int(len(x)),
                                          "l2_scale": float(l2_scale), "data": data_fingerprint(x, y),
                                          "workers": workers})
    rows, first = [], {}
    for ei, eps in enumerate(eps_list):
        correct, aa = {}, {}
        for ai, a in enumerate(attacks):
            bar.set_postfix(eps=eps, attack=a)
            key = f"{ei}/{a}"
            if key in done["finished"]:             # resumed: this one is on disk already
                f = done["finished"][key]
                correct[a], first[(ei, a)] = parse_mask(f["correct"]), parse_mask(f["first"])
                aa.update(f.get("details") or {})
                if eps > 0:
                    bar.update(1 if a == "autoattack" or not ATTACKS[a][1] else restarts)
                continue
            details = {}
            correct[a], first[(ei, a)] = attack_correct(
                a, params, x, y, eps=eps, steps=steps, restarts=restarts, seed=seed, key=(ei, ai),
                predict_fn=predict_fn, batch_size=batch_size, l2_scale=l2_scale,
                bar=bar if eps > 0 else None, details=details,
                state_path=None if state_dir is None else os.path.join(state_dir, f"autoattack-eps{ei}.npz"),
                resume=resume, workers=workers)
            aa.update(details)
            done["finished"][key] = {"correct": mask_string(correct[a]),
                                     "first": mask_string(first[(ei, a)]), "details": details}
            _save_done(state_dir, done)
        noise = noise_correct(params, x, y, eps=eps, rng=onp.random.default_rng([seed, ei, 1000]),
                              predict_fn=predict_fn, batch_size=batch_size)
        worst = worst_case(clean, correct)
        rows.append({
            "eps": eps, "eps_l2": l2_radius(eps, l2_scale),
            "accuracy": {**{a: float(correct[a].mean()) for a in attacks},
                         "noise": float(noise.mean()), "worst_case": float(worst.mean())},
            "first_restart_accuracy": {a: float(first[(ei, a)].mean()) for a in attacks},
            "masks": {**{a: mask_string(correct[a]) for a in attacks},
                      "clean": mask_string(clean), "worst_case": mask_string(worst)},
        })
        if aa:
            rows[-1]["autoattack_after"] = aa["after"]
            rows[-1]["autoattack"] = {k: aa[k] for k in ("fooled", "square_warning", "checks", "seconds")}
    bar.close()
    report = {
        "name": name, "n": int(len(x)), "clean_accuracy": float(clean.mean()), "suite": suite,
        "attacks": attacks, "eps": eps_list, "steps": steps, "restarts": restarts,
        "step_size_rule": "2.5*radius/steps", "l2_scale": float(l2_scale), "seed": seed,
        "workers": workers, "results": rows,
    }
    if checks:
        # imported here: checks.py reads this module's attack table, imports stay one-way
        from .checks import sanity_checks
        report["doubled_steps"] = _doubled_steps(params, x, y, report, steps, seed, predict_fn,
                                                 batch_size, l2_scale, first, workers)
        report["zero_gradient_fraction"] = zero_gradient_fraction(params, x, y, predict_fn, batch_size)
        report["sanity"] = sanity_checks(report)
    report["seconds"] = time.perf_counter() - t0
    return report


def _load_done(state_dir, resume, config):
    """The finished (eps, attack) results of an earlier run of the same evaluation."""
    from ..checkpoint import CheckpointError
    done = {"config": config, "finished": {}}
    if state_dir is None:
        return done
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "evaluation.json")
    if resume and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        for k, v in config.items():
            if saved.get("config", {}).get(k) != v:
                raise CheckpointError(f"{path}: cannot resume: {k} was {saved.get('config', {}).get(k)!r} "
                                      f"in the saved run, now {v!r}")
        done["finished"] = saved["finished"]
    return done


def _save_done(state_dir, done):
    if state_dir is not None:
        atomic_write_json(os.path.join(state_dir, "evaluation.json"), done)


def _doubled_steps(params, x, y, report, steps, seed, predict_fn, batch_size, l2_scale, first,
                   workers=1):
    """PGD with 2*steps (one restart) at the eps where PGD's accuracy is nearest 50%.

    That is where extra steps could change most; one restart from the same random
    starts on both sides makes the comparison like for like.
    """
    iterative = [a for a in report["attacks"] if ATTACKS[a][1]]
    if not iterative:
        return None
    stepped = [a for a in ("pgd", "pgd-l2") if a in iterative]     # attacks with a step count
    if not stepped:
        if "autoattack" in iterative:
            return _doubled_apgd(params, x, y, report, seed, predict_fn, batch_size)
        return None
    a = stepped[0]
    ai = report["attacks"].index(a)
    cands = [(abs(r["first_restart_accuracy"][a] - 0.5), ei) for ei, r in enumerate(report["results"])
             if r["eps"] > 0]
    _, ei = min(cands)
    eps = report["results"][ei]["eps"]
    # same key as restart 0 of the main run: the same random starts, only the steps differ
    doubled, _ = attack_correct(a, params, x, y, eps=eps, steps=2 * steps, restarts=1, seed=seed,
                                key=(ei, ai), predict_fn=predict_fn, batch_size=batch_size,
                                l2_scale=l2_scale, workers=workers)
    return {"attack": a, "eps": eps, "steps": steps,
            "accuracy": float(first[(ei, a)].mean()), "doubled_accuracy": float(doubled.mean())}


def _doubled_apgd(params, x, y, report, seed, predict_fn, batch_size):
    """For the AutoAttack suite: its first attack, APGD-CE, with 100 and with 200 steps
    (same random start) at the eps where the ensemble's accuracy is nearest 50%."""
    cands = [(abs(r["accuracy"]["autoattack"] - 0.5), ei) for ei, r in enumerate(report["results"])
             if r["eps"] > 0]
    _, ei = min(cands)
    eps = report["results"][ei]["eps"]
    clean = _predict_labels(params, x, predict_fn, batch_size) == y
    acc = {}
    for k in (100, 200):
        correct = clean.copy()
        idx = onp.flatnonzero(clean)
        for i in range(0, len(idx), batch_size):
            j = idx[i:i + batch_size]
            rng = onp.random.default_rng([seed, ei, 2000, i])
            res = apgd(params, x[j], y[j], eps=eps, norm="linf", loss="ce", steps=k, rng=rng,
                       predict_fn=predict_fn)
            correct[j] = _predict_labels(params, res.x_adv, predict_fn, batch_size) == y[j]
        acc[k] = float(correct.mean())
    return {"attack": "apgd-ce", "eps": eps, "steps": 100, "accuracy": acc[100],
            "doubled_accuracy": acc[200]}

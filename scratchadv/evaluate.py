"""Robust accuracy against eps, per-sample worst case over attacks, sanity checks, reports.

How to evaluate robustness honestly (Carlini et al. 2019, "On evaluating adversarial
robustness"; Athalye, Carlini & Wagner 2018, "Obfuscated gradients give a false sense
of security"):

- report clean accuracy always; attacks use the logits (the library's loss is the
  cross-entropy of the logits, never of clipped probabilities);
- a sample is *robust at eps* only if it is classified correctly clean AND under every
  attack AND every restart (:func:`worst_case`): the worst case is a per-sample AND,
  not the minimum of the per-attack accuracies;
- sanity checks that expose gradient masking (:func:`sanity_checks`): iterative beats
  single-step, doubling the steps does not raise accuracy, accuracy falls with eps and
  reaches <= 10% at eps 0.5, uniform noise of the same radius hurts less than the
  attack, and (almost) no sample has an all-zero input gradient.

Radii are Linf in pixel scale [0, 1]. The L2 attack ``pgd-l2`` runs at
``eps_l2 = L2_SCALE * eps`` with ``L2_SCALE = 7 = sqrt(784) / 4``: the L2 norm of a
change of size eps on 1/16 of the pixels (a 7x7 patch, about the stroke area of a digit).
It maps eps 0.3 to 2.1, near the L2 radius 2.0 commonly used for MNIST.

Randomness is derived from ``seed`` by position (like :func:`scratchadv.train.fit`):
attack ``a`` at eps index ``e``, restart ``r`` uses ``default_rng([seed, e, a, r])``, so a
number does not change when other eps or attacks are added to the run.
"""
import json
import os
import time

import numpy as onp

from .attacks import fgsm, pgd
from .fileio import atomic_write, atomic_write_json
from .losses import input_gradient
from .model import predict
from .progress import Progress
from .validate import check_images, check_labels, check_int, check_float

__all__ = ["ATTACKS", "L2_SCALE", "DEFAULT_EPS", "DEFAULT_ATTACKS", "l2_radius", "pgd_step_size", "worst_case",
           "attack_correct", "noise_correct", "parse_mask", "zero_gradient_fraction", "evaluate_model",
           "sanity_checks", "format_markdown", "write_report", "compare_reports",
           "write_comparison", "load_report"]

#: attacks by name -> (norm, iterative?)
ATTACKS = {"fgsm": ("linf", False), "pgd": ("linf", True), "pgd-l2": ("l2", True)}
L2_SCALE = 7.0
DEFAULT_EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
DEFAULT_ATTACKS = tuple(ATTACKS)
#: the radius at which any classifier can be driven to chance (every pixel can reach 0.5)
FINAL_EPS = 0.5
#: tolerances of the sanity checks, in accuracy (fraction), stated in every result
TOL = 0.005
ZERO_GRAD_MAX = 0.01
CHANCE_MAX = 0.10


def l2_radius(eps, scale=L2_SCALE):
    """The L2 radius paired with the Linf radius ``eps`` (see the module docstring)."""
    return float(eps) * float(scale)


def pgd_step_size(radius, steps):
    """2.5 * radius / steps (Madry et al. 2018): enough to cross the ball and come back."""
    return 2.5 * radius / steps


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
    else:
        res = pgd(params, x, y, eps=radius, steps=steps, step_size=pgd_step_size(radius, steps),
                  norm=norm, random_start=True, restarts=1, rng=rng, predict_fn=predict_fn)
    _check_ball(res.x_adv, x, norm, radius, name)
    return res.x_adv


def attack_correct(name, params, x, y, *, eps, steps=40, restarts=1, seed=0, key=(0, 0),
                   predict_fn=predict, batch_size=500, l2_scale=L2_SCALE, bar=None):
    """Which samples stay correct under every restart of attack ``name`` at ``eps``.

    Restart r runs only on the samples no earlier restart has fooled: the result is the
    same as running all restarts on all samples and AND-ing, at a fraction of the cost.
    Returns ``(correct (N,) bool, after_first (N,) bool)``; ``after_first`` is the
    result of restart 0 alone (used by the doubling-steps check). Single-step attacks
    are deterministic and run once whatever ``restarts`` says.
    The correctness of each sample is recomputed here from the returned images.
    """
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {sorted(ATTACKS)}, got {name!r}")
    correct = _predict_labels(params, x, predict_fn, batch_size) == y
    if eps == 0:
        return correct, correct.copy()
    runs = restarts if ATTACKS[name][1] else 1
    after_first = None
    for r in range(runs):
        idx = onp.flatnonzero(correct)
        rng = onp.random.default_rng([seed, *key, r])
        for i in range(0, len(idx), batch_size):
            j = idx[i:i + batch_size]
            xa = _run_one(name, params, x[j], y[j], eps=eps, steps=steps, rng=rng,
                          predict_fn=predict_fn, l2_scale=l2_scale)
            correct[j] = _predict_labels(params, xa, predict_fn, batch_size) == y[j]
        if r == 0:
            after_first = correct.copy()
        if bar is not None:
            bar.update(1)
        if not correct.any():
            if bar is not None:
                bar.update(runs - r - 1)
            break
    return correct, after_first


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


def _mask_str(m):
    return "".join("1" if v else "0" for v in m)


def parse_mask(s):
    """A report's mask string ('0110...') -> (N,) bool."""
    return onp.frombuffer(s.encode("ascii"), dtype=onp.uint8) == ord("1")


def evaluate_model(params, x, y, *, predict_fn=predict, eps_list=DEFAULT_EPS,
                   attacks=DEFAULT_ATTACKS, steps=40, restarts=5, seed=0,
                   batch_size=500, l2_scale=L2_SCALE, checks=True, verbose=True, name="model"):
    """Accuracy against eps for each attack, the per-sample worst case, and sanity checks.

    x: (N, 1, 28, 28) float in [0, 1]; y: (N,) int64. ``eps_list``: Linf radii in pixel
    scale (0 = clean); ``FINAL_EPS`` (0.5) is added if missing, for the sanity check
    that accuracy reaches chance. ``steps``/``restarts``: of the iterative attacks.
    Returns a JSON-ready dict (see :func:`write_report`); per eps it holds each attack's
    accuracy, ``noise``, ``worst_case`` and the per-sample masks (strings of 0/1, one
    character per sample) from which the worst case can be recomputed.
    """
    check_images(x, "x")
    check_labels(y, len(x), "y")
    steps = check_int(steps, "steps", minimum=1)
    restarts = check_int(restarts, "restarts", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    attacks = list(attacks)
    if not attacks:
        raise ValueError("attacks: expected at least one attack, got none")
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"attacks: expected names from {sorted(ATTACKS)}, got {a!r}")
    eps_list = sorted({check_float(e, "eps", minimum=0, maximum=1) for e in eps_list}
                      | ({FINAL_EPS} if checks else set()) | {0.0})
    t0 = time.perf_counter()
    clean = _predict_labels(params, x, predict_fn, batch_size) == y
    runs_per_eps = sum(restarts if ATTACKS[a][1] else 1 for a in attacks)
    bar = Progress(total=runs_per_eps * (len(eps_list) - 1), desc=f"evaluate {name}", enable=verbose)
    rows, first = [], {}
    for ei, eps in enumerate(eps_list):
        correct = {}
        for ai, a in enumerate(attacks):
            bar.set_postfix(eps=eps, attack=a)
            correct[a], first[(ei, a)] = attack_correct(
                a, params, x, y, eps=eps, steps=steps, restarts=restarts, seed=seed, key=(ei, ai),
                predict_fn=predict_fn, batch_size=batch_size, l2_scale=l2_scale,
                bar=bar if eps > 0 else None)
        noise = noise_correct(params, x, y, eps=eps, rng=onp.random.default_rng([seed, ei, 1000]),
                              predict_fn=predict_fn, batch_size=batch_size)
        worst = worst_case(clean, correct)
        rows.append({
            "eps": eps, "eps_l2": l2_radius(eps, l2_scale),
            "accuracy": {**{a: float(correct[a].mean()) for a in attacks},
                         "noise": float(noise.mean()), "worst_case": float(worst.mean())},
            "first_restart_accuracy": {a: float(first[(ei, a)].mean()) for a in attacks},
            "masks": {**{a: _mask_str(correct[a]) for a in attacks},
                      "clean": _mask_str(clean), "worst_case": _mask_str(worst)},
        })
    bar.close()
    report = {
        "name": name, "n": int(len(x)), "clean_accuracy": float(clean.mean()),
        "attacks": attacks, "eps": eps_list, "steps": steps, "restarts": restarts,
        "step_size_rule": "2.5*radius/steps", "l2_scale": float(l2_scale), "seed": seed,
        "results": rows,
    }
    if checks:
        report["doubled_steps"] = _doubled_steps(params, x, y, report, steps, seed, predict_fn,
                                                 batch_size, l2_scale, first)
        report["zero_gradient_fraction"] = zero_gradient_fraction(params, x, y, predict_fn, batch_size)
        report["sanity"] = sanity_checks(report)
    report["seconds"] = time.perf_counter() - t0
    return report


def _doubled_steps(params, x, y, report, steps, seed, predict_fn, batch_size, l2_scale, first):
    """PGD with 2*steps (one restart) at the eps where PGD's accuracy is nearest 50%.

    That is where extra steps could change most; one restart from the same random
    starts on both sides makes the comparison like for like.
    """
    iterative = [a for a in report["attacks"] if ATTACKS[a][1]]
    if not iterative:
        return None
    a = "pgd" if "pgd" in iterative else iterative[0]
    ai = report["attacks"].index(a)
    cands = [(abs(r["first_restart_accuracy"][a] - 0.5), ei) for ei, r in enumerate(report["results"])
             if r["eps"] > 0]
    _, ei = min(cands)
    eps = report["results"][ei]["eps"]
    # same key as restart 0 of the main run: the same random starts, only the steps differ
    doubled, _ = attack_correct(a, params, x, y, eps=eps, steps=2 * steps, restarts=1, seed=seed,
                                key=(ei, ai), predict_fn=predict_fn, batch_size=batch_size,
                                l2_scale=l2_scale)
    return {"attack": a, "eps": eps, "steps": steps,
            "accuracy": float(first[(ei, a)].mean()), "doubled_accuracy": float(doubled.mean())}


def _check(name, passed, detail, **numbers):
    return {"name": name, "passed": bool(passed), "detail": detail, "numbers": numbers}


def sanity_checks(report):
    """The gradient-masking checks on an evaluation report -> list of
    ``{"name", "passed", "detail", "numbers"}``. Pure function of the report's numbers.
    """
    rows = [r for r in report["results"] if r["eps"] > 0]
    attacks = report["attacks"]
    out = []
    # 1. iterative beats single-step (same norm): PGD's accuracy <= FGSM's at every eps
    pairs = [(i, s) for i in attacks if ATTACKS[i][1] for s in attacks
             if not ATTACKS[s][1] and ATTACKS[s][0] == ATTACKS[i][0]]
    if pairs:
        bad = [(r["eps"], i, s, r["accuracy"][i], r["accuracy"][s]) for r in rows for i, s in pairs
               if r["accuracy"][i] > r["accuracy"][s] + TOL]
        worst = max(((r["accuracy"][i] - r["accuracy"][s], r["eps"], i, s)
                     for r in rows for i, s in pairs), default=(0.0, None, None, None))
        out.append(_check(
            "iterative beats single-step", not bad,
            (f"{len(bad)} eps where an iterative attack left more correct than single-step, first "
             f"eps {bad[0][0]:g}: {bad[0][1]} {bad[0][3]:.3f} > {bad[0][2]} {bad[0][4]:.3f}") if bad else
            f"iterative <= single-step + {TOL:g} at every eps (largest excess {worst[0]:+.3f})",
            largest_excess=worst[0], tolerance=TOL))
    else:
        out.append(_check("iterative beats single-step", False,
                          "not run: needs one iterative and one single-step attack of the same norm"))
    # 2. doubling the steps does not raise accuracy
    d = report.get("doubled_steps")
    if d:
        ok = d["doubled_accuracy"] <= d["accuracy"] + TOL
        out.append(_check("doubling steps does not raise accuracy", ok,
                          f"{d['attack']} at eps {d['eps']:g}: {d['steps']} steps {d['accuracy']:.3f}, "
                          f"{2 * d['steps']} steps {d['doubled_accuracy']:.3f}", **d, tolerance=TOL))
    else:
        out.append(_check("doubling steps does not raise accuracy", False,
                          "not run: needs an iterative attack"))
    # 3. accuracy falls with eps and reaches chance at eps 0.5
    seq = [(r["eps"], r["accuracy"]["worst_case"]) for r in report["results"]]
    rises = [(e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(seq, seq[1:]) if a1 > a0 + TOL]
    final = [a for e, a in seq if abs(e - FINAL_EPS) < 1e-12]
    reaches = bool(final) and final[0] <= CHANCE_MAX
    out.append(_check(
        "accuracy falls with eps, <= 10% at eps 0.5", not rises and reaches,
        ("worst case " + ", ".join(f"{a:.3f}@{e:g}" for e, a in seq)
         + (f"; rises from eps {rises[0][0]:g} to {rises[0][2]:g}" if rises else "")
         + ("" if final else "; eps 0.5 not evaluated")),
        worst_case=[a for _, a in seq], eps=[e for e, _ in seq], chance_max=CHANCE_MAX))
    # 4. uniform noise of the same radius hurts less than the attacks
    bad = [(r["eps"], r["accuracy"]["noise"], r["accuracy"]["worst_case"]) for r in rows
           if r["accuracy"]["noise"] < r["accuracy"]["worst_case"]]
    gap = min((r["accuracy"]["noise"] - r["accuracy"]["worst_case"] for r in rows), default=0.0)
    out.append(_check(
        "random noise hurts less than the attack", not bad,
        (f"noise below the attacks at eps {bad[0][0]:g}: {bad[0][1]:.3f} < {bad[0][2]:.3f}" if bad else
         f"noise accuracy >= worst case at every eps (smallest gap {gap:+.3f})"),
        smallest_gap=gap))
    # 5. all-zero input gradients
    z = report.get("zero_gradient_fraction")
    if z is not None:
        out.append(_check("almost no all-zero input gradients", z <= ZERO_GRAD_MAX,
                          f"{z:.3%} of samples have d loss/d x == 0 everywhere (max {ZERO_GRAD_MAX:.0%})",
                          fraction=z, maximum=ZERO_GRAD_MAX))
    return out


def format_sanity(report):
    """Lines 'PASSED/FAILED name: detail'."""
    return [f"{'PASSED' if c['passed'] else 'FAILED'}  {c['name']}: {c['detail']}"
            for c in report.get("sanity", [])]


def _columns(report):
    return list(report["attacks"]) + ["noise", "worst_case"]


def format_markdown(report):
    """A Markdown table (rows eps, columns attacks, noise, worst case) and the checks."""
    cols = _columns(report)
    lines = [f"# Robustness of {report['name']}", "",
             f"{report['n']} test images; clean accuracy {report['clean_accuracy']:.2%}; "
             f"iterative attacks: {report['steps']} steps x {report['restarts']} restarts, "
             f"step {report['step_size_rule']}; pgd-l2 radius = {report['l2_scale']:g} x eps. "
             "Worst case: a sample counts only if every attack and restart failed on it.", "",
             "| eps (Linf) | eps (L2) | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    for r in report["results"]:
        lines.append(f"| {r['eps']:g} | {r['eps_l2']:.2f} | "
                     + " | ".join(f"{100 * r['accuracy'][c]:.1f}" for c in cols) + " |")
    if report.get("sanity"):
        lines += ["", "## Sanity checks", ""]
        lines += [f"- {'passed' if c['passed'] else '**FAILED**'}: {c['name']} — {c['detail']}"
                  for c in report["sanity"]]
    return "\n".join(lines) + "\n"


def _savefig(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")


def plot_report(report, path):
    """PNG of accuracy against eps: one line per attack, noise, and the worst case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    eps = [r["eps"] for r in report["results"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in _columns(report):
        # the worst case is drawn wide and pale underneath, so the attack it equals stays visible
        style = {"worst_case": dict(lw=5, color="k", alpha=0.3, zorder=1),
                 "noise": dict(ls=":", color="gray")}.get(c, {"zorder": 2})
        ax.plot(eps, [100 * r["accuracy"][c] for r in report["results"]], marker="o", ms=3,
                label=c.replace("_", " "), **style)
    l2 = "; pgd-l2 uses %g x eps" % report["l2_scale"] if "pgd-l2" in report["attacks"] else ""
    ax.set(xlabel=f"eps (Linf, pixel scale{l2})",
           ylabel="accuracy (%)", ylim=(-2, 102), title=report["name"])
    ax.grid(alpha=0.3)
    ax.legend()
    _savefig(fig, path)
    plt.close(fig)


def write_report(report, folder):
    """report.json, report.md and accuracy.png in ``folder`` (atomic writes) -> paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f) for k, f in
             (("json", "report.json"), ("md", "report.md"), ("png", "accuracy.png"))}
    atomic_write_json(paths["json"], report)
    with atomic_write(paths["md"]) as f:
        f.write(format_markdown(report).encode("utf-8"))
    plot_report(report, paths["png"])
    return paths


def load_report(path):
    """A report written by :func:`write_report` (its report.json or its folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    if not isinstance(report, dict) or "results" not in report or "clean_accuracy" not in report:
        raise ValueError(f"{path}: expected an evaluation report (with 'results'), got something else")
    return report


def compare_reports(reports):
    """One table over several models: per model and eps, each attack's and the worst-case
    accuracy, plus whether all its sanity checks passed. -> JSON-ready dict."""
    if not reports:
        raise ValueError("reports: expected at least one report")
    return {"models": [{"name": r["name"], "n": r["n"], "clean_accuracy": r["clean_accuracy"],
                        "attacks": r["attacks"], "steps": r["steps"], "restarts": r["restarts"],
                        "l2_scale": r["l2_scale"],
                        "results": [{"eps": x["eps"], "accuracy": x["accuracy"]} for x in r["results"]],
                        "sanity_passed": all(c["passed"] for c in r.get("sanity", [])),
                        "sanity": r.get("sanity", [])}
                       for r in reports]}


def format_comparison(comparison):
    models = comparison["models"]
    eps = sorted({x["eps"] for m in models for x in m["results"]})
    attacks = []
    for m in models:
        attacks += [a for a in m["attacks"] + ["worst_case"] if a not in attacks]
    lines = ["# Robustness comparison", "",
             "Accuracy (%) on the same test images; worst case = every attack and restart failed.", "",
             "| model | clean | sanity | attack | " + " | ".join(f"eps {e:g}" for e in eps) + " |",
             "|---" * (len(eps) + 4) + "|"]
    for m in models:
        by_eps = {x["eps"]: x["accuracy"] for x in m["results"]}
        for a in attacks:
            if a not in m["attacks"] and a != "worst_case":
                continue
            cells = [f"{100 * by_eps[e][a]:.1f}" if e in by_eps else "" for e in eps]
            lines.append(f"| {m['name']} | {100 * m['clean_accuracy']:.1f} | "
                         f"{'all passed' if m['sanity_passed'] else 'FAILED'} | {a} | " + " | ".join(cells) + " |")
    lines += ["", "## Sanity checks", ""]
    for m in models:
        lines.append(f"**{m['name']}**")
        lines += [f"- {'passed' if c['passed'] else '**FAILED**'}: {c['name']} — {c['detail']}"
                  for c in m["sanity"]]
        lines.append("")
    return "\n".join(lines)


def plot_comparison(comparison, path):
    """PNG: worst-case accuracy (solid) and FGSM accuracy (dashed) against eps, per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, m in enumerate(comparison["models"]):
        color = f"C{k}"
        eps = [x["eps"] for x in m["results"]]
        ax.plot(eps, [100 * x["accuracy"]["worst_case"] for x in m["results"]], marker="o", ms=3,
                color=color, lw=2, label=f"{m['name']} (worst case)")
        if "fgsm" in m["attacks"]:
            ax.plot(eps, [100 * x["accuracy"]["fgsm"] for x in m["results"]], ls="--",
                    color=color, alpha=0.7, label=f"{m['name']} (FGSM)")
    ax.set(xlabel="eps (Linf, pixel scale)", ylabel="accuracy (%)", ylim=(-2, 102),
           title="accuracy under attack")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _savefig(fig, path)
    plt.close(fig)


def write_comparison(reports, folder):
    """comparison.json, comparison.md and comparison.png in ``folder`` -> paths."""
    comparison = compare_reports(reports)
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f) for k, f in
             (("json", "comparison.json"), ("md", "comparison.md"), ("png", "comparison.png"))}
    atomic_write_json(paths["json"], comparison)
    with atomic_write(paths["md"]) as f:
        f.write(format_comparison(comparison).encode("utf-8"))
    plot_comparison(comparison, paths["png"])
    return paths

"""Sanity checks that expose gradient masking, one small function each.

Carlini et al. 2019 ("On evaluating adversarial robustness", section 5) and Athalye,
Carlini & Wagner 2018 ("Obfuscated gradients give a false sense of security"): when
one of these fails, the attacks were too weak for the model, and the accuracy they
report is an upper bound, not a result. The layout follows AutoAttack's ``checks.py``.

Every check is a pure function of an evaluation report (the dict returned by
:func:`scratchadv.evaluate.evaluate_model`) and returns
``{"name", "passed", "detail", "numbers"}``: ``detail`` is one line for a person,
``numbers`` the values (and tolerance) it was decided on. A check whose input the
report lacks either fails with a "not run" detail or, for the zero-gradient check,
returns None (it is then left out).

=====================================  ===========================================
check                                  passes when
=====================================  ===========================================
:func:`iterative_beats_single_step`    PGD <= FGSM of the same norm + TOL, every eps
:func:`doubling_steps_does_not_help`   2x steps <= 1x steps + TOL (one restart)
:func:`accuracy_falls_to_chance`       worst case never rises by > TOL with eps,
                                       and is <= CHANCE_MAX at FINAL_EPS
:func:`noise_hurts_less`               uniform noise accuracy >= worst case, every eps
:func:`few_zero_gradients`             all-zero input gradients <= ZERO_GRAD_MAX
=====================================  ===========================================
"""
from .protocol import ATTACKS, FINAL_EPS

__all__ = ["TOL", "ZERO_GRAD_MAX", "CHANCE_MAX", "CHECKS", "iterative_beats_single_step",
           "doubling_steps_does_not_help", "accuracy_falls_to_chance", "noise_hurts_less",
           "few_zero_gradients", "sanity_checks"]

#: tolerances of the sanity checks, in accuracy (fraction), stated in every result
TOL = 0.005
ZERO_GRAD_MAX = 0.01
CHANCE_MAX = 0.10


def _result(name, passed, detail, **numbers):
    return {"name": name, "passed": bool(passed), "detail": detail, "numbers": numbers}


def _attacked_rows(report):
    """The report's rows with eps > 0 (at eps 0 every attack is the clean image)."""
    return [r for r in report["results"] if r["eps"] > 0]


def iterative_beats_single_step(report):
    """An iterative attack leaves at most TOL more samples correct than a single-step one
    of the same norm, at every eps > 0."""
    name = "iterative beats single-step"
    attacks, rows = report["attacks"], _attacked_rows(report)
    pairs = [(i, s) for i in attacks if ATTACKS[i][1] for s in attacks
             if not ATTACKS[s][1] and ATTACKS[s][0] == ATTACKS[i][0]]
    if not pairs:
        return _result(name, False, "not run: needs one iterative and one single-step attack of the same norm")
    bad = [(r["eps"], i, s, r["accuracy"][i], r["accuracy"][s]) for r in rows for i, s in pairs
           if r["accuracy"][i] > r["accuracy"][s] + TOL]
    worst = max(((r["accuracy"][i] - r["accuracy"][s], r["eps"], i, s)
                 for r in rows for i, s in pairs), default=(0.0, None, None, None))
    if bad:
        eps, i, s, acc_i, acc_s = bad[0]
        detail = (f"{len(bad)} eps where an iterative attack left more correct than single-step, "
                  f"first eps {eps:g}: {i} {acc_i:.3f} > {s} {acc_s:.3f}")
    else:
        detail = f"iterative <= single-step + {TOL:g} at every eps (largest excess {worst[0]:+.3f})"
    return _result(name, not bad, detail, largest_excess=worst[0], tolerance=TOL)


def doubling_steps_does_not_help(report):
    """Twice the steps (same random start) raise accuracy by at most TOL: the attack converged.

    Reads ``report["doubled_steps"]`` (the protocol's doubled-steps run)."""
    name = "doubling steps does not raise accuracy"
    d = report.get("doubled_steps")
    if not d:
        return _result(name, False, "not run: needs an iterative attack")
    return _result(name, d["doubled_accuracy"] <= d["accuracy"] + TOL,
                   f"{d['attack']} at eps {d['eps']:g}: {d['steps']} steps {d['accuracy']:.3f}, "
                   f"{2 * d['steps']} steps {d['doubled_accuracy']:.3f}", **d, tolerance=TOL)


def accuracy_falls_to_chance(report):
    """The worst case never rises by more than TOL from one eps to the next, and is at most
    CHANCE_MAX at FINAL_EPS (0.5: every pixel can be set to 0.5, any image to grey)."""
    seq = [(r["eps"], r["accuracy"]["worst_case"]) for r in report["results"]]
    rises = [(e0, e1) for (e0, a0), (e1, a1) in zip(seq, seq[1:]) if a1 > a0 + TOL]
    final = [a for e, a in seq if abs(e - FINAL_EPS) < 1e-12]
    reaches = bool(final) and final[0] <= CHANCE_MAX
    detail = ("worst case " + ", ".join(f"{a:.3f}@{e:g}" for e, a in seq)
              + (f"; rises from eps {rises[0][0]:g} to {rises[0][1]:g}" if rises else "")
              + ("" if final else "; eps 0.5 not evaluated"))
    return _result("accuracy falls with eps, <= 10% at eps 0.5", not rises and reaches, detail,
                   worst_case=[a for _, a in seq], eps=[e for e, _ in seq], chance_max=CHANCE_MAX)


def noise_hurts_less(report):
    """Uniform noise of the same Linf radius leaves at least as many samples correct as the
    worst case over the attacks, at every eps > 0 (no tolerance)."""
    rows = _attacked_rows(report)
    bad = [(r["eps"], r["accuracy"]["noise"], r["accuracy"]["worst_case"]) for r in rows
           if r["accuracy"]["noise"] < r["accuracy"]["worst_case"]]
    gap = min((r["accuracy"]["noise"] - r["accuracy"]["worst_case"] for r in rows), default=0.0)
    detail = (f"noise below the attacks at eps {bad[0][0]:g}: {bad[0][1]:.3f} < {bad[0][2]:.3f}" if bad else
              f"noise accuracy >= worst case at every eps (smallest gap {gap:+.3f})")
    return _result("random noise hurts less than the attack", not bad, detail, smallest_gap=gap)


def few_zero_gradients(report):
    """At most ZERO_GRAD_MAX of the samples have an input gradient that is zero everywhere
    (a gradient attack has nothing to follow there). None if the report has no fraction."""
    z = report.get("zero_gradient_fraction")
    if z is None:
        return None
    return _result("almost no all-zero input gradients", z <= ZERO_GRAD_MAX,
                   f"{z:.3%} of samples have d loss/d x == 0 everywhere (max {ZERO_GRAD_MAX:.0%})",
                   fraction=z, maximum=ZERO_GRAD_MAX)


def square_does_not_beat_white_box(report):
    """AutoAttack's own warning (Croce & Hein 2020; its ``check_square_sr``): Square, which
    never reads a gradient, must not lower the robust accuracy left by the white-box attacks
    by more than the ensemble's ``square_tolerance`` at any eps. None without AutoAttack."""
    rows = [r for r in report["results"] if r.get("autoattack")]
    if not rows:
        return None
    bad = [r["eps"] for r in rows if r["autoattack"]["square_warning"]]
    gaps = [(min(v for k, v in r["autoattack_after"].items() if k != "square")
             - r["autoattack_after"]["square"]) for r in rows
            if "square" in r["autoattack_after"] and len(r["autoattack_after"]) > 1]
    detail = (f"Square lowered the white-box result at eps {', '.join(f'{e:g}' for e in bad)}: "
              "the gradients may be masked" if bad else
              f"Square added at most {max(gaps, default=0.0):.3f} to the white-box attacks' result")
    return _result("black-box Square does not beat the white-box attacks", not bad, detail,
                   largest_gain=max(gaps, default=0.0), eps_flagged=bad)


#: the checks :func:`sanity_checks` runs, in the order of its results
CHECKS = (iterative_beats_single_step, doubling_steps_does_not_help, accuracy_falls_to_chance,
          noise_hurts_less, few_zero_gradients, square_does_not_beat_white_box)


def sanity_checks(report):
    """The gradient-masking checks on an evaluation report -> list of
    ``{"name", "passed", "detail", "numbers"}``. Pure function of the report's numbers.
    """
    return [c for c in (check(report) for check in CHECKS) if c is not None]

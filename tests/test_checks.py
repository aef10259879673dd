"""The sanity checks one by one, on hand-made reports: each passes on honest numbers and
fails on the numbers a gradient-masked model produces; details and numbers are pinned,
since stored reports and their readers depend on them."""
import pytest

from scratchadv.evaluate import (CHANCE_MAX, CHECKS, TOL, ZERO_GRAD_MAX, accuracy_falls_to_chance,
                                 doubling_steps_does_not_help, few_zero_gradients,
                                 iterative_beats_single_step, noise_hurts_less, sanity_checks)


def _report(rows, attacks=("fgsm", "pgd"), doubled=None, zero=None):
    """rows: (eps, {column: accuracy}) with a column per attack plus noise and worst_case."""
    rep = {"attacks": list(attacks), "results": [{"eps": e, "accuracy": dict(a)} for e, a in rows]}
    if doubled is not None:
        rep["doubled_steps"] = doubled
    if zero is not None:
        rep["zero_gradient_fraction"] = zero
    return rep


def _acc(fgsm, pgd, noise, worst=None):
    return {"fgsm": fgsm, "pgd": pgd, "noise": noise,
            "worst_case": min(fgsm, pgd) if worst is None else worst}


HONEST = [(0.0, _acc(.99, .99, .99)), (0.1, _acc(.7, .5, .98)), (0.3, _acc(.2, .01, .9)),
          (0.5, _acc(.05, 0, .5))]
DOUBLED = {"attack": "pgd", "eps": 0.1, "steps": 40, "accuracy": 0.5, "doubled_accuracy": 0.49}


# --- iterative beats single-step ---------------------------------------------

def test_iterative_beats_single_step_passes_within_tolerance():
    rows = [(0.0, _acc(.99, .99, .99)), (0.1, _acc(.6, .6 + TOL - 1e-9, .9))]
    c = iterative_beats_single_step(_report(rows))
    assert c["passed"]
    assert c["detail"] == "iterative <= single-step + 0.005 at every eps (largest excess +0.005)"
    assert c["numbers"] == {"largest_excess": pytest.approx(TOL), "tolerance": TOL}


def test_iterative_beats_single_step_fails_when_pgd_keeps_more():
    rows = [(0.0, _acc(.99, .99, .99)), (0.1, _acc(.5, .7, .9)), (0.2, _acc(.4, .45, .9))]
    c = iterative_beats_single_step(_report(rows))
    assert not c["passed"]
    assert c["detail"] == ("2 eps where an iterative attack left more correct than single-step, "
                           "first eps 0.1: pgd 0.700 > fgsm 0.500")
    assert c["numbers"]["largest_excess"] == pytest.approx(0.2)


def test_iterative_beats_single_step_ignores_eps_0_and_needs_a_pair():
    # at eps 0 every attack returns the clean image: not a comparison
    rows = [(0.0, _acc(.5, .9, .9)), (0.1, _acc(.5, .4, .9))]
    assert iterative_beats_single_step(_report(rows))["passed"]
    # PGD-L2 and FGSM (Linf) are not the same norm: nothing to compare, the check fails
    rows = [(0.1, {"fgsm": .5, "pgd-l2": .4, "noise": .9, "worst_case": .4})]
    c = iterative_beats_single_step(_report(rows, attacks=("fgsm", "pgd-l2")))
    assert not c["passed"] and c["detail"].startswith("not run")
    assert c["numbers"] == {}


# --- doubling steps does not raise accuracy ----------------------------------

def test_doubling_steps_passes_when_accuracy_does_not_rise():
    c = doubling_steps_does_not_help(_report(HONEST, doubled=DOUBLED))
    assert c["passed"]
    assert c["detail"] == "pgd at eps 0.1: 40 steps 0.500, 80 steps 0.490"
    assert c["numbers"] == {**DOUBLED, "tolerance": TOL}


def test_doubling_steps_fails_when_more_steps_keep_more_correct():
    c = doubling_steps_does_not_help(_report(HONEST, doubled=dict(DOUBLED, doubled_accuracy=0.52)))
    assert not c["passed"]
    assert c["detail"] == "pgd at eps 0.1: 40 steps 0.500, 80 steps 0.520"
    c = doubling_steps_does_not_help(_report(HONEST))
    assert not c["passed"] and c["detail"] == "not run: needs an iterative attack"


# --- accuracy falls with eps, reaches chance ----------------------------------

def test_accuracy_falls_to_chance_passes_on_a_falling_curve():
    c = accuracy_falls_to_chance(_report(HONEST))
    assert c["passed"]
    assert c["detail"] == "worst case 0.990@0, 0.500@0.1, 0.010@0.3, 0.000@0.5"
    assert c["numbers"] == {"worst_case": [.99, .5, .01, 0], "eps": [0, .1, .3, .5],
                            "chance_max": CHANCE_MAX}


@pytest.mark.parametrize("rows, tail", [
    # rises between two eps
    ([(0.0, _acc(.99, .99, .99)), (0.1, _acc(.3, .3, .9)), (0.3, _acc(.4, .4, .9)),
      (0.5, _acc(0, 0, .5))], "; rises from eps 0.1 to 0.3"),
    # falls, but stays above chance at eps 0.5
    ([(0.0, _acc(.99, .99, .99)), (0.5, _acc(.3, .3, .5))], ""),
    # eps 0.5 never evaluated
    ([(0.0, _acc(.99, .99, .99)), (0.3, _acc(0, 0, .5))], "; eps 0.5 not evaluated"),
])
def test_accuracy_falls_to_chance_fails(rows, tail):
    c = accuracy_falls_to_chance(_report(rows))
    assert not c["passed"]
    assert c["detail"].endswith(tail) and c["detail"].startswith("worst case 0.990@0, ")


# --- random noise hurts less than the attack ---------------------------------

def test_noise_hurts_less_passes_when_noise_keeps_more():
    c = noise_hurts_less(_report(HONEST))
    assert c["passed"]
    assert c["detail"] == "noise accuracy >= worst case at every eps (smallest gap +0.480)"
    assert c["numbers"] == {"smallest_gap": pytest.approx(0.48)}


def test_noise_hurts_less_fails_when_noise_beats_the_attacks():
    rows = HONEST[:1] + [(0.1, _acc(.7, .5, .4))] + HONEST[2:]
    c = noise_hurts_less(_report(rows))
    assert not c["passed"]
    assert c["detail"] == "noise below the attacks at eps 0.1: 0.400 < 0.500"


# --- all-zero input gradients ------------------------------------------------

def test_few_zero_gradients_passes_up_to_the_maximum():
    c = few_zero_gradients(_report(HONEST, zero=ZERO_GRAD_MAX))
    assert c["passed"]
    assert c["detail"] == "1.000% of samples have d loss/d x == 0 everywhere (max 1%)"
    assert c["numbers"] == {"fraction": ZERO_GRAD_MAX, "maximum": ZERO_GRAD_MAX}


def test_few_zero_gradients_fails_above_and_is_skipped_without_a_fraction():
    c = few_zero_gradients(_report(HONEST, zero=0.3))
    assert not c["passed"]
    assert c["detail"] == "30.000% of samples have d loss/d x == 0 everywhere (max 1%)"
    assert few_zero_gradients(_report(HONEST)) is None


# --- all of them -------------------------------------------------------------

def test_sanity_checks_runs_every_check_in_order():
    full = sanity_checks(_report(HONEST, doubled=DOUBLED, zero=0.0))
    assert [c["name"] for c in full] == ["iterative beats single-step",
                                         "doubling steps does not raise accuracy",
                                         "accuracy falls with eps, <= 10% at eps 0.5",
                                         "random noise hurts less than the attack",
                                         "almost no all-zero input gradients"]
    assert all(c["passed"] for c in full) and len(CHECKS) == 6      # + the Square check
    assert full == [c for c in (check(_report(HONEST, doubled=DOUBLED, zero=0.0)) for check in CHECKS)
                    if c is not None]
    # without a zero-gradient fraction that check is left out; the others still run
    assert [c["name"] for c in sanity_checks(_report(HONEST))] == [c["name"] for c in full[:4]]
    for c in full:
        assert set(c) == {"name", "passed", "detail", "numbers"} and isinstance(c["passed"], bool)


def _aa_report(after, warning):
    rows = [{"eps": 0.1, "accuracy": {"worst_case": 0.5}, "autoattack_after": after,
             "autoattack": {"square_warning": warning}}]
    return {"results": rows, "attacks": ["fgsm", "autoattack"]}


def test_square_check():
    from scratchadv.evaluate.checks import square_does_not_beat_white_box as check
    ok = check(_aa_report({"apgd-ce": 0.6, "apgd-t": 0.55, "fab-t": 0.55, "square": 0.55}, False))
    assert ok["passed"] and ok["numbers"]["largest_gain"] == 0.0
    bad = check(_aa_report({"apgd-ce": 0.6, "apgd-t": 0.55, "fab-t": 0.55, "square": 0.40}, True))
    assert not bad["passed"] and bad["numbers"]["eps_flagged"] == [0.1]
    assert bad["numbers"]["largest_gain"] == pytest.approx(0.15) and "masked" in bad["detail"]
    assert check({"results": [{"eps": 0.1, "accuracy": {}}]}) is None     # no AutoAttack: not run

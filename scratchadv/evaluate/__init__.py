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

Radii are Linf in pixel scale [0, 1]; ``pgd-l2`` runs at ``L2_SCALE * eps`` (7 x eps).
Randomness is derived from ``seed`` by position, so a number does not change when other
eps or attacks are added to the run (details in :mod:`.protocol`).

Which file holds what (every name below is importable from ``scratchadv.evaluate``):

==================  ===============================================================
``protocol.py``     the attacks and radii (``ATTACKS``, ``L2_SCALE``, ``DEFAULT_EPS``,
                    ``DEFAULT_ATTACKS``, ``FINAL_EPS``, :func:`l2_radius`,
                    :func:`pgd_step_size`), :func:`worst_case`, :func:`attack_correct`,
                    :func:`noise_correct`, :func:`zero_gradient_fraction`,
                    :func:`evaluate_model` and its doubled-steps run: pure computation,
                    returns the JSON-ready report dict, writes nothing
``checks.py``       one function per sanity check, their tolerances (``TOL``,
                    ``ZERO_GRAD_MAX``, ``CHANCE_MAX``) and :func:`sanity_checks`
``report.py``       Markdown (:func:`format_markdown`, :func:`format_sanity`,
                    :func:`format_comparison`), :func:`compare_reports`, the mask
                    strings (:func:`mask_string`, :func:`parse_mask`) and the files
                    (:func:`write_report`, :func:`write_comparison`, :func:`load_report`)
``model_file.py``   :func:`evaluate_file`: a model file in, a report out (behind
                    ``scratchadv evaluate`` and ``scratchadv compare``)
``../plots.py``     the figures :func:`plot_report` and :func:`plot_comparison`
==================  ===============================================================
"""
from ..plots import plot_comparison, plot_report
from .checks import (CHANCE_MAX, CHECKS, TOL, ZERO_GRAD_MAX, accuracy_falls_to_chance,
                     doubling_steps_does_not_help, few_zero_gradients,
                     iterative_beats_single_step, noise_hurts_less, sanity_checks,
                     square_does_not_beat_white_box)
from .model_file import evaluate_file
from .protocol import (ATTACKS, DEFAULT_ATTACKS, DEFAULT_EPS, FINAL_EPS, L2_SCALE, SUITES, attack_correct,
                       evaluate_model, l2_radius, noise_correct, pgd_step_size, worst_case,
                       zero_gradient_fraction)
from .report import (compare_reports, format_comparison, format_markdown, format_sanity,
                     load_report, mask_string, parse_mask, write_comparison, write_report)

__all__ = [
    # protocol.py
    "ATTACKS", "SUITES", "L2_SCALE", "DEFAULT_EPS", "DEFAULT_ATTACKS", "FINAL_EPS", "l2_radius", "pgd_step_size",
    "worst_case", "attack_correct", "noise_correct", "zero_gradient_fraction", "evaluate_model",
    # checks.py
    "TOL", "ZERO_GRAD_MAX", "CHANCE_MAX", "CHECKS", "iterative_beats_single_step",
    "doubling_steps_does_not_help", "accuracy_falls_to_chance", "noise_hurts_less",
    "few_zero_gradients", "square_does_not_beat_white_box", "sanity_checks",
    # report.py
    "mask_string", "parse_mask", "format_sanity", "format_markdown", "write_report", "load_report",
    "compare_reports", "format_comparison", "write_comparison",
    # model_file.py, plots.py
    "evaluate_file", "plot_report", "plot_comparison",
]

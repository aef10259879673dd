"""Evaluation reports: Markdown, mask strings, comparisons, and their files (no attacks here).

A report is the JSON-ready dict of :func:`scratchadv.evaluate.evaluate_model`. Every
file is written atomically (:mod:`scratchadv.fileio`); the figures are drawn by
:func:`scratchadv.plots.plot_report` and :func:`scratchadv.plots.plot_comparison`.
"""
import json
import os

import numpy as onp

from ..fileio import atomic_write, atomic_write_json
from ..plots import plot_comparison, plot_report

__all__ = ["mask_string", "parse_mask", "format_sanity", "format_markdown", "write_report",
           "load_report", "compare_reports", "format_comparison", "write_comparison"]


def mask_string(m):
    """(N,) bool -> the report's mask string, one '0'/'1' per sample."""
    return "".join("1" if v else "0" for v in m)


def parse_mask(s):
    """A report's mask string ('0110...') -> (N,) bool."""
    return onp.frombuffer(s.encode("ascii"), dtype=onp.uint8) == ord("1")


def format_sanity(report):
    """Lines 'PASSED/FAILED name: detail'."""
    return [f"{'PASSED' if c['passed'] else 'FAILED'}  {c['name']}: {c['detail']}"
            for c in report.get("sanity", [])]


def _columns(report):
    return list(report["attacks"]) + ["noise", "worst_case"]


def _sanity_bullets(checks):
    return [f"- {'passed' if c['passed'] else '**FAILED**'}: {c['name']} — {c['detail']}" for c in checks]


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
    aa = [r for r in report["results"] if r.get("autoattack_after")]
    if aa:
        names = list(aa[0]["autoattack_after"])
        lines += ["", "## AutoAttack, attack by attack", "",
                  "Robust accuracy (%) left after each attack of the ensemble (each runs on the "
                  "points still robust); in brackets the images it turned.", "",
                  "| eps (Linf) | " + " | ".join(names) + " | closing check |", "|---" * (len(names) + 2) + "|"]
        for r in aa:
            c = r["autoattack"]["checks"]
            check = (f"max Linf {c['max_perturbation']:.4f}, NaN {c['nan']}, range "
                     f"[{c['min']:g}, {c['max']:g}]" + ("; **Square warning**" if r["autoattack"]["square_warning"] else ""))
            lines.append(f"| {r['eps']:g} | " + " | ".join(
                f"{100 * r['autoattack_after'][a]:.1f} ({r['autoattack']['fooled'][a]})" for a in names)
                + f" | {check} |")
    if report.get("sanity"):
        lines += ["", "## Sanity checks", ""]
        lines += _sanity_bullets(report["sanity"])
    return "\n".join(lines) + "\n"


def _write_files(folder, names, obj, markdown, plot):
    """``obj`` as JSON, ``markdown(obj)`` and ``plot(obj, path)`` under the three ``names``
    in ``folder``, each atomically -> {"json", "md", "png"} paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f) for k, f in zip(("json", "md", "png"), names)}
    atomic_write_json(paths["json"], obj)
    with atomic_write(paths["md"]) as f:
        f.write(markdown(obj).encode("utf-8"))
    plot(obj, paths["png"])
    return paths


def write_report(report, folder):
    """report.json, report.md and accuracy.png in ``folder`` (atomic writes) -> paths."""
    return _write_files(folder, ("report.json", "report.md", "accuracy.png"), report,
                        format_markdown, plot_report)


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
    """A Markdown table of :func:`compare_reports`' result (rows model x attack, columns eps)
    and each model's checks."""
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
        lines += _sanity_bullets(m["sanity"])
        lines.append("")
    return "\n".join(lines)


def write_comparison(reports, folder):
    """comparison.json, comparison.md and comparison.png in ``folder`` -> paths."""
    return _write_files(folder, ("comparison.json", "comparison.md", "comparison.png"),
                        compare_reports(reports), format_comparison, plot_comparison)

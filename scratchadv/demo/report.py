"""The demo's report: ``README.md`` as a pure function of ``results.json``.

:func:`format_readme` reads nothing but the results dict (what :mod:`.run` stores in
results.json), so a report can be re-made, or its wording changed, without training or
attacking anything. One ``_md_<section>`` function per section gives its Markdown lines.
"""
import os

import numpy as onp

from .settings import REFERENCES, SECTIONS, SETTING_DOCS, TITLES

__all__ = ["format_readme", "format_shallow_table", "format_minimal_norms_table"]


def _pct(v):
    """A fraction as a percentage with one decimal ('n/a' for None)."""
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def _img(fig, caption, number):
    return [f"![{caption}]({fig})", "", f"*Figure {number}. {caption}*", ""]



def _row_at(rows, eps):
    return next((x for x in rows if abs(x["eps"] - eps) < 1e-9), None)


def _md_train(r, refs, fig_no):
    lines = [f"The lecture's network (conv 10@5x5, max-pool, conv 20@5x5, max-pool, dense 100, "
             f"dense 10; ReLU; 'valid' convolutions) is trained with RMSprop (Keras defaults: "
             f"lr 0.001, rho 0.9), batch {r['batch_size']}, {r['epochs']} epochs on "
             f"{r['n_train']:,} training images, with {r['n_val']:,} test images as validation data "
             "(as the lecture does). Training accuracy is the running mean over the last epoch's "
             "batches, which is what Keras prints and what the lecture quotes.", "",
             "| | this run | lecture |", "|---|---|---|",
             f"| training accuracy (last epoch, running mean) | {_pct(r['train_accuracy'])} | {_pct(refs['lecture_train_acc'])} |",
             f"| validation accuracy | {_pct(r['val_accuracy'])} | {_pct(refs['lecture_val_acc'])} |",
             f"| training accuracy (final weights, one pass) | {_pct(r['train_accuracy_full_pass'])} | |",
             f"| validation loss | {r['val_loss']:.4f} | |", ""]
    secs = r.get("seconds_per_epoch") or []
    if r["reused_cache"]:
        lines += [f"The model was loaded from the cache (`{os.path.basename(r['model'])}`); "
                  + (f"when it was trained an epoch took {onp.median(secs):.1f} s (median)." if secs else ""), ""]
    elif secs:
        lines += [f"Training took {r['train_seconds']:.0f} s ({onp.median(secs):.1f} s per epoch, median).", ""]
    lines += _img(r["figures"][0], "Learning curves of the lecture CNN; dashed: the lecture's final "
                  "accuracies.", fig_no)
    return lines


SLIDES_LOSS_NOTE = (
    "**What the slides' code computes.** The slides call "
    "`keras.metrics.binary_crossentropy(pred, fake_target)`, but Keras's signature is "
    "`binary_crossentropy(y_true, y_pred)`: the model's probabilities go in as the *labels* and the "
    "one-hot target as the *prediction*, which Keras clips to [1e-7, 1 - 1e-7]. The mean over the "
    "10 outputs is then `3.22 * (1 - p_target)` (plus a term of order 1e-7): linear in the target's "
    "probability, not `-log p_target`. Its gradient is cross-entropy's times 3.22 p_target: much "
    "weaker while p_target is small, about three times stronger as p_target nears 1. So 10 steps of "
    "0.5 push a confident image further towards 1, while an image far from its target hardly moves. The demo "
    "runs the slides' loss (`loss=\"lecture\"`) and, from the same starting points, cross-entropy "
    "(the library's default, `loss=\"ce\"`).")


def _md_fake(r, refs, fig_no):
    p = r["target_probability"]
    ce = r.get("cross_entropy")
    lines = ["Keep the weights fixed, start from uniform noise and descend the loss of a chosen "
             f"class with respect to the *image*: `x <- clip(x - {r['lr']:g} * dL/dx, 0, 1)`, "
             f"{r['steps']} steps (lecture: 10 steps, learning rate 0.5). The network is confident "
             "about images that look like nothing to a human.", "", SLIDES_LOSS_NOTE, "",
             "| target | " + " | ".join(str(k) for k in range(10)) + " |",
             "|---" * 11 + "|",
             "| P(target), the slides' loss | " + " | ".join(f"{v:.3f}" for v in p) + " |"]
    if ce:
        lines.append("| P(target), cross-entropy | "
                     + " | ".join(f"{v:.3f}" for v in ce["target_probability"]) + " |")
    lines += ["", f"With the slides' loss {r['n_success']}/10 fake images are classified as their target; "
              f"the smallest target probability is {r['min_target_probability']:.3f}"
              + (f" (cross-entropy: {ce['n_success']}/10, smallest {ce['min_target_probability']:.3f})"
                 if ce else "")
              + f". Lecture: {refs['lecture_fake_prob_0']:.3f} for \"0\" (here {p[0]:.3f}).", ""]
    lines += _img(r["figures"][0], "Fake images from uniform noise with the slides' loss, one per class, "
                  "with the model's prediction vectors (hatched bar: the target).", fig_no)
    lines += _img(r["figures"][1], "The slides' loss of the target class at each step (log scale).",
                  fig_no + 1)
    if len(r["figures"]) > 2:
        lines += _img(r["figures"][2], "The same noise, descending cross-entropy instead.", fig_no + 2)
    return lines


def _robust_table(rows, refs, natural=True):
    head = "| eps (Linf) | FGSM | PGD | worst case | uniform noise |"
    if natural:
        head += " Ross & Doshi-Velez, natural model, FGSM |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    ross = dict(zip(refs["ross_eps"], refs["ross_normal_fgsm"]))
    for x in rows:
        line = (f"| {x['eps']:g} | {_pct(x['fgsm'])} | {_pct(x['pgd'])} | {_pct(x['worst_case'])} | "
                f"{_pct(x['noise'])} |")
        if natural:
            ref = next((v for e, v in ross.items() if abs(e - x["eps"]) < 1e-9), None)
            line += f" {_pct(ref) if ref is not None else ''} |"
        lines.append(line)
    return lines


def _md_untargeted(r, refs, fig_no):
    a, rob = r["ascent"], r["robustness"]
    lines = ["**The lecture's attack.** Start at a correctly classified test \"7\" (test image "
             f"#{a['index']}) and climb the loss of its true label: `x <- clip(x + {a['step']:g} * g / max|g|, 0, 1)` "
             f"(the most sensitive pixel moves by {a['step']:g}, the others proportionally), at most "
             f"{a['max_steps']} steps, "
             "stopping as soon as the prediction is wrong.", "",
             f"The \"7\" is classified as **{a['final_pred']}** (probability {a['final_prob']:.3f}) after "
             f"{a['steps_used']} steps; the change has Linf {a['linf']:.3f} and L2 {a['l2']:.2f}. "
             f"On the first {a['n']} test images, the same attack flips {_pct(a['success_rate'])} of the "
             f"{a['n_clean_correct']} correctly classified ones within {a['max_steps']} steps (median "
             f"{_fmt(a['median_steps'], 'g')} steps for those flipped; over all of them, median change "
             f"Linf {_fmt(a['median_linf'])}, L2 {_fmt(a['median_l2'], '.2f')}).", ""]
    lines += _img(r["figures"][0], "The untargeted ascent on a \"7\": the image and the prediction "
                  f"vector after {'/'.join(str(k) for k in a['snapshot_steps'])} steps (a stopped image "
                  "keeps its last state).", fig_no)
    lines += _img(r["figures"][1], "Clean image, the perturbation (colour scale: its own maximum) and "
                  "the adversarial image.", fig_no + 1)
    lines += ["**Robust accuracy against eps.** FGSM (one signed-gradient step, Goodfellow et al. 2015) "
              f"and PGD (Madry et al. 2018: {rob['steps']} steps of 2.5 * eps / steps, uniform random start, "
              f"{rob['restarts']} restart(s)) within the Linf ball of radius eps, on the first {rob['n']} "
              "test images. *Worst case*: an image counts as robust only if it survives every attack and "
              "restart. *Uniform noise*: every pixel moved by a uniform random amount in [-eps, eps] "
              "(then clipped to [0, 1]), for scale.", ""]
    lines += _robust_table(r["rows"], refs)
    at03 = _row_at(r["rows"], 0.3)
    lines += ["", "Reference: naturally trained MNIST CNNs fall to about 0-2% under PGD-40 at eps 0.3"
              + (f"; here {_pct(at03['pgd'])}." if at03 else "."), ""]
    lines += _img(r["figures"][2], "Accuracy of the naturally trained CNN against the Linf radius.", fig_no + 2)
    return lines


def format_shallow_table(table):
    """The shallow-vs-deep table (rows of :func:`scratchadv.demo.shallow_vs_deep_table`) as
    Markdown lines: accuracy, median minimal perturbations, FGSM at eps 0.25."""
    lines = ["| model | test accuracy | images attacked | median minimal Linf | median minimal L2 | "
             "never flipped (Linf / L2) | FGSM error at eps 0.25 | mean confidence of the wrong class |",
             "|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['model']} | {_pct(t['test_accuracy'])} | {t['n_correct']} | {_fmt(t['median_linf'])} | "
                     f"{_fmt(t['median_l2'], '.2f')} | {t['unflipped_linf']} / {t['unflipped_l2']} | "
                     f"{_pct(t['fgsm025_error'])} | {_fmt(t['fgsm025_mean_confidence_wrong'])} |")
    return lines


def format_minimal_norms_table(rows, attacks):
    """The minimal-norm comparison (rows of
    :func:`scratchadv.evaluate.minimal.minimal_norms_by_model`) as Markdown lines: per model
    and norm, each attack's median perturbation and which is smallest ("—": the attack does
    not run in that norm, e.g. CW in Linf)."""
    lines = ["| model | norm | images attacked | " + " | ".join(attacks) + " | smallest |",
             "|---" * (len(attacks) + 4) + "|"]
    for r in rows:
        cells = [_fmt(r["by_attack"][a]["median"], ".4g") if a in r["by_attack"] else "—" for a in attacks]
        lines.append(f"| {r['model']} | {r['norm']} | {r['n_correct']} | " + " | ".join(cells)
                     + f" | {r.get('smallest', 'n/a')} |")
    return lines


def _md_shallow(r, refs, fig_no):
    lines = ["The lecture's claim: shallow networks are more robust, an attacker needs a larger "
             "perturbation to fool them than to fool a deep one. To measure it, for each "
             f"of the first {r['n']} test images that a model classifies correctly, the smallest radius "
             f"at which PGD ({r['pgd_steps']} steps of 2.5 * eps / steps, random start) flips the "
             f"prediction is found by bisection ({r['search_steps']} halvings of [0, {r['max_linf']:g}] "
             f"for Linf, [0, {r['max_l2']:g}] for L2); the table gives the median size of the "
             "adversarial images found (an image never flipped counts as infinitely far). "
             "All three models are trained the same way (RMSprop, "
             "batch 128, same epochs and seed). The last two columns repeat Goodfellow et al. (2015)'s "
             "experiment: FGSM at eps 0.25.", ""]
    lines += format_shallow_table(r["table"])
    lines += ["", f"Goodfellow et al. (2015) report, for FGSM at eps 0.25 on MNIST, an error of "
              f"{_pct(refs['goodfellow_softmax_fgsm025_error'])} (mean confidence "
              f"{refs['goodfellow_softmax_fgsm025_confidence']:.3f}) for a shallow softmax "
              f"classifier and {_pct(refs['goodfellow_maxout_fgsm025_error'])} (mean confidence "
              f"{refs['goodfellow_maxout_fgsm025_confidence']:.3f}) for a maxout network: "
              "by their account a linear model is not robust merely for being shallow.", ""]
    by = {t["architecture"]: t for t in r["table"]}
    if all(k in by for k in ("softmax-v1", "lecture-cnn-v1")) and by["softmax-v1"]["median_linf"] is not None \
            and by["lecture-cnn-v1"]["median_linf"] is not None:
        s_, c_ = by["softmax-v1"], by["lecture-cnn-v1"]
        lines += [("Here the shallow model **does** need the larger Linf perturbation "
                   if s_["median_linf"] > c_["median_linf"] else
                   "Here the shallow model does **not** need a larger Linf perturbation ")
                  + f"(median {s_['median_linf']:.3f} for softmax regression vs {c_['median_linf']:.3f} "
                  f"for the CNN; L2 {_fmt(s_['median_l2'], '.2f')} vs {_fmt(c_['median_l2'], '.2f')}).", ""]
    lines += _img(r["figures"][0], "Fraction of correctly classified test images flipped by a "
                  "perturbation of at most the given size (dotted: medians).", fig_no)
    lines += _md_minimal_norms(r.get("minimal_norms"))
    return lines


_MINIMAL_NAMES = {"pgd": "bisection over PGD", "deepfool": "DeepFool", "cw": "CW-L2", "fab": "FAB"}


def _md_minimal_norms(m):
    """Section 4's second part: which minimal-norm attack comes closest, per model and norm."""
    if not m:
        return []
    names = [_MINIMAL_NAMES.get(a, a) for a in m["attacks"]]
    names = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    lines = ["**Which attack finds the smallest perturbation?** Each of the sizes above is an upper "
             "bound of an image's distance to the decision boundary, only as good as the attack that "
             f"found it. On the first {m['n']} test images, the same for all of them, {names} are run "
             "on each model without a radius; each returns the smallest perturbation it found that "
             "flips the prediction (classified again here before it counts; an image not flipped "
             f"counts as infinitely far). Bisection: the search above ({m['search_steps']} halvings, "
             f"PGD-{m['pgd_steps']}); DeepFool (Moosavi-Dezfooli et al. 2016): 50 steps, overshoot "
             f"0.02; CW-L2 (Carlini & Wagner 2017): {m['cw_binary_steps']} binary-search steps of "
             f"{m['cw_steps']} Adam steps (lr 0.01, abort-early), L2 only"
             + ("; FAB (Croce & Hein 2020): 100 steps" if "fab" in m["attacks"] else "")
             + ". The table gives the median over the images a model classifies correctly; "
             "the smaller, the stronger the attack.", ""]
    lines += format_minimal_norms_table(m["rows"], m["attacks"])
    lines += ["", "Smallest median perturbation: " + "; ".join(
        f"{model}: " + ", ".join(f"{_MINIMAL_NAMES.get(a, a)} ({norm})" for norm, a in v.items())
        for model, v in m["smallest"].items()) + ".", ""]
    return lines


_GRID_NAMES = {"lecture-l1": "slides' loss, L1 penalty", "l1": "CE, L1 penalty", "l2": "CE, L2 penalty"}


def _md_targeted(r, refs, fig_no):
    lines = ["The lecture's targeted attack minimises `L(target, f(x')) + lam * mean|x' - x|` (L1 "
             "penalty) or `+ lam * mean (x' - x)^2` (L2 penalty) by gradient descent from the real "
             f"image, clipped to [0, 1]: lam {r['lam']:g} (the lecture's), {r['steps']} steps of "
             f"learning rate {r['lr']:g}. The penalty keeps the image close to the original instead "
             "of a hard eps-ball. The slides' code uses L = the swapped binary cross-entropy of "
             "section 2 (about 3.22 (1 - p_target)), which weighs less against the penalty than "
             "cross-entropy does where p_target is small; both are shown.", "",
             f"One \"7\" (test image #{r['index']}) pushed to each class:", "",
             "| target | " + " | ".join(str(k) for k in range(10)) + " |", "|---" * 11 + "|"]
    for key, g in r["grid"].items():
        name = _GRID_NAMES.get(key, f"CE, {key.upper()} penalty")
        lines.append(f"| P(target), {name} | " + " | ".join(f"{v:.2f}" for v in g["target_probability"]) + " |")
        lines.append(f"| L2 of the change, {name} | " + " | ".join(f"{v:.2f}" for v in g["l2"]) + " |")
    lines += ["", f"On the first {r['n']} test images, each towards a random wrong class: the success "
              f"rate is the fraction classified as the target among the {r['n_attacked']} correctly "
              "classified images, and the perturbation sizes are medians over the same images "
              "(as `scratchadv attack --metrics` reports them). The eps-bounded counterpart, targeted PGD in the "
              f"Linf ball of radius {r['pgd_eps']:g} ({r['pgd_steps']} steps), is given for comparison "
              "(project target: >= 99% success).", "",
              "| attack | success rate | median L1 | median L2 | median Linf |", "|---|---|---|---|---|"]
    names = {"penalty-lecture-l1": f"penalty, the slides' loss, L1 (lam {r['lam']:g})",
             "penalty-l1": f"penalty, CE, L1 (lam {r['lam']:g})", "penalty-l2": f"penalty, CE, L2 (lam {r['lam']:g})",
             "pgd-linf": f"targeted PGD, Linf eps {r['pgd_eps']:g}"}
    for k, v in r["stats"].items():
        lines.append(f"| {names.get(k, k)} | {_pct(v['success_rate'])} | {_fmt(v['median_l1'], '.2f')} | "
                     f"{_fmt(v['median_l2'], '.2f')} | {_fmt(v['median_linf'])} |")
    lines.append("")
    captions = {"lecture-l1": "One \"7\" pushed to each class as the slides' code does (their loss, L1 "
                              "penalty; hatched bar: the target; outlined: the true class).",
                "l1": "The same with cross-entropy and the L1 penalty.",
                "l2": "The same with cross-entropy and the squared-L2 penalty."}
    for k, (key, fig) in enumerate(zip(r["grid"], r["figures"])):
        lines += _img(fig, captions.get(key, f"The {key} grid."), fig_no + k)
    return lines


def _sanity_lines(sanity):
    return [f"- {'passed' if c['passed'] else '**FAILED**'}: {c['name']} ({c['detail']})" for c in sanity]


def _defense_table(rows, ref_rows=None):
    """rows: defended model; ref_rows: the natural model's, shown beside it."""
    head = "| eps (Linf) | FGSM | PGD | worst case |"
    if ref_rows:
        head += " natural: FGSM | natural: PGD |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for x in rows:
        line = f"| {x['eps']:g} | {_pct(x['fgsm'])} | {_pct(x['pgd'])} | {_pct(x['worst_case'])} |"
        if ref_rows:
            n = _row_at(ref_rows, x["eps"])
            line += f" {_pct(n['fgsm']) if n else ''} | {_pct(n['pgd']) if n else ''} |"
        lines.append(line)
    return lines


_AA_ATTACKS = (("apgd-ce", "APGD-CE"), ("apgd-t", "APGD-T"), ("fab-t", "FAB-T"), ("square", "Square"))


def _aa_table(models):
    """models: [(label, AutoAttack summary)] -> the AutoAttack table's Markdown lines."""
    lines = ["| model | clean | " + " | ".join(f"after {n}" for _, n in _AA_ATTACKS)
             + " | FGSM | FGSM/PGD worst case, same images |", "|---" * (len(_AA_ATTACKS) + 4) + "|"]
    for label, a in models:
        lines.append(f"| {label} | {_pct(a['clean_accuracy'])} | "
                     + " | ".join(_pct(a["after"].get(k)) for k, _ in _AA_ATTACKS)
                     + f" | {_pct(a['fgsm'])} | {_pct(a['pgd_worst_case'])} |")
    return lines


def _square_line(a):
    if a["square_warning"] is None:
        return "AutoAttack did not run: no image was classified correctly."
    if a["square_warning"]:
        return ("**Square warning**: Square, which never reads a gradient, lowered the accuracy the "
                "white-box attacks had left: their gradients may be masked, and the robust accuracy is "
                "an upper bound that a stronger attack may lower further.")
    return ("No Square warning: Square, which never reads a gradient, found nothing the white-box "
            "attacks had missed.")


def _gap_text(a):
    """AutoAttack against the FGSM/PGD worst case on the same images, as a clause."""
    if a["pgd_worst_case"] is None:
        return ""
    gap = 100 * (a["pgd_worst_case"] - a["robust_accuracy"])
    if abs(gap) < 1e-9:
        return ", as many as the FGSM/PGD worst case on the same images"
    if gap > 0:
        return f", {gap:.1f} points below the FGSM/PGD worst case on the same images"
    return (f", **{-gap:.1f} points more** than the FGSM/PGD worst case on the same images "
            "(PGD's random starts found images AutoAttack missed)")


def _closing_line(a):
    c = a.get("closing_check")
    if not c:
        return ""
    return (f" Closing check: largest perturbation {c['max_perturbation']:.4f} (eps {c['eps']:g}), "
            f"{'within' if c['within_eps'] else '**outside**'} the ball, "
            f"{'in' if c['in_range'] else '**outside**'} [0, 1], {c['nan']} NaN, labels "
            f"{'consistent' if c['labels_consistent'] else '**inconsistent**'}.")


def _md_autoattack(a, label, natural=None):
    """The AutoAttack paragraph, table, Square warning and sanity checks of one model;
    ``natural``: the natural model's summary, a row beside it."""
    if not a:
        return []
    lines = [f"**AutoAttack** at Linf eps {a['eps']:g} on the first {a['n']} test images (Croce & Hein "
             "2020, standard version: APGD-CE; APGD-T and FAB-T on the 9 highest-ranked wrong classes; "
             "Square, 5000 queries; each on the images still robust): the accuracy left after each "
             "attack, the last being AutoAttack's robust accuracy, with FGSM (for the sanity checks) and "
             "the FGSM/PGD worst case above on the same images beside it.", ""]
    lines += _aa_table([(label, a)] + ([("natural", natural)] if natural else []))
    lines += ["", f"AutoAttack leaves {_pct(a['robust_accuracy'])} of the {a['n']} images robust"
              + _gap_text(a) + f" ({a['seconds']:.0f} s). " + _square_line(a) + _closing_line(a), ""]
    lines += ["Sanity checks of the AutoAttack evaluation (the doubled-steps check runs APGD-CE "
              "with 100 and 200 steps; the last one is AutoAttack's Square warning):", ""]
    lines += _sanity_lines(a["sanity"]) + [""]
    return lines


def _md_defense_common(r, natural_rows, natural_aa=None):
    c = r["config"]
    lines = [f"Trained for {c['epochs']} epochs on {c['n_train']:,} images (RMSprop, batch "
             f"{c['batch_size']}, seed {c['seed']}); evaluated like the natural model in section 3.", "",
             f"Clean accuracy on the evaluation images: **{_pct(r['clean_accuracy'])}** "
             f"(validation accuracy after the last epoch: {_pct(r['val_accuracy'])}).", ""]
    lines += _defense_table(r["rows"], natural_rows)
    lines += ["", "Sanity checks (Carlini et al. 2019; Athalye et al. 2018): a defense that fails them "
              "is likely masking gradients rather than being robust.", ""]
    lines += _sanity_lines(r["sanity"]) + [""]
    lines += _md_autoattack(r.get("autoattack"), r.get("label", "this model"), natural_aa)
    return lines


def _md_adv(r, refs, fig_no, nat):
    """nat: the natural model's robust-accuracy rows (section 3), shown beside this model's."""
    c = r["config"]
    lines = ["Madry et al. (2018): `min_W E[max_{||d||_inf <= eps} loss(W, x + d, y)]`. Every mini-batch "
             f"is replaced by PGD images of the current weights (eps {c['eps']:g}, {c['pgd_steps']} steps "
             f"of {c['pgd_step_size']:.4g}, uniform random start"
             + (f", {c['clean_frac']:.0%} clean images" if c.get("clean_frac") else "")
             + (f", eps warm-up over {c['eps_warmup']} epochs" if c.get("eps_warmup") else "")
             + "), then the weights take the usual step on them with the true labels.", ""]
    lines += _md_defense_common({**r, "label": "PGD-trained"}, nat, r.get("autoattack_natural"))
    a1 = _row_at(r["rows"], 0.1)
    if a1:
        lines += [f"Project targets for this model (eps 0.1): clean >= 98.0% (here {_pct(r['clean_accuracy'])}), "
                  f"worst case over FGSM and PGD at eps 0.1 >= 90% (here {_pct(a1['worst_case'])}). For scale, "
                  f"Madry et al. reach about {_pct(refs['madry_pgd03'])} at eps 0.3 with a larger network "
                  "trained at eps 0.3.", ""]
    if r.get("autoattack"):
        tr, at = r["config"]["eps"], r["autoattack"]["eps"]
        lines += [f"Croce & Hein (2020) report AutoAttack at eps 0.3 for Madry et al.'s MNIST model "
                  f"({_pct(refs['croce_madry_aa03'])}) and for TRADES's ({_pct(refs['croce_trades_aa03'])}), "
                  "networks larger than this one, trained at eps 0.3; the models here are "
                  + (f"trained and attacked at eps {tr:g}." if abs(tr - at) < 1e-12 else
                     f"trained at eps {tr:g} and attacked at eps {at:g}."), ""]
    lines += _img(r["figures"][0], "Accuracy of the PGD-trained CNN against the Linf radius.", fig_no)
    t = r.get("trades")
    if t:
        lines += _md_trades(t, nat, r["figures"][1], fig_no + 1)
    return lines


def _md_trades(t, nat, fig, fig_no):
    """Section 6's TRADES part."""
    c = t["config"]
    lines = ["### TRADES", "",
             "Zhang et al. (2019), as their code computes it: minimise `CE(f(x), y) + beta * "
             "KL(softmax f(x) || softmax f(x'))` with beta "
             f"{c['beta']:g}, x' the point of largest KL in the Linf ball of radius {c['eps']:g} "
             f"({c['pgd_steps']} sign steps of {c['pgd_step_size']:.4g} on the current weights from "
             "x + 0.001 * N(0, 1), then a constant); the weights are differentiated through both the "
             "clean and the adversarial branch. The inner loop has the length and step rule of the PGD "
             "training above, so the two differ in their objective, not in the strength of their inner "
             "attack (the authors' MNIST script: 40 steps of 0.01 at eps 0.3). Same data, epochs, batch "
             "size and seed as the PGD-trained model.", ""]
    lines += _md_defense_common({**t, "label": "TRADES"}, nat)
    lines += _img(fig, "Accuracy of the TRADES-trained CNN against the Linf radius.", fig_no)
    return lines


def _md_gradreg(r, refs, fig_no, nat):
    """nat: the natural model's robust-accuracy rows (section 3), shown beside this model's."""
    c = r["config"]
    lines = ["Drucker & LeCun (1992); Ross & Doshi-Velez (2018): minimise "
             f"`CE + lam * mean_i ||d loss_i / d x_i||^2` with lam {c['lam']:g}, the penalty being the "
             "batch mean of each example's own squared input-gradient norm. Its gradient with respect "
             "to the weights is taken by differentiating the input gradient again (double "
             "backpropagation) through the same primitives.", ""]
    lines += _md_defense_common({**r, "label": "gradient-regularized"}, nat)
    lines += ["Ross & Doshi-Velez (2018), FGSM accuracy on MNIST:", "",
              "| eps | this run: natural | this run: gradreg | theirs: natural | theirs: double backprop | "
              "theirs: FGSM adversarial training |", "|---|---|---|---|---|---|"]
    for e, n0, d0, a0 in zip(refs["ross_eps"], refs["ross_normal_fgsm"], refs["ross_doubleback_fgsm"],
                             refs["ross_fgsm_advtrain_fgsm"]):
        mine = _row_at(r["rows"], e)
        natr = _row_at(nat, e) if nat else None
        lines.append(f"| {e:g} | {_pct(natr['fgsm']) if natr else ''} | {_pct(mine['fgsm']) if mine else ''} | "
                     f"{_pct(n0)} | {_pct(d0)} | {_pct(a0)} |")
    lines += [""]
    lines += _img(r["figures"][0], "Accuracy of the gradient-regularized CNN against the Linf radius.", fig_no)
    comp = r.get("comparison") or {}
    if comp:
        lines += _md_comparison(comp, r["figures"][1:3], fig_no + 1)
    return lines


def _checks_cell(sanity):
    nfail = sum(not x["passed"] for x in sanity)
    return "all passed" if not nfail else f"{nfail} failed"


def _md_comparison(comp, figs, fig_no):
    """Section 7's comparison of every model: worst case against eps, AutoAttack, checks."""
    aa = next((m["autoattack"] for m in comp.values() if m.get("autoattack")), None)
    head = ("| model | clean | " + " | ".join(f"worst case eps {e:g}" for e in (0.1, 0.2, 0.3))
            + (f" | AutoAttack eps {aa['eps']:g} ({aa['n']} images) | worst case eps {aa['eps']:g}, "
               "same images" if aa else "")
            + " | sanity checks |" + (" AutoAttack sanity checks |" if aa else ""))
    count = {2: "two", 3: "three", 4: "four"}.get(len(comp), str(len(comp)))
    lines = [f"### The {count} models side by side", "", head, "|---" * (head.count("|") - 1) + "|"]
    for name, m in comp.items():
        cells = [(_pct(_row_at(m["rows"], e)["worst_case"]) if _row_at(m["rows"], e) else "") for e in (0.1, 0.2, 0.3)]
        a = m.get("autoattack")
        if aa:
            cells += ([_pct(a["robust_accuracy"]) + (" (Square warning)" if a["square_warning"] else ""),
                       _pct(a["pgd_worst_case"])] if a else ["", ""])
        cells.append(_checks_cell(m["sanity"]))
        if aa:
            cells.append(_checks_cell(a["sanity"]) if a else "")
        lines.append(f"| {name} | {_pct(m['clean_accuracy'])} | " + " | ".join(cells) + " |")
    nat = comp.get("natural", {})
    lines += ["", "Sanity checks of the natural model:", ""] + _sanity_lines(nat.get("sanity", [])) + [""]
    if nat.get("autoattack"):
        lines += ["Sanity checks of the natural model's AutoAttack evaluation:", ""]
        lines += _sanity_lines(nat["autoattack"]["sanity"]) + [""]
    lines += _img(figs[0], f"Worst-case (solid) and FGSM (dashed) accuracy against the Linf "
                  f"radius for the {count} models (also in comparison.md / comparison.json).", fig_no)
    lines += _img(figs[1], ("Clean validation accuracy and training objective per epoch. Each model minimises its own "
                            "objective: cross-entropy (natural), cross-entropy on the PGD images (pgd-trained), "
                            "cross-entropy + beta * KL(clean || adversarial) (trades), cross-entropy + lam * "
                            "squared input-gradient norm (gradreg), so their heights are not comparable; their "
                            "trends are."), fig_no + 1)
    return lines


_MD = {"train": _md_train, "fake": _md_fake, "untargeted": _md_untargeted,
       "shallow_vs_deep": _md_shallow, "targeted": _md_targeted}
_MD_DEFENSE = {"adversarial_training": _md_adv, "gradient_regularization": _md_gradreg}


def _beside_text(beside):
    """'; sections 2, 4 and 5 ran in a second process beside the others' for the run-time line."""
    if not beside:
        return ""
    nums = [str(SECTIONS.index(k) + 1) for k in SECTIONS if k in beside]
    which = nums[0] if len(nums) == 1 else ", ".join(nums[:-1]) + " and " + nums[-1]
    return f"; section{'s' if len(nums) > 1 else ''} {which} ran in a second process, beside the others"


def format_readme(results):
    """The report as Markdown, a pure function of ``results`` (the content of results.json)."""
    refs = {**REFERENCES, **results.get("references", {})}
    mode = "quick" if results.get("quick") else "full"
    secs = results.get("sections", {})
    lines = ["# scratchadv demo: evasion attacks on MNIST, from the lecture", "",
             "A convolutional network built from scratch in NumPy and differentiated with `autograd` "
             "is trained on MNIST, attacked (fake images, gradient ascent, FGSM, PGD, the targeted "
             "penalty attack, the minimal-norm attacks), defended (adversarial training with PGD and "
             "TRADES, gradient regularization) and the defenses evaluated with FGSM/PGD and AutoAttack, "
             "following the lecture section by section. Every number below was measured by this run.", "",
             f"- command: `{results.get('command', 'scratchadv demo')}`",
             f"- mode: **{mode}**" + (" (smaller subsets, fewer epochs and attack steps: a smoke test; "
                                      "its numbers are not comparable to the references)" if mode == "quick" else ""),
             f"- scratchadv {results.get('library_version')}, seed {results.get('seed')}, "
             f"worker processes {results.get('workers', 1)}, finished {results.get('finished', 'n/a')}",
             f"- run time: {results.get('seconds', 0):.0f} s"
             + (" (" + ", ".join(f"section {i + 1} {secs[k]['seconds']:.0f} s" for i, k in enumerate(SECTIONS)
                                 if k in secs) + ")" if secs else "")
             + _beside_text(results.get("beside") or []),
             f"- models cached in `{results.get('cache')}`"]
    trained = _training_times(secs)
    if trained:
        lines.append("- training time per model: " + ", ".join(
            f"{name} {sec:.0f} s" + (" (cached, measured when it was trained)" if reused else "")
            for name, sec, reused in trained))
    lines.append("")
    missing = [k for k in SECTIONS if k not in secs]
    if missing:
        lines += [f"**Incomplete report**: sections not yet run: {', '.join(TITLES[k] for k in missing)}.", ""]
    lines += ["Contents: " + " · ".join(f"[{TITLES[k]}](#{_anchor(TITLES[k])})" for k in SECTIONS if k in secs), ""]
    fig_no = 1
    for k in SECTIONS:
        if k not in secs:
            continue
        r = secs[k]
        lines += [f"## {TITLES[k]}", "", f"> {r['summary']}", ""]
        if k in _MD:
            lines += _MD[k](r, refs, fig_no)
        else:
            lines += _MD_DEFENSE[k](r, refs, fig_no, secs.get("untargeted", {}).get("rows"))
        fig_no += len(r.get("figures", []))
    lines += ["## Settings", "", f"The {mode} preset (`scratchadv.demo.PRESETS[{mode!r}]`):", "",
              "| setting | value | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | {v} | {SETTING_DOCS.get(k, '')} |" for k, v in results.get("settings", {}).items()]
    lines += ["", "Files: `results.json` (every number above), `evaluation-<model>.json` (full "
              "robustness reports with per-image results; `scratchadv compare` reads them), "
              "`comparison.md`, and the figures.", ""]
    return "\n".join(lines)


def _training_times(secs):
    """[(model, seconds of training, reused from the cache?)] from the sections' results."""
    out = []
    rows = [("natural", secs.get("train"))]
    rows += [(t["model"], t) for t in secs.get("shallow_vs_deep", {}).get("table", []) if "reused_cache" in t]
    adv = secs.get("adversarial_training") or {}
    rows += [("pgd-trained", adv), ("trades", adv.get("trades")), ("gradreg", secs.get("gradient_regularization"))]
    for name, r in rows:
        if r and r.get("trained_seconds") is not None:
            out.append((name, r["trained_seconds"], bool(r.get("reused_cache"))))
    return out


def _anchor(title):
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return keep.replace(" ", "-")

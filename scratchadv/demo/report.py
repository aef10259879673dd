"""The demo's report: ``README.md`` as a pure function of ``results.json``.

:func:`format_readme` reads nothing but the results dict (what :mod:`.run` stores in
results.json), so a report can be re-made, or its wording changed, without training or
attacking anything. One ``_md_<section>`` function per section gives its Markdown lines.
"""
import os

import numpy as onp

from .settings import REFERENCES, SECTIONS, SETTING_DOCS, TITLES

__all__ = ["format_readme", "format_shallow_table"]


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


def _md_defense_common(r, natural_rows):
    c = r["config"]
    lines = [f"Trained for {c['epochs']} epochs on {c['n_train']:,} images (RMSprop, batch "
             f"{c['batch_size']}, seed {c['seed']}); evaluated like the natural model in section 3.", "",
             f"Clean accuracy on the evaluation images: **{_pct(r['clean_accuracy'])}** "
             f"(validation accuracy after the last epoch: {_pct(r['val_accuracy'])}).", ""]
    lines += _defense_table(r["rows"], natural_rows)
    lines += ["", "Sanity checks (Carlini et al. 2019; Athalye et al. 2018): a defense that fails them "
              "is likely masking gradients rather than being robust.", ""]
    lines += _sanity_lines(r["sanity"]) + [""]
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
    lines += _md_defense_common(r, nat)
    a1 = _row_at(r["rows"], 0.1)
    if a1:
        lines += [f"Project targets for this model (eps 0.1): clean >= 98.0% (here {_pct(r['clean_accuracy'])}), "
                  f"worst case over FGSM and PGD at eps 0.1 >= 90% (here {_pct(a1['worst_case'])}). For scale, "
                  f"Madry et al. reach about {_pct(refs['madry_pgd03'])} at eps 0.3 with a larger network "
                  "trained at eps 0.3.", ""]
    lines += _img(r["figures"][0], "Accuracy of the PGD-trained CNN against the Linf radius.", fig_no)
    return lines


def _md_gradreg(r, refs, fig_no, nat):
    """nat: the natural model's robust-accuracy rows (section 3), shown beside this model's."""
    c = r["config"]
    lines = ["Drucker & LeCun (1992); Ross & Doshi-Velez (2018): minimise "
             f"`CE + lam * mean_i ||d loss_i / d x_i||^2` with lam {c['lam']:g}, the penalty being the "
             "batch mean of each example's own squared input-gradient norm. Its gradient with respect "
             "to the weights is taken by differentiating the input gradient again (double "
             "backpropagation) through the same primitives.", ""]
    lines += _md_defense_common(r, nat)
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
        lines += ["### The three models side by side", "",
                  "| model | clean | " + " | ".join(f"worst case eps {e:g}" for e in (0.1, 0.2, 0.3)) + " | sanity checks |",
                  "|---|---|---|---|---|---|"]
        for name, m in comp.items():
            cells = [(_pct(_row_at(m["rows"], e)["worst_case"]) if _row_at(m["rows"], e) else "") for e in (0.1, 0.2, 0.3)]
            ok = all(x["passed"] for x in m["sanity"])
            nfail = sum(not x["passed"] for x in m["sanity"])
            lines.append(f"| {name} | {_pct(m['clean_accuracy'])} | " + " | ".join(cells)
                         + f" | {'all passed' if ok else f'{nfail} failed'} |")
        lines += ["", "Sanity checks of the natural model:", ""] + _sanity_lines(comp.get("natural", {}).get("sanity", [])) + [""]
        lines += _img(r["figures"][1], "Worst-case (solid) and FGSM (dashed) accuracy against the Linf "
                      "radius for the three models (also in comparison.md / comparison.json).", fig_no + 1)
        lines += _img(r["figures"][2], ("Clean validation accuracy and training objective per epoch. Each model minimises its own "
                                                 "objective: cross-entropy (natural), cross-entropy on the PGD images (pgd-trained), "
                                                 "cross-entropy + lam * squared input-gradient norm (gradreg), so their heights "
                                                 "are not comparable; their trends are."), fig_no + 2)
    return lines


_MD = {"train": _md_train, "fake": _md_fake, "untargeted": _md_untargeted,
       "shallow_vs_deep": _md_shallow, "targeted": _md_targeted}
_MD_DEFENSE = {"adversarial_training": _md_adv, "gradient_regularization": _md_gradreg}


def format_readme(results):
    """The report as Markdown, a pure function of ``results`` (the content of results.json)."""
    refs = {**REFERENCES, **results.get("references", {})}
    mode = "quick" if results.get("quick") else "full"
    secs = results.get("sections", {})
    lines = ["# scratchadv demo: evasion attacks on MNIST, from the lecture", "",
             "A convolutional network built from scratch in NumPy and differentiated with `autograd` "
             "is trained on MNIST, attacked (fake images, gradient ascent, FGSM, PGD, the targeted "
             "penalty attack) and defended (adversarial training, gradient regularization), "
             "following the lecture section by section. Every number below was measured by this run.", "",
             f"- command: `{results.get('command', 'scratchadv demo')}`",
             f"- mode: **{mode}**" + (" (smaller subsets, fewer epochs and attack steps: a smoke test; "
                                      "its numbers are not comparable to the references)" if mode == "quick" else ""),
             f"- scratchadv {results.get('library_version')}, seed {results.get('seed')}, "
             f"finished {results.get('finished', 'n/a')}",
             f"- run time: {results.get('seconds', 0):.0f} s"
             + (" (" + ", ".join(f"section {i + 1} {secs[k]['seconds']:.0f} s" for i, k in enumerate(SECTIONS)
                                 if k in secs) + ")" if secs else ""),
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
    rows += [("pgd-trained", secs.get("adversarial_training")), ("gradreg", secs.get("gradient_regularization"))]
    for name, r in rows:
        if r and r.get("trained_seconds") is not None:
            out.append((name, r["trained_seconds"], bool(r.get("reused_cache"))))
    return out


def _anchor(title):
    keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return keep.replace(" ", "-")

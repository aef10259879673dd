"""The demo's seven sections: computation only.

Each ``section_<name>(ctx)`` takes the run context (settings, seed, data, output
folder, the models and reports of earlier sections) and returns a JSON-ready dict with a
one-line ``summary`` and the ``figures`` it wrote (file names inside the report folder),
drawn by :mod:`scratchadv.plots`. The words around the numbers are :mod:`.report`'s.
The work is done by :mod:`~scratchadv.train` (through :mod:`~scratchadv.cache`),
:mod:`~scratchadv.attacks`, :mod:`~scratchadv.defenses` and :mod:`~scratchadv.evaluate`.

Randomness: section k draws from ``default_rng([seed, k])`` (or streams derived from
``[seed, k, ...]``), so its numbers do not depend on which other sections ran.
"""
import os

import numpy as onp

from ..cache import cached_fit
from ..fileio import atomic_write_json
from ..plots import (plot_defense_training, plot_learning_curves, plot_loss_per_step,
                     plot_minimal_perturbations)
from .report import _pct, _row_at
from .settings import REFERENCES

__all__ = ["SECTION_FUNCTIONS", "section_train", "section_fake", "section_untargeted",
           "section_shallow_vs_deep", "shallow_vs_deep_table", "section_targeted",
           "section_adversarial_training", "section_gradient_regularization"]


def _median(v):
    v = onp.asarray(v, dtype=onp.float64)
    return float(onp.median(v)) if len(v) else None


def _rng(ctx, section):
    """Each section draws from its own stream: its numbers do not depend on the others."""
    return onp.random.default_rng([ctx["seed"], section])


def _figure(ctx, name):
    """Absolute path of file ``name`` in the report folder."""
    return os.path.join(ctx["out"], name)


def _test_seven(params, predict_fn, x, y):
    """Index of the first test "7" the model classifies correctly (the lecture's example)."""
    from ..model import predict_batched
    idx = onp.flatnonzero(y == 7)[:50]
    pred = onp.argmax(predict_batched(params, x[idx], predict_fn=predict_fn), 1)
    ok = idx[pred == 7]
    return int(ok[0] if len(ok) else idx[0])


def section_train(ctx):
    """1. The lecture CNN with RMSprop, batch 128, 10 epochs; test set as validation data."""
    from ..model import ARCHITECTURE, accuracy, predict
    s = ctx["settings"]
    x_tr, y_tr = ctx["x_train"][:s["n_train"]], ctx["y_train"][:s["n_train"]]
    x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
    # one process (with the demo's threads, which change no result): the lecture's model,
    # the weights `scratchadv train --epochs 10` gives; worker processes buy it nothing here
    params, history, info = cached_fit("natural", ARCHITECTURE, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                       epochs=s["epochs"], batch_size=s["batch_size"], seed=ctx["seed"],
                                       cache=ctx["cache"], verbose=ctx["verbose"])
    ctx["models"]["natural"] = (params, predict)
    ctx["histories"]["natural"] = history
    train_full = accuracy(params, x_tr, y_tr)
    fig = "fig1-learning-curves.png"
    plot_learning_curves(_figure(ctx, fig), history, ref_train=REFERENCES["lecture_train_acc"],
                         ref_val=REFERENCES["lecture_val_acc"],
                         title=f"lecture CNN, RMSprop, batch {s['batch_size']}, {s['epochs']} epochs "
                               f"on {len(x_tr)} images")
    r = {"train_accuracy": history["accuracy"][-1], "train_accuracy_full_pass": train_full,
         "val_accuracy": history["val_accuracy"][-1], "val_loss": history["val_loss"][-1],
         "history": history, "n_train": len(x_tr), "n_val": len(x_val), "epochs": s["epochs"],
         "batch_size": s["batch_size"], "model": info["path"], "cache_key": info["key"],
         "reused_cache": info["reused"], "train_seconds": info["train_seconds"],
         "trained_seconds": info["trained_seconds"], "seconds_per_epoch": history.get("seconds", []),
         "figures": [fig]}
    r["summary"] = (f"train {_pct(r['train_accuracy'])} / validation {_pct(r['val_accuracy'])} "
                    f"(lecture 99.5% / 99.1%)" + (" [cached model]" if info["reused"] else ""))
    return r


def section_fake(ctx):
    """2. Lecture "Generate Fake Image": from uniform noise, descend the target's loss, weights
    fixed; the slides' own loss (loss="lecture"), and cross-entropy from the same noise beside it."""
    from ..attacks import fake_image
    from ..plots import plot_fake_images
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    targets = onp.arange(10, dtype=onp.int64)
    runs = {loss: fake_image(params, targets, steps=s["fake_steps"], lr=s["fake_lr"], rng=_rng(ctx, 2),
                             predict_fn=predict_fn, verbose=False, loss=loss)
            for loss in ("lecture", "ce")}           # the same noise for both (same generator)
    figs = ["fig2-fake-images.png", "fig2-fake-loss.png", "fig2-fake-images-ce.png"]
    res = runs["lecture"]
    plot_fake_images(_figure(ctx, figs[0]), res)
    plot_loss_per_step(_figure(ctx, figs[1]), res.loss_history, targets,
                       title=f"fake images: the slides' loss per step (lr {s['fake_lr']:g}, from uniform noise)")
    plot_fake_images(_figure(ctx, figs[2]), runs["ce"])

    def probs(r):
        return r.probs[onp.arange(10), targets]
    p, pc = probs(res), probs(runs["ce"])
    r = {"steps": s["fake_steps"], "lr": s["fake_lr"], "loss": "lecture", "target_probability": p.tolist(),
         "min_target_probability": float(p.min()), "success": res.success.tolist(),
         "n_success": int(res.success.sum()), "loss_per_step": res.loss_history.T.tolist(),
         "cross_entropy": {"target_probability": pc.tolist(), "min_target_probability": float(pc.min()),
                           "n_success": int(runs["ce"].success.sum()),
                           "loss_per_step": runs["ce"].loss_history.T.tolist()},
         "figures": figs}
    r["summary"] = (f"{r['n_success']}/10 classes reached; P(target) min {p.min():.3f} with the slides' "
                    f"loss, {pc.min():.3f} with cross-entropy; for \"0\" {p[0]:.3f} (lecture 0.998)")
    return r


def section_untargeted(ctx):
    """3. The lecture's normalized gradient ascent on a "7", then FGSM/PGD robust accuracy vs eps."""
    from ..attacks import gradient_ascent, summarize
    from ..evaluate import evaluate_model, plot_report
    from ..model import predict_batched
    from ..plots import plot_ascent, plot_perturbation
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    x_te, y_te = ctx["x_test"], ctx["y_test"]
    i7 = _test_seven(params, predict_fn, x_te, y_te)
    ctx["seven_index"] = i7
    x7, y7 = x_te[i7:i7 + 1], y_te[i7:i7 + 1]
    snaps = tuple(k for k in (0, 5, 10, 15, 20) if k <= s["ascent_steps"])
    one = gradient_ascent(params, x7, y7, step=s["ascent_step"], steps=s["ascent_steps"],
                          snapshot_steps=snaps, predict_fn=predict_fn)
    figs = ["fig3-ascent.png", "fig3-perturbation.png", "fig3-robust-accuracy.png"]
    plot_ascent(_figure(ctx, figs[0]), x7, one, 0, true=7, steps=snaps, step=s["ascent_step"])
    plot_perturbation(_figure(ctx, figs[1]), x7[0], one.x_adv[0], one.snapshot_probs[0][0], one.probs[0],
                      true=7, title=f"the \"7\" after the ascent ({int(one.steps[0])} steps)")
    n = s["ascent_n"]
    many = gradient_ascent(params, x_te[:n], y_te[:n], step=s["ascent_step"], steps=s["ascent_steps"],
                           snapshot_steps=(), predict_fn=predict_fn, verbose=ctx["verbose"])
    clean_pred = onp.argmax(predict_batched(params, x_te[:n], predict_fn=predict_fn), 1)
    summary = summarize(many, y_te[:n], clean_pred)
    flipped = many.success & (clean_pred == y_te[:n])
    ascent = {"index": i7, "step": s["ascent_step"], "max_steps": s["ascent_steps"],
              "snapshot_steps": list(snaps), "steps_used": int(one.steps[0]), "success": bool(one.success[0]),
              "final_pred": int(one.pred[0]), "final_prob": float(one.probs[0].max()),
              "linf": float(one.linf[0]), "l2": float(one.l2[0]),
              "probs_by_step": {str(k): v[0].tolist() for k, v in one.snapshot_probs.items()},
              "n": n, "n_clean_correct": summary["attacked"], "success_rate": summary["success_rate"],
              "median_steps": _median(many.steps[flipped]), "median_linf": summary["median_linf"],
              "median_l2": summary["median_l2"], "summary": summary}
    print(f"    ascent: the \"7\" (test #{i7}) becomes a {ascent['final_pred']} after "
          f"{ascent['steps_used']} steps; {_pct(ascent['success_rate'])} of {n} images flipped", flush=True)
    ne = s["eval_n"]
    report = evaluate_model(params, x_te[:ne], y_te[:ne], predict_fn=predict_fn, eps_list=s["eval_eps"],
                            attacks=("fgsm", "pgd"), steps=s["eval_steps"], restarts=s["eval_restarts"],
                            seed=ctx["seed"], checks=True, verbose=ctx["verbose"], name="natural",
                            workers=ctx.get("workers", 1))
    ctx["reports"]["natural"] = report
    atomic_write_json(_figure(ctx, "evaluation-natural.json"), report)
    plot_report(report, _figure(ctx, figs[2]))
    rows = _eval_rows(report)
    r = {"ascent": ascent, "robustness": _strip_masks(report), "rows": rows, "figures": figs}
    acc03 = next((x for x in rows if abs(x["eps"] - 0.3) < 1e-9), None)
    r["summary"] = (f"ascent flips {_pct(ascent['success_rate'])} in <= {s['ascent_steps']} steps; "
                    + (f"PGD-{s['eval_steps']} at eps 0.3: {_pct(acc03['pgd'])} (papers: ~0-2%), "
                       f"FGSM {_pct(acc03['fgsm'])}" if acc03 else ""))
    return r


def _strip_masks(report):
    """The report without per-sample masks (they are in evaluation-<name>.json)."""
    out = dict(report)
    out["results"] = [{k: v for k, v in row.items() if k != "masks"} for row in report["results"]]
    return out


def _eval_rows(report):
    return [{"eps": row["eps"], **row["accuracy"]} for row in report["results"]]


def shallow_vs_deep_table(models, x, y, *, x_val, y_val, search_steps, steps, seed, verbose=False):
    """Per model: test accuracy, minimal Linf and L2 perturbation, FGSM at eps 0.25.

    models: ``{label: (params, architecture name)}``, in table order. x: (n, 1, 28, 28)
    float32 test images in [0, 1], y: (n,) int64; only the images a model classifies
    correctly are searched. For each of them the smallest radius at which PGD (``steps``
    steps of 2.5 * eps / steps, random start) flips the prediction is found by bisection
    (``search_steps`` halvings of [0, 1] for Linf, [0, 28] for L2:
    :func:`scratchadv.attacks.minimal_perturbation`); the size of the adversarial found is
    what counts, ``inf`` for an image never flipped. FGSM at eps 0.25 on all n images
    repeats Goodfellow, Shlens & Szegedy (2015), sec. 4. ``x_val``/``y_val``: the images of
    the test accuracy. seed: an int or a sequence of ints; model i and norm j (0: Linf,
    1: L2) draw their random starts from ``default_rng([*seed, i, j])``.

    Returns ``(table, radii)``: table, one JSON-ready row per model (``model``,
    ``architecture``, ``test_accuracy``, ``n_correct``, ``median_/mean_/unflipped_`` +
    ``linf``/``l2``, ``fgsm025_error``, ``fgsm025_mean_confidence_wrong``); radii,
    ``{norm: {label: (n_correct,) sizes}}`` for :func:`scratchadv.plots.plot_minimal_perturbations`.
    """
    from ..attacks import fgsm, minimal_perturbation
    from ..model import accuracy, get_architecture, predict_batched
    key = list(onp.atleast_1d(seed).tolist())
    table, radii = [], {"linf": {}, "l2": {}}
    for mi, (label, (p, arch_name)) in enumerate(models.items()):
        f = get_architecture(arch_name).predict
        ok = onp.argmax(predict_batched(p, x, predict_fn=f), 1) == y    # only these can be flipped
        row = {"model": label, "architecture": arch_name, "test_accuracy": accuracy(p, x_val, y_val, predict_fn=f),
               "n_correct": int(ok.sum())}
        for ni, norm in enumerate(("linf", "l2")):
            res = minimal_perturbation(p, x[ok], y[ok], norm=norm, search_steps=search_steps, steps=steps,
                                       rng=onp.random.default_rng([*key, mi, ni]), predict_fn=f,
                                       verbose=verbose)
            # the size of the adversarial found (<= the bisection radius); inf: never flipped
            size = onp.where(res.success, getattr(res, norm), onp.inf)
            radii[norm][label] = size
            row[f"median_{norm}"] = _median(size)
            fin = size[onp.isfinite(size)]
            row[f"mean_{norm}"] = float(fin.mean()) if len(fin) else None
            row[f"unflipped_{norm}"] = int(onp.sum(~res.success))
        adv = fgsm(p, x, y, eps=0.25, predict_fn=f)
        row["fgsm025_error"] = float(1 - onp.mean(adv.pred == y))
        row["fgsm025_mean_confidence_wrong"] = float(adv.probs[adv.pred != y].max(1).mean()) \
            if onp.any(adv.pred != y) else None
        table.append(row)
    return table, radii


def section_shallow_vs_deep(ctx):
    """4. Median minimal perturbation (Linf, L2) of softmax regression, an MLP and the CNN;
    then, on the first ``minnorm_n`` test images, which minimal-norm attack (bisection over
    PGD, DeepFool, CW-L2) finds the smallest perturbation of each model."""
    from ..evaluate.minimal import minimal_norms_by_model
    s = ctx["settings"]
    x_tr, y_tr = ctx["x_train"][:s["n_train"]], ctx["y_train"][:s["n_train"]]
    x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
    models, infos = {}, {}
    for label, arch_name, cache_name in (("softmax regression", "softmax-v1", "softmax"),
                                         ("MLP (1 hidden layer)", "mlp-v1", "mlp")):
        params, _, infos[label] = cached_fit(cache_name, arch_name, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                             epochs=s["shallow_epochs"], batch_size=s["batch_size"],
                                             seed=ctx["seed"], cache=ctx["cache"], verbose=ctx["verbose"])
        models[label] = (params, arch_name)
    models["lecture CNN"] = (ctx["models"]["natural"][0], "lecture-cnn-v1")   # section 1's model
    n = s["minpert_n"]
    table, radii = shallow_vs_deep_table(models, ctx["x_test"][:n], ctx["y_test"][:n], x_val=x_val, y_val=y_val,
                                         search_steps=s["minpert_search"], steps=s["minpert_steps"],
                                         seed=(ctx["seed"], 4), verbose=ctx["verbose"])
    for row in table:                      # the CNN's training is section 1's
        info = infos.get(row["model"])
        if info is not None:
            row.update(reused_cache=info["reused"], train_seconds=info["train_seconds"],
                       trained_seconds=info["trained_seconds"])
    fig = "fig4-minimal-perturbation.png"
    plot_minimal_perturbations(_figure(ctx, fig), radii,
                               title=f"smallest PGD perturbation that flips each correctly classified image "
                                     f"(first {n} test images)")
    nm = s["minnorm_n"]
    # one int seed for minimal_norms, drawn from this section's stream
    mseed = int(onp.random.default_rng([ctx["seed"], 4, 1]).integers(2 ** 31))
    rows = minimal_norms_by_model(models, ctx["x_test"][:nm], ctx["y_test"][:nm], norms=("l2", "linf"),
                                  attacks=s["minnorm_attacks"], seed=mseed, search_steps=s["minpert_search"],
                                  pgd_steps=s["minpert_steps"], cw_steps=s["minnorm_cw_steps"],
                                  cw_binary_steps=s["minnorm_cw_binary_steps"], verbose=ctx["verbose"])
    minimal = {"n": nm, "attacks": list(s["minnorm_attacks"]), "search_steps": s["minpert_search"],
               "pgd_steps": s["minpert_steps"], "cw_steps": s["minnorm_cw_steps"],
               "cw_binary_steps": s["minnorm_cw_binary_steps"], "rows": rows,
               "smallest": {m: {row["norm"]: row.get("smallest") for row in rows if row["model"] == m}
                            for m in models}}
    r = {"n": n, "search_steps": s["minpert_search"], "pgd_steps": s["minpert_steps"],
         "max_linf": 1.0, "max_l2": 28.0, "table": table, "minimal_norms": minimal, "figures": [fig]}
    r["summary"] = ("median minimal Linf / L2: " + ", ".join(
        f"{t['model'].split(' (')[0]} {_fmt_size(t['median_linf'], '.3f')} / {_fmt_size(t['median_l2'], '.2f')}"
        for t in table)
        + "; smallest median (L2 / Linf): " + ", ".join(
            f"{m.split(' (')[0]} {v.get('l2')} / {v.get('linf')}" for m, v in minimal["smallest"].items()))
    return r


def _fmt_size(v, spec):
    return "n/a" if v is None else format(v, spec)


def section_targeted(ctx):
    """5. Lecture's targeted penalty attack: one "7" to each class; rates on many test images."""
    from ..attacks import default_step_size, penalty_attack, pgd, summarize
    from ..model import predict_batched
    from ..plots import plot_targeted_grid
    s = ctx["settings"]
    params, predict_fn = ctx["models"]["natural"]
    x_te, y_te = ctx["x_test"], ctx["y_test"]
    i7 = ctx.get("seven_index")
    if i7 is None:
        i7 = _test_seven(params, predict_fn, x_te, y_te)
    ten = onp.repeat(x_te[i7:i7 + 1], 10, axis=0)
    targets = onp.arange(10, dtype=onp.int64)
    figs, grid = [], {}
    # the slides' code (their loss, L1 penalty), then cross-entropy with either penalty
    for key, pen, loss in (("lecture-l1", "l1", "lecture"), ("l1", "l1", "ce"), ("l2", "l2", "ce")):
        res = penalty_attack(params, ten, targets, lam=s["penalty_lam"], penalty=pen,
                             steps=s["penalty_steps"], lr=s["penalty_lr"], predict_fn=predict_fn, loss=loss)
        fig = f"fig5-targeted-{key}.png"
        plot_targeted_grid(_figure(ctx, fig), res, true=7, penalty=pen, lam=s["penalty_lam"], loss=loss)
        figs.append(fig)
        grid[key] = {"target_probability": res.probs[onp.arange(10), targets].tolist(),
                     "success": res.success.tolist(), "l1": res.l1.tolist(), "l2": res.l2.tolist(),
                     "linf": res.linf.tolist(), "loss": loss, "penalty": pen}
    n = s["targeted_n"]
    x, y = x_te[:n], y_te[:n]
    t = ((y + _rng(ctx, 5).integers(1, 10, size=n)) % 10).astype(onp.int64)   # a random wrong class
    clean_pred = onp.argmax(predict_batched(params, x, predict_fn=predict_fn), 1)
    stats = {}
    for key, pen, loss in (("penalty-lecture-l1", "l1", "lecture"), ("penalty-l1", "l1", "ce"),
                           ("penalty-l2", "l2", "ce")):
        res = penalty_attack(params, x, t, lam=s["penalty_lam"], penalty=pen, steps=s["penalty_steps"],
                             lr=s["penalty_lr"], predict_fn=predict_fn, verbose=ctx["verbose"], loss=loss)
        stats[key] = summarize(res, y, clean_pred)
    eps, k = s["targeted_pgd_eps"], s["targeted_pgd_steps"]
    res = pgd(params, x, y, eps=eps, steps=k, step_size=default_step_size(eps, k), norm="linf", target=t,
              rng=_rng(ctx, 50), predict_fn=predict_fn, verbose=ctx["verbose"])
    stats["pgd-linf"] = summarize(res, y, clean_pred)
    r = {"index": i7, "lam": s["penalty_lam"], "steps": s["penalty_steps"], "lr": s["penalty_lr"],
         "grid": grid, "n": n, "n_attacked": stats["pgd-linf"]["attacked"], "stats": stats,
         "pgd_eps": s["targeted_pgd_eps"], "pgd_steps": s["targeted_pgd_steps"], "figures": figs}
    g1, g0 = sum(grid["l1"]["success"]), sum(grid["lecture-l1"]["success"])
    r["summary"] = (f"the \"7\" reached {g0}/10 targets with the slides' loss, {g1}/10 with "
                    f"cross-entropy (L1 penalty); on {n} images: "
                    + ", ".join(f"{k} {_pct(v['success_rate'])}" for k, v in stats.items()))
    return r


def defended_models(settings):
    """The defended models of sections 6 and 7, in order: (section, name, defense, options)."""
    s = settings
    return [("adversarial_training", "pgd-trained", "pgd", {"pgd_steps": s["pgd_train_steps"]}),
            ("adversarial_training", "trades", "trades", {"pgd_steps": s["pgd_train_steps"]}),
            ("gradient_regularization", "gradreg", "gradreg", {"lam": s["gradreg_lam"]})]


def train_defended(ctx, name):
    """Defended model ``name`` through the cache -> ``(params, history, info)``; kept in
    ``ctx["trained"]``, so a model trained ahead of its section (the demo does so when other
    sections run beside) is not loaded again there."""
    from ..model import ARCHITECTURE
    done = ctx.setdefault("trained", {})
    if name not in done:
        _, _, defense, options = next(m for m in defended_models(ctx["settings"]) if m[1] == name)
        s = ctx["settings"]
        x_tr, y_tr = ctx["x_train"][:s["defense_n_train"]], ctx["y_train"][:s["defense_n_train"]]
        x_val, y_val = ctx["x_test"][:s["n_val"]], ctx["y_test"][:s["n_val"]]
        done[name] = cached_fit(name, ARCHITECTURE, x_tr, y_tr, x_val=x_val, y_val=y_val,
                                epochs=s["defense_epochs"], batch_size=s["batch_size"],
                                seed=ctx["seed"], defense=defense, defense_options=options,
                                cache=ctx["cache"], verbose=ctx["verbose"],
                                workers=ctx.get("workers", 1))
    return done[name]


def _defense_section(ctx, *, name, number):
    """Train defended model ``name`` through the cache (:func:`train_defended`), evaluate
    it like section 3 (FGSM, PGD, sanity checks) and with AutoAttack
    (:func:`_autoattack_summary`)."""
    from ..evaluate import evaluate_model, plot_report
    from ..model import predict
    s = ctx["settings"]
    params, history, info = train_defended(ctx, name)
    ctx["models"][name] = (params, predict)
    ctx["histories"][name] = history
    ne = s["eval_n"]
    report = evaluate_model(params, ctx["x_test"][:ne], ctx["y_test"][:ne], predict_fn=predict,
                            eps_list=s["eval_eps"], attacks=("fgsm", "pgd"), steps=s["eval_steps"],
                            restarts=s["eval_restarts"], seed=ctx["seed"], checks=True,
                            verbose=ctx["verbose"], name=name, workers=ctx.get("workers", 1))
    ctx["reports"][name] = report
    atomic_write_json(_figure(ctx, f"evaluation-{name}.json"), report)
    fig = f"fig{number}-robust-accuracy-{name}.png"
    plot_report(report, _figure(ctx, fig))
    defense_cfg = {k: v for k, v in info["config"].items()
                   if k not in ("name", "data", "val_data", "n_val")}
    r = {"model": info["path"], "cache_key": info["key"], "reused_cache": info["reused"],
         "train_seconds": info["train_seconds"], "trained_seconds": info["trained_seconds"],
         "config": defense_cfg, "history": history,
         "clean_accuracy": report["clean_accuracy"], "val_accuracy": history["val_accuracy"][-1],
         "robustness": _strip_masks(report), "rows": _eval_rows(report),
         "sanity": report["sanity"], "sanity_passed": all(c["passed"] for c in report["sanity"]),
         "autoattack": _autoattack_summary(ctx, name), "figures": [fig]}
    return r


def _autoattack_report(ctx, name):
    """The standard AutoAttack (suite "autoattack": FGSM + the ensemble, sanity checks) at
    ``aa_eps`` on the first ``aa_n`` test images; once per model and run, also written to
    ``evaluation-<name>-autoattack.json``."""
    from ..evaluate import evaluate_model
    done = ctx["aa_reports"]
    if name not in done:
        s = ctx["settings"]
        params, predict_fn = ctx["models"][name]
        n = s["aa_n"]
        done[name] = evaluate_model(params, ctx["x_test"][:n], ctx["y_test"][:n], predict_fn=predict_fn,
                                    eps_list=[s["aa_eps"]], suite="autoattack", seed=ctx["seed"],
                                    checks=True, verbose=ctx["verbose"], name=f"{name} (AutoAttack)",
                                    workers=ctx.get("workers", 1))
        atomic_write_json(_figure(ctx, f"evaluation-{name}-autoattack.json"), done[name])
    return done[name]


def _autoattack_summary(ctx, name):
    """AutoAttack's numbers for model ``name`` (JSON-ready): at ``aa_eps`` its robust
    accuracy, the accuracy left after each of its four attacks (``after``), FGSM, the
    worst case of both, the Square warning, the closing check, the sanity checks of that
    evaluation, and the FGSM/PGD worst case of section 3/6/7's evaluation on the same images
    (``pgd_worst_case``; None when that evaluation lacks the radius or the images)."""
    from ..evaluate import parse_mask
    report = _autoattack_report(ctx, name)
    eps = ctx["settings"]["aa_eps"]
    row = next(x for x in report["results"] if abs(x["eps"] - eps) < 1e-9)
    aa = row.get("autoattack") or {}            # absent when no image is correct clean
    pgd_rep = ctx["reports"].get(name)
    pgd_row = None if pgd_rep is None else next((x for x in pgd_rep["results"] if abs(x["eps"] - eps) < 1e-9),
                                                None)
    n = report["n"]
    pgd_wc = (float(parse_mask(pgd_row["masks"]["worst_case"])[:n].mean())
              if pgd_row is not None and pgd_rep["n"] >= n else None)
    return {"n": n, "eps": eps, "clean_accuracy": report["clean_accuracy"],
            "robust_accuracy": row["accuracy"]["autoattack"], "fgsm": row["accuracy"]["fgsm"],
            "worst_case": row["accuracy"]["worst_case"], "after": row.get("autoattack_after", {}),
            "fooled": aa.get("fooled", {}), "square_warning": aa.get("square_warning"),
            "closing_check": aa.get("checks"), "attack_seconds": aa.get("seconds", {}),
            "pgd_worst_case": pgd_wc, "rows": _eval_rows(report), "sanity": report["sanity"],
            "sanity_passed": all(c["passed"] for c in report["sanity"]), "seconds": report["seconds"]}


def _aa_text(a):
    """'93.0%' for a summary line, with the Square warning when it was raised."""
    return _pct(a["robust_accuracy"]) + (" (Square warning: masking?)" if a["square_warning"] else "")


def _checks_text(*results):
    ok = all(r["sanity_passed"] and r["autoattack"]["sanity_passed"] for r in results)
    return f"sanity checks {'all passed' if ok else 'NOT all passed'}"


def section_adversarial_training(ctx):
    """6. Min-max training: each batch replaced by PGD images of the current weights (Madry et
    al.); then TRADES (Zhang et al. 2019: clean CE + beta * KL to the point of largest KL),
    trained with the same settings. Both evaluated like section 3 and with AutoAttack, the
    natural model's AutoAttack numbers beside them (its evaluation is done here)."""
    s = ctx["settings"]
    r = _defense_section(ctx, name="pgd-trained", number=6)
    r["autoattack_natural"] = _autoattack_summary(ctx, "natural")
    t = _defense_section(ctx, name="trades", number=6)
    r["figures"] += t.pop("figures")       # the section's figures, in the report's order
    r["trades"] = t
    models = {"PGD-trained": r, "TRADES": t}
    worst = {k: _row_at(v["rows"], 0.1) for k, v in models.items()}
    if "natural" in ctx["reports"]:
        worst["natural"] = _row_at(_eval_rows(ctx["reports"]["natural"]), 0.1)
    aa = {"PGD-trained": r["autoattack"], "TRADES": t["autoattack"], "natural": r["autoattack_natural"]}
    parts = ["clean: " + ", ".join(f"{k} {_pct(v['clean_accuracy'])}" for k, v in models.items())]
    if all(worst.values()):
        parts.append("worst case at eps 0.1: " + ", ".join(f"{k} {_pct(v['worst_case'])}" for k, v in worst.items()))
    parts.append(f"AutoAttack at eps {s['aa_eps']:g} on {r['autoattack']['n']} images: "
                 + ", ".join(f"{k} {_aa_text(v)}" for k, v in aa.items()))
    r["summary"] = "; ".join(parts + [_checks_text(r, t)])
    return r


def section_gradient_regularization(ctx):
    """7. Double backprop: CE + lam * mean ||d loss_i / d x_i||^2; then the four models
    (natural, PGD-trained and TRADES from section 6, gradreg) compared, AutoAttack included."""
    from ..evaluate import write_comparison
    s = ctx["settings"]
    r = _defense_section(ctx, name="gradreg", number=7)
    names = [k for k in ("natural", "pgd-trained", "trades", "gradreg") if k in ctx["reports"]]
    write_comparison([ctx["reports"][k] for k in names], ctx["out"])
    fig = "fig7-training-curves.png"
    plot_defense_training(_figure(ctx, fig), {k: ctx["histories"][k] for k in names if k in ctx["histories"]},
                          title="natural vs defended training")
    r["figures"] += ["comparison.png", fig]
    r["comparison"] = {k: {"clean_accuracy": ctx["reports"][k]["clean_accuracy"],
                           "rows": _eval_rows(ctx["reports"][k]),
                           "sanity": ctx["reports"][k]["sanity"],
                           "autoattack": _autoattack_summary(ctx, k)} for k in names}
    a = _row_at(r["rows"], 0.1)
    nat = _row_at(_eval_rows(ctx["reports"]["natural"]), 0.1) if "natural" in ctx["reports"] else None
    r["summary"] = (f"clean {_pct(r['clean_accuracy'])}"
                    + (f", FGSM at eps 0.1 {_pct(a['fgsm'])} (natural {_pct(nat['fgsm'])}; "
                       f"Ross & Doshi-Velez 92.2% vs 72.7%)" if a and nat else "")
                    + f"; AutoAttack at eps {s['aa_eps']:g} on {r['autoattack']['n']} images: "
                    f"{_aa_text(r['autoattack'])}; " + _checks_text(r))
    return r


SECTION_FUNCTIONS = {
    "train": section_train, "fake": section_fake, "untargeted": section_untargeted,
    "shallow_vs_deep": section_shallow_vs_deep, "targeted": section_targeted,
    "adversarial_training": section_adversarial_training,
    "gradient_regularization": section_gradient_regularization,
}

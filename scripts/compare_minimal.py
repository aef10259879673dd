#!/usr/bin/env python
"""scratchadv's minimal-norm attacks (CW-L2, DeepFool L2 and Linf) against Foolbox 3.3.4's
on the same weights and the same images.

    python scripts/compare_minimal.py --model runs/natural.npz [--n 200]
        [--attacks cw,deepfool-l2,deepfool-linf] [--cw-steps 1000] [--cw-binary-steps 9]
        [--threads N] [--json J]

Foolbox runs on the model's PyTorch twin (``scratchadv.torch_model.to_torch``, float32),
all N images in one batch, as it is usually called. Both sides use the same settings:

- ``cw``: ``cw_l2`` vs ``L2CarliniWagnerAttack`` (both follow Carlini & Wagner's code):
  ``--cw-binary-steps`` (default 9) rounds of the search over c from initial const 1e-3,
  Adam with step size 1e-2, confidence 0, abort-early on; ``--cw-steps`` Adam steps per
  round, default 1000 on both sides (Foolbox's and our library's default is 10000, which
  costs ten times as much and is not what is compared here).
- ``deepfool-l2`` / ``deepfool-linf``: ``deepfool`` vs ``L2DeepFoolAttack`` /
  ``LinfDeepFoolAttack``: at most 50 steps, overshoot 0.02, candidates all 10 classes,
  loss "logits" (both sides' defaults).

Every returned image, ours and Foolbox's, is classified again by our own forward pass
before it counts. Only the images our model classifies correctly are attacked (the
others are left out of every number). An image still classified correctly counts as a
failure with size infinity; so does Foolbox's CW result where it found nothing (it
returns an all-zero image there, its initial "best"). Reported per attack and side: the
success rate, the median size over the attacked images (failures as infinity) and over
the images both sides flipped, the ratio ours / Foolbox of the first, and the seconds
(``--json`` also keeps every image's size).
Exit status 0; 2 on bad input or when foolbox or torch is missing.
"""
import argparse
import os
import sys
import time

import numpy as onp

_HERE = os.path.dirname(os.path.abspath(__file__))
# this folder holds profile.py, which would shadow the standard library's profile module
# (PyTorch imports cProfile): keep the folder off the import path, the project root on it
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, os.pardir))

from scratchadv.attacks import cw_l2, deepfool  # noqa: E402
from scratchadv.checkpoint import load_model  # noqa: E402
from scratchadv.data import load_mnist  # noqa: E402
from scratchadv.model import get_architecture, predict_batched  # noqa: E402

#: attack name -> the norm its size is measured in
ATTACKS = {"cw": "l2", "deepfool-l2": "l2", "deepfool-linf": "linf"}
#: the settings both sides share (the CW step counts come from the command line)
CW_SETTINGS = {"initial_const": 1e-3, "stepsize": 1e-2, "confidence": 0.0, "abort_early": True}
DEEPFOOL_SETTINGS = {"steps": 50, "overshoot": 0.02, "candidates": 10, "loss": "logits"}


def ours(params, arch, x, y, name, cw_steps, cw_binary_steps):
    """Our attack ``name`` on x, y -> (returned images, seconds)."""
    t0 = time.perf_counter()
    if name == "cw":
        res = cw_l2(params, x, y, binary_steps=cw_binary_steps, steps=cw_steps,
                    initial_const=CW_SETTINGS["initial_const"], lr=CW_SETTINGS["stepsize"],
                    confidence=CW_SETTINGS["confidence"], abort_early=CW_SETTINGS["abort_early"],
                    predict_fn=arch.predict)
    else:
        res = deepfool(params, x, y, norm=ATTACKS[name], steps=DEEPFOOL_SETTINGS["steps"],
                       overshoot=DEEPFOOL_SETTINGS["overshoot"],
                       candidates=DEEPFOOL_SETTINGS["candidates"], predict_fn=arch.predict)
    return res.x_adv, time.perf_counter() - t0


def theirs(params, arch, x, y, name, cw_steps, cw_binary_steps):
    """Foolbox's attack ``name`` on x, y (float32 PyTorch twin) -> (raw images, seconds)."""
    import foolbox as fb
    import torch
    from scratchadv.torch_model import to_torch
    model = fb.PyTorchModel(to_torch(params, arch.name, dtype=onp.float32), bounds=(0, 1))
    if name == "cw":
        attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw_binary_steps,
                                                  steps=cw_steps, **CW_SETTINGS)
    else:
        cls = fb.attacks.L2DeepFoolAttack if name == "deepfool-l2" else fb.attacks.LinfDeepFoolAttack
        attack = cls(**DEEPFOOL_SETTINGS)
    t0 = time.perf_counter()
    raw, _, _ = attack(model, torch.from_numpy(x.astype(onp.float32)), torch.from_numpy(y),
                       epsilons=None)
    seconds = time.perf_counter() - t0
    return raw.detach().cpu().numpy().astype(x.dtype), seconds


def sizes(params, arch, x, y, x_adv, norm, found=None):
    """Per image: the size of x_adv - x in ``norm`` where our forward pass misclassifies
    x_adv (and ``found``, if given, is true), inf elsewhere. -> (N,) float64."""
    flipped = predict_batched(params, x_adv, predict_fn=arch.predict).argmax(1) != y
    if found is not None:
        flipped &= found
    d = (x_adv.astype(onp.float64) - x.astype(onp.float64)).reshape(len(x), -1)
    size = onp.sqrt((d * d).sum(1)) if norm == "l2" else onp.abs(d).max(1)
    return onp.where(flipped, size, onp.inf)


def _median(a):
    return float(onp.median(a)) if len(a) else float("nan")


def compare(params, arch, x, y, name, *, cw_steps, cw_binary_steps):
    """Both sides of attack ``name`` on the correctly classified images of x, y -> a
    JSON-ready dict (see the module notes)."""
    norm = ATTACKS[name]
    out = {"norm": norm}
    size = {}
    for side, run in (("ours", ours), ("theirs", theirs)):
        x_adv, seconds = run(params, arch, x, y, name, cw_steps, cw_binary_steps)
        # Foolbox's CW starts its "best" at zeros and returns them where it found nothing
        found = (x_adv.reshape(len(x), -1).max(1) > 0) if (side == "theirs" and name == "cw") \
            else None
        size[side] = sizes(params, arch, x, y, x_adv, norm, found)
        fin = onp.isfinite(size[side])
        out[side] = {"success": float(fin.mean()), "flipped": int(fin.sum()),
                     "median": _median(size[side]), "seconds": seconds,
                     "sizes": size[side].tolist()}
        print(f"  {name} {side}: {out[side]['flipped']}/{len(x)} flipped, median "
              f"{out[side]['median']:.4g} ({seconds:.1f} s)", file=sys.stderr, flush=True)
    both = onp.isfinite(size["ours"]) & onp.isfinite(size["theirs"])
    out["both_flipped"] = int(both.sum())
    for side in ("ours", "theirs"):
        out[side]["median_both"] = _median(size[side][both])
    m_ours, m_theirs = out["ours"]["median"], out["theirs"]["median"]
    out["ratio"] = m_ours / m_theirs if onp.isfinite(m_theirs) and m_theirs > 0 else float("nan")
    out["ratio_both"] = out["ours"]["median_both"] / out["theirs"]["median_both"] \
        if both.any() and out["theirs"]["median_both"] > 0 else float("nan")
    return out


def table(results):
    """The per-attack results as a Markdown table."""
    rows = ["| attack | norm | success ours | success Foolbox | median ours | median Foolbox "
            "| ratio | median ours / Foolbox, both flipped | seconds ours | seconds Foolbox |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        o, t = r["ours"], r["theirs"]
        rows.append(f"| {name} | {r['norm']} | {o['success']:.3f} | {t['success']:.3f} "
                    f"| {o['median']:.4f} | {t['median']:.4f} | {r['ratio']:.3f} "
                    f"| {o['median_both']:.4f} / {t['median_both']:.4f} ({r['both_flipped']}) "
                    f"| {o['seconds']:.1f} | {t['seconds']:.1f} |")
    return "\n".join(rows)


def _error(msg):
    print(f"compare_minimal: error: {msg}", file=sys.stderr)
    return 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a model file written by `scratchadv train`")
    ap.add_argument("--n", type=int, default=200, help="first N test images (default 200)")
    ap.add_argument("--attacks", default=",".join(ATTACKS),
                    help=f"comma-separated, of {', '.join(ATTACKS)} (default all)")
    ap.add_argument("--cw-steps", type=int, default=1000,
                    help="CW Adam steps per binary-search round, both sides (default 1000)")
    ap.add_argument("--cw-binary-steps", type=int, default=9,
                    help="CW binary-search rounds, both sides (default 9)")
    ap.add_argument("--threads", type=int, default=None, help="BLAS and torch threads")
    ap.add_argument("--data", default=None, help="MNIST folder (default: $SCRATCHADV_DATA)")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    names = [s.strip() for s in a.attacks.split(",") if s.strip()]
    bad = [s for s in names if s not in ATTACKS]
    if not names or bad:
        return _error(f"--attacks must name some of {', '.join(ATTACKS)}, got {a.attacks!r}")
    if a.n < 1 or a.cw_steps < 1 or a.cw_binary_steps < 1:
        return _error("--n, --cw-steps and --cw-binary-steps must be >= 1")
    if a.threads is not None and a.threads < 1:
        return _error("--threads must be >= 1")
    try:
        import foolbox  # noqa: F401
        import torch
    except ImportError as e:
        return _error(f"the comparison needs torch and foolbox ({e}); "
                      "pip install torch foolbox==3.3.4")
    if a.threads:
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(a.threads)
        except ImportError:
            pass
        torch.set_num_threads(a.threads)
    if not os.path.isfile(a.model):
        return _error(f"--model: no file {a.model!r}")
    try:
        params, meta = load_model(a.model)
    except Exception as e:       # a damaged or foreign file: say which and why
        return _error(f"--model {a.model!r}: {e}")
    arch = get_architecture(meta["architecture"])
    _, _, x_test, y_test = load_mnist(a.data)
    if a.n > len(x_test):
        return _error(f"--n must be at most {len(x_test)} (the test set), got {a.n}")
    x, y = x_test[:a.n], y_test[:a.n]
    clean = predict_batched(params, x, predict_fn=arch.predict).argmax(1) == y
    xs, ys = x[clean], y[clean]
    out = {"model": os.path.abspath(a.model), "n": a.n, "n_attacked": int(clean.sum()),
           "settings": {"cw": dict(CW_SETTINGS, steps=a.cw_steps,
                                   binary_search_steps=a.cw_binary_steps),
                        "deepfool": dict(DEEPFOOL_SETTINGS)},
           "attacks": {}}
    print(f"{a.n} images, {out['n_attacked']} correctly classified and attacked; CW: "
          f"{a.cw_binary_steps} x {a.cw_steps} steps", flush=True)
    for name in names:
        if len(xs):
            out["attacks"][name] = compare(params, arch, xs, ys, name, cw_steps=a.cw_steps,
                                           cw_binary_steps=a.cw_binary_steps)
    if out["attacks"]:
        print(table(out["attacks"]), flush=True)
    if a.json:
        from scratchadv.fileio import atomic_write_json
        atomic_write_json(a.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

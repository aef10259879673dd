#!/usr/bin/env python
"""Cross-framework check: the same network, weights and batch in scratchadv and PyTorch.

Compared, in float64 and in float32:

==================  ================================================================
logits              ``predict(params, x)``  vs  ``module(x)``                (N, 10)
loss                mean cross-entropy                                       scalar
grad W              d loss / d W for every parameter (the training gradient)
grad x              d sum_i loss_i / d x: row i is d loss_i / d x_i (the attack gradient)
double-backprop W   d/dW [loss + lam * (1/N) sum_i ||d loss_i / d x_i||^2], the
                    gradient-regularized loss of ``scratchadv.losses`` (Ross &
                    Doshi-Velez 2018); in PyTorch the input gradient is taken with
                    ``create_graph=True`` and differentiated again
penalty W           d/dW (1/N) sum_i ||d loss_i / d x_i||^2 alone: the second-order
                    part of the row above, which the plain loss gradient could hide
pgd step            one Linf PGD step without random start:
                    clip(x + a * sign(grad x), max(x - eps, 0), min(x + eps, 1));
                    compared as the perturbation x_adv - x on the pixels whose gradient
                    sign is determined at the target precision, |g_i| > target *
                    max|g| (elsewhere the two gradients are equal to within the target
                    and sign() may legitimately differ: in float32, confidently
                    classified digits have input gradients of ~1e-9 that are rounding
                    noise in both libraries); such sign flips are counted and reported
==================  ================================================================

Errors: for our value ``a`` and PyTorch's ``b`` (arrays of one quantity)

    abs err = max |a - b|,     rel err = max |a - b| / max |b|

(the error relative to the quantity's own scale; 0/0 counts as 0). Targets: rel err
<= 1e-10 in float64 and <= 1e-4 in float32. The images include real MNIST digits,
whose blank backgrounds make exact ReLU zeros and max-pool ties everywhere: both
libraries must then agree on the conventions (ReLU'(0) = 0, the whole gradient to the
first maximum of a pooling window), or the input gradients differ by percents.

**Pooling ties decided by rounding.** scratchadv's convolution computes identical
patches to identical values, so a window of the second pooling layer whose four
entries see the same input patch holds four equal numbers and routes its gradient to
the first (the tie rule, checked exactly on crafted ties by the test suite). PyTorch's
CPU convolution may round the same patch differently at different output positions
(seen on an AMD EPYC CPU: 0.05545797828941565 twice and 0.05545797828941566 twice
where scratchadv has 0.055457978289415635 four times), and its max-pool then routes
the gradient to another entry. That is no disagreement about the rule but about the
last ulp of the window's values, and it decides a pixel's gradient wholly. Each case
therefore first finds the windows that the two libraries route differently, each
reading its own activations (:func:`routing`): the forward quantities (logits, loss)
are compared on every image, the gradients on the images with no such window, and the
report states how many windows and images were set aside. On most CPUs there are none.

Usage::

    python scripts/compare_torch.py                       # random weights, MNIST + noise
    python scripts/compare_torch.py --model runs/natural.npz --json runs/compare_torch.json

Exit status 0 when every quantity is within its target, 1 otherwise, 2 on bad input.
"""
import argparse
import json
import os
import sys

import numpy as onp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import autograd.numpy as anp  # noqa: E402
from autograd import grad  # noqa: E402

from scratchadv.losses import gradient_regularized_loss, input_gradient, loss  # noqa: E402
from scratchadv.model import get_architecture  # noqa: E402

TARGETS = {"float64": 1e-10, "float32": 1e-4}


# ---------------------------------------------------------------------------
# The quantities, in each framework
# ---------------------------------------------------------------------------

def ours(params, x, y, *, architecture="lecture-cnn-v1", lam=1.0, eps=0.3, step_size=0.01):
    """Every compared quantity computed by scratchadv, as numpy arrays in x's dtype.

    params: dict of arrays of x's dtype; x: (N, 1, 28, 28) in [0, 1]; y: (N,) int64.
    Returns {"logits", "loss", "grad_W": {name: array}, "grad_x", "dbp_W": {...},
    "pen_W": {...}, "pgd_delta"}.
    """
    predict_fn = get_architecture(architecture).predict
    out = {
        "logits": onp.asarray(predict_fn(params, x)),
        "loss": onp.asarray(loss(params, x, y, predict_fn)),
        "grad_W": grad(loss)(params, x, y, predict_fn),
        "grad_x": input_gradient(params, x, y, predict_fn),
        "dbp_W": grad(gradient_regularized_loss)(params, x, y, lam, predict_fn),
        "pen_W": grad(_penalty)(params, x, y, predict_fn),
    }
    out["pgd_delta"] = _our_pgd_step(params, x, y, predict_fn, eps, step_size, out["grad_x"]) - x
    out["pool_inputs"] = our_pool_inputs(params, x, architecture)
    return out


def our_pool_inputs(params, x, architecture="lecture-cnn-v1"):
    """The input of each max-pooling layer as scratchadv computes it: a list of
    (N, C, H, W) arrays, one per pooling layer of the architecture's layer list."""
    from scratchadv.model import MaxPool, forward
    out, h = [], x
    for layer in get_architecture(architecture).layers:
        if isinstance(layer, MaxPool):
            out.append(onp.asarray(h))
        h = forward([layer])(params, h)
    return out


def _penalty(params, x, y, predict_fn):
    """(1/N) sum_i ||d loss_i / d x_i||^2, differentiable w.r.t. params."""
    g = input_gradient(params, x, y, predict_fn)
    return anp.sum(g * g) / x.shape[0]


def _our_pgd_step(params, x, y, predict_fn, eps, step_size, g):
    """One PGD step by ``scratchadv.attacks.pgd`` (steps=1, no random start, last iterate)."""
    try:
        from scratchadv.attacks import pgd
    except ImportError:          # the attack module is optional for this check
        lo, hi = onp.maximum(x - eps, 0), onp.minimum(x + eps, 1)
        return onp.clip(x + x.dtype.type(step_size) * onp.sign(g), lo, hi).astype(x.dtype)
    return pgd(params, x, y, eps=eps, steps=1, step_size=step_size, norm="linf",
               random_start=False, keep_best=False, predict_fn=predict_fn).x_adv


def theirs(params, x, y, *, architecture="lecture-cnn-v1", lam=1.0, eps=0.3, step_size=0.01,
           nudge=None):
    """The same quantities computed by PyTorch on the same weights and images.

    Also returns ``pool_inputs``: PyTorch's own inputs of each max-pooling layer.
    ``nudge``: None, or ``(k, delta)`` with ``delta`` an array of the shape of the k-th
    pooling layer's input, added to PyTorch's values there (after the ReLU). It
    simulates, on any CPU, a convolution that rounds tied values apart (tests use one
    ulp on one tied entry); the addition is part of the graph, so gradients flow through it.
    """
    from scratchadv.torch_model import require_torch, to_torch
    torch = require_torch()
    F = torch.nn.functional
    module = to_torch(params, architecture, dtype=x.dtype)
    pool_inputs = []
    pools = [m for m in module.modules() if isinstance(m, torch.nn.MaxPool2d)]
    for i, pool in enumerate(pools):
        delta = None
        if nudge is not None and nudge[0] == i:
            delta = torch.from_numpy(onp.asarray(nudge[1], dtype=x.dtype))

        def pre_hook(mod, inputs, delta=delta):
            h = inputs[0] if delta is None else inputs[0] + delta
            if len(pool_inputs) < len(pools):          # the first forward pass only
                pool_inputs.append(h.detach().cpu().numpy())
            return (h,)
        pool.register_forward_pre_hook(pre_hook)
    names = [k for k, _ in module.named_parameters()]
    weights = [p for _, p in module.named_parameters()]
    xt = torch.from_numpy(onp.array(x)).requires_grad_(True)
    yt = torch.from_numpy(onp.asarray(y, dtype=onp.int64))
    n = x.shape[0]

    logits = module(xt)
    ce = F.cross_entropy(logits, yt, reduction="none")           # per example, (N,)
    mean_loss = ce.mean()
    g_w = torch.autograd.grad(mean_loss, weights, retain_graph=True)
    # the input gradient of the summed loss, kept differentiable for double backprop
    (g_x,) = torch.autograd.grad(ce.sum(), xt, create_graph=True)
    penalty = (g_x * g_x).sum() / n
    dbp = torch.autograd.grad(mean_loss + lam * penalty, weights, retain_graph=True)
    pen = torch.autograd.grad(penalty, weights)

    with torch.no_grad():
        x0 = xt.detach()
        lo = torch.clamp(x0 - eps, min=0.0)
        hi = torch.clamp(x0 + eps, max=1.0)
        x_adv = torch.minimum(torch.maximum(x0 + step_size * torch.sign(g_x.detach()), lo), hi)

    def np_(t):
        return t.detach().cpu().numpy()
    return {
        "logits": np_(logits),
        "loss": np_(mean_loss),
        "grad_W": {k: np_(v) for k, v in zip(names, g_w)},
        "grad_x": np_(g_x),
        "dbp_W": {k: np_(v) for k, v in zip(names, dbp)},
        "pen_W": {k: np_(v) for k, v in zip(names, pen)},
        "pgd_delta": np_(x_adv - x0),
        "pool_inputs": pool_inputs,
    }


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

def errors(a, b):
    """(abs err, rel err) = (max|a - b|, max|a - b| / max|b|), computed in float64."""
    a = onp.asarray(a, dtype=onp.float64)
    b = onp.asarray(b, dtype=onp.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    d = float(onp.max(onp.abs(a - b))) if a.size else 0.0
    s = float(onp.max(onp.abs(b))) if b.size else 0.0
    return d, (d / s if s > 0 else (0.0 if d == 0 else float("inf")))


def routing(ours_pool_inputs, torch_pool_inputs, n):
    """Where the two libraries route a pooling gradient to different entries.

    Each side's routing is the first maximum of its own window values (the rule both
    follow; see the module notes). Returns {"layers": [per pooling layer: windows,
    ours_exact_ties, torch_exact_ties (windows whose maximum occurs more than once, above
    0), routed_differently, near_tie_max_rel_gap], "differs": [per layer (N, C, H/2, W/2)
    bool], "images": (n,) bool, an image with at least one such window}; n is the
    number of images (the lists are empty for a network without pooling).
    ``near_tie_max_rel_gap``: over the differently routed windows, the largest relative
    gap between the values of the two chosen entries (on either side): a few ulps when
    rounding alone decides, large when the libraries disagree about something real.
    """
    from scratchadv.ops import pool_argmax
    layers, differs = [], []
    images = onp.zeros(n, dtype=bool)
    for h_ours, h_torch in zip(ours_pool_inputs, torch_pool_inputs):
        ka, kb = pool_argmax(h_ours), pool_argmax(h_torch)
        diff = ka != kb
        gap = 0.0
        for h in (h_ours, h_torch):
            w = _windows(h)                                     # (N, C, H/2, W/2, 4)
            va = onp.take_along_axis(w, ka[..., None].astype(onp.intp), -1)[..., 0][diff]
            vb = onp.take_along_axis(w, kb[..., None].astype(onp.intp), -1)[..., 0][diff]
            if va.size:
                scale = onp.maximum(onp.abs(va), onp.abs(vb))
                gap = max(gap, float(onp.max(onp.abs(va - vb) / onp.where(scale > 0, scale, 1))))
        layers.append({"windows": int(ka.size), "ours_exact_ties": _exact_ties(h_ours),
                       "torch_exact_ties": _exact_ties(h_torch),
                       "routed_differently": int(diff.sum()), "near_tie_max_rel_gap": gap})
        differs.append(diff)
        images |= diff.reshape(n, -1).any(1)
    return {"layers": layers, "differs": differs, "images": images}


def _windows(h):
    """(N, C, H, W) -> (N, C, H/2, W/2, 4), entries in row-major window order."""
    n, c, hh, ww = h.shape
    return onp.asarray(h, dtype=onp.float64).reshape(n, c, hh // 2, 2, ww // 2, 2) \
        .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hh // 2, ww // 2, 4)


def _exact_ties(h):
    w = _windows(h)
    m = w.max(-1, keepdims=True)
    return int(onp.sum(((w == m).sum(-1) > 1) & (m[..., 0] > 0)))


def receptive_fields(architecture="lecture-cnn-v1"):
    """[(stride, size)] per pooling layer: output (p, q) of the k-th pooling layer sees
    the input pixels [stride p, stride p + size) x [stride q, stride q + size).
    Walked from the layer list (lecture CNN: (2, 6) and (4, 16))."""
    from scratchadv.model import Conv, MaxPool
    out, stride, size = [], 1, 1
    for layer in get_architecture(architecture).layers:
        if isinstance(layer, (Conv, MaxPool)):
            size += (layer.size - 1) * stride
        if isinstance(layer, MaxPool):
            stride *= layer.size
            out.append((stride, size))
    return out


def affected_pixels(differs, architecture="lecture-cnn-v1"):
    """(N, H, W) bool: the input pixels whose gradient can change when the windows in
    ``differs`` (from :func:`routing`) are routed differently: each window's receptive
    field. Elsewhere the input gradients of the two libraries must agree."""
    h, w = get_architecture(architecture).input_shape[1:]
    n = len(differs[0]) if differs else 0
    out = onp.zeros((n, h, w), dtype=bool)
    for diff, (s, size) in zip(differs, receptive_fields(architecture)):
        for a, _, p, q in zip(*onp.nonzero(diff)):
            out[a, s * p:s * p + size, s * q:s * q + size] = True
    return out


ROUTING_DEPENDENT = ("grad_W", "dbp_W", "pen_W", "grad_x", "pgd_delta")


def compare(params, x, y, *, architecture="lecture-cnn-v1", lam=1.0, eps=0.3, step_size=0.01,
            nudge=None):
    """Rows {quantity, abs_err, rel_err, scale} comparing :func:`ours` with :func:`theirs`.

    Computed in x's dtype (params are cast to it). One row per quantity, and one per
    parameter for the weight gradients; the pgd row also counts gradient-sign flips.
    In float32 each row also has ``ours_vs_f64`` and ``torch_vs_f64``: each library's
    rel err against the float64 result (ours, equal to PyTorch's to ~1e-13), which shows
    how much of the float32 disagreement is float32 rounding that both libraries share.

    Logits and loss are compared on every image. The gradients are compared on the
    images where no pooling window is routed differently (:func:`routing`); their rows
    say how many images that was (``images_compared``, ``images_set_aside``). A last row,
    ``pooling routing``, gives the windows set aside (not an error: its rel_err is 0).
    ``nudge``: see :func:`theirs`.
    """
    dtype = x.dtype
    params = {k: onp.asarray(v, dtype=dtype) for k, v in params.items()}
    kw = dict(architecture=architecture, lam=lam, eps=eps, step_size=step_size)
    a, b = ours(params, x, y, **kw), theirs(params, x, y, nudge=nudge, **kw)
    route = routing(a["pool_inputs"], b["pool_inputs"], len(x))
    keep = ~route["images"]
    set_aside = int(route["images"].sum())
    ga, gb_ = a, b
    if set_aside:
        # recompute the gradients on the other images; a smaller batch may round
        # differently, so their routing is checked again
        idx = onp.flatnonzero(keep)
        for _ in range(3):
            if not len(idx):
                break
            ga = ours(params, x[idx], y[idx], **kw)
            gb_ = theirs(params, x[idx], y[idx], **kw)
            again = routing(ga["pool_inputs"], gb_["pool_inputs"], len(idx))["images"]
            if not again.any():
                break
            idx = idx[~again]
        set_aside = len(x) - len(idx)
        keep = onp.zeros(len(x), dtype=bool)
        keep[idx] = True
    if dtype != onp.float64:
        p64 = {k: v.astype(onp.float64) for k, v in params.items()}
        ref_all = ours(p64, x.astype(onp.float64), y, **kw)
        ref_sub = ref_all if not set_aside else ours(p64, x[keep].astype(onp.float64), y[keep], **kw)
    rows = []

    def add(name, key, sub=None, **extra):
        sa, sb = (ga, gb_) if key in ROUTING_DEPENDENT else (a, b)
        va, vb = (sa[key], sb[key]) if sub is None else (sa[key][sub], sb[key][sub])
        if key in ROUTING_DEPENDENT and not keep.any():
            d, r = float("nan"), float("inf")      # nothing left to compare: not verified
        else:
            d, r = errors(va, vb)
        row = {"quantity": name, "abs_err": d, "rel_err": r,
               "scale": float(onp.max(onp.abs(onp.asarray(vb, dtype=onp.float64)), initial=0.0)),
               **extra}
        if key in ROUTING_DEPENDENT:
            row["images_compared"] = int(keep.sum())
            row["images_set_aside"] = set_aside
        if dtype != onp.float64 and key != "pgd_delta":   # sign steps: compared exactly instead
            rr = ref_sub if key in ROUTING_DEPENDENT else ref_all
            vr = rr[key] if sub is None else rr[key][sub]
            row["ours_vs_f64"] = errors(va, vr)[1]
            row["torch_vs_f64"] = errors(vb, vr)[1]
        rows.append(row)

    add("logits", "logits")
    add("loss", "loss")
    for key, label in (("grad_W", "grad W"), ("dbp_W", "double-backprop W"),
                       ("pen_W", "penalty W")):
        for k in params:
            add(f"{label} [{k}]", key, k)
    add("grad x", "grad_x")
    # sign() is discontinuous at 0: compare the step where the sign is determined
    gb = onp.abs(onp.asarray(gb_["grad_x"], dtype=onp.float64))
    determined = gb > TARGETS[onp.dtype(dtype).name] * gb.max(initial=0.0)
    flip = onp.sign(ga["grad_x"]) != onp.sign(gb_["grad_x"])
    if keep.any():
        d, r = errors(ga["pgd_delta"][determined], gb_["pgd_delta"][determined])
    else:
        d, r = float("nan"), float("inf")
    rows.append({"quantity": "pgd step (x_adv - x)", "abs_err": d, "rel_err": r,
                 "scale": float(onp.max(onp.abs(gb_["pgd_delta"]), initial=0.0)),
                 "sign_flips": int(flip.sum()), "flips_where_determined": int((flip & determined).sum()),
                 "undetermined_pixels": int((~determined).sum()),
                 "abs_err_all_pixels": errors(ga["pgd_delta"], gb_["pgd_delta"])[0],
                 "images_compared": int(keep.sum()), "images_set_aside": set_aside})
    rows.append({"quantity": "pooling routing", "abs_err": 0.0, "rel_err": 0.0, "scale": 0.0,
                 "windows_routed_differently": sum(l_["routed_differently"] for l_ in route["layers"]),
                 "images_set_aside": set_aside, "layers": route["layers"]})
    return rows


def worst(rows, prefix):
    """Largest (abs_err, rel_err) among rows whose quantity starts with ``prefix``."""
    sel = [r for r in rows if r["quantity"].startswith(prefix)]
    return max(r["abs_err"] for r in sel), max(r["rel_err"] for r in sel)


def format_rows(rows, target, title=None):
    lines = [title] if title else []
    f64 = any("ours_vs_f64" in r for r in rows)
    head = f"{'quantity':<34} {'max|torch|':>10} {'abs err':>10} {'rel err':>10}  " + \
        (f"{'ours/f64':>9} {'torch/f64':>9}  " if f64 else "") + "result"
    lines += [head, "-" * len(head)]
    for r in rows:
        if r["quantity"] == "pooling routing":
            w = sum(l_["windows"] for l_ in r["layers"])
            lines.append(f"pooling windows routed differently by PyTorch's rounding: "
                         f"{r['windows_routed_differently']} of {w}"
                         + (f" (largest gap {max(l_['near_tie_max_rel_gap'] for l_ in r['layers']):.1e}"
                            f" relative); their {r['images_set_aside']} image(s) are left out of "
                            "the gradient rows" if r["windows_routed_differently"] else ""))
            continue
        ok = r["rel_err"] <= target
        extra = (f"  ({r['sign_flips']} sign flips where |g| <= target * max|g|)"
                 if r.get("sign_flips") else "")
        ref = ""
        if f64:
            ref = (f"{r['ours_vs_f64']:>9.1e} {r['torch_vs_f64']:>9.1e}  " if "ours_vs_f64" in r
                   else f"{'':>9} {'':>9}  ")
        lines.append(f"{r['quantity']:<34} {r['scale']:>10.3e} {r['abs_err']:>10.2e} "
                     f"{r['rel_err']:>10.2e}  {ref}{'ok' if ok else 'OVER ' + format(target, 'g')}"
                     f"{extra}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Batches and weights
# ---------------------------------------------------------------------------

def image_sets(n, seed, data=None, which=("mnist", "random")):
    """{name: (x float32, y int64, description)}: MNIST test digits (or, without the data,
    synthetic blank-background digits) and uniform noise, all in [0, 1]."""
    rng = onp.random.default_rng(seed)
    out = {}
    if "mnist" in which:
        try:
            from scratchadv.data import load_mnist
            _, _, x_test, y_test = load_mnist(data)
            pick = onp.sort(rng.choice(len(x_test), size=n, replace=False))
            shown = pick.tolist()[:8]
            out["mnist"] = (x_test[pick], y_test[pick],
                            f"{n} MNIST test images {shown}"[:-1] + (", ...]" if n > 8 else "]"))
        except Exception as e:        # no data: synthetic digits keep the exact ties
            x = onp.zeros((n, 1, 28, 28), dtype=onp.float32)
            for i in range(n):
                cy, cx = rng.integers(8, 20, size=2)
                x[i, 0, cy - 4:cy + 4, cx - 3:cx + 3] = rng.uniform(0.5, 1.0, size=(8, 6))
            out["mnist"] = (x, rng.integers(0, 10, size=n).astype(onp.int64),
                            f"synthetic blank-background digits (MNIST not found: {e})")
    if "random" in which:
        out["random"] = (rng.uniform(0, 1, size=(n, 1, 28, 28)).astype(onp.float32),
                         rng.integers(0, 10, size=n).astype(onp.int64), "uniform noise")
    return out


def run(cases, image_sets_, *, lam, eps, step_size, dtypes=("float64", "float32"),
        verbose=True):
    """Compare every (weights, images, dtype). cases: {name: (params, architecture)}.

    Returns (report list, all_ok).
    """
    report, all_ok = [], True
    for wname, (params, arch) in cases.items():
        for iname, (x, y, desc) in image_sets_.items():
            for dt in dtypes:
                xx = x.astype(dt)
                rows = compare(params, xx, y, architecture=arch, lam=lam, eps=eps,
                               step_size=step_size)
                target = TARGETS[dt]
                ok = all(r["rel_err"] <= target for r in rows)
                all_ok &= ok
                ties = float(onp.mean(xx == 0))
                title = (f"\n== {wname} ({arch}) | {desc} | {dt} | exact zeros: {ties:.0%} "
                         f"| target rel err <= {target:g}")
                if verbose:
                    print(format_rows(rows, target, title))
                report.append({"weights": wname, "architecture": arch, "images": iname,
                               "images_description": desc, "dtype": dt, "target": target,
                               "passed": ok, "zero_pixel_fraction": ties, "rows": rows})
    return report, all_ok


def summary(report):
    """Worst relative error per (dtype, quantity group) over every case."""
    groups = ("logits", "loss", "grad W", "grad x", "double-backprop W", "penalty W",
              "pgd step")
    out = {}
    for dt in sorted({c["dtype"] for c in report}):
        rows = [r for c in report if c["dtype"] == dt for r in c["rows"]]
        out[dt] = {g: max(r["rel_err"] for r in rows if r["quantity"].startswith(g)) for g in groups}
        out[dt]["pgd sign flips (undetermined pixels)"] = sum(
            r.get("sign_flips", 0) for r in rows)
        out[dt]["pooling windows routed differently"] = sum(
            r.get("windows_routed_differently", 0) for r in rows)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[],
                    help="a model file to check (repeatable); random weights are always checked")
    ap.add_argument("--architecture", default="lecture-cnn-v1",
                    help="architecture of the random weights (default lecture-cnn-v1)")
    ap.add_argument("--no-random", action="store_true", help="skip the random weights")
    ap.add_argument("--n", type=int, default=16, help="images per batch (default 16)")
    ap.add_argument("--seed", type=int, default=0, help="seed for weights and images (default 0)")
    ap.add_argument("--images", default="mnist,random",
                    help="comma-separated: mnist (real digits, exact ties), random (noise)")
    ap.add_argument("--data", default=None, help="folder with the MNIST files")
    ap.add_argument("--dtypes", default="float64,float32", help="default float64,float32")
    ap.add_argument("--lam", type=float, default=1.0, help="gradient-penalty weight (default 1)")
    ap.add_argument("--eps", type=float, default=0.3, help="PGD radius (default 0.3)")
    ap.add_argument("--step-size", type=float, default=0.01, help="PGD step size (default 0.01)")
    ap.add_argument("--json", default=None, help="write the full report as JSON here ('-': stdout)")
    args = ap.parse_args(argv)

    try:
        from scratchadv.torch_model import require_torch
        torch = require_torch()
    except ImportError as e:
        print(f"compare_torch: {e}", file=sys.stderr)
        return 2
    which = tuple(s.strip() for s in args.images.split(",") if s.strip())
    dtypes = tuple(s.strip() for s in args.dtypes.split(",") if s.strip())
    bad = [w for w in which if w not in ("mnist", "random")] + \
        [d for d in dtypes if d not in TARGETS]
    if bad or not which or not dtypes or args.n < 1:
        print(f"compare_torch: error: bad --images/--dtypes/--n value(s) {bad or args.n}",
              file=sys.stderr)
        return 2
    if args.json and args.json != "-":
        from scratchadv.fileio import check_writable
        check_writable(args.json, "--json")
    cases = {}
    if not args.no_random:
        arch = get_architecture(args.architecture)
        cases[f"random weights (seed {args.seed})"] = (arch.init_params(args.seed), arch.name)
    from scratchadv.checkpoint import CheckpointError, load_model
    for path in args.model:
        try:
            params, meta = load_model(path)
        except CheckpointError as e:
            print(f"compare_torch: error: {e}", file=sys.stderr)
            return 2
        cases[path] = (params, meta["architecture"])
    if not cases:
        print("compare_torch: error: nothing to compare (--no-random and no --model)", file=sys.stderr)
        return 2

    if args.json != "-":
        print(f"scratchadv vs PyTorch {torch.__version__}; "
              "rel err = max|ours - torch| / max|torch|")
    report, ok = run(cases, image_sets(args.n, args.seed, args.data, which), lam=args.lam,
                     eps=args.eps, step_size=args.step_size, dtypes=dtypes, verbose=args.json != "-")
    worst_ = summary(report)
    if args.json != "-":
        print("\nworst rel err over all cases:")
        for dt, groups in worst_.items():
            print(f"  {dt} (target {TARGETS[dt]:g}): " +
                  ", ".join(f"{g} {v:.1e}" if isinstance(v, float) else f"{g} {v}"
                            for g, v in groups.items()))
        print("all within target" if ok else "SOME QUANTITIES OVER TARGET")
    doc = {"torch_version": torch.__version__, "passed": ok, "targets": TARGETS,
           "rel_err_definition": "max|ours - torch| / max|torch|", "lam": args.lam,
           "eps": args.eps, "step_size": args.step_size, "worst": worst_, "cases": report}
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    elif args.json:
        from scratchadv.fileio import atomic_write_json
        atomic_write_json(args.json, doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

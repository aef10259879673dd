"""What an attack returns (:class:`AttackResult`), how it is built, and its metrics.

An attack's loop keeps, per image, a dict of arrays ``best`` with keys ``x`` (the
returned images), ``succ``, ``logits``, ``steps``, ``ce`` (the attacked label's
cross-entropy at ``x``) and ``ce0`` (at the start); :func:`build_result` turns it into
an :class:`AttackResult` with the perturbation's norms and the softmax.
"""
from dataclasses import dataclass, field

import numpy as onp

from .geometry import abs_offsets

__all__ = ["AttackResult", "build_result", "perturbation_norms", "softmax", "concat_parts",
           "empty_history", "summarize"]


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns; every per-image field has length N.

    x_adv:  (N, 1, 28, 28) adversarial images, dtype of the input, in [0, 1].
    success: (N,) bool. Untargeted: ``pred != y``; targeted (and fake images): ``pred == target``.
    steps:  (N,) int64 gradient steps that produced ``x_adv`` (0: the start point was kept).
    l1, l2, linf: (N,) float64 size of ``x_adv - x`` (fake images: ``x_adv - noise``).
    probs:  (N, 10) float64 softmax of the final logits.  pred: (N,) int64 their argmax.
    loss:   (N,) float64 final cross-entropy of the attacked label (y, or the target).
    loss_start: (N,) float64 the same cross-entropy at the start point.
    eps:    (N,) float64 radius each image was attacked with (``inf``: unbounded attack;
            :func:`~scratchadv.attacks.minimal_perturbation`: the smallest radius found,
            ``inf`` if none).
    target: (N,) int64 target classes, or None for untargeted attacks.
    snapshots: {step: (N, 1, 28, 28)} intermediate images
            (:func:`~scratchadv.attacks.gradient_ascent`).
    snapshot_probs: {step: (N, 10)} their class probabilities.
    loss_history: (K + 1, N) float64 the minimised/maximised objective at each step
            (row 0: the start), for the lecture's iterative attacks; (0, N) otherwise.
    details: dict of what an ensemble reports beyond the per-image fields
            (:func:`scratchadv.attacks.autoattack.autoattack`); empty otherwise.
    """
    x_adv: onp.ndarray
    success: onp.ndarray
    steps: onp.ndarray
    l1: onp.ndarray
    l2: onp.ndarray
    linf: onp.ndarray
    probs: onp.ndarray
    pred: onp.ndarray
    loss: onp.ndarray
    loss_start: onp.ndarray
    eps: onp.ndarray
    target: object = None
    snapshots: dict = field(default_factory=dict)
    snapshot_probs: dict = field(default_factory=dict)
    loss_history: onp.ndarray = None
    details: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.x_adv)


def softmax(logits):
    """Row-wise softmax in float64: (N, K) -> (N, K)."""
    z = onp.asarray(logits, dtype=onp.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = onp.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def perturbation_norms(a, b):
    """(l1, l2, linf) of each row of a - b: three (N,) float64, of the exact difference of
    the stored values (see :func:`scratchadv.attacks.geometry.abs_offsets`)."""
    d = abs_offsets(a, b)
    return d.sum(1), onp.sqrt((d * d).sum(1)), d.max(1, initial=0.0)


def build_result(x, best, eps, target, **extra):
    """An :class:`AttackResult` from the clean (or start) images x and an attack's
    per-image ``best`` dict (module notes); ``extra``: snapshots, loss_history."""
    x_adv = best["x"]
    if onp.may_share_memory(x_adv, x):      # never hand back (a view of) the caller's array
        x_adv = x_adv.copy()
    l1, l2, linf = perturbation_norms(x_adv, x)
    return AttackResult(
        x_adv=x_adv, success=onp.asarray(best["succ"], dtype=bool),
        steps=onp.asarray(best["steps"], dtype=onp.int64), l1=l1, l2=l2, linf=linf,
        probs=softmax(best["logits"]), pred=onp.asarray(best["logits"]).argmax(1).astype(onp.int64),
        loss=onp.asarray(best["ce"], dtype=onp.float64),
        loss_start=onp.asarray(best["ce0"], dtype=onp.float64),
        eps=onp.asarray(eps, dtype=onp.float64), target=target, **extra)


def concat_parts(parts):
    """The ``best`` dicts of consecutive chunks -> one dict over all their images."""
    return {k: onp.concatenate([p[k] for p in parts]) for k in parts[0]}


def empty_history(n):
    """The (0, n) ``loss_history`` of attacks that do not record one."""
    return onp.zeros((0, n), dtype=onp.float64)


def summarize(result, y, clean_pred, norms_over="attacked"):
    """Metrics of an attack on labelled images -> dict of plain floats.

    y: (N,) true labels; clean_pred: (N,) predictions on the clean images.
    ``clean_acc``/``robust_acc``: accuracy before/after. ``success_rate``: among images
    classified correctly before (and, targeted, whose label differs from the target),
    the fraction misclassified after (targeted: classified as the target). Norm
    statistics are over the same images (the ones the attack had work to do), or with
    ``norms_over="flipped"`` over those of them the attack succeeded on (the measure of
    a minimal-norm attack: an image it could not flip has no minimal perturbation).
    """
    y = onp.asarray(y)
    correct = onp.asarray(clean_pred) == y
    pool = correct if result.target is None else correct & (result.target != y)
    out = {"n": int(len(y)), "clean_acc": float(correct.mean()),
           "robust_acc": float(onp.mean(result.pred == y)),
           "success_rate": float(result.success[pool].mean()) if pool.any() else float("nan"),
           "attacked": int(pool.sum())}
    if norms_over not in ("attacked", "flipped"):
        raise ValueError(f"norms_over: expected 'attacked' or 'flipped', got {norms_over!r}")
    over = pool & result.success if norms_over == "flipped" else pool
    out["norms_over"] = norms_over
    for k in ("linf", "l2", "l1"):
        v = getattr(result, k)[over]
        out[f"mean_{k}"] = float(v.mean()) if len(v) else float("nan")
        out[f"median_{k}"] = float(onp.median(v)) if len(v) else float("nan")
    return out

"""The per-example objectives the attacks maximise, as functions of the logits.

==========================  ==============================================================
loss                        formula (z: the logits of one image, pi: classes by decreasing z)
==========================  ==============================================================
:func:`cross_entropy`       ``-log softmax(z)[y]``
:func:`dlr_loss`            ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)``
:func:`targeted_dlr_loss`   ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``
==========================  ==============================================================

The DLR ("difference of logits ratio") losses come from Croce & Hein (2020), "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", Sec. 4. Both are unchanged by shifting the logits (z + b) and
by scaling them (a * z, a > 0), up to the 1e-12 that keeps the denominator away from 0:
a model cannot hide from them by saturating its softmax, which is how cross-entropy is
fooled into vanishing gradients. The DLR loss is positive exactly when the image is
misclassified; the targeted one when ``z_t > z_y``.

Each is a small pure function ``(logits (N, K), labels (N,)) -> (N,)`` in the logits'
dtype, differentiable with autograd (to any order): the ranking ``pi`` is read from the
values (it is piecewise constant, so it carries no gradient) and the logits are then
picked by integer indexing, which autograd differentiates. The public functions check
their arguments; the attacks' loops call the unchecked ``_dlr`` / ``_targeted_dlr``.

(Not to be confused with :mod:`scratchadv.losses`, the training loss of the model's
weights; these are objectives of an image's logits.)
"""
import numpy as onp
from autograd.tracer import getval

from ..ops import per_example_cross_entropy
from ..validate import check_labels

__all__ = ["cross_entropy", "dlr_loss", "targeted_dlr_loss"]

#: keeps the DLR denominators positive when the top logits tie (the original's constant)
DLR_FLOOR = 1e-12


def _ranked(logits):
    """(N, K) -> (N, K) int64 class indices by decreasing logit (ties: lower index first).
    Read from the values: the ranking is locally constant and carries no gradient."""
    return onp.argsort(-onp.asarray(getval(logits)), axis=1, kind="stable")


def _pick(logits, idx):
    """logits[n, idx[n]] for each row n, differentiably: (N, K), (N,) -> (N,)."""
    return logits[onp.arange(len(idx)), idx]


def _dlr(logits, y):
    """Unchecked :func:`dlr_loss`."""
    order = _ranked(logits)
    # the largest logit among the classes other than y
    rival = onp.where(order[:, 0] == y, order[:, 1], order[:, 0])
    num = _pick(logits, y) - _pick(logits, rival)
    den = _pick(logits, order[:, 0]) - _pick(logits, order[:, 2]) + DLR_FLOOR
    return -num / den


def _targeted_dlr(logits, y, target):
    """Unchecked :func:`targeted_dlr_loss`."""
    order = _ranked(logits)
    num = _pick(logits, y) - _pick(logits, target)
    den = (_pick(logits, order[:, 0])
           - (_pick(logits, order[:, 2]) + _pick(logits, order[:, 3])) / 2 + DLR_FLOOR)
    return -num / den


def _check_logits(logits, min_classes):
    v = getval(logits)
    if not hasattr(v, "ndim") or not hasattr(v, "dtype"):
        raise TypeError(f"logits: expected a numpy array of shape (N, K), got {type(v).__name__}")
    if v.dtype not in (onp.float32, onp.float64):
        raise TypeError(f"logits: expected dtype float32 or float64, got {v.dtype}")
    if v.ndim != 2 or v.shape[1] < min_classes:
        raise ValueError(f"logits: expected shape (N, K) with K >= {min_classes}, got {v.shape}")
    return v.shape


def cross_entropy(logits, y):
    """``-log softmax(logits)[y]`` per row: (N, K) float, (N,) int -> (N,), logits' dtype
    (:func:`scratchadv.ops.per_example_cross_entropy` after its checks)."""
    n, k = _check_logits(logits, 2)
    check_labels(getval(y), n, num_classes=k)
    return per_example_cross_entropy(logits, y)


def dlr_loss(logits, y):
    """Difference of logits ratio (Croce & Hein 2020, Sec. 4), per row.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with pi the classes sorted by
    decreasing logit. logits: (N, K) float32/64, K >= 3; y: (N,) int -> (N,), logits' dtype.
    Invariant to ``a * z + b`` (a > 0) up to rounding and the 1e-12; > 0 iff misclassified.
    """
    n, k = _check_logits(logits, 3)
    check_labels(getval(y), n, num_classes=k)
    return _dlr(logits, y)


def targeted_dlr_loss(logits, y, target):
    """Targeted difference of logits ratio (Croce & Hein 2020, Sec. 4), per row.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``: maximising it raises the
    target's logit above the true label's. logits: (N, K) float32/64, K >= 4; y, target:
    (N,) int -> (N,), logits' dtype. Invariant to ``a * z + b`` (a > 0) up to rounding.
    """
    n, k = _check_logits(logits, 4)
    check_labels(getval(y), n, num_classes=k)
    check_labels(getval(target), n, name="target", num_classes=k)
    return _targeted_dlr(logits, y, target)

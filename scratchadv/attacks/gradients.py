"""The loss and image gradient every attack steps along, and the checks made once at entry.

Every attack validates its arguments once, at its public entry (:func:`check_model`,
the :mod:`scratchadv.validate` checks of x, y and the options, :func:`check_rng`);
inside the loops :func:`loss_grad` and :func:`loss_only` call the unchecked
:func:`scratchadv.ops.per_example_cross_entropy`, so a PGD step costs a forward and a
backward pass and nothing else. (A known architecture's parameters are checked for
names and shapes; their dtype is not compared with the images'.)

The image gradient is that of the *summed* per-example cross-entropy, so row i is
``d loss_i / d x_i`` whatever the batch size (the ``grad(loss, 1)`` row of the design
table), the same numbers as :func:`scratchadv.losses.input_gradient`.
"""
import numpy as onp
from autograd import make_vjp
from autograd.tracer import getval

from .. import model
from ..ops import per_example_cross_entropy

__all__ = ["check_model", "check_rng", "capture", "loss_grad", "loss_only"]


def check_model(params, predict_fn):
    """Known architectures are checked against their parameter shapes (model.check_model)."""
    model.check_model(params, predict_fn)


def check_rng(rng):
    """None -> ``numpy.random.default_rng(0)`` (reproducible by default); a Generator as is."""
    if rng is None:
        return onp.random.default_rng(0)
    if not isinstance(rng, onp.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def capture(predict_fn, box):
    """predict_fn that also stores its (un-boxed) logits in ``box`` (to reuse the forward pass)."""
    def f(p, xx):
        z = predict_fn(p, xx)
        box["logits"] = getval(z)
        return z
    return f


def loss_grad(params, x, labels, predict_fn, objective=per_example_cross_entropy):
    """One forward + backward: (loss (N,), d loss_i / d x_i (N, 1, 28, 28), logits (N, 10)).

    ``objective(logits, labels) -> (N,)``: the per-example loss (default cross-entropy).
    No validation: the caller checked its inputs at its entry.
    """
    box = {}
    f = capture(predict_fn, box)
    vjp, ce = make_vjp(lambda xx: objective(f(params, xx), labels))(x)
    g = vjp(onp.ones_like(ce))
    return ce, g, box["logits"]


def loss_only(params, x, labels, predict_fn, objective=per_example_cross_entropy):
    """Forward only: (loss (N,), logits (N, 10)). No validation."""
    logits = predict_fn(params, x)
    return objective(logits, labels), logits

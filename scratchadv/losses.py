"""The one loss, and everything derived from it by differentiation.

==============================  ===========================================
use                             how
==============================  ===========================================
training                        ``grad(loss, 0)(params, x, y)``  (d/dW)
attacks                         ``grad(loss, 1)(params, x, y)``  (d/dx)
gradient regularization         ``gradient_regularized_loss`` differentiated
                                w.r.t. params (double backpropagation)
==============================  ===========================================
"""
import autograd.numpy as np
import numpy as onp
from autograd import grad, make_vjp

from autograd.tracer import getval

from .model import architecture_of, predict
from .ops import cross_entropy, per_example_cross_entropy
from .validate import check_float, check_images, check_labels, check_params


def _check(params, x, y, predict_fn):
    """Validate the public arguments (unboxed: these functions are also differentiated)."""
    xv = getval(x)
    check_images(xv, "x")
    check_labels(getval(y), len(xv), "y")
    arch = architecture_of(predict_fn)
    if arch is not None:
        pv = getval(params)
        check_params(pv, arch.param_shapes())
        pdt = getval(next(iter(pv.values()))).dtype
        if pdt != xv.dtype:
            raise TypeError(f"params: expected the dtype of x ({xv.dtype}), got {pdt}")


def loss(params, x, y, predict_fn=predict):
    """Mean cross-entropy of the model's logits.  x: (N, 1, 28, 28); y: (N,) int -> scalar."""
    _check(params, x, y, predict_fn)
    return cross_entropy(predict_fn(params, x), y)


def per_example_loss(params, x, y, predict_fn=predict):
    """Cross-entropy of each example: (N,). Its sum is N * loss(params, x, y)."""
    _check(params, x, y, predict_fn)
    return per_example_cross_entropy(predict_fn(params, x), y)


def input_gradient(params, x, y, predict_fn=predict):
    """d loss / d x for each image: (N, 1, 28, 28).

    This is the gradient of the *summed* per-example loss, so row i is d loss_i / d x_i
    and does not shrink with the batch size (the batch-mean loss's gradient is this / N).
    """
    _check(params, x, y, predict_fn)
    return grad(lambda xx: np.sum(per_example_loss(params, xx, y, predict_fn)))(x)


def gradient_regularized_loss(params, x, y, lam, predict_fn=predict):
    """loss + lam * (1/N) sum_i ||d loss_i / d x_i||_2^2   (double backpropagation).

    Drucker & LeCun (1992); Ross & Doshi-Velez (2018), "Improving the adversarial
    robustness and interpretability of deep neural networks by regularizing their input
    gradients". Scaling of ``lam``: the penalty is the batch mean of the squared L2 norm
    of each example's own loss gradient d loss_i / d x_i (per-example, not the gradient of
    the batch-mean loss, which would shrink as 1/N^2). It is differentiable w.r.t.
    params to any order because every primitive's VJP is built from primitives.
    """
    _check(params, x, y, predict_fn)
    check_float(getval(lam), "lam", minimum=0)
    def summed(xx):
        return np.sum(per_example_loss(params, xx, y, predict_fn))
    # one forward pass gives both the loss and (through its VJP) the input gradient
    vjp, total = make_vjp(summed)(x)
    g = vjp(onp.ones((), dtype=getval(x).dtype))
    n = x.shape[0]
    penalty = np.sum(g * g) / n
    return total / n + lam * penalty

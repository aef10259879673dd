"""Optimizers as pure functions over parameter dicts.

An :class:`Optimizer` is a pair of pure functions::

    state = opt.init(params)                         # flat dict of arrays
    params, state = opt.update(params, grads, state) # new dicts; inputs untouched

The state is a flat dict of named arrays (``"step"``, ``"ms/conv1.weight"``, ...) so it
saves into a checkpoint ``.npz`` without pickle and resumes bit for bit. Arithmetic
stays in each parameter's dtype (float32 training stays float32).

Update rules and defaults follow Keras (``keras.optimizers``):

- RMSprop (Hinton, Coursera lecture 6e): ``v = rho v + (1 - rho) g^2``;
  ``w -= lr g / sqrt(v + eps)``; lr 1e-3, rho 0.9, eps 1e-7. The epsilon sits *inside*
  the square root, as in ``tf.keras.optimizers.RMSprop`` ("mom_t = momentum * mom +
  learning_rate * gradient / sqrt(mean_square_t + epsilon)", its documented update);
  PyTorch's ``RMSprop`` adds it outside (``sqrt(v) + eps``), which differs when v is tiny.
- SGD with momentum: ``m = momentum m - lr g``; ``w += m``; lr 0.01, momentum 0.9.
- Adam (Kingma & Ba 2015), Keras form: ``m += (1 - b1)(g - m)``, ``v += (1 - b2)(g^2 - v)``,
  ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``; lr 1e-3, b1 0.9, b2 0.999, eps 1e-7.
"""
from collections import namedtuple

import numpy as onp

from .validate import check_float

__all__ = ["Optimizer", "rmsprop", "sgd", "adam", "get_optimizer", "OPTIMIZERS"]

Optimizer = namedtuple("Optimizer", "name hyper init update")
Optimizer.__doc__ = "name: str; hyper: dict of hyper-parameters; init/update: pure functions."


def _slots(params, prefix):
    return {f"{prefix}/{k}": onp.zeros_like(v) for k, v in params.items()}


def _step_array(state):
    return onp.asarray(state["step"] + 1, dtype=onp.int64)


def rmsprop(lr=1e-3, rho=0.9, eps=1e-7):
    """RMSprop as tf.keras defines it, with its defaults (no momentum, not centered)."""
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    rho = check_float(rho, "rho", minimum=0, maximum=1)
    eps = check_float(eps, "eps", minimum=0)

    def init(params):
        return {"step": onp.asarray(0, dtype=onp.int64), **_slots(params, "ms")}

    def update(params, grads, state):
        new_p, new_s = {}, {"step": _step_array(state)}
        for k, w in params.items():
            g = grads[k]
            dt = w.dtype.type
            v = dt(rho) * state["ms/" + k] + dt(1 - rho) * (g * g)
            new_s["ms/" + k] = v
            new_p[k] = w - dt(lr) * g / onp.sqrt(v + dt(eps))
        return new_p, new_s

    return Optimizer("rmsprop", {"lr": lr, "rho": rho, "eps": eps}, init, update)


def sgd(lr=0.01, momentum=0.9):
    """SGD with (heavy-ball) momentum, Keras's form; momentum 0 gives plain SGD."""
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    momentum = check_float(momentum, "momentum", minimum=0, maximum=1)

    def init(params):
        return {"step": onp.asarray(0, dtype=onp.int64), **_slots(params, "mom")}

    def update(params, grads, state):
        new_p, new_s = {}, {"step": _step_array(state)}
        for k, w in params.items():
            dt = w.dtype.type
            m = dt(momentum) * state["mom/" + k] - dt(lr) * grads[k]
            new_s["mom/" + k] = m
            new_p[k] = w + m
        return new_p, new_s

    return Optimizer("sgd", {"lr": lr, "momentum": momentum}, init, update)


def adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
    """Adam with Keras's defaults (bias correction folded into the step size)."""
    lr = check_float(lr, "lr", minimum=0, strict_min=True)
    beta1 = check_float(beta1, "beta1", minimum=0, maximum=1)
    beta2 = check_float(beta2, "beta2", minimum=0, maximum=1)
    eps = check_float(eps, "eps", minimum=0)

    def init(params):
        return {"step": onp.asarray(0, dtype=onp.int64), **_slots(params, "m"), **_slots(params, "v")}

    def update(params, grads, state):
        step = _step_array(state)
        t = float(step)
        alpha = lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
        new_p, new_s = {}, {"step": step}
        for k, w in params.items():
            g = grads[k]
            dt = w.dtype.type
            m = state["m/" + k] + dt(1 - beta1) * (g - state["m/" + k])
            v = state["v/" + k] + dt(1 - beta2) * (g * g - state["v/" + k])
            new_s["m/" + k], new_s["v/" + k] = m, v
            new_p[k] = w - dt(alpha) * m / (onp.sqrt(v) + dt(eps))
        return new_p, new_s

    return Optimizer("adam", {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps}, init, update)


OPTIMIZERS = {"rmsprop": rmsprop, "sgd": sgd, "adam": adam}


def get_optimizer(name, lr=None, **hyper):
    """Build an optimizer by name ('rmsprop', 'sgd', 'adam'); ``lr=None`` keeps its default."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {name!r}")
    if lr is not None:
        hyper["lr"] = lr
    return OPTIMIZERS[name](**hyper)

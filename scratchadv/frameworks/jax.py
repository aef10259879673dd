"""The library's architectures as pure JAX functions with the same parameter names.

JAX is an optional extra, never a run-time dependency: importing this module does not
import jax; the first call of a function here does (and raises ``ImportError`` with an
install hint if jax is missing).

The twin of an architecture is a pure ``predict(params, x)`` built by walking its layer
list (:mod:`scratchadv.model`), one JAX operation per layer, in our NCHW layout:

==============================  ===============================================
layer                           JAX operation
==============================  ===============================================
``Conv(name, out, k)``          ``lax.conv_general_dilated`` ('VALID', stride 1,
                                NCHW / OIHW / NCHW) + bias
``Dense(name, out)``            ``h @ W.T + b`` (W is (out, in), as ours)
``Relu()``                      ``jax.nn.relu`` (derivative 0 at 0)
``MaxPool(2)``                  ``lax.reduce_window(h, -inf, lax.max, (1, 1, 2, 2),
                                (1, 1, 2, 2), 'VALID')``
``Flatten()``                   ``reshape(N, -1)``: (C, H, W) order, as ours
==============================  ===============================================

``params`` is our dict of arrays unchanged (``conv1.weight`` (out, in, kh, kw) ...), so
``jax.grad`` of a loss of ``predict`` returns a dict with our names. float64 needs
JAX's 64-bit mode, which is off by default: :func:`x64` is a context manager that
turns it on only around the caller's computation (no global switch is flipped).
"""
import functools

import numpy as onp

from ..model import Conv, Dense, Flatten, MaxPool, Relu, get_architecture

__all__ = ["require_jax", "x64", "build_predict", "to_jax", "jax_predict"]


def require_jax():
    """Import and return the ``jax`` module, or raise ``ImportError`` with an install hint."""
    try:
        import jax
    except ImportError as e:
        raise ImportError("JAX is needed for this (it is an optional extra): "
                          "pip install 'scratchadv[jax]'") from e
    return jax


def x64():
    """A context manager inside which JAX computes float64 arrays as float64.

    Without it JAX silently casts float64 inputs to float32.
    """
    return require_jax().enable_x64(True)


def _conv(layer, params, h):
    from jax import lax
    w, b = params[layer.name + ".weight"], params[layer.name + ".bias"]
    y = lax.conv_general_dilated(h, w, window_strides=(1, 1), padding="VALID",
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                 precision=lax.Precision.HIGHEST)
    return y + b.reshape(1, -1, 1, 1)


def _dense(layer, params, h):
    return h @ params[layer.name + ".weight"].T + params[layer.name + ".bias"]


def _relu(layer, params, h):
    import jax
    return jax.nn.relu(h)


def _maxpool(layer, params, h):
    import jax.numpy as jnp
    from jax import lax
    k = layer.size
    return lax.reduce_window(h, jnp.array(-jnp.inf, h.dtype), lax.max, (1, 1, k, k),
                             (1, 1, k, k), "VALID")


def _flatten(layer, params, h):
    return h.reshape(h.shape[0], -1)


#: layer type -> its JAX step (layer, params, h) -> h
_JAX_LAYERS = {Conv: _conv, Dense: _dense, Relu: _relu, MaxPool: _maxpool, Flatten: _flatten}


def build_predict(architecture="lecture-cnn-v1", pool_hook=None):
    """The pure JAX ``predict(params, x)`` of ``architecture``: x (N, C, H, W) -> (N, 10).

    ``pool_hook``: None, or a function ``(k, h) -> h`` applied to the input of the k-th
    max-pooling layer (k = 0, 1, ...), e.g. to record it or to add a perturbation; it
    is part of the differentiated function.
    """
    require_jax()
    steps = [(functools.partial(_JAX_LAYERS[type(layer)], layer), isinstance(layer, MaxPool))
             for layer in get_architecture(architecture).layers]

    def predict(params, x):
        h, k = x, 0
        for step, is_pool in steps:
            if is_pool and pool_hook is not None:
                h = pool_hook(k, h)
                k += 1
            h = step(params, h)
        return h
    return predict


def to_jax(params, architecture="lecture-cnn-v1", dtype=None):
    """Our params dict as a dict of ``jax.Array`` (same names, checked against the
    architecture). ``dtype``: float32/float64, default the dtype of ``params``; float64
    arrays must be created and used inside :func:`x64`."""
    from ..validate import check_params
    check_params(params, get_architecture(architecture).param_shapes())
    import jax.numpy as jnp
    if dtype is None:
        dtype = onp.asarray(next(iter(params.values()))).dtype
    return {k: jnp.asarray(onp.asarray(v, dtype=dtype)) for k, v in params.items()}


def jax_predict(params, x, architecture="lecture-cnn-v1"):
    """Logits (N, 10) as numpy in x's dtype from the JAX twin, for numpy images x."""
    import jax.numpy as jnp
    with x64():
        p = to_jax(params, architecture, x.dtype)
        return onp.asarray(build_predict(architecture)(p, jnp.asarray(x)))

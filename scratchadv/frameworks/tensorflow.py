"""The library's architectures as TensorFlow functions with the same parameter names.

TensorFlow is an optional extra, never a run-time dependency: importing this module does
not import tensorflow; the first call of a function here does (and raises
``ImportError`` with an install hint if it is missing).

The twin of an architecture is ``predict(params, x)`` built by walking its layer list
(:mod:`scratchadv.model`), one TensorFlow operation per layer. TensorFlow's CPU
convolution and pooling take NHWC only, so x (N, C, H, W) is transposed once on entry
and back before ``Flatten``, which keeps our (C, H, W) order:

==============================  ===============================================
layer                           TensorFlow operation (activations NHWC)
==============================  ===============================================
``Conv(name, out, k)``          ``tf.nn.conv2d(h, W', 1, 'VALID')`` + bias, with
                                W' = W transposed (out, in, kh, kw) -> (kh, kw, in, out)
``Dense(name, out)``            ``h @ W^T + b`` (W is (out, in), as ours)
``Relu()``                      ``tf.nn.relu`` (derivative 0 at 0)
``MaxPool(2)``                  ``tf.nn.max_pool2d(h, 2, 2, 'VALID')``
``Flatten()``                   NHWC -> NCHW, then ``reshape(N, -1)``
==============================  ===============================================

``params`` is our dict (as ``tf.Variable`` or tensors), differentiated with
``tf.GradientTape``; second-order quantities use nested tapes.
"""
import os

import numpy as onp

from ..model import Conv, Dense, Flatten, MaxPool, Relu, get_architecture

__all__ = ["require_tensorflow", "build_predict", "to_tensorflow", "tf_predict"]


def require_tensorflow():
    """Import and return ``tensorflow``, or raise ``ImportError`` with an install hint.

    TensorFlow's informational start-up logging is silenced unless the caller set
    ``TF_CPP_MIN_LOG_LEVEL`` already.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("TensorFlow is needed for this (it is an optional extra): "
                          "pip install 'scratchadv[tensorflow]'") from e
    return tf


def _conv(tf, layer, params, h):
    w = tf.transpose(params[layer.name + ".weight"], (2, 3, 1, 0))      # -> (kh, kw, in, out)
    return tf.nn.conv2d(h, w, strides=1, padding="VALID") + params[layer.name + ".bias"]


def _dense(tf, layer, params, h):
    return tf.matmul(h, params[layer.name + ".weight"], transpose_b=True) \
        + params[layer.name + ".bias"]


def _relu(tf, layer, params, h):
    return tf.nn.relu(h)


def _maxpool(tf, layer, params, h):
    return tf.nn.max_pool2d(h, layer.size, layer.size, "VALID")


def _flatten(tf, layer, params, h):
    if len(h.shape) == 4:                      # NHWC -> NCHW: our (C, H, W) order
        h = tf.transpose(h, (0, 3, 1, 2))
    return tf.reshape(h, (tf.shape(h)[0], -1))


#: layer type -> its TensorFlow step (tf, layer, params, h) -> h
_TF_LAYERS = {Conv: _conv, Dense: _dense, Relu: _relu, MaxPool: _maxpool, Flatten: _flatten}


def build_predict(architecture="lecture-cnn-v1", pool_hook=None):
    """TensorFlow ``predict(params, x)`` of ``architecture``: x (N, C, H, W) -> (N, 10).

    ``pool_hook``: None, or a function ``(k, h) -> h`` applied to the input of the k-th
    max-pooling layer, given and returned in NCHW (our layout), inside the tape.
    """
    tf = require_tensorflow()
    layers = get_architecture(architecture).layers

    def predict(params, x):
        h, k = tf.transpose(x, (0, 2, 3, 1)), 0
        for layer in layers:
            if isinstance(layer, MaxPool) and pool_hook is not None:
                h = tf.transpose(pool_hook(k, tf.transpose(h, (0, 3, 1, 2))), (0, 2, 3, 1))
                k += 1
            h = _TF_LAYERS[type(layer)](tf, layer, params, h)
        return h
    return predict


def to_tensorflow(params, architecture="lecture-cnn-v1", dtype=None):
    """Our params dict as ``tf.Variable``s of the same names (checked against the
    architecture); ``dtype``: float32/float64, default the dtype of ``params``."""
    from ..validate import check_params
    check_params(params, get_architecture(architecture).param_shapes())
    tf = require_tensorflow()
    if dtype is None:
        dtype = onp.asarray(next(iter(params.values()))).dtype
    return {k: tf.Variable(onp.asarray(v, dtype=dtype), name=k.replace(".", "_"))
            for k, v in params.items()}


def tf_predict(params, x, architecture="lecture-cnn-v1"):
    """Logits (N, 10) as numpy in x's dtype from the TensorFlow twin, for numpy images x."""
    tf = require_tensorflow()
    p = to_tensorflow(params, architecture, x.dtype)
    return build_predict(architecture)(p, tf.constant(x)).numpy()

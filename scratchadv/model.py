"""The lecture's CNN as a pure function of a parameter dict.

Architecture (the lecture's Keras model; 28x28x1 input, 'valid' convolutions):

    conv1  Conv 10@5x5 + ReLU   (N, 1, 28, 28) -> (N, 10, 24, 24)
    pool   MaxPool 2x2          -> (N, 10, 12, 12)
    conv2  Conv 20@5x5 + ReLU   -> (N, 20, 8, 8)
    pool   MaxPool 2x2          -> (N, 20, 4, 4)
    flatten                     -> (N, 320)   (C, H, W order, as PyTorch)
    dense1 Dense 100 + ReLU     -> (N, 100)
    dense2 Dense 10             -> (N, 10) logits (softmax lives in the loss)

Parameters are a flat dict named and laid out like a PyTorch ``state_dict``:
``conv1.weight`` (10, 1, 5, 5), ``conv1.bias`` (10,), ..., ``dense2.weight`` (10, 100).
"""
import numpy as onp
import autograd.numpy as np

from .ops import conv2d, maxpool2d, relu, dense, flatten

ARCHITECTURE = "lecture-cnn-v1"

#: name -> (shape, fan_in, fan_out) for Glorot initialisation
PARAM_SPECS = {
    "conv1.weight": ((10, 1, 5, 5), 1 * 25, 10 * 25),
    "conv1.bias": ((10,), None, None),
    "conv2.weight": ((20, 10, 5, 5), 10 * 25, 20 * 25),
    "conv2.bias": ((20,), None, None),
    "dense1.weight": ((100, 320), 320, 100),
    "dense1.bias": ((100,), None, None),
    "dense2.weight": ((10, 100), 100, 10),
    "dense2.bias": ((10,), None, None),
}

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def param_shapes():
    """{name: shape} of the lecture CNN."""
    return {k: v[0] for k, v in PARAM_SPECS.items()}


def init_params(seed=0, dtype=onp.float32):
    """Keras-style initialisation: Glorot uniform weights, zero biases.

    Glorot & Bengio (2010): W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), where for a
    conv kernel fan_in = in_channels * kh * kw and fan_out = out_channels * kh * kw
    (Keras ``glorot_uniform``). ``seed`` is an int or a ``numpy.random.Generator``.
    Returns a new dict of arrays of ``dtype``.
    """
    return _glorot(PARAM_SPECS, seed, dtype)


def _glorot(specs, seed, dtype):
    rng = seed if isinstance(seed, onp.random.Generator) else onp.random.default_rng(seed)
    params = {}
    for name, (shape, fan_in, fan_out) in specs.items():
        if fan_in is None:
            params[name] = onp.zeros(shape, dtype=dtype)
        else:
            a = onp.sqrt(6.0 / (fan_in + fan_out))
            params[name] = rng.uniform(-a, a, size=shape).astype(dtype)
    return params


def _bias4(b):
    return np.reshape(b, (1, -1, 1, 1))


def predict(params, x):
    """Logits of the lecture CNN.  x: (N, 1, 28, 28) float in [0, 1] -> (N, 10), dtype of x."""
    h = relu(conv2d(x, params["conv1.weight"]) + _bias4(params["conv1.bias"]))
    h = maxpool2d(h)
    h = relu(conv2d(h, params["conv2.weight"]) + _bias4(params["conv2.bias"]))
    h = maxpool2d(h)
    h = relu(dense(flatten(h), params["dense1.weight"], params["dense1.bias"]))
    return dense(h, params["dense2.weight"], params["dense2.bias"])


def predict_batched(params, x, batch_size=1000, predict_fn=predict):
    """Logits for many images without autograd, in batches to bound memory. -> (N, 10)."""
    from .validate import check_images
    check_images(x, "x")
    check_model(params, predict_fn)
    out = [predict_fn(params, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    if not out:
        return onp.zeros((0, NUM_CLASSES), dtype=x.dtype)
    return onp.concatenate(out)


def accuracy(params, x, y, batch_size=1000, predict_fn=predict):
    """Fraction of x classified as y."""
    from .validate import check_labels
    check_labels(y, len(x), "y")
    return float(onp.mean(onp.argmax(predict_batched(params, x, batch_size, predict_fn), 1) == y))


# ---------------------------------------------------------------------------
# Shallow models from the same ops (the lecture's "shallow nets are more robust")
# ---------------------------------------------------------------------------

SOFTMAX_SPECS = {
    "dense1.weight": ((10, 784), 784, 10),
    "dense1.bias": ((10,), None, None),
}

MLP_SPECS = {
    "dense1.weight": ((100, 784), 784, 100),
    "dense1.bias": ((100,), None, None),
    "dense2.weight": ((10, 100), 100, 10),
    "dense2.bias": ((10,), None, None),
}


def predict_softmax(params, x):
    """Softmax regression (multinomial logistic regression): (N, 1, 28, 28) -> (N, 10) logits."""
    return dense(flatten(x), params["dense1.weight"], params["dense1.bias"])


def predict_mlp(params, x):
    """One hidden layer of 100 ReLUs: (N, 1, 28, 28) -> (N, 10) logits."""
    h = relu(dense(flatten(x), params["dense1.weight"], params["dense1.bias"]))
    return dense(h, params["dense2.weight"], params["dense2.bias"])


class Architecture:
    """A named model: its parameter specs, its init and its pure predict function.

    Calling it is calling its predict function, so an Architecture can be passed
    wherever a ``predict_fn(params, x)`` is expected.
    """

    def __init__(self, name, specs, predict_fn, description):
        self.name = name
        self.specs = specs
        self.predict = predict_fn
        self.description = description
        predict_fn.architecture = self

    def __call__(self, params, x):
        return self.predict(params, x)

    def param_shapes(self):
        return {k: v[0] for k, v in self.specs.items()}

    def init_params(self, seed=0, dtype=onp.float32):
        return _glorot(self.specs, seed, dtype)

    def __repr__(self):
        return f"Architecture({self.name!r})"


#: every model the library knows, by the name stored in checkpoints
ARCHITECTURES = {
    ARCHITECTURE: Architecture(ARCHITECTURE, PARAM_SPECS, predict,
                               "the lecture CNN: conv 10@5x5, pool, conv 20@5x5, pool, dense 100, dense 10"),
    "softmax-v1": Architecture("softmax-v1", SOFTMAX_SPECS, predict_softmax,
                               "softmax regression: dense 10 on the 784 pixels"),
    "mlp-v1": Architecture("mlp-v1", MLP_SPECS, predict_mlp,
                           "one-hidden-layer MLP: dense 100 + ReLU, dense 10"),
}


def architecture_of(predict_fn):
    """The :class:`Architecture` of ``predict_fn`` (an Architecture, or the predict function
    of one), or None for a user's own function."""
    if isinstance(predict_fn, Architecture):
        return predict_fn
    return getattr(predict_fn, "architecture", None)


def check_model(params, predict_fn):
    """Validate a (params, predict_fn) pair: a known architecture's params must have its
    names, shapes and one float dtype; any other function must be callable with a dict."""
    from .validate import check_params
    if not callable(predict_fn):
        raise TypeError(f"predict_fn: expected a function (params, x) -> logits, got {predict_fn!r}")
    arch = architecture_of(predict_fn)
    if arch is not None:
        return check_params(params, arch.param_shapes())
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of named arrays, got {type(params).__name__}")
    return params


def get_architecture(name):
    """The :class:`Architecture` called ``name`` (raises ``ValueError`` listing the known ones)."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"architecture: expected one of {sorted(ARCHITECTURES)}, got {name!r}") from None

"""The library's models, each declared once as a list of layers.

An architecture is plain data: a name, an input shape and a list of layers. From the
list alone come its parameter specs (names, shapes, Glorot fans), its activation
shapes, its pure ``predict(params, x)`` and, elsewhere, its Keras layout
(:mod:`scratchadv.interchange`) and its PyTorch twin (:mod:`scratchadv.frameworks.torch`)
-- the idea of JAX's ``stax`` (one declaration gives init, shapes and forward pass),
written as a walk over the layers instead of pairs of closures. The lecture CNN
(the lecture's Keras model; 28x28x1 input, 'valid' convolutions)::

    [Conv("conv1", 10, 5), Relu(), MaxPool(2),      (N, 1, 28, 28) -> (N, 10, 12, 12)
     Conv("conv2", 20, 5), Relu(), MaxPool(2),      -> (N, 20, 4, 4)
     Flatten(),                                     -> (N, 320)   (C, H, W order, as PyTorch)
     Dense("dense1", 100), Relu(),                  -> (N, 100)
     Dense("dense2", 10)]                           -> (N, 10) logits (softmax lives in the loss)

Parameters are a flat dict named and laid out like a PyTorch ``state_dict``: a layer
called ``conv1`` owns ``conv1.weight`` (out, in, kh, kw) and ``conv1.bias`` (out,), a
``Dense`` called ``dense1`` owns ``dense1.weight`` (out, in) and ``dense1.bias``.

A new architecture is one more entry of :data:`ARCHITECTURES`; nothing else in the
library needs to know about it.
"""
import dataclasses
import functools
import math

import numpy as onp
import autograd.numpy as np

from .ops import conv2d, conv_pool, maxpool2d, relu, dense, flatten

ARCHITECTURE = "lecture-cnn-v1"
INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


# ---------------------------------------------------------------------------
# Layers: plain, immutable data
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Conv:
    """2-D cross-correlation, stride 1, no padding: ``out`` filters of ``size`` x ``size``."""
    name: str
    out: int
    size: int


@dataclasses.dataclass(frozen=True)
class Dense:
    """Affine layer on a flat input, as ``torch.nn.Linear``: ``out`` units."""
    name: str
    out: int


@dataclasses.dataclass(frozen=True)
class Relu:
    """max(x, 0), derivative 0 at 0 (PyTorch's convention)."""


@dataclasses.dataclass(frozen=True)
class MaxPool:
    """Max pooling over ``size`` x ``size`` windows with stride ``size`` (only 2 is implemented)."""
    size: int = 2


@dataclasses.dataclass(frozen=True)
class Flatten:
    """(C, H, W) -> (C*H*W,) in C order, PyTorch's ``flatten(1)``."""


# ---------------------------------------------------------------------------
# What each kind of layer does to a shape, which parameters it owns, its forward step
# ---------------------------------------------------------------------------
#
# Shapes are per example (no batch axis). A shape rule returns (output shape, specs),
# specs being {name: (shape, fan_in, fan_out)} for Glorot initialisation (fans None for
# a bias, which starts at zero).

def _weight_and_bias(name, weight_shape, fan_in, fan_out):
    return {f"{name}.weight": (weight_shape, fan_in, fan_out),
            f"{name}.bias": ((weight_shape[0],), None, None)}


def _image_shape(layer, shape):
    if len(shape) != 3:
        raise ValueError(f"layers: {layer!r} needs a (C, H, W) input, got {shape}")
    return shape


def _conv_rule(layer, shape):
    # Keras glorot_uniform for a kernel: fan_in = C * kh * kw, fan_out = out * kh * kw
    c, h, w = _image_shape(layer, shape)
    k = layer.size
    if k > h or k > w:
        raise ValueError(f"layers: {layer!r} has a kernel larger than its input {shape}")
    return ((layer.out, h - k + 1, w - k + 1),
            _weight_and_bias(layer.name, (layer.out, c, k, k), c * k * k, layer.out * k * k))


def _dense_rule(layer, shape):
    if len(shape) != 1:
        raise ValueError(f"layers: {layer!r} needs a flat input (put Flatten() before it), "
                         f"got {shape}")
    return (layer.out,), _weight_and_bias(layer.name, (layer.out, shape[0]), shape[0], layer.out)


def _pool_rule(layer, shape):
    c, h, w = _image_shape(layer, shape)
    if layer.size != 2:
        raise ValueError(f"layers: {layer!r}: only 2x2 pooling is implemented (ops.maxpool2d)")
    if h % 2 or w % 2:
        raise ValueError(f"layers: {layer!r} needs an even height and width, got {shape}")
    return (c, h // 2, w // 2), {}


def _conv_forward(layer, params, h):
    bias = np.reshape(params[layer.name + ".bias"], (1, -1, 1, 1))
    return conv2d(h, params[layer.name + ".weight"]) + bias


def _conv_pool_forward(layer, params, h):
    return conv_pool(h, params[layer.name + ".weight"], params[layer.name + ".bias"])


def _dense_forward(layer, params, h):
    return dense(h, params[layer.name + ".weight"], params[layer.name + ".bias"])


#: layer type -> (shape rule, forward step (layer, params, h) -> h, label for summaries)
_RULES = {
    Conv: (_conv_rule, _conv_forward, "conv {out}@{size}x{size}"),
    Dense: (_dense_rule, _dense_forward, "dense {out}"),
    Relu: (lambda layer, shape: (shape, {}), lambda layer, params, h: relu(h), "relu"),
    MaxPool: (_pool_rule, lambda layer, params, h: maxpool2d(h), "maxpool {size}x{size}"),
    Flatten: (lambda layer, shape: ((math.prod(shape),), {}), lambda layer, params, h: flatten(h),
              "flatten"),
}


def _rule(layer):
    try:
        return _RULES[type(layer)]
    except KeyError:
        raise TypeError(f"layers: expected Conv, Dense, Relu, MaxPool or Flatten, got {layer!r}") \
            from None


def layer_shapes(layers, input_shape=INPUT_SHAPE):
    """[(layer, input shape, output shape)] for each layer, shapes per example (no N axis).

    This walk is what every derived form (specs, Keras layout, framework twins) follows;
    it refuses a list whose shapes do not fit (``ValueError`` naming the layer).
    """
    names = [layer.name for layer in layers if hasattr(layer, "name")]
    bad = [n for n in names if not (isinstance(n, str) and n.isidentifier())]
    if bad:
        raise ValueError(f"layers: expected layer names that are identifiers, got {bad}")
    if len(set(names)) != len(names):
        raise ValueError(f"layers: expected distinct layer names, got {names}")
    out, shape = [], tuple(input_shape)
    for layer in layers:
        for field in ("out", "size"):
            v = getattr(layer, field, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"layers: {layer!r}: expected {field} to be a positive integer")
        new, _ = _rule(layer)[0](layer, shape)
        out.append((layer, shape, new))
        shape = new
    return out


def param_specs(layers, input_shape=INPUT_SHAPE):
    """{name: (shape, fan_in, fan_out)} of every parameter, in layer order."""
    specs = {}
    for layer, in_shape, _ in layer_shapes(layers, input_shape):
        specs.update(_rule(layer)[0](layer, in_shape)[1])
    return specs


def _pool_before_relu(layers):
    """``layers`` with each Relu, MaxPool pair run as MaxPool, Relu: the same function.

    max and relu commute exactly (max(relu(a), relu(b)) = relu(max(a, b)), no rounding
    in either), and so do their gradients: where a window's maximum is positive both
    orders send the gradient to its first maximal entry, elsewhere both send 0. Pooling
    first lets ReLU and its gradient touch a quarter of the values.
    """
    out = list(layers)
    for i in range(len(out) - 1):
        if type(out[i]) is Relu and type(out[i + 1]) is MaxPool:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def forward(layers):
    """The pure ``predict(params, x)`` of ``layers``: each layer's op, in order.

    The ops are those of :mod:`scratchadv.ops`, so the function is differentiable to
    any order; x is (N, *input shape) and the dtype of x is kept.
    """
    order, steps = _pool_before_relu(layers), []
    while order:
        layer = order.pop(0)
        if type(layer) is Conv and order and type(order[0]) is MaxPool:
            order.pop(0)              # Conv, MaxPool: one pass (ops.conv_pool), the same function
            steps.append(functools.partial(_conv_pool_forward, layer))
        else:
            steps.append(functools.partial(_rule(layer)[1], layer))
    steps = tuple(steps)

    def predict(params, x):
        h = x
        for step in steps:
            h = step(params, h)
        return h
    return predict


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------

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


class Architecture:
    """A named model declared by its layer list: specs, init and pure predict derived from it.

    ``name`` is what checkpoints store, ``layers`` a list of :class:`Conv`, :class:`Dense`,
    :class:`Relu`, :class:`MaxPool`, :class:`Flatten`, ``input_shape`` the (C, H, W) of
    one image. The last layer must give the ``NUM_CLASSES`` logits. Calling an
    Architecture is calling its predict function, so it can be passed wherever a
    ``predict_fn(params, x)`` is expected (and ``architecture_of`` finds it from either).
    """

    def __init__(self, name, layers, description, input_shape=INPUT_SHAPE):
        self.name = name
        self.layers = tuple(layers)
        self.input_shape = tuple(input_shape)
        self.description = description
        shapes = layer_shapes(self.layers, self.input_shape)
        if not shapes or shapes[-1][2] != (NUM_CLASSES,):
            raise ValueError(f"layers: {name!r} must end in {NUM_CLASSES} logits, got output "
                             f"shape {shapes[-1][2] if shapes else self.input_shape}")
        self.specs = param_specs(self.layers, self.input_shape)
        self.predict = forward(self.layers)
        self.predict.__name__ = "predict"
        self.predict.__qualname__ = f"Architecture({name!r}).predict"
        self.predict.__doc__ = (
            f"Logits of {name} ({description}).\n\n"
            f"x: (N, {', '.join(map(str, self.input_shape))}) float in [0, 1] -> "
            f"(N, {NUM_CLASSES}) logits, dtype of x.\n\n" + self.summary())
        self.predict.architecture = self

    def __call__(self, params, x):
        return self.predict(params, x)

    def __reduce__(self):
        # a registered architecture pickles by name (its predict function is a closure);
        # another process unpickles the same object from its own registry
        if ARCHITECTURES.get(self.name) is self:
            return get_architecture, (self.name,)
        raise TypeError(f"Architecture {self.name!r} is not registered in ARCHITECTURES, so it "
                        "cannot be sent to another process")

    def layer_shapes(self):
        """[(layer, input shape, output shape)] per example, see :func:`layer_shapes`."""
        return layer_shapes(self.layers, self.input_shape)

    def param_shapes(self):
        """{name: shape} of the parameters, in layer order."""
        return {k: v[0] for k, v in self.specs.items()}

    def init_params(self, seed=0, dtype=onp.float32):
        """Glorot-uniform weights, zero biases; see :func:`init_params`."""
        return _glorot(self.specs, seed, dtype)

    def summary(self):
        """One line per layer: name, kind, output shape (with the batch axis N)."""
        rows = [(getattr(layer, "name", ""), _rule(layer)[2].format(**vars(layer)),
                 "(N, " + ", ".join(map(str, out)) + ")")
                for layer, _, out in self.layer_shapes()]
        w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  -> {c}" for a, b, c in rows)

    def __repr__(self):
        return f"Architecture({self.name!r})"


def _declare(*architectures):
    return {a.name: a for a in architectures}


#: every model the library knows, by the name stored in checkpoints
ARCHITECTURES = _declare(
    Architecture(ARCHITECTURE,
                 [Conv("conv1", 10, 5), Relu(), MaxPool(2), Conv("conv2", 20, 5), Relu(), MaxPool(2),
                  Flatten(), Dense("dense1", 100), Relu(), Dense("dense2", 10)],
                 "the lecture CNN: conv 10@5x5, pool, conv 20@5x5, pool, dense 100, dense 10"),
    # shallow models from the same ops (the lecture's "shallow nets are more robust")
    Architecture("softmax-v1", [Flatten(), Dense("dense1", 10)],
                 "softmax regression: dense 10 on the 784 pixels"),
    Architecture("mlp-v1", [Flatten(), Dense("dense1", 100), Relu(), Dense("dense2", 10)],
                 "one-hidden-layer MLP: dense 100 + ReLU, dense 10"),
)

#: the lecture CNN's predict: (N, 1, 28, 28) float in [0, 1] -> (N, 10) logits, dtype of x
predict = ARCHITECTURES[ARCHITECTURE].predict
#: softmax regression (multinomial logistic regression): (N, 1, 28, 28) -> (N, 10) logits
predict_softmax = ARCHITECTURES["softmax-v1"].predict
#: one hidden layer of 100 ReLUs: (N, 1, 28, 28) -> (N, 10) logits
predict_mlp = ARCHITECTURES["mlp-v1"].predict

#: name -> (shape, fan_in, fan_out) for Glorot initialisation
PARAM_SPECS = ARCHITECTURES[ARCHITECTURE].specs
SOFTMAX_SPECS = ARCHITECTURES["softmax-v1"].specs
MLP_SPECS = ARCHITECTURES["mlp-v1"].specs


def param_shapes():
    """{name: shape} of the lecture CNN."""
    return {k: v[0] for k, v in PARAM_SPECS.items()}


def init_params(seed=0, dtype=onp.float32):
    """Keras-style initialisation of the lecture CNN: Glorot uniform weights, zero biases.

    Glorot & Bengio (2010): W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), where for a
    conv kernel fan_in = in_channels * kh * kw and fan_out = out_channels * kh * kw
    (Keras ``glorot_uniform``). ``seed`` is an int or a ``numpy.random.Generator``.
    Returns a new dict of arrays of ``dtype``.
    """
    return _glorot(PARAM_SPECS, seed, dtype)


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

"""Weight interchange with PyTorch and Keras: plain ``.npz`` files, never pickle.

Our parameters are already a PyTorch ``state_dict`` (names and layouts of
``torch.nn.Conv2d`` / ``torch.nn.Linear``), so the **torch** layout is an identity
copy. The **keras** layout follows ``tf.keras`` / Keras 3 ``Conv2D`` and ``Dense``
with ``data_format="channels_last"`` (their default):

==================  ==========================  ===========================
ours / PyTorch      Keras                       layout change
==================  ==========================  ===========================
conv1.weight        conv2d/kernel               (O, C, kh, kw) -> (kh, kw, C, O)
conv1.bias          conv2d/bias                 (O,) unchanged
conv2.weight        conv2d_1/kernel             as conv1
conv2.bias          conv2d_1/bias
dense1.weight       dense/kernel                (O, I) -> (I, O), rows permuted (below)
dense1.bias         dense/bias
dense2.weight       dense_1/kernel              (O, I) -> (I, O)
dense2.bias         dense_1/bias
==================  ==========================  ===========================

The table is derived from each architecture's layer list (:mod:`scratchadv.model`):
names follow Keras's automatic layer naming (the first ``Conv2D`` of a model is
``conv2d``, the next ``conv2d_1``; ``Dense`` layers ``dense``, ``dense_1``) and its
weight paths ``<layer>/kernel``, ``<layer>/bias``. The arrays are stored in the
order of ``model.get_weights()``, so a Keras user can do::

    z = numpy.load("weights_keras.npz")
    model.set_weights([z[k] for k in z.files])

**Flatten order.** Keras flattens the channels-last activation (H, W, C); we and
PyTorch flatten (C, H, W). For the lecture CNN the 320 inputs of ``dense1`` are
(20, 4, 4) in our order and (4, 4, 20) in Keras's, so the columns of
``dense1.weight`` are permuted: Keras row ``(h * 4 + w) * 20 + c`` is our column
``c * 16 + h * 4 + w``. In general the first ``Dense`` after a ``Flatten`` of a
(C, H, W) activation is permuted this way. For the models that flatten the 1-channel
image directly (``softmax-v1``, ``mlp-v1``) both orders coincide.

Exported files hold only the weight arrays (no metadata entry), so PyTorch or Keras
code reads them with a bare ``numpy.load``. Imported files are checked: names,
shapes, dtypes (float32/float64), finiteness; the architecture is recognised from
the names and shapes. Our own model files are written by
:func:`scratchadv.checkpoint.save_model`.
"""
import os

import numpy as onp

from .checkpoint import CheckpointError, read_arrays, write_npz
from .model import ARCHITECTURES, Conv, Dense, Flatten, get_architecture
from .validate import check_params

__all__ = ["FORMATS", "keras_names", "to_torch_layout", "from_torch_layout",
           "to_keras_layout", "from_keras_layout", "save_arrays", "load_arrays",
           "export_weights", "import_weights", "identify_architecture"]

FORMATS = ("torch", "keras")


def _layers(architecture):
    """[(our layer name, Keras layer name, layer type, flatten input (C, H, W) or None)]
    for the layers with weights, derived by a walk over ``architecture``'s layer list."""
    counts, flattened, out = {"conv2d": 0, "dense": 0}, None, []
    for layer, in_shape, _ in get_architecture(architecture).layer_shapes():
        if isinstance(layer, Flatten) and len(in_shape) == 3:
            flattened = in_shape                      # the next Dense sees (C, H, W) flattened
        elif isinstance(layer, (Conv, Dense)):
            base = "conv2d" if isinstance(layer, Conv) else "dense"
            i = counts[base]
            counts[base] += 1
            chw = flattened if isinstance(layer, Dense) else None
            out.append((layer.name, base if i == 0 else f"{base}_{i}", type(layer), chw))
            if isinstance(layer, Dense):
                flattened = None
    return out


def keras_names(architecture="lecture-cnn-v1"):
    """Keras weight names of ``architecture`` in ``model.get_weights()`` order."""
    out = []
    for _, klayer, _, _ in _layers(architecture):
        out += [f"{klayer}/kernel", f"{klayer}/bias"]
    return out


def _chw_to_hwc_rows(w, chw):
    """dense weight (O, C*H*W) in our column order -> Keras kernel (H*W*C, O)."""
    c, h, wd = chw
    o = w.shape[0]
    return onp.ascontiguousarray(w.reshape(o, c, h, wd).transpose(0, 2, 3, 1).reshape(o, -1).T)


def _hwc_rows_to_chw(k, chw):
    """Keras kernel (H*W*C, O) -> our dense weight (O, C*H*W)."""
    c, h, wd = chw
    o = k.shape[1]
    return onp.ascontiguousarray(k.T.reshape(o, h, wd, c).transpose(0, 3, 1, 2).reshape(o, -1))


def identify_architecture(names_shapes, fmt="torch", name="weights"):
    """The architecture whose ``fmt`` layout has exactly these names and shapes.

    names_shapes: {name: shape}; ``name``: the argument named in the error. The one
    matcher of arrays to architectures (``torch_model.infer_architecture`` is this in the
    torch layout). Raises ``ValueError`` listing what was expected.
    """
    got = {k: tuple(v) for k, v in names_shapes.items()}
    for arch in ARCHITECTURES:
        if _expected_shapes(arch, fmt) == got:
            return arch
    lines = [f"  {a}: {_expected_shapes(a, fmt)}" for a in ARCHITECTURES]
    raise ValueError(f"{name}: names and shapes {got} match no architecture in the {fmt} "
                     "layout; expected one of\n" + "\n".join(lines))


def _expected_shapes(architecture, fmt):
    shapes = {k: tuple(v) for k, v in get_architecture(architecture).param_shapes().items()}
    if fmt == "torch":
        return shapes
    out = {}
    for ours, klayer, kind, _ in _layers(architecture):
        w = shapes[ours + ".weight"]
        out[f"{klayer}/kernel"] = (w[2], w[3], w[1], w[0]) if kind is Conv else (w[1], w[0])
        out[f"{klayer}/bias"] = shapes[ours + ".bias"]
    return out


def _check_arrays(arrays, architecture, fmt, where="weights"):
    check_params(arrays, _expected_shapes(architecture, fmt), where, finite=True,
                 of=f"the {fmt} layout of {architecture!r}")


def to_torch_layout(params, architecture="lecture-cnn-v1"):
    """A ``state_dict``-compatible {name: array} (copies; our layout is PyTorch's)."""
    _check_arrays(params, architecture, "torch", "params")
    return {k: onp.array(params[k], copy=True) for k in _expected_shapes(architecture, "torch")}


def from_torch_layout(arrays, architecture=None):
    """(params, architecture) from {name: array} in PyTorch ``state_dict`` names/layouts."""
    if architecture is None:
        architecture = identify_architecture({k: v.shape for k, v in arrays.items()}, "torch")
    _check_arrays(arrays, architecture, "torch")
    return {k: onp.array(arrays[k], copy=True) for k in _expected_shapes(architecture, "torch")}, \
        architecture


def to_keras_layout(params, architecture="lecture-cnn-v1"):
    """{Keras name: array} in ``model.get_weights()`` order (see the module docstring)."""
    _check_arrays(params, architecture, "torch", "params")
    out = {}
    for ours, klayer, kind, chw in _layers(architecture):
        w = onp.asarray(params[ours + ".weight"])
        if kind is Conv:
            k = onp.ascontiguousarray(w.transpose(2, 3, 1, 0))          # (kh, kw, in, out)
        elif chw is not None:
            k = _chw_to_hwc_rows(w, chw)                                 # flatten order
        else:
            k = onp.ascontiguousarray(w.T)                               # (in, out)
        out[f"{klayer}/kernel"] = k
        out[f"{klayer}/bias"] = onp.array(params[ours + ".bias"], copy=True)
    return out


def from_keras_layout(arrays, architecture=None):
    """(params, architecture) from {Keras name: array}; inverse of :func:`to_keras_layout`."""
    if architecture is None:
        architecture = identify_architecture({k: v.shape for k, v in arrays.items()}, "keras")
    _check_arrays(arrays, architecture, "keras")
    params = {}
    for ours, klayer, kind, chw in _layers(architecture):
        k = arrays[f"{klayer}/kernel"]
        if kind is Conv:
            w = onp.ascontiguousarray(k.transpose(3, 2, 0, 1))          # (out, in, kh, kw)
        elif chw is not None:
            w = _hwc_rows_to_chw(k, chw)
        else:
            w = onp.ascontiguousarray(k.T)
        params[ours + ".weight"] = w
        params[ours + ".bias"] = onp.array(arrays[f"{klayer}/bias"], copy=True)
    return {k: params[k] for k in get_architecture(architecture).param_shapes()}, architecture


def save_arrays(path, arrays):
    """Atomically write {name: array} as an uncompressed ``.npz`` (keys in the given order),
    the arrays only: :func:`scratchadv.checkpoint.write_npz` without metadata."""
    write_npz(path, arrays)


def load_arrays(path):
    """{name: array} from an ``.npz``, with ``allow_pickle=False``; raises CheckpointError
    (:func:`scratchadv.checkpoint.read_arrays`)."""
    return read_arrays(path)


def _check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {list(FORMATS)}, got {fmt!r}")


def export_weights(model_path, out_path, fmt):
    """Read our model file, write its weights in ``fmt`` ("torch" or "keras") to out_path.

    Returns the architecture name.
    """
    from .checkpoint import load_model
    _check_format(fmt)
    params, meta = load_model(model_path)
    arch = meta["architecture"]
    arrays = to_torch_layout(params, arch) if fmt == "torch" else to_keras_layout(params, arch)
    save_arrays(out_path, arrays)
    return arch


def import_weights(in_path, model_path, fmt, architecture=None):
    """Read ``fmt`` weights from in_path and write our model file to model_path.

    The architecture is recognised from names and shapes unless given. Returns it.
    """
    from .checkpoint import save_model
    _check_format(fmt)
    arrays = load_arrays(in_path)
    try:
        if fmt == "torch":
            params, arch = from_torch_layout(arrays, architecture)
        else:
            params, arch = from_keras_layout(arrays, architecture)
    except (ValueError, TypeError) as e:
        other = "keras" if fmt == "torch" else "torch"
        try:
            identify_architecture({k: v.shape for k, v in arrays.items()}, other)
            hint = f" (these are {other}-layout names: use fmt='{other}')"
        except ValueError:
            hint = ""
        if hint:
            raise CheckpointError(f"{os.fspath(in_path)}: not {fmt}-layout weights{hint}") from None
        raise CheckpointError(f"{os.fspath(in_path)}: {e}") from None
    save_model(model_path, params, arch,
               config={"imported_from": os.path.basename(os.fspath(in_path)), "format": fmt})
    return arch

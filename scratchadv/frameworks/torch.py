"""The library's architectures as ``torch.nn.Module``s with the same parameter names.

PyTorch is an optional extra, never a run-time dependency: importing this module does
not import torch; the first call of a function here does (and raises ``ImportError``
with an install hint if torch is missing).

The twin of an architecture is an ``nn.Sequential`` built by walking its layer list
(:mod:`scratchadv.model`), one torch module per layer:

==============================  ===============================================
layer                           torch module (input shape (C, H, W) or (I,))
==============================  ===============================================
``Conv(name, out, k)``          ``nn.Conv2d(C, out, k)`` called ``name``
``Dense(name, out)``            ``nn.Linear(I, out)`` called ``name``
``Relu()``                      ``nn.ReLU()``
``MaxPool(2)``                  ``nn.MaxPool2d(2)``
``Flatten()``                   ``nn.Flatten(1)``: (C, H, W) order, as ours
==============================  ===============================================

Layers with weights are submodules named as ours (``conv1``, ``dense1`` ...; the others
are named by their position), so a module's ``state_dict`` has exactly our parameter
names, layouts and order (``conv1.weight`` is ``(out, in, kh, kw)``, ``dense1.weight``
is ``(out, in)``)::

    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
"""
import collections
import functools

import numpy as onp

from ..model import Conv, Dense, Flatten, MaxPool, Relu, get_architecture

__all__ = ["require_torch", "build_module", "to_torch", "from_torch", "torch_predict",
           "infer_architecture"]

_DTYPES = {"float32": "float32", "float64": "float64"}

#: layer type -> the torch module computing it, from (torch.nn, layer, input shape)
_TORCH_LAYERS = {
    Conv: lambda nn, layer, shape: nn.Conv2d(shape[0], layer.out, layer.size),
    Dense: lambda nn, layer, shape: nn.Linear(shape[0], layer.out),
    Relu: lambda nn, layer, shape: nn.ReLU(),
    MaxPool: lambda nn, layer, shape: nn.MaxPool2d(layer.size),
    Flatten: lambda nn, layer, shape: nn.Flatten(1),
}


def require_torch():
    """Import and return the ``torch`` module, or raise ``ImportError`` with an install hint."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("PyTorch is needed for this (it is an optional extra): "
                          "pip install torch") from e
    return torch


@functools.lru_cache(maxsize=None)
def _module_class():
    """The ``nn.Module`` subclass, defined on first use so torch is imported lazily."""
    nn = require_torch().nn

    class ScratchNet(nn.Sequential):
        """One of the library's architectures; ``forward(x)`` -> logits (N, 10)."""

        def __init__(self, architecture):
            arch = get_architecture(architecture)
            layers = collections.OrderedDict(
                (getattr(layer, "name", str(i)), _TORCH_LAYERS[type(layer)](nn, layer, shape))
                for i, (layer, shape, _) in enumerate(arch.layer_shapes()))
            super().__init__(layers)
            self.architecture = arch.name

        def extra_repr(self):
            return f"architecture={self.architecture!r}"

    return ScratchNet


def _torch_dtype(torch, dtype):
    name = onp.dtype(dtype).name
    if name not in _DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {name}")
    return getattr(torch, name)


def build_module(architecture="lecture-cnn-v1", dtype=onp.float32):
    """A freshly (PyTorch-)initialised ``nn.Module`` of ``architecture`` in ``dtype``."""
    get_architecture(architecture)
    torch = require_torch()
    return _module_class()(architecture).to(_torch_dtype(torch, dtype))


def infer_architecture(names_shapes):
    """Name of the one architecture whose parameter names and shapes are ``names_shapes``.

    names_shapes: {name: shape}. Raises ``ValueError`` when none matches. This is
    :func:`scratchadv.interchange.identify_architecture` in the torch layout.
    """
    from ..interchange import identify_architecture
    return identify_architecture(names_shapes, "torch", name="parameters")


def to_torch(params, architecture="lecture-cnn-v1", dtype=None):
    """An ``nn.Module`` holding copies of ``params`` (our dict of arrays).

    ``dtype``: float32/float64, default the dtype of ``params``. Loading is strict: any
    missing or extra name, or a wrong shape, raises. The module is in eval mode (the
    architectures have no dropout/batch-norm, so this changes nothing but is explicit).
    """
    from ..validate import check_params
    arch = get_architecture(architecture)
    check_params(params, arch.param_shapes())
    if dtype is None:
        dtype = onp.asarray(next(iter(params.values()))).dtype
    torch = require_torch()
    tdt = _torch_dtype(torch, dtype)
    module = build_module(architecture, dtype)
    state = {k: torch.from_numpy(onp.array(v, dtype=onp.dtype(dtype), copy=True))
             for k, v in params.items()}
    module.load_state_dict(state, strict=True)
    return module.to(tdt).eval()


def from_torch(module_or_state_dict, architecture=None, dtype=None):
    """Our params dict (numpy copies) from an ``nn.Module`` or a ``state_dict``.

    ``state_dict`` values may be tensors or numpy arrays. ``architecture``: if given,
    names and shapes must match it; otherwise it is inferred. ``dtype``: cast to it
    (default: keep the tensors' dtype). Returns {name: ndarray}.
    """
    sd = module_or_state_dict
    if hasattr(sd, "state_dict") and callable(sd.state_dict):
        sd = sd.state_dict()
    if not hasattr(sd, "items"):
        raise TypeError(f"module_or_state_dict: expected an nn.Module or a mapping of name -> "
                        f"tensor, got {type(sd).__name__}")
    params = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        params[str(k)] = onp.array(v, copy=True) if dtype is None else onp.array(v, dtype=dtype)
    shapes = {k: v.shape for k, v in params.items()}
    if architecture is None:
        architecture = infer_architecture(shapes)
    from ..validate import check_params
    check_params(params, get_architecture(architecture).param_shapes())
    return params


def torch_predict(module, x, batch_size=1000):
    """Logits (N, 10) as numpy from ``module`` for numpy images x (N, 1, 28, 28), no grad.

    x is converted to the module's dtype (float32 images stay float32 for a float32 module).
    """
    torch = require_torch()
    p = next(module.parameters())
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(onp.ascontiguousarray(x[i:i + batch_size])).to(p.dtype)
            out.append(module(xb).cpu().numpy())
    if not out:
        return onp.zeros((0, 10), dtype=onp.dtype(str(p.dtype).replace("torch.", "")))
    return onp.concatenate(out)

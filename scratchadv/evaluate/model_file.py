"""Evaluate a model file: load it, check it against the images, run the protocol.

The library function behind ``scratchadv evaluate`` and ``scratchadv compare``.
"""
import os

from ..checkpoint import load_model
from ..model import get_architecture
from .protocol import evaluate_model

__all__ = ["evaluate_file"]


def evaluate_file(path, x, y, *, name=None, data=None, **settings):
    """:func:`~scratchadv.evaluate.evaluate_model` on the model stored at ``path``.

    path: a model file of :func:`scratchadv.checkpoint.save_model`; its architecture
    supplies ``predict_fn``. x: (N, 1, 28, 28) images of the parameters' dtype; y: (N,)
    int64. name: the report's name (default: the file name without extension). data:
    a description of x, y stored as the report's ``"data"`` (omitted if None).
    ``settings``: the other keyword arguments of ``evaluate_model``.
    Returns its report plus ``"model"`` (absolute path), ``"architecture"`` and
    ``"model_config"`` (the training settings stored in the file).
    """
    params, meta = load_model(path)
    arch = get_architecture(meta["architecture"])
    dtype = next(iter(params.values())).dtype
    if dtype != x.dtype:
        raise ValueError(f"path: parameters are {dtype}, images are {x.dtype}")
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    report = evaluate_model(params, x, y, predict_fn=arch.predict, name=name, **settings)
    report.update({"model": os.path.abspath(path), "architecture": arch.name,
                   "model_config": meta.get("config", {})})
    if data is not None:
        report["data"] = data
    return report

"""Model and training-state files: ``.npz`` without pickle, plus JSON metadata.

A **model file** is a NumPy ``.npz`` whose arrays are the parameters under their
PyTorch ``state_dict`` names (``conv1.weight`` ...), plus one entry ``__meta__``: the
UTF-8 bytes of a JSON object (a ``uint8`` array, so no pickle is ever needed)::

    {"format": "scratchadv-model", "format_version": 1, "architecture": "lecture-cnn-v1",
     "shapes": {...}, "dtype": "float32", "library_version": "0.1.0",
     "config": {...training config...}, "history": {...}, "created": "..."}

A **training state** (``<out>.state.npz``) holds what ``fit`` needs to resume bit for
bit: parameters under ``param/<name>``, optimizer state under ``opt/<name>``, and
metadata with the epoch, batch position and running sums.

Files are written atomically (temporary file, fsync, rename) and read with
``allow_pickle=False``. Anything unexpected -- object arrays, unknown or missing keys,
wrong shapes or dtypes, non-finite values, truncated files, another architecture --
raises :class:`CheckpointError` naming the file and the problem.
"""
import datetime
import io
import json
import os

import numpy as onp

from . import __version__
from .fileio import atomic_write
from .model import ARCHITECTURES, get_architecture
from .validate import check_params

__all__ = ["CheckpointError", "save_model", "load_model", "read_npz", "write_npz", "read_arrays",
           "save_training_state", "load_training_state", "describe"]

MODEL_FORMAT = "scratchadv-model"
STATE_FORMAT = "scratchadv-training-state"
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A model or training-state file cannot be trusted or does not fit."""


def _json_default(o):
    if isinstance(o, onp.generic):
        return o.item()
    if isinstance(o, onp.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_npz(path, arrays, meta=None):
    """Atomically write ``arrays`` (name -> numeric ndarray, stored in the given order) as an
    uncompressed ``.npz``, plus ``meta`` (a JSON-able dict) as the ``__meta__`` entry unless
    it is None. The one writer of the library's ``.npz`` files (model files, training
    states, exported weights); refuses object arrays with ``TypeError``.
    """
    for k, v in arrays.items():
        if not isinstance(v, onp.ndarray) or v.dtype == object:
            raise TypeError(f"arrays[{k!r}]: expected a numeric numpy array, got {type(v).__name__}")
    payload = dict(arrays)
    if meta is not None:
        blob = json.dumps(meta, default=_json_default, allow_nan=True).encode("utf-8")
        payload[META_KEY] = onp.frombuffer(blob, dtype=onp.uint8)
    buf = io.BytesIO()
    onp.savez(buf, **payload)
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def read_arrays(path):
    """{name: array} of an ``.npz``, read with ``allow_pickle=False``, in the file's order.

    The one reader of ``.npz`` files: anything but an intact archive of numeric arrays
    (no file, a single ``.npy``, object arrays, truncation, corruption) raises
    :class:`CheckpointError` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        z = onp.load(path, allow_pickle=False)
        if not isinstance(z, onp.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: a single .npy array, expected an .npz of named arrays")
        with z:
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise CheckpointError(f"{path}: holds object (pickled) arrays; only numeric arrays "
                                  "are accepted and nothing is ever unpickled") from None
        raise CheckpointError(f"{path}: not a valid .npz file ({e})") from None
    except Exception as e:  # BadZipFile, EOFError, OSError, zlib/struct errors of a damaged archive
        raise CheckpointError(f"{path}: truncated or corrupt .npz file ({type(e).__name__}: {e})") \
            from None


def read_npz(path):
    """(arrays, meta) from an ``.npz`` written by :func:`write_npz` with metadata."""
    path = os.fspath(path)
    arrays = read_arrays(path)
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: no {META_KEY} entry; not a scratchadv file "
                              "(to bring in PyTorch or Keras weights use `scratchadv import`)")
    raw = arrays.pop(META_KEY)
    if raw.dtype != onp.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: {META_KEY} must be a uint8 byte array, got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object")
    return arrays, meta


def _check_param_arrays(path, params, architecture):
    """:func:`scratchadv.validate.check_params` (finite values too), as a CheckpointError."""
    try:
        check_params(params, get_architecture(architecture).param_shapes(), "parameters",
                     finite=True, of=f"architecture {architecture!r}")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def save_model(path, params, architecture="lecture-cnn-v1", config=None, history=None, extra=None):
    """Write a model file (see module docstring). ``params`` must fit ``architecture``."""
    get_architecture(architecture)
    arrays = {k: onp.asarray(v) for k, v in params.items()}
    _check_param_arrays(os.fspath(path), arrays, architecture)
    meta = {
        "format": MODEL_FORMAT, "format_version": 1,
        "architecture": architecture,
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "dtype": str(next(iter(arrays.values())).dtype),
        "library_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config or {},
        "history": history or {},
    }
    if extra:
        meta.update(extra)
    write_npz(path, arrays, meta)


def load_model(path, architecture=None, dtype=None):
    """(params, meta) from a model file, fully checked.

    ``architecture``: if given, the file must be of that architecture. ``dtype``: if
    given (e.g. ``numpy.float64`` for gradient checks), parameters are cast to it.
    """
    path = os.fspath(path)
    arrays, meta = read_npz(path)
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {MODEL_FORMAT!r}"
                              + (" (this is a training state; pass the model file instead)"
                                 if meta.get("format") == STATE_FORMAT else ""))
    arch = meta.get("architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; this library knows "
                              f"{sorted(ARCHITECTURES)}")
    if architecture is not None and arch != architecture:
        raise CheckpointError(f"{path}: architecture {arch!r}, expected {architecture!r}")
    _check_param_arrays(path, arrays, arch)
    if dtype is not None:
        arrays = {k: v.astype(dtype) for k, v in arrays.items()}
    return arrays, meta


def save_training_state(path, params, opt_state, meta):
    """Write what ``fit`` needs to resume: params, optimizer state, progress metadata."""
    arrays = {"param/" + k: onp.asarray(v) for k, v in params.items()}
    arrays.update({"opt/" + k: onp.asarray(v) for k, v in opt_state.items()})
    m = {"format": STATE_FORMAT, "format_version": 1, "library_version": __version__}
    m.update(meta)
    write_npz(path, arrays, m)


def load_training_state(path):
    """(params, opt_state, meta) from :func:`save_training_state`'s file, checked."""
    path = os.fspath(path)
    arrays, meta = read_npz(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    other = [k for k in arrays if not k.startswith(("param/", "opt/"))]
    if other:
        raise CheckpointError(f"{path}: unexpected entries {other}")
    arch = meta.get("architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}")
    _check_param_arrays(path, params, arch)
    for k, v in opt.items():
        if v.dtype.kind not in "fiu" or (v.dtype.kind == "f" and not onp.all(onp.isfinite(v))):
            raise CheckpointError(f"{path}: optimizer entry {k} is not a finite numeric array")
    return params, opt, meta


def describe(path):
    """A human-readable summary of a model or training-state file (for ``scratchadv info``).

    "label: value" lines whose values start in one column, and a table of the arrays
    (name, shape, dtype) whose columns line up, whatever the lengths of names and labels.
    """
    arrays, meta = read_npz(path)
    head = [("file", os.fspath(path)), ("format", meta.get("format"))]
    head += [(key, meta[key]) for key in ("architecture", "dtype", "library_version", "created")
             if key in meta]
    tail = [("parameters", f"{sum(v.size for v in arrays.values()):,}")]
    cfg = meta.get("config") or {}
    if cfg:
        tail.append(("config", ", ".join(f"{k}={v}" for k, v in cfg.items())))
    hist = meta.get("history") or {}
    tail += [(f"final {k}", f"{hist[k][-1]:.4f}")
             for k in ("loss", "accuracy", "val_loss", "val_accuracy") if hist.get(k)]
    tail += [(k, meta[k]) for k in ("train_acc", "test_acc", "epoch", "batch") if k in meta]
    width = max(len(label) for label, _ in head + tail) + 2       # "label:" and one space

    def field(label, value):
        return f"{label + ':':<{width}}{value}"
    rows = [(k, str(v.shape), str(v.dtype)) for k, v in arrays.items()]
    w0, w1 = (max((len(r[i]) for r in rows), default=0) for i in (0, 1))
    return "\n".join([field(*f) for f in head] + ["arrays:"]
                     + [f"  {k:<{w0}}  {shape:<{w1}}  {dtype}" for k, shape, dtype in rows]
                     + [field(*f) for f in tail])

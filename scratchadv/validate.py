"""Checks at the public boundary. Each raises ``TypeError``/``ValueError`` naming the
argument, what was expected and what came. Nothing here converts or rescales: a
wrong input is refused, never silently fixed.
"""
import numbers

import numpy as onp

__all__ = ["check_images", "check_labels", "check_target", "check_params",
           "check_int", "check_float", "check_choice", "check_names", "check_flag"]

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def _describe(a):
    return f"array of shape {a.shape} and dtype {a.dtype}"


def check_images(x, name="x", shape=IMAGE_SHAPE, check_range=True):
    """x must be a float32/float64 ndarray (N, 1, 28, 28), N >= 1, finite, in [0, 1]."""
    if not isinstance(x, onp.ndarray):
        raise TypeError(f"{name}: expected a numpy array of shape (N, {', '.join(map(str, shape))}) "
                        f"and dtype float32, got {type(x).__name__}")
    if x.dtype not in (onp.float32, onp.float64):
        raise TypeError(f"{name}: expected dtype float32 (or float64) with values in [0, 1], "
                        f"got dtype {x.dtype}")
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected shape (N, {', '.join(map(str, shape))}), got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name}: expected at least one image, got an empty batch {x.shape}")
    if not onp.all(onp.isfinite(x)):
        raise ValueError(f"{name}: expected finite values, got "
                         f"{int(onp.sum(~onp.isfinite(x)))} NaN/Inf entries")
    if check_range:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}: expected values in [0, 1], got min {lo:g} and max {hi:g}"
                             " (scale pixels by 1/255 first)")
    return x


def check_labels(y, n=None, name="y", num_classes=NUM_CLASSES):
    """y must be an integer ndarray (n,) with values in 0..num_classes-1."""
    if not isinstance(y, onp.ndarray):
        raise TypeError(f"{name}: expected a numpy integer array of shape (N,), "
                        f"got {type(y).__name__}")
    if not onp.issubdtype(y.dtype, onp.integer):
        raise TypeError(f"{name}: expected an integer dtype (class indices), got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name}: expected shape (N,), got {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels (one per image), got {y.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name}: expected class indices in 0..{num_classes - 1}, "
                         f"got min {int(y.min())} and max {int(y.max())}")
    return y


def check_target(target, n, y=None, name="target", num_classes=NUM_CLASSES):
    """None (untargeted), one class for the batch, or an (n,) array -> (n,) int64 or None.

    With ``y`` given, a target equal to a sample's true label is refused: a targeted
    attack towards the class the image already has is meaningless.
    """
    if target is None:
        return None
    if isinstance(target, (bool, onp.bool_)):
        raise TypeError(f"{name}: expected a class index 0..{num_classes - 1}, got {target!r}")
    if isinstance(target, numbers.Integral):
        if not 0 <= int(target) < num_classes:
            raise ValueError(f"{name}: expected a class index in 0..{num_classes - 1}, got {target}")
        t = onp.full(n, int(target), dtype=onp.int64)
    else:
        t = check_labels(target, n, name=name, num_classes=num_classes).astype(onp.int64)
    if y is not None and onp.any(t == y):
        i = int(onp.flatnonzero(t == y)[0])
        raise ValueError(f"{name}: expected a class different from the true label, got "
                         f"{int(t[i])} for sample {i} whose label is {int(y[i])}")
    return t


def check_params(params, shapes, name="params", finite=False, of=None):
    """params must be a dict with exactly the names of ``shapes``, each a float32 or float64
    array (or an autograd box of one) of that shape, all of one dtype.

    ``finite``: also refuse NaN and Inf entries (for arrays read from files; off for the
    checks on every training step). ``of``: what the names belong to, for the messages
    (e.g. "the keras layout of 'mlp-v1'"). The one checker of named parameter arrays:
    :mod:`scratchadv.checkpoint` and :mod:`scratchadv.interchange` call it and re-raise
    with the file name. Raises ``TypeError`` (type, dtype) or ``ValueError`` (names, shape,
    values); returns params.
    """
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of named arrays, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        raise ValueError(f"{name}: expected the names{' of ' + of if of else ''} {list(shapes)}, "
                         f"missing {missing}, unexpected {extra}")
    dtypes = set()
    for k, shape in shapes.items():
        v = params[k]
        if not isinstance(v, onp.ndarray) and not hasattr(v, "_value"):
            raise TypeError(f"{name}[{k!r}]: expected a numpy array, got {type(v).__name__}")
        val = getattr(v, "_value", v)
        if getattr(val, "dtype", None) not in (onp.float32, onp.float64):
            raise TypeError(f"{name}[{k!r}]: expected dtype float32 or float64, "
                            f"got {getattr(val, 'dtype', type(val).__name__)}")
        if tuple(val.shape) != tuple(shape):
            raise ValueError(f"{name}[{k!r}]: expected shape {tuple(shape)}"
                             f"{' (' + of + ')' if of else ''}, got {tuple(val.shape)}")
        if finite and not onp.all(onp.isfinite(val)):
            raise ValueError(f"{name}[{k!r}]: expected finite values, got "
                             f"{int(onp.sum(~onp.isfinite(val)))} NaN/Inf entries")
        dtypes.add(val.dtype)
    if len(dtypes) > 1:
        raise TypeError(f"{name}: expected one dtype for all arrays, got mixed dtypes "
                        f"{sorted(map(str, dtypes))}")
    return params


def check_int(v, name, minimum=None, maximum=None):
    """v must be an int (not bool) within [minimum, maximum]."""
    if isinstance(v, (bool, onp.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: expected an integer <= {maximum}, got {v}")
    return int(v)


def check_float(v, name, minimum=None, maximum=None, strict_min=False):
    """v must be a finite real number within the given bounds."""
    if isinstance(v, (bool, onp.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {v!r}")
    v = float(v)
    if not onp.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if minimum is not None and (v <= minimum if strict_min else v < minimum):
        raise ValueError(f"{name}: expected a number {'>' if strict_min else '>='} {minimum}, got {v:g}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}: expected a number <= {maximum}, got {v:g}")
    return v


def check_flag(v, name):
    """v must be True or False (a numpy bool too) -> bool."""
    if not isinstance(v, (bool, onp.bool_)):
        raise TypeError(f"{name}: expected True or False, got {v!r}")
    return bool(v)


def check_names(values, name, choices, what="name", unique=False):
    """A non-empty sequence of names, each one of ``choices`` (and each once if ``unique``)
    -> list."""
    values = list(values)
    if not values:
        raise ValueError(f"{name}: expected at least one {what}, got none")
    for v in values:
        if v not in choices:
            raise ValueError(f"{name}: expected names from {sorted(choices)}, got {v!r}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name}: expected each {what} once, got {values}")
    return values


def check_choice(v, name, choices):
    if v not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {v!r}")
    return v

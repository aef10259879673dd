"""Finite-difference gradient checks, first and second order, with a per-parameter report.

The analytic gradients come from ``autograd``; the reference is the central difference

    f'(x; v) ~ (f(x + eps v) - f(x - eps v)) / (2 eps)        (error O(eps^2) + O(u / eps))

in float64 (u ~ 1e-16, so eps = 1e-6 leaves about 1e-10 relative error; in float32 the
rounding term alone is ~1e-1, which is why checks refuse float32 inputs).

For every checked array ("row" of the report: one entry of a parameter dict, or an
array argument) the check compares

* single coordinates: all of them if the array has at most ``coords`` entries, else
  ``coords`` entries drawn at random (a full sweep of the 32,000 weights of ``dense1``
  would cost 64,000 evaluations and add little), and
* ``directions`` random unit directions confined to that array, which see every entry
  at once (an error spread thinly over many weights shows up here).

Order 2 (as ``autograd.test_util.check_grads(order=2)``, but reported per parameter):
with a fixed random direction ``v`` over all checked arguments, the scalar function
``h(args) = <grad f(args), v>`` is checked to first order; its gradient is the
Hessian-vector product ``H v``, i.e. every second derivative (including mixed ones
such as d/dW d/dx, the core of double backpropagation) is exercised.

Errors (same definitions as ``scripts/compare_torch.py``): for the compared values
``a`` (analytic) and ``n`` (numerical) of a row,

    abs_err = max |a - n|,   rel_err = abs_err / max |n|   (abs_err if max |n| == 0)

and a row passes when ``abs_err <= atol + rtol * max |n|``.

Finite differences need a point where ``f`` is differentiable. ReLU and max pooling
have kinks; exact ties (zero biases on blank backgrounds, equal values in a pooling
window) sit *on* them, and there no finite difference can confirm a one-sided
derivative. Failing rows are therefore re-examined with one-sided differences, and a
row whose forward and backward differences disagree is flagged ``kink`` in the table.
Check at generic points (random non-zero biases, images jittered off exact ties);
the tie conventions themselves are verified against PyTorch by
``scripts/compare_torch.py``.
"""
import inspect

import numpy as onp
from autograd import grad

__all__ = ["numerical_gradient", "directional_derivative", "check_gradients",
           "format_table", "GradientCheckError"]

DEFAULT_EPS = 1e-6
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-8


class GradientCheckError(AssertionError):
    """A gradient differs from its finite-difference estimate; ``.rows`` holds the report."""

    def __init__(self, message, rows):
        super().__init__(message)
        self.rows = rows


# ---------------------------------------------------------------------------
# Structures: an argument is an array or a dict of arrays
# ---------------------------------------------------------------------------

def _require_float64(value, name):
    if isinstance(value, dict):
        for k, v in value.items():
            _require_float64(v, f"{name}[{k!r}]")
        return
    if not isinstance(value, onp.ndarray):
        raise TypeError(f"{name}: expected a numpy array or a dict of arrays, got "
                        f"{type(value).__name__}")
    if value.dtype != onp.float64:
        raise TypeError(f"{name}: gradient checks run in float64 (float32 central differences "
                        f"are dominated by rounding); got dtype {value.dtype}. "
                        "Cast with .astype(numpy.float64).")


def _leaves(value):
    """[(key, array)]: key is None for a bare array, the dict key otherwise."""
    if isinstance(value, dict):
        return list(value.items())
    return [(None, value)]


def _replace(value, key, array):
    if key is None:
        return array
    out = dict(value)
    out[key] = array
    return out


def _leaf(value, key):
    return value if key is None else value[key]


def _vdot(a, b):
    """<a, b> for arrays or dicts of arrays (autograd-differentiable in a)."""
    if isinstance(b, dict):     # a may be an autograd DictBox, b is a plain dict
        return sum(_vdot(a[k], b[k]) for k in b)
    import autograd.numpy as anp
    return anp.sum(a * b)


def _call(f, args):
    out = f(*args)
    val = getattr(out, "_value", out)
    if onp.ndim(val) != 0:
        raise ValueError(f"f: expected a scalar output, got shape {onp.shape(val)}")
    return float(val)


# ---------------------------------------------------------------------------
# Numerical derivatives
# ---------------------------------------------------------------------------

def _shifted(args, i, key, base, delta):
    arr = base + delta
    args = list(args)
    args[i] = _replace(args[i], key, arr)
    return args


def _central(f, args, i, key, v, eps):
    base = _leaf(args[i], key)
    hi = _call(f, _shifted(args, i, key, base, eps * v))
    lo = _call(f, _shifted(args, i, key, base, -eps * v))
    return (hi - lo) / (2 * eps)


def _one_sided(f, args, i, key, v, eps):
    """(forward, backward) differences: unequal (beyond rounding) at a kink of f."""
    base = _leaf(args[i], key)
    f0 = _call(f, args)
    hi = _call(f, _shifted(args, i, key, base, eps * v))
    lo = _call(f, _shifted(args, i, key, base, -eps * v))
    return (hi - f0) / eps, (f0 - lo) / eps


def _unit(shape, index):
    v = onp.zeros(shape)
    v[index] = 1.0
    return v


def numerical_gradient(f, x, eps=DEFAULT_EPS):
    """Central-difference gradient of a scalar function, every coordinate.

    f: callable taking x alone and returning a scalar. x: float64 array, or dict of
    float64 arrays. Returns an array (or dict) of x's shapes, float64. Costs 2 * size
    evaluations of f.
    """
    _require_float64(x, "x")
    out = {}
    for key, arr in _leaves(x):
        g = onp.zeros(arr.shape)
        for idx in onp.ndindex(arr.shape):
            g[idx] = _central(f, (x,), 0, key, _unit(arr.shape, idx), eps)
        out[key] = g
    return out[None] if not isinstance(x, dict) else out


def directional_derivative(f, x, v, eps=DEFAULT_EPS):
    """Central-difference estimate of d/dt f(x + t v) at t = 0 (x, v: arrays or dicts)."""
    _require_float64(x, "x")
    if isinstance(x, dict):
        plus = {k: x[k] + eps * v[k] if k in v else x[k] for k in x}
        minus = {k: x[k] - eps * v[k] if k in v else x[k] for k in x}
    else:
        plus, minus = x + eps * v, x - eps * v
    return (_call(f, (plus,)) - _call(f, (minus,))) / (2 * eps)


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------

def _arg_names(f, n):
    try:
        names = [p.name for p in inspect.signature(f).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]


def _random_like(value, rng):
    """A random direction of value's structure, unit norm per leaf."""
    def unit(shape):
        v = rng.standard_normal(shape)
        return v / max(onp.linalg.norm(v), 1e-300)
    if isinstance(value, dict):
        return {k: unit(v.shape) for k, v in value.items()}
    return unit(value.shape)


def _check_first_order(f, args, wrt, names, coords, directions, eps, rtol, atol, rng,
                       order_label):
    rows = []
    for i in wrt:
        g_all = grad(f, i)(*args)
        for key, arr in _leaves(args[i]):
            g = onp.asarray(_leaf(g_all, key), dtype=onp.float64)
            label = names[i] if key is None else f"{names[i]}[{key}]"
            size = arr.size
            if size <= coords:
                picks = list(onp.ndindex(arr.shape))
                what = f"all {size}"
            else:
                flat = rng.choice(size, size=coords, replace=False)
                picks = [onp.unravel_index(j, arr.shape) for j in onp.sort(flat)]
                what = f"{coords} of {size}"
            dirs = [_random_like(arr, rng) for _ in range(directions)]
            if dirs:
                what += f" + {len(dirs)} dir"
            vecs = [_unit(arr.shape, idx) for idx in picks] + dirs
            ana = onp.array([float(onp.sum(g * v)) for v in vecs])
            num = onp.array([_central(f, args, i, key, v, eps) for v in vecs])
            scale = float(onp.max(onp.abs(num))) if len(num) else 0.0
            tol = atol + rtol * scale
            err = onp.abs(ana - num)
            kinks, unmatched = 0, None
            for j in onp.flatnonzero(err > tol):
                # Is f differentiable along vecs[j]? At a kink crossed by the step the
                # central difference averages two slopes; the analytic value must then
                # equal one of the one-sided slopes (which side depends on where the
                # point sits, or on the tie rule when it sits exactly on the kink).
                fwd, bwd = _one_sided(f, args, i, key, vecs[j], eps)
                # smooth f: fwd - bwd = eps * f''(v, v) + rounding, far below this
                if abs(fwd - bwd) > max(100 * tol, 1e-4 * scale):
                    kinks += 1
                    err[j] = min(abs(ana[j] - fwd), abs(ana[j] - bwd))
                    if err[j] > 10 * tol and unmatched is None:
                        unmatched = (ana[j], fwd, bwd)
                    elif err[j] <= 10 * tol:
                        err[j] = min(err[j], tol)   # matched: counts as within tolerance
            abs_err = float(onp.max(err)) if len(err) else 0.0
            rel_err = abs_err / scale if scale > 0 else abs_err
            passed = abs_err <= tol
            note = ""
            if unmatched is not None:
                note = (f"at a kink (ReLU/max-pool tie): analytic {unmatched[0]:.6g} matches "
                        f"neither one-sided difference {unmatched[1]:.6g} / {unmatched[2]:.6g}")
            elif kinks:
                note = (f"{kinks} comparison(s) straddle a kink; analytic = one-sided difference "
                        "there")
            rows.append({
                "order": order_label, "name": label, "checked": what,
                "max_abs_grad": float(onp.max(onp.abs(g))) if g.size else 0.0,
                "abs_err": abs_err, "rel_err": rel_err, "passed": bool(passed), "note": note,
            })
    return rows


def check_gradients(f, args, wrt=None, order=1, *, coords=16, directions=2,
                    eps=DEFAULT_EPS, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, rng=None,
                    names=None, raise_on_failure=True):
    """Check autograd's gradients of the scalar ``f(*args)`` against central differences.

    f: callable returning a scalar (float64). args: tuple of arguments; each checked
    argument is a float64 ndarray or a dict of float64 ndarrays (a parameter dict).
    wrt: index or indices of the arguments to check (default: every array/dict
    argument). order: 1 checks first derivatives; 2 also checks second derivatives via
    the gradient of ``<grad f, v>`` for a random direction ``v`` over all ``wrt``
    arguments (see the module docstring). coords / directions: how many single
    entries and random unit directions per array (see module docstring). rng:
    ``numpy.random.Generator`` (default ``default_rng(0)``: same call, same picks).
    names: labels of the arguments (default: f's parameter names).

    Returns the report: a list of row dicts with keys order, name, checked,
    max_abs_grad, abs_err, rel_err, passed, note. Raises :class:`GradientCheckError`
    (an ``AssertionError``) with :func:`format_table` of the report when a row fails
    and ``raise_on_failure``.
    """
    from .validate import check_int, check_float, check_choice
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args: expected a tuple of arguments, got {type(args).__name__}")
    args = tuple(args)
    check_choice(order, "order", (1, 2))
    coords = check_int(coords, "coords", minimum=0)
    directions = check_int(directions, "directions", minimum=0)
    if coords + directions == 0:
        raise ValueError("coords, directions: expected at least one comparison per array, got 0 and 0")
    eps = check_float(eps, "eps", minimum=0, strict_min=True)
    rtol = check_float(rtol, "rtol", minimum=0)
    atol = check_float(atol, "atol", minimum=0)
    if rng is None:
        rng = onp.random.default_rng(0)
    elif not isinstance(rng, onp.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, (dict, onp.ndarray))]
    elif isinstance(wrt, int):
        wrt = [wrt]
    wrt = list(wrt)
    for i in wrt:
        check_int(i, "wrt", minimum=0, maximum=len(args) - 1)
    if not wrt:
        raise ValueError("wrt: no array or dict argument to check")
    names = list(names) if names is not None else _arg_names(f, len(args))
    if len(names) < len(args):
        names += [f"arg{i}" for i in range(len(names), len(args))]
    for i in wrt:
        _require_float64(args[i], names[i])
    _call(f, args)                       # a scalar? (a clear error before autograd's)

    rows = _check_first_order(f, args, wrt, names, coords, directions, eps, rtol, atol,
                              rng, 1)
    if order == 2:
        v = {i: _random_like(args[i], rng) for i in wrt}

        def h(*a):
            # <grad f(a), v> over every checked argument: its gradient is H v
            return sum(_vdot(grad(f, i)(*a), v[i]) for i in wrt)
        rows += _check_first_order(h, args, wrt, names, coords, directions, eps, rtol, atol,
                                   rng, 2)
    if raise_on_failure and not all(r["passed"] for r in rows):
        bad = sum(not r["passed"] for r in rows)
        raise GradientCheckError(
            f"gradient check failed for {bad} of {len(rows)} arrays "
            f"(pass: abs_err <= {atol:g} + {rtol:g} * max|numerical|)\n" + format_table(rows),
            rows)
    return rows


def format_table(rows, title=None):
    """The report as a fixed-width text table (one line per row, notes below)."""
    head = f"{'order':>5}  {'array':<28} {'compared':<22} {'max|grad|':>10} " \
           f"{'abs err':>9} {'rel err':>9}  result"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['order']:>5}  {r['name']:<28} {r['checked']:<22} "
                     f"{r['max_abs_grad']:>10.3e} {r['abs_err']:>9.2e} {r['rel_err']:>9.2e}  "
                     f"{'ok' if r['passed'] else 'FAIL'}")
        if r.get("note"):
            lines.append(f"{'':>7}{r['note']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The network's three gradients (what `scratchadv gradcheck` runs)
# ---------------------------------------------------------------------------

def generic_point(params, x, rng, jitter=1e-3, bias_scale=0.1):
    """Move (params, x) off exact ReLU/max-pool ties so finite differences are meaningful.

    Zero biases are replaced by N(0, bias_scale^2) draws (freshly initialised networks
    have zero biases, and on blank backgrounds every pre-activation then sits exactly
    on the ReLU kink). Images become ``2 jitter + (1 - 4 jitter) x + U(-jitter, jitter)``:
    inside [jitter, 1 - jitter] (finite-difference steps stay within [0, 1], which the
    losses check), no exact ties left, and kinks typically ~1e-4 away, far beyond the
    1e-6 finite-difference step. Returns new float64 (params, x).
    """
    p = {}
    for k, v in params.items():
        v = onp.asarray(v, dtype=onp.float64)
        if k.endswith(".bias") and not onp.any(v):
            v = bias_scale * rng.standard_normal(v.shape)
        p[k] = v
    x = onp.asarray(x, dtype=onp.float64)
    if jitter:
        x = 2 * jitter + (1 - 4 * jitter) * x + jitter * rng.uniform(-1, 1, size=x.shape)
    return p, x


def check_network(params, x, y, *, predict_fn=None, lam=1.0, order=1, coords=16,
                  directions=2, eps=DEFAULT_EPS, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL,
                  rng=None):
    """Check the gradients the library uses, for a network ``predict_fn(params, x)``.

    params: dict of float64 arrays; x: float64 (N, 1, 28, 28); y: int (N,).
    Four checks (each a :func:`check_gradients` report, never raising):

    ``loss / params``      training gradient  d loss / dW
    ``loss / x``           attack gradient    d loss / dx
    ``penalty / params``   d/dW (1/N) sum_i ||d loss_i / d x_i||^2  -- the double-backprop
                           term alone (inside the full loss it is small and could hide)
    ``gradreg loss / params``  d/dW of ``losses.gradient_regularized_loss(..., lam)``

    With ``order=2`` each is also checked to second order. Returns a list of
    ``(title, rows)``.
    """
    from .losses import loss, gradient_regularized_loss, input_gradient
    from .model import predict
    from .validate import check_images, check_labels
    predict_fn = predict if predict_fn is None else predict_fn
    check_images(x)
    check_labels(y, len(x))
    rng = onp.random.default_rng(0) if rng is None else rng
    n = x.shape[0]

    def penalty(p):
        g = input_gradient(p, x, y, predict_fn)
        import autograd.numpy as anp
        return anp.sum(g * g) / n

    checks = [
        ("loss / params", lambda p: loss(p, x, y, predict_fn), (params,), ("params",)),
        ("loss / x", lambda xx: loss(params, xx, y, predict_fn), (x,), ("x",)),
        ("penalty / params", penalty, (params,), ("params",)),
        (f"gradreg loss (lam={lam:g}) / params",
         lambda p: gradient_regularized_loss(p, x, y, lam, predict_fn), (params,), ("params",)),
    ]
    out = []
    for title, f, args, names in checks:
        rows = check_gradients(f, args, order=order, coords=coords, directions=directions,
                               eps=eps, rtol=rtol, atol=atol, rng=rng, names=names,
                               raise_on_failure=False)
        out.append((title, rows))
    return out

"""Cross-framework gradient verification: the same network, weights and batch in
scratchadv and in PyTorch, JAX or TensorFlow (``scratchadv verify``).

Compared, in float64 and in float32 (each framework's twin: :mod:`scratchadv.frameworks`):

==================  ================================================================
logits              ``predict(params, x)``                                   (N, 10)
loss                mean cross-entropy                                       scalar
grad W              d loss / d W for every parameter (the training gradient)
grad x              d sum_i loss_i / d x: row i is d loss_i / d x_i (the attack gradient)
double-backprop W   d/dW [loss + lam * (1/N) sum_i ||d loss_i / d x_i||^2], the
                    gradient-regularized loss of :mod:`scratchadv.losses` (Drucker &
                    LeCun 1992, Ross & Doshi-Velez 2018): the input gradient is
                    differentiated again (torch ``create_graph=True``, ``jax.grad``
                    of ``jax.grad``, nested ``tf.GradientTape``\\ s)
penalty W           d/dW (1/N) sum_i ||d loss_i / d x_i||^2 alone: the second-order
                    part of the row above, which the plain loss gradient could hide
hvp x               d/dx <d sum_i loss_i / d x, v>: a Hessian-vector product w.r.t.
                    the input, for a fixed N(0, 1) direction v (:func:`direction`)
pgd step            one Linf PGD step without random start:
                    clip(x + a * sign(grad x), max(x - eps, 0), min(x + eps, 1));
                    compared as x_adv - x on the pixels whose gradient sign is
                    determined at the target precision, |g_i| > target * max|g|
                    (elsewhere both gradients are equal to within the target and
                    sign() may legitimately differ); such sign flips are counted
==================  ================================================================

Errors: for our value ``a`` and the framework's ``b``: abs err = max |a - b|, rel err =
max |a - b| / max |b| (0/0 counts as 0). Targets (:data:`TARGETS`): 1e-10 in float64,
1e-4 in float32. The images include real MNIST digits, whose blank backgrounds make
exact ReLU zeros and max-pool ties everywhere: the libraries must then agree on the
conventions (ReLU'(0) = 0, the whole pooling gradient to the first maximum of a
window), or the input gradients differ by percents. :func:`conventions` measures each
framework's conventions by probes; :func:`compare` uses the measured pooling rule.

**Pooling ties decided by rounding.** scratchadv's convolution computes identical
patches to identical values, so a window whose four entries see the same input patch
holds four equal numbers and routes its gradient to the first. Another framework's
CPU convolution may round the same patch differently at different output positions
(seen with PyTorch on an AMD EPYC CPU: 0.05545797828941565 twice and
0.05545797828941566 twice where scratchadv has 0.055457978289415635 four times), and
its max-pool then routes the gradient to another entry. That is no disagreement about
the rule but about the last ulp of the window's values, and it decides a pixel's
gradient wholly. Each comparison therefore first finds the windows that the two
libraries route differently, each read from its own pre-pool values by its own rule
(:func:`routing`; every framework measured so far routes to the first maximum): the
forward quantities are compared on every image, the gradients on the images with no
such window, and the report says how many windows and images were set aside.

**The correction for another tie rule.** A framework whose measured pooling rule is
not "first" (:func:`pool_rule`) is compared on jittered images
(:func:`scratchadv.gradcheck.generic_point`'s image jitter, 1e-3): exact ties then no
longer occur, so no rule decides anything; the rows say ``correction: jittered``.
"""
import functools

import numpy as onp

from .model import Conv, MaxPool, Relu, get_architecture

__all__ = ["FRAMEWORKS", "TARGETS", "errors", "direction", "ours", "theirs", "routing",
           "receptive_fields", "affected_pixels", "pool_rule", "compare", "format_rows",
           "image_sets", "run", "summary", "verify", "framework_version", "conventions",
           "format_conventions", "tie_rule_impact"]

#: the frameworks :func:`verify` knows, with the module of each twin
FRAMEWORKS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
#: rel err targets per dtype
TARGETS = {"float64": 1e-10, "float32": 1e-4}
#: the pip extra installing each framework
_EXTRAS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}

ROUTING_DEPENDENT = ("grad_W", "dbp_W", "pen_W", "grad_x", "hvp_x", "pgd_delta")


def row_passes(row, target):
    """A quantity agrees if ours and theirs differ by at most ``target`` (relative), or, in
    float32, if each is within ``target`` of the float64 result (``ours_vs_f64``,
    ``theirs_vs_f64``): then both are right to float32 precision and their difference is
    the sum of two roundings. That happens for the small second-order gradients of a very
    confident model (loss ~1e-4), whose float32 values carry a few 1e-5 of rounding each."""
    if row["rel_err"] <= target:
        return True
    return row.get("ours_vs_f64", float("inf")) <= target and row.get("theirs_vs_f64", float("inf")) <= target


# ---------------------------------------------------------------------------
# Checks of the arguments
# ---------------------------------------------------------------------------

def _names(value, known, param):
    """``value`` (a comma-separated string or a list) as a tuple of distinct names, each
    one of ``known``; else ``ValueError`` naming ``param``."""
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    names = [s for s in names if s]
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise ValueError(f"{param}: expected some of {', '.join(known)}, got "
                         f"{', '.join(map(repr, bad)) if bad else 'none'}")
    return tuple(dict.fromkeys(names))


def check_frameworks(against):
    """``against`` as a tuple of framework names (a comma-separated string or a list)."""
    return _names(against, tuple(FRAMEWORKS), "against")


def check_dtypes(dtypes):
    """``dtypes`` as a tuple of 'float64'/'float32' (a comma-separated string or a list
    of names or numpy dtypes)."""
    if not isinstance(dtypes, str):
        dtypes = [d if isinstance(d, str) else onp.dtype(d).name for d in dtypes]
    return _names(dtypes, tuple(TARGETS), "dtypes")


def _twin(framework):
    """The twin module of ``framework`` (imports the module, not the framework)."""
    import importlib
    return importlib.import_module(f".frameworks.{FRAMEWORKS[framework]}", __package__)


def framework_version(framework):
    """The installed version of ``framework`` (imports it), or None when it is missing."""
    try:
        mod = {"torch": lambda: _twin("torch").require_torch(),
               "jax": lambda: _twin("jax").require_jax(),
               "tensorflow": lambda: _twin("tensorflow").require_tensorflow()}[framework]()
    except ImportError:
        return None
    return mod.__version__


# ---------------------------------------------------------------------------
# The quantities, in each library
# ---------------------------------------------------------------------------

def direction(x, seed=0):
    """The fixed direction v of the Hessian-vector product: N(0, 1), x's shape and dtype."""
    return onp.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)


def ours(params, x, y, *, architecture="lecture-cnn-v1", lam=1.0, eps=0.3, step_size=0.01,
         v=None):
    """Every compared quantity computed by scratchadv, as numpy arrays in x's dtype.

    params: dict of arrays (cast to x's dtype); x: (N, C, H, W) in [0, 1]; y: (N,) int64;
    v: the HVP direction (default :func:`direction`). Returns {"logits", "loss",
    "grad_W": {name: array}, "grad_x", "dbp_W": {...}, "pen_W": {...}, "hvp_x",
    "pgd_delta", "pool_inputs": [(N, C, H, W) per pooling layer]}.
    """
    import autograd.numpy as anp
    from autograd import grad

    from .attacks import pgd
    from .losses import gradient_regularized_loss, input_gradient, loss
    predict_fn = get_architecture(architecture).predict
    v = direction(x) if v is None else v
    params = {k: onp.asarray(w, dtype=x.dtype) for k, w in params.items()}

    def penalty(p):
        g = input_gradient(p, x, y, predict_fn)
        return anp.sum(g * g) / x.shape[0]

    out = {
        "logits": onp.asarray(predict_fn(params, x)),
        "loss": onp.asarray(loss(params, x, y, predict_fn)),
        "grad_W": grad(loss)(params, x, y, predict_fn),
        "grad_x": input_gradient(params, x, y, predict_fn),
        "dbp_W": grad(gradient_regularized_loss)(params, x, y, lam, predict_fn),
        "pen_W": grad(penalty)(params),
        "hvp_x": grad(lambda xx: anp.sum(input_gradient(params, xx, y, predict_fn) * v))(x),
    }
    x_adv = pgd(params, x, y, eps=eps, steps=1, step_size=step_size, norm="linf",
                random_start=False, keep_best=False, predict_fn=predict_fn).x_adv
    out["pgd_delta"] = x_adv - x
    out["pool_inputs"] = our_pool_inputs(params, x, architecture)
    return out


def our_pool_inputs(params, x, architecture="lecture-cnn-v1"):
    """The input of each max-pooling layer as scratchadv computes it: a list of
    (N, C, H, W) arrays, one per pooling layer of the architecture's layer list."""
    from .model import forward
    out, h = [], x
    for layer in get_architecture(architecture).layers:
        if isinstance(layer, MaxPool):
            out.append(onp.asarray(h))
        h = forward([layer])(params, h)
    return out


def _pgd_step(x, g, eps, step_size, sign, clip):
    """clip(x + a * sign(g), max(x - eps, 0), min(x + eps, 1)) - x, in any framework."""
    lo, hi = clip(x - eps, 0.0, None), clip(x + eps, None, 1.0)
    return clip(x + step_size * sign(g), lo, hi) - x


def _torch(params, x, y, *, architecture, lam, eps, step_size, v, nudge):
    torch = _twin("torch").require_torch()
    F = torch.nn.functional
    module = _twin("torch").to_torch(params, architecture, dtype=x.dtype)
    pool_inputs = []
    pools = [m for m in module.modules() if isinstance(m, torch.nn.MaxPool2d)]
    for i, pool in enumerate(pools):
        delta = None
        if nudge is not None and nudge[0] == i:
            delta = torch.from_numpy(onp.asarray(nudge[1], dtype=x.dtype))

        def pre_hook(mod, inputs, delta=delta):
            h = inputs[0] if delta is None else inputs[0] + delta
            if len(pool_inputs) < len(pools):          # the first forward pass only
                pool_inputs.append(h.detach().cpu().numpy())
            return (h,)
        pool.register_forward_pre_hook(pre_hook)
    names = [k for k, _ in module.named_parameters()]
    weights = [p for _, p in module.named_parameters()]
    xt = torch.from_numpy(onp.array(x)).requires_grad_(True)
    yt = torch.from_numpy(onp.asarray(y, dtype=onp.int64))
    n = x.shape[0]

    logits = module(xt)
    ce = F.cross_entropy(logits, yt, reduction="none")           # per example, (N,)
    mean_loss = ce.mean()
    g_w = torch.autograd.grad(mean_loss, weights, retain_graph=True)
    # the input gradient of the summed loss, kept differentiable for double backprop
    (g_x,) = torch.autograd.grad(ce.sum(), xt, create_graph=True)
    penalty = (g_x * g_x).sum() / n
    dbp = torch.autograd.grad(mean_loss + lam * penalty, weights, retain_graph=True)
    (hvp,) = torch.autograd.grad(g_x, xt, grad_outputs=torch.from_numpy(v), retain_graph=True)
    pen = torch.autograd.grad(penalty, weights)
    with torch.no_grad():
        delta = _pgd_step(xt.detach(), g_x.detach(), eps, step_size, torch.sign,
                          lambda t, lo, hi: torch.clamp(t, min=lo, max=hi))

    def np_(t):
        return t.detach().cpu().numpy()
    return {"logits": np_(logits), "loss": np_(mean_loss),
            "grad_W": {k: np_(t) for k, t in zip(names, g_w)}, "grad_x": np_(g_x),
            "dbp_W": {k: np_(t) for k, t in zip(names, dbp)},
            "pen_W": {k: np_(t) for k, t in zip(names, pen)}, "hvp_x": np_(hvp),
            "pgd_delta": np_(delta), "pool_inputs": pool_inputs}


def _jax(params, x, y, *, architecture, lam, eps, step_size, v, nudge):
    twin = _twin("jax")
    jax = twin.require_jax()
    import jax.numpy as jnp
    n = x.shape[0]
    with twin.x64():
        def nudged(k, h):
            return h + jnp.asarray(nudge[1], h.dtype) if nudge is not None and nudge[0] == k else h
        predict = twin.build_predict(architecture, pool_hook=nudged)
        recorded = []
        twin.build_predict(architecture, pool_hook=lambda k, h: recorded.append(
            onp.asarray(nudged(k, h))) or nudged(k, h))(twin.to_jax(params, architecture), x)
        p, xj, vj = twin.to_jax(params, architecture), jnp.asarray(x), jnp.asarray(v)
        yj = jnp.asarray(y)

        def per_example(p, xx):
            logp = jax.nn.log_softmax(predict(p, xx), axis=1)
            return -jnp.take_along_axis(logp, yj[:, None], axis=1)[:, 0]

        def mean_loss(p):
            return jnp.mean(per_example(p, xj))

        def grad_x(p, xx):
            return jax.grad(lambda z: jnp.sum(per_example(p, z)))(xx)

        def penalty(p):
            g = grad_x(p, xj)
            return jnp.sum(g * g) / n

        g_x = grad_x(p, xj)
        out = {"logits": predict(p, xj), "loss": mean_loss(p), "grad_W": jax.grad(mean_loss)(p),
               "grad_x": g_x,
               "dbp_W": jax.grad(lambda q: mean_loss(q) + lam * penalty(q))(p),
               "pen_W": jax.grad(penalty)(p),
               "hvp_x": jax.grad(lambda z: jnp.sum(grad_x(p, z) * vj))(xj),
               "pgd_delta": _pgd_step(xj, g_x, eps, step_size, jnp.sign, jnp.clip)}
        out = jax.tree_util.tree_map(onp.asarray, out)
    out["pool_inputs"] = recorded
    return out


def _tensorflow(params, x, y, *, architecture, lam, eps, step_size, v, nudge):
    twin = _twin("tensorflow")
    tf = twin.require_tensorflow()
    n = x.shape[0]

    def nudged(k, h):
        return h + tf.constant(nudge[1], h.dtype) if nudge is not None and nudge[0] == k else h
    predict = twin.build_predict(architecture, pool_hook=nudged)
    recorded = []
    twin.build_predict(architecture, pool_hook=lambda k, h: recorded.append(
        nudged(k, h).numpy()) or nudged(k, h))(twin.to_tensorflow(params, architecture),
                                             tf.constant(x))
    p = twin.to_tensorflow(params, architecture)
    names, weights = list(p), list(p.values())
    xt, vt = tf.constant(x), tf.constant(v)
    yt = tf.constant(onp.asarray(y, dtype=onp.int64))
    # nested tapes: the inner one gives the input gradient, the outer one (which also
    # records the inner's computation) differentiates it again
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(xt)
        with tf.GradientTape() as inner:
            inner.watch(xt)
            logits = predict(p, xt)
            logp = tf.nn.log_softmax(logits, axis=1)
            ce = -tf.gather(logp, yt, axis=1, batch_dims=1)
            total = tf.reduce_sum(ce)
        g_x = inner.gradient(total, xt)
        mean_loss = tf.reduce_mean(ce)
        penalty = tf.reduce_sum(g_x * g_x) / n
        objective = mean_loss + lam * penalty
        gv = tf.reduce_sum(g_x * vt)
    g_w = outer.gradient(mean_loss, weights)
    dbp = outer.gradient(objective, weights)
    pen = outer.gradient(penalty, weights)
    hvp = outer.gradient(gv, xt)
    del outer
    delta = _pgd_step(xt, g_x, eps, step_size, tf.sign,
                      lambda t, lo, hi: tf.clip_by_value(t, t.dtype.min if lo is None else lo,
                                                         t.dtype.max if hi is None else hi))
    return {"logits": logits.numpy(), "loss": mean_loss.numpy(),
            "grad_W": {k: t.numpy() for k, t in zip(names, g_w)}, "grad_x": g_x.numpy(),
            "dbp_W": {k: t.numpy() for k, t in zip(names, dbp)},
            "pen_W": {k: t.numpy() for k, t in zip(names, pen)}, "hvp_x": hvp.numpy(),
            "pgd_delta": delta.numpy(), "pool_inputs": recorded}


_THEIRS = {"torch": _torch, "jax": _jax, "tensorflow": _tensorflow}


def theirs(params, x, y, *, framework="torch", architecture="lecture-cnn-v1", lam=1.0, eps=0.3,
           step_size=0.01, v=None, nudge=None):
    """The quantities of :func:`ours` computed by ``framework`` on the same weights and images.

    Also returns ``pool_inputs``: the framework's own inputs of each max-pooling layer
    (NCHW). ``nudge``: None, or ``(k, delta)`` with ``delta`` an array of the shape of the
    k-th pooling layer's input, added to the framework's values there (after the ReLU).
    It simulates, on any CPU, a convolution that rounds tied values apart (tests use a
    few ulps on one tied entry); the addition is part of the graph.
    """
    framework = check_frameworks([framework])[0]
    v = direction(x) if v is None else onp.asarray(v, dtype=x.dtype)
    params = {k: onp.asarray(w, dtype=x.dtype) for k, w in params.items()}
    return _THEIRS[framework](params, x, y, architecture=architecture, lam=lam, eps=eps,
                              step_size=step_size, v=v, nudge=nudge)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------

def errors(a, b):
    """(abs err, rel err) = (max|a - b|, max|a - b| / max|b|), computed in float64."""
    a = onp.asarray(a, dtype=onp.float64)
    b = onp.asarray(b, dtype=onp.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    d = float(onp.max(onp.abs(a - b))) if a.size else 0.0
    s = float(onp.max(onp.abs(b))) if b.size else 0.0
    return d, (d / s if s > 0 else (0.0 if d == 0 else float("inf")))


def _windows(h):
    """(N, C, H, W) -> (N, C, H/2, W/2, 4), entries in row-major window order."""
    n, c, hh, ww = h.shape
    return onp.asarray(h, dtype=onp.float64).reshape(n, c, hh // 2, 2, ww // 2, 2) \
        .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hh // 2, ww // 2, 4)


def _tied(h):
    """(N, C, H/2, W/2) bool: windows whose maximum, above 0, occurs more than once."""
    w = _windows(h)
    m = w.max(-1, keepdims=True)
    return ((w == m).sum(-1) > 1) & (m[..., 0] > 0)


def routing(ours_pool_inputs, theirs_pool_inputs, n, framework="torch", rule="first"):
    """Where the two libraries route a pooling gradient to different entries.

    Each side's routing is read from its own window values: ours by the first-max rule,
    the framework's by ``rule`` (its measured rule, :func:`pool_rule`; for a rule other
    than "first" every exactly tied window of the framework counts as routed
    differently). Returns {"layers": [per pooling layer: windows, ours_exact_ties,
    <framework>_exact_ties (windows whose maximum occurs more than once, above 0),
    routed_differently, near_tie_max_rel_gap], "differs": [per layer (N, C, H/2, W/2)
    bool], "images": (n,) bool, an image with at least one such window}; n is the number
    of images (the lists are empty for a network without pooling).
    ``near_tie_max_rel_gap``: over the differently routed windows, the largest relative
    gap between the values of the two chosen entries (on either side): a few ulps when
    rounding alone decides, large when the libraries disagree about something real.
    """
    from .ops import pool_argmax
    layers, differs = [], []
    images = onp.zeros(n, dtype=bool)
    for h_ours, h_theirs in zip(ours_pool_inputs, theirs_pool_inputs):
        ka, kb = pool_argmax(h_ours), pool_argmax(h_theirs)
        diff = ka != kb
        if rule != "first":
            diff |= _tied(h_theirs)
        gap = 0.0
        for h in (h_ours, h_theirs):
            w = _windows(h)                                     # (N, C, H/2, W/2, 4)
            va = onp.take_along_axis(w, ka[..., None].astype(onp.intp), -1)[..., 0][diff]
            vb = onp.take_along_axis(w, kb[..., None].astype(onp.intp), -1)[..., 0][diff]
            if va.size:
                scale = onp.maximum(onp.abs(va), onp.abs(vb))
                gap = max(gap, float(onp.max(onp.abs(va - vb) / onp.where(scale > 0, scale, 1))))
        layers.append({"windows": int(ka.size), "ours_exact_ties": int(_tied(h_ours).sum()),
                       f"{framework}_exact_ties": int(_tied(h_theirs).sum()),
                       "routed_differently": int(diff.sum()), "near_tie_max_rel_gap": gap})
        differs.append(diff)
        images |= diff.reshape(n, -1).any(1)
    return {"layers": layers, "differs": differs, "images": images}


def receptive_fields(architecture="lecture-cnn-v1"):
    """[(stride, size)] per pooling layer: output (p, q) of the k-th pooling layer sees
    the input pixels [stride p, stride p + size) x [stride q, stride q + size).
    Walked from the layer list (lecture CNN: (2, 6) and (4, 16))."""
    out, stride, size = [], 1, 1
    for layer in get_architecture(architecture).layers:
        if isinstance(layer, (Conv, MaxPool)):
            size += (layer.size - 1) * stride
        if isinstance(layer, MaxPool):
            stride *= layer.size
            out.append((stride, size))
    return out


def affected_pixels(differs, architecture="lecture-cnn-v1"):
    """(N, H, W) bool: the input pixels whose gradient can change when the windows in
    ``differs`` (from :func:`routing`) are routed differently: each window's receptive
    field. Elsewhere the input gradients of the two libraries must agree."""
    h, w = get_architecture(architecture).input_shape[1:]
    n = len(differs[0]) if differs else 0
    out = onp.zeros((n, h, w), dtype=bool)
    for diff, (s, size) in zip(differs, receptive_fields(architecture)):
        for a, _, p, q in zip(*onp.nonzero(diff)):
            out[a, s * p:s * p + size, s * q:s * q + size] = True
    return out


def _jitter(x, amount=1e-3, seed=0):
    """The image jitter of :func:`scratchadv.gradcheck.generic_point`, in x's dtype:
    no exact ties are left, so no tie rule decides a gradient."""
    rng = onp.random.default_rng(seed)
    return (2 * amount + (1 - 4 * amount) * x
            + amount * rng.uniform(-1, 1, size=x.shape)).astype(x.dtype)


def compare(params, x, y, *, framework="torch", architecture="lecture-cnn-v1", lam=1.0, eps=0.3,
            step_size=0.01, nudge=None, rule=None):
    """Rows {quantity, abs_err, rel_err, scale} comparing :func:`ours` with :func:`theirs`.

    Computed in x's dtype (params are cast to it). One row per quantity, and one per
    parameter for the weight gradients; the pgd row also counts gradient-sign flips.
    In float32 each row also has ``ours_vs_f64`` and ``theirs_vs_f64``: each library's
    rel err against our float64 result, which shows how much of the float32
    disagreement is float32 rounding that both libraries share.

    Logits and loss are compared on every image. The gradients are compared on the
    images where no pooling window is routed differently (:func:`routing`); their rows
    say how many images that was (``images_compared``, ``images_set_aside``). A last row,
    ``pooling routing``, gives the windows set aside (not an error: its rel_err is 0).
    ``rule``: the framework's pooling tie rule, default the measured :func:`pool_rule`;
    for a rule other than "first" the images are jittered first (the module notes).
    ``nudge``: see :func:`theirs`.
    """
    framework = check_frameworks([framework])[0]
    rule = pool_rule(framework) if rule is None else rule
    dtype = x.dtype
    correction = None
    if rule != "first" and any(isinstance(la, MaxPool)
                               for la in get_architecture(architecture).layers):
        x, correction = _jitter(x), "jittered"
    params = {k: onp.asarray(v, dtype=dtype) for k, v in params.items()}
    kw = dict(architecture=architecture, lam=lam, eps=eps, step_size=step_size)

    def both(idx):
        xs, ys = x[idx], y[idx]
        a_ = ours(params, xs, ys, **kw)
        b_ = theirs(params, xs, ys, framework=framework, nudge=None if nudge is None else
                    (nudge[0], nudge[1][idx]), **kw)
        return a_, b_, routing(a_["pool_inputs"], b_["pool_inputs"], len(xs), framework, rule)

    everything = onp.arange(len(x))
    a, b, route = both(everything)
    ga, gb, idx = a, b, everything[~route["images"]]
    if route["images"].any():
        # recompute the gradients on the other images; a smaller batch may round
        # differently, so their routing is checked again
        for _ in range(3):
            if not len(idx):
                break
            ga, gb, again = both(idx)
            if not again["images"].any():
                break
            idx = idx[~again["images"]]
    keep = onp.zeros(len(x), dtype=bool)
    keep[idx] = True
    set_aside = len(x) - len(idx)
    if dtype != onp.float64:
        p64 = {k: v.astype(onp.float64) for k, v in params.items()}
        ref_all = ours(p64, x.astype(onp.float64), y, **kw)
        ref_sub = ref_all if not set_aside else ours(p64, x[keep].astype(onp.float64), y[keep], **kw)
    rows = []

    def add(name, key, sub=None):
        sa, sb = (ga, gb) if key in ROUTING_DEPENDENT else (a, b)
        va, vb = (sa[key], sb[key]) if sub is None else (sa[key][sub], sb[key][sub])
        if key in ROUTING_DEPENDENT and not keep.any():
            d, r = float("nan"), float("inf")      # nothing left to compare: not verified
        else:
            d, r = errors(va, vb)
        row = {"quantity": name, "abs_err": d, "rel_err": r,
               "scale": float(onp.max(onp.abs(onp.asarray(vb, dtype=onp.float64)), initial=0.0))}
        if key in ROUTING_DEPENDENT:
            row["images_compared"] = int(keep.sum())
            row["images_set_aside"] = set_aside
        if dtype != onp.float64:
            rr = ref_sub if key in ROUTING_DEPENDENT else ref_all
            vr = rr[key] if sub is None else rr[key][sub]
            row["ours_vs_f64"] = errors(va, vr)[1]
            row["theirs_vs_f64"] = errors(vb, vr)[1]
        if correction:
            row["correction"] = correction
        rows.append(row)

    add("logits", "logits")
    add("loss", "loss")
    for key, label in (("grad_W", "grad W"), ("dbp_W", "double-backprop W"),
                       ("pen_W", "penalty W")):
        for k in params:
            add(f"{label} [{k}]", key, k)
    add("grad x", "grad_x")
    add("hvp x", "hvp_x")
    rows.append(_pgd_row(ga, gb, keep, set_aside, TARGETS[onp.dtype(dtype).name]))
    if correction:
        rows[-1]["correction"] = correction
    rows.append({"quantity": "pooling routing", "abs_err": 0.0, "rel_err": 0.0, "scale": 0.0,
                 "windows_routed_differently": sum(la["routed_differently"]
                                                   for la in route["layers"]),
                 "images_set_aside": set_aside, "layers": route["layers"], "rule": rule})
    return rows


def _pgd_row(a, b, keep, set_aside, target):
    """The PGD-step row: sign() is discontinuous at 0, so compare the step where the
    framework's gradient sign is determined at the target precision."""
    g = onp.abs(onp.asarray(b["grad_x"], dtype=onp.float64))
    determined = g > target * g.max(initial=0.0)
    flip = onp.sign(a["grad_x"]) != onp.sign(b["grad_x"])
    if keep.any():
        d, r = errors(a["pgd_delta"][determined], b["pgd_delta"][determined])
    else:
        d, r = float("nan"), float("inf")
    return {"quantity": "pgd step (x_adv - x)", "abs_err": d, "rel_err": r,
            "scale": float(onp.max(onp.abs(b["pgd_delta"]), initial=0.0)),
            "sign_flips": int(flip.sum()), "flips_where_determined": int((flip & determined).sum()),
            "undetermined_pixels": int((~determined).sum()),
            "abs_err_all_pixels": errors(a["pgd_delta"], b["pgd_delta"])[0],
            "images_compared": int(keep.sum()), "images_set_aside": set_aside}


def worst(rows, prefix):
    """Largest (abs_err, rel_err) among rows whose quantity starts with ``prefix``."""
    sel = [r for r in rows if r["quantity"].startswith(prefix)]
    return max(r["abs_err"] for r in sel), max(r["rel_err"] for r in sel)


def format_rows(rows, target, title=None, framework="torch"):
    """The rows of :func:`compare` as a text table, one line per quantity."""
    lines = [title] if title else []
    f64 = any("ours_vs_f64" in r for r in rows)
    short = {"tensorflow": "tf"}.get(framework, framework)
    head = f"{'quantity':<34} {'max|' + short + '|':>10} {'abs err':>10} {'rel err':>10}  " + \
        (f"{'ours/f64':>9} {short + '/f64':>9}  " if f64 else "") + "result"
    lines += [head, "-" * len(head)]
    for r in rows:
        if r["quantity"] == "pooling routing":
            w = sum(la["windows"] for la in r["layers"])
            lines.append(f"pooling windows routed differently by {framework}'s rounding: "
                         f"{r['windows_routed_differently']} of {w}"
                         + (f" (largest gap {max(la['near_tie_max_rel_gap'] for la in r['layers']):.1e}"
                            f" relative); their {r['images_set_aside']} image(s) are left out of "
                            "the gradient rows" if r["windows_routed_differently"] else ""))
            continue
        ok = row_passes(r, target)
        extra = (f"  ({r['sign_flips']} sign flips where |g| <= target * max|g|)"
                 if r.get("sign_flips") else "")
        ref = ""
        if f64:
            ref = (f"{r['ours_vs_f64']:>9.1e} {r['theirs_vs_f64']:>9.1e}  " if "ours_vs_f64" in r
                   else f"{'':>9} {'':>9}  ")
        verdict = ("ok" if r["rel_err"] <= target else "ok (each within target of float64)") if ok \
            else "OVER " + format(target, "g")
        lines.append(f"{r['quantity']:<34} {r['scale']:>10.3e} {r['abs_err']:>10.2e} "
                     f"{r['rel_err']:>10.2e}  {ref}{verdict}"
                     f"{extra}")
    if any(r.get("correction") for r in rows):
        lines.append(f"compared on jittered images: {framework}'s pooling tie rule is not "
                     "the first maximum")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Batches, runs, the whole verification
# ---------------------------------------------------------------------------

def image_sets(n, seed, data=None, which=("mnist", "random")):
    """{name: (x float32, y int64, description)}: MNIST test digits (or, without the data,
    synthetic blank-background digits) and uniform noise, all in [0, 1]."""
    rng = onp.random.default_rng(seed)
    out = {}
    if "mnist" in which:
        try:
            from .data import load_mnist
            _, _, x_test, y_test = load_mnist(data)
            pick = onp.sort(rng.choice(len(x_test), size=n, replace=False))
            shown = pick.tolist()[:8]
            out["mnist"] = (x_test[pick], y_test[pick],
                            f"{n} MNIST test images {shown}"[:-1] + (", ...]" if n > 8 else "]"))
        except Exception as e:        # no data: synthetic digits keep the exact ties
            x = onp.zeros((n, 1, 28, 28), dtype=onp.float32)
            for i in range(n):
                cy, cx = rng.integers(8, 20, size=2)
                x[i, 0, cy - 4:cy + 4, cx - 3:cx + 3] = rng.uniform(0.5, 1.0, size=(8, 6))
            out["mnist"] = (x, rng.integers(0, 10, size=n).astype(onp.int64),
                            f"synthetic blank-background digits (MNIST not found: {e})")
    if "random" in which:
        out["random"] = (rng.uniform(0, 1, size=(n, 1, 28, 28)).astype(onp.float32),
                         rng.integers(0, 10, size=n).astype(onp.int64), "uniform noise")
    return out


def run(cases, image_sets_, *, framework="torch", lam=1.0, eps=0.3, step_size=0.01,
        dtypes=("float64", "float32"), verbose=True, out=print):
    """Compare every (weights, images, dtype) with ``framework``.

    cases: {name: (params, architecture)}. Returns (report list, all_ok); prints each
    table through ``out`` when ``verbose``.
    """
    report, all_ok = [], True
    for wname, (params, arch) in cases.items():
        for iname, (x, y, desc) in image_sets_.items():
            for dt in dtypes:
                xx = x.astype(dt)
                rows = compare(params, xx, y, framework=framework, architecture=arch, lam=lam,
                               eps=eps, step_size=step_size)
                target = TARGETS[dt]
                ok = all(row_passes(r, target) for r in rows)
                all_ok &= ok
                ties = float(onp.mean(xx == 0))
                title = (f"\n== {framework} | {wname} ({arch}) | {desc} | {dt} | exact zeros: "
                         f"{ties:.0%} | target rel err <= {target:g}")
                if verbose:
                    out(format_rows(rows, target, title, framework))
                report.append({"framework": framework, "weights": wname, "architecture": arch,
                               "images": iname, "images_description": desc, "dtype": dt,
                               "target": target, "passed": ok, "zero_pixel_fraction": ties,
                               "rows": rows})
    return report, all_ok


GROUPS = ("logits", "loss", "grad W", "grad x", "double-backprop W", "penalty W", "hvp x",
          "pgd step")


def summary(report):
    """Worst relative error per (dtype, quantity group) over every case of a report."""
    out = {}
    for dt in sorted({c["dtype"] for c in report}):
        rows = [r for c in report if c["dtype"] == dt for r in c["rows"]]
        out[dt] = {g: max(r["rel_err"] for r in rows if r["quantity"].startswith(g))
                   for g in GROUPS if any(r["quantity"].startswith(g) for r in rows)}
        out[dt]["pgd sign flips (undetermined pixels)"] = sum(r.get("sign_flips", 0) for r in rows)
        out[dt]["pooling windows routed differently"] = sum(
            r.get("windows_routed_differently", 0) for r in rows)
    return out


def verify(cases, *, against=("torch", "jax", "tensorflow"), dtypes=("float64", "float32"),
           n=16, seed=0, data=None, images=("mnist", "random"), lam=1.0, eps=0.3,
           step_size=0.01, verbose=True, out=print):
    """Compare scratchadv with each framework of ``against`` on every case.

    cases: {name: (params, architecture name)}; against, dtypes: names (or
    comma-separated strings); n images per set (``images``: mnist, random) drawn with
    ``seed``. A framework that is not installed gets one line and is skipped. Returns
    {"passed": every compared quantity within its target and something compared,
    "frameworks": {name: {"version", "installed", "passed", "worst", "cases"}}, ...}.
    """
    from .validate import check_int
    against, dtypes = check_frameworks(against), check_dtypes(dtypes)
    images = _names(images, ("mnist", "random"), "images")
    check_int(n, "n", minimum=1)
    if not cases:
        raise ValueError("cases: nothing to compare")
    sets = image_sets(n, seed, data, images)
    doc = {"passed": True, "targets": TARGETS, "rel_err_definition":
           "max|ours - theirs| / max|theirs|", "lam": lam, "eps": eps, "step_size": step_size,
           "frameworks": {}}
    compared = False
    for fw in against:
        version = framework_version(fw)
        if version is None:
            out(f"{fw}: not installed, skipped (pip install 'scratchadv[{_EXTRAS[fw]}]')")
            doc["frameworks"][fw] = {"installed": False, "version": None}
            continue
        if verbose:
            out(f"\nscratchadv vs {fw} {version}; rel err = max|ours - {fw}| / max|{fw}|")
        report, ok = run(cases, sets, framework=fw, lam=lam, eps=eps, step_size=step_size,
                         dtypes=dtypes, verbose=verbose, out=out)
        worst_ = summary(report)
        compared = True
        doc["passed"] &= ok
        doc["frameworks"][fw] = {"installed": True, "version": version, "passed": ok,
                                 "worst": worst_, "cases": report}
        for dt, groups in worst_.items():
            ok_dt = all(c["passed"] for c in report if c["dtype"] == dt)
            out(f"{fw} {dt} (target {TARGETS[dt]:g}): {'ok' if ok_dt else 'OVER TARGET'}; worst "
                + ", ".join(f"{g} {v:.1e}" if isinstance(v, float) else f"{g} {v}"
                            for g, v in groups.items()))
    doc["passed"] &= compared
    if not compared:
        out("nothing verified: none of " + ", ".join(against) + " is installed")
    return doc


# ---------------------------------------------------------------------------
# Conventions, measured by probes on crafted inputs
# ---------------------------------------------------------------------------
#
# Each library answers the same five small questions through an adapter of four
# functions over float64/float32 numpy arrays:
#   relu_grad(z)       d sum relu(z) / dz             the library's ReLU
#   maximum_grad(z)    d sum maximum(z, 0) / dz       ReLU written as an elementwise max
#   pool_grad(x)       d sum maxpool2x2(x) / dx       x (N, C, H, W)
#   reduce_grad(x)     d max(x) / dx                  a plain reduction over a vector
#   log_softmax(z)     (value, d sum log_softmax(z)[:, 0] / dz)
# The probe functions below interpret the answers.

def _ours_adapter():
    import autograd.numpy as anp
    from autograd import grad

    from . import ops
    return {
        "relu_grad": grad(lambda z: anp.sum(ops.relu(z))),
        "maximum_grad": grad(lambda z: anp.sum(anp.maximum(z, 0.0))),
        "pool_grad": grad(lambda x: anp.sum(ops.maxpool2d(x))),
        "reduce_grad": grad(lambda x: anp.max(x)),
        "log_softmax": lambda z: (ops.log_softmax(z), grad(lambda u: anp.sum(ops.log_softmax(u)[:, 0]))(z)),
    }


def _torch_adapter():
    torch = _twin("torch").require_torch()

    def g(f):
        def d(a):
            t = torch.from_numpy(onp.array(a)).requires_grad_(True)
            (r,) = torch.autograd.grad(f(t), t)
            return r.numpy()
        return d

    def lsm(z):
        t = torch.from_numpy(onp.array(z)).requires_grad_(True)
        v = torch.log_softmax(t, 1)
        (r,) = torch.autograd.grad(v[:, 0].sum(), t)
        return v.detach().numpy(), r.numpy()
    return {"relu_grad": g(lambda t: torch.relu(t).sum()),
            "maximum_grad": g(lambda t: torch.maximum(t, torch.zeros_like(t)).sum()),
            "pool_grad": g(lambda t: torch.nn.functional.max_pool2d(t, 2).sum()),
            "reduce_grad": g(lambda t: torch.amax(t)), "log_softmax": lsm}


def _jax_adapter():
    twin = _twin("jax")
    jax = twin.require_jax()
    import jax.numpy as jnp

    def g(f):
        def d(a):
            with twin.x64():
                return onp.asarray(jax.grad(f)(jnp.asarray(a)))
        return d

    def pool_sum(x):
        return jnp.sum(twin._JAX_LAYERS[MaxPool](MaxPool(2), {}, x))

    def lsm(z):
        with twin.x64():
            zz = jnp.asarray(z)
            return (onp.asarray(jax.nn.log_softmax(zz, axis=1)),
                    onp.asarray(jax.grad(lambda u: jnp.sum(jax.nn.log_softmax(u, axis=1)[:, 0]))(zz)))
    return {"relu_grad": g(lambda z: jnp.sum(jax.nn.relu(z))),
            "maximum_grad": g(lambda z: jnp.sum(jnp.maximum(z, 0.0))),
            "pool_grad": g(pool_sum), "reduce_grad": g(jnp.max), "log_softmax": lsm}


def _tensorflow_adapter():
    tf = _twin("tensorflow").require_tensorflow()

    def g(f):
        def d(a):
            t = tf.constant(a)
            with tf.GradientTape() as tape:
                tape.watch(t)
                r = f(t)
            return tape.gradient(r, t).numpy()
        return d

    def pool_sum(t):       # NCHW in, as every probe; the op itself runs NHWC
        return tf.reduce_sum(tf.nn.max_pool2d(tf.transpose(t, (0, 2, 3, 1)), 2, 2, "VALID"))

    def lsm(z):
        t = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(t)
            v = tf.nn.log_softmax(t, axis=1)
            s = tf.reduce_sum(v[:, 0])
        return v.numpy(), tape.gradient(s, t).numpy()
    return {"relu_grad": g(lambda t: tf.reduce_sum(tf.nn.relu(t))),
            "maximum_grad": g(lambda t: tf.reduce_sum(tf.maximum(t, tf.zeros_like(t)))),
            "pool_grad": g(pool_sum), "reduce_grad": g(tf.reduce_max), "log_softmax": lsm}


_ADAPTERS = {"scratchadv": _ours_adapter, "torch": _torch_adapter, "jax": _jax_adapter,
             "tensorflow": _tensorflow_adapter}


def _tie_windows(dtype):
    """(1, 2, 2, 30) images holding the 15 tie patterns of a 2x2 window twice (once at
    1.0 and once at 0.37; the entries outside the pattern 0.25 below), and the patterns:
    window k of channel c has its maxima at the entries set in bit pattern k + 1."""
    x = onp.zeros((1, 2, 2, 30), dtype=dtype)
    pats = list(range(1, 16))
    for c, top in enumerate((1.0, 0.37)):
        for k, pat in enumerate(pats):
            for e in range(4):
                i, j = divmod(e, 2)
                x[0, c, i, 2 * k + j] = top if pat >> e & 1 else top - 0.25
    return x, pats


def _classify(shares_list):
    """'first', 'last', 'split' or 'mixed' from the gradient shares of tied entries:
    each item the gradients of the tied entries of one window, in row-major order."""
    rules = set()
    for s in shares_list:
        s = onp.asarray(s, dtype=onp.float64)
        if onp.allclose(s, 1.0 / len(s)):
            rules.add("split" if len(s) > 1 else "single")
        elif s[0] == 1 and not s[1:].any():
            rules.add("first")
        elif s[-1] == 1 and not s[:-1].any():
            rules.add("last")
        else:
            rules.add("other")
    rules.discard("single")
    return rules.pop() if len(rules) == 1 else "mixed: " + ", ".join(sorted(rules))


def _pool_probe(adapter, dtype=onp.float64):
    x, pats = _tie_windows(dtype)
    g = adapter["pool_grad"](x)
    shares = []
    for c in range(2):
        for k, pat in enumerate(pats):
            win = g[0, c, :, 2 * k:2 * k + 2].reshape(4)        # row-major window entries
            tied = [e for e in range(4) if pat >> e & 1]
            if onp.any(win[[e for e in range(4) if e not in tied]]):
                return "other (gradient to a smaller entry)"
            shares.append(win[tied])
    return _classify(shares)


def pool_rule(framework):
    """The measured max-pooling tie rule of ``framework`` ('first', 'last', 'split',
    ...), probed on the 15 tie patterns of a 2x2 window (:func:`conventions`)."""
    return _pool_rule_cached(framework)


@functools.lru_cache(maxsize=None)
def _pool_rule_cached(framework):
    return _pool_probe(_ADAPTERS[framework]())


_PROBE_LABELS = {"relu_grad": "grad of relu", "maximum_grad": "grad of maximum(z, 0)",
                 "pool_grad": "grad of max-pool", "reduce_grad": "grad of max",
                 "log_softmax": "log_softmax", "log_softmax_grad": "grad of log_softmax"}


def _probe(adapter, dtype_name):
    dt = onp.dtype(dtype_name)
    z = onp.array([-1.0, 0.0, 1.0], dtype=dt)
    relu0 = float(adapter["relu_grad"](z)[1])
    max0 = float(adapter["maximum_grad"](z)[1])
    reduce_rule = _classify([adapter["reduce_grad"](onp.full(4, 0.5, dtype=dt)),
                             adapter["reduce_grad"](onp.array([0.5, 0.5, 0.1, 0.0], dt))[:2]])
    big = onp.array([[1000.0, 0.0, -1000.0]], dtype=dt)
    value, g = adapter["log_softmax"](big)
    stable = bool(onp.all(onp.isfinite(value)) and onp.all(onp.isfinite(g))
                  and onp.allclose(value, [[0.0, -1000.0, -2000.0]]))
    x, _ = _tie_windows(dt)
    dtypes = {k: onp.asarray(adapter[k](a)).dtype.name for k, a in
              (("relu_grad", z), ("maximum_grad", z), ("pool_grad", x), ("reduce_grad", z))}
    dtypes["log_softmax"] = onp.asarray(value).dtype.name
    dtypes["log_softmax_grad"] = onp.asarray(g).dtype.name
    odd = {_PROBE_LABELS[k]: v for k, v in dtypes.items() if v != dt.name}
    dtype_out = dt.name + "".join(f", {k}: {v}" for k, v in odd.items())
    return {"relu_grad_at_0": relu0, "maximum_grad_at_0": max0,
            "pool_tie": _pool_probe(adapter, dt), "reduce_max_tie": reduce_rule,
            "log_softmax_at_1000": "stable" if stable else f"unstable: {value.ravel().tolist()}",
            "dtype_out": dtype_out}


def conventions(frameworks=("torch", "jax", "tensorflow")):
    """Each library's gradient conventions, measured on crafted inputs.

    Returns {library: {"version", "installed", and, when installed, per dtype name
    ("float64", "float32") the probes: relu_grad_at_0 (ReLU'(0)), maximum_grad_at_0
    (d maximum(z, 0)/dz at 0), pool_tie (which tied entries of a 2x2 max-pool window get
    the gradient: first, last, split), reduce_max_tie (the same for a max reduction over
    a vector), log_softmax_at_1000 (log_softmax([1000, 0, -1000]) finite and exact, its
    gradient finite), dtype_out (the dtypes of every probe's outputs)}} for scratchadv
    and each framework.
    """
    from . import __version__
    frameworks = check_frameworks(frameworks) if len(frameworks) else ()
    from importlib.metadata import version
    out = {"scratchadv": {"installed": True,
                          "version": f"{__version__} (autograd {version('autograd')})"}}
    for fw in frameworks:
        v = framework_version(fw)
        out[fw] = {"installed": v is not None, "version": v}
    for lib, entry in out.items():
        if entry["installed"]:
            adapter = _ADAPTERS[lib]()
            for dt in ("float64", "float32"):
                entry[dt] = _probe(adapter, dt)
    return out


_CONVENTION_ROWS = (
    ("relu_grad_at_0", "ReLU'(0) (relu op)"),
    ("maximum_grad_at_0", "d maximum(z, 0)/dz at 0"),
    ("pool_tie", "tied 2x2 max-pool window: gradient to"),
    ("reduce_max_tie", "tied max reduction (np/jnp/torch/tf max): gradient to"),
    ("log_softmax_at_1000", "log_softmax([1000, 0, -1000])"),
    ("dtype_out", "float32 in -> out"),
)


def format_conventions(table):
    """The :func:`conventions` table as Markdown (libraries as columns)."""
    libs = list(table)
    head = ["convention"] + [f"{lib} {table[lib]['version'] or '(not installed)'}" for lib in libs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(lib, key, dt="float64"):
        if not table[lib]["installed"]:
            return "-"
        v = table[lib][dt][key]
        if key == "dtype_out":
            return v
        v32 = table[lib]["float32"][key]
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return text if v32 == v else f"{text} (float32: {v32})"
    for key, label in _CONVENTION_ROWS:
        lines.append("| " + " | ".join([label] + [cell(lib, key, "float32" if key == "dtype_out"
                                                         else "float64") for lib in libs]) + " |")
    return "\n".join(lines)


def tie_rule_impact(params, x, y, architecture="lecture-cnn-v1"):
    """How much the input gradient moves on x when the tie conventions change, in JAX.

    Compares our input gradient (float64) with a JAX twin whose max-pooling is written
    as a ``jnp.max`` over each window (the tie split among equal entries) and with one
    whose ReLU is ``jnp.maximum(z, 0)`` (derivative 1/2 at 0), each as max |ours -
    theirs| / max |ours|, on x as given and on x jittered (:func:`compare`'s correction,
    which leaves no ties). Returns {variant: {"as_given", "jittered"}}.
    """
    from .losses import input_gradient
    twin = _twin("jax")
    jax = twin.require_jax()
    import jax.numpy as jnp
    arch = get_architecture(architecture)
    p64 = {k: onp.asarray(v, dtype=onp.float64) for k, v in params.items()}

    def split_pool(layer, params_, h):
        n, c, hh, ww = h.shape
        return jnp.max(h.reshape(n, c, hh // 2, 2, ww // 2, 2), axis=(3, 5))

    def half_relu(layer, params_, h):
        return jnp.maximum(h, 0.0)
    variants = {"max-pool as jnp.max (split ties)": {MaxPool: split_pool},
                "ReLU as jnp.maximum(z, 0) (1/2 at 0)": {Relu: half_relu}}
    out = {}
    for name, swap in variants.items():
        steps = [functools.partial(swap.get(type(la), twin._JAX_LAYERS[type(la)]), la)
                 for la in arch.layers]
        res = {}
        for label, xs in (("as_given", onp.asarray(x, onp.float64)),
                          ("jittered", _jitter(onp.asarray(x, onp.float64)))):
            ref = input_gradient(p64, xs, y, arch.predict)
            with twin.x64():
                pj, yj = twin.to_jax(p64, architecture), jnp.asarray(y)

                def total(z):
                    h = z
                    for step in steps:
                        h = step(pj, h)
                    logp = jax.nn.log_softmax(h, axis=1)
                    return -jnp.sum(jnp.take_along_axis(logp, yj[:, None], axis=1))
                g = onp.asarray(jax.grad(total)(jnp.asarray(xs)))
            res[label] = errors(g, ref)[0] / max(float(onp.max(onp.abs(ref))), 1e-300)
        out[name] = res
    return out

"""Defenses as training hooks: adversarial training (min-max), gradient regularization, TRADES.

All three plug into :func:`scratchadv.train.fit` without changing it:

==============  ====================================================================
defense         hook
==============  ====================================================================
``pgd``         ``batch_transform(params, xb, yb, rng, epoch)``: replace each batch by
                PGD images computed with the *current* weights (the inner max), then
                fit takes the usual step on them with the true labels (the outer min).
``gradreg``     ``loss_fn(params, xb, yb)`` = loss + lam * mean_i ||d loss_i / d x_i||^2,
                differentiated w.r.t. the weights by double backpropagation.
``trades``      both hooks: ``batch_transform`` appends to the B clean images the B
                images x' that maximise KL(softmax f(x) || softmax f(x')) in the Linf
                ball (PGD with the current weights, x' a constant); ``loss_fn`` on
                that (2B) pair = CE(f(x), y) + beta * KL, differentiated w.r.t. the
                weights through both branches.
==============  ====================================================================

Adversarial training: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards deep
learning models resistant to adversarial attacks", eq. (2.1):
``min_W E[ max_{||d||_inf <= eps} loss(W, x + d, y) ]``, the inner max approximated by
PGD with a uniform random start in the eps-ball.

Gradient regularization: Drucker & LeCun (1992), "Improving generalization performance
using double backpropagation"; Ross & Doshi-Velez (2018), "Improving the adversarial
robustness and interpretability of deep neural networks by regularizing their input
gradients". ``lam`` multiplies the *batch mean of the per-example* squared L2 norm of
each example's own loss gradient w.r.t. its image (see
:func:`scratchadv.losses.gradient_regularized_loss`), so its meaning does not depend on
the batch size. A first-order view of what it buys: an L2 perturbation ``d`` raises
example i's loss by about ``g_i . d <= ||g_i|| ||d||``, so lam trades clean
cross-entropy for a smaller worst-case first-order loss increase.

TRADES: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan (2019), "Theoretically principled
trade-off between robustness and accuracy", eq. (5), as their code computes it
(yaodongyu/TRADES, ``trades.py``): the robust term is
``KLDivLoss(reduction='sum')(log_softmax(f(x')), softmax(f(x))) / batch_size``, i.e.
``(1/B) sum_i sum_k p_ik (log p_ik - log q_ik)`` with p = softmax f(x) (clean) and q =
softmax f(x') (adversarial): KL(clean || adversarial), summed over classes, averaged over
the batch. The inner max starts at ``x + 0.001 * N(0, 1)`` (at x' = x the KL and its
gradient vanish), takes sign steps on the *summed* KL and clips to the attacks'
inward-rounded box after every step, as their code does (its first gradient is taken at
the unclipped start; so is ours). Their MNIST script (``train_trades_mnist.py``) uses eps
0.3, 40 steps of 0.01, beta 1.0 (``--beta`` default, "1/lambda in TRADES"), SGD lr 0.01
momentum 0.9, 100 epochs, and a 4-conv + 3-dense "SmallCNN".

Defaults depend on eps by one rule (:func:`defaults_for`): at ``eps <= LARGE_EPS`` (0.2)
they are :data:`DEFAULTS`; above it (the eps 0.3 regime of Madry et al.'s MNIST
experiments) :data:`LARGE_EPS_DEFAULTS` replaces some of them: eps grows linearly over
the first 40% of the epochs (``2 * epochs // 5``: 4 of 10), PGD uses 5 steps, and PGD
training keeps a quarter of each batch clean. That is the schedule measured below at eps
0.3; without it PGD training at eps 0.3 from the first step settled on a constant
prediction (here, and in a PyTorch twin). Options given explicitly always win.

Defaults (:data:`DEFAULTS`), measured with 10 epochs, seed 0, on the first 1000 test
images (``python scripts/defenses.py``; library version 0.1.1; numbers in the README):

- ``pgd``: 7 steps of 2.5 * eps / 7 with a random start, no clean mixing, no warm-up.
  At eps 0.1: clean 98.7%, worst case over FGSM and PGD-40 x 5 restarts 93.9% at eps 0.1.
  At eps 0.3 training from the first step can settle on a constant prediction; a linear
  warm-up over 4 epochs with a quarter of each batch clean (5 steps) reached clean 97.7%,
  PGD-40 x 5 87.2% at eps 0.3.
- ``gradreg``: lam 0.5: clean 98.5%, FGSM (eps 0.1) 89.5% against 78.2% for natural
  training. Search (library version 0.1.0, whose RMSprop put epsilon outside the square
  root): shortened runs (12k images, 2 epochs) over lam in {0, 0.1, 1, 10} showed clean
  accuracy falling fast above lam 1 (76.8% at 10); full runs at lam 0.3 / 0.5 / 1 gave
  clean 98.4 / 98.7 / 98.4% and FGSM (eps 0.1) 90.1 / 89.7 / 89.1% against 74.2% for
  natural training; 0.5 was the one meeting both targets.
- ``trades``: beta 1.0 (the authors' MNIST script), 7 steps of 2.5 * eps / 7 from their
  Gaussian start: the inner loop of ``pgd`` (same length, same step rule), so the two
  defenses differ in their objective, not in the strength of their inner attack. Cost
  (one epoch on 1280 training images, lecture CNN, on this 2-core machine while others
  loaded it, load average ~5; scaled to 60k images): natural 32 s, PGD training (7
  steps) 192 s, TRADES with 5 / 7 / 10 / 40 steps 218 / 340 / 427 / 1367 s. Each inner
  step costs about one forward + backward pass; TRADES's outer step runs the network
  on the 2B clean + adversarial images and back-propagates through both. The
  authors' 40 steps would make a 10-epoch run ~4x longer than 7 steps. Not yet
  measured at full length on MNIST.

Why the training PGD is written here and not taken from :mod:`scratchadv.attacks`:
training needs the point of maximal loss in the ball, every step, for every image
(no early stop once an image is misclassified, no norms or probabilities for a
report), and it runs once per mini-batch, so its cost is the cost of training. It shares
the attacks' geometry (:data:`scratchadv.attacks.geometry.LINF`: the inward-rounded box,
the sign step) and step-size rule, not their loop.
"""
import functools

import autograd.numpy as np
import numpy as onp
from autograd import grad
from autograd.tracer import getval

from .attacks.geometry import LINF
from .attacks.geometry import default_step_size as _default_step_size
from .losses import gradient_regularized_loss, input_gradient
from .model import predict
from .ops import cross_entropy, log_softmax
from .validate import check_float, check_images, check_int, check_choice

__all__ = ["DEFENSES", "DEFAULTS", "LARGE_EPS", "LARGE_EPS_DEFAULTS", "LARGE_EPS_WARMUP", "defaults_for",
           "pgd_linf_max_loss", "eps_at_epoch", "adversarial_batch_transform",
           "gradreg_loss_fn", "trades_kl", "trades_loss", "trades_linf_max_kl",
           "trades_batch_transform", "trades_loss_fn", "robust_accuracy", "robust_selection",
           "make_defense", "BatchTransform"]

DEFENSES = ("none", "pgd", "gradreg", "trades")

#: Defaults used when an option is None, at eps <= LARGE_EPS. Chosen by the measurements
#: in the module notes (and in the README): they meet the project's targets with 10
#: epochs, seed 0.
DEFAULTS = {
    "pgd": {
        "eps": 0.1,          # Linf radius, pixel scale [0, 1]
        "pgd_steps": 7,      # inner-max PGD steps per mini-batch (cost ~ steps + 1 x natural)
        "pgd_step_size": None,   # None -> 2.5 * eps / pgd_steps (Madry et al. 2018, sec. 5)
        "clean_frac": 0.0,   # fraction of each batch left clean
        "eps_warmup": 0,     # epochs over which eps ramps up linearly to its final value
    },
    "gradreg": {
        "lam": 0.5,          # weight of mean_i ||d loss_i / d x_i||_2^2 (see the module docstring)
    },
    "trades": {
        "eps": 0.1,          # Linf radius of the inner maximisation
        "beta": 1.0,         # weight of the KL term (the authors' MNIST script: 1.0)
        "pgd_steps": 7,      # inner-max steps per mini-batch (the authors: 40)
        "pgd_step_size": None,   # None -> 2.5 * eps / pgd_steps (the authors: 0.01 at eps 0.3)
        "eps_warmup": 0,
    },
}

#: Above this radius the defaults of :data:`LARGE_EPS_DEFAULTS` apply (see :func:`defaults_for`).
LARGE_EPS = 0.2

#: What changes above LARGE_EPS, besides the warm-up (:data:`LARGE_EPS_WARMUP`).
LARGE_EPS_DEFAULTS = {
    "pgd": {"pgd_steps": 5, "clean_frac": 0.25},
    "trades": {"pgd_steps": 5},
}

#: Above LARGE_EPS, eps warms up over ``epochs * 2 // 5`` epochs: 40% of the run, rounded
#: down (integer arithmetic, so 10 epochs give exactly the measured 4).
LARGE_EPS_WARMUP = (2, 5)

#: ``fit``'s default length, used by the warm-up rule when make_defense is given no epochs
_DEFAULT_EPOCHS = 10


def defaults_for(name, eps=None, epochs=None):
    """The defaults of defense ``name`` at radius ``eps`` for a run of ``epochs`` epochs.

    The one rule: ``eps <= LARGE_EPS`` -> :data:`DEFAULTS` unchanged (so every run at
    eps 0.1 keeps its config and its weights); ``eps > LARGE_EPS`` -> the entries of
    :data:`LARGE_EPS_DEFAULTS` replace them, the warm-up becoming ``2 * epochs // 5``
    epochs (0.4 of the run, rounded down; epochs None: fit's default 10 -> 4). eps None
    means the defense's default eps. Returns a new dict (name 'none': {}).
    """
    check_choice(name, "defense", DEFENSES)
    out = dict(DEFAULTS.get(name, {}))
    if "eps" not in out:
        return out
    e = out["eps"] if eps is None else eps
    if e > LARGE_EPS:
        out.update(LARGE_EPS_DEFAULTS[name])
        num, den = LARGE_EPS_WARMUP
        out["eps_warmup"] = (_DEFAULT_EPOCHS if epochs is None else epochs) * num // den
    return out


def default_step_size(eps, steps):
    """2.5 * eps / steps, :func:`scratchadv.attacks.geometry.default_step_size` (Madry et
    al. 2018): lets PGD travel from one side of the ball to the other and back."""
    return _default_step_size(eps, steps)


def _linf_sign_ascent(xa, box, gradient, steps, step_size):
    """``steps`` times ``xa <- box.clip(xa + step_size * sign(gradient(xa)))``; xa's dtype."""
    a = xa.dtype.type(step_size)
    for _ in range(steps):
        g = gradient(xa)
        xa = box.clip(xa + a * LINF.direction(g).astype(xa.dtype))
    return xa


def pgd_linf_max_loss(params, x, y, *, eps, steps, step_size, rng, predict_fn=predict):
    """Linf PGD with a uniform random start that maximises the loss (no early stop).

    x: (N, 1, 28, 28) float32/64 in [0, 1]; y: (N,) int64 -> x_adv of x's dtype and shape,
    with ``|x_adv - x| <= eps`` and ``0 <= x_adv <= 1`` element-wise.
    Step: ``x <- clip_[x0-eps, x0+eps] ∩ [0,1] (x + step_size * sign(d loss_i / d x_i))``
    (Madry et al. 2018, eq. 2.2), the box being the attacks' Linf box
    (:class:`scratchadv.attacks.geometry.LinfBox`, bounds rounded inwards so the ball
    holds exactly for the stored values). ``rng``: numpy Generator for the random start.
    eps == 0 returns a copy of x.
    """
    if eps == 0 or steps == 0:
        return x.copy()
    box = LINF.feasible(x, eps)
    # the start is drawn as uniform(-eps, eps), not as the attacks' eps * uniform(-1, 1)
    # (LINF.draw_start): the two round differently, and this stream is the one the
    # documented defense results were trained with
    xa = box.clip(x + rng.uniform(-eps, eps, size=x.shape).astype(x.dtype))
    return _linf_sign_ascent(xa, box, lambda v: input_gradient(params, v, y, predict_fn),
                             steps, step_size)


def eps_at_epoch(eps, epoch, eps_warmup):
    """The training radius in epoch ``epoch`` (0-based) under a linear warm-up.

    With ``eps_warmup = W > 0``, epoch e < W uses ``eps * (e + 1) / (W + 1)`` and every
    later epoch uses ``eps``: e.g. eps 0.3, W 3 -> 0.075, 0.15, 0.225, 0.3, 0.3, ...
    A small network trained at a large eps from the first step can settle on a constant
    prediction (the loss of a constant is the best it finds); growing eps lets it first
    learn the digits, then make them robust.
    """
    if eps_warmup <= 0 or epoch >= eps_warmup:
        return float(eps)
    return float(eps) * (epoch + 1) / (eps_warmup + 1)


def _check_pgd_options(eps, pgd_steps, pgd_step_size, eps_warmup):
    eps = check_float(eps, "eps", minimum=0, maximum=1)
    pgd_steps = check_int(pgd_steps, "pgd_steps", minimum=1)
    if pgd_step_size is not None:
        pgd_step_size = check_float(pgd_step_size, "pgd_step_size", minimum=0, strict_min=True)
    eps_warmup = check_int(eps_warmup, "eps_warmup", minimum=0)
    return eps, pgd_steps, pgd_step_size, eps_warmup


def adversarial_batch_transform(*, eps, pgd_steps, pgd_step_size=None, clean_frac=0.0,
                                eps_warmup=0, predict_fn=predict):
    """``batch_transform(params, xb, yb, rng, epoch) -> (x_mix, yb)`` for :func:`fit`.

    A random ``round(clean_frac * B)`` of the B images stay clean (clean mixing, as in
    Goodfellow et al. 2015's mixed objective); the others are replaced by
    :func:`pgd_linf_max_loss` images at radius :func:`eps_at_epoch`. Labels are unchanged.
    The step size scales with the current radius when ``pgd_step_size`` is None.
    """
    eps, pgd_steps, pgd_step_size, eps_warmup = _check_pgd_options(eps, pgd_steps,
                                                                   pgd_step_size, eps_warmup)
    clean_frac = check_float(clean_frac, "clean_frac", minimum=0, maximum=1)
    return BatchTransform(_pgd_transform, eps=eps, pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
                          clean_frac=clean_frac, eps_warmup=eps_warmup, predict_fn=predict_fn)


def _pgd_transform(params, xb, yb, rng, epoch, *, eps, pgd_steps, pgd_step_size, clean_frac,
                   eps_warmup, predict_fn):
    e = eps_at_epoch(eps, epoch, eps_warmup)
    n_clean = int(round(clean_frac * len(xb)))
    if e == 0 or n_clean == len(xb):
        return xb, yb
    adv = onp.sort(rng.permutation(len(xb))[n_clean:])
    a = pgd_step_size if pgd_step_size is not None else default_step_size(e, pgd_steps)
    out = xb.copy()
    out[adv] = pgd_linf_max_loss(params, xb[adv], yb[adv], eps=e, steps=pgd_steps,
                                 step_size=a, rng=rng, predict_fn=predict_fn)
    return out, yb


class BatchTransform:
    """A defense's ``batch_transform(params, xb, yb, rng, epoch) -> (xb', yb')`` for :func:`fit`.

    ``fn(params, xb, yb, rng, epoch, **settings)`` is a module-level function and the
    settings are plain values (``predict_fn`` kept as its Architecture), so the transform
    pickles and ``fit(..., workers=W)`` can run it in W processes, one part of the batch
    each (each worker then takes the gradient on its own part: nothing is joined).
    """

    def __init__(self, fn, **settings):
        from .parallel import portable
        self.fn = fn
        self.settings = {k: portable(v) if k == "predict_fn" else v for k, v in settings.items()}

    def __call__(self, params, xb, yb, rng, epoch):
        return self.fn(params, xb, yb, rng, epoch, **self.settings)

    def __repr__(self):
        return f"BatchTransform({self.fn.__name__}, {', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


def gradreg_loss_fn(lam, predict_fn=predict):
    """``loss_fn(params, xb, yb)`` = mean CE + lam * mean_i ||d loss_i / d x_i||_2^2."""
    from .parallel import portable
    lam = check_float(lam, "lam", minimum=0)
    # a partial of a module-level function pickles: fit(..., workers=W) can send it
    return functools.partial(_gradreg_loss, lam=lam, predict_fn=portable(predict_fn))


def _gradreg_loss(params, xb, yb, *, lam, predict_fn):
    return gradient_regularized_loss(params, xb, yb, lam, predict_fn=predict_fn)


# ---------------------------------------------------------------------------
# TRADES (Zhang et al. 2019)
# ---------------------------------------------------------------------------

def trades_kl(logits_clean, logits_adv):
    """(1/N) sum_i KL(softmax z_i || softmax z'_i): the TRADES robust term.

    logits_clean z, logits_adv z': (N, K) -> scalar. Exactly the reference code's
    ``KLDivLoss(reduction='sum')(log_softmax(z'), softmax(z)) / N``: the clean
    distribution p is the first argument of KL (the target), summed over classes,
    averaged over the batch. Differentiable in both arguments.
    """
    lp = log_softmax(logits_clean)
    lq = log_softmax(logits_adv)
    return np.sum(np.exp(lp) * (lp - lq)) / logits_clean.shape[0]


def trades_loss(params, x, x_adv, y, beta, predict_fn=predict):
    """CE(f(x), y) + beta * :func:`trades_kl` (f(x), f(x_adv)) (Zhang et al. 2019, eq. 5).

    x, x_adv: (N, 1, 28, 28) of the params' dtype in [0, 1]; y: (N,) int64 -> scalar.
    ``x_adv`` is a constant (it comes from :func:`trades_linf_max_kl`); the weights
    enter through both the clean and the adversarial branch, which share one forward
    pass over the 2N images.
    """
    n = x.shape[0]
    z = predict_fn(params, np.concatenate([x, x_adv], axis=0))
    zc, za = z[:n], z[n:]
    return cross_entropy(zc, y) + beta * trades_kl(zc, za)


def trades_linf_max_kl(params, x, *, eps, steps, step_size, rng, predict_fn=predict):
    """The TRADES inner max: x' ~ argmax_{||x' - x||_inf <= eps} KL(p(x) || p(x')).

    x: (N, 1, 28, 28) float32/64 in [0, 1] -> x' of x's dtype and shape in the attacks'
    inward-rounded box (``|x' - x| <= eps``, ``[0, 1]``). Start ``x + 0.001 * N(0, 1)``
    (``rng``: numpy Generator; at x' = x the KL's gradient is 0), then ``steps`` sign
    steps of ``step_size`` on the summed KL, clipping to the box after each (the
    reference code's loop; its first gradient too is taken at the unclipped start).
    p(x) = softmax f(x) is computed once with the given weights and held fixed.
    eps == 0 returns a copy of x; steps == 0 the start clipped to the box.
    """
    if eps == 0:
        return x.copy()
    box = LINF.feasible(x, eps)
    start = x + x.dtype.type(0.001) * rng.standard_normal(size=x.shape).astype(x.dtype)
    if steps == 0:
        return box.clip(start)
    p = onp.exp(log_softmax(predict_fn(params, x)))

    def kl_gradient(v):
        # d/dv sum_i KL(p_i || q_i(v)) = d/dv -sum_i p_i . log q_i(v)  (p is a constant)
        return grad(lambda vv: -np.sum(p * log_softmax(predict_fn(params, vv))))(v)

    return _linf_sign_ascent(start, box, kl_gradient, steps, step_size)


def trades_batch_transform(*, eps, pgd_steps, pgd_step_size=None, eps_warmup=0,
                           predict_fn=predict):
    """``batch_transform(params, xb, yb, rng, epoch) -> (concat[xb, xb'], concat[yb, yb])``.

    xb' = :func:`trades_linf_max_kl` at radius :func:`eps_at_epoch` with the current
    weights (the step size scales with the radius when ``pgd_step_size`` is None). The
    pair travels to :func:`trades_loss_fn` as one batch of 2B images: clean first, then
    adversarial, the labels repeated (so ``fit``'s running accuracy is the mean of the
    clean and the adversarial accuracy). At radius 0 xb' = xb (the KL term is then 0).
    """
    eps, pgd_steps, pgd_step_size, eps_warmup = _check_pgd_options(eps, pgd_steps,
                                                                   pgd_step_size, eps_warmup)
    return BatchTransform(_trades_transform, eps=eps, pgd_steps=pgd_steps,
                          pgd_step_size=pgd_step_size, eps_warmup=eps_warmup, predict_fn=predict_fn)


def _trades_transform(params, xb, yb, rng, epoch, *, eps, pgd_steps, pgd_step_size, eps_warmup,
                      predict_fn):
    e = eps_at_epoch(eps, epoch, eps_warmup)
    a = pgd_step_size if pgd_step_size is not None else default_step_size(e, pgd_steps)
    xa = trades_linf_max_kl(params, xb, eps=e, steps=pgd_steps, step_size=a, rng=rng,
                            predict_fn=predict_fn)
    return onp.concatenate([xb, xa]), onp.concatenate([yb, yb])


def trades_loss_fn(beta, predict_fn=predict):
    """``loss_fn(params, xb, yb)`` for :func:`fit` on the pairs of :func:`trades_batch_transform`.

    xb: (2B, 1, 28, 28), the B clean images then their B adversarial images; yb: (2B,),
    the labels twice -> :func:`trades_loss` (CE on the clean half, beta * KL between them).
    """
    from .parallel import portable
    beta = check_float(beta, "beta", minimum=0)
    return functools.partial(_trades_pair_loss, beta=beta, predict_fn=portable(predict_fn))


def _trades_pair_loss(params, xb, yb, *, beta, predict_fn):
    n = len(xb) // 2
    if len(xb) != 2 * n or not onp.array_equal(getval(yb)[:n], getval(yb)[n:]):
        raise ValueError(f"xb, yb: expected a TRADES pair (B clean images, then B adversarial "
                         f"ones, the labels twice), got {len(xb)} images")
    return trades_loss(params, xb[:n], xb[n:], yb[:n], beta, predict_fn)


# ---------------------------------------------------------------------------
# Model selection by robust accuracy (Rice et al. 2020)
# ---------------------------------------------------------------------------

def robust_accuracy(params, x, y, *, eps, steps=10, step_size=None, seed=0,
                    predict_fn=predict, batch_size=500):
    """Accuracy under :func:`pgd_linf_max_loss` (the training PGD, one random start).

    x: (N, 1, 28, 28) in [0, 1]; y: (N,) int64 -> float in [0, 1]. step_size None:
    2.5 * eps / steps. The start is drawn from ``default_rng(seed)`` batch by batch, so
    the same (x, seed) meet the same starts for every params: epochs compare fairly.
    """
    check_images(x, "x")
    eps = check_float(eps, "eps", minimum=0, maximum=1)
    steps = check_int(steps, "steps", minimum=1)
    a = step_size if step_size is not None else default_step_size(eps, steps)
    rng = onp.random.default_rng(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = pgd_linf_max_loss(params, xb, yb, eps=eps, steps=steps, step_size=a, rng=rng,
                               predict_fn=predict_fn)
        correct += int(onp.sum(onp.argmax(predict_fn(params, xa), 1) == yb))
    return correct / len(x)


def robust_selection(x, y, *, eps, steps=10, step_size=None, seed=0, predict_fn=predict):
    """Keep the epoch whose weights are most robust on held-out data (Rice, Wong & Kolter
    2020, "Overfitting in adversarially robust deep learning": robust accuracy on held-out
    data peaks early and falls; stopping at its peak recovers most of the loss).

    x, y: held-out *training* images (never the test set) and labels. Returns
    ``(callback, selected)``: ``callback(epoch, history, params)`` for ``fit(callbacks=...)``
    measures :func:`robust_accuracy` after every epoch; ``selected`` is a dict updated in
    place: ``params`` (a copy of the best epoch's weights, None before the first epoch),
    ``epoch`` (1-based), ``robust_accuracy`` (the best), ``per_epoch`` ({epoch: accuracy})
    and the settings (``eps``, ``steps``, ``step_size``, ``n``). Ties keep the earlier epoch.
    """
    check_images(x, "x")
    eps = check_float(eps, "eps", minimum=0, maximum=1)
    steps = check_int(steps, "steps", minimum=1)
    a = float(step_size) if step_size is not None else default_step_size(eps, steps)
    selected = {"by": "robust_accuracy", "attack": "pgd_linf", "eps": eps, "steps": steps,
                "step_size": a, "n": int(len(x)), "seed": seed, "epoch": None,
                "robust_accuracy": None, "per_epoch": {}, "params": None}

    def callback(epoch, history, params):
        acc = robust_accuracy(params, x, y, eps=eps, steps=steps, step_size=a, seed=seed,
                              predict_fn=predict_fn)
        selected["per_epoch"][epoch + 1] = acc
        if selected["robust_accuracy"] is None or acc > selected["robust_accuracy"]:
            selected.update(epoch=epoch + 1, robust_accuracy=acc,
                            params={k: onp.array(v) for k, v in params.items()})

    return callback, selected


# ---------------------------------------------------------------------------
# A defense by name
# ---------------------------------------------------------------------------

def _step_config(opts):
    step = opts["pgd_step_size"]
    return {"pgd_step_size": step if step is not None else default_step_size(opts["eps"], opts["pgd_steps"]),
            "pgd_step_size_rule": "fixed" if step is not None else "2.5*eps/pgd_steps"}


def make_defense(name, *, eps=None, pgd_steps=None, pgd_step_size=None, clean_frac=None,
                 eps_warmup=None, lam=None, beta=None, epochs=None, predict_fn=predict):
    """Build the training hooks of a defense: ``(loss_fn or None, batch_transform or None, config)``.

    name: 'none' | 'pgd' | 'gradreg' | 'trades'. Any option left None takes the
    defense's default at its eps, :func:`defaults_for` (name, eps, epochs); options that
    do not belong to the defense must stay None. ``epochs`` (the training length) sets
    the warm-up of the large-eps defaults and checks that a warm-up ends before training
    does. ``config`` is a JSON-ready dict of the resolved settings, for the checkpoint
    metadata.
    """
    check_choice(name, "defense", DEFENSES)
    given = {"eps": eps, "pgd_steps": pgd_steps, "pgd_step_size": pgd_step_size,
             "clean_frac": clean_frac, "eps_warmup": eps_warmup, "lam": lam, "beta": beta}
    own = set(DEFAULTS.get(name, {}))
    stray = sorted(k for k, v in given.items() if v is not None and k not in own)
    if stray:
        raise ValueError(f"defense {name!r}: options {stray} do not apply "
                         f"(it takes {sorted(own) or 'no options'})")
    if name == "none":
        return None, None, {"defense": "none"}
    if name == "gradreg":
        lam = check_float(lam if lam is not None else DEFAULTS["gradreg"]["lam"], "lam", minimum=0)
        return gradreg_loss_fn(lam, predict_fn), None, {"defense": "gradreg", "lam": lam}
    # pgd and trades: a radius, an inner PGD, a warm-up
    if eps is not None:
        eps = check_float(eps, "eps", minimum=0, maximum=1, strict_min=True)
    if epochs is not None:
        epochs = check_int(epochs, "epochs", minimum=1)
    opts = {k: (given[k] if given[k] is not None else v)
            for k, v in defaults_for(name, eps, epochs).items()}
    opts["eps"] = check_float(opts["eps"], "eps", minimum=0, maximum=1, strict_min=True)
    opts["pgd_steps"] = check_int(opts["pgd_steps"], "pgd_steps", minimum=1)
    w = opts["eps_warmup"]
    if isinstance(w, float) and w.is_integer():   # the CLI may parse "4" as 4.0
        w = int(w)
    opts["eps_warmup"] = check_int(w, "eps_warmup", minimum=0)
    if epochs is not None and opts["eps_warmup"] >= epochs:
        raise ValueError(f"eps_warmup: expected fewer warm-up epochs than epochs ({epochs}), "
                         f"got {opts['eps_warmup']} (the full eps would never be trained)")
    if name == "pgd":
        transform = adversarial_batch_transform(predict_fn=predict_fn, **opts)
        config = {"defense": "pgd", **opts, **_step_config(opts), "pgd_random_start": True}
        return None, transform, config
    # name == "trades"
    beta = check_float(opts.pop("beta"), "beta", minimum=0)
    transform = trades_batch_transform(predict_fn=predict_fn, **opts)
    config = {"defense": "trades", "eps": opts["eps"], "beta": beta,
              "pgd_steps": opts["pgd_steps"], **_step_config(opts),
              "eps_warmup": opts["eps_warmup"], "trades_start": "x+0.001*N(0,1)"}
    return trades_loss_fn(beta, predict_fn), transform, config

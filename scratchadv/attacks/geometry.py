"""The norm balls of the eps-bounded attacks: random start, step direction, feasible set.

One :class:`Norm` per threat model, found by name with :func:`get_norm`; the
projected-gradient loop (:mod:`scratchadv.attacks.pgd`) is written once against it
(the layout of Foolbox's ``gradient_descent_base``: the norm supplies the random start,
the step direction and the map back into the ball):

=============  ============================  ==========================  ==============================
norm           ``draw_start`` (unit ball)    ``direction(g)``            ``feasible(x, eps).clip(v)``
=============  ============================  ==========================  ==============================
``linf``       uniform in [-1, 1]^d          sign(g)                     clip to the box
                                                                         [x - eps, x + eps] ∩ [0, 1],
                                                                         its bounds rounded inwards
``l2``         uniform in the unit ball      g / ||g||_2 (0 if g = 0)    scale the offset v - x down to
               (Voelker et al. 2017)                                     length eps, then clip to [0, 1]
=============  ============================  ==========================  ==============================

Both directions maximise ``<g, d>`` over the unit ball of their norm (the steepest
ascent for that norm). What ``clip`` computes:

- Linf: ball ∩ [0, 1]^d is itself a box, so clipping to it *is* the Euclidean
  projection onto it (each coordinate independently).
- L2: radial scaling onto the ball followed by clipping into [0, 1]^d. The result lies
  in ball ∩ box (clipping only moves coordinates towards x, which is in the box), and it
  is the exact projection when only one of the two constraints binds; when both bind it
  is a feasible point but in general *not the nearest one* (the exact projection onto the
  intersection needs an iterative solver). It is what the papers' L2 PGD does.

Exactness: results are inside the ball for the *stored* values (checked in float64,
with no rounding slack): Linf by rounding the box bounds inwards, L2 by shrinking the
radius a few ulps and, should rounding still leave an image outside, by falling back
to x for that image.

Images are (N, 1, 28, 28) (d = 784); radii ``eps`` are (N,) float64 or a scalar.
"""
from dataclasses import dataclass, fields
from typing import Callable

import numpy as onp

from ..validate import check_choice

__all__ = ["Norm", "LINF", "L2", "NORMS", "get_norm", "default_step_size", "linf_box",
           "l2_scale_then_clip", "l2_normalize", "LinfBox", "L2Ball"]

IMAGE_SHAPE = (1, 28, 28)
DIM = 28 * 28


def default_step_size(radius, steps):
    """2.5 * radius / steps, the step size of Madry et al. (2018): ``steps`` steps of it
    cross the ball's diameter and come back (their MNIST setting, 0.01 x 40 for eps 0.3,
    is ~1.3 diameters). radius: a float or an array of them (elementwise)."""
    return 2.5 * radius / steps


def per_image(v, x):
    """(N,) -> (N, 1, 1, 1) in x's dtype, to scale images per sample."""
    return onp.asarray(v, dtype=x.dtype).reshape(-1, 1, 1, 1)


def abs_offsets(a, b):
    """|a - b| per image as (N, d) float64: the exact difference of the stored values (a
    float32 subtraction could round a difference just under eps up to eps + ulp)."""
    return onp.abs(a.reshape(len(a), -1).astype(onp.float64) - b.reshape(len(b), -1))


# --- Linf ---------------------------------------------------------------------

def linf_box(x, eps):
    """Per-pixel bounds [lo, hi] = [x - eps, x + eps] ∩ [0, 1], rounded *inwards*.

    x: (N, 1, 28, 28) float32/64; eps: a float or (N,) -> (lo, hi) of x's dtype and shape.
    Rounding x -/+ eps to float32 can land one ulp outside the ball; stepping such
    entries one ulp towards x makes ``|clip(v, lo, hi) - x| <= eps`` hold exactly.
    """
    xd = x.astype(onp.float64)
    e = onp.asarray(eps, dtype=onp.float64).reshape(-1, 1, 1, 1)
    lo = onp.maximum(xd - e, 0.0).astype(x.dtype)
    hi = onp.minimum(xd + e, 1.0).astype(x.dtype)
    bad = xd - lo > e
    lo[bad] = onp.nextafter(lo[bad], x[bad])
    bad = hi - xd > e
    hi[bad] = onp.nextafter(hi[bad], x[bad])
    return lo, hi


class _PerImage:
    """A feasible set held as per-image arrays (axis 0: the image), one set per image."""

    def take(self, idx):
        """The same sets for the images ``idx`` only."""
        return type(self)(*(getattr(self, f.name)[idx] for f in fields(self)))


@dataclass(frozen=True)
class LinfBox(_PerImage):
    """ball_inf(x, eps) ∩ [0, 1]^d as per-pixel bounds (see :func:`linf_box`)."""
    lo: onp.ndarray
    hi: onp.ndarray

    @classmethod
    def around(cls, x, eps):
        return cls(*linf_box(x, eps))

    def clip(self, v):
        """The Euclidean projection of v onto the box (elementwise clipping)."""
        return onp.clip(v, self.lo, self.hi)


def _uniform_cube(rng, n, restarts, dtype):
    """(n, restarts, 1, 28, 28) uniform in [-1, 1]^d."""
    u = rng.uniform(-1.0, 1.0, size=(n, restarts, DIM))
    return u.reshape(n, restarts, *IMAGE_SHAPE).astype(dtype)


# --- L2 -----------------------------------------------------------------------

def l2_scale_then_clip(x, v, eps):
    """Per image: scale the offset ``v - x`` down to length eps if it is longer, then clip
    to [0, 1]. -> a point of ball_2(x, eps) ∩ [0, 1]^d, of x's dtype.

    x, v: (N, 1, 28, 28); eps: (N,) or a float. Not the exact projection onto the
    intersection when both constraints bind (see the module notes). Scaling then clipping
    stays inside the ball because clipping to the box only moves coordinates towards x
    (x itself is in the box). The radius is shrunk by a few ulps so float rounding of the
    scaled offset cannot leave the ball.
    """
    d = (v - x).astype(onp.float64)
    norm = onp.sqrt((d.reshape(len(d), -1) ** 2).sum(1))
    radius = onp.asarray(eps, dtype=onp.float64) * (1 - 8 * onp.finfo(x.dtype).eps)
    scale = onp.where(norm > radius, radius / onp.maximum(norm, 1e-300), 1.0)
    out = onp.clip(x + (d * scale.reshape(-1, 1, 1, 1)).astype(x.dtype), 0, 1)
    # paranoid exactness: any image still outside after rounding is pulled back to x
    a = abs_offsets(out, x)
    over = onp.sqrt((a * a).sum(1)) > onp.asarray(eps, dtype=onp.float64)
    if onp.any(over):
        out[over] = x[over]
    return out


@dataclass(frozen=True)
class L2Ball(_PerImage):
    """ball_2(x, eps) ∩ [0, 1]^d, kept as its centres x and (N,) radii."""
    x: onp.ndarray
    eps: onp.ndarray

    @classmethod
    def around(cls, x, eps):
        return cls(x, onp.broadcast_to(onp.asarray(eps, dtype=onp.float64), (len(x),)))

    def clip(self, v):
        """:func:`l2_scale_then_clip` (a feasible point, not always the nearest one)."""
        return l2_scale_then_clip(self.x, v, self.eps)


def l2_normalize(g):
    """g / ||g||_2 per image, in g's dtype (0 where g == 0)."""
    n = onp.sqrt((g.astype(onp.float64).reshape(len(g), -1) ** 2).sum(1))
    inv = onp.where(n > 0, 1.0 / onp.maximum(n, 1e-300), 0.0)
    return g * per_image(inv, g)


def _uniform_ball(rng, n, restarts, dtype):
    """(n, restarts, 1, 28, 28) uniform in the unit L2 ball: the first d coordinates of a
    uniformly random point on the sphere S^(d+1) (Voelker, Gosmann & Stewart 2017,
    "Efficiently sampling vectors and coordinates from the n-sphere and n-ball")."""
    z = rng.standard_normal(size=(n, restarts, DIM + 2))
    u = z[..., :DIM] / onp.sqrt((z * z).sum(-1, keepdims=True))
    return u.reshape(n, restarts, *IMAGE_SHAPE).astype(dtype)


# --- the norms ------------------------------------------------------------------

@dataclass(frozen=True)
class Norm:
    """What the projected-gradient loop needs to know about a ball.

    name: 'linf' | 'l2'.
    draw_start(rng, n, restarts, dtype) -> (n, restarts, 1, 28, 28) points of the *unit*
        ball (the loop scales them by each image's eps). Each image's draws are one
        contiguous block of the stream, so a batch draws exactly what its images would
        draw one after another with the same generator.
    direction(g) -> the step direction for an image gradient g (N, 1, 28, 28), g's dtype.
    feasible(x, eps) -> the set ball(x, eps) ∩ [0, 1]^d, with ``.clip(v)`` (a point of
        the set, see the module notes) and ``.take(idx)`` (the same set for some images).
    diameter: the largest distance in this norm between two images in [0, 1]^d
        (Linf 1, L2 sqrt(784) = 28): no radius beyond it constrains anything.
    """
    name: str
    draw_start: Callable
    direction: Callable
    feasible: Callable
    diameter: float


LINF = Norm("linf", _uniform_cube, onp.sign, LinfBox.around, 1.0)
L2 = Norm("l2", _uniform_ball, l2_normalize, L2Ball.around, float(onp.sqrt(DIM)))
_BY_NAME = {n.name: n for n in (LINF, L2)}

#: the norm names the attacks accept
NORMS = tuple(_BY_NAME)


def get_norm(name):
    """'linf' | 'l2' -> its :class:`Norm` (``ValueError`` naming ``norm`` otherwise)."""
    return _BY_NAME[check_choice(name, "norm", NORMS)]

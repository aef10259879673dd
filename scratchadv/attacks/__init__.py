"""Evasion attacks: the lecture's fake images, ascent and penalty attack; FGSM and PGD.

Every attack is a pure, batched function of ``(params, x, ...)`` that returns an
:class:`AttackResult`. The model enters only through its logits, ``predict_fn(params, x)``.

Which file holds what:

==================  ==========================================================================
``geometry.py``     the norm balls (:class:`~.geometry.Norm`, :func:`get_norm`): random start,
                    step direction, map into ball ∩ [0, 1]; :func:`default_step_size`, the one
                    step-size rule (2.5 * radius / steps, Madry et al. 2018)
``pgd.py``          :func:`fgsm`, :func:`pgd`, :func:`minimal_perturbation`: one
                    projected-gradient loop with no per-norm code
``lecture.py``      :func:`fake_image`, :func:`gradient_ascent`, :func:`penalty_attack`
``result.py``       :class:`AttackResult`, building one, norms, softmax, :func:`summarize`
``gradients.py``    the loss and image gradient of every step (unchecked) and the checks
                    made once at each attack's entry
``dataset.py``      :func:`attack_dataset`: one method on labelled images, targets expanded
                    ('each'), robust accuracy and per-target success (``scratchadv attack``)
``apgd.py``         :func:`apgd` (APGD-CE / APGD-DLR), :func:`apgd_targeted` (APGD-T):
                    Croce & Hein 2020; ``losses.py``: cross-entropy, DLR, targeted DLR
``fab.py``          :func:`fab`, :func:`fab_targeted` (FAB-T): Croce & Hein 2020 (ICML)
``square.py``       :func:`square`: the gradient-free Square Attack (Andriushchenko et al. 2020)
``deepfool.py``     :func:`deepfool` (Moosavi-Dezfooli et al. 2016), minimal L2 / Linf
``cw.py``           :func:`cw_l2` (Carlini & Wagner 2017), minimal L2; with
                    :func:`minimal_perturbation` (bisection over PGD) and :func:`fab` without
                    ``eps``, the minimal-norm attacks: ``eps`` in their result is the norm found
``autoattack.py``   :func:`autoattack`: the standard ensemble of the four, per-image AND,
                    resumable
==================  ==========================================================================

(``scratchadv.attacks.pgd`` is the function; its module is
``sys.modules["scratchadv.attacks.pgd"]``, reached by ``from scratchadv.attacks.pgd import ...``;
the same holds for ``square``, ``fab`` and ``autoattack``.)

Conventions shared by all attacks:

- ``x``: float32 (or float64) ``(N, 1, 28, 28)`` in [0, 1]; ``y``: int64 ``(N,)``.
  Results keep x's dtype, stay in [0, 1] and, for eps-bounded attacks, inside the ball
  *exactly* (checked in float64 on the stored values, no rounding slack).
- ``target=None`` is untargeted (raise the true label's loss); otherwise one class for
  the batch or one per image (lower the target's loss). A target equal to the true
  label is refused (except by the penalty attack, whose lecture grid includes it).
- Per-image bookkeeping everywhere: step sizes, norms, stopping, restarts and the
  choice of the strongest candidate are per image, so a batch gives the same result as
  its images one by one (up to float rounding of the matrix products).
- Randomness only through ``rng`` (a ``numpy.random.Generator``); ``rng=None`` means
  ``numpy.random.default_rng(0)``, so results are reproducible by default.
- Inputs are validated once, at the public entry; the loops do not re-check them.
"""
from .apgd import apgd, apgd_targeted
from .cw import cw_l2
from .dataset import DatasetAttack, attack_dataset
from .deepfool import deepfool
from .fab import fab, fab_targeted
from .geometry import NORMS, default_step_size, get_norm
from .lecture import LOSSES, fake_image, gradient_ascent, penalty_attack, slides_loss
from .pgd import fgsm, minimal_perturbation, pgd
from .result import AttackResult, summarize
from .square import square

__all__ = ["AttackResult", "fake_image", "gradient_ascent", "penalty_attack", "fgsm", "pgd",
           "minimal_perturbation", "summarize", "NORMS", "get_norm", "default_step_size",
           "attack_dataset", "DatasetAttack", "slides_loss", "LOSSES", "apgd", "apgd_targeted",
           "fab", "fab_targeted", "square", "autoattack", "deepfool", "cw_l2"]

from .autoattack import autoattack  # noqa: E402  (it builds on the attacks above)

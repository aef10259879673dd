"""``scratchadv demo``: the lecture on evasion attacks, start to end, as a report folder.

``run_demo(out)`` runs the lecture's sections in order and writes into ``out``:
``README.md`` (the report: what was done, the numbers beside the lecture's and the
papers' numbers, the figures inline), the PNG figures, ``results.json`` (every number
of the report), ``evaluation-<model>.json`` and ``evaluation-<model>-autoattack.json``
(the full robustness reports, FGSM/PGD and AutoAttack, readable by ``scratchadv compare``).

======  ===========================================================================
section what
======  ===========================================================================
1       train the lecture CNN (RMSprop, batch 128, 10 epochs); learning curves
2       a fake image from uniform noise for every class, loss per step
3       the lecture's untargeted gradient ascent on a test "7"; FGSM/PGD vs eps
4       shallow vs deep: median minimal perturbation of softmax regression, MLP, CNN;
        which minimal-norm attack (bisection over PGD, DeepFool, CW-L2) comes closest
5       the lecture's targeted penalty attack: one "7" to each class; success rates
6       adversarial training (min-max PGD, Madry et al. 2018) and TRADES (Zhang et
        al. 2019); both, and the natural model, also under AutoAttack
7       gradient regularization (double backprop, Drucker & LeCun 1992; Ross &
        Doshi-Velez 2018), also under AutoAttack; the four models compared, with the
        sanity checks (AutoAttack's Square warning among them)
======  ===========================================================================

The package only orchestrates; its modules, in the order data flows through them:

===============  ============================================================================
module           what
===============  ============================================================================
``settings``     the presets (full, quick), what each setting means, the reference numbers,
                 the sections' names and titles: plain data
``sections``     one ``section_<name>(ctx)`` per section: computation only, returns a
                 JSON-ready dict; figures through :mod:`scratchadv.plots`, trained models
                 through :mod:`scratchadv.cache`
``report``       :func:`format_readme`: README.md as a pure function of results.json
``run``          :func:`run_demo` (argument checks, data, the sections in order; with
                 ``workers >= 2`` sections 2, 4, 5 in a second process beside the others)
                 and :func:`write_outputs`
===============  ============================================================================

The model cache (``default_cache_dir``, ``cache_key``, ``cached_fit``) lives in
:mod:`scratchadv.cache`; its names are re-exported here as before, and so are the demo
figures of :mod:`scratchadv.plots`.
"""
from ..cache import cache_key, cached_fit, default_cache_dir
from ..plots import (plot_defense_training, plot_learning_curves, plot_loss_per_step,
                     plot_minimal_perturbations)
from .report import format_minimal_norms_table, format_readme, format_shallow_table
from .run import run_demo, write_outputs
from .sections import (SECTION_FUNCTIONS, section_adversarial_training, section_fake,
                       section_gradient_regularization, section_shallow_vs_deep, section_targeted,
                       section_train, section_untargeted, shallow_vs_deep_table)
from .settings import PRESETS, REFERENCES, SECTIONS, SETTING_DOCS, TITLES

__all__ = ["PRESETS", "REFERENCES", "SECTIONS", "SETTING_DOCS", "TITLES", "SECTION_FUNCTIONS",
           "default_cache_dir", "cache_key", "cached_fit", "run_demo", "format_readme",
           "format_shallow_table", "format_minimal_norms_table", "write_outputs", "shallow_vs_deep_table",
           "section_train", "section_fake", "section_untargeted", "section_shallow_vs_deep",
           "section_targeted", "section_adversarial_training", "section_gradient_regularization",
           "plot_learning_curves", "plot_loss_per_step", "plot_minimal_perturbations",
           "plot_defense_training"]

"""AutoAttack, standard version (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML).

Four attacks run one after the other, each only on the points still robust, each starting
from the clean image:

==========  ==============================================================  =================
name        attack (defaults of the original, fra31/auto-attack)            file
==========  ==============================================================  =================
apgd-ce     APGD on the cross-entropy, 100 iterations, 1 run                :mod:`.apgd`
apgd-t      APGD on the targeted DLR loss, the 9 highest-ranked wrong       :mod:`.apgd`
            classes of the clean logits, 100 iterations each
fab-t       targeted FAB, the same 9 classes, 100 iterations each           :mod:`.fab`
square      Square Attack, 5000 queries, p_init 0.8 (gradient-free)         :mod:`.square`
==========  ==============================================================  =================

An image is robust only if it is classified correctly clean and after every attack: the
robust accuracy is the per-image AND. As the original does, the label of every returned
image is computed here again from the model's logits (an attack's own success flag is not
trusted), and a closing check reports the largest perturbation, NaNs and the [0, 1] range.
The original's warning is kept: if Square, which never reads a gradient, lowers the robust
accuracy left by the white-box attacks by more than ``square_tolerance`` (0.5 points; the
original warns at 0.2), the gradients may be masked and the evaluation is unreliable.

**Randomness and resuming.** The robust points at the start of attack ``a`` (index ``k`` in
``attacks``) are split into batches of ``batch_size`` in index order; batch ``b`` draws
from ``numpy.random.default_rng([seed, k, b])``. So every batch's result depends only on
its own images and position, and a long run written to ``state_path`` (atomically, after
every batch) and continued with ``resume=True`` after any interruption, SIGKILL included,
ends with exactly the result of an uninterrupted run.

**Workers.** ``workers=W > 1`` runs the attacks in W processes (:mod:`scratchadv.parallel`,
one BLAS thread each): every batch is cut into W even parts, part ``i`` drawing from
``default_rng([seed, k, b, i])``, and the parts run side by side. The per-image result
then depends on W (as PyTorch's depends on its thread count): bit-identical for a given W,
and W is part of the resumable state's settings. Each attack still runs only on the
points left robust by the previous one, and the state is saved after every whole batch.
"""
import os
import time

import numpy as onp

from .. import __version__
from ..checkpoint import CheckpointError, read_npz, write_npz
from ..data import data_fingerprint
from ..model import predict, predict_batched
from ..ops import per_example_cross_entropy
from ..parallel import Workers, check_workers, portable, split_evenly
from ..progress import Progress
from ..validate import check_float, check_images, check_int, check_labels, check_names
from .apgd import apgd, apgd_targeted
from .fab import fab_targeted
from .geometry import get_norm
from .gradients import check_model
from .result import build_result
from .square import square

__all__ = ["STANDARD", "COMPONENTS", "autoattack", "SQUARE_TOLERANCE"]

#: the standard version's attacks, in the order they run
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")

#: Square beating the white-box attacks by more than this (accuracy) flags masking
SQUARE_TOLERANCE = 0.005


def _apgd_ce(params, x, y, eps, norm, rng, predict_fn):
    return apgd(params, x, y, eps=eps, norm=norm, loss="ce", steps=100, restarts=1, rng=rng,
                predict_fn=predict_fn)


def _apgd_t(params, x, y, eps, norm, rng, predict_fn):
    return apgd_targeted(params, x, y, eps=eps, norm=norm, n_targets=9, steps=100, restarts=1,
                         rng=rng, predict_fn=predict_fn)


def _fab_t(params, x, y, eps, norm, rng, predict_fn):
    return fab_targeted(params, x, y, eps=eps, norm=norm, n_targets=9, steps=100, restarts=1,
                        rng=rng, predict_fn=predict_fn)


def _square(params, x, y, eps, norm, rng, predict_fn):
    return square(params, x, y, eps=eps, norm=norm, queries=5000, p_init=0.8, restarts=1, rng=rng,
                  predict_fn=predict_fn)


#: name -> attack(params, x, y, eps, norm, rng, predict_fn) -> AttackResult
COMPONENTS = {"apgd-ce": _apgd_ce, "apgd-t": _apgd_t, "fab-t": _fab_t, "square": _square}


def _parts(j, seed, k, b, workers):
    """Batch b of attack k as [(indices, rng key)]: whole with one worker, else cut into
    ``workers`` even parts (part i draws from ``default_rng([seed, k, b, i])``)."""
    if workers == 1:
        return [(j, (seed, k, b))]
    return [(part, (seed, k, b, i)) for i, part in enumerate(split_evenly(j, workers))]


def _attack_part(shared, name, j, key):
    """Run attack ``name`` on images ``j`` (a worker's task): which it turned, their images
    and steps (labels re-computed from the logits), and the seconds it took."""
    t = time.perf_counter()
    x, y, predict_fn = shared["x"][j], shared["y"][j], shared["predict_fn"]
    res = shared["table"][name](shared["params"], x, y, shared["eps"], shared["norm"],
                                onp.random.default_rng(list(key)), predict_fn)
    # an attack returns points of ball ∩ [0, 1]; checked again at the end
    turned = predict_batched(shared["params"], res.x_adv, shared["batch_size"],
                             predict_fn).argmax(1) != y
    return turned, res.x_adv[turned], res.steps[turned], time.perf_counter() - t


class _State:
    """What a run has done so far: robust flags, adversarial images, which attack fooled
    each image, and the position (attack k, its first unfinished batch b, its batches)."""

    def __init__(self, x, clean):
        n = len(x)
        self.robust = clean.copy()
        self.x_adv = x.copy()
        self.fooled_by = onp.full(n, -1, dtype=onp.int64)   # -1: clean-wrong or robust
        self.steps = onp.zeros(n, dtype=onp.int64)           # of the attack that turned it
        self.k, self.b = 0, 0
        self.todo = onp.flatnonzero(self.robust)
        self.after = {}                                      # attack -> robust accuracy
        self.seconds = {}

    def save(self, path, config):
        write_npz(path, {"robust": self.robust, "x_adv": self.x_adv, "fooled_by": self.fooled_by,
                         "steps": self.steps, "todo": self.todo.astype(onp.int64)},
                  {"format": "scratchadv-autoattack-state", "config": config, "attack": self.k,
                   "batch": self.b, "after": self.after, "seconds": self.seconds})

    @classmethod
    def load(cls, path, config, x):
        arrays, meta = read_npz(path)
        if meta.get("format") != "scratchadv-autoattack-state":
            raise CheckpointError(f"{path}: not an AutoAttack state file")
        saved = meta.get("config", {})
        for key, value in config.items():
            if saved.get(key) != value:
                raise CheckpointError(f"{path}: cannot resume: {key} was {saved.get(key)!r} in the "
                                      f"saved run, now {value!r}")
        st = cls.__new__(cls)
        st.robust = arrays["robust"].astype(bool)
        st.x_adv = arrays["x_adv"].astype(x.dtype)
        st.fooled_by = arrays["fooled_by"].astype(onp.int64)
        st.steps = arrays["steps"].astype(onp.int64)
        st.todo = arrays["todo"].astype(onp.int64)
        if st.x_adv.shape != x.shape or st.robust.shape != (len(x),):
            raise CheckpointError(f"{path}: arrays do not match {len(x)} images")
        st.k, st.b = int(meta["attack"]), int(meta["batch"])
        st.after, st.seconds = dict(meta["after"]), dict(meta["seconds"])
        return st


def _closing_check(x_adv, x, norm, eps, robust, labels, y):
    """The original's last line (largest perturbation, NaNs, range), and our re-check."""
    d = (x_adv.astype(onp.float64) - x).reshape(len(x), -1)
    size = onp.abs(d).max(1, initial=0.0) if norm == "linf" else onp.sqrt((d * d).sum(1))
    return {"max_perturbation": float(size.max(initial=0.0)), "eps": float(eps), "norm": norm,
            "within_eps": bool(size.max(initial=0.0) <= eps),
            "nan": int(onp.isnan(x_adv).sum()), "min": float(x_adv.min()), "max": float(x_adv.max()),
            "in_range": bool(x_adv.min() >= 0 and x_adv.max() <= 1),
            "labels_consistent": bool(onp.array_equal(robust, labels == y))}


def autoattack(params, x, y, *, eps, norm="linf", attacks=STANDARD, seed=0, predict_fn=predict,
               batch_size=500, state_path=None, resume=False, square_tolerance=SQUARE_TOLERANCE,
               components=None, workers=1, verbose=False):
    """AutoAttack (standard version) on (x, y): the per-image worst case of its attacks.

    x: (N, 1, 28, 28) float32/64 in [0, 1]; y: (N,) int64; eps: the radius (Linf, or L2
    with ``norm="l2"``); attacks: names from :data:`COMPONENTS`, run in the given order
    (default :data:`STANDARD`); seed: int (see the module notes); batch_size: images per
    attack call. ``state_path``: an ``.npz`` written atomically after every batch;
    ``resume=True`` continues from it (its settings and data must match; otherwise
    ``CheckpointError``). ``components``: {name: attack(params, x, y, eps, norm, rng,
    predict_fn) -> AttackResult} replacing entries of :data:`COMPONENTS` (e.g. fewer
    iterations for a quick look; the result is then not the standard AutoAttack, and the
    names replaced are recorded in ``details["replaced"]``). ``workers``: processes to run
    the attacks in (module notes; the functions of ``components`` must then be defined at
    a module's top level, so that they pickle). ``verbose``: a progress bar.

    Returns an :class:`AttackResult` (untargeted: ``success`` = not robust; ``steps``: those
    of the attack that turned the image, 0 if none did) whose ``details`` hold ``robust_accuracy`` (final), ``clean_accuracy``, ``after`` (robust
    accuracy after each attack, cumulative), ``fooled`` (images each attack turned),
    ``fooled_by`` ((N,) the index in ``attacks`` of the attack that turned each image, -1
    if none), ``square_warning`` (bool, or None without Square or white-box attacks),
    ``checks`` (the closing check) and ``seconds`` per attack.
    """
    check_model(params, predict_fn)
    check_images(x)
    check_labels(y, len(x))
    eps = check_float(eps, "eps", minimum=0)
    get_norm(norm)
    table = dict(COMPONENTS)
    if components is not None:
        if not isinstance(components, dict) or not all(callable(f) for f in components.values()):
            raise TypeError("components: expected a dict of name -> attack function")
        table.update(components)
    attacks = tuple(check_names(attacks, "attacks", table, what="attack", unique=True))
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    workers = check_workers(workers)
    square_tolerance = check_float(square_tolerance, "square_tolerance", minimum=0)
    if resume and state_path is None:
        raise ValueError("resume: needs state_path (the state file to continue from)")
    config = {"eps": eps, "norm": norm, "attacks": list(attacks), "seed": seed,
              "batch_size": batch_size, "n": int(len(x)), "data": data_fingerprint(x, y),
              "dtype": str(x.dtype), "version": __version__,
              "replaced": sorted(components or {}),
              "workers": workers}    # the batches are cut by the worker count (module notes)

    t0 = time.perf_counter()
    logits0 = predict_batched(params, x, batch_size, predict_fn)
    clean = onp.argmax(logits0, 1) == y
    if resume and state_path is not None and os.path.exists(state_path):
        st = _State.load(state_path, config, x)
    else:
        st = _State(x, clean)
        if state_path is not None:
            st.save(state_path, config)
    bar = Progress(total=len(attacks), desc=f"autoattack {norm} eps={eps:g}", enable=verbose) \
        if verbose else None
    shared = {"params": params, "x": x, "y": y, "eps": eps, "norm": norm, "batch_size": batch_size,
              "predict_fn": portable(predict_fn), "table": {a: table[a] for a in attacks}}
    try:
        with Workers(workers, shared) as pool:
            while st.k < len(attacks):
                name = attacks[st.k]
                if bar is not None:
                    bar.set_postfix(attack=name, robust=int(st.robust.sum()))
                n_batches = -(-len(st.todo) // batch_size)
                batch_of, tasks = [], []
                for b in range(st.b, n_batches):
                    for j, key in _parts(st.todo[b * batch_size:(b + 1) * batch_size],
                                         seed, st.k, b, workers):
                        batch_of.append(b)
                        tasks.append((name, j, key))
                for i, (turned, x_turned, steps_turned, seconds) in \
                        enumerate(pool.map(_attack_part, tasks)):
                    j = tasks[i][1]
                    st.robust[j[turned]] = False
                    st.x_adv[j[turned]] = x_turned
                    st.fooled_by[j[turned]] = st.k
                    st.steps[j[turned]] = steps_turned
                    st.seconds[name] = st.seconds.get(name, 0.0) + seconds
                    if batch_of[i + 1:i + 2] != [batch_of[i]]:    # the batch's last part is in
                        st.b = batch_of[i] + 1
                        if state_path is not None:
                            st.save(state_path, config)
                st.after[name] = float(st.robust.mean())
                st.k, st.b = st.k + 1, 0
                st.todo = onp.flatnonzero(st.robust)
                if state_path is not None:
                    st.save(state_path, config)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    logits = predict_batched(params, st.x_adv, batch_size, predict_fn)
    labels = onp.argmax(logits, 1)
    checks = _closing_check(st.x_adv, x, norm, eps, st.robust, labels, y)
    white = [st.after[a] for a in attacks if a != "square" and a in st.after]
    square_warning = None
    if "square" in st.after and white:
        square_warning = bool(st.after["square"] < min(white) - square_tolerance)
    fooled = {a: int(onp.sum(st.fooled_by == k)) for k, a in enumerate(attacks)}
    best = {"x": st.x_adv, "succ": ~st.robust, "logits": logits, "steps": st.steps,
            "ce": per_example_cross_entropy(logits, y), "ce0": per_example_cross_entropy(logits0, y)}
    details = {"clean_accuracy": float(clean.mean()), "robust_accuracy": float(st.robust.mean()),
               "after": dict(st.after), "fooled": fooled, "fooled_by": st.fooled_by.copy(),
               "attacks": list(attacks), "square_warning": square_warning,
               "square_tolerance": square_tolerance, "checks": checks,
               "replaced": sorted(components or {}),
               "seconds": dict(st.seconds), "total_seconds": time.perf_counter() - t0}
    return build_result(x, best, onp.full(len(x), eps), None, details=details)


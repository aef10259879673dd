"""Training: shuffled mini-batches, epochs, validation, history, checkpoints, resume.

``plan_training(architecture, epochs=..., optimizer=..., defense=...)`` checks a run's
settings and writes its config (the one place it is written: ``scratchadv train``, the
model cache and the scripts all go through it); ``train_model(plan, x, y, ...)`` trains
it with :func:`fit`.

``fit`` is a loop around ``params, state = opt.update(params, grad(loss_fn)(params, xb, yb), state)``.
Everything random is derived from ``seed`` by position, not by a running generator:

- the order of epoch ``e`` is ``default_rng([seed, e]).permutation(N)``;
- the Generator handed to ``batch_transform`` for batch ``b`` of epoch ``e`` is
  ``default_rng([seed, e, b])``.

So a run interrupted anywhere and resumed from its training state computes exactly the
same sequence of updates as an uninterrupted run: the final weights are bit-identical.

Faults: the training state (params, optimizer state, position, running sums, history)
is written atomically at the end of every epoch and when training is interrupted
(Ctrl-C / SIGTERM in the CLI). A non-finite loss raises :class:`TrainingDiverged`
before the bad update is applied; the last good state on disk is kept.
"""
import functools
import os
import time
from collections import namedtuple

import numpy as onp
from autograd import value_and_grad
from autograd.tracer import getval

from .checkpoint import CheckpointError, load_training_state, save_training_state
from .data import data_fingerprint
from .defenses import make_defense
from .model import ARCHITECTURE, ARCHITECTURES, architecture_of, get_architecture, predict
from .ops import cross_entropy
from .optim import Optimizer, get_optimizer, rmsprop
from .parallel import Lockstep, check_workers, portable, split_evenly
from .progress import Progress
from .validate import check_images, check_int, check_labels, check_params

__all__ = ["fit", "TrainingDiverged", "TrainingInterrupted", "evaluate_split", "data_fingerprint",
           "TrainingPlan", "plan_training", "train_model"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good training state was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (or SIGTERM in the CLI) after saving its state."""

    def __init__(self, message, state_path=None):
        super().__init__(message)
        self.state_path = state_path


def evaluate_split(params, x, y, predict_fn=predict, batch_size=1000):
    """(mean cross-entropy, accuracy) over a whole split, batched, without autograd."""
    total, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = predict_fn(params, x[i:i + batch_size])
        yb = y[i:i + batch_size]
        total += float(cross_entropy(logits, yb)) * len(yb)
        correct += int(onp.sum(onp.argmax(logits, 1) == yb))
    return total / len(x), correct / len(x)


def _arch_of(predict_fn, architecture):
    if architecture is not None:
        return architecture
    arch = architecture_of(predict_fn)
    return arch.name if arch is not None else ARCHITECTURE


def fit(params, x, y, *, x_val=None, y_val=None, epochs=10, batch_size=128, optimizer=None,
        seed=0, loss_fn=None, batch_transform=None, predict_fn=predict, architecture=None,
        checkpoint_path=None, resume=False, verbose=True, config=None, callbacks=(), workers=1):
    """Train ``params`` on (x, y) and return ``(params, history)``.

    params: dict of arrays (the dtype of x, usually float32); x: (N, 1, 28, 28) in [0, 1];
    y: (N,) int labels. ``x_val``/``y_val``: evaluated after every epoch (the lecture uses
    the test set as Keras ``validation_data``). ``optimizer``: an ``optim.Optimizer``
    (default RMSprop with Keras defaults). ``loss_fn(params, xb, yb)``: the scalar to
    minimise (default ``losses.loss``). ``batch_transform(params, xb, yb, rng, epoch) ->
    (xb, yb)`` runs before each step (adversarial training replaces xb by attacks on the
    current params). ``checkpoint_path``: training-state file written each epoch and on
    interruption; with ``resume=True`` training continues from it. ``callbacks``:
    functions ``cb(epoch, history, params)`` called after each epoch. ``workers``:
    data-parallel training in that many processes (:mod:`scratchadv.parallel`): each batch
    is cut into ``workers`` even parts; worker ``i`` transforms its part (with
    ``default_rng([seed, epoch, batch, i])``) and takes the gradient of the loss on it;
    the batch's gradient is the parts' gradients weighted by their share of the batch
    (every loss here is a batch mean), added in part order. Mathematically the same
    gradient, rounded differently: the weights depend on ``workers``, so it is part of
    the run's config, and a resumed run must use the same count. ``loss_fn``,
    ``batch_transform`` and ``predict_fn`` must then pickle (the defenses' do).

    history: dict of per-epoch lists ``loss``, ``accuracy`` (running means over the
    epoch's batches, as Keras reports), ``val_loss``, ``val_accuracy``, ``seconds``.
    """
    architecture = _arch_of(predict_fn, architecture)
    check_images(x, "x")
    check_labels(y, len(x), "y")
    if x_val is not None or y_val is not None:
        if x_val is None or y_val is None:
            raise ValueError("x_val/y_val: expected both or neither, got only one")
        check_images(x_val, "x_val")
        check_labels(y_val, len(x_val), "y_val")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    check_params(params, ARCHITECTURES[architecture].param_shapes())
    pdt = next(iter(params.values())).dtype
    if pdt != x.dtype:
        raise TypeError(f"params: expected the dtype of x ({x.dtype}), got {pdt}; "
                        "cast one of them explicitly")
    optimizer = optimizer if optimizer is not None else rmsprop()
    workers = check_workers(workers)

    n = len(x)
    nb = -(-n // batch_size)
    fingerprint = data_fingerprint(x, y)
    run_config = {"architecture": architecture, "epochs": epochs, "batch_size": batch_size,
                  "seed": seed, "optimizer": optimizer.name, **{"opt_" + k: v for k, v in optimizer.hyper.items()},
                  "n_train": n, "data": fingerprint}
    if config:
        run_config.update(config)
    if workers > 1:                                      # the parts change the rounding
        run_config["workers"] = workers

    params = {k: onp.array(v) for k, v in params.items()}
    opt_state = optimizer.init(params)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [], "seconds": []}
    start_epoch, start_batch, sums = 0, 0, [0.0, 0, 0, 0.0]   # loss*count, correct, count, seconds

    if resume and checkpoint_path and os.path.exists(checkpoint_path):
        params, opt_state, meta = load_training_state(checkpoint_path)
        saved = meta.get("config", {})
        for key in ("architecture", "batch_size", "seed", "optimizer", "n_train", "data", "workers"):
            if saved.get(key) != run_config.get(key):
                raise CheckpointError(
                    f"{checkpoint_path}: cannot resume: {key} was {saved.get(key)!r} in the saved run, "
                    f"now {run_config.get(key)!r}")
        if next(iter(params.values())).dtype != x.dtype:
            raise CheckpointError(f"{checkpoint_path}: saved params are {next(iter(params.values())).dtype}, "
                                  f"data is {x.dtype}")
        start_epoch, start_batch = int(meta["epoch"]), int(meta["batch"])
        sums = list(meta["sums"])
        history = meta["history"]
        if verbose:
            print(f"resuming from {checkpoint_path}: epoch {start_epoch + 1}, batch {start_batch}/{nb}")
    elif resume and verbose:
        print(f"no training state at {checkpoint_path!r}; starting from scratch")

    def save_state(epoch, batch, p, s, sm, hist):
        if checkpoint_path:
            save_training_state(checkpoint_path, p, s, {
                "architecture": architecture, "config": run_config, "epoch": epoch,
                "batch": batch, "sums": sm, "history": hist})

    # st = (params, opt_state, epoch, next batch, sums) is replaced in one assignment after
    # every applied update, so an interrupt anywhere leaves a consistent position to save.
    zero = [0.0, 0, 0, 0.0]
    st = (params, opt_state, start_epoch, start_batch, sums if start_batch else list(zero))
    pool = None
    if workers > 1:
        # the training images go to each worker once; a step sends the weights and indices
        # and receives a gradient (through shared memory; the workers wait between steps
        # polling, not asleep)
        pool = _step_pool(workers, params, x, y, batch_size, loss_fn, batch_transform, predict_fn)
    try:
        for epoch in range(start_epoch, epochs):
            if st[2] != epoch:
                st = (st[0], st[1], epoch, 0, list(zero))
            perm = onp.random.default_rng([seed, epoch]).permutation(n)
            bar = Progress(total=nb, desc=f"epoch {epoch + 1}/{epochs}", enable=verbose)
            bar.n = st[3]
            t0 = time.perf_counter()
            for batch in range(st[3], nb):
                params, opt_state, _, _, sums = st
                idx = perm[batch * batch_size:(batch + 1) * batch_size]
                if pool is not None:
                    value, grads, correct, count = _step_in_parts(pool, params, idx,
                                                                  (seed, epoch, batch), epoch)
                else:
                    xb, yb = x[idx], y[idx]
                    if batch_transform is not None:
                        xb, yb = batch_transform(params, xb, yb,
                                                 onp.random.default_rng([seed, epoch, batch]), epoch)
                    value, grads, logits = _value_grad_logits(loss_fn, predict_fn, params, xb, yb)
                    correct, count = int(onp.sum(onp.argmax(logits, 1) == yb)), len(yb)
                if not onp.isfinite(value) or not all(onp.all(onp.isfinite(g)) for g in grads.values()):
                    raise TrainingDiverged(
                        f"loss is {value} at epoch {epoch + 1}, batch {batch + 1}: training diverged "
                        f"(try a smaller learning rate (lr)); the last good state is kept"
                        + (f" in {checkpoint_path}" if checkpoint_path else ""))
                new_params, new_state = optimizer.update(params, grads, opt_state)
                st = (new_params, new_state, epoch, batch + 1,
                      [sums[0] + value * count, sums[1] + correct, sums[2] + count, sums[3]])
                bar.update(1)
                if batch % 10 == 0 or batch == nb - 1:
                    bar.set_postfix(loss=st[4][0] / st[4][2], acc=st[4][1] / st[4][2])
            bar.close()
            params, opt_state, _, _, sums = st
            sums = [sums[0], sums[1], sums[2], sums[3] + time.perf_counter() - t0]
            history["loss"].append(sums[0] / sums[2])
            history["accuracy"].append(sums[1] / sums[2])
            history["seconds"].append(sums[3])
            if x_val is not None:
                vl, va = evaluate_split(params, x_val, y_val, predict_fn)
                history["val_loss"].append(vl)
                history["val_accuracy"].append(va)
            if verbose:
                msg = (f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f} "
                       f"accuracy {history['accuracy'][-1]:.4f}")
                if x_val is not None:
                    msg += f" val_loss {history['val_loss'][-1]:.4f} val_accuracy {history['val_accuracy'][-1]:.4f}"
                print(msg + f" ({sums[3]:.1f}s)", flush=True)
            save_state(epoch + 1, 0, params, opt_state, list(zero), history)
            st = (params, opt_state, epoch + 1, 0, list(zero))
            for cb in callbacks:
                cb(epoch, history, params)
    except KeyboardInterrupt:
        p, s_, ep, b, sm = st
        done = {k: list(v[:ep]) for k, v in history.items()}   # only completed epochs
        save_state(ep, b, p, s_, sm, done)
        where = f"; state saved to {checkpoint_path}" if checkpoint_path else ""
        raise TrainingInterrupted(f"training interrupted at epoch {ep + 1}, batch {b}/{nb}{where}",
                                  checkpoint_path) from None
    finally:
        if pool is not None:
            pool.close()
    return st[0], history


def _cross_entropy_of(params, xb, yb, *, predict_fn):
    """The loss of a plain training step: mean cross-entropy of the model's logits."""
    return cross_entropy(predict_fn(params, xb), yb)


def _recording_logits(loss_fn, predict_fn, xb, box):
    """``loss_fn`` whose model call on ``xb`` itself leaves its (un-boxed) logits in
    ``box``, so the accuracy needs no forward pass of its own; None when ``loss_fn`` does
    not say which model it calls (the defenses' losses, like the plain step's, are
    ``functools.partial``s with a ``predict_fn`` keyword) or calls another one than
    ``predict_fn``."""
    if not (isinstance(loss_fn, functools.partial) and "predict_fn" in loss_fn.keywords):
        return None
    inner = loss_fn.keywords["predict_fn"]
    if portable(inner) is not portable(predict_fn):
        return None

    def recording(p, xx):
        z = inner(p, xx)
        if "logits" not in box:
            raw = getval(xx)
            if raw is xb or (raw.shape == xb.shape and onp.array_equal(raw, xb)):  # TRADES: concat(x, x')
                box["logits"] = getval(z)
        return z
    return functools.partial(loss_fn, predict_fn=recording)


def _value_grad_logits(loss_fn, predict_fn, params, xb, yb):
    """(loss, gradient w.r.t. params, logits) on one batch. ``loss_fn`` None: cross-entropy.
    The logits come from the loss's own forward pass on the batch when it has one
    (cross-entropy, the defenses' losses: :func:`_recording_logits`), else from a forward
    pass of their own."""
    if loss_fn is None:
        loss_fn = functools.partial(_cross_entropy_of, predict_fn=predict_fn)
    box = {}
    value, grads = value_and_grad(_recording_logits(loss_fn, predict_fn, xb, box) or loss_fn)(params, xb, yb)
    return float(value), grads, box["logits"] if "logits" in box else predict_fn(params, xb)


def _step_pool(workers, params, x, y, batch_size, loss_fn, batch_transform, predict_fn):
    """The worker processes of data-parallel steps (:func:`_step_in_parts`): the training
    images sent once, each message room for the weights (or a gradient) and a batch's
    indices."""
    capacity = sum(v.nbytes for v in params.values()) + 8 * batch_size + (64 << 10)
    return Lockstep(workers, {"transform": batch_transform, "loss_fn": loss_fn,
                              "predict_fn": portable(predict_fn), "x": x, "y": y}, capacity)


def _step_in_parts(pool, params, idx, key, epoch):
    """(loss, gradient, correct, count) of the batch ``shared["x"][idx]`` from
    ``pool.workers`` parts side by side.

    Each part's loss is a mean over its images, so the batch's is the parts' weighted by
    their counts; the gradient likewise, summed in part order (deterministic).
    """
    tasks = [(params, part, (*key, i), epoch) for i, part in enumerate(split_evenly(idx, pool.workers))]
    outputs = list(pool.map(_part_step, tasks))
    total = sum(o[3] for o in outputs)
    dt = next(iter(params.values())).dtype.type
    grads = {k: sum(o[1][k] * dt(o[3] / total) for o in outputs) for k in params}
    value = sum(o[0] * (o[3] / total) for o in outputs)
    return value, grads, sum(o[2] for o in outputs), total


def _part_step(shared, params, idx, key, epoch):
    """In a worker: the (loss, gradient, correct, count) of images ``idx``, transformed."""
    xb, yb = shared["x"][idx], shared["y"][idx]
    if shared["transform"] is not None:
        xb, yb = shared["transform"](params, xb, yb, onp.random.default_rng(list(key)), epoch)
    value, grads, logits = _value_grad_logits(shared["loss_fn"], shared["predict_fn"], params, xb, yb)
    return value, grads, int(onp.sum(onp.argmax(logits, 1) == yb)), len(yb)


# ---------------------------------------------------------------------------
# A training run from its settings: the one place a run's config is written
# ---------------------------------------------------------------------------

TrainingPlan = namedtuple("TrainingPlan", "architecture optimizer loss_fn batch_transform config")
TrainingPlan.__doc__ = """A checked training run before any data is read.

architecture: a :class:`scratchadv.model.Architecture`; optimizer: an ``optim.Optimizer``;
loss_fn / batch_transform: the defense's hooks for :func:`fit` (None: plain cross-entropy,
unchanged batches); config: JSON-ready settings, as a model file records them.
"""


def plan_training(architecture=ARCHITECTURE, *, epochs=10, batch_size=128, optimizer="rmsprop",
                  lr=None, seed=0, defense="none", defense_options=None, notes=None, workers=1):
    """Check and resolve the settings of a training run -> :class:`TrainingPlan`.

    architecture: a name of :data:`scratchadv.model.ARCHITECTURES`; optimizer: 'rmsprop' |
    'sgd' | 'adam' (``lr`` None keeps its default; Keras defaults) or an ``optim.Optimizer``
    (then ``lr`` must be None); defense: 'none' | 'pgd' | 'gradreg' | 'trades' with
    ``defense_options`` for :func:`scratchadv.defenses.make_defense` (None entries keep
    its tuned defaults, which depend on eps and on ``epochs``:
    :func:`scratchadv.defenses.defaults_for`). ``notes``: JSON-ready entries the caller records about its data
    (e.g. ``{"limit": 1000}``), kept between the optimizer and the defense settings.
    ``workers``: processes for data-parallel training (see :func:`fit`); recorded as
    ``config["workers"]`` when it is above 1, since the weights then depend on it.

    ``config`` = ``{"epochs", "batch_size", "optimizer", "opt_<hyper-parameter>"...,
    "seed", **notes, "defense", <defense settings>...}``. Every argument is checked here,
    so a bad one fails before the data is loaded.
    """
    arch = get_architecture(architecture)
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ValueError(f"lr: expected None with an Optimizer object (it has its own lr), got {lr!r}")
    else:
        optimizer = get_optimizer(optimizer, lr)
    opts = {k: v for k, v in (defense_options or {}).items() if v is not None}
    loss_fn, transform, defense_cfg = make_defense(defense, epochs=epochs, predict_fn=arch.predict,
                                                   **opts)
    config = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer.name,
              **{"opt_" + k: v for k, v in optimizer.hyper.items()}, "seed": seed,
              **(notes or {}), **defense_cfg}
    if check_workers(workers) > 1:
        config["workers"] = workers
    return TrainingPlan(arch, optimizer, loss_fn, transform, config)


def train_model(plan, x, y, *, x_val=None, y_val=None, checkpoint_path=None, resume=False,
                verbose=True, config=None, callbacks=()):
    """Train ``plan`` (see :func:`plan_training`) from its seed's initialisation with :func:`fit`.

    x: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64; ``x_val``/``y_val``, the
    checkpoint, resume, verbose and callbacks as in :func:`fit`. ``config``: entries
    recorded beside ``plan.config`` in the training state (e.g. a cache key's inputs).
    Returns ``(params, history, run_config)``, run_config being what the training state
    records: ``plan.config`` and ``config`` with the architecture, ``n_train`` and the data
    fingerprint.
    """
    arch, cfg = plan.architecture, {**plan.config, **(config or {})}
    params, history = fit(arch.init_params(cfg["seed"]), x, y, x_val=x_val, y_val=y_val,
                          epochs=cfg["epochs"], batch_size=cfg["batch_size"], optimizer=plan.optimizer,
                          seed=cfg["seed"], loss_fn=plan.loss_fn, batch_transform=plan.batch_transform,
                          predict_fn=arch.predict, architecture=arch.name,
                          checkpoint_path=checkpoint_path, resume=resume, verbose=verbose,
                          config=cfg, callbacks=callbacks, workers=cfg.get("workers", 1))
    run_config = {"architecture": arch.name, **cfg, "n_train": int(len(x)),
                  "data": data_fingerprint(x, y)}
    return params, history, run_config

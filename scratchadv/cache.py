"""A folder of trained models, keyed by how they were trained: train once, reuse after.

Each model is stored as ``<cache>/<name>-<key>.npz`` where the key is a SHA-256 of its
training configuration (architecture, epochs, batch size, optimizer and its
hyper-parameters, seed, defense settings, fingerprints of the training and validation
data) and the library version. A second call with the same settings loads the file
instead of training; an interrupted training resumes from ``<name>-<key>.state.npz``
(written by :func:`scratchadv.train.fit` every epoch). Every file is written atomically.

Used by the demo (:mod:`scratchadv.demo`) and the experiment scripts, so that the same
settings give the same file whichever of them trained it.
"""
import hashlib
import json
import os
import time

from . import __version__
from .checkpoint import CheckpointError, load_model, save_model
from .train import data_fingerprint, plan_training, train_model

__all__ = ["default_cache_dir", "cache_key", "cached_fit", "trained_seconds"]


def default_cache_dir():
    """``$SCRATCHADV_CACHE/models``, else ``$XDG_CACHE_HOME/scratchadv/models``, else
    ``~/.cache/scratchadv/models`` (beside the MNIST download cache of :mod:`scratchadv.data`)."""
    from .data import cache_dir
    return os.path.join(os.path.dirname(cache_dir()), "models")


def cache_key(config):
    """16 hex digits of SHA-256 over the JSON of ``config`` (sorted keys) and the library version."""
    blob = json.dumps({"config": config, "library_version": __version__}, sort_keys=True,
                      default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _json_default(o):
    """numpy scalars and arrays as plain numbers and lists (they may sit in a config)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fingerprint(x, y):
    return None if x is None else data_fingerprint(x, y)


def trained_seconds(history):
    """A model's own training time: the sum of its epochs' times in ``history``."""
    return float(sum(history.get("seconds", [])))


def cached_fit(name, architecture, x, y, *, cache, x_val=None, y_val=None, epochs=10,
               batch_size=128, seed=0, defense="none", defense_options=None, verbose=True,
               workers=1):
    """Train ``architecture`` on (x, y) with RMSprop, or load the identical model from ``cache``.

    name: a file-name prefix ('natural', 'pgd-trained', ...); x: (N, 1, 28, 28) float32 in
    [0, 1], y: (N,) int64; defense: 'none' | 'pgd' | 'gradreg' | 'trades' with ``defense_options``
    for :func:`scratchadv.defenses.make_defense` (None entries keep the tuned defaults).
    Training resumes from the state file an interrupted call left behind. Returns
    ``(params, history, info)`` where info holds ``path``, ``key``, ``config`` (what the
    key was computed from), ``reused`` (bool), ``train_seconds`` (this call's training
    time; 0 when reused) and ``trained_seconds`` (the model's own training time, summed
    over its epochs: also known when it was reused). ``workers``: processes for
    data-parallel training (:func:`scratchadv.train.fit`); above 1 it is part of the
    config, so of the key: such a model is another model.
    """
    plan = plan_training(architecture, epochs=epochs, batch_size=batch_size, seed=seed,
                         defense=defense, defense_options=defense_options, workers=workers)
    arch = plan.architecture
    # what identifies the model beyond its training settings: the data it saw
    config = {"name": name, "architecture": arch.name, **plan.config,
              "n_train": int(len(x)), "data": _fingerprint(x, y),
              "n_val": None if x_val is None else int(len(x_val)), "val_data": _fingerprint(x_val, y_val)}
    key = cache_key(config)
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"{name}-{key}.npz")
    state = os.path.join(cache, f"{name}-{key}.state.npz")
    info = {"path": path, "key": key, "config": config, "reused": False, "train_seconds": 0.0}
    if os.path.exists(path):
        try:
            params, meta = load_model(path, architecture=arch.name)
            if meta.get("config", {}).get("cache_key") != key:
                raise CheckpointError(f"{path}: cache key does not match")
            print(f"reusing cached model {path}", flush=True)
            history = meta.get("history", {})
            return params, history, {**info, "reused": True, "trained_seconds": trained_seconds(history)}
        except CheckpointError as e:      # damaged or foreign file: train again, overwrite it
            print(f"cannot reuse {path} ({e}); training again", flush=True)
    if verbose:
        what = arch.name + ("" if defense == "none" else f", defense {defense}")
        print(f"training {name} ({what}, {plan.config['epochs']} epochs on {len(x)} images)", flush=True)
    t0 = time.perf_counter()
    params, history, _ = train_model(plan, x, y, x_val=x_val, y_val=y_val, checkpoint_path=state,
                                     resume=True, verbose=verbose, config=config)
    info["train_seconds"] = time.perf_counter() - t0
    save_model(path, params, arch.name, config={**config, "cache_key": key}, history=history)
    if os.path.exists(state):            # the finished model replaces the resume point
        os.remove(state)
    return params, history, {**info, "trained_seconds": trained_seconds(history)}

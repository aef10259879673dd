"""Running the demo: the sections in order, results.json and README.md after each one.

:func:`run_demo` checks its arguments, loads MNIST, runs the chosen sections of
:mod:`.sections` (with two or more workers, those of :data:`BESIDE` in a second process
while this one runs the rest) and after every section rewrites ``results.json`` (every number) and
``README.md`` (:func:`scratchadv.demo.report.format_readme` of those results), so an
interrupted run leaves a readable partial report and a second run reuses every trained
model from the cache (:mod:`scratchadv.cache`).
"""
import datetime
import json
import os
import time

import numpy as onp

from .. import __version__
from ..cache import default_cache_dir
from ..fileio import atomic_write, atomic_write_json, check_writable
from ..threads import threads
from ..validate import check_int
from .report import format_readme
from .sections import SECTION_FUNCTIONS, defended_models, train_defended
from .settings import PRESETS, REFERENCES, SECTIONS, TITLES

__all__ = ["BESIDE", "run_demo", "write_outputs"]


def _plain(o):
    if isinstance(o, (onp.generic, onp.ndarray)):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _jsonable(obj):
    """Plain Python types all the way down (numpy scalars/arrays -> float/int/list)."""
    return json.loads(json.dumps(obj, default=_plain, allow_nan=True))


def write_outputs(out, results):
    """results.json and README.md in ``out`` (atomic writes)."""
    plain = _jsonable(results)
    atomic_write_json(os.path.join(out, "results.json"), plain)
    with atomic_write(os.path.join(out, "README.md")) as f:
        f.write(format_readme(plain).encode("utf-8"))


#: the sections that need only the natural model and no worker processes of their own:
#: with ``workers >= 2`` they run in a second process (one core) beside the others
BESIDE = ("fake", "shallow_vs_deep", "targeted")


def _context(out, settings, seed, cache, verbose, workers, data):
    """The run context the sections share: settings, data, and the models and reports so far."""
    x_train, y_train, x_test, y_test = data
    return {"out": out, "settings": settings, "seed": seed, "cache": cache, "verbose": verbose,
            "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "models": {}, "histories": {}, "reports": {}, "aa_reports": {}, "workers": workers}


def _run_section(ctx, key, workers):
    """One section with ``workers`` threads for the primitives; its dict, timed."""
    t0, c0 = time.perf_counter(), time.process_time()
    with threads(workers):
        r = SECTION_FUNCTIONS[key](ctx)
    r["seconds"] = time.perf_counter() - t0
    r["cpu_seconds"] = time.process_time() - c0    # wall time is noisy on a shared machine
    return r


def _run_beside(keys, out, settings, seed, cache, data, natural, verbose):
    """Sections ``keys`` in a process of their own (:class:`scratchadv.parallel.Beside`),
    from the natural model's weights ``natural``: ``{key: section dict}``. One core; no
    progress bars (the first process has the terminal), a line as each section starts.
    The numbers are those of a run in the first process: each section draws from its own
    random stream."""
    from ..data import load_mnist
    from ..model import predict
    ctx = _context(out, settings, seed, cache, False, 1, load_mnist(data))
    ctx["models"]["natural"] = (natural, predict)
    done = {}
    for key in keys:
        if verbose:
            print(f"--- beside: {TITLES[key]}", flush=True)
        done[key] = _run_section(ctx, key, 1)
    return done


def _ordered(sections):
    return {k: sections[k] for k in SECTIONS if k in sections}


def run_demo(out="runs/demo", *, quick=False, seed=0, cache=None, data=None, verbose=True,
             sections=SECTIONS, command=None, workers=1):
    """Run the lecture's sections and write the report folder ``out``.

    quick: the ``quick`` preset (smoke test) instead of ``full``; seed: for every
    initialisation, shuffle and attack; cache: folder of trained models (default
    :func:`default_cache_dir`); data: MNIST folder (default: ``$SCRATCHADV_DATA`` or the
    cache). ``sections``: a subset of :data:`SECTIONS` (each needs the natural model, so
    'train' always runs). After every section results.json and README.md are rewritten,
    so an interrupted run leaves a readable partial report. ``workers``: processes for the
    defended models' data-parallel training and the robustness evaluations (:mod:`scratchadv.parallel`),
    and the threads of this process's own primitives (:mod:`scratchadv.threads`, which
    do not change results); the numbers are reproducible for a given count, and models
    trained with another count are other models (cached apart). With ``workers >= 2``
    the sections of :data:`BESIDE` (2, 4, 5) run in a second process, on one core, while
    this one goes on with 3, 6 and 7: the same numbers, the cores kept busy. The defended
    models of 6 and 7 are then trained (or loaded) before that process starts: their
    data-parallel steps go at the pace of the slower worker, and a core shared with a
    third process would halve it (an epoch of PGD training took 57 s instead of 28 s).
    Returns the results dict.
    """
    from ..data import load_mnist
    from ..parallel import Beside, check_workers
    seed = check_int(seed, "seed", minimum=0)
    workers = check_workers(workers)
    unknown = [k for k in sections if k not in SECTIONS]
    if unknown:
        raise ValueError(f"sections: expected names from {list(SECTIONS)}, got {unknown}")
    sections = [k for k in SECTIONS if k in set(sections) | {"train"}]
    out = os.fspath(out)
    check_writable(os.path.join(out, "results.json"), "out")
    cache = os.fspath(cache) if cache else default_cache_dir()
    check_writable(os.path.join(cache, "probe.npz"), "cache")
    settings = dict(PRESETS["quick" if quick else "full"])
    t_start = time.perf_counter()
    ctx = _context(out, settings, seed, cache, verbose, workers, load_mnist(data))
    results = {"library_version": __version__, "quick": bool(quick), "seed": seed,
               "command": command or f"scratchadv demo --out {out}" + (" --quick" if quick else "")
               + (f" --seed {seed}" if seed else "") + (f" --workers {workers}" if workers > 1 else ""),
               "workers": workers,
               "cache": cache, "settings": settings, "references": REFERENCES, "sections": {}}
    beside = [k for k in sections if k in BESIDE] if workers > 1 else []
    results["beside"] = beside
    mode = "quick" if quick else "full"
    print(f"scratchadv demo ({mode}): {len(sections)} sections -> {out}", flush=True)

    def record(key, r, where=""):
        results["sections"][key] = r
        results["sections"] = _ordered(results["sections"])
        results["seconds"] = time.perf_counter() - t_start
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_outputs(out, results)
        print(f"[{SECTIONS.index(key) + 1}/7] {key}: {r['summary']} ({r['seconds']:.0f}s{where})", flush=True)

    side, failed = None, []

    def collect():          # the sections beside, once done; an error waits for the end
        try:
            done = side.result()
        except RuntimeError as e:
            failed.append(e)
            return
        for k, r in done.items():
            record(k, r, ", beside")

    try:
        for key in [k for k in sections if k not in beside]:
            if verbose:
                print(f"--- {TITLES[key]}", flush=True)
            record(key, _run_section(ctx, key, workers))
            if key == "train" and beside:
                # data-parallel training runs in lockstep and a core shared with the sections
                # beside would slow every step to the slower worker's pace: the defended models
                # are trained (or loaded from the cache) first, the sections beside then share
                # the cores with evaluations only
                for section, name, _, _ in defended_models(settings):
                    if section in sections:
                        if verbose:
                            print(f"--- the defended model {name} for section "
                                  f"{SECTIONS.index(section) + 1}, before the sections beside start",
                                  flush=True)
                        with threads(workers):
                            train_defended(ctx, name)
                print("--- in a second process, beside the sections below: "
                      + ", ".join(str(SECTIONS.index(k) + 1) for k in beside), flush=True)
                side = Beside(_run_beside, beside, out, settings, seed, cache, data,
                              ctx["models"]["natural"][0], verbose)
            elif side is not None and side.done():
                collect()
                side.close()
                side = None
        if side is not None:
            print("--- waiting for the sections beside: " + ", ".join(beside), flush=True)
            collect()
    finally:
        if side is not None:
            side.close()
    if failed:
        raise failed[0]
    print(f"report: {os.path.join(out, 'README.md')} ({results['seconds']:.0f}s)", flush=True)
    return results

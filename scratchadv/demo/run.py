"""Running the demo: the sections in order, results.json and README.md after each one.

:func:`run_demo` checks its arguments, loads MNIST, runs the chosen sections of
:mod:`.sections` and after every section rewrites ``results.json`` (every number) and
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
from .sections import SECTION_FUNCTIONS
from .settings import PRESETS, REFERENCES, SECTIONS, TITLES

__all__ = ["run_demo", "write_outputs"]


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


def run_demo(out="runs/demo", *, quick=False, seed=0, cache=None, data=None, verbose=True,
             sections=SECTIONS, command=None, workers=1):
    """Run the lecture's sections in order and write the report folder ``out``.

    quick: the ``quick`` preset (smoke test) instead of ``full``; seed: for every
    initialisation, shuffle and attack; cache: folder of trained models (default
    :func:`default_cache_dir`); data: MNIST folder (default: ``$SCRATCHADV_DATA`` or the
    cache). ``sections``: a subset of :data:`SECTIONS` (each needs the natural model, so
    'train' always runs). After every section results.json and README.md are rewritten,
    so an interrupted run leaves a readable partial report. ``workers``: processes for the
    defended models' data-parallel training and the robustness evaluations (:mod:`scratchadv.parallel`),
    and the threads of this process's own primitives (:mod:`scratchadv.threads`, which
    do not change results); the numbers are reproducible for a given count, and models
    trained with another count are other models (cached apart).
    Returns the results dict.
    """
    from ..data import load_mnist
    from ..parallel import check_workers
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
    x_train, y_train, x_test, y_test = load_mnist(data)
    ctx = {"out": out, "settings": settings, "seed": seed, "cache": cache, "verbose": verbose,
           "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
           "models": {}, "histories": {}, "reports": {}, "aa_reports": {}, "workers": workers}
    results = {"library_version": __version__, "quick": bool(quick), "seed": seed,
               "command": command or f"scratchadv demo --out {out}" + (" --quick" if quick else "")
               + (f" --seed {seed}" if seed else "") + (f" --workers {workers}" if workers > 1 else ""),
               "workers": workers,
               "cache": cache, "settings": settings, "references": REFERENCES, "sections": {}}
    mode = "quick" if quick else "full"
    print(f"scratchadv demo ({mode}): {len(sections)} sections -> {out}", flush=True)
    for i, key in enumerate(sections):
        t0, c0 = time.perf_counter(), time.process_time()
        if verbose:
            print(f"--- {TITLES[key]}", flush=True)
        with threads(workers):
            r = SECTION_FUNCTIONS[key](ctx)
        r["seconds"] = time.perf_counter() - t0
        r["cpu_seconds"] = time.process_time() - c0    # wall time is noisy on a shared machine
        results["sections"][key] = r
        results["seconds"] = time.perf_counter() - t_start
        results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_outputs(out, results)
        print(f"[{SECTIONS.index(key) + 1}/7] {key}: {r['summary']} ({r['seconds']:.0f}s)", flush=True)
    print(f"report: {os.path.join(out, 'README.md')} ({results['seconds']:.0f}s)", flush=True)
    return results

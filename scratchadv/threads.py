"""How many threads the primitives of :mod:`scratchadv.ops` use on one batch.

A convolution cuts its batch into chunks of a few images (sized to stay in cache, never
by the thread count) and works through them; with ``threads > 1`` the chunks are shared
out, in consecutive groups, to a small pool of threads. NumPy's copies and BLAS release
the GIL, so the groups run on separate cores. Every chunk is computed the same way
whichever thread takes it, and the weight gradient adds its per-chunk sums in chunk
order, so **results are bit-identical for every thread count** (a test checks it).

The count is ``SCRATCHADV_THREADS`` from the environment when set, else 1; change it
with :func:`set_threads` or, for a block of code, ``with threads(n):``. Worker processes
(:mod:`scratchadv.parallel`) run with one thread each: there the cores are used by
the processes. The BLAS library behind NumPy keeps its own thread count
(``OPENBLAS_NUM_THREADS`` and friends, read when NumPy loads); with ``threads > 1``
give it one thread, or the two kinds of thread compete for the cores.

Like ``torch.set_num_threads``, the count is one setting for the whole process.
"""
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["get_threads", "set_threads", "threads", "map_groups", "MAX_THREADS", "ENV_VAR"]

#: the most threads accepted
MAX_THREADS = 64
#: the environment variable read for the default
ENV_VAR = "SCRATCHADV_THREADS"

_lock = threading.Lock()
_state = {"n": None, "pool": None, "pool_size": 0}


def _check(n, name):
    from .validate import check_int
    return check_int(n, name, minimum=1, maximum=MAX_THREADS)


def _from_environment():
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return 1
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR}: expected a whole number of threads (1 to {MAX_THREADS}), "
                         f"got {text!r}") from None
    return _check(n, ENV_VAR)


def get_threads():
    """The number of threads the primitives use (read from ``SCRATCHADV_THREADS`` once)."""
    if _state["n"] is None:
        _state["n"] = _from_environment()
    return _state["n"]


def set_threads(n):
    """Use ``n`` threads (1 to :data:`MAX_THREADS`) from now on; returns the previous count."""
    n = _check(n, "threads")
    previous = get_threads()
    _state["n"] = n
    return previous


@contextlib.contextmanager
def threads(n):
    """``with threads(2): ...`` runs the block with ``n`` threads, then restores the count."""
    previous = set_threads(n)
    try:
        yield n
    finally:
        _state["n"] = previous


def _pool(n):
    with _lock:
        if _state["pool_size"] < n:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=False)
            _state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="scratchadv")
            _state["pool_size"] = n
        return _state["pool"]


def map_groups(work, items):
    """``work(group)`` for consecutive groups of ``items``, one group per thread, in order.

    Each call of ``work`` gets a list of consecutive items and returns a list with one
    result per item; the results come back concatenated in the items' order. With one
    thread (or one item) it is ``work(items)`` here, with no pool.
    """
    n = min(get_threads(), len(items))
    if n <= 1:
        return list(work(list(items)))
    bounds = [len(items) * i // n for i in range(n + 1)]
    groups = [list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    pool = _pool(n)
    futures = [pool.submit(work, grp) for grp in groups[1:]]
    out = list(work(groups[0]))          # the calling thread takes the first group
    for f in futures:
        out.extend(f.result())
    return out

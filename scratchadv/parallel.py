"""Independent pieces of work spread over worker processes, one BLAS thread each.

NumPy runs its element-wise passes (im2col copies, pooling, ReLU masks) on one core
whatever the BLAS thread count, and the attacks' small batches give BLAS little to
split; so a second core helps most when each core takes its own images. An evaluation
is per-image independent, which makes that easy: :class:`Workers` runs a task function
over a list of tasks in ``workers`` processes and returns the results in task order.

- ``workers=1`` runs every task here, in this process, with no pool and no pickling.
- ``workers>1`` starts that many processes (the ``spawn`` method, the same on every
  platform and safe with a BLAS thread pool in the parent), each with
  ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1`` set before NumPy loads in
  it (and ``SCRATCHADV_THREADS=1``, :mod:`scratchadv.threads`), so ``workers`` processes
  use ``workers`` cores. What every task needs (weights,
  images) is sent once, when the workers start (arrays of 1 MB or more through shared
  memory, mapped by every worker rather than copied); a task carries only its indices.
- The task function is called as ``fn(shared, *task)`` in both cases, so one code path
  gives both results. Everything sent must pickle: model functions are sent as their
  :class:`~scratchadv.model.Architecture` (see :func:`portable`).

Results depend on how the work is cut, never on which process ran a piece or when; the
callers cut by the worker count (documented where they do), so a run is bit-identical
for a given ``workers``.

:class:`Lockstep` is the same idea for many short rounds (data-parallel training: one
round per batch, a few milliseconds each): one task per worker per round, sent and
answered through shared memory, with the workers polling for the next round instead of
sleeping. A sleeping process takes 70-150 us to wake on this kind of virtual machine and
a round trip through a process pool about 1.2 ms (measured), against 7-12 ms of work a
round.

:class:`Beside` runs one long function call in a process of its own (one BLAS thread)
while this process goes on with other work: independent parts of a long job side by side.
"""
import multiprocessing
import os
import pickle
import signal
import time
from concurrent.futures import ProcessPoolExecutor

from .threads import ENV_VAR as THREADS_VAR    # scratchadv's own thread count, also 1 in a worker

__all__ = ["Workers", "Lockstep", "Beside", "available_cpus", "check_workers", "portable", "split_evenly"]

#: variables that fix a BLAS's thread count when it loads
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


#: the most worker processes accepted (a typo like 200 should not fork-bomb a laptop)
MAX_WORKERS = 64

_SHARED = {}     # in a worker process: what its initializer received


def check_workers(workers):
    """An int in [1, MAX_WORKERS]; ``TypeError``/``ValueError`` naming ``workers``."""
    from .validate import check_int
    return check_int(workers, "workers", minimum=1, maximum=MAX_WORKERS)


def available_cpus(limit=8):
    """The CPUs this process may run on (its affinity where the platform tells), at most
    ``limit``: a default for ``workers`` where using every core is what a user wants."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, limit))


def split_evenly(indices, parts):
    """``indices`` cut into ``parts`` consecutive pieces whose sizes differ by at most one
    (empty pieces dropped)."""
    n = len(indices)
    bounds = [n * i // parts for i in range(parts + 1)]
    return [indices[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def portable(predict_fn):
    """``predict_fn`` in a form that pickles: a registered architecture's predict function
    becomes its :class:`~scratchadv.model.Architecture` (callable the same way, pickled
    by name); any other function is returned as it is (it must be importable by name)."""
    from .model import architecture_of
    arch = architecture_of(predict_fn)
    return predict_fn if arch is None else arch


#: arrays in ``shared`` from this size on go to shared memory instead of down a pipe
SHARED_MEMORY_BYTES = 1 << 20

_ATTACHED = []   # in a worker: the shared-memory blocks its arrays live in


class _SharedArray:
    """A read-only copy of an array in a shared-memory block, made by the caller.

    It pickles as the block's name, shape and dtype, so a worker maps the same memory
    instead of receiving a copy (the training images: 188 MB). :meth:`release` frees
    the block when the workers have stopped.
    """

    def __init__(self, array):
        from multiprocessing import shared_memory
        import numpy as onp
        array = onp.ascontiguousarray(array)
        self.block = shared_memory.SharedMemory(create=True, size=max(1, array.nbytes))
        onp.ndarray(array.shape, array.dtype, buffer=self.block.buf)[...] = array
        self.spec = (self.block.name, array.shape, array.dtype.str)

    def __reduce__(self):
        return _attach, self.spec

    def release(self):
        self.block.close()
        self.block.unlink()


def _attach(name, shape, dtype):
    from multiprocessing import shared_memory
    import numpy as onp
    block = shared_memory.SharedMemory(name=name)
    _ATTACHED.append(block)
    out = onp.ndarray(shape, onp.dtype(dtype), buffer=block.buf)
    out.flags.writeable = False
    return out


def _check_pickles(obj, what, hint=""):
    """``TypeError`` "<what> must pickle, and this does not: ..." unless ``obj`` pickles
    (lambdas, closures, open files do not): said before any process starts."""
    try:
        pickle.dumps(obj)
    except Exception as e:
        raise TypeError(f"{what} must pickle, and this does not: {e}{hint}") from None


def _to_send(shared, workers, blocks):
    """``shared`` as the workers receive it: large arrays moved to shared memory (their
    blocks appended to ``blocks``, for the caller to release), after checking that the
    rest pickles (``TypeError`` saying what to do otherwise)."""
    import numpy as onp
    _check_pickles({k: v for k, v in shared.items() if not isinstance(v, onp.ndarray)},
                   f"workers={workers}: everything a worker process needs",
                   " (use workers=1 for functions defined inside other functions)")
    sent = dict(shared)
    for k, v in shared.items():
        if isinstance(v, onp.ndarray) and v.nbytes >= SHARED_MEMORY_BYTES and v.dtype.kind in "biuf":
            sent[k] = _SharedArray(v)
            blocks.append(sent[k])
    return sent


def _init(shared):
    # Ctrl-C goes to the whole process group: the caller handles it (saves its state,
    # stops the pool), so a worker ignores it rather than dying mid-task with a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _SHARED.clear()
    _SHARED.update(shared)


def _call(fn, task):
    return fn(_SHARED, *task)


class _pinned_blas:
    """Within the block, the environment says one BLAS thread (for processes started in it)."""

    def __enter__(self):
        self.saved = {v: os.environ.get(v) for v in BLAS_THREAD_VARS + (THREADS_VAR,)}
        for v in self.saved:
            os.environ[v] = "1"

    def __exit__(self, *exc):
        for v, value in self.saved.items():
            if value is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = value


class Workers:
    """``with Workers(n, shared) as w: results = w.map(fn, tasks)``.

    ``shared``: a dict sent once to every worker (``fn`` receives it first); ``fn``: a
    module-level function ``fn(shared, *task)``; ``tasks``: a list of tuples. ``map``
    yields the results in task order as they become available, so the caller can save
    progress after each one. Leaving the block stops the workers, also on an exception
    or KeyboardInterrupt (pending tasks are cancelled).
    """

    def __init__(self, workers, shared):
        self.workers = check_workers(workers)
        if not isinstance(shared, dict):
            raise TypeError(f"shared: expected a dict, got {type(shared).__name__}")
        self.shared = shared
        self._pool = None
        self._blocks = []
        if self.workers > 1:
            try:
                sent = _to_send(shared, self.workers, self._blocks)
                self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init, initargs=(sent,))
            except BaseException:
                self._release()
                raise

    def _release(self):
        for block in self._blocks:
            block.release()
        self._blocks = []

    def map(self, fn, tasks):
        tasks = [tuple(t) for t in tasks]
        if self._pool is None:
            for task in tasks:
                yield fn(self.shared, *task)
            return
        with _pinned_blas():                     # processes start on submit
            futures = [self._pool.submit(_call, fn, task) for task in tasks]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self, cancel=False):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(cancel=exc_type is not None)


# ---------------------------------------------------------------------------
# Lockstep: one task per worker per round, through shared memory
# ---------------------------------------------------------------------------

#: a worker polls this long for the next round before it sleeps (between rounds of a
#: training run it never sleeps; after the run it stops using the core within this time)
POLL_SECONDS = 0.05


class _Mailbox:
    """A shared-memory block that carries one pickled message at a time.

    The message's length sits in the first 8 bytes, the pickle after it. Whose turn it is
    to read is told by a semaphore, released after the message is written (a semaphore
    orders memory, so the reader sees the whole message).
    """

    def __init__(self, capacity, ctx, name=None):
        from multiprocessing import shared_memory
        self.capacity = capacity
        self.block = (shared_memory.SharedMemory(create=True, size=capacity + 8) if name is None
                      else shared_memory.SharedMemory(name=name))
        self.ready = ctx.Semaphore(0) if ctx is not None else None

    def pack(self, obj):
        """``obj`` pickled, checked against the capacity (``ValueError``)."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > self.capacity:
            raise ValueError(f"Lockstep: a message of {len(data)} bytes does not fit the "
                             f"{self.capacity} bytes given as capacity")
        return data

    def write(self, data):
        """Put the packed message ``data`` in the block and hand it to the reader."""
        buf = self.block.buf
        buf[8:8 + len(data)] = data
        buf[:8] = len(data).to_bytes(8, "little")
        self.ready.release()

    def read(self):
        buf = self.block.buf
        n = int.from_bytes(buf[:8], "little")
        return pickle.loads(buf[8:8 + n])


def _poll(sem, seconds, parent):
    """Take ``sem``: poll it for ``seconds`` (yielding the core to anything else runnable),
    then wait asleep. False if the process ``parent`` is gone meanwhile (killed: nobody
    will ask again)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if sem.acquire(False):
            return True
        os.sched_yield()
    while not sem.acquire(timeout=1.0):
        if os.getppid() != parent:
            return False
    return True


def _lockstep_loop(shared, names, capacity, sems, poll_seconds, parent):
    """A Lockstep worker: answer each request ``(fn, task)`` with ``(True, fn(shared,
    *task))`` or ``(False, error text)``, until the request None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _SHARED.clear()
    _SHARED.update(shared)
    inbox, outbox = (_Mailbox(capacity, None, name=n) for n in names)
    inbox.ready, outbox.ready = sems
    try:
        while _poll(inbox.ready, poll_seconds, parent):
            request = inbox.read()
            if request is None:
                return
            fn, task = request
            try:
                data = outbox.pack((True, fn(_SHARED, *task)))
            except Exception as e:           # sent back: the caller raises it
                import traceback
                data = outbox.pack((False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            outbox.write(data)
    finally:
        inbox.block.close()
        outbox.block.close()


class Lockstep:
    """``with Lockstep(n, shared, capacity) as w: results = w.map(fn, tasks)``, many times.

    Each :meth:`map` gives worker ``i`` task ``i`` (``len(tasks) == n``) and returns the
    list of results in task order, ``fn(shared, *task)`` each, as :class:`Workers` would
    (``fn`` module-level); the workers are started once and kept between rounds.
    ``capacity``: the largest pickled task or result in bytes (a training step sends its
    weights and receives a gradient of the same size). ``workers=1`` runs the task here.
    The workers have one BLAS thread each, as in :class:`Workers`; an error in a task is
    raised here as a ``RuntimeError`` with the worker's traceback; a worker that dies is
    one too.
    """

    def __init__(self, workers, shared, capacity, poll_seconds=POLL_SECONDS):
        self.workers = check_workers(workers)
        if not isinstance(shared, dict):
            raise TypeError(f"shared: expected a dict, got {type(shared).__name__}")
        self.shared = shared
        self._procs, self._boxes, self._blocks = [], [], []
        if self.workers == 1:
            return
        ctx = multiprocessing.get_context("spawn")
        try:
            sent = _to_send(shared, self.workers, self._blocks)
            with _pinned_blas():
                for _ in range(self.workers):
                    inbox, outbox = _Mailbox(capacity, ctx), _Mailbox(capacity, ctx)
                    self._boxes.append((inbox, outbox))
                    proc = ctx.Process(target=_lockstep_loop, daemon=True,
                                       args=(sent, (inbox.block.name, outbox.block.name),
                                             capacity, (inbox.ready, outbox.ready), poll_seconds,
                                             os.getpid()))
                    proc.start()
                    self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    def map(self, fn, tasks):
        tasks = [tuple(t) for t in tasks]
        if len(tasks) != self.workers:
            raise ValueError(f"Lockstep.map: expected {self.workers} tasks (one per worker), "
                             f"got {len(tasks)}")
        if not self._procs:
            return [fn(self.shared, *tasks[0])]
        packed = [inbox.pack((fn, task)) for (inbox, _), task in zip(self._boxes, tasks)]
        for (inbox, _), data in zip(self._boxes, packed):     # all fit: every worker gets one
            inbox.write(data)
        answers = []
        for proc, (_, outbox) in zip(self._procs, self._boxes):
            while not outbox.ready.acquire(timeout=0.2):
                if not proc.is_alive():
                    raise RuntimeError(f"Lockstep: a worker process stopped (exit code "
                                       f"{proc.exitcode}) before answering")
            answers.append(outbox.read())       # every answer is read: none is left for the next round
        for ok, value in answers:
            if not ok:
                raise RuntimeError(f"Lockstep: a task failed in its worker process: {value}")
        return [value for _, value in answers]

    def close(self):
        """Stop the workers (they are terminated if they do not stop at once) and free the
        shared memory."""
        for proc, (inbox, _) in zip(self._procs, self._boxes):
            if proc.is_alive():
                inbox.write(inbox.pack(None))
        for proc in self._procs:
            proc.join(timeout=1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for inbox, outbox in self._boxes:
            for box in (inbox, outbox):
                box.block.close()
                box.block.unlink()
        for block in self._blocks:
            block.release()
        self._procs, self._boxes, self._blocks = [], [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# Beside: one call in a process of its own, while this one goes on
# ---------------------------------------------------------------------------

def _beside_main(conn, fn, args):
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the caller stops this process
    try:
        out = (True, fn(*args))
    except BaseException:                            # noqa: B902 (sent back, raised there)
        import traceback
        out = (False, traceback.format_exc())
    try:
        conn.send(out)
    except Exception as e:                           # the result does not pickle
        conn.send((False, f"the result could not be sent back: {type(e).__name__}: {e}"))
    conn.close()


class Beside:
    """``b = Beside(fn, *args)`` starts ``fn(*args)`` in a new process; ``b.result()`` waits
    for it and returns its value.

    ``fn`` (module-level) and ``args`` must pickle; the process has one BLAS thread (and
    ``SCRATCHADV_THREADS=1``), as in :class:`Workers`, so it takes one core. ``done()``
    says, without waiting, whether the result is ready. An error in ``fn`` is raised by
    ``result()`` as a ``RuntimeError`` with the process's traceback, and so is the process
    dying. ``close()`` (also on leaving a ``with`` block) stops the process if it is still
    running: an interrupted caller leaves nothing behind.
    """

    def __init__(self, fn, *args):
        for what, obj in (("fn", fn), ("args", args)):
            _check_pickles(obj, f"Beside: {what}")
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._value = None
        with _pinned_blas():
            self._proc = ctx.Process(target=_beside_main, args=(child, fn, args), daemon=True)
            self._proc.start()
        child.close()

    def done(self):
        """True once the result (or the error) is ready, or the process has died."""
        return self._value is not None or self._conn.poll() or not self._proc.is_alive()

    def result(self):
        """The value of ``fn(*args)``, waiting for it; ``RuntimeError`` if ``fn`` raised or
        the process stopped without answering."""
        if self._value is None:
            try:
                self._value = self._conn.recv()
            except EOFError:
                self._proc.join()
                self._value = (False, f"the process stopped (exit code {self._proc.exitcode}) "
                                      "before answering")
            self._proc.join()
        ok, value = self._value
        if not ok:
            raise RuntimeError(f"Beside: the call failed in its process: {value}")
        return value

    def close(self):
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

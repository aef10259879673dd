"""Work in worker processes: scratchadv.parallel, and AutoAttack / evaluate with workers > 1.

The component functions are defined at this module's top level so that they pickle: a
worker process imports this module to find them.
"""
import os
import pickle

import numpy as np
import pytest

from conftest import tiny_images
from scratchadv.attacks import apgd, apgd_targeted, fab_targeted, square
from scratchadv.attacks.autoattack import autoattack
from scratchadv.checkpoint import CheckpointError
from scratchadv.evaluate import evaluate_model
from scratchadv.model import ARCHITECTURES, init_params, predict
from scratchadv.parallel import BLAS_THREAD_VARS, Workers, check_workers, portable, split_evenly
from test_autoattack import N, data, params  # noqa: F401  (the same small model and images)

BREAK = "SCRATCHADV_TEST_BREAK"       # a file: while it exists, cheap_fab raises


def cheap_apgd(p, x, y, e, n, r, f):
    return apgd(p, x, y, eps=e, norm=n, steps=5, rng=r, predict_fn=f)


def cheap_apgd_t(p, x, y, e, n, r, f):
    return apgd_targeted(p, x, y, eps=e, norm=n, n_targets=2, steps=5, rng=r, predict_fn=f)


def cheap_fab(p, x, y, e, n, r, f):
    if os.path.exists(os.environ.get(BREAK, "\0")):
        raise RuntimeError("interrupted on purpose")
    return fab_targeted(p, x, y, eps=e, norm=n, n_targets=2, steps=5, rng=r, predict_fn=f)


def cheap_square(p, x, y, e, n, r, f):
    return square(p, x, y, eps=e, norm=n, queries=30, rng=r, predict_fn=f)


CHEAP = {"apgd-ce": cheap_apgd, "apgd-t": cheap_apgd_t, "fab-t": cheap_fab, "square": cheap_square}


def environment(shared, var):
    return os.environ.get(var)


def scaled(shared, i):
    return shared["a"][i] * shared["k"]


def test_split_evenly_covers_in_order_with_sizes_differing_by_one():
    idx = np.arange(7) * 3
    parts = split_evenly(idx, 3)
    assert [len(p) for p in parts] == [2, 2, 3]
    np.testing.assert_array_equal(np.concatenate(parts), idx)
    assert len(split_evenly(idx[:1], 4)) == 1 and split_evenly(idx[:0], 2) == []


def test_workers_give_the_inline_results_in_task_order_with_one_blas_thread():
    shared = {"a": np.arange(10.0), "k": 3.0}
    tasks = [(i,) for i in (9, 0, 4, 4, 7)]
    before = {v: os.environ.get(v) for v in BLAS_THREAD_VARS}
    with Workers(1, shared) as one, Workers(2, shared) as two:
        assert list(two.map(scaled, tasks)) == list(one.map(scaled, tasks)) == [27.0, 0.0, 12.0, 12.0, 21.0]
        assert set(two.map(environment, [("OPENBLAS_NUM_THREADS",)] * 4)) == {"1"}
    assert {v: os.environ.get(v) for v in BLAS_THREAD_VARS} == before   # the parent's are untouched


def test_an_error_in_a_worker_reaches_the_caller():
    with Workers(2, {"a": np.arange(3.0), "k": 1.0}) as w:
        with pytest.raises(IndexError):
            list(w.map(scaled, [(0,), (5,)]))


def test_what_does_not_pickle_is_refused_before_any_process_starts():
    with pytest.raises(TypeError, match="workers=2.*pickle"):
        Workers(2, {"f": lambda x: x})
    Workers(1, {"f": lambda x: x}).close()           # in-process: nothing is pickled


@pytest.mark.parametrize("bad, error", [(0, ValueError), (65, ValueError), (1.5, TypeError),
                                        (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_check_workers_refuses(bad, error):
    with pytest.raises(error, match="workers"):
        check_workers(bad)


def test_a_registered_architecture_pickles_by_name():
    for arch in ARCHITECTURES.values():
        assert pickle.loads(pickle.dumps(portable(arch.predict))) is arch
    own = lambda p, x: x                    # noqa: E731  (a user's function stays as it is)
    assert portable(own) is own


def test_autoattack_with_two_workers_runs_each_half_batch_with_its_own_generator(params, data):
    """workers=2: batch 0 of attack 0 cut in two halves, half i drawing from [seed, 0, 0, i]."""
    x, y = data
    res = autoattack(params, x, y, eps=0.05, attacks=("apgd-ce",), components=CHEAP, seed=3,
                     batch_size=N, workers=2)
    expect = x.copy()
    for i, j in enumerate(split_evenly(np.arange(N), 2)):
        r = cheap_apgd(params, x[j], y[j], 0.05, "linf", np.random.default_rng([3, 0, 0, i]), predict)
        turned = np.argmax(predict(params, r.x_adv), 1) != y[j]
        expect[j[turned]] = r.x_adv[turned]
    assert 0 < res.details["fooled"]["apgd-ce"] < N            # the test can tell a wrong split
    np.testing.assert_array_equal(res.x_adv, expect)


def test_autoattack_with_two_workers_is_reproducible_and_resumes_exactly(params, data, tmp_path,
                                                                       monkeypatch):
    x, y = data
    kw = dict(eps=0.02, components=CHEAP, batch_size=5, workers=2)
    full = autoattack(params, x, y, **kw)
    again = autoattack(params, x, y, **kw)
    np.testing.assert_array_equal(full.x_adv, again.x_adv)
    assert full.details["robust_accuracy"] == again.details["robust_accuracy"]

    marker, state = tmp_path / "break", tmp_path / "aa.npz"
    monkeypatch.setenv(BREAK, str(marker))
    marker.write_text("")                     # the third attack fails in a worker process
    with pytest.raises(RuntimeError, match="on purpose"):
        autoattack(params, x, y, state_path=state, **kw)
    from scratchadv.checkpoint import read_npz
    assert read_npz(state)[1]["attack"] == 2                  # the first two are on disk
    marker.unlink()
    resumed = autoattack(params, x, y, state_path=state, resume=True, **kw)
    np.testing.assert_array_equal(resumed.x_adv, full.x_adv)
    np.testing.assert_array_equal(resumed.details["fooled_by"], full.details["fooled_by"])
    with pytest.raises(CheckpointError, match="workers"):      # results depend on the count
        autoattack(params, x, y, state_path=state, resume=True, **{**kw, "workers": 1})


def test_autoattack_with_workers_refuses_components_that_do_not_pickle(params, data):
    x, y = data
    with pytest.raises(TypeError, match="pickle"):
        autoattack(params, x, y, eps=0.02, attacks=("apgd-ce",), workers=2,
                   components={"apgd-ce": lambda *a: cheap_apgd(*a)})


def test_evaluate_with_two_workers_is_reproducible_and_recorded(params, data):
    x, y = data
    kw = dict(eps_list=[0.05], attacks=["fgsm", "pgd"], steps=3, restarts=2, batch_size=5,
              checks=False, verbose=False, workers=2)
    a = evaluate_model(params, x, y, **kw)
    b = evaluate_model(params, x, y, **kw)
    one = evaluate_model(params, x, y, **{**kw, "workers": 1})
    assert a["workers"] == 2 and one["workers"] == 1
    assert a["results"] == b["results"]
    # FGSM is deterministic: the same whatever the workers; PGD at least as strong as FGSM
    for r2, r1 in zip(a["results"], one["results"]):
        assert r2["masks"]["fgsm"] == r1["masks"]["fgsm"]
        assert r2["accuracy"]["pgd"] <= r2["accuracy"]["fgsm"] + 1e-12


@pytest.mark.parametrize("norm, eps, kw", [("linf", 0.05, {}), ("l2", 0.5, {"early_stop": True})])
def test_pgd_with_workers_is_the_one_process_result(params, data, norm, eps, kw):
    """The random starts are drawn in the caller chunk by chunk: the workers change nothing."""
    x, y = data
    args = dict(eps=eps, steps=4, step_size=eps / 2, norm=norm, restarts=2, batch_size=5, **kw)
    one = seeded_pgd(params, x, y, workers=1, **args)
    two = seeded_pgd(params, x, y, workers=2, **args)
    np.testing.assert_allclose(two.x_adv, one.x_adv, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(two.success, one.success)
    np.testing.assert_array_equal(two.steps, one.steps)


def seeded_pgd(params, x, y, **kw):
    from scratchadv.attacks import pgd
    return pgd(params, x, y, rng=np.random.default_rng(5), **kw)


# --- training: data-parallel steps in worker processes -------------------------

class InlinePool:
    """The interface of Workers with ``workers`` parts, run here: the reference."""

    def __init__(self, workers, shared):
        self.workers, self.shared = workers, shared

    def map(self, fn, tasks):
        return [fn(self.shared, *t) for t in tasks]


def _train_data(n=24, seed=1):
    x = tiny_images(n, seed=seed)
    return x, np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)


def _shared(defense, **opts):
    from scratchadv.defenses import make_defense
    from scratchadv.model import predict
    from scratchadv.parallel import portable
    loss_fn, transform, _ = make_defense(defense, epochs=2, **opts)
    return {"transform": transform, "loss_fn": loss_fn, "predict_fn": portable(predict)}


def _ten_images_into(shared):
    """Ten training images put in ``shared``: (x, y, params, the batch's indices)."""
    x, y = _train_data(10)
    shared.update(x=x, y=y)
    return x, y, init_params(0), np.arange(10)


def noisy_transform(params, xb, yb, rng, epoch):
    """A batch transform whose output shows which generator it got (and pickles)."""
    return xb + rng.uniform(0, 0.01, size=xb.shape).astype(xb.dtype), yb


@pytest.mark.parametrize("defense, opts", [("none", {}), ("gradreg", {"lam": 0.5}), ("noise", {})])
def test_the_step_in_parts_is_the_same_in_worker_processes(defense, opts):
    from scratchadv.train import _step_in_parts, _value_grad_logits
    shared = _shared("none" if defense == "noise" else defense, **opts)
    if defense == "noise":
        shared["transform"] = noisy_transform
    x, y, p, idx = _ten_images_into(shared)
    ref = _step_in_parts(InlinePool(2, shared), p, idx, (0, 1, 3), 1)
    with Workers(2, shared) as pool:
        got = _step_in_parts(pool, p, idx, (0, 1, 3), 1)
    for k in p:                  # one BLAS thread there, maybe more here: rounding only
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=0, atol=1e-6)
    assert got[0] == pytest.approx(ref[0], rel=1e-5) and got[2:] == ref[2:]
    # part i is transformed with its own generator [seed, epoch, batch, i]; the batch's
    # gradient is the parts' weighted by their share of the images
    parts = []
    for i, sl in enumerate([slice(0, 5), slice(5, 10)]):
        xb, yb = x[sl], y[sl]
        if shared["transform"] is not None:
            xb, yb = shared["transform"](p, xb, yb, np.random.default_rng([0, 1, 3, i]), 1)
        parts.append(_value_grad_logits(shared["loss_fn"], shared["predict_fn"], p, xb, yb))
    for k in p:
        np.testing.assert_allclose(ref[1][k], 0.5 * parts[0][1][k] + 0.5 * parts[1][1][k],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("defense", ["pgd", "trades"])
def test_an_attack_step_in_parts_joins_what_each_worker_computed(defense):
    """Sign-gradient attacks amplify rounding (a worker has one BLAS thread), so the
    reference is each part's step computed in the same worker processes."""
    from scratchadv.train import _part_step, _step_in_parts
    shared = _shared(defense, eps=0.2, pgd_steps=2)
    x, y, p, idx = _ten_images_into(shared)
    with Workers(2, shared) as pool:
        got = _step_in_parts(pool, p, idx, (0, 1, 3), 1)
        again = _step_in_parts(pool, p, idx, (0, 1, 3), 1)
        parts = list(pool.map(_part_step, [(p, idx[:5], (0, 1, 3, 0), 1),
                                           (p, idx[5:], (0, 1, 3, 1), 1)]))
    for k in p:
        np.testing.assert_array_equal(again[1][k], got[1][k])
        np.testing.assert_allclose(got[1][k], 0.5 * parts[0][1][k] + 0.5 * parts[1][1][k],
                                   rtol=1e-6, atol=1e-8)
    assert got[2] == parts[0][2] + parts[1][2]
    assert got[3] == (20 if defense == "trades" else 10)     # TRADES: clean + partner per image


@pytest.mark.parametrize("defense", ["none", "gradreg"])
def test_the_parts_gradient_is_the_batch_gradient(defense):
    """Without a transform, the weighted parts (uneven here: 4 + 3 images) give the batch's
    gradient: every loss is a batch mean. float64, so the check is tight."""
    from scratchadv.train import _step_in_parts, _value_grad_logits
    shared = _shared(defense)
    x, y = _train_data(7)
    x = x.astype(np.float64)
    p = init_params(0, dtype=np.float64)
    shared.update(x=x, y=y)
    perm = np.array([3, 0, 6, 1, 5, 2, 4])          # a shuffled batch: parts follow its order
    value, grads, correct, count = _step_in_parts(InlinePool(2, shared), p, perm, (0, 0, 0), 0)
    v1, g1, logits = _value_grad_logits(shared["loss_fn"], shared["predict_fn"], p, x, y)
    assert value == pytest.approx(v1, rel=1e-12) and count == 7
    assert correct == int(np.sum(np.argmax(logits, 1) == y))
    for k in p:
        np.testing.assert_allclose(grads[k], g1[k], rtol=1e-10, atol=1e-14)


def test_natural_fit_with_workers_is_data_parallel_and_recorded(tmp_path):
    from scratchadv.train import fit
    x, y = _train_data()
    x = x.astype(np.float64)
    kw = dict(batch_size=12, verbose=False)
    one, _ = fit(init_params(0, dtype=np.float64), x, y, epochs=1, **kw)
    state = tmp_path / "s.npz"
    two, hist = fit(init_params(0, dtype=np.float64), x, y, epochs=1, workers=2,
                    checkpoint_path=str(state), **kw)
    for k in one:                   # the same updates, rounded differently
        np.testing.assert_allclose(two[k], one[k], rtol=1e-9, atol=1e-12)
    from scratchadv.checkpoint import load_training_state
    assert load_training_state(str(state))[2]["config"]["workers"] == 2
    assert len(hist["loss"]) == 1 and 0 <= hist["accuracy"][0] <= 1


def test_fit_with_workers_resumes_exactly_and_refuses_another_count(tmp_path):
    from scratchadv.defenses import make_defense
    from scratchadv.train import fit
    loss_fn, transform, _ = make_defense("trades", eps=0.1, pgd_steps=2, epochs=2)
    x, y = _train_data()
    kw = dict(batch_size=12, loss_fn=loss_fn, batch_transform=transform, verbose=False, workers=2)
    full, _ = fit(init_params(0), x, y, epochs=2, **kw)
    state = tmp_path / "s.npz"
    fit(init_params(0), x, y, epochs=1, checkpoint_path=str(state), **kw)
    resumed, _ = fit(init_params(0), x, y, epochs=2, checkpoint_path=str(state), resume=True, **kw)
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k])
    with pytest.raises(CheckpointError, match="workers"):
        fit(init_params(0), x, y, epochs=2, checkpoint_path=str(state), resume=True,
            **{**kw, "workers": 1})


def test_plan_records_workers_above_one():
    from scratchadv.train import plan_training
    assert plan_training(defense="pgd", defense_options={"eps": 0.1}, workers=2).config["workers"] == 2
    assert "workers" not in plan_training(defense="pgd", defense_options={"eps": 0.1}).config
    assert plan_training(defense="gradreg", workers=2).config["workers"] == 2
    assert plan_training(workers=3).config["workers"] == 3
    with pytest.raises(ValueError, match="workers"):
        plan_training(workers=0)


def test_available_cpus_is_at_least_one_and_at_most_the_limit():
    from scratchadv.parallel import available_cpus
    assert available_cpus(limit=1) == 1
    n = available_cpus()
    assert 1 <= n <= 8 and n <= (os.cpu_count() or 1)


# ---------------------------------------------------------------------------
# Lockstep: rounds of one task per worker, through shared memory
# ---------------------------------------------------------------------------

def failing(shared, i):
    if i == 1:
        raise ValueError("task 1 fails on purpose")
    return i


def big(shared, n):
    return np.zeros(n)


def dying(shared, i):
    if i == 1:
        os._exit(3)
    return i


def test_lockstep_gives_each_round_in_task_order_as_workers_would():
    from scratchadv.parallel import Lockstep
    shared = {"a": np.arange(2_000_000, dtype=np.float64), "k": 2.0}   # 16 MB: shared memory
    with Lockstep(2, shared, 1 << 16) as w, Workers(2, shared) as ref:
        for first in (0, 5, 1_999_998):
            tasks = [(first,), (first + 1,)]
            assert w.map(scaled, tasks) == list(ref.map(scaled, tasks)) == [2.0 * first, 2.0 * first + 2]
        assert w.map(environment, [("OPENBLAS_NUM_THREADS",)] * 2) == ["1", "1"]
    with Lockstep(1, shared, 1 << 16) as one:                # here, no process
        assert one.map(scaled, [(3,)]) == [6.0]


def test_lockstep_raises_a_task_error_and_stays_usable():
    from scratchadv.parallel import Lockstep
    with Lockstep(2, {"a": np.arange(3.0), "k": 2.0}, 1 << 16) as w:
        with pytest.raises(RuntimeError, match="task 1 fails on purpose"):
            w.map(failing, [(0,), (1,)])
        assert w.map(failing, [(0,), (2,)]) == [0, 2]       # no answer of the failed round is left over
        with pytest.raises(ValueError, match="expected 2 tasks"):
            w.map(failing, [(0,)])
        with pytest.raises(ValueError, match="does not fit the 65536 bytes"):
            w.map(scaled, [(0,), (np.zeros(10_000),)])          # nothing is sent
        with pytest.raises(RuntimeError, match="does not fit the 65536 bytes"):
            w.map(big, [(0,), (10_000,)])                        # a result too large
        assert w.map(scaled, [(0,), (1,)]) == [0.0, 2.0]


def test_lockstep_refuses_what_does_not_pickle_before_starting_anything():
    from scratchadv.parallel import Lockstep
    with pytest.raises(TypeError, match="workers=2: everything a worker process needs must pickle"):
        Lockstep(2, {"f": lambda x: x, "a": np.zeros(1 << 18)}, 1 << 12)


def test_lockstep_reports_a_worker_that_died():
    from scratchadv.parallel import Lockstep
    with Lockstep(2, {}, 1 << 16) as w:
        with pytest.raises(RuntimeError, match="stopped \\(exit code 3\\)"):
            w.map(dying, [(0,), (1,)])


def test_the_step_in_parts_through_lockstep_is_the_workers_result():
    from scratchadv.parallel import Lockstep
    from scratchadv.train import _step_in_parts
    shared = _shared("gradreg", lam=0.5)
    x, y, p, idx = _ten_images_into(shared)
    with Workers(2, shared) as pool:
        ref = _step_in_parts(pool, p, idx, (0, 1, 3), 1)
    with Lockstep(2, shared, 1 << 20) as pool:
        got = _step_in_parts(pool, p, idx, (0, 1, 3), 1)
    for k in p:                  # one BLAS thread in both kinds of worker: the same bits
        np.testing.assert_array_equal(got[1][k], ref[1][k])
    assert got[0] == ref[0] and got[2:] == ref[2:]


ORPHAN = """
import os, sys
sys.path.insert(0, sys.argv[1])
from scratchadv.parallel import Lockstep
w = Lockstep(2, {}, 1 << 12)
print(" ".join(str(p.pid) for p in w._procs), flush=True)
os.kill(os.getpid(), 9)                        # no clean-up of any kind
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_lockstep_workers_stop_when_their_parent_is_killed():
    import subprocess
    import sys
    import time
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    out = subprocess.run([sys.executable, "-c", ORPHAN, root], capture_output=True, text=True,
                         timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:           # a zombie is gone too
            return f.read().split(")")[-1].split()[0] != "Z"

    deadline = time.time() + 10
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)


# ---------------------------------------------------------------------------
# Beside: one call in a process of its own
# ---------------------------------------------------------------------------

def pid_and_blas(k):
    import time as _time
    _time.sleep(0.3)
    return os.getpid(), os.environ.get("OPENBLAS_NUM_THREADS"), 2 * k


def raising(message):
    raise ValueError(message)


def sleeping(seconds):
    import time as _time
    _time.sleep(seconds)
    return seconds


def exiting(code):
    os._exit(code)


def test_beside_runs_the_call_in_another_process_with_one_blas_thread_while_this_one_goes_on():
    from scratchadv.parallel import Beside
    with Beside(pid_and_blas, 21) as b:
        assert not b.done()                     # it sleeps 0.3 s there; nothing waits here
        pid, blas, value = b.result()
        assert b.done()
        assert b.result() == (pid, blas, value)          # the value is kept
    assert pid != os.getpid() and blas == "1" and value == 42


def test_beside_raises_the_error_of_the_call_with_its_traceback():
    from scratchadv.parallel import Beside
    with Beside(raising, "fails on purpose") as b:
        with pytest.raises(RuntimeError, match="(?s)Beside: the call failed.*ValueError: fails on purpose"):
            b.result()
    with Beside(exiting, 4) as b:
        with pytest.raises(RuntimeError, match="stopped \\(exit code 4\\) before answering"):
            b.result()


def test_beside_refuses_what_does_not_pickle_and_stops_a_call_still_running():
    import time
    from scratchadv.parallel import Beside
    with pytest.raises(TypeError, match="Beside: args must pickle"):
        Beside(sleeping, lambda: 1)
    t0 = time.perf_counter()
    with Beside(sleeping, 60) as b:
        proc = b._proc
    assert not proc.is_alive() and time.perf_counter() - t0 < 30     # not left running for 60 s

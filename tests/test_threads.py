"""scratchadv.threads: the primitives give bit-identical results for every thread count."""
import numpy as np
import pytest
from autograd import grad

from scratchadv import ops, threads
from scratchadv.model import init_params, predict


@pytest.fixture(autouse=True)
def restore_threads():
    before = threads.get_threads()
    yield
    threads.set_threads(before)


def _conv_case(c, o, hw, n=37, dtype=np.float32, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, hw, hw)).astype(dtype)
    w = r.standard_normal((o, c, 5, 5)).astype(dtype)
    g = r.standard_normal((n, o, hw - 4, hw - 4)).astype(dtype)
    return x, w, g


def _all_ops(x, w, g):
    y = ops.conv2d(x, w)
    m, masks = ops._max_and_masks(y)
    b = np.linspace(-1, 1, len(w)).astype(x.dtype)
    conv_pool = {"conv_pool": ops.conv_pool(x, w, b),
                 "conv_pool_grad_w": grad(lambda ww: np.sum(ops.conv_pool(x, ww, b) ** 2))(w)}
    return {"conv2d": y, "input_grad": ops.conv2d_input_grad(g, w, x.shape),
            "weight_grad": ops.conv2d_weight_grad(g, x, w.shape),
            "pool_max": m, "pool_masks": masks, "window_max": ops._window_max(y),
            "scatter": ops._pool_scatter(m, masks), "gather": ops._pool_gather(y, masks),
            **conv_pool}


@pytest.mark.parametrize("c, o, hw", [(1, 10, 28), (10, 20, 12)])
def test_every_primitive_is_bit_identical_for_1_2_and_3_threads(c, o, hw, monkeypatch):
    # small chunks and no size threshold, so that several threads really share the work
    monkeypatch.setattr(ops, "_CHUNK_BYTES", 200_000)
    monkeypatch.setattr(ops, "_SPLIT_MIN_BYTES", 0)
    x, w, g = _conv_case(c, o, hw)
    threads.set_threads(1)
    one = _all_ops(x, w, g)
    for n in (2, 3):
        threads.set_threads(n)
        got = _all_ops(x, w, g)
        for k in one:
            np.testing.assert_array_equal(got[k], one[k], err_msg=f"{k} with {n} threads")


def test_a_training_gradient_is_bit_identical_with_two_threads(monkeypatch):
    monkeypatch.setattr(ops, "_SPLIT_MIN_BYTES", 0)
    r = np.random.default_rng(3)
    x = r.random((50, 1, 28, 28), dtype=np.float32)
    y = r.integers(0, 10, 50)
    p = init_params(0)
    loss = grad(lambda q: ops.cross_entropy(predict(q, x), y))
    threads.set_threads(1)
    one = loss(p)
    threads.set_threads(2)
    two = loss(p)
    for k in p:
        np.testing.assert_array_equal(two[k], one[k])


def test_threads_context_restores_the_count_and_map_groups_keeps_order():
    threads.set_threads(1)
    with threads.threads(3):
        assert threads.get_threads() == 3
        seen = []

        def work(group):
            seen.append(list(group))
            return [i * i for i in group]

        assert threads.map_groups(work, list(range(10))) == [i * i for i in range(10)]
        assert sorted(len(s) for s in seen) == [3, 3, 4]       # three groups of consecutive items
        assert all(s == list(range(s[0], s[0] + len(s))) for s in seen)
    assert threads.get_threads() == 1


def test_an_error_in_a_thread_reaches_the_caller():
    threads.set_threads(2)

    def work(group):
        if 5 in group:
            raise RuntimeError("boom in a group")
        return group

    with pytest.raises(RuntimeError, match="boom"):
        threads.map_groups(work, list(range(8)))


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (threads.MAX_THREADS + 1, ValueError),
                                      (1.5, TypeError), ("2", TypeError), (True, TypeError)])
def test_set_threads_refuses_bad_counts_by_name(bad, exc):
    with pytest.raises(exc, match="threads"):
        threads.set_threads(bad)


@pytest.mark.parametrize("text", ["two", "0", "-1", "1.5"])
def test_a_bad_environment_count_names_the_variable(text, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, text)
    monkeypatch.setitem(threads._state, "n", None)
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        threads.get_threads()


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    monkeypatch.setitem(threads._state, "n", None)
    assert threads.get_threads() == 2
    monkeypatch.delenv(threads.ENV_VAR)
    monkeypatch.setitem(threads._state, "n", None)
    assert threads.get_threads() == 1

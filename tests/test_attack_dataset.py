"""attack_dataset: target expansion, images labelled with the target left alone, robust
accuracy per image, per-target success, errors naming parameters (the library behind
`scratchadv attack`)."""
import numpy as np
import pytest

from scratchadv.attacks import (AttackResult, DatasetAttack, attack_dataset, fgsm,
                                penalty_attack, pgd, summarize)
from scratchadv.attacks.dataset import METHODS, check_method_target, method_options
from scratchadv.model import predict

from conftest import TINY_N

N = TINY_N
PGD = dict(eps=0.05, steps=5, step_size=0.0125)     # some targets fall, some do not


def test_untargeted_is_the_method_itself(params, data):
    x, y = data
    run = attack_dataset(params, x, y, "pgd", rng=np.random.default_rng(4), **PGD)
    assert isinstance(run, DatasetAttack) and isinstance(run.result, AttackResult)
    res, xs, ys, ts, metrics = run                      # unpacks as a 5-tuple
    direct = pgd(params, x, y, rng=np.random.default_rng(4), **PGD)
    np.testing.assert_array_equal(res.x_adv, direct.x_adv)
    assert xs is x and ys is y and ts is None
    want = summarize(direct, y, np.argmax(predict(params, x), 1))
    assert {k: metrics[k] for k in want} == want
    assert set(metrics) == set(want) | {"seconds"}
    assert metrics["seconds"] >= 0


@pytest.mark.parametrize("method, per", [("pgd", 9), ("fgsm", 9), ("penalty", 10)])
def test_each_expands_every_image_into_its_targets(method, per, params, data):
    x, y = data
    opts = {"pgd": PGD, "fgsm": {"eps": 0.05}, "penalty": {"steps": 2, "lr": 0.5}}[method]
    res, xs, ys, ts, m = attack_dataset(params, x, y, method, target="each",
                                        rng=np.random.default_rng(0), **opts)
    assert len(xs) == len(ys) == len(ts) == len(res) == per * N == m["attacks"]
    for i in range(N):
        rows = slice(per * i, per * (i + 1))           # consecutive rows of image i
        assert np.all(xs[rows] == x[i]) and np.all(ys[rows] == y[i])
        want = set(range(10)) if per == 10 else set(range(10)) - {int(y[i])}
        assert sorted(ts[rows]) == sorted(want)
    assert ts.dtype == np.int64
    np.testing.assert_array_equal(res.target, ts)


def test_each_counts_an_image_robust_only_against_every_target(params, data):
    x, y = data
    y = y.copy()
    y[1] = (y[1] + 1) % 10                  # one image misclassified from the start
    res, xs, ys, ts, m = attack_dataset(params, x, y, "pgd", target="each",
                                        rng=np.random.default_rng(0), **PGD)
    held = (res.pred == ys).reshape(N, 9)
    # the case that tells the per-image AND from the mean over attacks
    assert held.any(1).sum() > held.all(1).sum()
    assert m["robust_acc"] == np.mean(held.all(1))
    assert m["robust_acc"] < np.mean(held)
    assert m["n"] == N and m["clean_acc"] == (N - 1) / N
    # per target: among the rows whose image was classified correctly to begin with
    correct = np.repeat(np.argmax(predict(params, x), 1) == y, 9)
    want = {str(c): float(np.mean(res.success[(ts == c) & correct])) for c in range(10)
            if np.any((ts == c) & correct)}
    assert m["success_rate_per_target"] == want
    assert want != {str(c): float(np.mean(res.success[ts == c])) for c in range(10)
                    if np.any(ts == c)}
    # the same rows attacked directly, with the same generator, give the same images
    direct = pgd(params, xs, ys, target=ts, rng=np.random.default_rng(0), **PGD)
    np.testing.assert_array_equal(direct.x_adv, res.x_adv)


def test_images_labelled_with_the_target_are_not_attacked(params, data):
    x, y = data
    c = int(y[0])
    mine = y == c
    assert 0 < mine.sum() < N
    res, xs, ys, ts, m = attack_dataset(params, x, y, "fgsm", target=c, eps=0.3)
    np.testing.assert_array_equal(xs, x[~mine])
    np.testing.assert_array_equal(ys, y[~mine])
    assert np.all(ts == c) and m["not_attacked"] == mine.sum()
    # they count in the robust accuracy with their clean (correct) prediction
    pred = np.argmax(predict(params, x), 1)
    pred[~mine] = res.pred
    assert m["robust_acc"] == np.mean(pred == y)
    assert m["robust_acc"] >= mine.mean()
    direct = fgsm(params, x[~mine], y[~mine], eps=0.3, target=c)
    np.testing.assert_array_equal(direct.x_adv, res.x_adv)
    # the penalty attack may push an image towards its own label: all are attacked
    res, xs, ys, ts, m = attack_dataset(params, x, y, "penalty", target=c, steps=2)
    assert len(xs) == N and "not_attacked" not in m
    np.testing.assert_array_equal(res.x_adv, penalty_attack(params, x, c, steps=2).x_adv)
    with pytest.raises(ValueError, match="^target: every one of the 1 images has label"):
        attack_dataset(params, x[:1], y[:1], "pgd", target=int(y[0]), **PGD)


@pytest.mark.parametrize("call, error, match", [
    (lambda p, x, y: attack_dataset(p, x, y, "ascent", target=3), ValueError, "^target: .*untargeted"),
    (lambda p, x, y: attack_dataset(p, x, y, "penalty"), ValueError, "^target: .*targeted"),
    (lambda p, x, y: attack_dataset(p, x, y, "pgd", target="ten", eps=0.1), ValueError, "^target:.*'ten'"),
    (lambda p, x, y: attack_dataset(p, x, y, "pgd", target=10, eps=0.1), ValueError, "^target:.*10"),
    (lambda p, x, y: attack_dataset(p, x, y, "pgd", target=2.5, eps=0.1), TypeError, "^target:"),
    (lambda p, x, y: attack_dataset(p, x, y, "jsma", eps=0.1), ValueError, "^method:.*'jsma'"),
    (lambda p, x, y: attack_dataset(p, x, y, "pgd", eps=0.1, lam=3.0), TypeError, "^lam: .*'pgd'"),
    (lambda p, x, y: attack_dataset(p, x, y, "fgsm", eps=0.1, steps=3), TypeError, "^steps: .*'fgsm'"),
    (lambda p, x, y: attack_dataset(p, x, y, "fgsm", eps=-1.0), ValueError, "^eps:"),
    (lambda p, x, y: attack_dataset(p, x, y[:-1], "fgsm", eps=0.1), ValueError, "^y:"),
])
def test_errors_name_parameters_not_flags(call, error, match, params, data):
    x, y = data
    with pytest.raises(error, match=match) as e:
        call(params, x, y)
    assert "--" not in str(e.value)


def test_method_options_and_target_rules():
    assert METHODS == ("fgsm", "pgd", "ascent", "penalty", "apgd", "apgd-t", "fab", "square", "deepfool",
                       "cw", "autoattack")
    assert "seed" in method_options("autoattack") and "queries" in method_options("square")
    with pytest.raises(ValueError, match="target: AutoAttack is untargeted"):
        check_method_target("autoattack", 3)
    assert method_options("fgsm") == ("eps", "norm", "keep_best")
    assert "step" in method_options("ascent") and "lr" in method_options("penalty")
    for m in METHODS:
        assert not {"target", "rng", "predict_fn", "verbose"} & set(method_options(m))
    assert check_method_target("pgd", np.int64(3)) == 3
    assert check_method_target("penalty", "each") == "each"
    assert check_method_target("fgsm", None) is None

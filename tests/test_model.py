"""model.py: every architecture derived from its layer list, exactly as the hand-written forms."""
import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from conftest import tiny_images
from scratchadv import model
from scratchadv.model import (ARCHITECTURES, Architecture, Conv, Dense, Flatten, MaxPool, Relu,
                              get_architecture, layer_shapes, param_specs)
from scratchadv.ops import conv2d, cross_entropy, dense, flatten, maxpool2d, relu

# the specs as they were written by hand before the layer lists (Glorot fans included)
HAND_SPECS = {
    "lecture-cnn-v1": {
        "conv1.weight": ((10, 1, 5, 5), 1 * 25, 10 * 25), "conv1.bias": ((10,), None, None),
        "conv2.weight": ((20, 10, 5, 5), 10 * 25, 20 * 25), "conv2.bias": ((20,), None, None),
        "dense1.weight": ((100, 320), 320, 100), "dense1.bias": ((100,), None, None),
        "dense2.weight": ((10, 100), 100, 10), "dense2.bias": ((10,), None, None)},
    "softmax-v1": {"dense1.weight": ((10, 784), 784, 10), "dense1.bias": ((10,), None, None)},
    "mlp-v1": {"dense1.weight": ((100, 784), 784, 100), "dense1.bias": ((100,), None, None),
               "dense2.weight": ((10, 100), 100, 10), "dense2.bias": ((10,), None, None)},
}


def _bias4(b):
    return b.reshape(1, -1, 1, 1)


def hand_cnn(params, x):
    h = relu(conv2d(x, params["conv1.weight"]) + _bias4(params["conv1.bias"]))
    h = maxpool2d(h)
    h = relu(conv2d(h, params["conv2.weight"]) + _bias4(params["conv2.bias"]))
    h = maxpool2d(h)
    h = relu(dense(flatten(h), params["dense1.weight"], params["dense1.bias"]))
    return dense(h, params["dense2.weight"], params["dense2.bias"])


def hand_softmax(params, x):
    return dense(flatten(x), params["dense1.weight"], params["dense1.bias"])


def hand_mlp(params, x):
    h = relu(dense(flatten(x), params["dense1.weight"], params["dense1.bias"]))
    return dense(h, params["dense2.weight"], params["dense2.bias"])


HAND_PREDICT = {"lecture-cnn-v1": hand_cnn, "softmax-v1": hand_softmax, "mlp-v1": hand_mlp}


def hand_glorot(specs, seed, dtype):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, fan_in, fan_out) in specs.items():
        if fan_in is None:
            out[name] = np.zeros(shape, dtype)
        else:
            a = np.sqrt(6.0 / (fan_in + fan_out))
            out[name] = rng.uniform(-a, a, size=shape).astype(dtype)
    return out


def shifted(params):
    """Non-zero biases, so every parameter and the ReLU kinks matter."""
    return {k: v + v.dtype.type(0.05) if k.endswith(".bias") else v for k, v in params.items()}


@pytest.mark.parametrize("arch", sorted(HAND_SPECS))
def test_specs_and_init_are_those_written_by_hand(arch):
    a = get_architecture(arch)
    assert a.specs == HAND_SPECS[arch]
    assert list(a.specs) == list(HAND_SPECS[arch])          # order fixes the random draws
    for dtype in (np.float32, np.float64):
        mine, hand = a.init_params(7, dtype), hand_glorot(HAND_SPECS[arch], 7, dtype)
        assert list(mine) == list(hand)
        for k in hand:
            assert mine[k].dtype == dtype
            np.testing.assert_array_equal(mine[k], hand[k])


def test_public_names_are_the_declared_architectures():
    assert model.PARAM_SPECS == HAND_SPECS["lecture-cnn-v1"]
    assert model.SOFTMAX_SPECS == HAND_SPECS["softmax-v1"]
    assert model.MLP_SPECS == HAND_SPECS["mlp-v1"]
    assert model.predict is ARCHITECTURES["lecture-cnn-v1"].predict
    assert model.predict_softmax is ARCHITECTURES["softmax-v1"].predict
    assert model.predict_mlp is ARCHITECTURES["mlp-v1"].predict
    for a in ARCHITECTURES.values():
        assert model.architecture_of(a.predict) is a and model.architecture_of(a) is a
    assert model.param_shapes() == {k: v[0] for k, v in HAND_SPECS["lecture-cnn-v1"].items()}
    assert "conv1" in model.predict.__doc__ and "(N, 10)" in model.predict.__doc__


@pytest.mark.parametrize("arch", sorted(HAND_PREDICT))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_and_its_gradients_are_bit_identical_to_the_hand_written_forward(arch, dtype):
    a, hand = get_architecture(arch), HAND_PREDICT[arch]
    p = shifted(a.init_params(1, dtype))
    x = tiny_images(4, 0, dtype=dtype)                 # blank background: exact ties and zeros
    y = np.array([0, 3, 7, 9])
    out = a.predict(p, x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, hand(p, x))
    np.testing.assert_array_equal(a(p, x), out)

    def loss_of(f):
        return lambda params, xx: cross_entropy(f(params, xx), y)
    for argnum in (0, 1):
        g_mine, g_hand = grad(loss_of(a.predict), argnum)(p, x), grad(loss_of(hand), argnum)(p, x)
        if argnum == 0:
            for k in p:
                np.testing.assert_array_equal(g_mine[k], g_hand[k])
        else:
            np.testing.assert_array_equal(g_mine, g_hand)

    def penalized(f):                                  # double backprop: d/dW of ||d loss/dx||^2
        return lambda params: anp.sum(grad(loss_of(f), 1)(params, x) ** 2)
    g_mine, g_hand = grad(penalized(a.predict))(p), grad(penalized(hand))(p)
    for k in p:
        np.testing.assert_array_equal(g_mine[k], g_hand[k])


def test_activation_shapes_of_the_lecture_cnn():
    shapes = [out for _, _, out in get_architecture("lecture-cnn-v1").layer_shapes()]
    assert shapes == [(10, 24, 24), (10, 24, 24), (10, 12, 12), (20, 8, 8), (20, 8, 8),
                      (20, 4, 4), (320,), (100,), (100,), (10,)]
    first = layer_shapes([Flatten(), Dense("d", 10)], (1, 28, 28))[1]
    assert first == (Dense("d", 10), (784,), (10,))


@pytest.mark.parametrize("layers, match", [
    ([Dense("dense1", 10)], "flat input"),
    ([Conv("c", 4, 29), Flatten(), Dense("d", 10)], "larger than"),
    ([Conv("c", 4, 5), MaxPool(3), Flatten(), Dense("d", 10)], "2x2"),
    ([Conv("c", 4, 5), MaxPool(2), Conv("e", 4, 4), MaxPool(2), Flatten(), Dense("d", 10)], "even"),
    ([Flatten(), Dense("d", 10), Relu(), Dense("d", 10)], "distinct"),
    ([Flatten(), Dense("dense.1", 10)], "identifiers"),
    ([Flatten(), Dense("d", 7)], "10 logits"),
    ([], "10 logits"),
    ([Conv("c", 0, 5), Flatten(), Dense("d", 10)], "positive integer"),
    ([Flatten(), Dense("d", 10.0)], "positive integer"),
])
def test_a_layer_list_that_does_not_fit_is_refused_when_declared(layers, match):
    with pytest.raises(ValueError, match=match):
        Architecture("bad", layers, "a broken declaration")


def test_an_unknown_layer_is_refused():
    with pytest.raises(TypeError, match="Conv, Dense"):
        param_specs([Flatten(), "dense", Dense("d", 10)])


# ---------------------------------------------------------------------------
# A new architecture from its layer list alone: init, shapes, Keras layout, torch twin
# ---------------------------------------------------------------------------

LENET = Architecture("lenet-v1",
                     [Conv("conv1", 6, 5), Relu(), MaxPool(2), Conv("conv2", 16, 5), Relu(),
                      MaxPool(2), Flatten(), Dense("dense1", 120), Relu(), Dense("dense2", 84),
                      Relu(), Dense("dense3", 10)],
                     "LeNet-like: conv 6@5x5, pool, conv 16@5x5, pool, dense 120, 84, 10")


@pytest.fixture
def lenet_registered(monkeypatch):
    """lenet-v1 as if it were one more entry of ARCHITECTURES (and only for this test)."""
    monkeypatch.setitem(ARCHITECTURES, LENET.name, LENET)
    return LENET


def test_a_new_architecture_gets_specs_shapes_and_a_forward_pass():
    assert LENET.param_shapes() == {
        "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5),
        "conv2.bias": (16,), "dense1.weight": (120, 256), "dense1.bias": (120,),
        "dense2.weight": (84, 120), "dense2.bias": (84,), "dense3.weight": (10, 84),
        "dense3.bias": (10,)}
    assert LENET.specs["conv2.weight"][1:] == (6 * 25, 16 * 25)
    p = LENET.init_params(0)
    x = tiny_images(3, 0)
    assert LENET(p, x).shape == (3, 10) and LENET(p, x).dtype == np.float32
    g = grad(lambda q: cross_entropy(LENET(q, x), np.array([1, 2, 3])))(p)
    assert all(np.any(g[k] != 0) for k in p if k.endswith(".weight"))


def test_a_new_architecture_round_trips_through_the_keras_layout(lenet_registered, tmp_path):
    from scratchadv.checkpoint import load_model, save_model
    from scratchadv.interchange import (export_weights, from_keras_layout, import_weights,
                                        keras_names, to_keras_layout)
    from test_interchange import keras_forward          # channels-last, plain NumPy
    p = shifted(LENET.init_params(2, np.float64))
    k = to_keras_layout(p, "lenet-v1")
    assert list(k) == keras_names("lenet-v1") == [
        "conv2d/kernel", "conv2d/bias", "conv2d_1/kernel", "conv2d_1/bias", "dense/kernel",
        "dense/bias", "dense_1/kernel", "dense_1/bias", "dense_2/kernel", "dense_2/bias"]
    assert k["conv2d_1/kernel"].shape == (5, 5, 6, 16) and k["dense/kernel"].shape == (256, 120)
    # channels-last flatten: Keras row (h*4 + w)*16 + c is our column c*16 + h*4 + w
    for c, h, w in [(0, 0, 0), (5, 1, 2), (15, 3, 3)]:
        np.testing.assert_array_equal(k["dense/kernel"][(h * 4 + w) * 16 + c],
                                      p["dense1.weight"][:, c * 16 + h * 4 + w])
    x = tiny_images(3, 1, dtype=np.float64)
    np.testing.assert_allclose(keras_forward(k, "lenet-v1", x), LENET(p, x), rtol=1e-12, atol=1e-12)
    back, found = from_keras_layout(k)
    assert found == "lenet-v1"
    for name in p:
        np.testing.assert_array_equal(back[name], p[name])
    save_model(tmp_path / "m.npz", p, "lenet-v1")
    export_weights(tmp_path / "m.npz", tmp_path / "k.npz", "keras")
    assert import_weights(tmp_path / "k.npz", tmp_path / "b.npz", "keras") == "lenet-v1"
    again, _ = load_model(tmp_path / "b.npz")
    for name in p:
        np.testing.assert_array_equal(again[name], p[name])


def test_a_new_architecture_has_a_torch_twin_that_agrees(lenet_registered):
    torch = pytest.importorskip("torch")
    from scratchadv.torch_model import build_module, from_torch, to_torch
    p = shifted(LENET.init_params(3, np.float64))
    module = to_torch(p, "lenet-v1")
    assert list(module.state_dict()) == list(p)
    assert [k for k, _ in module.named_parameters()] == list(p)
    x = np.concatenate([tiny_images(3, 0, dtype=np.float64),
                        np.random.default_rng(0).uniform(0, 1, (3, 1, 28, 28))])
    with torch.no_grad():
        theirs = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(LENET(p, x), theirs, rtol=1e-12, atol=1e-12 * np.abs(theirs).max())
    back = from_torch(module)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    assert tuple(build_module("lenet-v1").dense2.weight.shape) == (84, 120)

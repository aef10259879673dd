"""The slides' Keras model, for real: Keras 3 (PyTorch backend) against scratchadv.

The slides build the lecture CNN with Keras layers and attack it with
``keras.metrics.binary_crossentropy(pred, fake_target)``. Here that model is built with
the slides' layer code in Keras 3 spelling, given weights exported by
``scratchadv export --format keras`` and compared: predictions on all 10,000 test images,
the slides' fake-image loop (gradient by the backend) against
``fake_image(loss="lecture")``, and a model trained in Keras imported with
``scratchadv import --format keras``.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")      # before keras is imported

import numpy as np      # noqa: E402
import pytest           # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from scratchadv.attacks import fake_image                   # noqa: E402
from scratchadv.checkpoint import load_model                # noqa: E402
from scratchadv.cli import main                             # noqa: E402
from scratchadv.interchange import keras_names, save_arrays  # noqa: E402
from scratchadv.model import predict_batched                # noqa: E402

pytestmark = pytest.mark.mnist


def slides_model():
    """The lecture's model, layer for layer as on the slides (Keras 3 spelling)."""
    from keras import layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(10, kernel_size=(5, 5), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(20, kernel_size=(5, 5), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(100, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def assert_same_predictions(ours_probs, keras_probs, tol=1e-5):
    """Probabilities equal to float32 rounding; the same class wherever the two largest
    probabilities are further apart than that (elsewhere rounding may decide; must be rare)."""
    assert np.max(np.abs(ours_probs - keras_probs)) <= tol
    top2 = np.sort(ours_probs, 1)[:, -2:]
    determined = top2[:, 1] - top2[:, 0] > 2 * tol
    assert np.mean(determined) > 0.999, f"{np.sum(~determined)} near-tied images"
    np.testing.assert_array_equal(ours_probs.argmax(1)[determined], keras_probs.argmax(1)[determined])


def test_exported_weights_in_the_slides_model(natural_model_path, mnist, tmp_path):
    _, _, x_test, y_test = mnist
    assert main(["export", "--format", "keras", natural_model_path, str(tmp_path / "k.npz")]) == 0
    model = slides_model()
    with np.load(tmp_path / "k.npz", allow_pickle=False) as z:
        model.set_weights([z[k] for k in z.files])
    theirs = model.predict(channels_last(x_test), batch_size=1000, verbose=0)
    params, _ = load_model(natural_model_path)
    ours = softmax(predict_batched(params, x_test).astype(np.float64))
    assert theirs.shape == (10000, 10)
    assert_same_predictions(ours, theirs)
    assert np.mean(theirs.argmax(1) == y_test) > 0.98


def test_slides_fake_image_loop_gives_our_loss_trace(natural_model_path, tmp_path):
    """The slides' loop in Keras: loss = binary_crossentropy(pred, fake_target) (their argument
    order), its gradient by the backend, x <- clip(x - 0.5 g, 0, 1), 10 steps, from the same
    noise as ``fake_image(loss="lecture")`` (which draws uniform noise from the same seed)."""
    assert main(["export", "--format", "keras", natural_model_path, str(tmp_path / "k.npz")]) == 0
    model = slides_model()
    with np.load(tmp_path / "k.npz", allow_pickle=False) as z:
        model.set_weights([z[k] for k in z.files])
    params, _ = load_model(natural_model_path)
    ours = fake_image(params, np.arange(10, dtype=np.int64), steps=10, lr=0.5, loss="lecture",
                      rng=np.random.default_rng(0), verbose=False)
    noise = np.random.default_rng(0).uniform(0.0, 1.0, size=(10, 1, 28, 28)).astype(np.float32)
    x = channels_last(noise)
    fake_target = torch.from_numpy(np.eye(10, dtype=np.float32))
    trace = []
    for step in range(11):
        xt = torch.tensor(x, requires_grad=True)
        pred = model(xt)
        loss = keras.metrics.binary_crossentropy(pred, fake_target)      # as on the slides
        trace.append(loss.detach().cpu().numpy())
        if step < 10:
            g, = torch.autograd.grad(loss.sum(), xt)
            x = np.clip(x - np.float32(0.5) * g.cpu().numpy(), 0, 1)
    trace = np.array(trace)
    assert trace.shape == ours.loss_history.shape == (11, 10)
    assert np.max(np.abs(trace - ours.loss_history)) <= 1e-4 * np.max(np.abs(trace))
    np.testing.assert_allclose(pred.detach().cpu().numpy(), ours.probs, atol=1e-4)
    # the slides' loss is ~3.22 (1 - p_target): linear in p, bounded by c
    assert np.all(trace <= 2 * np.log(1e7) / 10 + 1e-4)


def test_keras_trained_weights_import(mnist, tmp_path):
    """One epoch of the slides' training in Keras (RMSprop, batch 128), then
    ``scratchadv import --format keras``: the same predictions here as in Keras."""
    x_train, y_train, x_test, y_test = mnist
    keras.utils.set_random_seed(0)
    model = slides_model()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(channels_last(x_train), keras.utils.to_categorical(y_train, 10), batch_size=128,
              epochs=1, verbose=0)
    weights = model.get_weights()
    save_arrays(tmp_path / "keras_weights.npz", dict(zip(keras_names("lecture-cnn-v1"), weights)))
    assert main(["import", "--format", "keras", str(tmp_path / "keras_weights.npz"),
                 str(tmp_path / "m.npz")]) == 0
    params, meta = load_model(tmp_path / "m.npz")
    assert meta["config"]["format"] == "keras"
    ours = softmax(predict_batched(params, x_test).astype(np.float64))
    theirs = model.predict(channels_last(x_test), batch_size=1000, verbose=0)
    assert_same_predictions(ours, theirs)
    assert np.mean(ours.argmax(1) == y_test) > 0.95            # trained, not degenerate

"""Dropout, label smoothing, max-norm, schedules, early stopping and augmentation."""

import math

import numpy as np
import pytest

import handgrad
from handgrad.augment import Augmenter, bilinear_sample
from handgrad.model import Dropout
from handgrad.optim import SGD, Adam
from handgrad.schedules import CosineWithWarmup, EarlyStopping, ReduceOnPlateau, StepLR
from handgrad.train import Callback, Trainer

torch = pytest.importorskip("torch")


# --------------------------------------------------------------------------- #
# Dropout
# --------------------------------------------------------------------------- #


class FixedMask(Dropout):
    """Dropout whose masks are the same on every call (a fresh rng from one seed)."""

    def __getattribute__(self, name):
        if name == "rng":
            return np.random.default_rng(99)
        return super().__getattribute__(name)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_dropout_gradient_by_finite_differences_with_a_fixed_mask(rng, activation):
    model = handgrad.MLP(6, (7, 5), 3, activation=activation, dtype="float64", seed=0)
    # non-zero biases: a row whose inputs are all dropped would otherwise sit exactly
    # on ReLU's kink (Q = b = 0), where finite differences are meaningless
    for name in ("b1", "b2", "b3"):
        model.params[name][...] = rng.uniform(0.1, 0.5, model.params[name].shape)
    X = rng.normal(size=(9, 6))
    y = rng.integers(0, 3, 9)
    drop = FixedMask(input_rate=0.2, hidden_rate=0.4)
    model._loss_and_grads(X, y, 1 / 9, drop)
    analytic = model.grad_buffer.copy()
    eps = 1e-6
    numeric = np.empty_like(analytic)
    for i in range(model.n_params):
        old = model.param_buffer[i]
        model.param_buffer[i] = old + eps
        plus = model._loss_and_grads(X, y, 1 / 9, drop)
        model.param_buffer[i] = old - eps
        minus = model._loss_and_grads(X, y, 1 / 9, drop)
        model.param_buffer[i] = old
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    # the masks really drop units and rescale the kept ones by 1/keep
    ws = model.workspace(9)
    m = ws.mask[1]
    assert set(np.unique(m)) == {0.0, 1 / 0.6} and 0 < (m == 0).mean() < 1


def test_dropout_rate_and_expectation(rng):
    model = handgrad.MLP(4, 2000, 2, dtype="float64", seed=0)
    X = rng.normal(size=(50, 4))
    drop = Dropout(0.0, 0.3, rng=np.random.default_rng(1))
    model.forward(X, model.workspace(50), drop)
    ws = model.workspace(50)
    assert (ws.mask[1] == 0).mean() == pytest.approx(0.3, abs=0.01)
    # inverted dropout: the expected dropped activation equals the plain one
    np.testing.assert_allclose(ws.dropped[1].mean(), ws.h[0].mean(), rtol=0.02)


def test_prediction_ignores_dropout(rng):
    model = handgrad.MLP(4, 8, 3, seed=0)
    X = rng.normal(size=(10, 4)).astype(np.float32)
    before = model.predict_proba(X)
    handgrad.fit(model, X, rng.integers(0, 3, 10), optimizer=SGD(1e-9), epochs=1,
                 dropout=Dropout(0.5, 0.5), seed=0)
    np.testing.assert_allclose(model.predict_proba(X), before, rtol=1e-5)


def test_bad_dropout_rates():
    with pytest.raises(ValueError, match="hidden_rate"):
        Dropout(0.0, 1.0)


# --------------------------------------------------------------------------- #
# Label smoothing and max-norm
# --------------------------------------------------------------------------- #


def test_label_smoothing_matches_pytorch(rng):
    X = rng.normal(size=(32, 5))
    y = rng.integers(0, 4, 32)
    model = handgrad.MLP(5, 6, 4, dtype="float64", seed=0)
    trainer = Trainer(model, X, y, optimizer=SGD(0.1), epochs=1, batch_size=32,
                      shuffle=False, label_smoothing=0.15)
    _, rows, _ = trainer._gather(np.arange(32))
    loss, grads = model.loss_and_grads(X, rows)
    params = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in model.params.items()}
    h = torch.relu(torch.tensor(X) @ params["W1"].T + params["b1"])
    logits = h @ params["W2"].T + params["b2"]
    ref = torch.nn.functional.cross_entropy(logits, torch.tensor(y), label_smoothing=0.15)
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], params[k].grad.numpy(), rtol=1e-10, atol=1e-13)


def test_max_norm_caps_incoming_weight_vectors(rng):
    X = rng.normal(size=(64, 10)) * 5
    y = rng.integers(0, 3, 64)
    model = handgrad.MLP(10, 20, 3, seed=0)
    handgrad.fit(model, X, y, optimizer=SGD(1.0), epochs=3, batch_size=8, max_norm=0.5,
                 seed=0)
    for name in ("W1", "W2"):
        norms = np.linalg.norm(model.params[name], axis=1)
        assert norms.max() <= 0.5 * (1 + 1e-5)


# --------------------------------------------------------------------------- #
# Schedules against their formulas
# --------------------------------------------------------------------------- #


def record_lrs(schedule_factory, epochs=6, n=40, batch=10):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, 3)), rng.integers(0, 2, n)
    model = handgrad.MLP(3, 4, 2, seed=0)
    opt = SGD(0.8)
    lrs = []

    class Spy(Callback):
        def on_batch_end(self, batch, loss):
            lrs.append(opt.lr)

    handgrad.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=batch, seed=0,
                 callbacks=[schedule_factory(opt), Spy()])
    return np.array(lrs)


def test_step_schedule_formula():
    lrs = record_lrs(lambda o: StepLR(o, step_size=2, gamma=0.5))
    steps = np.arange(len(lrs))
    np.testing.assert_allclose(lrs, 0.8 * 0.5 ** ((steps // 4) // 2))


def test_cosine_with_warmup_formula():
    lrs = record_lrs(lambda o: CosineWithWarmup(o, total_epochs=6, warmup_epochs=1, min_lr=0.1))
    T, W = 24, 4
    expected = [0.8 * (t + 1) / W if t < W else
                0.1 + 0.7 * 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W))) for t in range(T)]
    np.testing.assert_allclose(lrs, expected)


def test_plateau_divides_the_rate_and_saves_its_state():
    from handgrad.train import History

    opt = SGD(1.0)
    plateau = ReduceOnPlateau(opt, factor=0.2, patience=2, tol=0.01)
    h = History()
    for loss in [1.0, 0.5, 0.499, 0.498, 0.497]:
        h.record(len(h.epochs), train_loss=loss)
        plateau.on_epoch_end(h.epochs[-1], h)
    assert opt.lr == pytest.approx(0.2)  # three epochs without a 0.01 improvement
    again = ReduceOnPlateau(SGD(1.0), factor=0.2, patience=2, tol=0.01)
    again.load_state_dict(plateau.state_dict())
    assert again.optimizer.lr == pytest.approx(0.2) and again.best == plateau.best


# --------------------------------------------------------------------------- #
# Early stopping
# --------------------------------------------------------------------------- #


def test_early_stopping_restores_the_best_epoch(rng):
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    Xv = rng.normal(size=(30, 4))
    yv = rng.integers(0, 2, 30)  # noise: validation loss soon rises as the model overfits
    model = handgrad.MLP(4, 64, 2, seed=0)
    snapshots = {}

    class Keep(Callback):
        def on_epoch_end(self, epoch, history):
            snapshots[epoch] = model.param_buffer.copy()

    stopper = EarlyStopping(model, "val_loss", n_iter_no_change=3, tol=0.0)
    history = handgrad.fit(model, X, y, optimizer=Adam(0.05), epochs=200, batch_size=16,
                           validation_data=(Xv, yv), seed=0, callbacks=[Keep(), stopper])
    assert history.stopped_early and len(history.epochs) < 200
    best = int(np.argmin(history.val_loss))
    # scikit-learn's rule: stop once more than n_iter_no_change epochs failed to improve
    assert stopper.best_epoch == best and len(history.epochs) == best + 5
    np.testing.assert_array_equal(model.param_buffer, snapshots[best])


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #


@pytest.fixture
def digits_rows():
    from handgrad.datasets import load_digits

    images, _ = load_digits()
    up = np.kron(images[:64] / 16, np.ones((1, 3, 3)))  # (64, 24, 24)
    return np.pad(up, ((0, 0), (2, 2), (2, 2))).reshape(64, -1).astype(np.float32)  # (64, 784)


@pytest.mark.parametrize("kwargs", [
    {"rotation": 15}, {"scale": 0.1, "shear": 10}, {"translate": 3},
    {"elastic_alpha": 34, "elastic_sigma": 4},
    {"rotation": 10, "scale": 0.1, "shear": 10, "translate": 2, "elastic_alpha": 34},
])
def test_augmentation_keeps_shape_dtype_range_and_is_seeded(digits_rows, kwargs):
    aug = Augmenter((28, 28), **kwargs)
    a = digits_rows.copy()
    b = digits_rows.copy()
    aug(a, np.random.default_rng(5))
    aug(b, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # deterministic under a seed
    assert a.shape == digits_rows.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not np.array_equal(a, digits_rows)  # it did change the images
    c = digits_rows.copy()
    aug(c, np.random.default_rng(6))
    assert not np.array_equal(a, c)
    # the ink stays roughly the same: a distortion, not a different picture
    ratio = a.sum(axis=1) / digits_rows.sum(axis=1)
    assert 0.6 < np.median(ratio) < 1.4


def test_identity_transform_changes_nothing(digits_rows):
    H = W = 28
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    out = bilinear_sample(digits_rows.reshape(-1, H, W),
                          np.broadcast_to(ys.ravel(), (64, 784)).astype(float),
                          np.broadcast_to(xs.ravel(), (64, 784)).astype(float))
    np.testing.assert_allclose(out, digits_rows, atol=1e-6)


def test_half_pixel_shift_interpolates():
    img = np.zeros((1, 3, 3), np.float32)
    img[0, 1, 1] = 1.0
    out = bilinear_sample(img, np.array([[1.0]]), np.array([[1.5]]))
    assert out[0, 0] == pytest.approx(0.5)


def test_training_with_augmentation_is_reproducible(digits_rows):
    y = np.arange(64) % 10
    aug = Augmenter((28, 28), rotation=10, elastic_alpha=20)
    a = handgrad.MLP(784, 16, 10, seed=0)
    b = handgrad.MLP(784, 16, 10, seed=0)
    handgrad.fit(a, digits_rows, y, epochs=2, batch_size=16, seed=3, augment=aug)
    handgrad.fit(b, digits_rows, y, epochs=2, batch_size=16, seed=3, augment=aug)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)


def test_bad_augmentation_settings():
    with pytest.raises(ValueError, match="rotation"):
        Augmenter(rotation=-1)
    with pytest.raises(ValueError, match="scale"):
        Augmenter(scale=1.5)
    with pytest.raises(ValueError, match="784 values are not"):
        Augmenter((20, 20), rotation=5)(np.zeros((2, 784), np.float32), np.random.default_rng())

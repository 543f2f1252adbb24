"""The training loop: determinism, resumption, history, and learning real data."""

import numpy as np
import pytest

import handgrad
from handgrad.datasets import Preprocessor, load_dataset
from handgrad.optim import SGD, Adam
from handgrad.train import Callback, StopTraining, Trainer


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    prep = Preprocessor("divide").fit(ds.x_train)
    return prep.transform(ds.x_train), ds.y_train, prep.transform(ds.x_test), ds.y_test


def train_once(digits, seed=0, **kwargs):
    X, y, _, _ = digits
    model = handgrad.MLP(64, 32, 10, seed=seed)
    history = handgrad.fit(model, X, y, optimizer=Adam(1e-3), epochs=3, batch_size=50,
                           seed=seed, **kwargs)
    return model, history


def test_same_seed_gives_bit_identical_weights(digits):
    a, _ = train_once(digits, seed=3)
    b, _ = train_once(digits, seed=3)
    c, _ = train_once(digits, seed=4)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)
    assert not np.array_equal(a.param_buffer, c.param_buffer)


def test_learns_the_digits(digits):
    X, y, Xt, yt = digits
    model = handgrad.MLP(64, 128, 10, seed=0)
    history = handgrad.fit(model, X, y, epochs=25, batch_size=32, seed=0,
                           validation_data=(Xt, yt))
    assert history.train_loss[-1] < history.train_loss[0] / 5
    _, acc = model.evaluate(Xt, yt)
    assert acc >= 0.95
    assert history.val_accuracy[-1] == pytest.approx(acc)


def test_history_records_every_epoch(digits):
    _, history = train_once(digits)
    assert history.epochs == [0, 1, 2]
    assert len(history.train_loss) == 3 and all(np.isfinite(history.train_loss))
    assert all(0 <= a <= 1 for a in history.train_accuracy)
    assert history.val_loss == [None, None, None]
    assert history.to_dict()["seed"] == 0
    again = handgrad.History.from_dict(history.to_dict())
    assert again == history


def test_epoch_loss_is_the_mean_of_the_batch_losses(digits):
    X, y, _, _ = digits
    X, y = X[:100], y[:100]
    losses = []

    class Record(Callback):
        def on_batch_end(self, batch, loss):
            losses.append(loss)

    model = handgrad.MLP(64, 8, 10, seed=0)
    history = handgrad.fit(model, X, y, optimizer=SGD(0.01), epochs=1, batch_size=30,
                           seed=0, callbacks=[Record()])
    sizes = [30, 30, 30, 10]
    assert history.train_loss[0] == pytest.approx(np.dot(losses, sizes) / 100, rel=1e-12)


@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "fused-momentum"])
def test_stopped_trainer_resumes_bit_identically(digits, nesterov):
    X, y, _, _ = digits
    reference = handgrad.MLP(64, 16, 10, seed=1)
    opt = SGD(0.05, momentum=0.9, nesterov=nesterov)
    full = Trainer(reference, X, y, optimizer=opt, epochs=3, batch_size=64, seed=9)
    full.run()

    class StopAt(Callback):
        def __init__(self, n):
            self.n, self.seen = n, 0

        def on_batch_end(self, batch, loss):
            self.seen += 1
            if self.seen == self.n:
                raise StopTraining

    model = handgrad.MLP(64, 16, 10, seed=1)
    opt1 = SGD(0.05, momentum=0.9, nesterov=nesterov)
    first = Trainer(model, X, y, optimizer=opt1, epochs=3, batch_size=64, seed=9,
                    callbacks=[StopAt(30)])  # mid-way through the second epoch
    first.run()
    assert not first.finished and first.epoch == 1
    state, opt_state = first.state_dict(), opt1.state_dict()
    weights = model.param_buffer.copy()

    resumed_model = handgrad.MLP(64, 16, 10, seed=123)  # different init: weights come back
    resumed_model.param_buffer[...] = weights
    opt2 = SGD(0.5)
    opt2.load_state_dict(opt_state)
    second = Trainer(resumed_model, X, y, optimizer=opt2, epochs=3, batch_size=64, seed=0)
    second.load_state_dict(state)
    history = second.run()
    np.testing.assert_array_equal(resumed_model.param_buffer, reference.param_buffer)
    assert history.train_loss == full.history.train_loss


def test_resume_refuses_different_data(digits):
    X, y, _, _ = digits
    t = Trainer(handgrad.MLP(64, 4, 10), X, y, epochs=1, batch_size=64, seed=0)
    state = t.state_dict()
    other = Trainer(handgrad.MLP(64, 4, 10), X[:500], y[:500], epochs=1, batch_size=64)
    with pytest.raises(ValueError, match="n_rows"):
        other.load_state_dict(state)


def test_epoch_end_callback_can_stop_early(digits):
    class StopAfterTwo(Callback):
        def on_epoch_end(self, epoch, history):
            return epoch == 1

    _, history = train_once(digits, callbacks=[StopAfterTwo()])
    assert history.epochs == [0, 1] and history.stopped_early


def test_sample_weights_equal_to_repeating_rows(rng):
    """Weight 2 on a row equals that row appearing twice (full-batch gradient descent)."""
    X = rng.normal(size=(6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    s = np.array([2.0, 1, 1, 1, 1, 1])
    a = handgrad.MLP(3, 4, 3, dtype="float64", seed=0)
    b = handgrad.MLP(3, 4, 3, dtype="float64", seed=0)
    handgrad.fit(a, X, y, optimizer=SGD(0.1), epochs=5, batch_size=6, shuffle=False,
                 sample_weight=s)
    handgrad.fit(b, np.vstack([X, X[:1]]), np.append(y, y[0]), optimizer=SGD(0.1), epochs=5,
                 batch_size=7, shuffle=False)
    np.testing.assert_allclose(a.param_buffer, b.param_buffer, rtol=1e-12)


def test_soft_targets_train(rng):
    X = rng.normal(size=(40, 5))
    Y = rng.dirichlet(np.ones(3), size=40)
    model = handgrad.MLP(5, 8, 3, seed=0)
    history = handgrad.fit(model, X, Y, epochs=3, batch_size=8, seed=0)
    assert np.all(np.isfinite(history.train_loss))


@pytest.mark.parametrize("optimizer", [Adam, lambda: SGD(0.05)], ids=["adam", "fused-sgd"])
def test_no_memory_is_allocated_per_training_step(optimizer):
    """Once buffers exist, an epoch allocates only its row permutation (N int64) and small
    per-step temporaries that are freed at once: the peak does not grow with the steps."""
    import tracemalloc

    rng = np.random.default_rng(0)
    N = 4096
    X = rng.random((N, 64), dtype=np.float32)
    y = rng.integers(0, 10, N)
    model = handgrad.MLP(64, 256, 10, seed=0)
    trainer = Trainer(model, X, y, optimizer=optimizer(), epochs=1, batch_size=128, seed=0)
    trainer.run()  # builds workspaces, batch buffers and optimizer state
    peaks = []
    for epochs in (3, 6):  # both runs cross an epoch boundary: two row orders meet there
        trainer.epochs = epochs
        tracemalloc.start()
        trainer.run()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peaks.append(peak)
        assert current < 8192  # nothing kept (NumPy's small-object caches and the history)
    one_activation = 128 * 256 * 4  # a (B, H) float32 buffer: 128 KiB
    assert peaks[0] < 2 * N * 8 + 16384 < one_activation
    assert peaks[1] <= peaks[0] + 4096  # three epochs more, no more memory


def test_peak_memory_is_under_twice_the_training_data():
    import tracemalloc

    tracemalloc.start()
    rng = np.random.default_rng(0)
    X = rng.random((20000, 784), dtype=np.float32)  # 62.7 MB, MNIST-shaped
    y = rng.integers(0, 10, 20000)
    model = handgrad.MLP(784, 800, 10, seed=0)
    handgrad.fit(model, X, y, optimizer=Adam(), epochs=1, batch_size=128, seed=0,
                 validation_data=(X[:2000], y[:2000]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * X.nbytes, (peak, X.nbytes)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"validation_data": (np.zeros((2, 64)),)}, "validation_data"),
])
def test_bad_fit_arguments_raise(digits, kwargs, message):
    X, y, _, _ = digits
    with pytest.raises(ValueError, match=message):
        handgrad.fit(handgrad.MLP(64, 4, 10), X, y, **kwargs)


# --------------------------------------------------------------------------- #
# Plain SGD fused into the weight-gradient GEMMs, and the gradient's finite check
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_the_bound_uses_the_training_sets_norm_unless_batches_change(rng, monkeypatch, augment):
    """Without augmentation every batch's ‖X‖² is bounded by the whole set's, measured by
    the finite check at setup: no per-step norm. Augmented batches are measured each."""
    import handgrad.train as train_module

    X, y = rng.normal(size=(96, 6)).astype(np.float32), rng.integers(0, 3, 96)
    calls, seen = [], []
    original_norm = train_module.square_norm
    monkeypatch.setattr(train_module, "square_norm", lambda a: calls.append(1) or
                        original_norm(a))
    original_bound = handgrad.MLP.grads_bounded

    def recording(self, ws, input_norm2=None, l2=0.0):
        seen.append((input_norm2, original_norm(ws.inputs[0])))
        return original_bound(self, ws, input_norm2, l2)

    monkeypatch.setattr(handgrad.MLP, "grads_bounded", recording)
    flip = (lambda xb, rng: xb.__imul__(-1.0)) if augment else None
    trainer = Trainer(handgrad.MLP(6, 5, 3, seed=0), X, y, optimizer=SGD(0.1), epochs=2,
                      batch_size=32, seed=0, augment=flip)
    assert trainer._x_norm2 == pytest.approx(float(np.sum(X.astype(np.float64) ** 2)),
                                             rel=1e-5)
    trainer.run()
    assert len(calls) == (6 if augment else 0)
    assert len(seen) == 6
    for used, batch in seen:  # what the bound used covers the batch's own norm
        assert used >= batch * (1 - 1e-6)
        if not augment:
            assert used == trainer._x_norm2


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.1), Adam], ids=["sgd", "adam"])
def test_non_finite_gradient_stops_before_the_update(rng, monkeypatch, optimizer):
    """A gradient entry overflows while the loss is finite: the exact check catches it
    and no weight changes."""
    from handgrad.train import DivergenceError

    original = handgrad.MLP.weight_grads

    def overflowing(self, ws, l2=0.0):
        original(self, ws, l2)
        self.grads["W1"][0, 0] = np.inf

    monkeypatch.setattr(handgrad.MLP, "weight_grads", overflowing)
    monkeypatch.setattr(handgrad.MLP, "grads_bounded", lambda self, ws, input_norm2=None, l2=0.0: False)
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    model = handgrad.MLP(5, 7, 3, seed=0)
    before = model.param_buffer.copy()
    with pytest.raises(DivergenceError, match="gradient became non-finite.*batch 1"):
        handgrad.fit(model, X, y, optimizer=optimizer(), epochs=1, batch_size=16, seed=0)
    np.testing.assert_array_equal(model.param_buffer, before)


# --------------------------------------------------------------------------- #
# Label smoothing and max-norm
# --------------------------------------------------------------------------- #


def test_label_smoothing_matches_pytorch(rng, torch):
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


def test_weighted_validation_data(rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    Xv, yv, sv = rng.normal(size=(20, 3)), rng.integers(0, 2, 20), rng.uniform(0, 3, 20)
    model = handgrad.MLP(3, 4, 2, seed=0)
    history = handgrad.fit(model, X, y, epochs=1, batch_size=8, seed=0,
                           validation_data=(Xv, yv, sv))
    hits = model.predict(Xv) == yv
    assert history.val_accuracy[0] == pytest.approx(np.dot(hits, sv) / sv.sum(), rel=1e-12)
    assert history.val_loss[0] == pytest.approx(model.evaluate(Xv, yv, sv)[0], rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        handgrad.fit(model, X, y, validation_data=(Xv, yv, sv[:3]))


def test_a_new_trainer_continues_a_model_and_its_optimizer(rng):
    """Warm continuation (an estimator's warm_start or partial_fit): weights and the
    optimizer's state carry over from one Trainer to the next."""
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    model, opt = handgrad.MLP(3, 4, 2, seed=0), Adam(1e-2)
    Trainer(model, X, y, optimizer=opt, epochs=1, batch_size=8, seed=0).run()
    after_one = model.param_buffer.copy()
    Trainer(model, X, y, optimizer=opt, epochs=1, batch_size=8, seed=1).run()
    assert opt.state["flat"]["t"] == 10 and not np.array_equal(model.param_buffer, after_one)


def test_batches_whose_rows_all_weigh_zero_are_skipped(rng):
    X, y = rng.normal(size=(16, 3)), rng.integers(0, 2, 16)
    s = np.r_[np.zeros(8), np.ones(8)]  # unshuffled: the first batch weighs nothing
    model = handgrad.MLP(3, 4, 2, dtype="float64", seed=0)
    history = handgrad.fit(model, X, y, optimizer=SGD(0.1), epochs=1, batch_size=8,
                           shuffle=False, sample_weight=s)
    reference = handgrad.MLP(3, 4, 2, dtype="float64", seed=0)
    ref_history = handgrad.fit(reference, X[8:], y[8:], optimizer=SGD(0.1), epochs=1,
                               batch_size=8, shuffle=False)
    np.testing.assert_array_equal(model.param_buffer, reference.param_buffer)
    assert history.train_loss == pytest.approx(ref_history.train_loss, rel=1e-14)


def test_a_stop_after_an_epochs_last_batch_resumes_bit_identically():
    """A stop (Ctrl-C) can land after the last batch of an epoch, before the epoch's end
    is recorded: the checkpoint then holds batch == n_batches, and resuming records that
    epoch's end first."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(96, 5)), rng.integers(0, 3, 96)

    def trainer(callbacks=()):
        model = handgrad.MLP(5, 4, 3, dtype="float64", seed=0)
        return handgrad.Trainer(model, X, y, optimizer=handgrad.optim.SGD(0.1), epochs=3,
                                batch_size=32, seed=0, callbacks=callbacks)

    class StopAtEpochEnd(handgrad.Callback):
        def on_batch_end(self, batch, loss):
            if batch == 2:  # the last of 3 batches
                raise handgrad.StopTraining

    full = trainer()
    full.run()
    first = trainer([StopAtEpochEnd()])
    first.run()
    state = first.state_dict()
    assert state["batch"] == first.n_batches and not first.finished
    second = trainer()
    second.model.param_buffer[...] = first.model.param_buffer
    second.optimizer.load_state_dict(first.optimizer.state_dict())
    second.load_state_dict(state)
    second.run()
    np.testing.assert_array_equal(second.model.param_buffer, full.model.param_buffer)
    assert second.history.train_loss == full.history.train_loss

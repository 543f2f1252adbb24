"""Learning-rate schedules, the plateau rule (scikit-learn's) and early stopping."""

import math

import numpy as np
import pytest

import handgrad
from handgrad.optim import SGD, Adam
from handgrad.schedules import (
    CosineWithWarmup,
    EarlyStopping,
    NoImprovement,
    ReduceOnPlateau,
    StepLR,
)
from handgrad.train import Callback


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
# One plateau rule: scikit-learn's
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("early_stopping", [False, True], ids=["train-loss", "validation-score"])
def test_no_improvement_is_scikit_learns_rule(early_stopping):
    """NoImprovement counts and triggers exactly as scikit-learn's MLPClassifier does,
    driven through its own _update_no_improvement_count on the same values."""
    neural_network = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(0)
    tol, patience = 0.05, 3
    # ties, changes smaller than tol, and real improvements (exact in 2 decimals)
    steps = rng.choice([-0.1, -0.05, -0.02, 0.0, 0.0, 0.03, 0.05], size=300)
    values = [round(v, 2) for v in np.cumsum(steps)]
    if early_stopping:
        values = [-v for v in values]  # validation scores: higher is better
    clf = neural_network.MLPClassifier(tol=tol, n_iter_no_change=patience)
    clf.best_loss_, clf.best_validation_score_ = np.inf, -np.inf
    clf._no_improvement_count, clf.loss_curve_, clf.validation_scores_ = 0, [], []
    clf.coefs_, clf.intercepts_ = [], []
    scores = iter(values)
    clf._score = lambda X, y, sample_weight=None: next(scores)
    rule = NoImprovement(patience, tol, higher_is_better=early_stopping)
    plateaus = 0
    for v in values:
        clf.loss_curve_.append(v)
        clf._update_no_improvement_count(early_stopping, None, None, None)
        _, plateau = rule.update(v)
        assert rule.count == clf._no_improvement_count
        assert plateau == (clf._no_improvement_count > clf.n_iter_no_change)
        best = clf.best_validation_score_ if early_stopping else clf.best_loss_
        assert rule.sign * rule.best == best
        if plateau:  # learning_rate="adaptive": divide the rate, count afresh
            plateaus += 1
            rule.reset()
            clf._no_improvement_count = 0
    assert plateaus >= 3  # the values exercised the trigger


def test_early_stopping_can_first_reduce_the_rate_as_adaptive_does(rng):
    opt = SGD(1.0)
    model = handgrad.MLP(3, 4, 2, seed=0)
    stopper = EarlyStopping(model, "train_loss", n_iter_no_change=1, tol=1e-4,
                            restore_best=False, optimizer=opt, factor=0.2, min_lr=0.01)
    h = handgrad.History()
    stops = []
    for loss in [1.0] * 12:  # never improves after the first epoch
        h.record(len(h.epochs), train_loss=loss)
        stops.append(stopper.on_epoch_end(h.epochs[-1], h))
    # every 2 epochs without improvement: ÷5 while the rate is above 0.01, then stop
    assert opt.lr == pytest.approx(0.2 ** 3) and stops.index(True) == 8


@pytest.mark.parametrize("make", [lambda o: StepLR(o, step_size=1, gamma=0.5),
                                  lambda o: CosineWithWarmup(o, total_epochs=4, warmup_epochs=1)],
                         ids=["step", "cosine"])
def test_a_schedule_resumed_mid_epoch_sets_the_same_rates(make, tmp_path):
    """The step count comes from the trainer's position, which a restore sets mid-epoch."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)

    def trainer(callbacks):
        opt = SGD(0.8)
        lrs = []

        class Spy(Callback):
            def on_batch_end(self, batch, loss):
                lrs.append(opt.lr)

        t = handgrad.Trainer(handgrad.MLP(3, 4, 2, seed=0), X, y, optimizer=opt, epochs=4,
                             batch_size=10, seed=0, callbacks=[make(opt), Spy(), *callbacks])
        return t, lrs

    full, full_lrs = trainer([])
    full.run()

    class StopAt(Callback):
        def on_batch_end(self, batch, loss):
            if batch == 1 and self.trainer.epoch == 2:
                raise handgrad.StopTraining

        def on_train_begin(self, trainer):
            self.trainer = trainer

    first, first_lrs = trainer([StopAt()])
    first.run()
    first.save_checkpoint(tmp_path / "c.safetensors")
    second, second_lrs = trainer([])
    second.restore(tmp_path / "c.safetensors")
    second.run()
    assert first_lrs + second_lrs == full_lrs
    np.testing.assert_array_equal(second.model.param_buffer, full.model.param_buffer)


def test_step_schedules_save_their_base_rate_and_scale(tmp_path):
    opt = SGD(1.0)
    step = StepLR(opt, step_size=2)
    step.scale_lr(0.5)
    again = StepLR(SGD(1.0), step_size=2)
    again.load_state_dict(step.state_dict())
    assert again.base_lr == 0.5

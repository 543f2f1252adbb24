"""Learning-rate schedules and early stopping, as training callbacks.

A schedule sets ``optimizer.lr`` before each batch from the global step
``t = epoch · n_batches + batch`` (stateless formulas, so a resumed run gets the
same rates), or after each epoch from a monitored metric (stateful: it saves and
restores its state with the trainer's checkpoint).
"""

from __future__ import annotations

import math

import numpy as np

from .callbacks import Callback


class _StepSchedule(Callback):
    """Base: ``lr = base_lr · factor(t, T)`` before every batch."""

    def __init__(self, optimizer, total_epochs):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.total_epochs = int(total_epochs)
        self.epoch = 0
        self.n_batches = 1
        self._trainer = None

    def on_train_begin(self, trainer):
        self._trainer = trainer  # its position, even when it resumes mid-epoch

    def on_epoch_begin(self, epoch, n_batches):
        self.epoch, self.n_batches = epoch, n_batches

    def scale_lr(self, factor):
        """Scale the schedule (a learning-rate back-off after a divergence)."""
        self.base_lr *= factor

    def state_dict(self):
        return {"base_lr": self.base_lr}

    def load_state_dict(self, state):
        self.base_lr = float(state["base_lr"])

    def on_batch_begin(self, batch):
        if self._trainer is not None:
            self.epoch, self.n_batches = self._trainer.epoch, self._trainer.n_batches
        t = self.epoch * self.n_batches + batch
        self.optimizer.lr = self.lr_at(t, self.total_epochs * self.n_batches)

    def lr_at(self, t, total_steps):
        raise NotImplementedError


class StepLR(_StepSchedule):
    """``lr = base · γ^⌊epoch / step_size⌋`` (``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, optimizer, step_size, gamma=0.1, total_epochs=0):
        super().__init__(optimizer, total_epochs)
        if not (isinstance(step_size, int) and step_size > 0):
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, t, total_steps):
        return self.base_lr * self.gamma ** ((t // self.n_batches) // self.step_size)


class CosineWithWarmup(_StepSchedule):
    """Linear warm-up over ``warmup_epochs``, then cosine decay to ``min_lr`` at the end.

    ``lr(t) = base · (t + 1) / W`` for ``t < W``, then
    ``min + (base − min) · (1 + cos(π (t − W) / (T − W))) / 2`` (per step).
    """

    def __init__(self, optimizer, total_epochs, warmup_epochs=0, min_lr=0.0):
        super().__init__(optimizer, total_epochs)
        if total_epochs <= 0:
            raise ValueError(f"total_epochs must be positive, got {total_epochs!r}")
        if not 0 <= warmup_epochs < total_epochs:
            raise ValueError(f"warmup_epochs must lie in [0, total_epochs), got {warmup_epochs!r}")
        if not 0 <= min_lr <= optimizer.lr:
            raise ValueError(f"min_lr must lie in [0, lr], got {min_lr!r}")
        self.warmup_epochs, self.min_lr = warmup_epochs, float(min_lr)

    def lr_at(self, t, total_steps):
        warm = self.warmup_epochs * self.n_batches
        if t < warm:
            return self.base_lr * (t + 1) / warm
        progress = min(1.0, (t - warm) / max(1, total_steps - warm))
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class NoImprovement:
    """scikit-learn's rule for a plateau, written once (``MLPClassifier``'s
    ``_update_no_improvement_count`` and the check after it).

    Values are compared "lower is better" (pass ``higher_is_better`` for accuracies). An
    epoch whose value is not below ``best − tol`` counts as no improvement, any other
    resets the count; ``best`` follows every strictly better value (even by less than
    ``tol``). The plateau is reached when the count *exceeds* ``patience`` (which may be
    ``math.inf``: never, as scikit-learn's ``n_iter_no_change=np.inf``).
    """

    def __init__(self, patience, tol, higher_is_better=False):
        self.patience = math.inf if patience == math.inf else int(patience)
        self.tol = float(tol)
        self.sign = -1.0 if higher_is_better else 1.0
        self.best, self.count = None, 0  # best: sign · value, None before the first

    def update(self, value):
        """Record one epoch's value; returns ``(new best, plateau reached)``."""
        v = self.sign * value
        if self.best is not None and v > self.best - self.tol:
            self.count += 1
        else:
            self.count = 0
        better = self.best is None or v < self.best
        if better:
            self.best = v
        return better, self.count > self.patience

    def reset(self):
        self.count = 0


def _monitored(history, monitor, who):
    value = getattr(history, monitor)[-1]
    if value is None:
        raise ValueError(f"{who} monitors {monitor}, which this run does not compute "
                         f"(no validation data?)")
    return value


MONITORS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


class ReduceOnPlateau(Callback):
    """scikit-learn's ``learning_rate="adaptive"``: on a plateau of the monitored metric
    (:class:`NoImprovement`: no improvement by ``tol`` for more than ``patience`` epochs),
    multiply the rate by ``factor`` while it is above ``min_lr``."""

    def __init__(self, optimizer, monitor="train_loss", factor=0.2, patience=10, tol=1e-4,
                 min_lr=1e-6):
        if monitor not in MONITORS:
            raise ValueError(f"cannot monitor {monitor!r}; choose one of {', '.join(MONITORS)}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.optimizer, self.monitor, self.factor = optimizer, monitor, factor
        self.min_lr = float(min_lr)
        self.rule = NoImprovement(patience, tol, monitor.endswith("accuracy"))

    @property
    def best(self):
        return self.rule.best

    def on_epoch_end(self, epoch, history):
        _, plateau = self.rule.update(_monitored(history, self.monitor, "ReduceOnPlateau"))
        if plateau and self.optimizer.lr > self.min_lr:
            self.optimizer.lr *= self.factor
            self.rule.reset()
        return False

    def state_dict(self):
        return {"best": self.rule.best, "bad_epochs": self.rule.count, "lr": self.optimizer.lr}

    def load_state_dict(self, state):
        self.rule.best, self.rule.count = state["best"], int(state["bad_epochs"])
        self.optimizer.lr = float(state["lr"])


class EarlyStopping(Callback):
    """Stop when the monitored metric stops improving, with scikit-learn's rule
    (:class:`NoImprovement`): after more than ``n_iter_no_change`` epochs without an
    improvement by ``tol``. ``restore_best`` puts back the weights of the best epoch at
    the end.

    With an ``optimizer`` a plateau first multiplies its learning rate by ``factor``
    while that is above ``min_lr`` (scikit-learn's ``learning_rate="adaptive"``, which
    shares the count with stopping), and stops only once it is not.
    """

    def __init__(self, model, monitor="val_loss", n_iter_no_change=10, tol=1e-4,
                 restore_best=True, optimizer=None, factor=0.2, min_lr=1e-6):
        if monitor not in MONITORS:
            raise ValueError(f"cannot monitor {monitor!r}; choose one of {', '.join(MONITORS)}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.model, self.monitor = model, monitor
        self.rule = NoImprovement(n_iter_no_change, tol, monitor.endswith("accuracy"))
        self.restore_best = restore_best
        self.optimizer, self.factor, self.min_lr = optimizer, float(factor), float(min_lr)
        self.best_epoch = None
        self.best_params = None

    @property
    def best(self):
        return self.rule.best

    def on_epoch_end(self, epoch, history):
        better, plateau = self.rule.update(_monitored(history, self.monitor, "EarlyStopping"))
        if better:
            self.best_epoch = epoch
            if self.restore_best:
                self.best_params = self.model.param_buffer.copy()
        if plateau and self.optimizer is not None and self.optimizer.lr > self.min_lr:
            self.optimizer.lr *= self.factor
            self.rule.reset()
            return False
        return plateau

    def on_train_end(self, history):
        if self.restore_best and self.best_params is not None:
            self.model.param_buffer[...] = self.best_params

    def state_dict(self):
        # best_params is an array: checkpoints store it as a tensor, not as JSON
        return {"best": self.rule.best, "best_epoch": self.best_epoch,
                "bad_epochs": self.rule.count,
                "best_params": None if self.best_params is None else self.best_params.copy()}

    def load_state_dict(self, state):
        self.rule.best, self.best_epoch = state["best"], state["best_epoch"]
        self.rule.count = int(state["bad_epochs"])
        bp = state.get("best_params")
        self.best_params = None if bp is None else np.asarray(bp, dtype=self.model.dtype)

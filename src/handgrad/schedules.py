"""Learning-rate schedules and early stopping, as training callbacks.

A schedule sets ``optimizer.lr`` before each batch from the global step
``t = epoch · n_batches + batch`` (stateless formulas, so a resumed run gets the
same rates), or after each epoch from a monitored metric (stateful: it saves and
restores its state with the trainer's checkpoint).
"""

from __future__ import annotations

import math

import numpy as np

from .train import Callback


class _StepSchedule(Callback):
    """Base: ``lr = base_lr · factor(t, T)`` before every batch."""

    def __init__(self, optimizer, total_epochs):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.total_epochs = int(total_epochs)
        self.epoch = 0
        self.n_batches = 1

    def on_epoch_begin(self, epoch, n_batches):
        self.epoch, self.n_batches = epoch, n_batches

    def on_batch_begin(self, batch):
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


class ReduceOnPlateau(Callback):
    """scikit-learn's ``learning_rate="adaptive"``: when the monitored metric has not
    improved by ``tol`` for ``patience`` epochs, divide the rate by ``1/factor``."""

    def __init__(self, optimizer, monitor="train_loss", factor=0.2, patience=10, tol=1e-4,
                 min_lr=1e-6):
        if monitor not in ("train_loss", "val_loss", "val_accuracy", "train_accuracy"):
            raise ValueError(f"cannot monitor {monitor!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.optimizer, self.monitor, self.factor = optimizer, monitor, factor
        self.patience, self.tol, self.min_lr = int(patience), float(tol), float(min_lr)
        self.best, self.bad_epochs = None, 0

    def _sign(self):
        return -1.0 if self.monitor.endswith("accuracy") else 1.0  # lower is better

    def on_epoch_end(self, epoch, history):
        value = getattr(history, self.monitor)[-1]
        if value is None:
            raise ValueError(f"ReduceOnPlateau monitors {self.monitor}, which this run does "
                             f"not compute (no validation data?)")
        v = self._sign() * value
        if self.best is None or v < self.best - self.tol:
            self.best, self.bad_epochs = v, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience and self.optimizer.lr > self.min_lr:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.bad_epochs = 0
        return False

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs, "lr": self.optimizer.lr}

    def load_state_dict(self, state):
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
        self.optimizer.lr = float(state["lr"])


class EarlyStopping(Callback):
    """Stop when the validation metric stops improving; restore the best weights.

    As scikit-learn's ``early_stopping``: an epoch improves when the metric beats
    the best by more than ``tol``; after ``n_iter_no_change`` epochs without
    improvement training stops, and the weights of the best epoch are restored.
    """

    def __init__(self, model, monitor="val_loss", n_iter_no_change=10, tol=1e-4,
                 restore_best=True):
        if monitor not in ("val_loss", "val_accuracy", "train_loss"):
            raise ValueError(f"cannot monitor {monitor!r}")
        self.model, self.monitor = model, monitor
        self.n_iter_no_change, self.tol = int(n_iter_no_change), float(tol)
        self.restore_best = restore_best
        self.best, self.best_epoch, self.bad_epochs = None, None, 0
        self.best_params = None

    def on_epoch_end(self, epoch, history):
        value = getattr(history, self.monitor)[-1]
        if value is None:
            raise ValueError(f"early stopping monitors {self.monitor}, which needs "
                             f"validation data")
        v = -value if self.monitor.endswith("accuracy") else value
        if self.best is None or v < self.best - self.tol:
            self.best, self.best_epoch, self.bad_epochs = v, epoch, 0
            self.best_params = self.model.param_buffer.copy()
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.n_iter_no_change

    def on_train_end(self, history):
        if self.restore_best and self.best_params is not None:
            self.model.param_buffer[...] = self.best_params

    def state_dict(self):
        # best_params is an array: checkpoints store it as a tensor, not as JSON
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "best_params": None if self.best_params is None else self.best_params.copy()}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        bp = state.get("best_params")
        self.best_params = None if bp is None else np.asarray(bp, dtype=self.model.dtype)

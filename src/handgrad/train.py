"""The training loop: mini-batch gradient descent over the model's flat buffers.

Shape key: N rows of data, B batch, D inputs, M classes.

:class:`Trainer` is handgrad's only training loop: :func:`handgrad.fit`, the
scikit-learn estimator, the command line and data-parallel training over MPI
(:mod:`handgrad.distributed`) all run through it. Each batch reads as the
specification does: forward (F1–F4), loss (F5), backward (B2, B5, B6), and the
update (B3, B4, B7 and the optimizer's step, :class:`~handgrad.update.Update`).

Reproducibility: the shuffle of epoch ``e`` is drawn from ``default_rng([seed, e])``,
so an epoch's order depends only on the seed and the epoch number. Same seed, same
data, same model: bit-identical weights. A :class:`Trainer` stopped after any batch
and restored from its checkpoint (:meth:`Trainer.save_checkpoint`,
:meth:`Trainer.restore`) continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .callbacks import Callback, StopTraining
from .config import ARRAYS, ConfigError, TrainConfig
from .model import Dropout, check_sample_weight, is_sparse, square_norm
from .optim import OPTIMIZERS, Adam, Optimizer, make_optimizer
from .update import Update

__all__ = ["METRICS", "Callback", "DivergenceError", "History", "ResumeWarning",
           "SignalHandler", "StopTraining", "Trainer", "TrainingInterrupted", "apply_max_norm"]

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time")


@dataclass
class History:
    """Per-epoch metrics of a training run (lists indexed like ``epochs``)."""

    seed: int = 0
    epochs: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    stopped_early: bool = False

    def record(self, epoch, **metrics):
        self.epochs.append(epoch)
        for name in METRICS:
            getattr(self, name).append(metrics.get(name))

    def last(self):
        """The latest epoch's metrics as a dict (empty before the first epoch)."""
        if not self.epochs:
            return {}
        return {"epoch": self.epochs[-1]} | {name: getattr(self, name)[-1] for name in METRICS}

    def to_dict(self):
        return ({"seed": self.seed, "epochs": list(self.epochs), "stopped_early": self.stopped_early}
                | {name: list(getattr(self, name)) for name in METRICS})

    @classmethod
    def from_dict(cls, d):
        h = cls(seed=int(d["seed"]), epochs=[int(e) for e in d["epochs"]],
                stopped_early=bool(d.get("stopped_early", False)))
        for name in METRICS:
            setattr(h, name, list(d[name]))
        return h


class DivergenceError(ArithmeticError):
    """The loss or the gradient became NaN or infinite, or the loss exploded.

    Raised before the optimizer step, so the model keeps its last finite weights
    and the trainer's position still points at the offending batch. Carries
    ``epoch``, ``batch`` (0-based), ``loss``, ``lr``, ``what`` (the symptom) and
    ``backoffs`` (learning-rate back-offs tried before giving up).
    """

    def __init__(self, epoch, batch, loss, lr, grad_finite=True):
        if not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif loss > 0 and grad_finite:
            what = f"the loss exploded to {loss:.3g}"
        else:
            what = "the gradient became non-finite"
        #: the message without the back-offs (the command line words its own advice)
        self.message = (f"training diverged: {what} at epoch {epoch + 1}, batch {batch + 1}; "
                        f"the learning rate ({lr:g}) is most likely too high")
        super().__init__(self.message)
        self.epoch, self.batch, self.loss, self.lr, self.what = epoch, batch, loss, lr, what
        self.backoffs = 0

    def __str__(self):
        if not self.backoffs:
            return self.message
        tries = "back-off" if self.backoffs == 1 else "back-offs"
        return (f"training diverged: {self.what} at epoch {self.epoch + 1}, batch "
                f"{self.batch + 1}, after {self.backoffs} learning-rate {tries} (down to "
                f"{self.lr:g}) did not help: start again with a smaller learning rate")


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a batch (``Trainer.run(handle_signals=True)``).

    ``signum`` is the signal (None when another worker of a distributed run was
    interrupted), ``epoch`` and ``batch`` the position reached (``batch`` batches of
    epoch ``epoch`` done, 0-based epoch), ``checkpoint`` the checkpoint written then (or
    None), ``trainer`` the trainer, whose :meth:`Trainer.save_checkpoint` can still write one.
    """

    def __init__(self, signum, trainer, checkpoint=None):
        name = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(signum, "a signal")
        where = "" if checkpoint is None else f"; checkpoint saved to {checkpoint}"
        super().__init__(f"{name}: training stopped at epoch {trainer.epoch + 1}, "
                         f"batch {trainer.batch}{where}")
        self.signum, self.trainer, self.checkpoint = signum, trainer, checkpoint
        self.epoch, self.batch = trainer.epoch, trainer.batch


class SignalHandler:
    """SIGINT/SIGTERM ask ``trainer`` to stop after the current batch; a second signal
    raises KeyboardInterrupt at once. Installed only while training (in the main thread)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, trainer=None):
        self.trainer = trainer
        self.signum = None
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("handle_signals needs the main thread (Python delivers signals "
                             "there only)")
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.trainer is not None:
            self.trainer.request_stop()


class Trainer:
    """Mini-batch training whose position can be saved and restored after any batch.

    ``optimizer`` defaults to ``Adam(lr=1e-3)``; ``y`` is integer labels (N,) or class
    probabilities (N, M); ``sample_weight`` (N,) weights each row's loss (each batch's loss
    is ``Σ s_n L_n / Σ s_n``; a batch whose rows all weigh 0 is skipped); ``validation_data``
    is ``(X_val, y_val)`` or ``(X_val, y_val, sample_weight_val)`` (a weighted validation
    loss and accuracy). ``dropout`` (a :class:`~handgrad.model.Dropout`),
    ``label_smoothing``, ``max_norm``, ``augment`` (``augment(rows, rng)``, in place) and
    ``l2`` (scikit-learn's ``alpha``) regularise. A batch loss above ``max_loss`` (default
    ``10⁴ ln M`` for a softmax output; for the other outputs only a non-finite loss)
    counts as divergence. ``X`` may be a SciPy sparse matrix (kept sparse: batches are
    CSR rows). For a model whose output is not softmax, ``y`` is target rows (N, M).

    ``initial_epoch`` (as Keras's) starts the run at that epoch number: epoch ``e``'s
    shuffle is still epoch ``e``'s, so a model trained epoch by epoch by Trainers with
    ``initial_epoch=e, epochs=e + 1`` sees the batches one ``epochs=E`` run would.
    ``order``, a callable ``epoch -> permutation of the N rows``, replaces the seeded
    shuffle (the scikit-learn estimators pass scikit-learn's own).

    :meth:`run` trains; callbacks (:class:`~handgrad.callbacks.Callback`) see every
    epoch and batch. :meth:`from_config` builds a Trainer, its optimizer, schedules and
    early stopping from a :class:`~handgrad.config.TrainConfig`.

    To continue training a model (warm start), pass the same model and optimizer to a
    new Trainer: weights and optimizer state carry over; the new trainer's epochs count
    from 0 with the seed it is given.
    """

    #: Whether this process writes files (checkpoints, model files); data-parallel
    #: training has one writer.
    is_chief = True

    def __init__(self, model, X, y, *, optimizer=None, epochs=10, batch_size=128,
                 shuffle=True, seed=None, sample_weight=None, validation_data=None,
                 callbacks=(), max_loss=None, dropout=None, label_smoothing=0.0,
                 max_norm=None, augment=None, l2=0.0, config=None, initial_epoch=0,
                 order=None):
        if optimizer is None:
            optimizer = Adam()
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a handgrad.optim.Optimizer, got {optimizer!r}")
        _check_count("epochs", epochs, minimum=0)
        _check_count("batch_size", batch_size, minimum=1)
        _check_count("initial_epoch", initial_epoch, minimum=0)
        if order is not None and not callable(order):
            raise ValueError(f"order must be a callable epoch -> row permutation, got {order!r}")
        self._order = order  # another shuffle scheme (e.g. scikit-learn's), if given
        self.model, self.optimizer = model, optimizer
        self.epochs, self.shuffle = int(epochs), bool(shuffle)
        # (N, D) in the model's dtype, checked once here; ‖X‖² (or None) from that check
        self.X, self._x_norm2 = model.check_X_and_norm(X)
        self.target = model.check_y(y, self.X.shape[0])  # (N,) or (N, M)
        self.s = (None if sample_weight is None
                  else check_sample_weight(sample_weight, self.X.shape[0]))  # (N,)
        self.validation = None
        if validation_data is not None:
            if len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (X_val, y_val) or "
                                 "(X_val, y_val, sample_weight_val)")
            X_val = model.check_X(validation_data[0])
            self.validation = (X_val, model.check_y(validation_data[1], X_val.shape[0]))
            if len(validation_data) == 3 and validation_data[2] is not None:
                self.validation += (check_sample_weight(validation_data[2], X_val.shape[0]),)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (1 << 63))
        _check_count("seed", seed, minimum=0)
        self.history = History(seed=int(seed))
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be handgrad.callbacks.Callback instances, "
                                 f"got {cb!r}")
        # A batch loss above this is divergence, not learning: ln M is the loss of a
        # uniform guess, and 10^4 ln M nats means P(correct) ≈ M^(−10^4). The other
        # outputs' losses have no such scale: only a non-finite one is divergence.
        if max_loss is None:
            max_loss = (1e4 * math.log(model.n_classes) if model.config.output == "softmax"
                        else math.inf)
        self.max_loss = float(max_loss)
        # regularisation and augmentation (training time only)
        if dropout is not None and not isinstance(dropout, Dropout):
            raise ValueError(f"dropout must be a handgrad.model.Dropout, got {dropout!r}")
        self.dropout = dropout if dropout is not None and dropout.active else None
        if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
        if label_smoothing and self.target.ndim != 1:
            raise ValueError("label_smoothing needs integer labels, not probability rows")
        self.label_smoothing = float(label_smoothing)
        if max_norm is not None and not (isinstance(max_norm, (int, float)) and max_norm > 0):
            raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
        self.max_norm = max_norm
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
        self.l2 = float(l2)
        self.augment = augment
        N = self.X.shape[0]
        self.batch_size = min(int(batch_size), N)
        self.n_batches = -(-N // self.batch_size)
        self.config = config if config is not None else self._describe()
        # position: the next batch to run, and the running sums of the current epoch
        # (initial_epoch, as Keras's: a run continued from epoch e draws epoch e's order)
        self.epoch, self.batch = int(initial_epoch), 0
        self._sums = [0.0, 0.0, 0.0, 0.0]  # loss·w, correct·w, w, seconds
        self.stop_requested = False
        self.last_checkpoint = None  # the path of the last checkpoint written, if any
        self.update = self._make_update()
        self._gather = _BatchGatherer(self.X, self.target, self.s,
                                      model.n_classes if self.label_smoothing else 0,
                                      self.label_smoothing)

    @classmethod
    def from_config(cls, model, X, y, config, *, optimizer=None, validation_data=None,
                    sample_weight=None, callbacks=(), **kwargs):
        """A Trainer for ``config``: its optimizer (unless given), dropout, label
        smoothing, max-norm, L2 penalty, augmentation (needs ``model.preprocessor`` of
        2-D images), learning-rate schedule and early stopping.

        The schedule and early stopping follow ``callbacks``. Settings that cannot work
        together raise :class:`~handgrad.config.ConfigError` naming them.
        """
        from .schedules import CosineWithWarmup, EarlyStopping, ReduceOnPlateau, StepLR

        if optimizer is None:
            optimizer = make_optimizer(config.optimizer, config.lr, config.momentum,
                                       config.weight_decay, config.nesterov)
            config = config.replace(lr=optimizer.lr)  # the effective value, not None
        options = {"label_smoothing": config.label_smoothing, "max_norm": config.max_norm,
                   "l2": config.l2}
        if config.dropout or config.input_dropout:
            options["dropout"] = Dropout(config.input_dropout, config.dropout)
        if config.augment != "none":
            options["augment"] = _augmenter(model, config)
        extra = []
        if config.schedule == "step":
            extra.append(StepLR(optimizer, config.step_size, config.gamma))
        elif config.schedule == "cosine":
            if config.warmup_epochs >= config.epochs:
                raise ConfigError("{warmup_epochs} must be below {epochs}",
                                  warmup_epochs=config.warmup_epochs, epochs=config.epochs)
            extra.append(CosineWithWarmup(optimizer, config.epochs, config.warmup_epochs,
                                          min(config.min_lr, optimizer.lr)))
        elif config.schedule == "plateau":
            extra.append(ReduceOnPlateau(optimizer, factor=min(config.gamma, 0.99),
                                         patience=config.n_iter_no_change, tol=config.tol))
        if config.early_stopping:
            if validation_data is None:
                raise ConfigError("{early_stopping} needs validation data", early_stopping=None)
            extra.append(EarlyStopping(model, "val_loss", config.n_iter_no_change, config.tol))
        return cls(model, X, y, optimizer=optimizer, epochs=config.epochs,
                   batch_size=config.batch_size, shuffle=config.shuffle, seed=config.seed,
                   sample_weight=sample_weight, validation_data=validation_data,
                   callbacks=[*callbacks, *extra], config=config, **options, **kwargs)

    def _describe(self):
        """A :class:`TrainConfig` describing this trainer (None if its parts have no name)."""
        opt = self.optimizer
        name = next((k for k, c in OPTIMIZERS.items() if type(opt) is c), None)
        if name is None or (self.augment is not None and not hasattr(self.augment, "rotation")):
            return None
        described = {"epochs": self.epochs, "batch_size": self.batch_size,
                     "shuffle": self.shuffle, "seed": self.history.seed, "optimizer": name,
                     "lr": opt.lr, "weight_decay": getattr(opt, "weight_decay", 0.0),
                     "label_smoothing": self.label_smoothing, "max_norm": self.max_norm,
                     "l2": self.l2, "hidden": self.model.config.hidden,
                     "activation": self.model.config.activation,
                     "dtype": self.model.config.dtype, "dataset": ARRAYS}
        if name == "sgd":
            described |= {"momentum": opt.momentum, "nesterov": opt.nesterov}
        if self.dropout is not None:
            described |= {"dropout": self.dropout.hidden_rate,
                          "input_dropout": self.dropout.input_rate}
        if self.augment is not None:
            a = self.augment
            described |= {"augment": "elastic" if a.elastic_alpha else "affine",
                          "rotation": a.rotation, "zoom": a.scale, "shear": a.shear,
                          "translate": a.translate, "elastic_alpha": a.elastic_alpha,
                          "elastic_sigma": a.elastic_sigma}
        try:
            return TrainConfig(**described)
        except ValueError:
            return None

    def _make_update(self):
        return Update(self.model, self.optimizer)

    @property
    def finished(self):
        return self.epoch >= self.epochs or self.history.stopped_early

    def order(self, epoch):
        """The row order of ``epoch`` (N,), a function of the seed and epoch only
        (or what the ``order`` option returns for it)."""
        N = self.X.shape[0]
        if not self.shuffle:
            return np.arange(N)
        if self._order is not None:
            perm = np.asarray(self._order(epoch))
            if perm.shape != (N,) or not np.issubdtype(perm.dtype, np.integer):
                raise ValueError(f"order({epoch}) must return a permutation of the {N} rows, "
                                 f"got shape {perm.shape} and dtype {perm.dtype}")
            return perm
        return np.random.default_rng([self.history.seed, epoch]).permutation(N)

    # -- running -------------------------------------------------------------------

    def run(self, *, handle_signals=False):
        """Train until finished, stopped, or diverged; returns the :class:`History`.

        After a stop (:meth:`request_stop`, or a callback's :class:`StopTraining`)
        ``finished`` is False, and ``run`` (or a Trainer restored from a checkpoint)
        carries on. A divergence is offered to the callbacks (``on_divergence``: retry,
        stop, or raise); unhandled, :class:`DivergenceError` propagates.

        ``handle_signals=True`` makes SIGINT and SIGTERM stop training after the current
        batch (a second one stops at once): callbacks' ``on_stop`` run (a
        :class:`~handgrad.callbacks.BackupAndRestore` writes its checkpoint), then
        :class:`TrainingInterrupted` is raised.
        """
        check_flag("handle_signals", handle_signals)
        handler = SignalHandler(self) if handle_signals else None
        self.stop_requested = False
        with contextlib.ExitStack() as stack:
            if handler is not None:
                handler.install()
                stack.callback(handler.restore)
            for cb in self.callbacks:
                cb.on_train_begin(self)
            while True:
                try:
                    # overflow shows up as a DivergenceError instead of warnings
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        self._run_epochs()
                    break
                except DivergenceError as exc:
                    decision = next((d for d in (cb.on_divergence(exc) for cb in self.callbacks)
                                     if d is not None), None)
                    if decision == "retry":
                        continue
                    self._stopped(None if decision == "stop" else exc)
                    if decision == "stop":
                        return self.history
                    raise
            if self.finished:
                for cb in self.callbacks:
                    cb.on_train_end(self.history)
                return self.history
            self._stopped(None)
        interrupted = handler is not None and (handler.signum is not None or self._peer_stop())
        if interrupted:
            raise TrainingInterrupted(handler.signum, self, self.last_checkpoint)
        return self.history

    def _stopped(self, error):
        for cb in self.callbacks:
            cb.on_stop(self, error)

    def _run_epochs(self):
        while not self.finished:
            epoch = self.epoch
            order = self.order(epoch)
            if self.batch == 0:
                for cb in self.callbacks:
                    cb.on_epoch_begin(epoch, self.n_batches)
            t0 = time.perf_counter()
            try:
                while self.batch < self.n_batches:
                    i = self.batch
                    for cb in self.callbacks:
                        cb.on_batch_begin(i)  # e.g. a learning-rate schedule
                    xb, tb, sb = self._gather(self.batch_rows(order, i))  # (B, D), (B,)|(B, M)
                    if self.augment is not None or self.dropout is not None:
                        rng = np.random.default_rng([self.history.seed, epoch, i, 1])
                        if self.augment is not None:
                            self.augment(xb, rng)  # in place, on this batch's copy
                        if self.dropout is not None:
                            self.dropout.rng = rng
                    loss, batch_w, correct = self.train_batch(xb, tb, sb)
                    self._sums[0] += loss * batch_w
                    self._sums[1] = None if correct is None else self._sums[1] + correct
                    self._sums[2] += batch_w
                    self.batch += 1
                    try:
                        for cb in self.callbacks:
                            cb.on_batch_end(i, loss)
                    except StopTraining:
                        return
                    if self._agree_to_stop():  # e.g. Ctrl-C, on any worker
                        return
            finally:  # the epoch's time so far, however the loop ends
                self._sums[3] += time.perf_counter() - t0
            self._end_epoch(epoch)

    def train_batch(self, xb, tb, sb=None):
        """One step on a gathered batch: forward, loss, backward, update.

        Returns ``(loss, batch weight, weighted hits)``; raises :class:`DivergenceError`
        before anything is updated.
        """
        model = self.model
        ws = model.workspace(xb.shape[0])
        w, batch_w, l2 = self._loss_weights(xb, sb)  # 1/B or s/Σs; penalty coefficient
        if not batch_w:  # every row weighs 0: no gradient (and no accuracy to count)
            return 0.0, 0.0, (0.0 if model.config.classifies else None)
        model.forward(xb, ws, self.dropout)  # F1–F4
        loss = model.loss(ws, tb, w) + model.l2_penalty(ws, l2)  # F5 (+ penalty)
        loss, batch_w, hits = self._combine(loss, batch_w, self._hits(ws, tb, sb))
        if not loss <= self.max_loss:  # also catches a NaN loss
            raise DivergenceError(self.epoch, self.batch, loss, self.optimizer.lr)
        model.backward(ws, tb, w, self.dropout)  # B2, B5, B6: ∂L/∂Q of every layer
        if not self.update(ws, self._input_norm2(xb), l2):  # B3, B4, B7 and the step
            raise DivergenceError(self.epoch, self.batch, loss, self.optimizer.lr,
                                  grad_finite=False)
        if self.max_norm is not None:
            apply_max_norm(model, self.max_norm)
        return loss, batch_w, hits

    def _input_norm2(self, xb):
        """A bound on the first layer's ``‖input‖²`` for the gradient bound, or None.

        The whole training set's ``‖X‖²`` (from its finite check) bounds every batch's
        and costs nothing per step; an augmented batch is measured itself, now, while it
        is in cache; with input dropout the first layer sees another array, measured
        later instead.
        """
        if self.dropout is not None and self.dropout.input_rate:
            return None
        if self.augment is None and self._x_norm2 is not None:
            return self._x_norm2
        return square_norm(xb)

    # -- the parts a distributed trainer replaces ---------------------------------

    def batch_rows(self, order, i):
        """Row indices (into X) of batch ``i`` of an epoch whose row order is ``order``."""
        B = self.batch_size
        return order[i * B:(i + 1) * B]

    def _loss_weights(self, xb, sb):
        """``(w, batch weight, penalty coefficient)``: each row's share of the loss."""
        if sb is None:
            n = xb.shape[0]
            return 1.0 / n, float(n), (self.l2 / n if self.l2 else 0.0)
        total = float(sb.sum())
        if not total:
            return None, 0.0, 0.0
        w = (sb / total).astype(self.model.dtype)  # (B,)
        return w, total, (self.l2 / total if self.l2 else 0.0)

    def _combine(self, loss, batch_w, hits):
        """The batch's loss, weight and hits over every worker (here: one)."""
        return loss, batch_w, hits

    def _hits(self, ws, tb, sb):
        # The forward pass already holds this batch's outputs: train accuracy for free
        # (None for a regression output, which has no accuracy).
        return self.model._hits(ws.Q[-1], tb, sb)

    def _agree_to_stop(self):
        """After a batch: stop now? (``request_stop`` was called, e.g. on Ctrl-C)."""
        return self.stop_requested

    def _peer_stop(self):
        """Did another worker ask to stop? (never, with one)."""
        return False

    def request_stop(self):
        """Ask training to stop after the current batch (safe from a signal handler)."""
        self.stop_requested = True

    def _validate(self):
        X_val, y_val, *weights = self.validation
        return self.model.evaluate(X_val, y_val, sample_weight=weights[0] if weights else None)

    def _end_epoch(self, epoch):
        loss_w, correct_w, total_w, seconds = self._sums
        metrics = {"train_loss": loss_w / total_w if total_w else math.nan,
                   "train_accuracy": (None if correct_w is None
                                      else correct_w / total_w if total_w else math.nan)}
        if self.validation is not None:
            t0 = time.perf_counter()
            metrics["val_loss"], metrics["val_accuracy"] = self._validate()
            seconds += time.perf_counter() - t0
        metrics["epoch_time"] = seconds
        self.history.record(epoch, **metrics)
        self.epoch, self.batch = epoch + 1, 0
        self._sums = [0.0, 0.0, 0.0, 0.0]
        stop = False
        for cb in self.callbacks:
            stop = bool(cb.on_epoch_end(epoch, self.history)) or stop
        if stop and self.epoch < self.epochs:
            self.history.stopped_early = True

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self):
        """Position, running sums, history and callbacks' state (JSON values and arrays;
        the weights and the optimizer's state are saved separately)."""
        states = []
        for cb in self.callbacks:
            if hasattr(cb, "state_dict"):
                states.append(dict(cb.state_dict(), __callback__=type(cb).__name__))
            else:
                states.append(None)
        return {"epoch": self.epoch, "batch": self.batch, "epochs": self.epochs,
                "batch_size": self.batch_size, "n_rows": int(self.X.shape[0]),
                "data": self.data_fingerprint(),
                "shuffle": self.shuffle, "sums": list(self._sums),
                "history": self.history.to_dict(), "callbacks": states}

    def load_state_dict(self, state):
        """Continue from a saved position; the data and batch size must match."""
        for key, mine in (("n_rows", int(self.X.shape[0])), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle)):
            if state[key] != mine:
                raise ValueError(f"cannot resume{self._from()}: the checkpoint has "
                                 f"{key}={state[key]!r} but this run has {mine!r}; resume "
                                 f"with the same data and settings, or start afresh (another "
                                 f"checkpoint folder, or resume=False)")
        saved = state.get("data")  # absent in checkpoints of handgrad before 0.3
        if saved is not None:
            mine = self.data_fingerprint()
            differ = [part for part in ("X", "y", "sample_weight")
                      if saved.get(part) != mine.get(part)]
            if differ:
                raise ValueError(
                    f"cannot resume{self._from()}: it was written training on other data "
                    f"(the training {', '.join(differ)} differ{'s' if len(differ) == 1 else ''}"
                    f" from this run's, though the row count is the same); resume with the "
                    f"same data, or start afresh: another checkpoint folder (checkpoint_dir, "
                    f"BackupAndRestore's backup_dir) or resume=False")
        # batch == n_batches: stopped after an epoch's last batch, before its end was
        # recorded; the resumed run records it first
        if not 0 <= state["batch"] <= self.n_batches:
            raise ValueError(f"cannot resume: batch {state['batch']} out of range")
        if int(state["epoch"]) > self.epochs:
            raise ValueError(f"cannot resume{self._from()}: it has trained "
                             f"{state['epoch']} epochs, more than this run's epochs="
                             f"{self.epochs}; pass epochs={state['epoch']} or more to "
                             f"continue it, or start afresh (another checkpoint folder, or "
                             f"resume=False) for a {self.epochs}-epoch run")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._sums = [None if v is None else float(v) for v in state["sums"]]
        self.history = History.from_dict(state["history"])
        _load_callback_states(self.callbacks, state.get("callbacks") or [])

    def data_fingerprint(self):
        """Hashes of the training data (X, targets, sample weights), saved in checkpoints
        so that a resume on other data is refused. Computed once per Trainer
        (BLAKE2b over the arrays' bytes, shape and dtype)."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = {"X": _hash_arrays(self.X), "y": _hash_arrays(self.target),
                                 "sample_weight": (None if self.s is None
                                                   else _hash_arrays(self.s))}
        return self._fingerprint

    def _from(self):
        source = getattr(self, "_resume_source", None)
        return "" if source is None else f" from {source}"

    def save_checkpoint(self, path):
        """Write a checkpoint (weights, optimizer state, this state, the config) atomically."""
        from .serialization import save_checkpoint

        return save_checkpoint(path, self.model, self.optimizer, self.state_dict(), self.config)

    def restore(self, checkpoint):
        """Continue from ``checkpoint`` (a path or a loaded
        :class:`~handgrad.serialization.Checkpoint`): weights, optimizer state, position,
        history and callbacks' state. The network and optimizer type must match.

        The learning rate is the one setting a resumed run may change: when this
        trainer's optimizer was built with another rate than the checkpoint's run
        (``ck.config.lr``), training continues at the new rate (schedules scaled with
        it), and :attr:`lr_changed` holds ``(the checkpoint's current rate, the new
        one)``. The optimizer's other hyper-parameters come from the checkpoint; where
        this trainer's differ, a :class:`ResumeWarning` says which were kept.
        """
        from .serialization import Checkpoint, load_checkpoint

        ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self._resume_source = getattr(ck, "path", None) or (
            None if isinstance(checkpoint, Checkpoint) else checkpoint)
        if ck.model.config != self.model.config:
            raise ValueError(f"cannot resume: the checkpoint holds {ck.model!r}, this run "
                             f"trains {self.model!r}")
        saved_type = ck.optimizer_state.get("type")
        if saved_type != type(self.optimizer).__name__:
            raise ValueError(f"cannot resume{self._from()}: the checkpoint was trained with "
                             f"the {saved_type} optimizer, this run uses "
                             f"{type(self.optimizer).__name__}; resume with optimizer="
                             f"{saved_type}(...), or start afresh (another checkpoint folder, "
                             f"or resume=False)")
        given = self.optimizer.hyperparameters()  # what this run's optimizer was built with
        if ck.model is not self.model:
            self.model.param_buffer[...] = ck.model.param_buffer
        self.optimizer.load_state_dict(ck.optimizer_state)
        self.load_state_dict(ck.trainer_state)
        self.lr_changed = None
        recorded = None if ck.config is None else ck.config.lr  # the run's own setting
        if recorded is not None and given["lr"] != recorded:
            self.lr_changed = (self._base_lr(), given["lr"])
            self._set_base_lr(given["lr"])
        saved = ck.optimizer_state["hyperparameters"]
        kept = [f"{name}={_plain(saved[name])!r} (not {_plain(value)!r})"
                for name, value in given.items()
                if name != "lr" and name in saved and _plain(saved[name]) != _plain(value)]
        if kept:
            import warnings

            warnings.warn(f"resuming from the checkpoint keeps its optimizer's "
                          f"{', '.join(kept)}: only the learning rate of a resumed run can "
                          f"change; start afresh for other settings", ResumeWarning,
                          stacklevel=2)
        return ck

    #: After :meth:`restore`: ``(old, new)`` where the learning rate was changed, else None.
    lr_changed = None

    def _base_lr(self):
        """The rate the run trains at before any schedule: a schedule's base, else the
        optimizer's."""
        schedule = next((cb for cb in self.callbacks if hasattr(cb, "base_lr")), None)
        return schedule.base_lr if schedule is not None else self.optimizer.lr

    def _set_base_lr(self, lr):
        """Continue at ``lr``: the optimizer's rate and every schedule scaled alike."""
        ratio = lr / self._base_lr()
        self.optimizer.lr *= ratio
        for cb in self.callbacks:
            if hasattr(cb, "scale_lr"):
                cb.scale_lr(ratio)


class ResumeWarning(UserWarning):
    """A setting given for a resumed run that the checkpoint's overrides."""


def _hash_arrays(a):
    """BLAKE2b (16 bytes, hex) of an array's shape, dtype and bytes; of a SciPy sparse
    matrix's format, shape and its data, indices and indptr arrays."""
    h = hashlib.blake2b(digest_size=16)
    if is_sparse(a):
        a = a.tocsr()
        h.update(f"sparse {a.shape} ".encode())
        parts = (a.data, a.indices, a.indptr)
    else:
        parts = (a,)
    for part in parts:
        part = np.ascontiguousarray(part)
        h.update(f"{part.shape} {part.dtype.str};".encode())
        h.update(memoryview(part).cast("B"))
    return h.hexdigest()


def check_flag(name, value):
    """A True/False option, refused when anything else (a "yes" is not a bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _plain(value):
    """A hyper-parameter as JSON gives it back (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def _load_callback_states(callbacks, saved):
    """Give each saved state to the callback it came from: by class name and order
    (``__callback__``), or for handgrad 0.1's checkpoints by the state's keys and order."""
    free = [cb for cb in callbacks if hasattr(cb, "load_state_dict")]
    for state in saved:
        if not isinstance(state, dict):
            continue
        state = dict(state)
        kind = state.pop("__callback__", None)
        for cb in free:
            if (type(cb).__name__ == kind if kind is not None
                    else set(cb.state_dict()) == set(state)):
                cb.load_state_dict(state)
                free.remove(cb)
                break


def apply_max_norm(model, c):
    """Max-norm: rescale each unit's incoming weight vector (a row of W) to norm ≤ c."""
    for l in range(1, model.n_layers + 1):
        W = model.params[f"W{l}"]  # (H, D)
        norms = np.sqrt(np.einsum("hd,hd->h", W, W))  # (H,)
        over = norms > c
        if over.any():
            W[over] *= (c / norms[over])[:, None]


def _augmenter(model, config):
    """The :class:`~handgrad.augment.Augmenter` of ``config`` for ``model``'s images."""
    from .augment import Augmenter

    prep = model.preprocessor
    shape = None if prep is None else prep.input_shape
    if shape is None or len(shape) != 2:
        raise ConfigError(f"{{augment}} needs image data; this data set's examples have "
                          f"shape {shape}", augment=None)
    if prep.scaling == "standardize":
        raise ConfigError("{augment} needs {scaling} divide or none (a zero background)",
                          augment=None, scaling=None)
    return Augmenter(shape, rotation=config.rotation, scale=config.zoom, shear=config.shear,
                     translate=config.translate,
                     elastic_alpha=config.elastic_alpha if config.augment == "elastic" else 0.0,
                     elastic_sigma=config.elastic_sigma, seed=config.seed)


class _BatchGatherer:
    """Copies a batch's rows into preallocated contiguous buffers (one set per size).

    With label smoothing, integer labels become rows ``(1 − ε) onehot + ε/M``.
    """

    def __init__(self, X, target, s, n_classes=0, smoothing=0.0):
        self.X, self.target, self.s = X, target, s
        self.n_classes, self.smoothing = n_classes, smoothing
        self.buffers = {}

    def __call__(self, idx):
        n = len(idx)
        bufs = self.buffers.get(n)
        if bufs is None:
            dense = not is_sparse(self.X)  # sparse rows are gathered into a new CSR
            bufs = self.buffers[n] = (
                np.empty((n, self.X.shape[1]), self.X.dtype) if dense else None,  # (B, D)
                np.empty((n, *self.target.shape[1:]), self.target.dtype),  # (B,) or (B, M)
                None if self.s is None else np.empty(n),  # (B,)
            )
        xb, tb, sb = bufs
        if is_sparse(self.X):
            xb = self.X[idx]  # (B, D) CSR: the batch's rows only, never dense
        else:
            # mode="clip" skips take's slower bounds-checking path; the indices come
            # from a permutation of range(N), so they are always in range.
            np.take(self.X, idx, axis=0, out=xb, mode="clip")
        np.take(self.target, idx, axis=0, out=tb, mode="clip")
        if sb is not None:
            np.take(self.s, idx, out=sb, mode="clip")
        if self.smoothing:
            rows = self.buffers.get(("smooth", n))
            if rows is None:
                rows = self.buffers[("smooth", n)] = np.empty((n, self.n_classes), self.X.dtype)
            rows.fill(self.smoothing / self.n_classes)  # (B, M)
            rows[np.arange(n), tb] += 1.0 - self.smoothing
            return xb, rows, sb
        return xb, tb, sb


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

"""The training loop: mini-batch gradient descent over the model's flat buffers.

Shape key: N rows of data, B batch, D inputs, M classes.

Reproducibility: the shuffle of epoch ``e`` is drawn from ``default_rng([seed, e])``,
so an epoch's order depends only on the seed and the epoch number. Same seed, same
data, same model: bit-identical weights. A :class:`Trainer` stopped after any batch
and restored from its :meth:`Trainer.state_dict` (with the model's weights and the
optimizer's state) continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import _blas
from .model import Dropout, _all_finite, _square_norm, check_sample_weight, is_sparse
from .optim import Adam, Optimizer

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


class Callback:
    """Hooks into training; override the ones you need.

    ``on_batch_end`` may raise :class:`StopTraining` to stop after that batch;
    ``on_epoch_end`` may return True to stop after that epoch.
    """

    def on_epoch_begin(self, epoch, n_batches):
        pass

    def on_batch_begin(self, batch):
        pass

    def on_batch_end(self, batch, loss):
        pass

    def on_epoch_end(self, epoch, history):
        return False

    def on_train_end(self, history):
        pass


class StopTraining(Exception):
    """Raised by a callback's ``on_batch_end`` to stop after the current batch."""


class DivergenceError(ArithmeticError):
    """The loss or the gradient became NaN or infinite.

    Raised before the optimizer step, so the model keeps its last finite weights
    and the trainer's position still points at the offending batch.
    """

    def __init__(self, epoch, batch, loss, lr, grad_finite=True):
        if not math.isfinite(loss):
            what = f"the loss became {loss}"
        elif math.isfinite(loss) and loss > 0 and grad_finite:
            what = f"the loss exploded to {loss:.3g}"
        else:
            what = "the gradient became non-finite"
        super().__init__(
            f"training diverged: {what} "
            f"at epoch {epoch + 1}, batch {batch + 1}; the learning rate ({lr:g}) is most "
            f"likely too high: try a smaller --lr, or --on-divergence backoff to halve it and "
            f"retry automatically")
        self.epoch, self.batch, self.loss, self.lr = epoch, batch, loss, lr


class Trainer:
    """Mini-batch training whose position can be saved and restored after any batch.

    Most users call :func:`fit`; the CLI uses a Trainer to checkpoint mid-run.
    """

    def __init__(self, model, X, y, *, optimizer=None, epochs=10, batch_size=128,
                 shuffle=True, seed=None, sample_weight=None, validation_data=None,
                 callbacks=(), max_loss=None, dropout=None, label_smoothing=0.0,
                 max_norm=None, augment=None, l2=0.0, initial_epoch=0, order=None):
        if optimizer is None:
            optimizer = Adam()
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a handgrad.optim.Optimizer, got {optimizer!r}")
        _check_count("epochs", epochs, minimum=0)
        _check_count("batch_size", batch_size, minimum=1)
        _check_count("initial_epoch", initial_epoch, minimum=0)
        if not (isinstance(l2, (int, float)) and math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a non-negative number, got {l2!r}")
        # scikit-learn's alpha: each batch adds ½ l2 Σ‖W‖² / Σ s (its total weight,
        # the batch size when unweighted) to its loss; weights only, not biases.
        self.l2 = float(l2)
        if order is not None and not callable(order):
            raise ValueError(f"order must be a callable epoch -> row permutation, got {order!r}")
        self._order = order  # another shuffle scheme (e.g. scikit-learn's), if given
        self.model, self.optimizer = model, optimizer
        self.epochs, self.shuffle = int(epochs), bool(shuffle)
        # (N, D) in the model's dtype, checked once here; ‖X‖² (or None) from that check
        self.X, self._x_norm2 = model._check_X(X)
        self.target = model.check_y(y, self.X.shape[0])  # (N,) or (N, M)
        self.s = (None if sample_weight is None
                  else check_sample_weight(sample_weight, self.X.shape[0]))  # (N,)
        self.validation = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            X_val = model.check_X(validation_data[0])
            self.validation = (X_val, model.check_y(validation_data[1], X_val.shape[0]))
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (1 << 63))
        self.history = History(seed=int(seed))
        self.callbacks = list(callbacks)
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
        self.augment = augment
        N = self.X.shape[0]
        self.batch_size = min(int(batch_size), N)
        self.n_batches = -(-N // self.batch_size)
        # position: the next batch to run, and the running sums of the current epoch
        # (initial_epoch, as Keras's: a run continued from epoch e draws epoch e's order)
        self.epoch, self.batch = int(initial_epoch), 0
        self._sums = [0.0, 0.0, 0.0, 0.0]  # loss·w, correct·w, w, seconds
        self.stop_requested = False
        self._blas_found = None  # handgrad._blas's routines for the model's dtype, once known
        self._gather = _BatchGatherer(self.X, self.target, self.s,
                                      model.n_classes if self.label_smoothing else 0,
                                      self.label_smoothing)

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

    def run(self):
        """Train until done or until a callback raises :class:`StopTraining`.

        Returns the :class:`History`. After a stop, ``finished`` is False and
        ``run`` (or a Trainer restored from ``state_dict``) carries on.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run()  # overflow shows up as a DivergenceError instead

    def _run(self):
        model = self.model
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
                    loss, batch_w, correct = self._train_step(xb, tb, sb, epoch, i)
                    if self.max_norm is not None:
                        apply_max_norm(model, self.max_norm)
                    self._sums[0] += loss * batch_w
                    self._sums[1] = None if correct is None else self._sums[1] + correct
                    self._sums[2] += batch_w
                    self.batch += 1
                    for cb in self.callbacks:
                        cb.on_batch_end(i, loss)
                    if self._agree_to_stop():
                        raise StopTraining
            except StopTraining:
                self._sums[3] += time.perf_counter() - t0
                return self.history
            except DivergenceError:
                self._sums[3] += time.perf_counter() - t0
                raise
            self._sums[3] += time.perf_counter() - t0
            self._end_epoch(epoch)
        for cb in self.callbacks:
            cb.on_train_end(self.history)
        return self.history

    # -- the parts a distributed trainer replaces ---------------------------------

    def batch_rows(self, order, i):
        """Row indices (into X) of batch ``i`` of an epoch whose row order is ``order``."""
        B = self.batch_size
        return order[i * B:(i + 1) * B]

    def _train_step(self, xb, tb, sb, epoch, i):
        """Gradient, divergence check and update of one batch.

        Returns ``(loss, batch weight, weighted hits)``; raises :class:`DivergenceError`
        before anything is updated. With SGD (any variant but Nesterov's) the update
        absorbs the weight-gradient GEMMs (:meth:`SGD.fused_step`, through
        :meth:`MLP._accumulate_grads`): the gradient is never written out, read back
        and swept again. That needs the gradient proven finite before it exists, which
        the norms of each layer's ∂L/∂Q and input do (:meth:`MLP._grads_bounded`);
        when they cannot, the step falls back to the gradient, its exact check and
        :meth:`Optimizer.step`.
        """
        model, optimizer = self.model, self.optimizer
        if sb is not None and not sb.any():  # only zero-weight rows: nothing to learn from
            return 0.0, 0.0, (0.0 if model.config.classifies else None)
        # ‖X‖², a factor of the gradient's bound: the whole training set's (from its
        # finite check) bounds every batch's and costs nothing per step; an augmented
        # batch is measured itself, now while it is in cache; with input dropout the
        # first layer sees another array, measured later instead.
        x2 = None
        if self.dropout is None or self.dropout.input_rate == 0:
            x2 = (self._x_norm2 if self.augment is None and self._x_norm2 is not None
                  else _square_norm(xb))
        fuse = self._fusable()
        if fuse:  # the weight gradients wait: they may go straight into the update
            loss, batch_w, correct = self._step_gradient(xb, tb, sb, weights=False)
        else:
            loss, batch_w, correct = self._step_gradient(xb, tb, sb)
        if not loss <= self.max_loss:  # also catches a NaN loss
            raise DivergenceError(epoch, i, loss, optimizer.lr)
        bounded = self._gradient_bounded(xb, x2)
        ws = model.workspace(xb.shape[0])
        penalty = {"l2": self.l2 / batch_w} if self.l2 else {}  # R1's gradient, if any
        if fuse and bounded:
            optimizer.fused_step(model.param_buffer,
                                 partial(model._accumulate_grads, ws, **penalty))
            return loss, batch_w, correct
        if fuse:
            model._weight_grads(ws, **penalty)
        if not (bounded or _all_finite(model.grad_buffer)):
            raise DivergenceError(epoch, i, loss, optimizer.lr, grad_finite=False)
        optimizer.step(model.param_buffer, model.grad_buffer)
        return loss, batch_w, correct

    def _fusable(self):
        """Can the optimizer take the weight-gradient GEMMs into its update?"""
        if self._blas_found is None:  # looked up once: the answer cannot change
            self._blas_found = _blas.available(self.model.dtype)
        return self.optimizer.can_fuse and self._blas_found

    def _gradient_bounded(self, xb, input_norm2):
        """True when the last backward's gradient is proven finite without reading it."""
        return self.model._grads_bounded(self.model.workspace(xb.shape[0]), input_norm2)

    def _step_gradient(self, xb, tb, sb, weights=True):
        """Loss and gradient of one batch; returns ``(loss, batch weight, weighted hits)``.

        ``weights=False`` stops after ∂L/∂Q of every layer, for a fused update.
        """
        model = self.model
        w = 1.0 / xb.shape[0] if sb is None else (sb / sb.sum()).astype(model.dtype)
        batch_w = float(xb.shape[0] if sb is None else sb.sum())
        loss = model._loss_and_deltas(xb, tb, w, self.dropout)
        if self.l2:  # the penalty ½ (l2 / Σ s) Σ‖W‖² (R1); its gradient joins ∂L/∂W
            loss += 0.5 * (self.l2 / batch_w) * model.weight_square_norm()
        if weights:
            penalty = {"l2": self.l2 / batch_w} if self.l2 else {}
            model._weight_grads(model.workspace(xb.shape[0]), **penalty)
        return loss, batch_w, self._hits(xb, tb, sb)

    def _hits(self, xb, tb, sb):
        # The forward pass already holds this batch's outputs: train accuracy for free
        # (None for a regression output).
        O = self.model.workspace(xb.shape[0]).Q[-1]  # (B, M)
        return self.model._hits(O, tb, sb)

    def _agree_to_stop(self):
        """After a batch: stop now? (``request_stop`` was called, e.g. on Ctrl-C)."""
        return self.stop_requested

    def request_stop(self):
        """Ask training to stop after the current batch (safe from a signal handler)."""
        self.stop_requested = True

    def _validate(self):
        return self.model.evaluate(*self.validation)

    def _end_epoch(self, epoch):
        loss_w, correct_w, total_w, seconds = self._sums
        metrics = {"train_loss": loss_w / total_w,
                   "train_accuracy": None if correct_w is None else correct_w / total_w}
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
        """Position, running sums and history (JSON-serialisable; weights and
        optimizer state are saved separately)."""
        return {"epoch": self.epoch, "batch": self.batch, "epochs": self.epochs,
                "batch_size": self.batch_size, "n_rows": int(self.X.shape[0]),
                "shuffle": self.shuffle, "sums": list(self._sums),
                "history": self.history.to_dict(),
                "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None
                              for cb in self.callbacks]}

    def load_state_dict(self, state):
        """Continue from a saved position; the data and batch size must match."""
        for key, mine in (("n_rows", int(self.X.shape[0])), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle)):
            if state[key] != mine:
                raise ValueError(f"cannot resume: the checkpoint has {key}={state[key]!r} but "
                                 f"this run has {mine!r}; resume with the same data and "
                                 f"settings")
        if not 0 <= state["batch"] < self.n_batches:
            raise ValueError(f"cannot resume: batch {state['batch']} out of range")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._sums = [None if v is None else float(v) for v in state["sums"]]
        self.history = History.from_dict(state["history"])
        saved = state.get("callbacks") or []
        for cb, cb_state in zip(self.callbacks, saved):
            if cb_state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(cb_state)


def fit(model, X, y, *, optimizer=None, epochs=10, batch_size=128, shuffle=True, seed=None,
        sample_weight=None, validation_data=None, callbacks=(), comm=None, **options):
    """Train ``model`` in place by mini-batch gradient descent; returns a :class:`History`.

    ``y`` is integer labels (N,) or class probabilities (N, M). ``optimizer``
    defaults to ``Adam(lr=1e-3)``. ``validation_data`` is ``(X_val, y_val)``.
    Each batch's loss is its own weighted mean (``Σ s_n L_n / Σ s_n``). With SGD
    (but Nesterov's) each update absorbs the products of the large weight matrices,
    so their part of ``model.grads`` is not filled during training.
    ``options`` are :class:`Trainer`'s: ``dropout``, ``label_smoothing``,
    ``max_norm``, ``augment``, ``max_loss``.

    With an MPI communicator ``comm`` (e.g. ``MPI.COMM_WORLD``, under mpiexec),
    training is data-parallel: every rank passes the same ``X``, ``y`` (and
    validation data), keeps only its shard and its share of the validation rows,
    and ends with the same weights (see :mod:`handgrad.distributed`; the option
    ``virtual_shards`` sets the shard count, 12 by default).
    """
    if comm is not None:
        from .distributed import fit_distributed

        return fit_distributed(model, X, y, comm=comm, optimizer=optimizer, epochs=epochs,
                               batch_size=batch_size, seed=seed, sample_weight=sample_weight,
                               validation_data=validation_data, callbacks=callbacks, **options)
    trainer = Trainer(model, X, y, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                      shuffle=shuffle, seed=seed, sample_weight=sample_weight,
                      validation_data=validation_data, callbacks=callbacks, **options)
    return trainer.run()


def apply_max_norm(model, c):
    """Max-norm: rescale each unit's incoming weight vector (a row of W) to norm ≤ c."""
    for l in range(1, model.n_layers + 1):
        W = model.params[f"W{l}"]  # (H, D)
        norms = np.sqrt(np.einsum("hd,hd->h", W, W))  # (H,)
        over = norms > c
        if over.any():
            W[over] *= (c / norms[over])[:, None]


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
            bufs = self.buffers[n] = (
                None if is_sparse(self.X) else np.empty((n, self.X.shape[1]), self.X.dtype),  # (B, D)
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

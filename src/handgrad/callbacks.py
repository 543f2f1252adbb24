"""Training callbacks: the hooks, and the run-level features named as Keras names them.

- :class:`BackupAndRestore`: a resumable checkpoint (weights, optimizer state, position,
  history, callbacks' state) written atomically after every epoch and when training stops
  early (a stop request, a signal, a divergence); with ``resume`` it restores one before
  training, so the run ends bit-identical to an uninterrupted one.
- :class:`ModelCheckpoint`: the model file (``handgrad.save``) after every epoch, or only
  when a monitored metric improved.
- :class:`TerminateOnNaN`: a NaN, infinite or exploding loss (or gradient) ends training
  quietly, keeping the last finite weights, instead of raising
  :class:`~handgrad.train.DivergenceError`.
- :class:`LearningRateBackoff`: on divergence, go back to the end of the last epoch and
  retry with the learning rate multiplied by ``factor``, up to ``max_backoffs`` times.

``handgrad.fit(checkpoint_dir=..., resume=..., on_divergence=...)`` adds the first and the
last for you. A :class:`~handgrad.train.Trainer` calls the hooks in list order.
"""

from __future__ import annotations

import math
from pathlib import Path

from ._atomic import check_writable, remove_stale_temporaries

CHECKPOINT_NAME = "checkpoint.safetensors"


def checkpoint_file(path):
    """``path``, or for a folder the checkpoint in it (``folder/checkpoint.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            from .serialization import ModelFileError

            raise ModelFileError(f"{path}: a folder without a {CHECKPOINT_NAME}; give the "
                                 f"checkpoint file (the {CHECKPOINT_NAME} in the run's "
                                 f"checkpoint folder)")
        path = path / CHECKPOINT_NAME
    return path


class Callback:
    """Hooks into training; override the ones you need.

    - ``on_train_begin(trainer)``: before the first batch of every :meth:`Trainer.run`.
    - ``on_epoch_begin(epoch, n_batches)``, ``on_batch_begin(batch)``.
    - ``on_batch_end(batch, loss)``: may raise :class:`StopTraining` to stop after it.
    - ``on_epoch_end(epoch, history)``: may return True to stop after that epoch (training
      then counts as finished, ``history.stopped_early``).
    - ``on_divergence(error)``: the loss or gradient of a batch was not finite, before any
      update; return ``"retry"`` after restoring a state to continue from, ``"stop"`` to end
      training quietly, or None to let the :class:`~handgrad.train.DivergenceError` propagate
      (the first callback that answers decides).
    - ``on_train_end(history)``: training finished.
    - ``on_stop(trainer, error)``: training ended before finishing: a stop request or signal
      (``error`` None) or an error about to propagate; the model holds the last finite weights.

    A callback with ``state_dict()`` / ``load_state_dict(state)`` has its state saved in
    checkpoints and restored on resume (arrays travel as tensors).
    """

    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, epoch, n_batches):
        pass

    def on_batch_begin(self, batch):
        pass

    def on_batch_end(self, batch, loss):
        pass

    def on_epoch_end(self, epoch, history):
        return False

    def on_divergence(self, error):
        return None

    def on_train_end(self, history):
        pass

    def on_stop(self, trainer, error):
        pass


class StopTraining(Exception):
    """Raised by a callback's ``on_batch_end`` to stop after the current batch."""


class BackupAndRestore(Callback):
    """Write a resumable checkpoint after every epoch and whenever training stops early.

    The checkpoint is ``backup_dir/filename`` (the folder is created as needed). Before
    training the folder is probed for writability and temporaries that a killed write
    left behind are removed.

    ``resume``: False starts afresh; True continues from the checkpoint in ``backup_dir`` when
    there is one (and starts afresh when there is none, so a script killed at any moment
    can simply be run again); a path (or a loaded :class:`~handgrad.serialization.Checkpoint`)
    continues from that checkpoint, which must exist. The model, optimizer and callbacks
    must be built as for the original run, and trained on the same data (the checkpoint
    holds a fingerprint of it; a resume on other data is refused); the restored run ends
    bit-identical to it. Through ``MLPClassifier``/``MLPRegressor(callbacks=[...])`` the
    estimator's per-epoch state (``n_iter_``, ``t_``, ``loss_curve_``, the stopping rule,
    the validation scores, the adaptive rate) and scikit-learn's shuffle generator are
    restored too, so a killed ``fit`` run again ends as the uninterrupted one.

    ``every_epoch=False`` writes only when training stops early. ``path`` is the file;
    ``last_written`` the path of the last checkpoint this callback wrote (or None).
    """

    def __init__(self, backup_dir, *, resume=False, every_epoch=True, filename=CHECKPOINT_NAME):
        self.path = Path(backup_dir) / filename
        self.resume, self.every_epoch = resume, bool(every_epoch)
        self.last_written = None
        self.restored_from = None
        self._trainer = None
        self._restored = False

    def on_train_begin(self, trainer):
        self._trainer = trainer
        if trainer.is_chief:
            check_writable(self.path, "file", create_folder=True)
            remove_stale_temporaries(self.path)  # left by a run killed mid-write
        if not self._restored:  # a second run() continues where the first stopped
            self._restored = True
            source = self.resume
            if source is True:
                source = self.path if self.path.exists() else None
            elif isinstance(source, (str, Path)):
                source = checkpoint_file(source)
            if source not in (None, False):
                trainer.restore(source)
                self.restored_from = source
        if trainer.is_chief:
            from .serialization import CHECKPOINT_FORMAT, check_model_path

            # another file under the checkpoint's name is refused now, not after an epoch
            check_model_path(self.path, CHECKPOINT_FORMAT)

    def _write(self, trainer):
        if trainer.is_chief:  # every worker holds the same state: one writer
            self.last_written = trainer.save_checkpoint(self.path)
        else:
            self.last_written = self.path
        trainer.last_checkpoint = self.last_written

    def on_epoch_end(self, epoch, history):
        if self.every_epoch:
            self._write(self._trainer)
        return False

    def on_stop(self, trainer, error):
        self._write(trainer)


class ModelCheckpoint(Callback):
    """Save the model file (``handgrad.save``) after each epoch.

    ``filepath`` may hold ``{epoch}`` and metric fields, e.g.
    ``"runs/model-{epoch:03d}-{val_loss:.4f}.safetensors"``. With ``save_best_only`` the
    file is written only when ``monitor`` improved on the best so far (lower is better for
    losses, higher for accuracies). The best value is part of checkpoints.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False):
        if monitor not in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            raise ValueError(f"cannot monitor {monitor!r}; choose train_loss, train_accuracy, "
                             f"val_loss or val_accuracy")
        self.filepath, self.monitor = str(filepath), monitor
        self.save_best_only = bool(save_best_only)
        self.best = None
        self.last_saved = None
        self._trainer = None

    def on_train_begin(self, trainer):
        self._trainer = trainer
        if trainer.is_chief:
            check_writable(self.filepath, "file", create_folder=True)

    def on_epoch_end(self, epoch, history):
        metrics = history.last()
        value = metrics.get(self.monitor)
        if self.save_best_only:
            if value is None:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor}, which this run "
                                 f"does not compute (no validation data?)")
            v = -value if self.monitor.endswith("accuracy") else value
            if self.best is not None and not v < self.best:
                return False
            self.best = v
        fields = {k: (math.nan if v is None else v) for k, v in metrics.items()}
        fields["epoch"] = epoch + 1
        path = Path(self.filepath.format(**fields))
        if self._trainer.is_chief:
            from .serialization import save

            save(self._trainer.model, path)
        self.last_saved = path
        return False

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]


class TerminateOnNaN(Callback):
    """End training quietly when the loss or gradient becomes NaN or infinite.

    Without it, :class:`~handgrad.train.Trainer` raises
    :class:`~handgrad.train.DivergenceError`. Either way no update with a non-finite
    gradient happens: the model keeps its last finite weights. ``error`` holds the
    divergence that ended training (None if none did).

    On ``MLPClassifier``/``MLPRegressor`` the fit then ends with a ``ConvergenceWarning``
    (instead of scikit-learn's ``ValueError``), ``n_iter_`` counting the diverged epoch
    and ``loss_`` NaN, as scikit-learn records a diverged epoch.
    """

    def __init__(self):
        self.error = None

    def on_train_begin(self, trainer):
        self.error = None  # each run's own

    def on_divergence(self, error):
        self.error = error
        return "stop"


class LearningRateBackoff(Callback):
    """On divergence, restore the end of the last epoch and retry with ``lr × factor``.

    Up to ``max_backoffs`` times in a run; after that the model goes back to the end of
    the last complete epoch once more (a checkpoint written then continues from sound
    weights) and the :class:`~handgrad.train.DivergenceError` propagates, its
    ``backoffs`` set. Learning-rate
    schedules are scaled with the optimizer (``scale_lr``). ``report(error, trainer)``, if
    given, is called after each back-off (the command line prints a line there).
    """

    def __init__(self, factor=0.5, max_backoffs=5, report=None):
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        self.factor, self.max_backoffs, self.report = float(factor), int(max_backoffs), report
        self.backoffs = 0
        self.scale = 1.0  # factor ** backoffs: what every learning rate has been scaled by
        self._trainer = None
        self._snapshot = None

    def on_train_begin(self, trainer):
        self._trainer = trainer
        self._snapshot = None  # taken before the first batch, after any restore

    def on_batch_begin(self, batch):
        if self._snapshot is None:
            self._take()

    def on_epoch_end(self, epoch, history):
        self._snapshot = None  # retaken before the next batch, after every callback's epoch end
        return False

    def _take(self):
        t = self._trainer
        self._snapshot = (t.model.param_buffer.copy(), t.optimizer.state_dict(),
                          t.state_dict(), self.scale)

    def on_divergence(self, error):
        if self._snapshot is None:
            error.backoffs = self.backoffs
            return None
        if self.backoffs >= self.max_backoffs:
            # giving up: back to the end of the last complete epoch (at the last rate
            # tried), so that a checkpoint written now continues from sound weights
            error.backoffs = self.backoffs
            self._go_back()
            return None
        self.backoffs += 1
        self.scale *= self.factor
        self._go_back()
        if self.report is not None:
            self.report(error, self._trainer)
        return "retry"

    def _go_back(self):
        """Restore the snapshot, with every rate scaled by the back-offs since it."""
        t = self._trainer
        params, opt_state, trainer_state, scale_then = self._snapshot
        t.model.param_buffer[...] = params
        t.optimizer.load_state_dict(opt_state)
        t.load_state_dict(trainer_state)  # callbacks too: a schedule's state comes back
        relative = self.scale / scale_then  # the back-offs since the snapshot, this one too
        t.optimizer.lr *= relative
        for cb in t.callbacks:
            if cb is not self and hasattr(cb, "scale_lr"):
                cb.scale_lr(relative)

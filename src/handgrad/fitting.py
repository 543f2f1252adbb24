"""``handgrad.fit``: train a model on arrays in one call, with the run-level features.

Checkpoints, resumption, the divergence policy and signal handling are callbacks of
the one training loop (:class:`~handgrad.train.Trainer`); ``fit`` adds them from its
arguments, and hands data-parallel runs to :mod:`handgrad.distributed`.
"""

from __future__ import annotations

import sys

from .callbacks import BackupAndRestore, Callback, LearningRateBackoff, checkpoint_file
from .config import DIVERGENCE_POLICIES
from .train import Trainer, check_flag

MAX_BACKOFFS = 5
#: What ``**options`` may hold: :class:`~handgrad.train.Trainer`'s options, and with
#: ``comm`` :class:`~handgrad.distributed.DistributedTrainer`'s.
TRAINER_OPTIONS = ("dropout", "label_smoothing", "max_norm", "augment", "l2", "max_loss",
                   "initial_epoch", "order")
DISTRIBUTED_OPTIONS = ("virtual_shards", "blas_threads")


def fit(model, X, y, *, optimizer=None, epochs=10, batch_size=128, shuffle=True, seed=None,
        sample_weight=None, validation_data=None, callbacks=(), checkpoint_dir=None,
        resume=None, on_divergence="stop", handle_signals=False, comm=None, verbose=False,
        **options):
    """Train ``model`` in place by mini-batch gradient descent; returns a :class:`History`.

    ``y`` is integer labels (N,) or class probabilities (N, M). ``optimizer``
    defaults to ``Adam(lr=1e-3)``. ``validation_data`` is ``(X_val, y_val)``.
    Each batch's loss is its own weighted mean (``Σ s_n L_n / Σ s_n``). With SGD
    (but Nesterov's) each update absorbs the products of the large weight matrices,
    so their part of ``model.grads`` is not filled during training.
    ``options`` are :class:`~handgrad.train.Trainer`'s: ``dropout``,
    ``label_smoothing``, ``max_norm``, ``augment``, ``l2``, ``max_loss``,
    ``initial_epoch`` and ``order`` (a callable ``epoch -> permutation of the N rows``
    replacing the seeded shuffle, e.g. :class:`handgrad.sklearn.ScikitLearnOrder`).

    Run-level features (each also a callback, :mod:`handgrad.callbacks`):

    - ``checkpoint_dir``: write ``checkpoint.safetensors`` there atomically after every
      epoch and when training stops early (:class:`BackupAndRestore`); the folder is
      created and probed for writability first, and temporaries left by a killed
      write are removed.
    - ``resume``: True continues from the checkpoint in ``checkpoint_dir`` if there is
      one (else starts afresh: a script killed at any moment can simply be run again);
      a path continues from that checkpoint (a folder: its ``checkpoint.safetensors``). Pass the same data, model architecture,
      optimizer and settings: the run ends with weights bit-identical to an
      uninterrupted one.
    - ``on_divergence``: ``"stop"`` raises :class:`~handgrad.train.DivergenceError` (the
      model keeps its last finite weights, also written to the checkpoint);
      ``"backoff"`` halves the learning rate and retries from the end of the last
      epoch, up to 5 times (:class:`LearningRateBackoff`).
    - ``handle_signals``: SIGINT (Ctrl-C) and SIGTERM stop training after the current
      batch, write the checkpoint, and raise :class:`~handgrad.train.TrainingInterrupted`
      (a second signal stops at once).
    - ``verbose``: True prints what the run does on standard output: where it resumed
      (and a changed learning rate), each learning-rate back-off, and one line per
      epoch (loss, accuracy, validation loss and accuracy, seconds).

    Resuming keeps the checkpoint's settings but the learning rate: an optimizer built
    with another rate than the checkpoint's run continues at that rate; its other
    hyper-parameters, where they differ, are the checkpoint's, with a
    :class:`~handgrad.train.ResumeWarning` saying so.

    With an MPI communicator ``comm`` (e.g. ``MPI.COMM_WORLD``, under mpiexec),
    training is data-parallel: every rank passes the same ``X``, ``y`` (and
    validation data), keeps only its shard and its share of the validation rows,
    and ends with the same weights (see :mod:`handgrad.distributed`; the option
    ``virtual_shards`` sets the shard count, 12 by default, and ``blas_threads`` each
    rank's BLAS threads, by default the node's cores divided by the ranks on it). Rank 0
    writes the checkpoints.
    """
    accepted = TRAINER_OPTIONS + (DISTRIBUTED_OPTIONS if comm is not None else ())
    unknown = [name for name in options if name not in accepted]
    if unknown:
        import inspect

        named = [p.name for p in inspect.signature(fit).parameters.values()
                 if p.kind is p.KEYWORD_ONLY]
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}; it takes "
                        f"{', '.join(named)} and the training options "
                        f"{', '.join(TRAINER_OPTIONS)} (with comm also "
                        f"{', '.join(DISTRIBUTED_OPTIONS)})")
    if on_divergence not in DIVERGENCE_POLICIES:
        raise ValueError(f"on_divergence must be one of {', '.join(DIVERGENCE_POLICIES)}, "
                         f"got {on_divergence!r}")
    check_flag("handle_signals", handle_signals)
    if resume is True and checkpoint_dir is None:
        raise ValueError("resume=True continues from the checkpoint in checkpoint_dir: "
                         "pass checkpoint_dir (or a checkpoint path as resume)")
    callbacks = list(callbacks)
    report = _Report(epochs) if verbose and (comm is None or comm.rank == 0) else None
    if on_divergence == "backoff":
        callbacks.append(LearningRateBackoff(0.5, MAX_BACKOFFS,
                                             report=None if report is None else report.backoff))
    backup = None
    if checkpoint_dir is not None:
        backup = BackupAndRestore(checkpoint_dir, resume=resume or False)
    elif resume not in (None, False):  # writes back to the checkpoint it resumed from
        path = checkpoint_file(resume)  # a run's folder: its checkpoint.safetensors
        backup = BackupAndRestore(path.parent, resume=path, every_epoch=False,
                                  filename=path.name)
    if backup is not None:
        callbacks.append(backup)
    if report is not None:  # after the restore, to say where the run resumed
        report.backup = backup
        callbacks.append(report)
    if comm is not None:
        from .distributed import fit_distributed

        return fit_distributed(model, X, y, comm=comm, optimizer=optimizer, epochs=epochs,
                               batch_size=batch_size, seed=seed, sample_weight=sample_weight,
                               validation_data=validation_data, callbacks=callbacks,
                               handle_signals=handle_signals, **options)
    trainer = Trainer(model, X, y, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                      shuffle=shuffle, seed=seed, sample_weight=sample_weight,
                      validation_data=validation_data, callbacks=callbacks, **options)
    return trainer.run(handle_signals=handle_signals)


class _Report(Callback):
    """``fit(verbose=True)``: the run's events and one line per epoch, on stdout."""

    def __init__(self, epochs, stream=None):
        self.epochs, self.stream = epochs, stream
        self.backup = None
        self._said_resume = False

    def _print(self, text):
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_begin(self, trainer):
        backup = self.backup
        if backup is None or backup.restored_from is None or self._said_resume:
            return
        self._said_resume = True
        lr = ("" if trainer.lr_changed is None else
              f" with learning rate {trainer.lr_changed[1]:g} (was {trainer.lr_changed[0]:g})")
        if trainer.finished:
            self._print(f"resumed from {backup.restored_from}: the run is complete "
                        f"({trainer.epoch} of {trainer.epochs} epochs); nothing to train")
        else:
            self._print(f"resuming from {backup.restored_from} at epoch {trainer.epoch + 1}, "
                        f"batch {trainer.batch + 1}{lr}")

    def backoff(self, error, trainer):
        self._print(f"diverged at epoch {error.epoch + 1}, batch {error.batch + 1}: retrying "
                    f"from epoch {trainer.epoch + 1} with learning rate "
                    f"{trainer.optimizer.lr:g}")

    def on_epoch_end(self, epoch, history):
        m = history.last()
        width = len(str(self.epochs))
        line = f"epoch {m['epoch'] + 1:>{width}}/{self.epochs}  loss {m['train_loss']:.6f}"
        if m.get("train_accuracy") is not None:
            line += f"  acc {m['train_accuracy']:.4f}"
        if m.get("val_loss") is not None:
            line += f"  val_loss {m['val_loss']:.6f}"
            if m.get("val_accuracy") is not None:
                line += f"  val_acc {m['val_accuracy']:.4f}"
        self._print(line + f"  {m['epoch_time']:.2f}s")
        return False

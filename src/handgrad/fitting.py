"""``handgrad.fit``: train a model on arrays in one call, with the run-level features.

Checkpoints, resumption, the divergence policy and signal handling are callbacks of
the one training loop (:class:`~handgrad.train.Trainer`); ``fit`` adds them from its
arguments, and hands data-parallel runs to :mod:`handgrad.distributed`.
"""

from __future__ import annotations

from pathlib import Path

from .callbacks import BackupAndRestore, LearningRateBackoff
from .config import DIVERGENCE_POLICIES
from .train import Trainer

MAX_BACKOFFS = 5


def fit(model, X, y, *, optimizer=None, epochs=10, batch_size=128, shuffle=True, seed=None,
        sample_weight=None, validation_data=None, callbacks=(), checkpoint_dir=None,
        resume=None, on_divergence="stop", handle_signals=False, comm=None, **options):
    """Train ``model`` in place by mini-batch gradient descent; returns a :class:`History`.

    ``y`` is integer labels (N,) or class probabilities (N, M). ``optimizer``
    defaults to ``Adam(lr=1e-3)``. ``validation_data`` is ``(X_val, y_val)``.
    Each batch's loss is its own weighted mean (``Σ s_n L_n / Σ s_n``). With SGD
    (but Nesterov's) each update absorbs the products of the large weight matrices,
    so their part of ``model.grads`` is not filled during training.
    ``options`` are :class:`~handgrad.train.Trainer`'s: ``dropout``,
    ``label_smoothing``, ``max_norm``, ``augment``, ``l2``, ``max_loss``.

    Run-level features (each also a callback, :mod:`handgrad.callbacks`):

    - ``checkpoint_dir``: write ``checkpoint.safetensors`` there atomically after every
      epoch and when training stops early (:class:`BackupAndRestore`); the folder is
      created and probed for writability first, and temporaries left by a killed
      write are removed.
    - ``resume``: True continues from the checkpoint in ``checkpoint_dir`` if there is
      one (else starts afresh: a script killed at any moment can simply be run again);
      a path continues from that checkpoint. Pass the same data, model architecture,
      optimizer and settings: the run ends with weights bit-identical to an
      uninterrupted one.
    - ``on_divergence``: ``"stop"`` raises :class:`~handgrad.train.DivergenceError` (the
      model keeps its last finite weights, also written to the checkpoint);
      ``"backoff"`` halves the learning rate and retries from the end of the last
      epoch, up to 5 times (:class:`LearningRateBackoff`).
    - ``handle_signals``: SIGINT (Ctrl-C) and SIGTERM stop training after the current
      batch, write the checkpoint, and raise :class:`~handgrad.train.TrainingInterrupted`
      (a second signal stops at once).

    With an MPI communicator ``comm`` (e.g. ``MPI.COMM_WORLD``, under mpiexec),
    training is data-parallel: every rank passes the same ``X``, ``y`` (and
    validation data), keeps only its shard and its share of the validation rows,
    and ends with the same weights (see :mod:`handgrad.distributed`; the option
    ``virtual_shards`` sets the shard count, 12 by default, and ``blas_threads`` each
    rank's BLAS threads, by default the node's cores divided by the ranks on it). Rank 0
    writes the checkpoints.
    """
    if on_divergence not in DIVERGENCE_POLICIES:
        raise ValueError(f"on_divergence must be one of {', '.join(DIVERGENCE_POLICIES)}, "
                         f"got {on_divergence!r}")
    if resume is True and checkpoint_dir is None:
        raise ValueError("resume=True continues from the checkpoint in checkpoint_dir: "
                         "pass checkpoint_dir (or a checkpoint path as resume)")
    callbacks = list(callbacks)
    if on_divergence == "backoff":
        callbacks.append(LearningRateBackoff(0.5, MAX_BACKOFFS))
    if checkpoint_dir is not None:
        callbacks.append(BackupAndRestore(checkpoint_dir, resume=resume or False))
    elif resume not in (None, False):  # writes back to the checkpoint it resumed from
        path = Path(resume)
        callbacks.append(BackupAndRestore(path.parent, resume=path, every_epoch=False,
                                          filename=path.name))
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

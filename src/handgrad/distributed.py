"""Synchronous data-parallel training over MPI (needs mpi4py).

The loss is a weighted mean over examples, so the gradient of a global batch is the
weighted sum of its parts' gradients: every rank computes the gradient of its part
of the batch (weighted so the parts add up), one in-place ``Allreduce`` on the flat
gradient buffer sums them, and every rank applies the same optimizer step. Weights
stay identical on all ranks without ever being sent.

Batches that do not depend on the number of ranks. The training rows are cut into
``V`` contiguous *virtual shards* (``V`` = ``virtual_shards``, default 12); each epoch,
shard ``v`` shuffles its own rows with ``default_rng([seed, epoch, v])`` and gives
``B_v`` of them to every global batch (the ``B`` rows of a batch split as evenly as
possible over the ``V`` shards). Ranks own whole shards (contiguous groups, so uneven
counts are fine as long as ranks ≤ V), and so a rank reads only its shards' rows
(:func:`local_shard`, over a :class:`~handgrad.datasets.DataSource`). Any number of
ranks up to ``V`` — one included — sees exactly the same global batches: the weights
equal those of single-process training up to the rounding of the gradient sum (the
order in which the parts are added). With ``V = 1`` on one rank the order is
:class:`~handgrad.train.Trainer`'s own.

Shape key: N training rows in all, n this rank's rows, B global batch, D inputs.
"""

from __future__ import annotations

import sys
import time
import traceback
from types import SimpleNamespace

import numpy as np

from ._requirements import MissingPackageError
from .config import ConfigError
from .datasets import DataSource, PreparedData, open_dataset, validation_split
from ._threads import limit_blas_threads
from .train import Trainer
from .update import Update

DEFAULT_VIRTUAL_SHARDS = 12


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingPackageError("distributed training needs mpi4py: pip install "
                                  "'handgrad[mpi]'", ["mpi"]) from None
    return MPI


class ShardLayout:
    """Which rows each virtual shard and each rank holds, and each shard's batch share."""

    def __init__(self, n_rows, batch_size, virtual_shards, size):
        if virtual_shards < 1:
            raise ValueError(f"virtual_shards must be at least 1, got {virtual_shards}")
        if size > virtual_shards:
            raise ConfigError(f"{size} ranks but only {virtual_shards} virtual shards: each "
                              f"rank needs at least one; raise {{virtual_shards}}",
                              virtual_shards=None)
        if n_rows < virtual_shards:
            raise ValueError(f"{n_rows} training rows cannot fill {virtual_shards} shards")
        self.n_rows, self.V, self.size = int(n_rows), int(virtual_shards), int(size)
        self.batch_size = min(int(batch_size), self.n_rows)
        bounds = np.linspace(0, n_rows, self.V + 1).astype(np.int64)  # as np.array_split
        self.shard_start, self.shard_stop = bounds[:-1], bounds[1:]
        self.shard_rows = self.shard_stop - self.shard_start  # (V,)
        share = np.linspace(0, self.batch_size, self.V + 1).astype(np.int64)
        self.share = np.maximum(share[1:] - share[:-1], 1)  # (V,) rows per batch per shard
        self.n_batches = int(np.max(-(-self.shard_rows // self.share)))
        owners = np.linspace(0, self.V, size + 1).astype(np.int64)
        self.rank_shards = [range(owners[r], owners[r + 1]) for r in range(size)]

    def rank_rows(self, rank):
        """The contiguous row range ``(start, stop)`` that ``rank`` holds."""
        shards = self.rank_shards[rank]
        return int(self.shard_start[shards[0]]), int(self.shard_stop[shards[-1]])

    def batch_count(self, i):
        """Rows in global batch ``i`` (known to every rank without communication)."""
        lo = np.minimum(i * self.share, self.shard_rows)
        hi = np.minimum((i + 1) * self.share, self.shard_rows)
        return int((hi - lo).sum())


def split_rows(n_rows, comm):
    """An even contiguous split of ``n_rows`` (e.g. test rows): this rank's ``(start, stop)``."""
    bounds = np.linspace(0, n_rows, comm.size + 1).astype(np.int64)
    return int(bounds[comm.rank]), int(bounds[comm.rank + 1])


def local_shard(source, train_idx, comm, batch_size, virtual_shards=DEFAULT_VIRTUAL_SHARDS,
                val_idx=None):
    """This rank's training rows of ``source``, reading only the range it needs.

    ``train_idx`` are the indices (sorted) of the training rows among ``source``'s, the
    same on every rank; ranks own contiguous runs of them (:class:`ShardLayout`). A rank
    reads the rows from its first training row up to the next rank's first, and takes
    the validation rows (``val_idx``, sorted, or None) that fall in that range: every
    validation row goes to exactly one rank. Returns a namespace with ``layout``, ``X``,
    ``y`` (this rank's training rows) and ``X_val``, ``y_val`` (None without ``val_idx``).
    """
    layout = ShardLayout(len(train_idx), batch_size, virtual_shards, comm.size)
    start, stop = layout.rank_rows(comm.rank)
    n_source = len(source.y_train)
    lo = 0 if comm.rank == 0 else int(train_idx[start])  # this rank's range of the source
    hi = n_source if comm.rank == comm.size - 1 else int(train_idx[stop])
    rows = source.read_train(lo, hi)
    mine = train_idx[start:stop]
    shard = SimpleNamespace(layout=layout, X=rows[mine - lo], y=source.y_train[mine],
                            X_val=None, y_val=None)
    if val_idx is not None:
        val_mine = val_idx[(val_idx >= lo) & (val_idx < hi)]
        shard.X_val, shard.y_val = rows[val_mine - lo], source.y_train[val_mine]
    return shard


def open_dataset_on_ranks(spec, comm, *, label_column="auto", progress=True):
    """:func:`~handgrad.datasets.open_dataset` on every rank, downloading (once) on rank 0."""
    source = None
    if comm.rank == 0:
        source = open_dataset(spec, label_column=label_column, progress=progress)
    comm.Barrier()
    if comm.rank != 0:
        source = open_dataset(spec, label_column=label_column, progress=False,
                              download_missing=False)
    return source


def prepare_shard(spec, comm, *, batch_size, virtual_shards=DEFAULT_VIRTUAL_SHARDS,
                  label_column="auto", val_fraction=0.0, seed=None, progress=True):
    """This rank's share of :func:`~handgrad.datasets.prepare_data`'s rows, reading only
    those where the source allows it (IDX files are read by row range).

    The validation split (:func:`~handgrad.datasets.validation_split`) and the shard
    layout are computed from the labels alone, identically on every rank: the training
    rows are :func:`local_shard`'s for ``batch_size`` and ``virtual_shards``, each
    validation row goes to the rank whose range holds it, and the test rows are split
    evenly (:func:`split_rows`). Rank 0 downloads a missing named set, once
    (``progress`` shows it). Returns a :class:`~handgrad.datasets.PreparedData` whose
    ``n_train`` counts every rank's training rows; across ranks, the shares make up
    exactly the rows ``prepare_data`` returns in one process.
    """
    source = open_dataset_on_ranks(spec, comm, label_column=label_column, progress=progress)
    train, val = validation_split(source.y_train, val_fraction, seed)
    shard = local_shard(source, train, comm, batch_size, virtual_shards, val_idx=val)
    a, b = split_rows(len(source.y_test), comm)
    return PreparedData(source.name, list(source.classes), shard.X, shard.y, shard.X_val,
                        shard.y_val, source.read_test(a, b), source.y_test[a:b], len(train),
                        source.label_column)


def fit_preprocessor(preprocessor, rows, comm):
    """Fit ``preprocessor`` on the rows of all ranks (each passes its own)."""
    MPI = _mpi()
    ops = {"sum": MPI.SUM, "max": MPI.MAX}
    return preprocessor.fit(rows, reduce=lambda value, op: comm.allreduce(value, op=ops[op]))


class DistributedTrainer(Trainer):
    """A :class:`~handgrad.train.Trainer` over ``comm``: this rank's rows only.

    ``X`` and ``y`` are the rows ``layout.rank_rows(comm.rank)`` of the training
    set (see :func:`local_shard`); ``validation_data``, if given, is this rank's share
    of the validation set (any split: metrics are summed over ranks). Rank 0 alone
    writes files (``is_chief``). ``blas_threads`` sets this rank's BLAS threads (see
    :func:`handgrad._threads.limit_blas_threads`: by default the node's cores divided
    by its ranks); the choice is ``self.blas_threads``.
    """

    def __init__(self, model, X, y, *, comm, n_rows, virtual_shards=DEFAULT_VIRTUAL_SHARDS,
                 batch_size=128, blas_threads=None, **kwargs):
        self.comm = comm
        self.is_chief = comm.rank == 0
        # ranks on one machine share its cores rather than each starting a full BLAS pool
        self.blas_threads = limit_blas_threads(comm, blas_threads)  # print .describe() once
        self.layout = ShardLayout(n_rows, batch_size, virtual_shards, comm.size)
        start, stop = self.layout.rank_rows(comm.rank)
        if len(X) != stop - start:
            raise ValueError(f"rank {comm.rank} holds {len(X)} rows but its shards span rows "
                             f"{start}:{stop} ({stop - start} rows)")
        self.row_offset = start
        validation = kwargs.pop("validation_data", None)  # this rank's share: may be empty
        if kwargs.get("sample_weight") is not None:
            raise ValueError("distributed training does not take sample weights")
        super().__init__(model, X, y, batch_size=batch_size, **kwargs)
        if validation is not None:
            X_val = np.asarray(validation[0], dtype=model.dtype)
            self.validation = (X_val, np.asarray(validation[1]))
        self.batch_size = self.layout.batch_size
        self.n_batches = self.layout.n_batches
        self._scalars = np.zeros(4)  # loss, hits, stop votes, (spare): one tiny Allreduce
        self._stop_votes = 0.0  # ranks that asked to stop, as of the last batch
        # the whole training set's fingerprint (every rank's shard, in rank order), taken
        # now, collectively: checkpoints are written by rank 0 alone
        self._fingerprint = self._global_fingerprint()

    def _global_fingerprint(self):
        """Hashes per virtual shard (independent of the rank count), gathered from every
        rank and combined in shard order."""
        import hashlib

        from .train import _hash_arrays

        L = self.layout
        mine = {}
        for v in L.rank_shards[self.comm.rank]:
            lo = int(L.shard_start[v]) - self.row_offset
            rows = slice(lo, lo + int(L.shard_rows[v]))
            mine[int(v)] = (_hash_arrays(self.X[rows]), _hash_arrays(self.target[rows]))
        shards = {}
        for part in self.comm.allgather(mine):
            shards.update(part)
        combined = {}
        for i, name in enumerate(("X", "y")):
            h = hashlib.blake2b(digest_size=16)
            h.update(" ".join(shards[v][i] for v in sorted(shards)).encode())
            combined[name] = h.hexdigest()
        combined["sample_weight"] = None  # distributed training takes none
        return combined

    @classmethod
    def from_config(cls, model, X, y, config, *, comm, n_rows, **kwargs):
        return super().from_config(model, X, y, config, comm=comm, n_rows=n_rows,
                                   virtual_shards=config.virtual_shards, **kwargs)

    def _make_update(self):
        # The update waits for the Allreduce: it needs every rank's gradient, and a
        # bound on this rank's share says nothing about the sum.
        MPI = _mpi()
        return Update(self.model, self.optimizer,
                      reduce=lambda g: self.comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM))

    def order(self, epoch):
        """Per owned shard, its rows in this epoch's order (local indices)."""
        L = self.layout
        orders = []
        for v in L.rank_shards[self.comm.rank]:
            key = [self.history.seed, epoch] if L.V == 1 else [self.history.seed, epoch, v]
            perm = np.random.default_rng(key).permutation(int(L.shard_rows[v]))
            orders.append(perm + (int(L.shard_start[v]) - self.row_offset))
        return orders

    def batch_rows(self, order, i):
        L = self.layout
        parts = [perm[i * L.share[v]:(i + 1) * L.share[v]]
                 for v, perm in zip(L.rank_shards[self.comm.rank], order)]
        return np.concatenate(parts)

    def _loss_weights(self, xb, sb):
        count = self.layout.batch_count(self.batch)  # the global batch's rows
        # the penalty belongs to the whole batch: rank 0 alone adds it to what is summed
        l2 = self.l2 / count if self.l2 and self.comm.rank == 0 else 0.0
        return 1.0 / count, float(count), l2

    def _combine(self, loss, batch_w, hits):
        MPI = _mpi()
        self._scalars[:3] = (loss, hits, float(self.stop_requested))  # Σ_local w L_n, ...
        self.comm.Allreduce(MPI.IN_PLACE, self._scalars, op=MPI.SUM)
        self._stop_votes = self._scalars[2]
        return float(self._scalars[0]), batch_w, float(self._scalars[1])

    def _agree_to_stop(self):
        # every rank voted in the last Allreduce, so all stop after the same batch
        return self._stop_votes > 0

    def _peer_stop(self):
        return self._stop_votes > 0 and not self.stop_requested

    def _validate(self):
        return evaluate_distributed(self.model, *self.validation, comm=self.comm)

    def state_dict(self):
        state = super().state_dict()
        state["n_rows"] = self.layout.n_rows
        state["virtual_shards"] = self.layout.V
        return state

    def load_state_dict(self, state):
        if state.get("virtual_shards", 1) != self.layout.V:
            raise ValueError(f"cannot resume: the checkpoint used {state.get('virtual_shards')} "
                             f"virtual shards, this run {self.layout.V}; use the same number")
        if state["n_rows"] != self.layout.n_rows:
            raise ValueError(f"cannot resume: the checkpoint has n_rows={state['n_rows']} but "
                             f"this run has {self.layout.n_rows}; resume with the same data")
        super().load_state_dict(dict(state, n_rows=len(self.X)))  # the rest as any trainer


def evaluate_distributed(model, X, y, comm):
    """``(loss, accuracy)`` over all ranks' rows (each rank passes its own)."""
    MPI = _mpi()
    sums = np.zeros(3)
    if len(X):
        loss, acc = model.evaluate(X, y)
        sums[:] = (loss * len(X), acc * len(X), len(X))
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    if sums[2] == 0:
        raise ValueError("no rows to evaluate on any rank")
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


def run_or_abort(comm, fn, *args, describe=None, show_traceback=False, **kwargs):
    """Run ``fn``; if it raises on any rank, report and abort the whole job.

    Without this a failing rank would leave the others waiting in an Allreduce
    for ever. ``MPI.Abort`` ends every rank; mpiexec then exits non-zero.
    ``describe(exc)`` words the error (default ``"Type: message"``);
    ``show_traceback`` also prints its traceback.
    """
    try:
        return fn(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as exc:
        if comm.size == 1:
            raise
        text = describe(exc) if describe is not None else f"{type(exc).__name__}: {exc}"
        sys.stderr.write(f"handgrad: error on rank {comm.rank} of {comm.size}: {text}; "
                         f"aborting all ranks\n")
        if show_traceback:
            traceback.print_exc()
        sys.stderr.flush()
        time.sleep(0.5)  # let mpiexec forward the message before Abort tears the job down
        comm.Abort(1)


def fit_distributed(model, X, y, *, comm, optimizer=None, epochs=10, batch_size=128, seed=None,
                    sample_weight=None, validation_data=None, callbacks=(),
                    virtual_shards=DEFAULT_VIRTUAL_SHARDS, handle_signals=False, **options):
    """:func:`handgrad.fit` over ``comm``: each rank passes the whole data, keeps its shard."""
    if sample_weight is not None:
        raise ValueError("distributed training does not take sample weights")
    if seed is None:  # every rank must shuffle alike: rank 0 picks the seed
        seed = comm.bcast(int(np.random.SeedSequence().entropy % (1 << 63)), root=0)
    X, y = np.asarray(X), np.asarray(y)
    source = DataSource("arrays", [], y, y[:0], lambda lo, hi: X[lo:hi], lambda lo, hi: X[:0])
    shard = local_shard(source, np.arange(len(X)), comm, batch_size, virtual_shards)
    val = None
    if validation_data is not None:
        Xv, yv = validation_data
        a, b = split_rows(len(Xv), comm)
        val = (model.check_X(Xv)[a:b], np.asarray(yv)[a:b])
    trainer = DistributedTrainer(model, shard.X, shard.y, comm=comm, n_rows=len(X),
                                 virtual_shards=virtual_shards, optimizer=optimizer,
                                 epochs=epochs, batch_size=batch_size, seed=seed,
                                 validation_data=val, callbacks=callbacks, **options)
    return run_or_abort(comm, trainer.run, handle_signals=handle_signals)

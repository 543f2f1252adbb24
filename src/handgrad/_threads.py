"""BLAS threads per MPI rank: the node's cores shared out among the ranks on it.

A BLAS library starts a thread pool as large as the cores it sees. Under ``mpiexec``
every rank on a machine sees all of them, so ``p`` ranks start ``p`` full pools on
the same cores: OpenBLAS's spinning threads then take turns on them and an MNIST
epoch that takes seconds takes over a minute. :func:`limit_blas_threads` gives each
rank its share instead:

    threads = max(1, min(cores of this rank, cores of the node's ranks // ranks on the node))

"Cores of this rank" is its CPU affinity (``os.sched_getaffinity``: what ``taskset``,
Slurm or ``mpiexec --bind-to`` left it), "cores of the node's ranks" the union of the
affinities of the ranks that share its memory (MPI's ``COMM_TYPE_SHARED`` split), so
unbound ranks split the machine and bound ones keep their own cores. An explicit
count (the ``threads`` argument, else ``$HANDGRAD_BLAS_THREADS``) overrides the rule.

The limit is set through threadpoolctl on every BLAS the process has loaded (NumPy's
OpenBLAS, and with it the routines of :mod:`handgrad._blas`) and stays for the rest of
the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "HANDGRAD_BLAS_THREADS"


@dataclass(frozen=True)
class BlasThreads:
    """The choice :func:`limit_blas_threads` made, to print once (rank 0)."""

    threads: int  # BLAS threads per rank
    source: str  # "auto", "argument" or "environment"
    cores: int  # the cores available to this node's ranks together
    local_ranks: int  # ranks on this node
    libraries: tuple = ()  # the BLAS libraries limited, e.g. ("openblas 0.3.30",)

    def describe(self):
        """One line, e.g. ``BLAS threads per rank: 1 (2 cores / 2 ranks on this node)``."""
        if self.source == "auto":
            why = (f"{self.cores} core{'s' * (self.cores != 1)} / {self.local_ranks} "
                   f"rank{'s' * (self.local_ranks != 1)} on this node")
        elif self.source == "environment":
            why = f"${ENV}"
        else:
            why = "as asked"
        if not self.libraries:
            why += "; no BLAS thread pool found to limit"
        return f"BLAS threads per rank: {self.threads} ({why})"


def available_cores():
    """The CPUs this process may run on (its affinity; the CPU count where unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def _parse(value, where):
    """A thread count from an int or a string of digits; ValueError naming ``where``."""
    try:
        if isinstance(value, str):
            n = int(value.strip())
        elif isinstance(value, bool) or int(value) != value:
            raise ValueError
        else:
            n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a whole number of threads or 'auto', got "
                         f"{value!r}") from None
    if n < 1:
        raise ValueError(f"{where} must be at least 1, got {value!r}")
    return n


def _shared_memory_split_type():
    from mpi4py import MPI  # a real communicator means mpi4py is loaded already

    return MPI.COMM_TYPE_SHARED


def choose_blas_threads(comm, threads=None, *, environ=None, cores=None):
    """The :class:`BlasThreads` for this rank of ``comm`` (collective: every rank calls it).

    ``threads``: None (``$HANDGRAD_BLAS_THREADS`` if set to a number, else the rule
    of the module docstring), ``"auto"`` (the rule), or a count. ``environ`` and
    ``cores`` (this rank's CPU set) default to the process's own.
    """
    environ = os.environ if environ is None else environ
    mine = available_cores() if cores is None else set(cores)
    local = comm.Split_type(_shared_memory_split_type(), key=comm.Get_rank())
    try:  # every rank takes part, whatever it chooses, so the call is always collective
        node = set().union(*local.allgather(sorted(mine)))
        local_ranks = local.Get_size()
    finally:
        local.Free()
    share = max(1, min(len(mine), len(node) // local_ranks))
    if threads is not None and not (isinstance(threads, str) and threads.strip() == "auto"):
        return BlasThreads(_parse(threads, "blas_threads"), "argument", len(node), local_ranks)
    env = environ.get(ENV, "").strip()
    if threads is None and env and env != "auto":
        return BlasThreads(_parse(env, f"${ENV}"), "environment", len(node), local_ranks)
    return BlasThreads(share, "auto", len(node), local_ranks)


def limit_blas_threads(comm, threads=None, *, environ=None, cores=None):
    """Choose (:func:`choose_blas_threads`) and set this rank's BLAS threads.

    Collective over ``comm``. Returns the :class:`BlasThreads`, whose
    :meth:`~BlasThreads.describe` the caller prints once.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    from . import _accel

    choice = choose_blas_threads(comm, threads, environ=environ, cores=cores)
    # numba's first kernel call loads SciPy's OpenBLAS beside NumPy's: the accelerator
    # loads its kernels first, so that pool is there to be limited too
    _accel.enabled()
    # applied on creation and kept: the object is not used as a context manager
    threadpool_limits(limits=choice.threads, user_api="blas")
    libraries = tuple(f"{lib['internal_api']} {lib['version']}" for lib in threadpool_info()
                      if lib["user_api"] == "blas")
    return BlasThreads(choice.threads, choice.source, choice.cores, choice.local_ranks,
                       libraries)

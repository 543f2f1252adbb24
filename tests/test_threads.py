"""BLAS threads per MPI rank (handgrad._threads), with a fake communicator.

The real thing, under mpiexec, is in tests/test_distributed.py.
"""

import pytest

from handgrad import _threads
from handgrad._threads import ENV, choose_blas_threads, limit_blas_threads

SHARED = object()  # stands for MPI.COMM_TYPE_SHARED


class FakeNodeComm:
    """The shared-memory split: the ranks on this rank's node."""

    def __init__(self, node):
        self.node, self.freed = node, False

    def Get_size(self):
        return len(self.node)

    def allgather(self, value):
        return [value if i == 0 else sorted(c) for i, c in enumerate(self.node)]

    def Free(self):
        self.freed = True


class FakeComm:
    """Rank 0 of a job whose ranks on this node have CPU affinities ``node``."""

    def __init__(self, node):
        self.node, self.splits = node, []

    def Get_rank(self):
        return 0

    def Split_type(self, split_type, key=0):
        assert split_type is SHARED
        local = FakeNodeComm(self.node)
        self.splits.append(local)
        return local


@pytest.fixture(autouse=True)
def fake_mpi(monkeypatch):
    monkeypatch.setattr(_threads, "_shared_memory_split_type", lambda: SHARED)
    monkeypatch.delenv(ENV, raising=False)


def unbound(n_ranks, n_cores):
    return [set(range(n_cores))] * n_ranks


@pytest.mark.parametrize("ranks, cores, expected", [
    (1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (4, 16, 4), (3, 16, 5), (16, 16, 1),
])
def test_unbound_ranks_split_the_node(ranks, cores, expected):
    comm = FakeComm(unbound(ranks, cores))
    choice = choose_blas_threads(comm, cores=range(cores))
    assert (choice.threads, choice.source, choice.cores, choice.local_ranks) == \
        (expected, "auto", cores, ranks)
    assert comm.splits[0].freed  # the split communicator is released


def test_bound_ranks_keep_their_own_cores():
    # mpiexec --bind-to: rank 0 on cores 0-3, rank 1 on 4-7 of an 8-core node
    comm = FakeComm([set(range(4)), set(range(4, 8))])
    assert choose_blas_threads(comm, cores=range(4)).threads == 4
    # one rank bound to a single core gets one thread, whatever the node has
    comm = FakeComm([{5}, set(range(8))])
    assert choose_blas_threads(comm, cores={5}).threads == 1


def test_describe_says_what_was_chosen_and_why():
    choice = choose_blas_threads(FakeComm(unbound(2, 2)), cores=range(2))
    assert choice.describe().startswith("BLAS threads per rank: 1 (2 cores / 2 ranks on "
                                        "this node")


def test_environment_and_argument_override_the_rule():
    comm = FakeComm(unbound(2, 8))
    env = {ENV: "3"}
    choice = choose_blas_threads(comm, environ=env, cores=range(8))
    assert (choice.threads, choice.source) == (3, "environment")
    assert "$HANDGRAD_BLAS_THREADS" in choice.describe()
    choice = choose_blas_threads(comm, 2, environ=env, cores=range(8))
    assert (choice.threads, choice.source) == (2, "argument")
    assert choose_blas_threads(comm, "auto", environ=env, cores=range(8)).threads == 4
    assert choose_blas_threads(comm, environ={ENV: "auto"}, cores=range(8)).threads == 4
    assert choose_blas_threads(comm, environ={ENV: " "}, cores=range(8)).threads == 4


@pytest.mark.parametrize("threads, env, message", [
    (0, {}, "blas_threads must be at least 1"),
    (2.5, {}, "blas_threads must be a whole number"),
    ("two", {}, "blas_threads must be a whole number.*'two'"),
    (True, {}, "blas_threads must be a whole number"),
    (None, {ENV: "lots"}, r"\$HANDGRAD_BLAS_THREADS must be a whole number.*'lots'"),
    (None, {ENV: "-1"}, r"\$HANDGRAD_BLAS_THREADS must be at least 1"),
])
def test_bad_counts_are_refused_naming_the_value(threads, env, message):
    with pytest.raises(ValueError, match=message):
        choose_blas_threads(FakeComm(unbound(2, 2)), threads, environ=env, cores=range(2))


def test_limit_sets_the_blas_pool_and_reports_it():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401  (its BLAS must be loaded to be found)

    saved = threadpoolctl.threadpool_limits(limits=None)  # records the current limits
    try:
        blas = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        if not blas:
            pytest.skip("NumPy's BLAS has no thread pool threadpoolctl can control")
        start = blas[0]["num_threads"]
        target = 1 if start > 1 else 2
        choice = limit_blas_threads(FakeComm(unbound(1, 8)), target, cores=range(8))
        assert choice.threads == target and choice.libraries
        after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                 if lib["user_api"] == "blas"]
        assert after == [target] * len(after)
        assert "no BLAS thread pool" not in choice.describe()
    finally:
        saved.restore_original_limits()

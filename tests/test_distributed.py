"""Data-parallel training over MPI: equivalence, uneven shards, rank-0 outputs, failures.

Runs real MPI jobs with mpiexec (2 ranks, and 3 with oversubscription on 2 cores).
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import handgrad

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                       f"{os.environ.get('PATH', '')}")
if MPIEXEC is None:
    pytest.skip("mpiexec not found (pip install 'handgrad[mpi]')", allow_module_level=True)


def mpirun(n, *args, timeout=180, env=None):
    return subprocess.run([MPIEXEC, "-n", str(n), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def script(tmp_path, body):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(body))
    return path


LIBRARY_JOB = """
    import sys
    import numpy as np
    from mpi4py import MPI
    import handgrad
    from handgrad.optim import SGD, Adam

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 7))                   # 203 rows: shards of unequal size
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    Xv, yv = rng.normal(size=(41, 7)), rng.integers(0, 3, 41)
    out = sys.argv[1]
    for name, opt, l2 in (("sgd", SGD(0.1, momentum=0.9, nesterov=True), 0.0),
                          ("adam", Adam(1e-2), 0.5)):
        model = handgrad.MLP(7, (9, 5), 3, dtype="float64", seed=1)
        history = handgrad.fit(model, X, y, optimizer=opt, epochs=4, batch_size=32, seed=5,
                               validation_data=(Xv, yv), comm=comm, virtual_shards=6, l2=l2)
        if comm.rank == 0:
            np.save(f"{out}-{name}.npy", model.param_buffer)
            np.save(f"{out}-{name}-val.npy", np.array(history.val_loss))
"""


def test_weights_equal_on_one_two_and_three_ranks(tmp_path):
    job = script(tmp_path, LIBRARY_JOB)
    for n in (1, 2, 3):
        r = mpirun(n, sys.executable, job, tmp_path / f"n{n}")
        assert r.returncode == 0, r.stderr
    for name in ("sgd", "adam"):
        ref = np.load(tmp_path / f"n1-{name}.npy")
        for n in (2, 3):
            other = np.load(tmp_path / f"n{n}-{name}.npy")
            # float64: only the order of the gradient sum differs (a few ulp per step)
            np.testing.assert_allclose(other, ref, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(np.load(tmp_path / f"n{n}-{name}-val.npy"),
                                       np.load(tmp_path / f"n1-{name}-val.npy"), rtol=1e-12)


def test_one_shard_one_rank_is_exactly_single_process_training(tmp_path):
    job = script(tmp_path, """
        import sys
        import numpy as np
        from mpi4py import MPI
        import handgrad
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(100, 4)), rng.integers(0, 2, 100)
        a = handgrad.MLP(4, 6, 2, seed=0)
        b = handgrad.MLP(4, 6, 2, seed=0)
        handgrad.fit(a, X, y, epochs=3, batch_size=16, seed=2)
        handgrad.fit(b, X, y, epochs=3, batch_size=16, seed=2, comm=MPI.COMM_WORLD,
                     virtual_shards=1)
        assert np.array_equal(a.param_buffer, b.param_buffer)
        print("identical")
    """)
    r = mpirun(1, sys.executable, job)
    assert r.returncode == 0 and "identical" in r.stdout, r.stderr


def test_cli_rank0_only_outputs_and_resume_with_another_rank_count(tmp_path):
    common = ["--hidden", "24", "--dtype", "float64", "--batch-size", "50", "--seed", "3",
              "--virtual-shards", "6"]
    ref = mpirun(1, sys.executable, "-m", "handgrad", "train", "--distributed", *common,
                 "--epochs", "4", "--quiet", "--out", tmp_path / "ref.safetensors")
    assert ref.returncode == 0, ref.stderr
    first = mpirun(2, sys.executable, "-m", "handgrad", "train", "--distributed", *common,
                   "--epochs", "2", "--checkpoint-dir", tmp_path / "ck")
    assert first.returncode == 0, first.stderr
    # one progress line per epoch, printed by rank 0 alone
    assert first.stdout.count("epoch 1/2") == 1 and first.stdout.count("test accuracy") == 1
    assert "over 2 MPI ranks" in first.stdout
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["checkpoint.safetensors"]
    resumed = mpirun(3, sys.executable, "-m", "handgrad", "train", "--distributed",
                     "--resume", tmp_path / "ck" / "checkpoint.safetensors", "--epochs", "4",
                     "--quiet", "--out", tmp_path / "resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr
    a = handgrad.load(tmp_path / "ref.safetensors").param_buffer
    b = handgrad.load(tmp_path / "resumed.safetensors").param_buffer
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)


FAILING_JOB = """
    import os, signal
    import numpy as np
    from mpi4py import MPI
    import handgrad
    from handgrad.train import Callback
    comm = MPI.COMM_WORLD

    class Fail(Callback):
        def on_batch_end(self, batch, loss):
            if comm.rank == 1 and batch == 3:
                {action}

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 4)), rng.integers(0, 2, 400)
    handgrad.fit(handgrad.MLP(4, 6, 2), X, y, epochs=50, batch_size=8, seed=0,
                 comm=comm, callbacks=[Fail()])
"""


@pytest.mark.parametrize("action, message", [
    ('raise RuntimeError("simulated failure")',
     "error on rank 1 of 2: RuntimeError: simulated failure"),
    ("os.kill(os.getpid(), signal.SIGKILL)", None),
])
def test_a_failing_rank_ends_the_job_without_hanging(tmp_path, action, message):
    job = script(tmp_path, FAILING_JOB.replace("{action}", action))
    r = mpirun(2, sys.executable, job, timeout=60)  # a hang would time out here
    assert r.returncode != 0
    if message:
        assert message in r.stderr


def test_too_many_ranks_for_the_shards_is_a_clear_error(tmp_path):
    r = mpirun(3, sys.executable, "-m", "handgrad", "train", "--distributed",
               "--virtual-shards", "2", "--epochs", "1", timeout=60)
    assert r.returncode != 0 and "3 ranks but only 2 virtual shards" in r.stderr


def test_cli_distributed_on_real_mnist_reads_shards(mnist_dir, tmp_path):
    env = dict(os.environ, HANDGRAD_DATA=str(mnist_dir.parent))
    r = mpirun(2, sys.executable, "-m", "handgrad", "train", "--distributed", "--dataset",
               "mnist", "--epochs", "1", "--hidden", "32", "--batch-size", "256", "--json",
               env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    summary = json.loads(r.stdout)
    assert summary["test_accuracy"] > 0.85


BLAS_JOB = """
    import json, sys
    import numpy as np
    from mpi4py import MPI
    from threadpoolctl import threadpool_info
    import handgrad

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
    kwargs = {} if len(sys.argv) < 3 else {"blas_threads": int(sys.argv[2])}
    handgrad.fit(handgrad.MLP(5, 8, 3), X, y, epochs=1, batch_size=20, seed=0, comm=comm,
                 **kwargs)
    pools = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    with open(f"{sys.argv[1]}-{comm.rank}.json", "w") as f:
        json.dump(pools, f)
"""


def blas_pools(tmp_path, *threads, env):
    """Each rank's BLAS pool sizes after training with ``BLAS_JOB`` on 2 ranks."""
    import json

    r = mpirun(2, sys.executable, tmp_path / "job.py", tmp_path / "pools", *threads, env=env)
    assert r.returncode == 0, r.stderr
    return [json.loads((tmp_path / f"pools-{rank}.json").read_text()) for rank in (0, 1)]


def test_ranks_on_one_machine_share_its_cores_for_blas(tmp_path):
    """Two ranks on one machine: each gets cores / 2 BLAS threads, not a full pool."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: a full BLAS pool per rank is already one thread")
    script(tmp_path, BLAS_JOB)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HANDGRAD_BLAS_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    pools = blas_pools(tmp_path, env=env)
    if not pools[0]:
        pytest.skip("NumPy's BLAS has no thread pool threadpoolctl can control")
    assert pools == [[cores // 2] * len(pools[0])] * 2
    # overridden by the environment variable, and by the argument over it
    pools = blas_pools(tmp_path, env=dict(env, HANDGRAD_BLAS_THREADS="3"))
    assert pools == [[3] * len(pools[0])] * 2
    pools = blas_pools(tmp_path, 2, env=dict(env, HANDGRAD_BLAS_THREADS="3"))
    assert pools == [[2] * len(pools[0])] * 2

"""Data-parallel scaling: throughput on 1 and 2 MPI ranks, and the all-reduce time per step.

    python benchmarks/scaling.py                 # launches mpiexec itself, writes results/scaling.json
    python benchmarks/make_tables.py             # regenerates the README's table

Each configuration trains for a fixed number of steps on MNIST-shaped random data (the
arithmetic does not depend on the values), with the network's flat gradient summed by one
in-place Allreduce per step, and reports examples per second. A separate loop times the
Allreduce alone on a buffer of the gradient's size. On one machine the ranks share its
cores (and BLAS threads are set to cores / ranks), so this measures the overhead of the
scheme, not a cluster's speed-up; the README turns the measured numbers into a model of
many machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def worker(hidden, batch, steps, out):
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    import handgrad
    from handgrad.distributed import DistributedTrainer, ShardLayout

    comm = MPI.COMM_WORLD
    threads = max(1, (os.cpu_count() or 1) // comm.size)
    n_rows = batch * steps
    layout = ShardLayout(n_rows, batch, 12, comm.size)
    start, stop = layout.rank_rows(comm.rank)
    rng = np.random.default_rng(comm.rank)
    X = rng.random((stop - start, 784), dtype=np.float32)
    y = rng.integers(0, 10, stop - start)
    model = handgrad.MLP(784, hidden, 10, seed=0)
    with threadpool_limits(threads):
        trainer = DistributedTrainer(model, X, y, comm=comm, n_rows=n_rows, batch_size=batch,
                                     optimizer=handgrad.optim.SGD(0.01), epochs=1, seed=0)
        comm.Barrier()
        t0 = time.perf_counter()
        trainer.run()
        comm.Barrier()
        elapsed = time.perf_counter() - t0
        g = model.grad_buffer
        times = []
        for _ in range(50):
            comm.Barrier()
            t1 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
            times.append(time.perf_counter() - t1)
    if comm.rank == 0:
        Path(out).write_text(json.dumps({
            "ranks": comm.size, "hidden": hidden, "batch": batch, "steps": layout.n_batches,
            "blas_threads_per_rank": threads, "seconds": elapsed,
            "examples_per_second": n_rows / elapsed,
            "gradient_bytes": int(g.nbytes), "allreduce_seconds": statistics.median(times),
            "step_seconds": elapsed / layout.n_batches,
        }))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 800])
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scaling.json")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.hidden[0], args.batch[0], args.steps, args.out)
        return 0
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                           f"{os.environ.get('PATH', '')}")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install 'handgrad[mpi]'")
    results = []
    tmp = args.out.with_suffix(".part.json")
    for hidden in args.hidden:
        for batch in args.batch:
            for ranks in args.ranks:
                subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker",
                                "--hidden", str(hidden), "--batch", str(batch), "--steps",
                                str(args.steps), "--out", str(tmp)], check=True)
                r = json.loads(tmp.read_text())
                results.append(r)
                print(f"H={hidden:<4d} B={batch:<4d} ranks={ranks}: "
                      f"{r['examples_per_second']:8.0f} examples/s, step "
                      f"{1e3 * r['step_seconds']:.2f} ms, Allreduce of "
                      f"{r['gradient_bytes'] / 1e6:.2f} MB {1e3 * r['allreduce_seconds']:.3f} ms",
                      flush=True)
    tmp.unlink(missing_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "scaling", "results": results,
                                    "cpu_count": os.cpu_count(),
                                    "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

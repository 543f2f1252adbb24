"""Data-parallel scaling: throughput on 1 and 2 MPI ranks, and the all-reduce time per step.

    python benchmarks/scaling.py                 # launches mpiexec itself, writes results/scaling.json
    python benchmarks/scaling.py --epoch-only    # reruns the one-epoch part alone
    python benchmarks/make_tables.py             # regenerates the README's table

Two parts, both on MNIST-shaped random data (the arithmetic does not depend on the values),
with every rank's BLAS threads left to handgrad's own rule (:mod:`handgrad._threads`: the
node's cores divided by the ranks on it), as ``handgrad train --distributed`` gets them:

- *The grid*: each configuration trains for a fixed number of steps, the network's flat
  gradient summed by one in-place Allreduce per step, and reports examples per second; a
  separate loop times the Allreduce alone on a buffer of the gradient's size.
- *One epoch* of 60,000 rows at the README's ``mpiexec -n 2 handgrad train --distributed
  --hidden 800`` settings (batch 32, Adam), on 1 rank and on 2, interleaved and repeated
  (medians reported): on one machine 2 ranks must be no slower per epoch than 1. For
  contrast, 2 ranks each with a full-size BLAS pool (``HANDGRAD_BLAS_THREADS`` = all
  cores: what every rank started before the rule), timed over ``--contrast-steps`` steps
  and scaled to an epoch, since a whole oversubscribed epoch takes minutes.

On one machine the ranks share its cores, so this measures the overhead of the scheme, not
a cluster's speed-up; the README turns the measured numbers into a model of many machines.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the workers' environment (timed runs
use the kernel OpenBLAS picks itself); each result records the kernel (threadpoolctl).
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
UNSET_FOR_TIMING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_kernels():
    from threadpoolctl import threadpool_info

    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def worker(args):
    from mpi4py import MPI

    import handgrad
    from handgrad.distributed import DistributedTrainer, ShardLayout

    comm = MPI.COMM_WORLD
    hidden, batch = args.hidden[0], args.batch[0]
    n_rows = args.rows or batch * args.steps
    layout = ShardLayout(n_rows, batch, 12, comm.size)
    start, stop = layout.rank_rows(comm.rank)
    rng = np.random.default_rng(comm.rank)
    X = rng.random((stop - start, 784), dtype=np.float32)
    y = rng.integers(0, 10, stop - start)
    model = handgrad.MLP(784, hidden, 10, seed=0)
    optimizer = (handgrad.optim.Adam(1e-3) if args.optimizer == "adam"
                 else handgrad.optim.SGD(0.01))
    # BLAS threads: DistributedTrainer applies handgrad's rule (or $HANDGRAD_BLAS_THREADS)
    trainer = DistributedTrainer(model, X, y, comm=comm, n_rows=n_rows, batch_size=batch,
                                 optimizer=optimizer, epochs=1, seed=0)
    comm.Barrier()
    t0 = time.perf_counter()
    trainer.run()
    comm.Barrier()
    elapsed = time.perf_counter() - t0
    g = model.grad_buffer
    times = []
    for _ in range(0 if args.rows else 50):
        comm.Barrier()
        t1 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
        times.append(time.perf_counter() - t1)
    if comm.rank == 0:
        choice = trainer.blas_threads
        Path(args.out).write_text(json.dumps({
            "ranks": comm.size, "hidden": hidden, "batch": batch, "optimizer": args.optimizer,
            "rows": n_rows, "steps": layout.n_batches,
            "blas_threads_per_rank": choice.threads, "blas_threads_source": choice.source,
            "blas_threads_choice": choice.describe(), "blas": blas_kernels(),
            "seconds": elapsed, "examples_per_second": n_rows / elapsed,
            "gradient_bytes": int(g.nbytes),
            "allreduce_seconds": statistics.median(times) if times else None,
            "step_seconds": elapsed / layout.n_batches,
        }))


def run_worker(mpiexec, ranks, tmp, options, env):
    subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker",
                    "--out", str(tmp), *map(str, options)], check=True, env=env)
    return json.loads(tmp.read_text())


def epoch_part(args, mpiexec, tmp, env):
    """One epoch on 1 and 2 ranks (interleaved repeats), and 2 oversubscribed ranks."""
    from handgrad.distributed import DEFAULT_VIRTUAL_SHARDS, ShardLayout

    # the same global batches on any number of ranks: the layout's count, not rows / batch
    steps_per_epoch = ShardLayout(args.epoch_rows, args.epoch_batch, DEFAULT_VIRTUAL_SHARDS,
                                  1).n_batches
    common = ["--hidden", args.epoch_hidden, "--batch", args.epoch_batch, "--optimizer",
              "adam"]
    samples = {1: [], 2: []}
    runs = {}
    for _ in range(args.epoch_repeats):
        for ranks in (1, 2):
            r = run_worker(mpiexec, ranks, tmp, [*common, "--rows", args.epoch_rows], env)
            samples[ranks].append(r["seconds"])
            runs[ranks] = r
            print(f"epoch, {ranks} rank(s), {r['blas_threads_choice']}: {r['seconds']:.2f} s",
                  flush=True)
    rows = []
    for ranks in (1, 2):
        r = runs[ranks]
        rows.append({"ranks": ranks, "blas_threads_per_rank": r["blas_threads_per_rank"],
                     "blas_threads_source": r["blas_threads_source"],
                     "blas_threads_choice": r["blas_threads_choice"], "blas": r["blas"],
                     "seconds_per_epoch": statistics.median(samples[ranks]),
                     "samples": samples[ranks], "steps_timed": r["steps"],
                     "extrapolated": False})
    full_pool = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    if args.contrast_steps and full_pool > 1:
        r = run_worker(mpiexec, 2, tmp, [*common, "--steps", args.contrast_steps],
                       dict(env, HANDGRAD_BLAS_THREADS=str(full_pool)))
        rows.append({"ranks": 2, "blas_threads_per_rank": r["blas_threads_per_rank"],
                     "blas_threads_source": r["blas_threads_source"],
                     "blas_threads_choice": r["blas_threads_choice"], "blas": r["blas"],
                     "seconds_per_epoch": r["step_seconds"] * steps_per_epoch,
                     "samples": [r["step_seconds"] * steps_per_epoch],
                     "steps_timed": r["steps"], "extrapolated": True})
        print(f"epoch, 2 ranks, a full BLAS pool each ({full_pool} threads): "
              f"{rows[-1]['seconds_per_epoch']:.1f} s (from {r['steps']} steps)", flush=True)
    one, two = rows[0]["seconds_per_epoch"], rows[1]["seconds_per_epoch"]
    return {"hidden": args.epoch_hidden, "batch": args.epoch_batch, "optimizer": "adam",
            "rows": args.epoch_rows, "steps_per_epoch": steps_per_epoch,
            "repeats": args.epoch_repeats, "results": rows,
            "two_ranks_vs_one": one / two, "two_ranks_no_slower": two <= one}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--optimizer", default="sgd", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 800])
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--epoch-rows", type=int, default=60000)
    ap.add_argument("--epoch-hidden", type=int, default=800)
    ap.add_argument("--epoch-batch", type=int, default=32)
    ap.add_argument("--epoch-repeats", type=int, default=3, help="0 skips the epoch part")
    ap.add_argument("--contrast-steps", type=int, default=200,
                    help="steps timed with a full BLAS pool per rank (0 skips)")
    ap.add_argument("--epoch-only", action="store_true",
                    help="run the one-epoch part alone, keeping the grid already in --out")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scaling.json")
    args = ap.parse_args(argv)
    command = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    if args.worker:
        worker(args)
        return 0
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                           f"{os.environ.get('PATH', '')}")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install 'handgrad[mpi]'")
    env = {k: v for k, v in os.environ.items()
           if k not in (*UNSET_FOR_TIMING, "HANDGRAD_BLAS_THREADS")}
    results = []
    load_before = os.getloadavg()  # a shared machine: other work competes for the cores
    tmp = args.out.with_suffix(".part.json")
    if args.epoch_only:
        doc = json.loads(args.out.read_text()) if args.out.exists() else {
            "benchmark": "scaling", "results": [], "cpu_count": os.cpu_count()}
        doc["epoch"] = epoch_part(args, mpiexec, tmp, env)
        doc["epoch"].update(command=command, date=time.strftime("%Y-%m-%d"),
                            load_average_before_after=[load_before[0], os.getloadavg()[0]])
        tmp.unlink(missing_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
        print(f"wrote the epoch part of {args.out}")
        return 0
    for hidden in args.hidden:
        for batch in args.batch:
            for ranks in args.ranks:
                r = run_worker(mpiexec, ranks, tmp, ["--hidden", hidden, "--batch", batch,
                                                     "--steps", args.steps], env)
                results.append(r)
                print(f"H={hidden:<4d} B={batch:<4d} ranks={ranks}: "
                      f"{r['examples_per_second']:8.0f} examples/s, step "
                      f"{1e3 * r['step_seconds']:.2f} ms, Allreduce of "
                      f"{r['gradient_bytes'] / 1e6:.2f} MB {1e3 * r['allreduce_seconds']:.3f} ms"
                      f" ({r['blas_threads_choice']})", flush=True)
    epoch = epoch_part(args, mpiexec, tmp, env) if args.epoch_repeats else None
    load = [load_before[0], os.getloadavg()[0]]
    if epoch is not None:
        epoch.update(command=command, date=time.strftime("%Y-%m-%d"),
                     load_average_before_after=load)
    tmp.unlink(missing_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "scaling", "results": results, "epoch": epoch,
                                    "cpu_count": os.cpu_count(),
                                    "command": command, "load_average_before_after": load,
                                    "unset_for_timing": list(UNSET_FOR_TIMING),
                                    "date": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

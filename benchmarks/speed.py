"""Seconds per MNIST training epoch: handgrad against PyTorch eager, torch.compile and
JAX jit, side by side, on NumPy's native BLAS kernel.

Each library runs in its own worker process (``benchmarks/peers.py`` holds the
runners), started once and kept for the whole run: its imports, thread pools and
compiled code stay warm, and no library's threads compete with another's while it
is timed. For every cell of the grid (hidden width H, batch B, optimizer) each worker
first warms up (compiles, for torch.compile and JAX: reported as compile time, not
part of the epoch), then the epochs are interleaved (handgrad, handgrad-numpy, torch,
torch.compile, JAX, then the same in a rotated order, ...) and the medians reported,
so a noisy machine slows every library alike. ``handgrad`` is the library as
installed with its accelerator (``pip install 'handgrad[accel]'``, numba);
``handgrad-numpy`` the same code with ``HANDGRAD_NO_ACCEL=1``: the plain NumPy path.

The workers run with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from their
environment (``--keep-env`` keeps them): those variables can force NumPy's OpenBLAS
onto an older kernel than the CPU's, which PyTorch's and JAX's BLAS never read. The
result records every library's BLAS and kernel (threadpoolctl for NumPy's OpenBLAS,
PyTorch's MKL/oneDNN and CPU capability, XLA), the variables removed, and the kernel
the parent's own environment would have forced.

Also per cell: the epoch's matrix-product FLOPs, its *GEMM bound* (those FLOPs at the
fastest 2048² sgemm any of the libraries runs on this machine) and each library's share
of it, and NumPy's own-shape GEMMs back to back (what handgrad's products alone take).

    python benchmarks/speed.py                       # the full grid, writes results/speed.json
    python benchmarks/speed.py --hidden 256 800 --batch 128 --optimizer adam --repeats 5
                                                     # reruns 2 cells; keeps the file's others
    python benchmarks/speed.py --libraries handgrad torch jax     # a subset of libraries
    python benchmarks/speed.py --predict-only --repeats 21   # reruns predict_proba alone
    python benchmarks/speed.py --estimator-only --repeats 5  # handgrad.MLPClassifier vs fit
    python benchmarks/speed.py --rows 20000 --extrapolate    # a third of each epoch, scaled

A run merges into ``--out``: the cells it times replace the same cells there (optimizer,
H, batch), the others and the estimator and predict parts it did not run are kept, and
each cell records the run (date, command) that measured it; the README's table lists the
runs when it holds more than one. ``--replace`` writes this run alone. Cells of another
``--rows``, thread count or machine are not merged: the run stops before timing anything
and asks for another ``--out``.

After the grid, ``handgrad.MLPClassifier(solver='sgd'/'adam')`` is timed against
``handgrad.fit`` with the same settings (issue #15: within 5% per epoch), interleaved in
worker processes of their own (``--estimator-hidden/-batch/-epochs``, ``--no-estimator``).
    python benchmarks/make_tables.py                 # regenerates the README's tables

Needs real MNIST (found as handgrad finds it: $HANDGRAD_DATA/mnist or the cache), and
the peers installed: ``pip install -e '.[bench]'`` (PyTorch, JAX, numba, onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchargs import HelpFormatter, check_out, positive_int  # noqa: E402

PEERS = ("torch", "torch-compile", "jax")  # the libraries the targets compare against
DEFAULT_LIBRARIES = ("handgrad", "handgrad-numpy", *PEERS)
ALL_LIBRARIES = (*DEFAULT_LIBRARIES, "sklearn")
LR = {"sgd": 0.05, "adam": 1e-3}
MNIST_ROWS = 60000  # one epoch of MNIST's training set


def machine_info():
    """Python, NumPy, the CPU and the BLAS libraries loaded in this process (threadpoolctl)."""
    import handgrad

    info = {"python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "handgrad": handgrad.__version__}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                               "num_threads")} for d in threadpool_info()]
    except ImportError:
        pass
    return info


def gemm_flops(B, D, H, M, n_rows):
    """Matrix-product FLOPs of one epoch for D-H-M: forward (F1, F3), B4/B7 and B5."""
    per_row = 2 * (D * H + H * M)  # forward
    per_row += 2 * (H * D + M * H)  # weight gradients (B4, B7)
    per_row += 2 * (M * H)  # ∂L/∂h (B5); none for the input layer
    return per_row * n_rows


def shaped_gemm_seconds(B, D, H, M, n_rows, repeats=3):
    """The epoch's own matrix products in NumPy alone, back to back (no other work)."""
    rng = np.random.default_rng(0)
    X = rng.random((B, D), dtype=np.float32)
    W1, W2 = rng.random((H, D), dtype=np.float32), rng.random((M, H), dtype=np.float32)
    Q, O = np.empty((B, H), np.float32), np.empty((B, M), np.float32)
    dW1, dW2, dh = np.empty_like(W1), np.empty_like(W2), np.empty((B, H), np.float32)
    steps = n_rows // B

    def epoch():
        for _ in range(steps):
            np.matmul(X, W1.T, out=Q)
            np.matmul(Q, W2.T, out=O)
            np.matmul(O.T, Q, out=dW2)
            np.matmul(O, W2, out=dh)
            np.matmul(dh.T, X, out=dW1)

    epoch()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * (n_rows / (steps * B))


def time_predict(X_test, repeats):
    """handgrad.predict_proba vs onnxruntime on the same 784-256-10 model, interleaved.

    Both get every core of the worker (``--threads`` holds them): NumPy's BLAS its
    pool, onnxruntime as many intra-op threads. Each repeat times one warm call of
    each; medians compared, every sample kept.
    """
    import handgrad
    import peers
    from threadpoolctl import threadpool_info

    model = handgrad.MLP(784, 256, 10, seed=0)
    out = {"handgrad_s": None, "onnxruntime_s": None, "rows": len(X_test),
           "model": "784-256-10 float32", "repeats": repeats}
    runners = [("handgrad_s", lambda: model.predict_proba(X_test))]
    try:
        import onnxruntime as ort

        from handgrad.onnx import to_onnx_bytes

        so = ort.SessionOptions()
        so.intra_op_num_threads = peers.threads()
        session = ort.InferenceSession(to_onnx_bytes(model, fold_preprocessing=False), so,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        runners.append(("onnxruntime_s",
                        lambda: session.run(["probabilities"], {name: X_test})))
        out["onnxruntime"] = ort.__version__
        out["onnxruntime_threads"] = so.intra_op_num_threads
    except ImportError:
        pass
    if len(runners) == 2:  # the two compute the same probabilities
        np.testing.assert_allclose(runners[1][1]()[0], runners[0][1](), rtol=1e-4, atol=1e-6)
    samples = {k: [] for k, _ in runners}
    load_before = os.getloadavg()[0]  # a shared machine: other work competes for the cores
    for _ in range(repeats):
        for k, f in runners:
            f()
            t0 = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t0)
    for k, v in samples.items():
        out[k] = statistics.median(v)
    out["samples"] = samples
    out["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    out["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                          "num_threads")} for d in threadpool_info()]
    out["openblas_env"] = {v: os.environ.get(v) for v in ("OPENBLAS_CORETYPE",
                                                          "OPENBLAS_L2_SIZE")}
    return out


# --------------------------------------------------------------------------- #
# The worker: one library, commands as JSON lines on stdin, answers on stdout
# --------------------------------------------------------------------------- #


def _mnist(rows):
    from handgrad.datasets import load_mnist

    (x_train, y_train), (x_test, _) = load_mnist(progress=False)
    X = (x_train.reshape(len(x_train), -1)[:rows] / 255.0).astype(np.float32)
    X_test = (x_test.reshape(len(x_test), -1) / 255.0).astype(np.float32)
    return X, y_train[:rows].astype(np.int64), X_test


def worker(library, rows):
    """Serve one library's epochs until told to quit (or stdin closes)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # protocol channel
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    import peers

    X, y, X_test = _mnist(rows)
    runner = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "quit":
                break
            if op == "info":
                reply = {"info": peers.library_info(library),
                         "sgemm_gflops": peers.square_sgemm_gflops(library)}
            elif op == "setup":
                runner = None
                runner = peers.make_runner(library, X, y, cmd["hidden"], cmd["batch"],
                                           cmd["optimizer"], LR[cmd["optimizer"]],
                                           epochs=cmd.get("epochs", 1))
                t0 = time.perf_counter()
                runner.warm_up()
                reply = {"compile_s": time.perf_counter() - t0}
            elif op == "epoch":
                reply = {"seconds": runner.epoch(cmd["seed"])}
            elif op == "shaped_gemm":
                reply = {"seconds": shaped_gemm_seconds(cmd["batch"], 784, cmd["hidden"], 10,
                                                        len(X))}
            elif op == "predict":
                reply = time_predict(X_test, cmd["repeats"])
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception:  # noqa: BLE001 - reported to the parent, which carries on
            reply = {"error": traceback.format_exc(limit=6)}
        answers.write(json.dumps(reply) + "\n")
    return 0


class Worker:
    """A library's worker process, asked one command at a time."""

    def __init__(self, library, rows, env):
        self.library = library
        env = dict(env)
        if library == "handgrad-numpy":
            env["HANDGRAD_NO_ACCEL"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", library, "--rows",
             str(rows)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
            bufsize=1)

    def ask(self, op, **kwargs):
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            return {"error": f"{self.library} worker exited with {self.proc.wait()}"}
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def child_environment(keep):
    """The workers' environment: ours, less the OpenBLAS kernel overrides unless ``keep``."""
    from handgrad.sysinfo import OPENBLAS_ENV

    removed = {} if keep else {k: os.environ[k] for k in OPENBLAS_ENV if k in os.environ}
    return {k: v for k, v in os.environ.items() if k not in removed}, removed


# --------------------------------------------------------------------------- #
# The parent
# --------------------------------------------------------------------------- #


def interleaved(workers, opt, H, B, repeats, epochs=1):
    """Set up every worker for one cell, then time ``repeats`` rounds of epochs in a
    rotated order: ``(samples {library: [seconds]}, compile_s, errors)``."""
    libs = list(workers)
    compile_s, errors = {}, {}
    for lib in libs:
        r = workers[lib].ask("setup", hidden=H, batch=B, optimizer=opt, epochs=epochs)
        if "error" in r:
            errors[lib] = r["error"]
            print(f"  {lib}: setup failed:\n{r['error']}", file=sys.stderr, flush=True)
        else:
            compile_s[lib] = r["compile_s"]
    active = [lib for lib in libs if lib not in errors]
    samples = {lib: [] for lib in active}
    for rep in range(repeats):
        shift = rep % len(active)
        for lib in active[shift:] + active[:shift]:  # a rotated order each repeat
            if lib in errors:
                continue
            r = workers[lib].ask("epoch", seed=rep)
            if "error" in r:
                errors[lib] = r["error"]
                print(f"  {lib}: epoch failed:\n{r['error']}", file=sys.stderr, flush=True)
            else:
                samples[lib].append(r["seconds"])
    samples = {lib: v for lib, v in samples.items() if v and lib not in errors}
    return samples, compile_s, errors


def run_cell(workers, opt, H, B, rows, repeats, peak, extrapolate=False):
    """One cell of the grid. With ``extrapolate``, epochs of ``rows`` rows are timed and
    every time is scaled to a whole MNIST epoch (``MNIST_ROWS / rows``)."""
    samples, compile_s, errors = interleaved(workers, opt, H, B, repeats)
    scale = MNIST_ROWS / rows if extrapolate else 1.0
    epoch_rows = MNIST_ROWS if extrapolate else rows
    seconds = {lib: scale * statistics.median(v) for lib, v in samples.items()}
    flops = gemm_flops(B, 784, H, 10, epoch_rows)
    bound = flops / (peak * 1e9)
    row = {"optimizer": opt, "hidden": H, "batch": B, "rows": epoch_rows, "seconds": seconds,
           "samples": samples, "compile_s": compile_s, "errors": errors,
           "gemm_gflop": flops / 1e9, "gemm_bound_s": bound,
           "gemm_share": {lib: bound / s for lib, s in seconds.items()}}
    if extrapolate:
        row.update(measured_rows=rows, extrapolation=scale)  # samples: as measured
    if "handgrad" in workers:
        r = workers["handgrad"].ask("shaped_gemm", hidden=H, batch=B)
        row["shaped_gemm_s"] = None if r.get("seconds") is None else scale * r["seconds"]
    peers = {lib: seconds[lib] for lib in PEERS if lib in seconds}
    if peers:
        fastest = min(peers, key=peers.get)
        row["fastest_peer"] = fastest
        for lib in ("handgrad", "handgrad-numpy"):
            if lib in seconds:
                row[f"{lib}_speedup"] = peers[fastest] / seconds[lib]
    return row


def _describe(row):
    s = row["seconds"]
    parts = [f"{lib} {t:.3f}s" for lib, t in s.items()]
    ratio = "".join(f"  {lib} {row[f'{lib}_speedup']:.2f}x" for lib in ("handgrad",
                                                                          "handgrad-numpy")
                    if f"{lib}_speedup" in row)
    fastest = f"  (fastest peer: {row['fastest_peer']}{ratio})" if "fastest_peer" in row else ""
    share = row["gemm_share"].get("handgrad")
    return (f"{row['optimizer']:4s} H={row['hidden']:<4d} B={row['batch']:<4d} "
            + "  ".join(parts) + fastest
            + (f"  GEMM bound {row['gemm_bound_s']:.3f}s, handgrad {100 * share:.0f}%"
               if share else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--hidden", type=positive_int, nargs="+", default=[128, 256, 800, 2048],
                    help="hidden widths H")
    ap.add_argument("--batch", type=positive_int, nargs="+", default=[32, 128, 256, 512],
                    help="batch sizes B")
    ap.add_argument("--optimizer", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"],
                    help="optimizers")
    ap.add_argument("--libraries", nargs="+", default=list(DEFAULT_LIBRARIES),
                    type=library_name, metavar="LIBRARY",
                    help=f"the libraries to time, of {', '.join(ALL_LIBRARIES)} "
                         f"(pytorch and scikit-learn are accepted for torch and sklearn)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed epochs per cell")
    ap.add_argument("--rows", type=positive_int, default=60000,
                    help="training rows per epoch (60000: all of MNIST)")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="threads per library (default: every core); --threads 1 compares "
                         "single-core speed, which a busy shared machine does not distort")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the timed workers")
    ap.add_argument("--no-predict", action="store_true",
                    help="skip predict_proba against onnxruntime")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--predict-only", action="store_true",
                      help="time predict_proba vs onnxruntime alone and update that part of "
                           "--out")
    ap.add_argument("--extrapolate", action="store_true",
                    help=f"time epochs of --rows rows and scale every time to a whole MNIST "
                         f"epoch ({MNIST_ROWS:,} rows); the table says so")
    est = ap.add_argument_group("handgrad.MLPClassifier against handgrad.fit (issue #15), "
                                "for each --optimizer, after the grid")
    est.add_argument("--estimator-hidden", type=positive_int, default=256,
                     help="its hidden width")
    est.add_argument("--estimator-batch", type=positive_int, default=128, help="its batch size")
    est.add_argument("--estimator-epochs", type=positive_int, default=3,
                     help="epochs per timed fit (the time reported is per epoch)")
    est.add_argument("--no-estimator", action="store_true", help="skip it")
    only.add_argument("--estimator-only", action="store_true",
                      help="run the estimator rows alone and update that part of --out")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.json",
                    help="the result file; cells already in it that this run does not time "
                         "are kept (see --replace)")
    ap.add_argument("--replace", action="store_true",
                    help="write only this run's results to --out, discarding what it holds")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.rows)
    args.libraries = list(dict.fromkeys(args.libraries))
    command = " ".join(["speed.py", *(sys.argv[1:] if argv is None else argv)])
    problem = check_out(args.out)
    problem = (f"--out {problem}" if problem else None) or check_libraries(
        ["handgrad"] if args.predict_only or args.estimator_only else args.libraries)
    if problem:
        print(f"speed.py: {problem}", file=sys.stderr)
        return 2
    earlier = None
    if args.predict_only or args.estimator_only:  # they update a part of --out: readable?
        problem = None if args.replace else readable_results(args.out)
    elif not args.replace:
        earlier, problem = earlier_results(args)
    if problem:
        print(f"speed.py: {problem}", file=sys.stderr)
        return 2

    from handgrad.sysinfo import system_info

    parent = system_info()  # this environment, as a user running handgrad here has it
    env, removed = child_environment(args.keep_env)
    threads = args.threads or os.cpu_count() or 1
    if args.threads:
        import peers

        env.update(peers.thread_environment(args.threads))
    if removed:
        print(f"timed workers run without {' '.join(f'{k}={v}' for k, v in removed.items())}"
              + (f" ({parent['warning'][9:]})" if parent["warning"] else ""), flush=True)
    if args.predict_only:
        return predict_only(args, env, command)
    if args.estimator_only:
        return estimator_only(args, env, command)
    workers = {lib: Worker(lib, args.rows, env) for lib in args.libraries}
    doc = {"benchmark": "speed", "date": time.strftime("%Y-%m-%d"), "command": command,
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "cpu": parent["cpu"], "cpu_count": os.cpu_count()},
           "parent_environment": {"openblas_env": parent["environment"],
                                  "numpy_kernel": parent["blas"].get("kernel"),
                                  "warning": parent["warning"]},
           "removed_env": removed, "libraries": {}, "results": []}
    try:
        for lib, w in workers.items():
            r = w.ask("info")
            if "error" in r:
                raise SystemExit(f"the {lib} worker failed to start:\n{r['error']}")
            doc["libraries"][lib] = r
            print(f"{lib}: 2048² sgemm {r['sgemm_gflops']:.0f} GFLOP/s", flush=True)
        peak = max(r["sgemm_gflops"] for r in doc["libraries"].values())
        doc["gemm_throughput_gflops"] = peak
        doc["threads"] = threads
        # both optimizers for each shape before the next: a stopped run covers both
        cells = [(o, H, B) for H in args.hidden for B in args.batch for o in args.optimizer]
        doc["cells_planned"] = len(cells)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
        try:
            for opt, H, B in cells:
                row = run_cell(workers, opt, H, B, args.rows, args.repeats, peak,
                               args.extrapolate)
                row["run"] = {"date": doc["date"], "command": command}
                doc["results"].append(row)
                print(_describe(row), flush=True)
                # after every cell: a stopped run keeps what it has
                _write(args.out, merge_results(doc, earlier))
            if not args.no_estimator:
                doc["estimator"] = estimator_section(args, env, command, args.rows,
                                                     workers.get("handgrad"))
                _write(args.out, merge_results(doc, earlier))
            if not args.no_predict and "handgrad" in workers:
                doc["predict"] = ask_predict(workers["handgrad"], max(args.repeats, 5),
                                             command)
        except KeyboardInterrupt:  # the cells finished so far are the result, marked as such
            print(f"stopped after {len(doc['results'])} of {len(cells)} cells", flush=True)
            doc["stopped_early"] = True
    finally:
        for w in workers.values():
            w.close()
    merged = merge_results(doc, earlier)
    _write(args.out, merged)
    kept = len(merged["results"]) - len(doc["results"])
    print(f"wrote {len(doc['results'])} cell{'s' if len(doc['results']) != 1 else ''} into "
          f"{args.out}" + (f"; {kept} kept from {'an earlier run' if len(merged['runs']) == 2 else 'earlier runs'}"
                           f" (--replace discards them)" if kept else "")
          + ("; its estimator and predict parts kept from before"
             if earlier and (("estimator" not in doc and "estimator" in merged)
                             or ("predict" not in doc and "predict" in merged)) else ""))
    return 0


# --------------------------------------------------------------------------- #
# Checks made before any timing, and merging a run into an earlier result file
# --------------------------------------------------------------------------- #


LIBRARY_ALIASES = {"pytorch": "torch", "scikit-learn": "sklearn", "torch.compile": "torch-compile"}


def library_name(text):
    """argparse type: one of ALL_LIBRARIES, or mnist_accuracy.py's spelling of one."""
    name = LIBRARY_ALIASES.get(text, text)
    if name not in ALL_LIBRARIES:
        raise argparse.ArgumentTypeError(f"unknown library {text!r}; choose from "
                                         f"{', '.join(ALL_LIBRARIES)}")
    return name


# the module each library needs, and how to install it
REQUIREMENTS = {"torch": ("torch", "pip install torch==2.13.0"),
                "torch-compile": ("torch", "pip install torch==2.13.0"),
                "jax": ("jax", "pip install 'jax>=0.4.30' 'jaxlib>=0.4.30'"),  # the bench extra's
                "sklearn": ("sklearn", "pip install scikit-learn")}


def check_libraries(libraries):
    """One line naming each library that is not installed, the command that installs it
    and the --libraries that leaves it out; None when all are there."""
    import importlib.util

    missing = {lib: REQUIREMENTS[lib] for lib in libraries
               if lib in REQUIREMENTS and importlib.util.find_spec(REQUIREMENTS[lib][0]) is None}
    if not missing:
        return None
    modules = dict.fromkeys(m for m, _ in missing.values())
    installs = " && ".join(dict.fromkeys(i for _, i in missing.values()))
    rest = [lib for lib in libraries if lib not in missing]
    return (f"{', '.join(modules)} not installed: {installs}, or leave "
            f"{'it' if len(missing) == 1 else 'them'} out with "
            + (f"--libraries {' '.join(rest)}" if rest else "--libraries handgrad"))


def _cell_key(row):
    return (row["optimizer"], row["hidden"], row["batch"])


def readable_results(path):
    """Why the result file ``path`` cannot be read and updated, or None."""
    if not path.exists():
        return None
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return (f"--out {path} holds no readable results ({exc}); give another --out, or "
                f"--replace to overwrite it")
    return None


def earlier_results(args):
    """``(doc, None)`` with the results already in ``--out`` that this run merges into,
    ``(None, None)`` when there are none, or ``(None, why)`` when its cells could not sit
    beside this run's in one table (other rows per epoch, thread count or machine)."""
    if not args.out.exists():
        return None, None
    problem = readable_results(args.out)
    if problem:
        return None, problem
    doc = json.loads(args.out.read_text())
    if doc.get("benchmark") != "speed" or not doc.get("results"):
        return (doc if doc.get("benchmark") == "speed" else None), None
    rows = MNIST_ROWS if args.extrapolate else args.rows
    threads = args.threads or os.cpu_count() or 1
    theirs = {"rows per epoch (--rows/--extrapolate)": {r["rows"] for r in doc["results"]},
              "--threads": {doc.get("threads")},
              "cores": {(doc.get("machine") or {}).get("cpu_count")}}
    ours = {"rows per epoch (--rows/--extrapolate)": rows, "--threads": threads,
            "cores": os.cpu_count()}
    for what, value in ours.items():
        if theirs[what] != {value}:
            return None, (f"--out {args.out} holds cells measured with {what} "
                          f"{', '.join(map(str, sorted(theirs[what], key=str)))}, this run "
                          f"{value}: its cells would not compare. Give another --out (e.g. "
                          f"--out /tmp/speed.json), or --replace to overwrite it")
    return doc, None


def merge_results(doc, earlier):
    """This run's ``doc`` merged into ``earlier`` (a result file's contents): its cells
    replace those of the same optimizer, H and batch, the rest are kept; its libraries'
    descriptions are added; the estimator and predict parts it did not run are kept.
    Every cell says which run measured it (``run``); ``runs`` lists them."""
    if not earlier:
        return dict(doc, runs=[{"date": doc["date"], "command": doc["command"]}])
    before = {"date": earlier.get("date"), "command": earlier.get("command")}
    ours = {_cell_key(r) for r in doc["results"]}
    kept = [dict(r, run=r.get("run") or before) for r in earlier.get("results", [])
            if _cell_key(r) not in ours]
    results = kept + doc["results"]
    order = {}  # the grid's order: optimizers within a shape, shapes by H then batch
    results.sort(key=lambda r: (r["hidden"], r["batch"], order.setdefault(r["optimizer"],
                                                                          len(order))))
    merged = dict(doc, results=results,
                  libraries={**earlier.get("libraries", {}), **doc["libraries"]})
    for part in ("estimator", "predict"):
        if part not in doc and part in earlier:
            merged[part] = earlier[part]
    runs = []
    for r in results:
        if r["run"] not in runs:
            runs.append(r["run"])
    merged["runs"] = runs or [{"date": doc["date"], "command": doc["command"]}]
    return merged


def run_estimator(workers, optimizers, H, B, repeats, epochs):
    """Issue #15: ``handgrad.MLPClassifier`` against ``handgrad.fit`` with the same
    settings, interleaved in the same run; a row per optimizer with the ratio of their
    per-epoch medians (target: the estimator within 5%, ratio ≤ 1.05)."""
    rows = []
    for opt in optimizers:
        samples, compile_s, errors = interleaved(workers, opt, H, B, repeats, epochs)
        seconds = {lib: statistics.median(v) for lib, v in samples.items()}
        row = {"optimizer": opt, "hidden": H, "batch": B, "epochs_per_fit": epochs,
               "seconds": seconds, "samples": samples, "compile_s": compile_s,
               "errors": errors}
        if {"handgrad", "handgrad-estimator"} <= set(seconds):
            row["estimator_vs_fit"] = seconds["handgrad-estimator"] / seconds["handgrad"]
            row["within_5_percent"] = row["estimator_vs_fit"] <= 1.05
        print(f"estimator {opt:4s} H={H} B={B}: " + "  ".join(
            f"{lib} {t:.3f}s" for lib, t in seconds.items())
            + (f"  estimator/fit {row['estimator_vs_fit']:.3f}"
               if "estimator_vs_fit" in row else ""), flush=True)
        rows.append(row)
    return rows


def estimator_section(args, env, command, rows, fit_worker=None):
    """The estimator rows, with a ``handgrad-estimator`` worker (and a ``handgrad``
    worker unless the grid's is passed): ``{settings, results}`` for the result file."""
    workers = {"handgrad": fit_worker or Worker("handgrad", rows, env),
               "handgrad-estimator": Worker("handgrad-estimator", rows, env)}
    try:
        results = run_estimator(workers, args.optimizer, args.estimator_hidden,
                                args.estimator_batch, args.repeats, args.estimator_epochs)
        info = workers["handgrad-estimator"].ask("info")
    finally:
        for lib, w in workers.items():
            if w is not fit_worker:
                w.close()
    return {"command": command, "date": time.strftime("%Y-%m-%d"), "rows": rows,
            "repeats": args.repeats, "accelerator": (info.get("info") or {}).get("accelerator"),
            "results": results}


def estimator_only(args, env, command):
    """Rerun the estimator-vs-fit rows alone; keep the rest of ``--out`` as it was."""
    section = estimator_section(args, env, command, args.rows)
    doc = (json.loads(args.out.read_text()) if args.out.exists() and not args.replace
           else {"benchmark": "speed"})
    doc["estimator"] = section
    _write(args.out, doc)
    print(f"wrote the estimator part of {args.out}")
    return 0 if all(not r["errors"] for r in section["results"]) else 1


def ask_predict(worker, repeats, command):
    """predict_proba vs onnxruntime in ``worker`` (a handgrad worker), printed and dated."""
    predict = worker.ask("predict", repeats=repeats)
    if "error" in predict:
        print(f"predict_proba failed:\n{predict['error']}", file=sys.stderr, flush=True)
        return predict
    predict["command"], predict["date"] = command, time.strftime("%Y-%m-%d")
    kernels = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                        f"{b['num_threads']} threads)" for b in predict["blas"])
    print(f"predict_proba on {predict['rows']:,} test images: handgrad "
          f"{predict['handgrad_s'] * 1e3:.1f} ms"
          + (f", onnxruntime {predict['onnxruntime_s'] * 1e3:.1f} ms"
             if predict["onnxruntime_s"] else " (onnxruntime not installed)")
          + f" (medians of {predict['repeats']}; {kernels})", flush=True)
    return predict


def predict_only(args, env, command):
    """Rerun the predict_proba comparison alone (in a handgrad worker, on the timed
    workers' environment); keep the rest of ``--out`` as it was."""
    w = Worker("handgrad", args.rows, env)
    try:
        predict = ask_predict(w, args.repeats, command)
    finally:
        w.close()
    if "error" in predict:
        return 1
    doc = (json.loads(args.out.read_text()) if args.out.exists() and not args.replace
           else {"benchmark": "speed"})
    doc["predict"] = dict(predict, machine={"python": platform.python_version(),
                                            "platform": platform.platform(),
                                            "cpu_count": os.cpu_count()})
    _write(args.out, doc)
    print(f"wrote the predict part of {args.out}")
    return 0


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    sys.exit(main())

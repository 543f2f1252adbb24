"""Seconds per epoch: handgrad's MLPClassifier/MLPRegressor against scikit-learn's, side by side.

Both libraries get the same estimator settings and the same arrays, and each row is one
epoch (``partial_fit``, which is one epoch in both), timed interleaved (handgrad,
scikit-learn, handgrad, ...) with the median of the repeats reported. Every timed epoch
runs in a fresh process of its own, after a warm-up fit on 400 rows (imports, compiled
kernels), without ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``:

- ``MLPClassifier`` on MNIST (60,000 images as float32), 784-H-10 for H = 256 and 800,
  ``adam`` and ``sgd``, batch 128;
- ``MLPRegressor`` on a synthetic 100,000 × 100 regression (``make_regression``), 100 hidden
  units, ``adam``, batch 200;
- for the dense rows, the epoch's matrix products alone (NumPy, float32, the row's shapes,
  back to back): scikit-learn's time over theirs is the *ceiling*, the ratio handgrad
  would reach if everything but its matrix products took no time (both libraries run the
  same OpenBLAS products);
- ``MLPClassifier`` on a sparse input, a 50,000 × 20,000 CSR matrix at 0.5 % density, both
  libraries given the same matrix; each run also reports how far
  its peak resident memory rose above what it held before the epoch (Linux's VmHWM, reset
  just before the epoch, after a warm-up fit on 400 rows has loaded each library's code),
  against the sparse data plus the model: a dense copy would be 4 GB.

    python benchmarks/estimator_speed.py             # writes results/estimator_speed.json
    python benchmarks/estimator_speed.py --repeats 1 --rows 4096 --sparse-rows 2000 \\
        --out /tmp/e.json
    python benchmarks/make_tables.py                 # regenerates the README's table

Needs real MNIST (found as handgrad finds it) and scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_OUT = HERE / "results" / "estimator_speed.json"

from benchargs import (HelpFormatter, changed, check_out, fraction,  # noqa: E402
                       output_path, positive_int)
from speed import machine_info  # noqa: E402  one description of the machine for all results

LIBRARIES = ("handgrad", "sklearn")


def estimator(library, kind, **params):
    if library == "handgrad":
        import handgrad

        return getattr(handgrad, kind)(**params)
    from sklearn import neural_network

    return getattr(neural_network, kind)(**params)


# Each timed epoch runs in a fresh process of its own: libraries that share a process
# also share its thread pools (NumPy's OpenBLAS, SciPy's, OpenMP's), and threads one
# library left spinning slow the other's next epoch.
DENSE_CHILD = """
import json, sys, time, warnings
import numpy as np
sys.path.insert(0, {here!r})
from estimator_speed import estimator

lib, kind, folder, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
params = json.loads(sys.argv[4])
X, y = np.load(folder + "/X.npy"), np.load(folder + "/y.npy")
extra = {{"classes": np.unique(y)}} if kind == "MLPClassifier" else {{}}
with warnings.catch_warnings():  # one-time costs (imports, compiled kernels) before timing
    warnings.simplefilter("ignore")
    estimator(lib, kind, **params).partial_fit(X[:400], y[:400], **extra)
    est = estimator(lib, kind, random_state=seed, **params)
    t0 = time.perf_counter()
    est.partial_fit(X, y, **extra)
    seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds}}))
"""
PRODUCTS_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
from speed import shaped_gemm_seconds

B, D, H, M, rows = map(int, sys.argv[1:6])
print(json.dumps({{"seconds": shaped_gemm_seconds(B, D, H, M, rows, repeats=5)}}))
"""
TIMING_ENV_DROP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # kept in tests, not in timing


def products_alone(B, D, H, M, rows):
    """Seconds of an epoch's matrix products alone (NumPy, float32), in a fresh process:
    the median of 5 passes of :func:`speed.shaped_gemm_seconds`."""
    return run_child(PRODUCTS_CHILD.format(here=str(HERE)), B, D, H, M, rows)["seconds"]


def child_env():
    """The environment of a timed child: without the variables that force OpenBLAS onto
    an older kernel (they stay in tests and CI)."""
    return {k: v for k, v in os.environ.items() if k not in TIMING_ENV_DROP}


def run_child(code, *argv):
    out = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                         text=True, env=child_env())
    if out.returncode:
        raise RuntimeError(f"a timed child ({' '.join(map(str, argv[:2]))}) failed:\n"
                           f"{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(kind, X, y, params, repeats):
    """Seconds of one epoch (``partial_fit`` from a fresh estimator) per library and
    repeat, each in its own process, interleaved: handgrad, scikit-learn, handgrad, ..."""
    samples = {lib: [] for lib in LIBRARIES}
    code = DENSE_CHILD.format(here=str(HERE))
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "X.npy", X)
        np.save(Path(folder) / "y.npy", y)
        for r in range(repeats):
            for lib in LIBRARIES:
                reply = run_child(code, lib, kind, folder, json.dumps(params), r)
                samples[lib].append(reply["seconds"])
    return samples


SPARSE_CHILD = """
import gc, json, sys, time, warnings
import numpy as np, scipy.sparse as sp
sys.path.insert(0, {here!r})
from estimator_speed import estimator

def status_kib(field):  # VmRSS / VmHWM of this process, in KiB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

lib, seed = sys.argv[1], int(sys.argv[5])
rows, cols, density = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rng = np.random.default_rng(0)
nnz = int(rows * cols * density)
X = sp.csr_matrix((rng.random(nnz, dtype=np.float32),
                   (rng.integers(0, rows, nnz), rng.integers(0, cols, nnz))), shape=(rows, cols))
y = rng.integers(0, 10, rows)
sparse_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
est = estimator(lib, "MLPClassifier", hidden_layer_sizes=(100,), solver="adam", batch_size=200,
                random_state=seed)
with warnings.catch_warnings():  # one-time costs (imports, compiled kernels) before measuring
    warnings.simplefilter("ignore")
    estimator(lib, "MLPClassifier", hidden_layer_sizes=(100,), solver="adam",
              batch_size=200).partial_fit(X[:400], y[:400], classes=np.arange(10))
gc.collect()
with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS (Linux)
    f.write("5")
before = status_kib("VmRSS") * 1024
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    est.partial_fit(X, y, classes=np.arange(10))
    seconds = time.perf_counter() - t0
grown = status_kib("VmHWM") * 1024 - before
print(json.dumps({{"seconds": seconds, "peak_growth_bytes": grown, "sparse_bytes": sparse_bytes,
                  "nnz": int(X.nnz)}}))
"""


def sparse_runs(rows, cols, density, repeats):
    """Each library's epoch on the same CSR matrix, each run in a fresh process."""
    code = SPARSE_CHILD.format(here=str(HERE))
    samples = {lib: [] for lib in LIBRARIES}
    for r in range(repeats):
        for lib in LIBRARIES:
            samples[lib].append(run_child(code, lib, rows, cols, density, r))
    return samples


def median_row(name, samples, shaped_gemm_s=None, **extra):
    """A result row; ``shaped_gemm_s``: the epoch's matrix products alone, back to back
    (float32, the row's shapes), which bounds what any implementation of it can reach."""
    seconds = {lib: statistics.median(samples[lib]) for lib in LIBRARIES}
    row = {"row": name, "seconds": seconds, "samples": samples,
           "speedup_vs_sklearn": seconds["sklearn"] / seconds["handgrad"], **extra}
    ceiling = ""
    if shaped_gemm_s is not None:
        row["shaped_gemm_s"] = shaped_gemm_s
        row["ceiling_vs_sklearn"] = seconds["sklearn"] / shaped_gemm_s
        ceiling = f", products alone {shaped_gemm_s:.3f}s: ceiling {row['ceiling_vs_sklearn']:.2f}x"
    print(f"{name:48s} handgrad {seconds['handgrad']:7.3f}s  scikit-learn "
          f"{seconds['sklearn']:7.3f}s  ({row['speedup_vs_sklearn']:.2f}x{ceiling})", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed epochs per row")
    ap.add_argument("--rows", type=positive_int, default=60000, help="MNIST rows per epoch")
    ap.add_argument("--regression-rows", type=positive_int, default=100_000,
                    help="rows of the regression")
    ap.add_argument("--sparse-rows", type=positive_int, default=50_000,
                    help="rows of the sparse input")
    ap.add_argument("--sparse-cols", type=positive_int, default=20_000,
                    help="columns of the sparse input")
    ap.add_argument("--density", type=fraction, default=0.005,
                    help="the sparse input's density")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the result file (default: {DEFAULT_OUT.relative_to(HERE.parent)}, "
                         f"or for a run of fewer rows a scratch file it names)")
    args = ap.parse_args(argv)
    args.out = output_path(ap, args, DEFAULT_OUT, changed(
        ap, args, ["rows", "regression_rows", "sparse_rows", "sparse_cols", "density"]))
    problem = check_out(args.out)
    if problem:
        print(f"estimator_speed.py: --out {problem}", file=sys.stderr)
        return 2

    from sklearn.datasets import make_regression

    from handgrad.datasets import load_mnist

    (x_train, y_train), _ = load_mnist(progress=False)
    X = (x_train.reshape(len(x_train), -1)[:args.rows] / 255.0).astype(np.float32)
    y = y_train[:args.rows].astype(np.int64)
    results = []
    for solver in ("adam", "sgd"):
        for H in (256, 800):
            params = dict(hidden_layer_sizes=(H,), solver=solver, batch_size=128,
                          learning_rate_init=1e-3 if solver == "adam" else 0.01)
            samples = interleaved("MLPClassifier", X, y, params, args.repeats)
            results.append(median_row(f"MLPClassifier 784-{H}-10 {solver}, MNIST epoch",
                                      samples, kind="MLPClassifier", hidden=H, solver=solver,
                                      batch=128, rows=len(X),
                                      shaped_gemm_s=products_alone(128, 784, H, 10, len(X))))
    Xr, yr = make_regression(n_samples=args.regression_rows, n_features=100, noise=1.0,
                             random_state=0)
    Xr, yr = Xr.astype(np.float32), (yr / yr.std()).astype(np.float32)
    params = dict(hidden_layer_sizes=(100,), solver="adam", batch_size=200)
    samples = interleaved("MLPRegressor", Xr, yr, params, args.repeats)
    results.append(median_row(f"MLPRegressor 100-100-1 adam, {len(Xr):,} × 100", samples,
                              kind="MLPRegressor", hidden=100, solver="adam", batch=200,
                              rows=len(Xr),
                              shaped_gemm_s=products_alone(200, 100, 100, 1, len(Xr))))
    runs = sparse_runs(args.sparse_rows, args.sparse_cols, args.density, args.repeats)
    samples = {lib: [r["seconds"] for r in runs[lib]] for lib in LIBRARIES}
    model_bytes = 4 * (args.sparse_cols * 100 + 100 + 100 * 10 + 10)
    peak = {lib: max(r["peak_growth_bytes"] for r in runs[lib]) for lib in LIBRARIES}
    sparse_bytes = runs["handgrad"][0]["sparse_bytes"]
    results.append(median_row(
        f"MLPClassifier sparse {args.sparse_rows:,} × {args.sparse_cols:,} CSR adam", samples,
        kind="MLPClassifier", hidden=100, solver="adam", batch=200, rows=args.sparse_rows,
        sparse=True, density=args.density, nnz=runs["handgrad"][0]["nnz"],
        sparse_bytes=sparse_bytes, model_bytes=model_bytes, peak_growth_bytes=peak,
        memory_bound_bytes=2 * sparse_bytes + model_bytes))
    print(f"peak memory growth: handgrad {peak['handgrad'] / 2**20:.0f} MiB, scikit-learn "
          f"{peak['sklearn'] / 2**20:.0f} MiB; sparse data {sparse_bytes / 2**20:.0f} MiB, "
          f"model {model_bytes / 2**20:.0f} MiB")
    import sklearn

    import handgrad

    doc = {"benchmark": "estimator_speed", "machine": machine_info(),
           "sklearn": sklearn.__version__, "handgrad": handgrad.__version__,
           "results": results, "date": time.strftime("%Y-%m-%d"),
           "timing_env_removed": [v for v in TIMING_ENV_DROP if v in os.environ],
           "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

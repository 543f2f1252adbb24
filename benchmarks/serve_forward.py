"""The served forward pass for the few rows of a dynamic batch: which product orientation.

For B = 1 … 64 rows of a 784-H-10 network (one BLAS thread, as ``handgrad serve`` runs
its passes), side by side in one run, best of ``--repeats`` timings each:

- the first layer's product as the training forward computes it, ``X Wᵀ`` (B, H), and
  transposed, ``W Xᵀ`` (H, B), the orientation of the served pass;
- the whole pass for raw pixels: :meth:`MLP.predict_proba` after :meth:`MLP.prepare`
  (the library's forward, workspaces per batch size) against
  :meth:`handgrad.serve.served.ServedModel.predict_proba` (transposed, no workspaces).

    python benchmarks/serve_forward.py            # writes results/serve-forward.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serve import TIMING_ENV_DROP, build_model  # noqa: E402  (the benchmark's own network)

from handgrad import _accel  # noqa: E402
from handgrad.serve.served import ServedModel  # noqa: E402


def best_us(f, number, repeats):
    f()
    return min(timeit.repeat(f, number=number, repeat=repeats)) / number * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=800, help="hidden units H of 784-H-10")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--repeats", type=int, default=15, help="timings per entry; the best counts")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve-forward.json")
    args = ap.parse_args(argv)
    forced = [k for k in TIMING_ENV_DROP if k in os.environ]
    if forced:
        print(f"warning: {', '.join(forced)} set: the timings use a forced BLAS kernel",
              file=sys.stderr)
    _accel.enabled()  # the accelerator's kernels load SciPy's OpenBLAS: before the limit
    threadpool_limits(1, user_api="blas")  # as handgrad serve runs its passes
    model = build_model(args.hidden, seed=0)
    served = ServedModel("mnist", model)
    W = model.params["W1"]  # (H, D)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'B':>3}  {'X Wᵀ':>8}  {'W Xᵀ':>8}  {'ratio':>6}  {'library':>8}  {'served':>8}  "
          f"{'ratio':>6}  (µs per pass)")
    for B in args.batch:
        X = rng.integers(0, 256, (B, 784)).astype(np.float32)  # raw pixels (B, D)
        Xp = model.prepare(X)  # (B, D)
        out = np.empty((B, W.shape[0]), np.float32)  # (B, H)
        outT = np.empty((W.shape[0], B), np.float32)  # (H, B)
        np.testing.assert_allclose(served.predict_proba(X), model.predict_proba(Xp),
                                   rtol=1e-4, atol=1e-6)
        number = max(5, 2000 // (B * 10))
        xw = best_us(lambda: np.matmul(Xp, W.T, out=out), number, args.repeats)  # (B, H)
        wx = best_us(lambda: np.matmul(W, Xp.T, out=outT), number, args.repeats)  # (H, B)
        lib = best_us(lambda: model.predict_proba(model.prepare(X)), number, args.repeats)
        srv = best_us(lambda: served.predict_proba(X), number, args.repeats)
        rows.append({"B": B, "x_wt_us": xw, "w_xt_us": wx, "library_pass_us": lib,
                     "served_pass_us": srv})
        print(f"{B:3d}  {xw:8.1f}  {wx:8.1f}  {xw / wx:5.2f}×  {lib:8.1f}  {srv:8.1f}  "
              f"{lib / srv:5.2f}×")
    doc = {"command": "serve_forward.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "network": [784, args.hidden, 10],
           "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "blas": [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                           "num_threads")} for d in threadpool_info()],
           "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

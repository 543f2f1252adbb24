"""Seconds per MNIST training epoch: handgrad vs PyTorch eager vs scikit-learn, side by side.

Every configuration is timed in one process, interleaved (handgrad, torch, sklearn,
handgrad, torch, sklearn, ...), and the median of the repeats is reported, so a
noisy machine slows all three alike. Also measured: this machine's float32 GEMM
throughput (a large square sgemm, and the epoch's own GEMM shapes run back to
back), the GEMM bound of each configuration (its matrix-product FLOPs divided by
that throughput) and handgrad's efficiency against it, and predict_proba on the
10,000 test images against onnxruntime when it is installed.

    python benchmarks/speed.py                      # the full grid, writes results/speed.json
    python benchmarks/speed.py --hidden 256 --batch 128 --repeats 5
    python benchmarks/speed.py --predict-only --repeats 21   # reruns predict_proba alone
    python benchmarks/make_tables.py                # regenerates the README's tables

Run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE python benchmarks/speed.py ...``) so OpenBLAS picks its own kernel; the
kernel it used (threadpoolctl) and those variables are recorded in the result.

Needs real MNIST (found as handgrad finds it: $HANDGRAD_DATA/mnist or the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import handgrad
from handgrad.datasets import load_mnist

HERE = Path(__file__).resolve().parent


def gemm_flops(B, D, H, M, n_rows):
    """Matrix-product FLOPs of one epoch for D-H-M: forward (F1, F3), B4/B7 and B5."""
    per_row = 2 * (D * H + H * M)  # forward
    per_row += 2 * (H * D + M * H)  # weight gradients (B4, B7)
    per_row += 2 * (M * H)  # ∂L/∂h (B5); none for the input layer
    return per_row * n_rows


def square_sgemm_throughput(n=2048, repeats=5):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, a, out=c)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, a, out=c)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times)


def shaped_gemm_seconds(B, D, H, M, n_rows, repeats=3):
    """The epoch's own matrix products alone, back to back (no other work)."""
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


def make_optimizer(name, lr):
    return handgrad.optim.Adam(lr=lr) if name == "adam" else handgrad.optim.SGD(lr)


def time_handgrad(X, y, H, B, opt, lr, seed):
    model = handgrad.MLP(X.shape[1], H, 10, seed=seed)
    t0 = time.perf_counter()
    handgrad.fit(model, X, y, optimizer=make_optimizer(opt, lr), epochs=1, batch_size=B,
                 seed=seed)
    return time.perf_counter() - t0


def time_torch(torch, X, y, H, B, opt, lr, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], H), torch.nn.ReLU(),
                              torch.nn.Linear(H, 10))
    optim = (torch.optim.Adam(net.parameters(), lr=lr) if opt == "adam"
             else torch.optim.SGD(net.parameters(), lr=lr))
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    t0 = time.perf_counter()
    perm = torch.randperm(len(Xt))
    for i in range(0, len(Xt), B):
        idx = perm[i:i + B]
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(net(Xt[idx]), yt[idx])
        loss.backward()
        optim.step()
    return time.perf_counter() - t0


def time_sklearn(X, y, H, B, opt, lr, seed):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(H,), solver=opt, batch_size=B,
                        learning_rate_init=lr, alpha=0.0, momentum=0.0, max_iter=1,
                        shuffle=True, random_state=seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X, y, classes=np.arange(10))
    return time.perf_counter() - t0


def time_predict(X_test, repeats):
    """handgrad.predict_proba vs onnxruntime on the same 784-256-10 model, interleaved.

    Both get every core: NumPy's BLAS its default pool, onnxruntime ``cpu_count``
    intra-op threads. Each repeat times one warm call of each; medians compared.
    """
    from threadpoolctl import threadpool_info

    model = handgrad.MLP(784, 256, 10, seed=0)
    out = {"handgrad_s": None, "onnxruntime_s": None, "rows": len(X_test),
           "model": "784-256-10 float32", "repeats": repeats}
    runners = [("handgrad_s", lambda: model.predict_proba(X_test))]
    try:
        import onnxruntime as ort

        from handgrad.onnx import to_onnx_bytes

        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count() or 1
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


def machine_info():
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 800])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 256, 512])
    ap.add_argument("--optimizer", nargs="+", default=["sgd", "adam"],
                    choices=["sgd", "adam"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60000,
                    help="training rows per epoch (60000: all of MNIST)")
    ap.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn")
    ap.add_argument("--predict-only", action="store_true",
                    help="time predict_proba vs onnxruntime alone and update that part of --out")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    args = ap.parse_args(argv)
    command = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    if args.predict_only:
        return predict_only(args, command)

    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    (x_train, y_train), (x_test, _) = load_mnist(progress=False)
    X = (x_train.reshape(len(x_train), -1)[:args.rows] / 255.0).astype(np.float32)
    y = y_train[:args.rows].astype(np.int64)
    X_test = (x_test.reshape(len(x_test), -1) / 255.0).astype(np.float32)

    peak = square_sgemm_throughput()
    print(f"float32 GEMM throughput (2048² sgemm): {peak / 1e9:.1f} GFLOP/s, "
          f"{threads} threads", flush=True)
    results = []
    for opt in args.optimizer:
        lr = 1e-3 if opt == "adam" else 0.05
        for H in args.hidden:
            for B in args.batch:
                samples = {"handgrad": [], "torch": [], "sklearn": []}
                for r in range(args.repeats):
                    samples["handgrad"].append(time_handgrad(X, y, H, B, opt, lr, r))
                    samples["torch"].append(time_torch(torch, X, y, H, B, opt, lr, r))
                    if not args.no_sklearn:
                        samples["sklearn"].append(time_sklearn(X, y, H, B, opt, lr, r))
                med = {k: (statistics.median(v) if v else None) for k, v in samples.items()}
                flops = gemm_flops(B, 784, H, 10, len(X))
                shaped = shaped_gemm_seconds(B, 784, H, 10, len(X))
                row = {
                    "optimizer": opt, "hidden": H, "batch": B, "rows": len(X),
                    "seconds": med, "samples": samples,
                    "speedup_vs_torch": med["torch"] / med["handgrad"],
                    "speedup_vs_sklearn": (med["sklearn"] / med["handgrad"]
                                           if med["sklearn"] else None),
                    "gemm_gflop": flops / 1e9,
                    "gemm_bound_s": flops / peak,
                    "gemm_efficiency": flops / peak / med["handgrad"],
                    "shaped_gemm_s": shaped,
                    "shaped_gemm_efficiency": shaped / med["handgrad"],
                }
                results.append(row)
                sk = (f"sklearn {med['sklearn']:.3f}s ({row['speedup_vs_sklearn']:.2f}x)"
                      if med["sklearn"] else "")
                print(f"{opt:4s} H={H:<4d} B={B:<4d} handgrad {med['handgrad']:.3f}s  "
                      f"torch {med['torch']:.3f}s ({row['speedup_vs_torch']:.2f}x)  {sk}  "
                      f"GEMM bound {row['gemm_bound_s']:.3f}s "
                      f"({100 * row['gemm_efficiency']:.0f}%), own-shape GEMMs "
                      f"{shaped:.3f}s ({100 * row['shaped_gemm_efficiency']:.0f}%)", flush=True)
    predict = time_predict(X_test, max(args.repeats, 5))
    report_predict(predict, command)
    doc = {"benchmark": "speed", "machine": machine_info(), "torch": torch.__version__,
           "gemm_throughput_gflops": peak / 1e9, "threads": threads, "results": results,
           "predict": predict, "command": command, "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0


def report_predict(predict, command):
    predict["command"], predict["date"] = command, time.strftime("%Y-%m-%d")
    kernels = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                        f"{b['num_threads']} threads)" for b in predict["blas"])
    print(f"predict_proba on {predict['rows']:,} test images: handgrad "
          f"{predict['handgrad_s'] * 1e3:.1f} ms"
          + (f", onnxruntime {predict['onnxruntime_s'] * 1e3:.1f} ms"
             if predict["onnxruntime_s"] else " (onnxruntime not installed)")
          + f" (medians of {predict['repeats']}; {kernels})", flush=True)


def predict_only(args, command):
    """Rerun the predict_proba comparison alone; keep the rest of ``--out`` as it was."""
    (_, _), (x_test, _) = load_mnist(progress=False)
    X_test = (x_test.reshape(len(x_test), -1) / 255.0).astype(np.float32)
    predict = time_predict(X_test, args.repeats)
    report_predict(predict, command)
    doc = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "speed"}
    doc["predict"] = dict(predict, machine=machine_info())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote the predict part of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a handgrad training step's time goes, phase by phase, with and without the
accelerator.

The step of :class:`handgrad.Trainer` for the specification's 784-H-10 network is
replayed call by call on MNIST batches (the same layer functions, buffers and
optimizer), each phase timed on its own, many steps in a row so caches hold what
they hold in training; medians per phase in microseconds. A real one-epoch ``fit``
is timed in the same process, so *rest* (the loop's own Python, the checks, the
callbacks) is the per-step time the phases do not account for.

    python benchmarks/profile_step.py                        # H=2048, B=256, SGD and Adam
    python benchmarks/profile_step.py --hidden 256 --batch 128 --optimizer adam

Run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for NumPy's native kernel (the
script re-runs itself without them unless ``--keep-env``). Writes
``results/profile-step.json``; ``make_tables.py`` puts it in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PHASES = ("gather", "F1 product X W1ᵀ", "F1 + b, F2 ReLU", "F3 (layer 2)", "F4–F5 softmax, loss",
          "train accuracy", "B2", "B5 product G W2", "B6 ReLU backward", "gradient bound",
          "B3/B4/B7 (+ fused SGD)", "optimizer", "rest")


def profile(X, y, H, B, opt, steps, accel):
    import handgrad
    from handgrad import _accel, _blas
    from handgrad.model import OUTPUT_LAYERS, hidden_backward, linear_backward, linear_forward
    from handgrad.train import _BatchGatherer

    _accel.use(accel)
    make_optimizer = (lambda: handgrad.optim.Adam(1e-3)) if opt == "adam" else (
        lambda: handgrad.optim.SGD(0.05))
    # a short fit first: loads the accelerator's kernels, which the timed fit must not pay
    handgrad.fit(handgrad.MLP(784, H, 10, seed=0), X[:4 * B], y[:4 * B],
                 optimizer=make_optimizer(), epochs=1, batch_size=B, seed=0)
    model = handgrad.MLP(784, H, 10, seed=0)
    optimizer = make_optimizer()
    t0 = time.perf_counter()
    fit_steps = -(-len(X) // B)
    handgrad.fit(model, X, y, optimizer=optimizer, epochs=1, batch_size=B, seed=0)
    fit_step = (time.perf_counter() - t0) / fit_steps  # the real thing, per step

    model = handgrad.MLP(784, H, 10, seed=0)
    optimizer = make_optimizer()
    X, x2 = model.check_X_and_norm(X)
    y = model.check_y(y, X.shape[0])
    gather = _BatchGatherer(X, y, None)
    ws = model.workspace(B)
    W1, b1, W2, b2 = (model.params[k] for k in ("W1", "b1", "W2", "b2"))
    fused = opt == "sgd" and _blas.available(model.dtype)
    order = np.random.default_rng(0).permutation(len(X))
    times = {p: [] for p in PHASES}
    w = 1.0 / B
    for step in range(steps):
        i = step % (len(X) // B)
        clock = [time.perf_counter()]

        def lap():
            clock.append(time.perf_counter())

        xb, tb, _ = gather(order[i * B:(i + 1) * B])
        lap()
        ws.inputs = [xb]
        np.matmul(xb, W1.T, out=ws.Q[0])  # (B, H)
        lap()
        if accel:
            h = _accel.bias_relu_forward(ws.Q[0], b1, ws.h[0])
        else:
            ws.Q[0] += b1
            h = np.maximum(ws.Q[0], 0, out=ws.h[0])
        ws.inputs.append(h)
        lap()
        O = linear_forward(h, W2, b2, ws.Q[1])  # (B, M)
        lap()
        # the pair MLP.loss and MLP.backward take: the compiled one with the accelerator
        output_forward, output_backward = (_accel.output_layer("softmax", O, tb, w)
                                           or OUTPUT_LAYERS["softmax"])
        loss = output_forward(O, tb, w, ws.logP, ws.P, ws.row)
        lap()
        np.count_nonzero(O.argmax(axis=1) == tb)
        lap()
        G2 = output_backward(ws.P, tb, w, ws.G[1])
        lap()
        linear_backward(G2, None, W2, None, None, ws.G[0])  # B5
        lap()
        hidden_backward("relu", ws.G[0], ws.Q[0], ws.h[0], ws.scratch[0])  # B6
        lap()
        bounded = model.grads_bounded(ws, x2)
        lap()
        assert bounded and loss < 1e4
        if fused:
            from functools import partial

            optimizer.fused_step(model.param_buffer, partial(model.accumulate_grads, ws))
            lap()
            lap()  # the update happened inside the products
        else:
            model.weight_grads(ws)
            lap()
            optimizer.step(model.param_buffer, model.grad_buffer)
            lap()
        for k, p in enumerate(PHASES[:-1]):
            times[p].append(clock[k + 1] - clock[k])
    med = {p: 1e6 * statistics.median(v) for p, v in times.items() if v}
    med["rest"] = max(0.0, 1e6 * fit_step - sum(med.values()))
    return {"hidden": H, "batch": B, "optimizer": opt, "accelerator": accel,
            "fit_step_us": 1e6 * fit_step, "phases_us": med}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[2048])
    ap.add_argument("--batch", type=int, nargs="+", default=[256])
    ap.add_argument("--optimizer", nargs="+", default=["sgd", "adam"], choices=["sgd", "adam"])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per configuration")
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--keep-env", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "profile-step.json")
    args = ap.parse_args(argv)
    from handgrad.sysinfo import OPENBLAS_ENV, numpy_blas

    removed = {k: os.environ[k] for k in OPENBLAS_ENV if k in os.environ}
    if removed and not args.keep_env:  # re-run on the native kernel; say what was removed
        env = {k: v for k, v in os.environ.items() if k not in removed}
        env["HANDGRAD_PROFILE_REMOVED"] = json.dumps(removed)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    removed = json.loads(os.environ.get("HANDGRAD_PROFILE_REMOVED", "{}"))

    from handgrad import _accel
    from handgrad.datasets import load_mnist

    (x_train, y_train), _ = load_mnist(progress=False)
    X = (x_train.reshape(len(x_train), -1)[:args.rows] / 255.0).astype(np.float32)
    y = y_train[:args.rows].astype(np.intp)
    modes = [True, False] if _accel.installed() else [False]
    results = []
    for opt in args.optimizer:
        for H in args.hidden:
            for B in args.batch:
                for accel in modes:
                    r = profile(X, y, H, B, opt, args.steps, accel)
                    results.append(r)
                    print(f"{opt} H={H} B={B} {'accelerator' if accel else 'NumPy path'}: "
                          f"step {r['fit_step_us']:.0f} µs  " + "  ".join(
                              f"{p} {t:.0f}" for p, t in r["phases_us"].items()), flush=True)
    doc = {"benchmark": "profile-step", "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(["profile_step.py", *(sys.argv[1:] if argv is None else argv)]),
           "numpy_blas": numpy_blas(), "accelerator": _accel.describe(), "removed_env": removed,
           "cpu_count": os.cpu_count(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

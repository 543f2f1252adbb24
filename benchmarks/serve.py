"""Serving throughput and latency on 127.0.0.1: handgrad serve vs MLServer, side by side.

Single-example requests (one 28×28 image as ``[1, 784]`` FP32 raw pixels, JSON) to a
784-H-10 network at 1, 8 and 64 concurrent clients, against

- ``handgrad serve`` with dynamic batching (``--max-batch-size 64``) and without
  (``--max-batch-size 1``), and
- MLServer (Seldon's Open Inference Protocol server) serving the same network through
  its scikit-learn runtime (an ``MLPClassifier`` holding handgrad's weights, the
  preprocessing's ÷255 folded into W¹), in its default configuration and with its
  adaptive batching (``max_batch_size`` 64), when it is installed; otherwise
  FastAPI + onnxruntime on the exported ONNX file.

All servers run at once, each in its own process, and are measured interleaved (every
server at every concurrency, then again, ``--repeats`` times); medians are reported. The
load comes from ``wrk`` (``apt-get install wrk``), closed-loop: each of N connections
sends its next request when the last is answered. Access logs are off on every server.

    python benchmarks/serve.py                                  # writes results/serve.json
    python benchmarks/serve.py --peer-python /opt/mlserver/bin/python --duration 5
    python benchmarks/make_tables.py                            # the README's table

MLServer 1.7 needs its own environment (its pins clash with handgrad's test set):
``python -m venv /opt/mlserver && /opt/mlserver/bin/pip install mlserver mlserver-sklearn
'uvloop<0.22'`` (uvloop 0.22 breaks its worker processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np

import handgrad
from handgrad.datasets import Preprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchargs import (HelpFormatter, changed, check_out,  # noqa: E402
                       non_negative_int, output_path, positive_int)
from speed import machine_info as speed_machine_info  # noqa: E402  one description for all results

HERE = Path(__file__).resolve().parent
TIMING_ENV_DROP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # kept in tests, not in timing


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timing_env():
    env = {k: v for k, v in os.environ.items() if k not in TIMING_ENV_DROP}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def build_model(hidden, seed):
    """A 784-H-10 handgrad network taking raw 28×28 pixels (÷255 stored with it)."""
    model = handgrad.MLP(784, (hidden,), 10, seed=seed)
    model.preprocessor = Preprocessor("divide", scale=255.0).fit(np.zeros((1, 28, 28), np.uint8))
    model.classes = [str(k) for k in range(10)]
    return model


def request_body(x, peer=False):
    t = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": x.ravel().tolist()}
    body = {"inputs": [t]}
    if peer:
        body["outputs"] = [{"name": "predict_proba"}]
    return json.dumps(body)


# --------------------------------------------------------------------------- #
# Servers
# --------------------------------------------------------------------------- #


class Server:
    def __init__(self, label, argv, port, infer_path, body, cwd=None, env=None):
        self.label, self.argv, self.port = label, argv, port
        self.url = f"http://127.0.0.1:{port}"
        self.infer_path, self.body = infer_path, body
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env or timing_env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.output()[-2000:]}")
            try:
                if self.infer() is not None:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.label} did not become ready: {self.output()[-2000:]}")

    def infer(self):
        req = urllib.request.Request(self.url + self.infer_path, data=self.body.encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read()) if r.status == 200 else None

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def handgrad_server(label, model_path, batch, body):
    port = free_port()
    argv = [sys.executable, "-m", "handgrad", "serve", str(model_path), "--name", "mnist",
            "--port", str(port), "--no-access-log", "--max-batch-size", str(batch)]
    return Server(label, argv, port, "/v2/models/mnist/infer", body)


MLSERVER_MODEL = textwrap.dedent("""
    import sys, joblib, numpy as np
    from sklearn.neural_network import MLPClassifier
    w = np.load(sys.argv[1])
    H = w["W1"].shape[0]
    # Fit one iteration on noise to set every attribute, then put handgrad's weights in:
    # coefs_ are (in, out), the transposes of handgrad's (out, in); ÷255 folds into W1.
    X = np.random.default_rng(0).random((20, 784)); y = np.arange(20) % 10
    clf = MLPClassifier(hidden_layer_sizes=(H,), activation="relu", max_iter=1).fit(X, y)
    clf.coefs_ = [w["W1"].T.astype(np.float64) / 255.0, w["W2"].T.astype(np.float64)]
    clf.intercepts_ = [w["b1"].astype(np.float64), w["b2"].astype(np.float64)]
    joblib.dump(clf, sys.argv[2])  # the peer's own format; written here, loaded by MLServer
""")


def importable(python, modules):
    r = subprocess.run([python, "-c", f"import {', '.join(modules)}"], capture_output=True)
    return r.returncode == 0


def mlserver_available(python):
    return importable(python, ["mlserver", "mlserver_sklearn", "sklearn", "joblib"])


ONNX_PEER = ["fastapi", "onnxruntime", "onnx", "uvicorn"]


def mlserver_server(label, python, model, workdir, body, adaptive):
    folder = workdir / ("mlserver-batched" if adaptive else "mlserver")
    (folder / "mnist").mkdir(parents=True, exist_ok=True)
    weights = workdir / "weights.npz"
    np.savez(weights, **{k: v for k, v in model.params.items()})
    subprocess.run([python, "-c", MLSERVER_MODEL, weights, folder / "mnist" / "model.joblib"],
                   check=True, capture_output=True)
    settings = {"name": "mnist", "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"}}
    if adaptive:
        settings.update(max_batch_size=64, max_batch_time=0.001)
    (folder / "mnist" / "model-settings.json").write_text(json.dumps(settings))
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "host": "127.0.0.1", "debug": False}))
    return Server(label, [str(Path(python).parent / "mlserver"), "start", "."], port,
                  "/v2/models/mnist/infer", body, cwd=folder)


ONNX_APP = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort, uvicorn
    from fastapi import FastAPI, Request
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/v2/models/mnist/infer")
    async def infer(request: Request):
        body = await request.json()
        t = body["inputs"][0]
        x = np.asarray(t["data"], dtype=np.float32).reshape([t["shape"][0], 28, 28])
        P, label = session.run(None, {"input": x})
        return {"model_name": "mnist", "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": list(P.shape),
             "data": P.ravel().tolist()},
            {"name": "label", "datatype": "INT64", "shape": list(label.shape),
             "data": label.tolist()}]}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False,
                log_level="warning")
""")


def onnx_server(label, model, workdir, body):
    from handgrad.onnx import export_onnx

    path = export_onnx(model, workdir / "mnist.onnx")
    port = free_port()
    return Server(label, [sys.executable, "-c", ONNX_APP, str(path), str(port)], port,
                  "/v2/models/mnist/infer", body)


# --------------------------------------------------------------------------- #
# Load
# --------------------------------------------------------------------------- #

WRK_SCRIPT = textwrap.dedent("""
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = io.open(os.getenv("BENCH_BODY"), "r"):read("*a")
    done = function(summary, latency, requests)
      local e = summary.errors
      io.stderr:write(string.format(
        '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %f, ' ..
        '"errors": %d, "status_errors": %d}\\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
    end
""")


def run_wrk(server, clients, seconds, workdir):
    body_file = workdir / f"body-{server.port}.json"
    body_file.write_text(server.body)
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    threads = 1  # one event loop drives every connection: the least CPU taken from the servers
    env = {**timing_env(), "BENCH_BODY": str(body_file)}
    r = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s",
                        "--timeout", "10s", "-s", str(script), server.url + server.infer_path],
                       capture_output=True, text=True, env=env, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr}")
    line = [l for l in r.stderr.splitlines() if l.startswith("{")][-1]
    d = json.loads(line)
    return {"throughput": d["requests"] / (d["duration_us"] / 1e6),
            "p50_ms": d["p50_us"] / 1e3, "p99_ms": d["p99_us"] / 1e3,
            "errors": d["errors"] + d["status_errors"], "requests": d["requests"]}


def wrk_version():
    r = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().splitlines()[0]


def machine_info():
    """speed.py's description of the machine, with the load average as the run ends."""
    info = speed_machine_info()
    info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--hidden", type=positive_int, default=800,
                    help="hidden units H of 784-H-10")
    ap.add_argument("--concurrency", type=positive_int, nargs="+", default=[1, 8, 64],
                    help="concurrent connections, one measurement each")
    ap.add_argument("--duration", type=positive_int, default=4, help="seconds per measurement")
    ap.add_argument("--warmup", type=non_negative_int, default=1,
                    help="seconds of load before each")
    ap.add_argument("--repeats", type=positive_int, default=3, help="measurements per setting")
    ap.add_argument("--peer", choices=["auto", "mlserver", "onnx", "none"], default="auto")
    ap.add_argument("--peer-python", default=sys.executable,
                    help="a Python with mlserver and mlserver-sklearn installed")
    ap.add_argument("--out", type=Path, default=None,
                    help="the result file (default: benchmarks/results/serve.json, or for a "
                         "run of another --hidden, --concurrency or --duration a scratch "
                         "file it names)")
    args = ap.parse_args(argv)
    args.out = output_path(ap, args, HERE / "results" / "serve.json",
                           changed(ap, args, ["hidden", "concurrency", "duration"]))
    problem = check_out(args.out)
    if problem:
        print(f"serve.py: --out {problem}", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/serve.py needs wrk: apt-get install wrk")
    peer = args.peer
    if peer == "auto":
        peer = ("mlserver" if mlserver_available(args.peer_python)
                else "onnx" if importable(sys.executable, ONNX_PEER) else "none")
        if peer == "none":
            print("no peer: neither MLServer (--peer-python) nor FastAPI + onnxruntime is "
                  "installed", file=sys.stderr)
    elif peer == "mlserver" and not mlserver_available(args.peer_python):
        sys.exit(f"{args.peer_python} has no mlserver/mlserver-sklearn (see --help)")
    elif peer == "onnx" and not importable(sys.executable, ONNX_PEER):
        sys.exit(f"the ONNX peer needs {', '.join(ONNX_PEER)} installed")

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    model = build_model(args.hidden, seed=0)
    x = np.random.default_rng(1).integers(0, 256, (1, 784)).astype(np.float32)
    want = int(model.predict(model.prepare(x))[0])
    work = Path(tempfile.mkdtemp(prefix="handgrad-serve-bench-"))
    model_path = handgrad.save(model, work / "mnist.safetensors")
    body = request_body(x)
    servers = [handgrad_server("handgrad, dynamic batching", model_path, 64, body),
               handgrad_server("handgrad, no batching", model_path, 1, body)]
    if peer == "mlserver":
        peer_body = request_body(x, peer=True)
        servers += [mlserver_server("MLServer (scikit-learn runtime)", args.peer_python, model,
                                    work, peer_body, adaptive=False),
                    mlserver_server("MLServer, adaptive batching", args.peer_python, model,
                                    work, peer_body, adaptive=True)]
    elif peer == "onnx":
        servers.append(onnx_server("FastAPI + onnxruntime", model, work, body))
    try:
        for s in servers:
            s.wait_ready()
            out = s.infer()["outputs"]
            probs = np.asarray(out[0]["data"], dtype=np.float64)
            if int(np.argmax(probs)) != want:  # every server computes the same network
                raise RuntimeError(f"{s.label} answers class {int(np.argmax(probs))}, "
                                   f"handgrad's library {want}")
        samples = {(s.label, c): [] for s in servers for c in args.concurrency}
        for rep in range(args.repeats):
            for c in args.concurrency:
                for s in servers:
                    if args.warmup > 0:
                        run_wrk(s, c, args.warmup, work)
                    m = run_wrk(s, c, args.duration, work)
                    samples[(s.label, c)].append(m)
                    print(f"[{rep + 1}/{args.repeats}] {s.label:<34} {c:>3} clients: "
                          f"{m['throughput']:8.0f} req/s  p50 {m['p50_ms']:7.2f} ms  "
                          f"p99 {m['p99_ms']:7.2f} ms  errors {m['errors']}", flush=True)
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)

    results = []
    for (label, c), ms in samples.items():
        results.append({"server": label, "clients": c,
                        "throughput": statistics.median(m["throughput"] for m in ms),
                        "p50_ms": statistics.median(m["p50_ms"] for m in ms),
                        "p99_ms": statistics.median(m["p99_ms"] for m in ms),
                        "errors": sum(m["errors"] for m in ms),
                        "requests": sum(m["requests"] for m in ms)})
    top = max(args.concurrency)
    by = {(r["server"], r["clients"]): r["throughput"] for r in results}
    peers = [s.label for s in servers[2:]]
    batched = by[("handgrad, dynamic batching", top)]
    summary = {"clients": top,
               "batching_speedup": batched / by[("handgrad, no batching", top)]}
    if peers:
        best_peer = max(peers, key=lambda p: by[(p, top)])
        summary.update(best_peer=best_peer, vs_best_peer=batched / by[(best_peer, top)])
    machine = machine_info()
    machine["load_average_before"] = load_before
    doc = {"command": "serve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "machine": machine,
           "network": [784, args.hidden, 10], "peer": peer, "client": wrk_version(),
           "duration_s": args.duration, "repeats": args.repeats, "results": results,
           "summary": summary}
    if peer == "mlserver":
        r = subprocess.run([args.peer_python, "-c", "import mlserver, sklearn; "
                            "print(mlserver.__version__, sklearn.__version__)"],
                           capture_output=True, text=True)
        doc["mlserver"], doc["peer_sklearn"] = r.stdout.split()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"at {top} clients: dynamic batching {summary['batching_speedup']:.2f}× unbatched"
          + (f", {summary['vs_best_peer']:.2f}× {summary['best_peer']}" if peers else ""))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

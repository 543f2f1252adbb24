"""``handgrad serve``: the Open Inference Protocol and the page, for model files.

A thin module: arguments become a :class:`handgrad.serve.ServeConfig` and a call of
:func:`handgrad.serve.serve`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .._requirements import MissingPackageError, require
from ..serve.config import ServeConfig
from ._common import ExitCode, add_subparser

EPILOG = """examples:
  handgrad serve mnist.safetensors
  handgrad serve mnist.safetensors digits.safetensors --name mnist --name digits
  handgrad serve mnist.safetensors --host 0.0.0.0 --port 8080 --max-batch-size 128

the page is at http://HOST:PORT/, the protocol at /v2, metrics at /metrics and the
OpenAPI document at /openapi.json. SIGTERM or Ctrl-C stops the server after the
requests in flight finish."""


def _int(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text!r} must be at least {low}" + (f" and at most {high}" if high else ""))
        return value
    return parse


def _number(low, high, open_low=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > low if open_low else value >= low)
                and value <= high):
            raise argparse.ArgumentTypeError(
                f"{text!r} must be {'above' if open_low else 'at least'} {low:g} and at most "
                f"{high:g}")
        return value
    return parse


def add_parser(subparsers):
    d = ServeConfig()
    p = add_subparser(
        subparsers, "serve", epilog=EPILOG,
        help="serve models over the Open Inference Protocol, with a drawing page",
        description="Serve model files over the Open Inference Protocol (KServe v2 / Triton "
                    "HTTP/REST) with dynamic batching, and a page where you draw a digit and "
                    "watch the network. Needs pip install 'handgrad[serve]'.")
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="model files to serve")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 makes the server reachable from "
                        "other machines)")
    p.add_argument("--port", type=_int(0, 65535), default=8000, help="port (0: any free one)")
    p.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="a model's name in URLs, once per MODEL in order (default: the "
                        "file name without its suffix)")
    b = p.add_argument_group("dynamic batching")
    b.add_argument("--max-batch-size", type=_int(1), default=d.max_batch_size,
                   help="most rows per forward pass (1 turns batching off)")
    b.add_argument("--batch-delay-ms", type=_number(0, 10_000), default=d.batch_delay * 1e3,
                   help="how long a batch waits for more requests once it has one")
    b.add_argument("--max-queue", type=_int(1), default=d.max_queue,
                   help="rows waiting per model before requests are refused with 503")
    s = p.add_argument_group("safety limits")
    s.add_argument("--max-body-bytes", type=_int(1), default=d.max_body_bytes,
                   help="largest request body (413 beyond)")
    s.add_argument("--timeout", type=_number(0, 86_400, open_low=True),
                   default=d.request_timeout, help="seconds a request may take (504 beyond)")
    s.add_argument("--max-concurrency", type=_int(1), default=d.max_concurrency,
                   help="requests handled at once (503 beyond)")
    s.add_argument("--max-visitors", type=_int(0), default=d.max_visitors,
                   help="page visitors' model copies kept in memory (0: no learning)")
    s.add_argument("--max-visitor-bytes", type=_int(0), default=d.max_visitor_bytes,
                   help="memory of all visitors' copies together")
    s.add_argument("--visitor-ttl", type=_number(0, 7 * 86_400, open_low=True),
                   default=d.visitor_ttl, help="seconds of idleness before a copy expires")
    s.add_argument("--shutdown-timeout", type=_int(0), default=30,
                   help="seconds in-flight requests get to finish after SIGTERM")
    b.add_argument("--blas-threads", type=_int(0), default=d.blas_threads,
                   help="BLAS threads for the forward passes (0: BLAS's own default)")
    o = p.add_argument_group("page and logs")
    o.add_argument("--lr", type=_number(0, 10, open_low=True), default=d.page_lr,
                   help="the page's default learning rate for 'learn from this'")
    o.add_argument("--no-access-log", action="store_true",
                   help="no JSON access-log line per request on stderr")
    return p


def run(args) -> int:
    require("serve")  # before any import: a module cached from elsewhere must not hide it
    try:
        from ..serve.server import load_models, serve
    except ImportError as exc:
        raise MissingPackageError(f"serving needs the 'serve' extra ({exc.name} is missing): "
                                  f"pip install 'handgrad[serve]'", ["serve"]) from None
    config = ServeConfig(
        max_batch_size=args.max_batch_size, batch_delay=args.batch_delay_ms / 1e3,
        max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
        request_timeout=args.timeout, max_concurrency=args.max_concurrency,
        max_visitors=args.max_visitors, max_visitor_bytes=args.max_visitor_bytes,
        visitor_ttl=args.visitor_ttl, page_lr=args.lr, access_log=not args.no_access_log,
        blas_threads=args.blas_threads or None)
    models = load_models(args.models, args.name)

    def ready(url):
        for m in models:
            print(f"serving {m.name!r} ({m.path}): {' → '.join(map(str, m.model.config.layer_sizes))}"
                  f", input [N, {', '.join(map(str, m.example_shape))}]", flush=True)
        print(f"page: {url}/  protocol: {url}/v2  metrics: {url}/metrics  "
              f"(Ctrl-C or SIGTERM stops)", flush=True)

    try:
        return serve(models, args.host, args.port, config,
                     shutdown_timeout=args.shutdown_timeout, on_ready=ready)
    except KeyboardInterrupt:  # Ctrl-C: the requests in flight have finished
        print("stopped (Ctrl-C)", file=sys.stderr)
        return ExitCode.INTERRUPTED

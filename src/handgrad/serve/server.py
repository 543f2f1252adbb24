"""Running the app: load model files, bind the socket, serve with uvicorn until SIGTERM.

uvicorn gives the graceful shutdown: on SIGTERM or SIGINT it stops accepting
connections, lets the requests in flight finish (up to ``shutdown_timeout``
seconds), and only then runs the app's shutdown, which drains the batchers.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path

from .._errors import ParameterError
from ..serialization import ModelFileError, load
from .app import ServeConfig, create_app
from .served import ServedModel, check_name, name_from_path, unservable

LOOPBACK = "127.0.0.1"
# The interpreter's thread switch interval while serving. Python's default, 5 ms, is how
# long the batcher's thread may wait for the GIL each time a matrix product returns while
# the event loop is busy parsing requests (a convoy that halves throughput under load).
SWITCH_INTERVAL = 2e-4


def load_models(paths, names=None):
    """:class:`ServedModel` objects for model files; ``names`` default to the file stems."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("give at least one model file")
    names = list(names or [])
    if len(names) > len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} model files: give at most "
                         f"one name per model")
    names += [name_from_path(p) for p in paths[len(names):]]
    for n in names:
        check_name(n)
    seen = {}
    for n, p in zip(names, paths):
        if n in seen:
            raise ParameterError(f"{seen[n]} and {p} would both be served as {n!r}; "
                                 f"name them apart with {{names}}", names=None)
        seen[n] = p
    served = []
    for n, p in zip(names, paths):
        model = load(p)
        reason = unservable(model)
        if reason is not None:
            raise ModelFileError(f"{p}: {reason}")
        served.append(ServedModel(n, model, p))
    return served


def bind(host, port):
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name: resolve it
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def configure_logging(access_log=True, stream=None):
    """One JSON object per request on ``stream`` (stderr) from ``handgrad.serve.access``."""
    stream = stream or sys.stderr
    for name, level in (("handgrad.serve.access", logging.INFO if access_log else logging.WARNING),
                        ("handgrad.serve", logging.INFO)):
        log = logging.getLogger(name)
        log.setLevel(level)
        if not log.handlers:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter("%(message)s" if name.endswith("access")
                                                   else "handgrad serve: %(message)s"))
            log.addHandler(handler)
        log.propagate = False


def http_protocol():
    """uvicorn's httptools protocol with a response's writes joined into one send
    (:mod:`handgrad.serve._wire`), or ``"auto"`` (uvicorn's choice) without httptools."""
    try:
        from ._wire import JoinedWritesProtocol
    except ImportError:
        return "auto"
    return JoinedWritesProtocol


def serve(models, host=LOOPBACK, port=8000, config=None, *, shutdown_timeout=30,
          on_ready=None):
    """Serve ``models`` (ServedModel objects or model file paths) until SIGTERM/SIGINT.

    Binds ``host`` (loopback unless told otherwise) and ``port``; ``on_ready(url)``
    is called once the socket listens. Returns when the server has shut down.
    """
    import uvicorn

    config = config or ServeConfig()
    models = [m if isinstance(m, ServedModel) else load_models([m])[0] for m in models]
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    # The socket listens already: connections made once on_ready runs wait in its
    # backlog until uvicorn starts taking them.
    app = create_app(models, config,
                     on_startup=None if on_ready is None else (lambda: on_ready(url)))
    configure_logging(config.access_log)
    uv = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                        timeout_graceful_shutdown=shutdown_timeout, server_header=False,
                        timeout_keep_alive=5, http=http_protocol())
    server = uvicorn.Server(uv)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))  # serve() owns the process
    try:
        server.run(sockets=[sock])
    finally:
        sys.setswitchinterval(interval)
        sock.close()
    return 0 if server.started else 1


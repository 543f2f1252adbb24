"""The ASGI application: the Open Inference Protocol, operations endpoints and the page.

:func:`create_app` builds it from served models and a :class:`ServeConfig`; run it
with any ASGI server (:func:`handgrad.serve.serve` uses uvicorn). Every request
passes :class:`Guard` first, which enforces the safety limits (body size,
concurrency, time), counts it for ``/metrics`` and writes its access-log line.
Every error is JSON, ``{"error": "..."}``, naming the problem; a stack trace only
ever goes to the server's log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from . import page
from .batcher import DynamicBatcher, Overloaded, Stopped
from .config import MAX_LR, ServeConfig
from .metrics import Metrics
from .openapi import openapi_document
from .protocol import (HEADER_LENGTH, ProtocolError, decompress, encode_infer_response,
                       may_hold_literals, numbers_reader, parse_infer_request, parse_json,
                       split_body)
from .visitors import VisitorCopies

access_logger = logging.getLogger("handgrad.serve.access")
logger = logging.getLogger("handgrad.serve")

VISITOR_COOKIE = "handgrad_visitor"
# Probes and metrics answer even when the server is at its concurrency limit.
UNLIMITED = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
OFFLOAD_BYTES = 256 << 10  # bodies larger than this are parsed off the event loop
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# POST on these paths goes from the guard straight to Server.infer_direct; the groups
# match as Starlette's {name} and {version} do (one path segment each).
_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_INFER_ROUTES = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
HEADER_LENGTH_RAW = HEADER_LENGTH.encode()


def error(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- #
# The guard: limits, metrics and access log around every request
# --------------------------------------------------------------------------- #


class _TooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware in front of the app.

    Reads each request body itself (at most ``max_body_bytes``, inside the time
    limit, so a slow or endless upload is cut off too) and hands the app a replay of
    it; refuses requests beyond ``max_concurrency`` with 503 at once; answers 504
    when a request takes longer than ``request_timeout``. Inference requests (POST
    on an infer path) go to ``direct.infer_direct`` rather than through ``app``, when
    ``direct`` is given.
    """

    def __init__(self, app, config, metrics, routes, direct=None):
        self.app = app
        self.direct = direct
        self.config = config
        self.metrics = metrics
        self.routes = routes
        self.in_flight = 0  # requests under the concurrency limit being handled now
        self.active = 0  # every request being handled now, probes and metrics too
        # The gauge reads the count when /metrics is scraped: no lock taken per request.
        metrics.in_flight.set_function(lambda: self.active)
        self._id_prefix = uuid.uuid4().hex[:8] + "-"
        self._ids = itertools.count(1)

    def _route(self, scope):
        for route in self.routes:
            match, _ = route.matches(scope)
            if match.name == "FULL":
                return route.path
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID.match(rid):
            rid = f"{self._id_prefix}{next(self._ids):x}"  # unique per process, no syscall
        scope["handgrad.request_id"] = rid
        state = {"status": None, "bytes_out": 0, "bytes_in": 0}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                state["bytes_out"] += len(message.get("body", b""))
            await send(message)

        path = scope["path"]
        limited = path not in UNLIMITED
        cfg = self.config
        refused = None
        if limited and self.in_flight >= cfg.max_concurrency:
            refused = ("concurrency", error(
                503, f"the server is at its limit of {cfg.max_concurrency} requests in "
                     f"flight; retry shortly", {"retry-after": "1"}))
        else:
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    refused = ("header", error(400, "Content-Length is not a whole number"))
                elif n > cfg.max_body_bytes:
                    refused = ("body_size", error(
                        413, f"the request body is {n:,} bytes; the limit is "
                             f"{cfg.max_body_bytes:,}"))
        if refused is not None:
            self.metrics.rejected.labels(refused[0]).inc()
            await refused[1](scope, receive, send_logged)
            return self._finish(scope, rid, state, start, self._route(scope))

        if limited:
            self.in_flight += 1
        self.active += 1
        try:
            try:
                await _within(cfg.request_timeout, self._handle(scope, receive, send_logged, state))
            except _TooLarge:
                self.metrics.rejected.labels("body_size").inc()
                if state["status"] is None:
                    await error(413, f"the request body is over the limit of "
                                     f"{cfg.max_body_bytes:,} bytes")(scope, receive, send_logged)
            except TimeoutError:
                self.metrics.rejected.labels("timeout").inc()
                if state["status"] is None:
                    await error(504, f"the request took longer than the limit of "
                                     f"{cfg.request_timeout:g} s")(scope, receive, send_logged)
            except Exception:
                # The app answered 500 and logged the traceback (_unexpected); re-raising
                # would only make uvicorn log it a second time.
                if state["status"] is None:
                    raise
        finally:
            if limited:
                self.in_flight -= 1
            self.active -= 1
            route = state.get("route") or scope.get("route")
            self._finish(scope, rid, state, start, route if isinstance(route, str)
                         else route.path if route is not None else self._route(scope))

    async def _handle(self, scope, receive, send, state):
        body = await self._read_body(receive, state)
        infer = (self.direct is not None and scope["method"] == "POST"
                 and not scope.get("root_path") and _INFER_PATH.fullmatch(scope["path"]))
        if infer:
            name, version = infer.groups()
            state["route"] = _INFER_ROUTES[version is not None]
            await self.direct.infer_direct(scope, receive, send, body, name, version)
        else:
            await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive, state):
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.config.max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        state["bytes_in"] = total
        return b"".join(chunks)

    def _finish(self, scope, rid, state, start, route):
        seconds = time.perf_counter() - start
        status = state["status"] or 499  # no response: the client went away first
        self.metrics.observe_request(route, scope["method"], status, seconds)
        if self.config.access_log and access_logger.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_logger.info(json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "request_id": rid, "client": f"{client[0]}:{client[1]}" if client else None,
                "method": scope["method"], "path": scope["path"], "route": route,
                "status": status, "bytes_in": state["bytes_in"],
                "bytes_out": state["bytes_out"], "duration_ms": round(seconds * 1e3, 3),
            }, separators=(",", ":")))


async def _within(seconds, coro):
    """Await ``coro``, raising TimeoutError after ``seconds`` (cancelling it)."""
    if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
        async with asyncio.timeout(seconds):
            return await coro
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise TimeoutError from None


class _Answer:
    """A 200 response of prepared bytes: what Starlette's ``Response`` sends, without
    its header handling (the headers here are known, lower-case, latin-1)."""

    __slots__ = ("body", "raw_headers")

    def __init__(self, body, headers):
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)),
                            *[(k.encode("latin-1"), v.encode("latin-1"))
                              for k, v in headers.items()]]

    async def __call__(self, scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def _replay(body, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls see the disconnect, as usual

    return replay


# --------------------------------------------------------------------------- #
# The application
# --------------------------------------------------------------------------- #


class Server:
    """The models, their batchers, the visitors' copies and the endpoints."""

    def __init__(self, models, config=None):
        self.config = config = config or ServeConfig()
        if not models:
            raise ValueError("serve needs at least one model")
        self.models = {}
        for m in models:
            if m.name in self.models:
                raise ValueError(f"two models are named {m.name!r}; give each its own name")
            self.models[m.name] = m
        self.metrics = Metrics(config.max_batch_size)
        self.batchers = {
            name: DynamicBatcher(m.predict_proba, max_batch_size=config.max_batch_size,
                                 max_delay=config.batch_delay, max_queue=config.max_queue,
                                 name=name, on_batch=self._batch_observer(name))
            for name, m in self.models.items()}
        self.queue_rows = {name: self.metrics.queue_rows.labels(name) for name in self.models}
        # The page's look at a drawing uses its own copy of each model (the batcher's
        # thread owns the served one), one look at a time.
        self.page_models = {name: (m.model.copy(), threading.Lock())
                            for name, m in self.models.items()}
        self.visitors = VisitorCopies(config.max_visitors, config.max_visitor_bytes,
                                      config.visitor_ttl)
        self.ready = False
        self._sweeper = None

    def _batch_observer(self, name):
        def observe(rows, seconds):
            self.metrics.observe_batch(name, rows, seconds)
        return observe

    # -- lifecycle -------------------------------------------------------------

    async def startup(self):
        self._limit_blas()
        numbers_reader()  # the JSON number reader loads now, not in the first request
        for b in self.batchers.values():
            await b.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        self.ready = True

    async def shutdown(self):
        self.ready = False
        if self._sweeper is not None:
            self._sweeper.cancel()
        for b in self.batchers.values():
            await b.stop()
        if getattr(self, "_blas_limit", None) is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    def _limit_blas(self):
        n = self.config.blas_threads
        if n is None:
            return
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            logger.warning("threadpoolctl is not installed: BLAS keeps its own thread count")
            return
        from .. import _accel

        _accel.enabled()  # loads the accelerator's kernels, and the BLAS pool they bring, first
        self._blas_limit = threadpool_limits(limits=n, user_api="blas")  # process-wide

    async def _sweep(self):
        period = min(30.0, self.config.visitor_ttl / 2)
        while True:
            await asyncio.sleep(period)
            self.visitors.sweep()
            self._visitor_metrics()

    def _visitor_metrics(self):
        self.metrics.visitor_copies.set(len(self.visitors))
        self.metrics.visitor_bytes.set(self.visitors.nbytes)

    # -- helpers -----------------------------------------------------------------

    def model(self, request):
        return self.model_named(request.path_params["name"],
                                request.path_params.get("version"))

    def model_named(self, name, version=None):
        served = self.models.get(name)
        if served is None:
            known = ", ".join(map(repr, self.models))
            raise ProtocolError(404, f"no model named {name[:80]!r}; this server has {known}")
        if version is not None and version != served.version:
            raise ProtocolError(404, f"model {name!r} has no version {version[:20]!r}; "
                                     f"it has version {served.version}")
        return served

    # -- the protocol ------------------------------------------------------------

    async def server_metadata(self, request):
        return JSONResponse({"name": "handgrad", "version": __version__,
                             "extensions": ["binary_tensor_data", "model_configuration"]})

    async def live(self, request):
        return JSONResponse({"live": True})

    async def ready_(self, request):
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def repository_index(self, request):
        """Triton's model repository index (tritonclient's ``get_model_repository_index``)."""
        return JSONResponse([{"name": name, "version": m.version,
                              "state": "READY" if self.ready else "UNAVAILABLE"}
                             for name, m in self.models.items()])

    async def model_metadata(self, request):
        return JSONResponse(self.model(request).metadata())

    async def model_ready(self, request):
        served = self.model(request)
        ok = self.ready and self.batchers[served.name].running
        return JSONResponse({"name": served.name, "ready": ok}, status_code=200 if ok else 503)

    async def model_config(self, request):
        return JSONResponse(self.model(request).config(self.config.max_batch_size))

    async def infer(self, request):
        """The inference endpoint as Starlette routes to it (see :meth:`infer_direct`)."""
        return await self.infer_response(self.model(request), await request.body(),
                                         request.headers.get("content-encoding"),
                                         request.headers.get(HEADER_LENGTH))

    async def infer_direct(self, scope, receive, send, body, name, version):
        """The inference endpoint straight from :class:`Guard`, past Starlette's router,
        middleware and request object: the same answers as :meth:`infer`, errors
        included, in less of the event loop's time. That time is spent on every
        request, batched or not: the part of serving a batch cannot share out."""
        try:
            headers = {}
            for key, value in scope["headers"]:  # the first of each, as Starlette's lookup
                if key == b"content-encoding" or key == HEADER_LENGTH_RAW:
                    headers.setdefault(key, value.decode("latin-1"))
            response = await self.infer_response(
                self.model_named(name, version), body, headers.get(b"content-encoding"),
                headers.get(HEADER_LENGTH_RAW))
        except ProtocolError as exc:
            response = error(exc.status, exc.message)
        except Exception:
            response = _internal_error(scope, scope["method"], scope["path"])
        await response(scope, receive, send)

    async def infer_response(self, served, body, encoding, length):
        def decode():
            raw = decompress(body, encoding, self.config.max_body_bytes)
            header, binary = split_body(raw, length)
            served.check_input_names(header)
            req = parse_infer_request(header, binary, literals=may_hold_literals(raw))
            return req, served.rows(req)

        req, X = await run_in_threadpool(decode) if len(body) > OFFLOAD_BYTES else decode()
        batcher = self.batchers[served.name]
        try:
            P = await batcher.submit(X)  # (N, M)
        except Overloaded as exc:
            self.metrics.rejected.labels("queue").inc()
            return error(503, str(exc), {"retry-after": "1"})
        except Stopped as exc:
            return error(503, str(exc))
        content, headers = encode_infer_response(served.name, served.version, req.id,
                                                 served.outputs(req, P))
        return _Answer(content, headers)

    # -- operations --------------------------------------------------------------

    async def metrics_endpoint(self, request):
        self._visitor_metrics()
        for name, batcher in self.batchers.items():  # the queues as they are now
            self.queue_rows[name].set(batcher.queued_rows)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def openapi(self, request):
        return JSONResponse(openapi_document(__version__))

    # -- the page ----------------------------------------------------------------

    async def index(self, request):
        html = resources.files(__package__).joinpath("static", "index.html").read_text("utf-8")
        return HTMLResponse(html, headers={"cache-control": "no-cache"})

    def _visitor(self, request):
        token = request.cookies.get(VISITOR_COOKIE, "")
        return token if re.fullmatch(r"[A-Za-z0-9_-]{22,64}", token) else None

    def _page_response(self, request, payload, token):
        response = JSONResponse(payload)
        if token is not None and request.cookies.get(VISITOR_COOKIE) != token:
            response.set_cookie(VISITOR_COOKIE, token, max_age=int(self.config.visitor_ttl),
                                httponly=True, samesite="strict")
        return response

    async def _page_body(self, request):
        return parse_json(await request.body())

    async def page_model_list(self, request):
        token = self._visitor(request)
        items = []
        for name, m in self.models.items():
            copy = self.visitors.get(token, name) if token else None
            items.append({"name": name, "image": m.is_image, "example_shape": list(m.example_shape),
                          "classes": m.classes, "layer_sizes": list(m.model.config.layer_sizes),
                          "activation": m.model.config.activation,
                          "steps": copy.steps if copy else 0})
        return JSONResponse({"models": items, "lr": self.config.page_lr, "max_lr": MAX_LR,
                             "visitor_copies": self.config.max_visitors > 0})

    async def look(self, request):
        served = self.model(request)
        body = await self._page_body(request)
        x = page.example(served, page.drawing(body))
        token = self._visitor(request)
        copy = self.visitors.get(token, served.name) if token else None
        model, lock = (copy.model, copy.lock) if copy else self.page_models[served.name]

        def run():
            with lock:
                return page.look(served, model, x)

        result = await run_in_threadpool(run)
        result["steps"] = copy.steps if copy else 0
        return self._page_response(request, result, token)

    async def learn(self, request):
        served = self.model(request)
        body = await self._page_body(request)
        label = page.label_of(served, body)
        lr = page.learning_rate(body, self.config.page_lr)
        x = page.example(served, page.drawing(body))
        token = self._visitor(request) or secrets.token_urlsafe(24)
        copy = self.visitors.get_or_create(token, served.name, served.model.copy, served.nbytes)
        if copy is None:
            raise ProtocolError(503, "this server keeps no visitor copies (max_visitors is 0, "
                                     "or a copy would not fit max_visitor_bytes)")

        def run():
            with copy.lock:
                before = page.learn(copy.model, x, label, lr)
                copy.steps += 1
                result = page.look(served, copy.model, x)
                result["loss_before"] = before
                result["loss_after"] = page.loss_of(copy.model, x, label)
                result["steps"] = copy.steps
                return result

        result = await run_in_threadpool(run)
        result["label"], result["lr"] = label, lr
        self.metrics.learn_steps.labels(served.name).inc()
        self._visitor_metrics()
        return self._page_response(request, result, token)

    async def trace(self, request):
        served = self.model(request)
        body = await self._page_body(request)
        label = page.label_of(served, body)
        x = page.example(served, page.drawing(body))
        token = self._visitor(request)
        copy = self.visitors.get(token, served.name) if token else None
        model, lock = (copy.model, copy.lock) if copy else self.page_models[served.name]

        def run():
            with lock:
                result = page.trace(model, x, label)
                result["steps_taken"] = copy.steps if copy else 0  # which copy it traced
                return result

        return self._page_response(request, await run_in_threadpool(run), token)

    async def reset(self, request):
        served = self.model(request)
        token = self._visitor(request)
        dropped = self.visitors.discard(token, served.name) if token else False
        self._visitor_metrics()
        return JSONResponse({"model": served.name, "reset": dropped, "steps": 0})

    # -- assembly ------------------------------------------------------------------

    def routes(self):
        def both(path, endpoint, methods=("GET",)):
            return [Route(f"/v2/models/{{name}}{path}", endpoint, methods=list(methods)),
                    Route(f"/v2/models/{{name}}/versions/{{version}}{path}", endpoint,
                          methods=list(methods))]

        static = StaticFiles(directory=str(resources.files(__package__).joinpath("static")))
        return [
            *both("/infer", self.infer, ("POST",)),  # first: the router tries routes in order
            Route("/", self.index),
            Route("/v2", self.server_metadata),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready_),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            *both("", self.model_metadata),
            *both("/ready", self.model_ready),
            *both("/config", self.model_config),
            Route("/metrics", self.metrics_endpoint),
            Route("/openapi.json", self.openapi),
            Route("/api/models", self.page_model_list),
            Route("/api/models/{name}/look", self.look, methods=["POST"]),
            Route("/api/models/{name}/learn", self.learn, methods=["POST"]),
            Route("/api/models/{name}/trace", self.trace, methods=["POST"]),
            Route("/api/models/{name}/reset", self.reset, methods=["POST"]),
            Mount("/static", app=static, name="static"),
        ]


async def _protocol_error(request, exc):
    return error(exc.status, exc.message)


async def _http_error(request, exc):
    if exc.status_code == 404:
        return error(404, f"no such endpoint: {request.method} {request.url.path[:200]}")
    if exc.status_code == 405:
        return error(405, f"{request.method} is not allowed on {request.url.path[:200]}",
                     exc.headers)
    return error(exc.status_code, str(exc.detail), exc.headers)


async def _unexpected(request, exc):
    return _internal_error(request.scope, request.method, request.url.path)


def _internal_error(scope, method, path):
    """A 500 naming the request id; the traceback (of the exception being handled)
    goes to the server's log only."""
    rid = scope.get("handgrad.request_id")
    logger.exception("error while answering %s %s", method, path)
    return error(500, f"internal error while answering this request; the server log has "
                      f"the details{f' (request id {rid})' if rid else ''}")


def create_app(models, config=None, on_startup=None):
    """The ASGI app serving ``models`` (:class:`ServedModel` instances).

    ``on_startup()`` is called once the batchers run, before the first request.
    """
    server = Server(models, config)
    routes = server.routes()

    async def lifespan(app):
        await server.startup()
        if on_startup is not None:
            on_startup()
        try:
            yield
        finally:
            await server.shutdown()

    app = Starlette(routes=routes, lifespan=asynccontextmanager(lifespan),
                    exception_handlers={ProtocolError: _protocol_error,
                                        HTTPException: _http_error,
                                        Exception: _unexpected})
    app.state.server = server
    guarded = Guard(app, server.config, server.metrics, routes, direct=server)
    guarded.server = server
    return guarded

"""The transport that joins a response's writes into one send (handgrad.serve._wire)."""

import asyncio
import http.client
import threading
import time

import pytest

pytest.importorskip("httptools", reason="the serve extra is not installed: pip install '.[serve]'")
uvicorn = pytest.importorskip("uvicorn")

from handgrad.serve import server as serve_server  # noqa: E402
from handgrad.serve._wire import JoinedWrites, JoinedWritesProtocol  # noqa: E402


class RecordingTransport:
    """What a transport was asked to do, in order."""

    def __init__(self):
        self.calls = []
        self.closing = False

    def write(self, data):
        self.calls.append(("write", bytes(data)))

    def writelines(self, lines):
        self.calls.append(("writelines", [bytes(x) for x in lines]))

    def write_eof(self):
        self.calls.append(("write_eof",))

    def close(self):
        self.closing = True
        self.calls.append(("close",))

    def abort(self):
        self.closing = True
        self.calls.append(("abort",))

    def is_closing(self):
        return self.closing

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


def run(steps):
    """Run ``steps(t, transport)`` (a coroutine function) on a fresh loop."""
    transport = RecordingTransport()

    async def main():
        await steps(JoinedWrites(transport, asyncio.get_running_loop()), transport)

    asyncio.run(main())
    return transport.calls


async def next_pass():
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_writes_of_one_pass_go_as_one_write_in_order():
    async def steps(t, transport):
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert transport.calls == []  # kept until the loop runs its callbacks
        await next_pass()
        t.write(b"next")
        await next_pass()

    assert run(steps) == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody"), ("write", b"next")]


def test_close_writes_eof_and_writelines_send_the_kept_bytes_first():
    async def steps(t, transport):
        t.write(b"a")
        t.writelines([b"b", b"c"])
        t.write(b"d")
        t.write_eof()
        t.write(b"e")
        t.close()
        await next_pass()  # the scheduled flushes find nothing left to send

    assert run(steps) == [("write", b"a"), ("writelines", [b"b", b"c"]), ("write", b"d"),
                          ("write_eof",), ("write", b"e"), ("close",)]


def test_abort_drops_the_kept_bytes_and_a_closed_transport_gets_none():
    async def steps(t, transport):
        t.write(b"lost")
        t.abort()
        await next_pass()

    assert run(steps) == [("abort",)]

    async def closed(t, transport):
        t.write(b"late")
        transport.closing = True  # the peer went away before the loop's next pass
        await next_pass()

    assert run(closed) == []


def test_other_attributes_are_the_transports():
    async def steps(t, transport):
        assert t.get_extra_info("peername") == ("127.0.0.1", 1234)
        assert t.is_closing() is False

    run(steps)


def test_serve_uses_the_joined_writes_protocol():
    assert serve_server.http_protocol() is JoinedWritesProtocol


async def app(scope, receive, send):
    """Plain, streamed (three body messages) and empty responses."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.01)  # the pieces leave in separate passes of the loop
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * (1 << 20) if scope["path"] == "/large" else b"" if scope["path"] == "/empty" \
        else scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_a_live_server_answers_every_kind_of_response_on_one_connection():
    from handgrad.serve.server import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           http=JoinedWritesProtocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
        for _ in range(3):  # keep-alive: the answers follow one another on one connection
            for path, want in (("/a", b"/a"), ("/stream", b"one two three"), ("/empty", b""),
                               ("/large", b"x" * (1 << 20))):
                conn.request("POST", path, b"{}")
                r = conn.getresponse()
                assert (r.status, r.read()) == (200, want)
        conn.close()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
